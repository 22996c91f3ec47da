//! Graceful shutdown of the real binary, driven by the real client.

use std::io::BufRead;
use std::net::SocketAddr;
use std::time::Duration;

use chunkcast_client::get::{GetOptions, get};
use chunkcast_client::session::{ConnectOptions, Session};
use chunkcast_client::url::{Scheme, Url};

const LIMIT: Duration = Duration::from_secs(60);

fn tcp_url(addr: SocketAddr) -> Url {
    Url {
        scheme: Scheme::Tcp,
        host: addr.ip().to_string(),
        port: addr.port(),
        path: String::new(),
    }
}

/// SIGTERM: the server stops accepting, lets the running stream finish, then exits.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_streams_finish() {
    let samples = tempfile::tempdir().unwrap();
    chunkcast_media_samples::ensure(samples.path()).unwrap();
    tokio::time::timeout(LIMIT, async {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chunkcast-server"))
            .args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
            .args(["--grace", "10", "--root"])
            .arg(samples.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("listening tcp="), "{line}");
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(k))
                .unwrap()
                .to_owned()
        };
        let tcp: SocketAddr = field("tcp=").parse().unwrap();
        assert_eq!(
            field("quic=").parse::<SocketAddr>().unwrap().port(),
            tcp.port(),
            "one port for both"
        );
        let s = Session::connect(&tcp_url(tcp), &ConnectOptions::default())
            .await
            .unwrap();
        // A 3 s realtime stream is in flight when the signal arrives.
        let dir = tempfile::tempdir().unwrap();
        let opts = GetOptions {
            realtime: true,
            out: Some(dir.path().join("tone.wav")),
            ..Default::default()
        };
        let fetch = get(&s, chunkcast_media_samples::TONE_8K_WAV, &opts);
        let metrics: SocketAddr = field("metrics=").parse().unwrap();
        let pid = child.id();
        let signal = async move {
            // The signal must find the stream in flight: its first chunk is out.
            let sent = "chunkcast_chunks_sent_total";
            chunkcast_testkit::await_metric(metrics, sent, LIMIT, |n| n > 0.0).await;
            chunkcast_testkit::process::signal_pid(pid, "TERM");
        };
        let (r, ()) = tokio::join!(fetch, signal);
        let r = r.expect("in-flight stream finishes");
        assert!(r.verified);
        assert!(
            r.elapsed >= Duration::from_millis(2900),
            "it was realtime: {:?}",
            r.elapsed
        );
        s.close().await;
        // The server exits by itself once its streams are done, before the grace period ends.
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "{status}");
                break;
            }
            if started.elapsed() > Duration::from_secs(12) {
                let _ = child.kill();
                panic!("server did not exit");
            }
            // real time: the child's exit is polled (std's Child has no awaitable wait).
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            Session::connect(&tcp_url(tcp), &ConnectOptions::default())
                .await
                .is_err()
        );
    })
    .await
    .unwrap();
}
