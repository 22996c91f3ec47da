//! Hostile clients against the real server, in-process on loopback: garbage, oversized and
//! truncated frames, wrong versions and tokens, slowloris, a thousand idle sockets, clients
//! that never read, abandoned QUIC streams, path traversal, request floods. Throughout, the
//! server stays up and a well-behaved download of the 50 MB sample running beside the attack
//! arrives byte for byte.

use std::time::{Duration, Instant};

use chunkcast_client::error::ClientError;
use chunkcast_client::session::{ConnectOptions, OpenOptions, Session};
use chunkcast_client::url::Scheme;
use chunkcast_protocol::wire::{Frame, Mode, Open, Resume};
use chunkcast_protocol::{ErrorCode, StreamId};
use chunkcast_server::Server;
use chunkcast_transport::quic;
use chunkcast_transport::tls::Trust;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::RwLock;

use chunkcast_testkit::*;

/// Every test is bounded: a hang is a failure, not a stuck CI.
const LIMIT: Duration = Duration::from_secs(45);
/// The handshake timeout of the tests that measure it: short, so that the suite stays fast.
const HANDSHAKE: Duration = Duration::from_secs(1);
/// Slack on top of a timeout before a drop counts as late: timers, a loaded 2-core machine
/// and a debug build.
const SLACK: Duration = Duration::from_millis(700);
const TCP_SENT: &str = "chunkcast_bytes_sent_total{transport=\"tcp\"}";

/// The memory test takes this exclusively; every other test shares it, so that no other
/// test's downloads run while resident memory is being measured.
static EXCLUSIVE: RwLock<()> = RwLock::const_new(());

async fn run<F: Future<Output = ()>>(test: F) {
    let _shared = EXCLUSIVE.read().await;
    tokio::time::timeout(LIMIT, test)
        .await
        .expect("test timed out");
}

fn first_error(frames: &[Frame]) -> Option<(ErrorCode, String)> {
    frames.iter().find_map(|f| match f {
        Frame::Error(e) => Some((e.code, e.message.clone())),
        Frame::Goodbye { code, message } => Some((*code, message.clone())),
        _ => None,
    })
}

fn open_frame(request: u32, path: &str, mode: Mode) -> Frame {
    Frame::Open(Open {
        request,
        stream: StreamId(request),
        path: path.to_owned(),
        mode,
        resume: Resume::Start,
        compress: false,
        raw: false,
        fragment: false,
        header_crc: false,
        chunk_size: 0,
    })
}

async fn raw_quic(server: &Server) -> (quinn::Endpoint, quinn::Connection) {
    let trust = Trust::pin_from_hex(server.fingerprint()).unwrap();
    let ep = quic::client_endpoint(server.quic_addr(), &trust).unwrap();
    let conn = ep
        .connect(server.quic_addr(), "localhost")
        .unwrap()
        .await
        .unwrap();
    (ep, conn)
}

async fn with_metrics(
    f: impl FnOnce(&mut chunkcast_server::Config),
) -> (Server, std::net::SocketAddr) {
    let server = server_with(|c| {
        c.metrics = Some("127.0.0.1:0".parse().unwrap());
        f(c);
    })
    .await;
    let addr = server.metrics_addr().expect("metrics are served");
    (server, addr)
}

/// Polls a metric until `ok` holds or `within` passes; returns the last value and the time.
async fn wait_metric(
    addr: std::net::SocketAddr,
    series: &str,
    within: Duration,
    ok: impl Fn(f64) -> bool,
) -> (f64, Duration) {
    let t = Instant::now();
    loop {
        let v = metric(&scrape(addr).await, series);
        if ok(v) || t.elapsed() > within {
            return (v, t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_an_error_and_a_close() {
    run(async {
        let server = server_with(|_| {}).await;
        let mut noise = vec![0u8; 4096];
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for b in &mut noise {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        noise[0] = 0x42; // not a TLS record: the plain path
        let mut fake_tls = vec![0x16, 3, 1, 0, 40];
        fake_tls.extend_from_slice(&noise[..40]);
        let cases: Vec<(&str, Vec<u8>, Option<ErrorCode>)> = vec![
            (
                "http",
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                Some(ErrorCode::TooLarge),
            ),
            ("noise", noise.clone(), Some(ErrorCode::TooLarge)),
            ("empty frame", vec![0, 0, 0, 0], Some(ErrorCode::Protocol)),
            (
                "unknown type",
                vec![0, 0, 0, 1, 0xEE],
                Some(ErrorCode::Protocol),
            ),
            (
                "list before hello",
                encoded(&[Frame::List {
                    request: 1,
                    prefix: String::new(),
                }])
                .to_vec(),
                Some(ErrorCode::Protocol),
            ),
            ("fake tls", fake_tls, None),
        ];
        let attack = async {
            for (name, bytes, code) in cases {
                let mut s = TcpStream::connect(server.tcp_addr()).await.unwrap();
                let t = Instant::now();
                let _ = s.write_all(&bytes).await;
                let (frames, end) = read_frames(&mut s, Duration::from_secs(5)).await;
                assert_ne!(end, End::Open, "{name}: still open after {:?}", t.elapsed());
                match code {
                    Some(code) => {
                        let got = first_error(&frames).map(|e| e.0);
                        assert_eq!(got, Some(code), "{name}: {frames:?}");
                    }
                    None => assert!(frames.is_empty(), "{name}: {frames:?}"),
                }
            }
            // The same over QUIC's control stream.
            let (ep, conn) = raw_quic(&server).await;
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(&noise).await.unwrap();
            let (frames, end) = read_frames(&mut recv, Duration::from_secs(5)).await;
            assert_eq!(first_error(&frames).map(|e| e.0), Some(ErrorCode::TooLarge));
            assert_ne!(end, End::Open);
            conn.close(0u32.into(), b"");
            ep.wait_idle().await;
        };
        beside(&server, Scheme::Tcp, attack).await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_length_prefixes_are_refused_as_too_large() {
    run(async {
        let (server, maddr) = with_metrics(|_| {}).await;
        let attack = async {
            // Before the handshake: a 16 MiB length prefix.
            let mut s = TcpStream::connect(server.tcp_addr()).await.unwrap();
            s.write_all(&[0x00, 0xFF, 0xFF, 0xFF, 1, 2, 3])
                .await
                .unwrap();
            let (frames, end) = read_frames(&mut s, Duration::from_secs(5)).await;
            let (code, message) = first_error(&frames).expect("an error frame");
            assert_eq!(code, ErrorCode::TooLarge, "{message}");
            assert!(message.contains("exceeds the limit"), "{message}");
            assert_ne!(end, End::Open);
            // After it: 2 MiB, above the default 1 MiB + header.
            let mut s = raw_session(&server).await;
            s.write_all(&[0x00, 0x20, 0x00, 0x00, 9]).await.unwrap();
            let (frames, end) = read_frames(&mut s, Duration::from_secs(5)).await;
            assert_eq!(
                first_error(&frames).map(|e| e.0),
                Some(ErrorCode::TooLarge),
                "{frames:?}"
            );
            assert_ne!(end, End::Open);
        };
        beside(&server, Scheme::Tcp, attack).await;
        let (dropped, _) = wait_metric(
            maddr,
            "chunkcast_connections_dropped_total{reason=\"too_large\"}",
            Duration::from_secs(2),
            |v| v >= 1.0,
        )
        .await;
        assert_eq!(dropped, 1.0);
        let text = scrape(maddr).await;
        assert_eq!(
            metric(
                &text,
                "chunkcast_handshake_failures_total{reason=\"too_large\"}"
            ),
            1.0
        );
        server.shutdown().await;

        // The frame limit is configurable: at 4 KiB a 5000-byte LIST is too large.
        let server = server_with(|c| c.limits.wire.max_frame_len = 4096).await;
        let mut s = raw_session(&server).await;
        let list = encoded(&[Frame::List {
            request: 1,
            prefix: "x".repeat(4000),
        }]);
        assert!(list.len() < 4096 + 4, "a LIST of {} bytes fits", list.len());
        s.write_all(&list).await.unwrap();
        let (frames_ok, _) = read_frames(&mut s, Duration::from_millis(500)).await;
        assert_eq!(
            first_error(&frames_ok).map(|e| e.0),
            Some(ErrorCode::NotFound)
        );
        let list = encoded(&[Frame::List {
            request: 2,
            prefix: "x".repeat(4094),
        }]);
        s.write_all(&list).await.unwrap();
        let (frames, end) = read_frames(&mut s, Duration::from_secs(5)).await;
        assert_eq!(
            first_error(&frames).map(|e| e.0),
            Some(ErrorCode::TooLarge),
            "{frames:?}"
        );
        assert_ne!(end, End::Open);
        // Chunks are capped by the same limit, and still arrive whole.
        good_download(&server, Scheme::Tcps, None).await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frames_and_clients_vanishing_mid_frame_leave_no_trace() {
    run(async {
        let (server, maddr) = with_metrics(|c| c.limits.handshake_timeout = HANDSHAKE).await;
        let attack = async {
            let hello = hello(1, 1, None);
            let half = &hello[..hello.len() / 2];
            // Half a HELLO, then EOF: a truncated frame.
            let mut s = TcpStream::connect(server.tcp_addr()).await.unwrap();
            s.write_all(half).await.unwrap();
            s.shutdown().await.unwrap();
            let (frames, end) = read_frames(&mut s, Duration::from_secs(5)).await;
            let (code, message) = first_error(&frames).expect("an error");
            assert_eq!(code, ErrorCode::Protocol);
            assert!(message.contains("truncated"), "{message}");
            assert_ne!(end, End::Open);
            // Half a HELLO, and nothing more: dropped at the handshake timeout.
            let mut s = TcpStream::connect(server.tcp_addr()).await.unwrap();
            let t = Instant::now();
            s.write_all(half).await.unwrap();
            let (frames, end) = read_frames(&mut s, HANDSHAKE * 3).await;
            let took = t.elapsed();
            assert_eq!(first_error(&frames).map(|e| e.0), Some(ErrorCode::Timeout));
            assert_ne!(end, End::Open);
            assert!(took < HANDSHAKE + SLACK, "dropped after {took:?}");
            eprintln!("half a HELLO held open: dropped after {took:?}");
            // Mid-download: half an OPEN, then the socket is gone (reset, unread data).
            for _ in 0..3 {
                let mut s = raw_session(&server).await;
                s.write_all(&encoded(&[open_frame(1, BIG, Mode::Download)]))
                    .await
                    .unwrap();
                let mut got = 0;
                let mut buf = vec![0u8; 64 << 10];
                while got < 1 << 20 {
                    got += s.read(&mut buf).await.unwrap();
                }
                let open = encoded(&[open_frame(2, BIG, Mode::Download)]);
                s.write_all(&open[..open.len() - 3]).await.unwrap();
                drop(s);
            }
        };
        beside(&server, Scheme::Tcp, attack).await;
        let (open, took) = wait_metric(
            maddr,
            "chunkcast_connections_open{transport=\"tcp\"}",
            Duration::from_secs(5),
            |v| v == 0.0,
        )
        .await;
        assert_eq!(open, 0.0, "connections left open");
        eprintln!("all connections gone {took:?} after the attack");
        good_download(&server, Scheme::Quic, None).await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_version_is_refused_as_unsupported() {
    run(async {
        let (server, maddr) = with_metrics(|_| {}).await;
        let attack = async {
            for (min, max) in [(99, 99), (0, 0), (3, 7)] {
                let mut s = TcpStream::connect(server.tcp_addr()).await.unwrap();
                s.write_all(&hello(min, max, None)).await.unwrap();
                let (frames, end) = read_frames(&mut s, Duration::from_secs(5)).await;
                let (code, message) = first_error(&frames).expect("an error");
                assert_eq!(code, ErrorCode::UnsupportedVersion, "{message}");
                assert!(message.contains("version"), "{message}");
                assert_ne!(end, End::Open);
            }
            let (ep, conn) = raw_quic(&server).await;
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(&hello(99, 99, None)).await.unwrap();
            let (frames, _) = read_frames(&mut recv, Duration::from_secs(5)).await;
            assert_eq!(
                first_error(&frames).map(|e| e.0),
                Some(ErrorCode::UnsupportedVersion)
            );
            conn.close(0u32.into(), b"");
            ep.wait_idle().await;
        };
        beside(&server, Scheme::Quic, attack).await;
        let text = scrape(maddr).await;
        let failed = metric(
            &text,
            "chunkcast_handshake_failures_total{reason=\"unsupported_version\"}",
        );
        assert_eq!(failed, 4.0);
        server.shutdown().await;
    })
    .await;
}

/// Writes `bytes` one at a time, `every` apart, until the server closes; returns how long
/// after the first byte it closed.
async fn trickle(sock: TcpStream, bytes: Vec<u8>, every: Duration) -> Duration {
    let (mut rd, mut wr) = sock.into_split();
    let t = Instant::now();
    let writer = tokio::spawn(async move {
        for b in bytes.iter().cycle() {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            // real time: a slow client against the server's handshake timeout, over a real
            // socket; the pace is the attack.
            tokio::time::sleep(every).await;
        }
    });
    let mut sink = Vec::new();
    let _ = rd.read_to_end(&mut sink).await;
    writer.abort();
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_dropped_within_the_handshake_timeout() {
    run(async {
        let server = server_with(|c| c.limits.handshake_timeout = HANDSHAKE).await;
        let every = Duration::from_millis(100);
        let addr = server.tcp_addr();
        let attack = async {
            let silent = async {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let t = Instant::now();
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
                t.elapsed()
            };
            let plain = async {
                trickle(TcpStream::connect(addr).await.unwrap(), hello(1, 1, None).to_vec(), every).await
            };
            let tls = async {
                let mut record = vec![0x16, 3, 1, 2, 0];
                record.extend(std::iter::repeat_n(1u8, 512));
                trickle(TcpStream::connect(addr).await.unwrap(), record, every).await
            };
            let quic_silent = async {
                let (ep, conn) = raw_quic(&server).await;
                let t = Instant::now();
                // Streams opened and never written are invisible to the server.
                let _bi = conn.open_bi().await.unwrap();
                let _uni = conn.open_uni().await.unwrap();
                let e = conn.closed().await;
                let took = t.elapsed();
                assert!(
                    matches!(&e, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == 9u32.into()),
                    "{e}"
                );
                ep.wait_idle().await;
                took
            };
            let quic_trickle = async {
                let (ep, conn) = raw_quic(&server).await;
                let (mut send, mut recv) = conn.open_bi().await.unwrap();
                let t = Instant::now();
                let hello = hello(1, 1, None);
                let writer = tokio::spawn(async move {
                    for b in hello.iter() {
                        if send.write_all(&[*b]).await.is_err() {
                            return;
                        }
                        // real time: the pace is the attack (see `trickle`).
                        tokio::time::sleep(every).await;
                    }
                });
                let (frames, end) = read_frames(&mut recv, HANDSHAKE * 3).await;
                let took = t.elapsed();
                writer.abort();
                assert_eq!(first_error(&frames).map(|e| e.0), Some(ErrorCode::Timeout));
                assert_eq!(end, End::Eof);
                conn.close(0u32.into(), b"");
                ep.wait_idle().await;
                took
            };
            let (a, b, c, d, e) = tokio::join!(silent, plain, tls, quic_silent, quic_trickle);
            for (name, took) in [
                ("silent TCP", a),
                ("plain, a byte per 100 ms", b),
                ("TLS, a byte per 100 ms", c),
                ("QUIC without a control stream", d),
                ("QUIC, a byte per 100 ms", e),
            ] {
                eprintln!("slowloris {name}: dropped after {took:?}");
                assert!(took < HANDSHAKE + SLACK, "{name}: dropped after {took:?}");
                assert!(took >= HANDSHAKE - Duration::from_millis(50), "{name}: {took:?}");
            }
        };
        beside(&server, Scheme::Tcp, attack).await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_are_dropped_and_lock_no_one_out() {
    run(async {
        const IDLE: usize = 1000;
        let timeout = Duration::from_secs(2);
        let (server, maddr) = with_metrics(|c| {
            c.limits.handshake_timeout = timeout;
            c.limits.max_connections = IDLE + 100;
            c.limits.max_connections_per_ip = IDLE + 100;
        })
        .await;
        let t0 = Instant::now();
        let mut idle = Vec::with_capacity(IDLE);
        for _ in 0..IDLE {
            idle.push(TcpStream::connect(server.tcp_addr()).await.unwrap());
        }
        let opened = t0.elapsed();
        let (n, _) = wait_metric(
            maddr,
            "chunkcast_connections_open{transport=\"tcp\"}",
            Duration::from_secs(2),
            |v| v >= IDLE as f64,
        )
        .await;
        assert_eq!(n, IDLE as f64, "all idle connections are in");
        // A good client gets in while they are all open, and downloads beside them.
        let waits: Vec<_> = idle
            .into_iter()
            .map(|mut s| {
                tokio::spawn(async move {
                    let mut b = [0u8; 64];
                    let _ = s.read(&mut b).await;
                    t0.elapsed()
                })
            })
            .collect();
        let s = connect(&server, Scheme::Tcp).await;
        assert!(!s.list("").await.unwrap().is_empty());
        s.close().await;
        assert!(t0.elapsed() < timeout, "the good client got in while they were open");
        good_download(&server, Scheme::Tcp, None).await;
        let mut last = Duration::ZERO;
        for w in waits {
            last = last.max(w.await.unwrap());
        }
        eprintln!("{IDLE} idle connections opened in {opened:?}; the last dropped {last:?} after the first connect");
        assert!(last < opened + timeout + SLACK, "dropped after {last:?}");
        let text = scrape(maddr).await;
        assert!(metric(&text, "chunkcast_handshake_failures_total{reason=\"timeout\"}") >= IDLE as f64);
        let (open, _) = wait_metric(
            maddr,
            "chunkcast_connections_open{transport=\"tcp\"}",
            Duration::from_secs(3),
            |v| v == 0.0,
        )
        .await;
        assert_eq!(open, 0.0);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_refuse_with_busy_over_every_transport() {
    run(async {
        let (server, maddr) = with_metrics(|c| c.limits.max_connections_per_ip = 2).await;
        let held = [
            connect(&server, Scheme::Tcp).await,
            connect(&server, Scheme::Quic).await,
        ];
        for scheme in ALL {
            let err = Session::connect(&url(&server, scheme, ""), &pinned(&server))
                .await
                .err()
                .expect("refused");
            assert_eq!(err.code(), Some(ErrorCode::Busy), "{scheme:?}: {err}");
            assert!(
                err.to_string().contains("from your address"),
                "{scheme:?}: {err}"
            );
        }
        let [a, b] = held;
        a.close().await;
        // Its place comes back once the server has seen it go.
        let (_, _) = wait_metric(
            maddr,
            "chunkcast_connections_open{transport=\"tcp\"}",
            Duration::from_secs(3),
            |v| v == 0.0,
        )
        .await;
        good_download(&server, Scheme::Tcps, None).await;
        b.close().await;
        let text = scrape(maddr).await;
        assert_eq!(
            metric(
                &text,
                "chunkcast_connections_refused_total{reason=\"max_connections_per_ip\"}"
            ),
            3.0
        );
        server.shutdown().await;

        let server = server_with(|c| c.limits.max_connections = 2).await;
        let held = [
            connect(&server, Scheme::Quic).await,
            connect(&server, Scheme::Tcps).await,
        ];
        for scheme in ALL {
            let err = Session::connect(&url(&server, scheme, ""), &pinned(&server))
                .await
                .err()
                .expect("refused");
            assert_eq!(err.code(), Some(ErrorCode::Busy), "{scheme:?}: {err}");
            assert!(
                err.to_string().contains("connection limit"),
                "{scheme:?}: {err}"
            );
        }
        for s in held {
            s.close().await;
        }
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_costs_bounded_memory_and_is_dropped() {
    let _alone = EXCLUSIVE.write().await;
    tokio::time::timeout(LIMIT, async {
        let idle = Duration::from_secs(3);
        let (server, maddr) = with_metrics(|c| c.limits.idle_timeout = idle).await;
        // Warm up: one download, so that the allocator holds what a download needs.
        good_download(&server, Scheme::Quic, None).await;
        let base = rss();
        let sent_before = metric(&scrape(maddr).await, TCP_SENT);
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(base));
        let sampler = {
            let peak = peak.clone();
            tokio::spawn(async move {
                loop {
                    peak.fetch_max(rss(), std::sync::atomic::Ordering::Relaxed);
                    // real time: samples this process's memory while the stalls run.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        // Plain TCP: opens the 50 MB file, keeps the connection alive with pings, never reads.
        let mut tcp = raw_session(&server).await;
        tcp.write_all(&encoded(&[open_frame(1, BIG, Mode::Download)]))
            .await
            .unwrap();
        let t = Instant::now();
        // QUIC: the real client opens it and never takes a chunk.
        let q = connect(&server, Scheme::Quic).await;
        let stalled = q.open(&OpenOptions::download(BIG)).await.unwrap();
        let pinger = async {
            for i in 0..12u64 {
                let ping = encoded(&[Frame::Ping {
                    nonce: i,
                    time_us: 0,
                }]);
                if tcp.write_all(&ping).await.is_err() {
                    break;
                }
                // real time: pings keep the stalled connection from being idle on the
                // server's clock, so that only the write stall can end it.
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        };
        // The good download runs over QUIC, so that the TCP byte counter is the stalled one's.
        let (_, ()) = tokio::join!(pinger, good_download(&server, Scheme::Quic, None));
        let (stalls, _) = wait_metric(
            maddr,
            "chunkcast_connections_dropped_total{reason=\"write_stall\"}",
            idle * 2,
            |v| v >= 1.0,
        )
        .await;
        let dropped_after = t.elapsed();
        assert_eq!(stalls, 1.0, "the TCP reader that never reads is dropped");
        sampler.abort();
        let growth = peak
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(base);
        // What the server pushed to it before it stalled: socket buffers, not the file.
        let sent = metric(&scrape(maddr).await, TCP_SENT) - sent_before;
        eprintln!(
            "never-reading clients: RSS grew {:.1} MiB at peak; the server wrote {:.1} MiB to \
             the TCP one, which was dropped {dropped_after:?} after its OPEN",
            growth as f64 / f64::from(1 << 20),
            sent / f64::from(1 << 20)
        );
        assert!(growth < 64 << 20, "RSS grew {growth} bytes");
        assert!(
            sent < f64::from(32 << 20),
            "the server wrote {sent} bytes to a client that never read"
        );
        assert!(dropped_after < idle * 2, "{dropped_after:?}");
        drop(stalled);
        q.close().await;
        server.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_quic_streams_hold_nothing() {
    run(async {
        let (server, maddr) = with_metrics(|c| c.limits.handshake_timeout = HANDSHAKE).await;
        let attack = async {
            let (ep, conn) = raw_quic(&server).await;
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(&hello(1, 1, None)).await.unwrap();
            let mut buf = bytes::BytesMut::new();
            let mut decoder = chunkcast_protocol::wire::Decoder::default();
            let welcome = loop {
                if let Some(f) = decoder.decode(&mut buf).unwrap() {
                    break f;
                }
                recv.read_buf(&mut buf).await.unwrap();
            };
            assert!(matches!(welcome, Frame::Welcome(_)));
            // Uni streams with half a frame header, bi streams with a byte, all abandoned.
            let mut keep = Vec::new();
            for _ in 0..40 {
                let mut u = conn.open_uni().await.unwrap();
                u.write_all(&[0, 0, 1]).await.unwrap();
                keep.push(u);
            }
            let mut bis = Vec::new();
            for _ in 0..3 {
                let (mut s, r) = conn.open_bi().await.unwrap();
                s.write_all(&[0]).await.unwrap();
                bis.push((s, r));
            }
            // The control stream still answers.
            send.write_all(&encoded(&[Frame::List {
                request: 1,
                prefix: String::new(),
            }]))
            .await
            .unwrap();
            let catalog = loop {
                if let Some(f) = decoder.decode(&mut buf).unwrap() {
                    if !matches!(f, Frame::Ping { .. }) {
                        break f;
                    }
                    continue;
                }
                recv.read_buf(&mut buf).await.unwrap();
            };
            assert!(matches!(catalog, Frame::Catalog(_)), "{catalog:?}");
            conn.close(0u32.into(), b"");
            ep.wait_idle().await;
        };
        beside(&server, Scheme::Quic, attack).await;
        let (open, took) = wait_metric(
            maddr,
            "chunkcast_connections_open{transport=\"quic\"}",
            Duration::from_secs(5),
            |v| v == 0.0,
        )
        .await;
        assert_eq!(open, 0.0, "QUIC connections left open");
        eprintln!("abandoned QUIC streams: connection gone {took:?} after the client closed");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_never_leaves_the_root() {
    run(async {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.txt"), b"top secret").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::hard_link(samples().join(BIG), root.path().join(BIG)).unwrap();
        std::fs::create_dir(root.path().join("sub")).unwrap();
        std::fs::write(root.path().join("sub/inner.txt"), b"inside").unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(
                outside.path().join("secret.txt"),
                root.path().join("escape"),
            )
            .unwrap();
            std::os::unix::fs::symlink(outside.path(), root.path().join("escape-dir")).unwrap();
        }
        let root_path = root.path().to_owned();
        let server = server_with(move |c| c.root = Some(root_path)).await;
        let secret = outside.path().join("secret.txt").display().to_string();
        let attack = async {
            for scheme in [Scheme::Tcp, Scheme::Quic] {
                let s = connect(&server, scheme).await;
                for path in [
                    "..",
                    "../secret.txt",
                    "sub/../../secret.txt",
                    "sub/..",
                    ".",
                    "./sub/inner.txt",
                    "%2e%2e/secret.txt",
                    "%2e%2e%2fsecret.txt",
                    "..%2fsecret.txt",
                    "..%c0%afsecret.txt",
                    "....//secret.txt",
                    "..\\secret.txt",
                    "sub\\..\\..\\secret.txt",
                    "/etc/passwd",
                    "//etc/passwd",
                    secret.as_str(),
                    "escape",
                    "escape-dir/secret.txt",
                    "sub/inner.txt\0",
                    "\0",
                    "",
                    "sub",
                ] {
                    let err = s.open(&OpenOptions::download(path)).await.err();
                    let code = err.as_ref().and_then(ClientError::code);
                    assert!(
                        matches!(code, Some(ErrorCode::BadRequest | ErrorCode::NotFound)),
                        "{scheme:?} {path:?}: {err:?}"
                    );
                }
                for prefix in [
                    "..",
                    "../",
                    "sub/../..",
                    "escape-dir",
                    "/etc",
                    "%2e%2e",
                    "sub/../../..",
                ] {
                    let r = s.list(prefix).await;
                    assert!(
                        matches!(
                            r.as_ref().err().and_then(ClientError::code),
                            Some(ErrorCode::BadRequest | ErrorCode::NotFound)
                        ),
                        "{scheme:?} list {prefix:?}: {r:?}"
                    );
                }
                let all = s.list("").await.unwrap();
                let names: Vec<_> = all.iter().map(|e| e.path.as_str()).collect();
                assert!(names.contains(&"sub/inner.txt"), "{names:?}");
                assert!(
                    !names
                        .iter()
                        .any(|n| n.contains("escape") || n.contains("secret")),
                    "{names:?}"
                );
                s.close().await;
            }
        };
        beside(&server, Scheme::Tcps, attack).await;
        server.shutdown().await;
    })
    .await;
}

/// Hidden files (`.env`, `.git/config`, `a/.secret/b`, a symlink to one) answer exactly as a
/// missing file, and are not listed, unless the server runs with `--serve-hidden`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_files_are_not_found_unless_served() {
    run(async {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join(".env"), b"API_KEY=secret").unwrap();
        std::fs::create_dir_all(root.path().join(".git")).unwrap();
        std::fs::write(root.path().join(".git/config"), b"[core]").unwrap();
        std::fs::create_dir_all(root.path().join("a/.secret")).unwrap();
        std::fs::write(root.path().join("a/.secret/b"), b"b").unwrap();
        std::fs::write(root.path().join("a/visible.txt"), b"v").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.path().join(".env"), root.path().join("env-link")).unwrap();
        for serve_hidden in [false, true] {
            let root_path = root.path().to_owned();
            let server = server_with(move |c| {
                c.root = Some(root_path);
                c.serve_hidden = serve_hidden;
            })
            .await;
            for scheme in [Scheme::Tcp, Scheme::Quic] {
                let s = connect(&server, scheme).await;
                let missing = s
                    .open(&OpenOptions::download("no-such-file"))
                    .await
                    .err()
                    .unwrap();
                for path in [
                    ".env",
                    ".git/config",
                    "a/.secret/b",
                    "a/../.env",
                    "env-link",
                ] {
                    let r = s.open(&OpenOptions::download(path)).await;
                    match (serve_hidden, r) {
                        (true, Ok(incoming)) => incoming.cancel().await,
                        (true, Err(e)) if path.contains("..") => {
                            assert_eq!(e.code(), Some(ErrorCode::BadRequest), "{path}");
                        }
                        (false, Err(e)) if path.contains("..") => {
                            assert_eq!(e.code(), Some(ErrorCode::BadRequest), "{path}");
                        }
                        (false, Err(e)) => {
                            // The same answer as for a file that does not exist.
                            assert_eq!(e.code(), missing.code(), "{scheme:?} {path}");
                            assert!(e.to_string().contains("no such file"), "{e}");
                        }
                        (serve, r) => panic!("{scheme:?} {path} (serve {serve}): {:?}", r.err()),
                    }
                }
                let names: Vec<String> = s
                    .list("")
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|e| e.path)
                    .collect();
                assert!(names.contains(&"a/visible.txt".to_owned()), "{names:?}");
                let hidden = names.iter().any(|n| n.contains("/.") || n.starts_with('.'));
                assert_eq!(hidden, serve_hidden, "{names:?}");
                s.close().await;
            }
            server.shutdown().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_a_hundred_times_is_refused_each_time() {
    run(async {
        let (server, maddr) = with_metrics(|c| c.token = Some("sesame".into())).await;
        let attack = async {
            let t = Instant::now();
            for i in 0..100 {
                let scheme = ALL[i % 3];
                let opts = ConnectOptions {
                    token: Some(format!("guess-{i}")),
                    ..pinned(&server)
                };
                let err = Session::connect(&url(&server, scheme, ""), &opts)
                    .await
                    .err()
                    .expect("refused");
                assert_eq!(
                    err.code(),
                    Some(ErrorCode::Unauthorized),
                    "{i} {scheme:?}: {err}"
                );
            }
            eprintln!("100 wrong tokens refused in {:?}", t.elapsed());
        };
        let (_, ()) = tokio::join!(attack, good_download(&server, Scheme::Quic, Some("sesame")));
        let text = scrape(maddr).await;
        assert_eq!(
            metric(
                &text,
                "chunkcast_handshake_failures_total{reason=\"unauthorized\"}"
            ),
            100.0
        );
        assert_eq!(
            metric(&text, "chunkcast_errors_sent_total{code=\"unauthorized\"}"),
            100.0
        );
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_flood_gets_busy_then_the_door() {
    run(async {
        let (server, maddr) = with_metrics(|c| {
            c.limits.max_requests_per_sec = 5;
            c.limits.max_streams_per_connection = 2;
        })
        .await;
        let attack = async {
            // 30 listings at once: 5 served, 5 refused as busy, then the connection closes.
            let mut s = raw_session(&server).await;
            let flood: Vec<_> = (1..=30)
                .map(|request| Frame::List {
                    request,
                    prefix: String::new(),
                })
                .collect();
            s.write_all(&encoded(&flood)).await.unwrap();
            let (got, end) = read_frames(&mut s, Duration::from_secs(5)).await;
            let catalogs = got
                .iter()
                .filter(|f| matches!(f, Frame::Catalog(_)))
                .count();
            let busy = got
                .iter()
                .filter(|f| matches!(f, Frame::Error(e) if e.code == ErrorCode::Busy))
                .count();
            assert_eq!((catalogs, busy), (5, 5), "{got:?}");
            match got.last() {
                Some(Frame::Goodbye { code, message }) => {
                    assert_eq!(*code, ErrorCode::Busy);
                    assert!(message.contains("5 per second"), "{message}");
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(end, End::Eof);
            // Within the rate nothing is refused; a third stream at once is.
            let mut s = raw_session(&server).await;
            let tone = chunkcast_media_samples::TONE_8K_WAV;
            s.write_all(&encoded(&[
                open_frame(1, tone, Mode::Realtime),
                open_frame(2, tone, Mode::Realtime),
                open_frame(3, tone, Mode::Realtime),
            ]))
            .await
            .unwrap();
            let (got, _) = read_frames(&mut s, Duration::from_millis(500)).await;
            let refused: Vec<_> = got
                .iter()
                .filter_map(|f| match f {
                    Frame::Error(e) => Some((e.request, e.code)),
                    _ => None,
                })
                .collect();
            assert_eq!(refused, [(3, ErrorCode::Busy)], "{got:?}");
        };
        beside(&server, Scheme::Tcp, attack).await;
        let text = scrape(maddr).await;
        assert_eq!(
            metric(
                &text,
                "chunkcast_connections_dropped_total{reason=\"rate_limit\"}"
            ),
            1.0
        );
        assert_eq!(metric(&text, "chunkcast_requests_rate_limited_total"), 6.0);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_and_count_what_happens() {
    run(async {
        let (server, maddr) = with_metrics(|_| {}).await;
        let line = server.listening_line();
        assert!(!line.contains('\n'));
        assert!(line.ends_with(&format!(" metrics={maddr}")), "{line}");
        assert!(maddr.ip().is_loopback());
        let before = scrape(maddr).await;
        assert!(before.starts_with("HTTP/1.1 200 OK\r\n"), "{before}");
        assert!(
            before.contains("Content-Type: application/openmetrics-text"),
            "{before}"
        );
        assert!(before.trim_end().ends_with("# EOF"), "{before}");
        let dir = tempfile::tempdir().unwrap();
        for scheme in [Scheme::Tcp, Scheme::Quic] {
            let s = connect(&server, scheme).await;
            let r = chunkcast_client::get::get(
                &s,
                chunkcast_media_samples::SWEEP_48K_WAV,
                &chunkcast_client::get::GetOptions {
                    out: Some(dir.path().join(format!("{scheme:?}.wav"))),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            assert!(r.verified);
            let err = s
                .open(&OpenOptions::download("no-such-file"))
                .await
                .err()
                .unwrap();
            assert_eq!(err.code(), Some(ErrorCode::NotFound));
            s.close().await;
        }
        let len = std::fs::metadata(samples().join(chunkcast_media_samples::SWEEP_48K_WAV))
            .unwrap()
            .len() as f64;
        // Connections, streams, errors and bytes moved.
        let (_, _) = wait_metric(
            maddr,
            "chunkcast_connections_open{transport=\"quic\"}",
            Duration::from_secs(4),
            |v| v == 0.0,
        )
        .await;
        let after = scrape(maddr).await;
        let delta = |series: &str| metric(&after, series) - metric(&before, series);
        assert_eq!(delta("chunkcast_connections_total{transport=\"tcp\"}"), 1.0);
        assert_eq!(
            delta("chunkcast_connections_total{transport=\"quic\"}"),
            1.0
        );
        assert_eq!(delta("chunkcast_streams_total"), 2.0);
        assert_eq!(metric(&after, "chunkcast_streams_open"), 0.0);
        assert_eq!(
            delta("chunkcast_errors_sent_total{code=\"not_found\"}"),
            2.0
        );
        assert!(delta("chunkcast_bytes_sent_total{transport=\"tcp\"}") > len);
        assert!(delta("chunkcast_bytes_sent_total{transport=\"quic\"}") > len);
        assert!(delta("chunkcast_bytes_received_total{transport=\"tcp\"}") > 0.0);
        assert_eq!(
            metric(&after, "chunkcast_connections_open{transport=\"tcp\"}"),
            0.0
        );
        // Anything but GET /metrics is not found.
        let mut s = TcpStream::connect(maddr).await.unwrap();
        s.write_all(b"GET /secrets HTTP/1.0\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 404"), "{out}");
        server.shutdown().await;
    })
    .await;
}
