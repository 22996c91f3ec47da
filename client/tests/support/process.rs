//! The real `chunkcast` binary as a child process: started without the user's token, waited
//! for with a bound, signalled by its pid.

use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// `chunkcast`, without the caller's `CHUNKCAST_TOKEN` and with warnings logged to stderr.
pub(crate) fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chunkcast"));
    c.env_remove("CHUNKCAST_TOKEN").env("RUST_LOG", "warn");
    c
}

/// Waits for `child` up to `limit`, killing it (by its handle) if it takes longer, reading
/// its piped outputs meanwhile (a child blocked on a full pipe would never end).
pub(crate) fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    fn drain(r: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let t0 = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Sends `signal` (`INT`, `KILL`, `STOP`, `CONT`) to `child`, by its pid.
pub(crate) fn signal(child: &Child, signal: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{signal}");
}

/// Output bytes as text, for messages and matching.
pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
