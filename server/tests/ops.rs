//! What running the server meets: a file rewritten while it is served, the real binary's
//! start-up errors and logs, the state directory that keeps the certificate, the config file.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chunkcast::error::ClientError;
use chunkcast::get::{GetOptions, GetReport, get, partial_path};
use chunkcast::session::Session;
use chunkcast::url::Scheme;
use chunkcast_protocol::ErrorCode;
use chunkcast_server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};

use support::{pinned, url_at};

const LIMIT: Duration = Duration::from_secs(60);

/// Larger than everything the server can hold ahead of a client that stopped reading (its
/// read-ahead, the link's queue and both sockets' buffers), so that most of it is read after
/// the rewrite.
const BIG_LEN: usize = 40 << 20;

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[0] ^ seed)
        .collect()
}

/// Rewrites `path` in place with `bytes` (same inode, same length), then sets its
/// modification time back to what it was, as `cp --preserve` or `rsync --inplace -t` would:
/// size and mtime alone cannot tell the versions apart.
fn rewrite_in_place(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let before = std::fs::metadata(path).unwrap().modified().unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
    f.set_modified(before).unwrap();
    let after = std::fs::metadata(path).unwrap();
    assert_eq!(after.modified().unwrap(), before);
    assert_eq!(after.len(), bytes.len() as u64);
}

async fn server_on(root: &Path) -> Server {
    let mut c = chunkcast_server::Config::on("127.0.0.1:0".parse().unwrap());
    c.root = Some(root.to_owned());
    Server::start(c).await.expect("server starts")
}

async fn fetch(
    server: &Server,
    via: SocketAddr,
    name: &str,
    out: &Path,
) -> Result<GetReport, ClientError> {
    let s = Session::connect(&url_at(via, Scheme::Tcp, ""), &pinned(server)).await?;
    let opts = GetOptions {
        out: Some(out.to_owned()),
        ..Default::default()
    };
    let r = get(&s, name, &opts).await;
    s.close().await;
    r
}

/// A TCP proxy for one connection that forwards the server's first `pause_at` bytes, reports
/// it has, and forwards the rest only once `go` is notified: a client that stops reading
/// mid-file, for as long as the test needs.
async fn pausing_proxy(
    target: SocketAddr,
    pause_at: usize,
) -> (SocketAddr, oneshot::Receiver<()>, Arc<Notify>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (paused_tx, paused) = oneshot::channel();
    let go = Arc::new(Notify::new());
    let resume = go.clone();
    tokio::spawn(async move {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let server = TcpStream::connect(target).await.unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let up = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut cr, &mut sw).await;
            let _ = sw.shutdown().await;
        });
        let mut paused_tx = Some(paused_tx);
        let mut sent = 0;
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let want = match paused_tx {
                Some(_) => buf.len().min(pause_at - sent),
                None => buf.len(),
            };
            if want == 0 {
                let _ = paused_tx.take().unwrap().send(());
                resume.notified().await;
                continue;
            }
            let n = match sr.read(&mut buf[..want]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            sent += n;
        }
        let _ = cw.shutdown().await;
        let _ = up.await;
    });
    (addr, paused, go)
}

/// Issue 19, defect 7: a file rewritten in place while it is sent with its digest computed
/// on the way (`DIGEST_AT_END`) used to end with a digest of the mix of both versions that was
/// sent, so the client reported "digest verified" for a file that was neither. Now the server
/// notices the change (inode and change time, which a writer cannot set back) and closes the
/// stream with `Changed` instead of a digest: `get` fails, renames nothing, and a new `get`
/// fetches the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rewritten_during_a_download_fails_it_and_is_never_verified() {
    tokio::time::timeout(LIMIT, async {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("big.bin");
        let (old, new) = (pattern(0, BIG_LEN), pattern(0x5a, BIG_LEN));
        std::fs::write(&file, &old).unwrap();
        let server = server_on(root.path()).await;
        let (proxy, paused, go) = pausing_proxy(server.tcp_addr(), 1 << 20).await;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("big.bin");
        let download = tokio::spawn({
            let out = out.clone();
            let opts = pinned(&server);
            async move {
                let s = Session::connect(&url_at(proxy, Scheme::Tcp, ""), &opts).await?;
                let opts = GetOptions {
                    out: Some(out),
                    ..Default::default()
                };
                let r = get(&s, "big.bin", &opts).await;
                s.close().await;
                r
            }
        });
        paused.await.expect("the download reached the pause");
        rewrite_in_place(&file, &new);
        go.notify_one();
        let err = download
            .await
            .unwrap()
            .expect_err("a download of a file rewritten under it must fail");
        match &err {
            ClientError::Server { code, message } => {
                assert_eq!(*code, ErrorCode::Changed, "{err}");
                assert!(message.contains("changed on the server"), "{err}");
            }
            other => panic!("expected the server's `changed` error, got: {other}"),
        }
        assert!(!out.exists(), "a file under the final name after a change");
        assert!(partial_path(&out).exists(), "the partial file is kept");

        // Run again: the new version, verified against its own digest.
        let again = dir.path().join("again.bin");
        let r = fetch(&server, server.tcp_addr(), "big.bin", &again)
            .await
            .expect("a new download of the rewritten file");
        assert!(r.verified);
        assert!(std::fs::read(&again).unwrap() == new, "not the new version");
        server.shutdown().await;
    })
    .await
    .expect("test timed out");
}

/// The digest cache must not answer for another version of a file with the same size and
/// modification time: a file rewritten in place with its mtime restored is hashed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_cache_does_not_trust_size_and_mtime_alone() {
    tokio::time::timeout(LIMIT, async {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("small.bin");
        let (old, new) = (pattern(1, 300_000), pattern(0x77, 300_000));
        std::fs::write(&file, &old).unwrap();
        // A stamp from the past, so that "now" cannot alias it.
        let past = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(past)
            .unwrap();
        let server = server_on(root.path()).await;
        let dir = tempfile::tempdir().unwrap();
        for (round, want) in [(0, &old), (1, &old), (2, &new)] {
            if round == 2 {
                rewrite_in_place(&file, &new);
            }
            let out = dir.path().join(format!("small-{round}.bin"));
            let r = fetch(&server, server.tcp_addr(), "small.bin", &out)
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert!(r.verified, "round {round}");
            assert!(std::fs::read(&out).unwrap() == *want, "round {round}");
        }
        server.shutdown().await;
    })
    .await
    .expect("test timed out");
}
