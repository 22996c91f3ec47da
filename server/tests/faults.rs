//! Faults on the data path, injected by loopback proxies between the real client and the real
//! server: delay, a cut connection, a flipped byte, a gap in the stream (TCP and TLS), and
//! datagram loss and corruption (QUIC). The client must notice (a cut is `Lost`, a flipped
//! payload byte fails the tree check of its group as `Unverified`: a verified download's chunks
//! carry a CRC of their header only), never leave anything under the final
//! name, keep only verified bytes in the partial file, and `--resume` must then complete the
//! file byte for byte.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chunkcast_client::error::ClientError;
use chunkcast_client::get::{GetOptions, GetReport, get, partial_path};
use chunkcast_client::session::Session;
use chunkcast_client::url::Scheme;
use chunkcast_protocol::verify::VerifyError;
use chunkcast_server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use chunkcast_testkit::*;

const LIMIT: Duration = Duration::from_secs(45);

/// What the proxy does to one connection's server→client bytes.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Nothing.
    Pass,
    /// Holds every piece this long before forwarding it.
    Delay(Duration),
    /// Forwards `after` bytes, then drops both directions, as a failing network does.
    Cut { after: usize },
    /// Flips the bits of the byte at offset `at`.
    Corrupt { at: usize },
    /// Leaves out `len` bytes from offset `at`, then goes on.
    Skip { at: usize, len: usize },
}

/// A TCP proxy to `target`: connection `i` suffers the `i`-th fault of the list, later ones
/// pass untouched.
async fn tcp_proxy(target: SocketAddr, faults: &[Fault]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let faults = Arc::new(Mutex::new(faults.iter().copied().collect::<VecDeque<_>>()));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let fault = faults.lock().unwrap().pop_front().unwrap_or(Fault::Pass);
            tokio::spawn(relay(client, target, fault));
        }
    });
    addr
}

async fn relay(client: TcpStream, target: SocketAddr, fault: Fault) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        let _ = sw.shutdown().await;
    });
    let mut pos = 0usize; // offset in the server's stream of buf[0]
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match sr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let piece = &mut buf[..n];
        let range = pos..pos + n;
        pos += n;
        let out: Vec<u8> = match fault {
            Fault::Pass => piece.to_vec(),
            Fault::Delay(d) => {
                // real time: the fault is latency on a real socket.
                tokio::time::sleep(d).await;
                piece.to_vec()
            }
            Fault::Cut { after } if range.end > after => {
                let keep = after.saturating_sub(range.start);
                let _ = cw.write_all(&piece[..keep]).await;
                up.abort();
                return; // both halves dropped: the client sees the connection end
            }
            Fault::Cut { .. } => piece.to_vec(),
            Fault::Corrupt { at } => {
                if range.contains(&at) {
                    piece[at - range.start] ^= 0xFF;
                }
                piece.to_vec()
            }
            Fault::Skip { at, len } => piece
                .iter()
                .enumerate()
                .filter(|(i, _)| !(at..at + len).contains(&(range.start + i)))
                .map(|(_, b)| *b)
                .collect(),
        };
        if cw.write_all(&out).await.is_err() {
            break;
        }
    }
    let _ = cw.shutdown().await;
    let _ = up.await;
}

/// A UDP relay for one QUIC client: drops `drop_per_mille` of the datagrams each way and
/// flips a byte in `corrupt_per_mille` of them, from a seeded generator.
async fn udp_proxy(target: SocketAddr, drop_per_mille: u64, corrupt_per_mille: u64) -> SocketAddr {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(target).await.unwrap();
    let addr = front.local_addr().unwrap();
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let faulty = move |seed: u64| {
        let mut x = seed;
        move |d: &mut [u8]| -> bool {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let roll = x % 1000;
            if roll < drop_per_mille {
                return false;
            }
            if roll < drop_per_mille + corrupt_per_mille && !d.is_empty() {
                let i = (x >> 20) as usize % d.len();
                d[i] ^= 0x5A;
            }
            true
        }
    };
    {
        let (front, back, client) = (front.clone(), back.clone(), client.clone());
        let mut pass = faulty(0x9E37_79B9_7F4A_7C15);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().unwrap() = Some(from);
                if pass(&mut buf[..n]) {
                    let _ = back.send(&buf[..n]).await;
                }
            }
        });
    }
    let mut pass = faulty(0xD1B5_4A32_D192_ED03);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = back.recv(&mut buf).await {
            let to = *client.lock().unwrap();
            if let Some(to) = to {
                if pass(&mut buf[..n]) {
                    let _ = front.send_to(&buf[..n], to).await;
                }
            }
        }
    });
    addr
}

async fn fetch(
    server: &Server,
    via: SocketAddr,
    scheme: Scheme,
    name: &str,
    out: &Path,
    resume: bool,
) -> Result<GetReport, ClientError> {
    let s = Session::connect(&url_at(via, scheme, ""), &pinned(server)).await?;
    let opts = GetOptions {
        out: Some(out.to_owned()),
        resume,
        ..Default::default()
    };
    let r = get(&s, name, &opts).await;
    s.close().await;
    r
}

/// After a failed attempt: nothing under the final name, and the partial file holds only a
/// prefix of the original (only verified bytes are ever written). Returns its length.
fn check_failed_attempt(out: &Path, name: &str) -> u64 {
    assert!(
        !out.exists(),
        "a file under the final name after a failed download"
    );
    let partial = std::fs::read(partial_path(out)).unwrap_or_default();
    let original = std::fs::read(samples().join(name)).unwrap();
    assert!(partial.len() < original.len());
    assert!(
        partial[..] == original[..partial.len()],
        "the partial file holds bytes that are not the original's"
    );
    partial.len() as u64
}

/// Resumes through a clean path and checks the result is the original, byte for byte.
async fn resume_and_check(
    server: &Server,
    via: SocketAddr,
    scheme: Scheme,
    name: &str,
    out: &Path,
    have: u64,
) {
    let r = fetch(server, via, scheme, name, out, true)
        .await
        .expect("the resumed download completes");
    assert!(r.verified);
    assert_eq!(r.resumed_from, have);
    assert!(!partial_path(out).exists(), "partial left behind");
    assert_eq!(
        file_digest(out),
        digest_of(name),
        "the resumed file differs"
    );
}

async fn run<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(LIMIT, test)
        .await
        .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_fails_its_chunk_and_resume_completes_the_file() {
    run(async {
        let server = server_with(|_| {}).await;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("big.bin");
        let proxy = tcp_proxy(server.tcp_addr(), &[Fault::Corrupt { at: 5_000_000 }]).await;
        let err = fetch(&server, proxy, Scheme::Tcp, BIG, &out, false)
            .await
            .unwrap_err();
        // A verified download's chunks carry a CRC of their header only (`HEADER_CRC`): the
        // tree check catches the flipped payload byte, at the group that holds it.
        assert!(
            matches!(
                err.cause(),
                ClientError::Unverified {
                    error: VerifyError::Data { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("--resume"),
            "says what to do: {err}"
        );
        let have = check_failed_attempt(&out, BIG);
        eprintln!("flipped byte: {err}; {have} verified bytes kept");
        assert!(have > 4_000_000 && have < 5_000_000, "{have}");
        resume_and_check(&server, proxy, Scheme::Tcp, BIG, &out, have).await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_is_lost_and_resume_completes_the_file() {
    run(async {
        let server = server_with(|_| {}).await;
        let dir = tempfile::tempdir().unwrap();
        for (scheme, after) in [(Scheme::Tcp, 7_000_000), (Scheme::Tcps, 3_000_000)] {
            let out = dir.path().join(format!("{}.bin", scheme.name()));
            let proxy = tcp_proxy(server.tcp_addr(), &[Fault::Cut { after }]).await;
            let err = fetch(&server, proxy, scheme, BIG, &out, false)
                .await
                .unwrap_err();
            assert!(
                matches!(err.cause(), ClientError::Lost(_)),
                "{scheme:?}: {err:?}"
            );
            let have = check_failed_attempt(&out, BIG);
            eprintln!("cut {scheme:?} after {after}: {err}; {have} verified bytes kept");
            assert!(have > 0 && have < after as u64, "{scheme:?}: {have}");
            resume_and_check(&server, proxy, scheme, BIG, &out, have).await;
        }
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_the_stream_is_detected_and_resume_completes_the_file() {
    run(async {
        let server = server_with(|_| {}).await;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("gap.bin");
        let proxy = tcp_proxy(
            server.tcp_addr(),
            &[Fault::Skip {
                at: 3_000_000,
                len: 1000,
            }],
        )
        .await;
        let err = fetch(&server, proxy, Scheme::Tcp, BIG, &out, false)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err.cause(),
                ClientError::Corrupt(_) | ClientError::Lost(_) | ClientError::Unverified { .. }
            ),
            "{err:?}"
        );
        let have = check_failed_attempt(&out, BIG);
        eprintln!("1000-byte gap: {err}; {have} verified bytes kept");
        resume_and_check(&server, proxy, Scheme::Tcp, BIG, &out, have).await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_under_tls_fails_the_record_and_resume_completes_the_file() {
    run(async {
        let server = server_with(|_| {}).await;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tls.bin");
        let proxy = tcp_proxy(server.tcp_addr(), &[Fault::Corrupt { at: 2_000_000 }]).await;
        let err = fetch(&server, proxy, Scheme::Tcps, BIG, &out, false)
            .await
            .unwrap_err();
        // TLS authenticates every record: the flip is caught before chunkcast sees it.
        assert!(matches!(err.cause(), ClientError::Lost(_)), "{err:?}");
        let have = check_failed_attempt(&out, BIG);
        eprintln!("flipped byte under TLS: {err}; {have} verified bytes kept");
        resume_and_check(&server, proxy, Scheme::Tcps, BIG, &out, have).await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_slows_a_download_down_but_breaks_nothing() {
    run(async {
        let server = server_with(|_| {}).await;
        let dir = tempfile::tempdir().unwrap();
        let name = chunkcast_media_samples::SWEEP_48K_WAV;
        let proxy = tcp_proxy(server.tcp_addr(), &[Fault::Delay(Duration::from_millis(5))]).await;
        for scheme in [Scheme::Tcp, Scheme::Tcps] {
            let out = dir.path().join(format!("{}.wav", scheme.name()));
            let r = fetch(&server, proxy, scheme, name, &out, false)
                .await
                .unwrap();
            assert!(r.verified);
            assert_eq!(file_digest(&out), digest_of(name));
        }
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_rides_out_lost_and_corrupted_datagrams() {
    run(async {
        let server = server_with(|_| {}).await;
        let dir = tempfile::tempdir().unwrap();
        let name = chunkcast_media_samples::CLIP_Y4M;
        // 2% of datagrams lost and 1% corrupted, each way: QUIC drops the corrupted ones (they
        // fail authentication) and retransmits; the file arrives whole without a resume.
        let proxy = udp_proxy(server.quic_addr(), 20, 10).await;
        let out = dir.path().join("clip.y4m");
        let t = std::time::Instant::now();
        let r = fetch(&server, proxy, Scheme::Quic, name, &out, false)
            .await
            .unwrap();
        eprintln!("{name} over a lossy QUIC path in {:?}", t.elapsed());
        assert!(r.verified);
        assert_eq!(r.resumed_from, 0);
        assert_eq!(file_digest(&out), digest_of(name));
        server.shutdown().await;
    })
    .await;
}
