//! What running the server meets: a file rewritten while it is served, the real binary's
//! start-up errors and logs, the state directory that keeps the certificate, the config file.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chunkcast_client::error::ClientError;
use chunkcast_client::get::{GetOptions, GetReport, get, partial_path};
use chunkcast_client::session::Session;
use chunkcast_client::url::Scheme;
use chunkcast_protocol::ErrorCode;
use chunkcast_server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};

use chunkcast_testkit::{pinned, url_at};

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

/// Rewrites `path` in place with `bytes` (same inode, same length). With `keep_mtime`, then
/// sets its modification time back to what it was, as `cp --preserve` or `rsync --inplace -t`
/// may: size and mtime alone cannot tell the versions apart.
fn rewrite_in_place(path: &Path, bytes: &[u8], keep_mtime: bool) {
    use std::io::Write;
    let before = std::fs::metadata(path).unwrap().modified().unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
    if keep_mtime {
        f.set_modified(before).unwrap();
    }
    let after = std::fs::metadata(path).unwrap();
    assert_eq!(after.modified().unwrap() == before, keep_mtime);
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
/// fetches the new version. That is a version 1 client's path; a version 2 client
/// (verified streaming) catches it at the first rewritten group: see the next test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rewritten_during_a_download_fails_it_and_is_never_verified() {
    rewritten_during_a_download(1).await;
}

/// With verified streaming the server builds the file's tree before it sends a byte, so the
/// bytes of a rewrite no longer match it: `get` fails at the first rewritten group, with only
/// verified (old) bytes kept, and renames nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rewritten_during_a_verified_download_fails_at_the_first_changed_group() {
    rewritten_during_a_download(2).await;
}

async fn rewritten_during_a_download(version: u16) {
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
            let opts = chunkcast_client::session::ConnectOptions {
                max_version: version,
                ..pinned(&server)
            };
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
        rewrite_in_place(&file, &new, false);
        go.notify_one();
        let err = download
            .await
            .unwrap()
            .expect_err("a download of a file rewritten under it must fail");
        match (version, &err) {
            (1, ClientError::Server { code, message }) => {
                assert_eq!(*code, ErrorCode::Changed, "{err}");
                assert!(message.contains("changed on the server"), "{err}");
            }
            (2, ClientError::Cut { cause, have, .. }) => {
                assert!(
                    matches!(cause.as_ref(), ClientError::Unverified { .. }),
                    "{err}"
                );
                let kept = std::fs::read(partial_path(&out)).unwrap();
                assert_eq!(kept.len() as u64, *have);
                assert!(
                    kept[..] == old[..kept.len()],
                    "only the old, verified bytes"
                );
            }
            (_, other) => panic!("expected the file's change to be caught, got: {other}"),
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

/// What moves a file's change time but not its content (a backup's hard link, a chmod) does
/// not fail a download of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_link_or_chmod_during_a_download_does_not_fail_it() {
    tokio::time::timeout(LIMIT, async {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("big.bin");
        let bytes = pattern(9, BIG_LEN);
        std::fs::write(&file, &bytes).unwrap();
        let server = server_on(root.path()).await;
        let (proxy, paused, go) = pausing_proxy(server.tcp_addr(), 1 << 20).await;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("big.bin");
        let download = tokio::spawn({
            let (opts, out) = (pinned(&server), out.clone());
            async move {
                let s = Session::connect(&url_at(proxy, Scheme::Tcp, ""), &opts).await?;
                let get_opts = GetOptions {
                    out: Some(out),
                    ..Default::default()
                };
                let r = get(&s, "big.bin", &get_opts).await;
                s.close().await;
                r
            }
        });
        paused.await.expect("the download reached the pause");
        let backup = tempfile::tempdir_in(root.path()).unwrap();
        std::fs::hard_link(&file, backup.path().join("big.bin")).unwrap();
        let mut perms = std::fs::metadata(&file).unwrap().permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(&file, perms).unwrap();
        go.notify_one();
        let r = download.await.unwrap().expect("the download completes");
        assert!(r.verified);
        assert!(std::fs::read(&out).unwrap() == bytes);
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
                rewrite_in_place(&file, &new, true);
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

/// The real binary with `args`, its stdout and stderr piped, killed when dropped.
fn spawn_server(args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_chunkcast-server"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("CHUNKCAST_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("chunkcast-server runs")
}

/// The `listening` line's `name=` field.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split(' ')
        .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
}

/// Starts the binary, returns its `listening` line and the stderr lines up to (and with) the
/// first that contains `until`, then stops it with SIGTERM.
async fn run_until_logged(args: &[&str], until: &str) -> (String, Vec<String>) {
    use tokio::io::AsyncBufReadExt;
    let mut child = spawn_server(args);
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut err = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let listening = out.next_line().await.unwrap().expect("a listening line");
    let mut logged = Vec::new();
    while let Some(line) = err.next_line().await.unwrap() {
        let done = line.contains(until);
        logged.push(line);
        if done {
            break;
        }
    }
    chunkcast_testkit::process::signal_pid(child.id().expect("running"), "TERM");
    let status = child.wait().await.unwrap();
    assert!(status.success(), "exit on SIGTERM: {status}");
    (listening, logged)
}

/// Issue 21: a busy port was reported as `Address already in use (os error 98): Address
/// already in use (os error 98)`; it now says which port and what to do, once.
#[tokio::test]
async fn a_busy_port_says_so_once_and_suggests_the_fix() {
    tokio::time::timeout(LIMIT, async {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let listen = format!("127.0.0.1:{port}");
        let state = dir.path().to_str().unwrap();
        let child = spawn_server(&["--root", state, "--state-dir", state, "--listen", &listen]);
        let out = child.wait_with_output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            out.stdout.is_empty(),
            "nothing on stdout when it cannot listen"
        );
        let want = format!(
            "chunkcast-server: port {port} is in use (another chunkcast-server?): pick another \
             with --listen 127.0.0.1:0 or stop the other server"
        );
        assert!(stderr.lines().any(|l| l == want), "{stderr}");
        assert!(!stderr.contains("os error 98"), "{stderr}");
    })
    .await
    .expect("test timed out");
}

/// Issue 21: the self-signed certificate was new on every start, so every client had to pin
/// again. With a state directory the cert-sha256 survives a restart; the log (plain text when
/// stderr is not a terminal) says where the web viewer is.
#[tokio::test]
async fn the_pin_survives_a_restart_and_the_log_gives_the_web_url() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let state = dir.path().join("state");
        let (root, state) = (root.to_str().unwrap(), state.to_str().unwrap());
        let args = [
            "--root",
            root,
            "--state-dir",
            state,
            "--listen",
            "127.0.0.1:0",
            "--web",
            "127.0.0.1:0",
        ];
        let (first, log) = run_until_logged(&args, "web viewer").await;
        let web = field(&first, "web");
        let url_line = log.last().unwrap();
        assert!(url_line.contains(&format!("http://{web}/")), "{log:?}");
        assert!(
            log.iter().all(|l| !l.contains('\u{1b}')),
            "colour codes in a log that is not a terminal: {log:?}"
        );
        let (second, _) = run_until_logged(&args, "web viewer").await;
        assert_eq!(field(&first, "cert-sha256"), field(&second, "cert-sha256"));
        // Without the state directory's file, a new certificate.
        std::fs::remove_file(Path::new(state).join("identity.pem")).unwrap();
        let (third, _) = run_until_logged(&args, "web viewer").await;
        assert_ne!(field(&first, "cert-sha256"), field(&third, "cert-sha256"));
    })
    .await
    .expect("test timed out");
}

/// `--config FILE`: the flags as TOML keys, the command line over the file, and a key no flag
/// has refused with its name, by the real binary.
#[tokio::test]
async fn the_config_file_sets_flags_and_refuses_unknown_keys() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("media")).unwrap();
        let config = dir.path().join("server.toml");
        std::fs::write(
            &config,
            "root = \"media\"\nstate-dir = \"state\"\nlisten = \"127.0.0.1:0\"\n\
             web = \"127.0.0.1:0\"\nmax-connections = 8\n",
        )
        .unwrap();
        let config_arg = config.to_str().unwrap();
        let (line, log) = run_until_logged(&["--config", config_arg], "web viewer").await;
        assert!(line.contains(" web=127.0.0.1:"), "{line}");
        let media = dir.path().join("media");
        assert!(
            log.iter()
                .any(|l| l.contains("serving") && l.contains(media.to_str().unwrap())),
            "the root is relative to the file: {log:?}"
        );
        assert!(dir.path().join("state/identity.pem").exists());
        // The command line wins: no web viewer.
        let other = dir.path().join("other.toml");
        std::fs::write(
            &other,
            "listen = \"127.0.0.1:0\"\nmetrics = \"127.0.0.1:0\"\n",
        )
        .unwrap();
        let (line, _) = run_until_logged(
            &["--config", config_arg, "--metrics", "127.0.0.1:0"],
            "metrics:",
        )
        .await;
        assert!(line.contains(" metrics=127.0.0.1:"), "{line}");

        std::fs::write(&config, "listen = \"127.0.0.1:0\"\nmax-conections = 8\n").unwrap();
        let out = spawn_server(&["--config", config_arg])
            .wait_with_output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("max-conections"), "names the key: {stderr}");
        assert!(stderr.contains(config_arg), "names the file: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    })
    .await
    .expect("test timed out");
}

/// A server certificate and key as PEM files in `dir`, for `--cert/--key`.
fn write_pair(
    dir: &Path,
    name: &str,
    cert: &rcgen::Certificate,
    key: &rcgen::KeyPair,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

async fn tls_server(root: &Path, cert: (std::path::PathBuf, std::path::PathBuf)) -> Server {
    let mut c = chunkcast_server::Config::on("127.0.0.1:0".parse().unwrap());
    c.root = Some(root.to_owned());
    c.cert = Some(cert);
    Server::start(c).await.expect("server starts")
}

async fn lists_with_ca(server: &Server, scheme: Scheme, ca: &Path) -> Result<(), ClientError> {
    let addr = if scheme == Scheme::Quic {
        server.quic_addr()
    } else {
        server.tcp_addr()
    };
    let opts = chunkcast_client::session::ConnectOptions {
        trust: chunkcast_transport::tls::Trust::Ca(ca.to_owned()),
        ..Default::default()
    };
    let s = Session::connect(&url_at(addr, scheme, ""), &opts).await?;
    s.list("").await?;
    s.close().await;
    Ok(())
}

/// Issue 21: `--ca` with a certificate from `openssl req -x509` (self-signed, CA:TRUE) failed
/// with `CaUsedAsEndEntity`. It is now trusted as given; a CA with a leaf it signed works as
/// before; any other certificate is still refused.
#[tokio::test]
async fn ca_trusts_a_self_signed_server_certificate_and_a_ca_signed_leaf() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];

        // What `openssl req -x509` makes: self-signed, and marked as a CA.
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let selfsigned = params.self_signed(&key).unwrap();
        let pair = write_pair(dir.path(), "selfsigned", &selfsigned, &key);
        let server = tls_server(dir.path(), pair.clone()).await;
        for scheme in [Scheme::Tcps, Scheme::Quic] {
            lists_with_ca(&server, scheme, &pair.0)
                .await
                .unwrap_or_else(|e| panic!("{scheme:?}: {e}"));
        }

        // Another self-signed certificate in the --ca file: refused.
        let other_key = KeyPair::generate().unwrap();
        let other = CertificateParams::new(names.clone())
            .unwrap()
            .self_signed(&other_key)
            .unwrap();
        let (other_pem, _) = write_pair(dir.path(), "other", &other, &other_key);
        let e = lists_with_ca(&server, Scheme::Tcps, &other_pem)
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Secure { .. }), "{e}");
        server.shutdown().await;

        // A CA, and a leaf it signed: the --ca file holds the CA only.
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let (ca_pem, _) = write_pair(dir.path(), "ca", &ca, &ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let issuer = Issuer::new(ca_params, &ca_key);
        let leaf = CertificateParams::new(names)
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let pair = write_pair(dir.path(), "leaf", &leaf, &leaf_key);
        let server = tls_server(dir.path(), pair).await;
        lists_with_ca(&server, Scheme::Tcps, &ca_pem)
            .await
            .expect("CA-signed leaf");
        let e = lists_with_ca(&server, Scheme::Tcps, &other_pem)
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Secure { .. }), "{e}");
        server.shutdown().await;
    })
    .await
    .expect("test timed out");
}

/// Issue 21: at the default level the log has one line per request (peer, path, outcome,
/// bytes, duration) and every refusal with its reason.
#[tokio::test]
async fn the_log_has_a_line_per_request_and_every_refusal_with_its_reason() {
    use tokio::io::AsyncBufReadExt;
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("a.bin"), pattern(3, 100_000)).unwrap();
        let state = dir.path().join("state");
        let mut child = spawn_server(&[
            "--root",
            root.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--token",
            "sesame",
        ]);
        let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let line = out.next_line().await.unwrap().expect("a listening line");
        let addr: SocketAddr = field(&line, "tcp").parse().unwrap();
        let opts = |token: &str| chunkcast_client::session::ConnectOptions {
            trust: chunkcast_transport::tls::Trust::pin_from_hex(field(&line, "cert-sha256"))
                .unwrap(),
            token: Some(token.to_owned()),
            ..Default::default()
        };
        let bad = Session::connect(&url_at(addr, Scheme::Tcps, ""), &opts("wrong")).await;
        assert!(bad.is_err());
        let s = Session::connect(&url_at(addr, Scheme::Tcps, ""), &opts("sesame"))
            .await
            .unwrap();
        let save = dir.path().join("a.bin");
        let get_opts = GetOptions {
            out: Some(save),
            ..Default::default()
        };
        get(&s, "a.bin", &get_opts).await.expect("get a.bin");
        let missing = GetOptions {
            out: Some(dir.path().join("m")),
            ..Default::default()
        };
        assert!(get(&s, "missing.bin", &missing).await.is_err());
        assert!(get(&s, "../state/identity.pem", &missing).await.is_err());
        s.list("").await.unwrap();
        s.close().await;

        chunkcast_testkit::process::signal_pid(child.id().expect("running"), "TERM");
        let out = child.wait_with_output().await.unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        let has = |words: &[&str]| log.lines().any(|l| words.iter().all(|w| l.contains(w)));
        assert!(
            has(&["INFO", "refused: missing or wrong token", "peer=127.0.0.1:"]),
            "{log}"
        );
        assert!(
            has(&[
                "INFO",
                "path=a.bin",
                "bytes=100000",
                "ms=",
                "get: complete",
                "peer="
            ]),
            "{log}"
        );
        assert!(
            has(&["path=missing.bin", "get: refused: not found"]),
            "{log}"
        );
        assert!(
            has(&["path=../state/identity.pem", "get: refused: bad request"]),
            "{log}"
        );
        assert!(has(&["list: 1 entries"]), "{log}");
    })
    .await
    .expect("test timed out");
}
