//! A binary as a child process: started without the user's token, waited for with a bound,
//! signalled by its pid (never by name: other runs of it may be the user's).

use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// One of the package's binaries as a [`Command`] (see [`command`]): `bin!("chunkcast")`.
/// A macro, because only the test binary's own compilation knows where cargo built it.
#[macro_export]
macro_rules! bin {
    ($name:literal) => {
        $crate::process::command(env!(concat!("CARGO_BIN_EXE_", $name)))
    };
}

/// `program`, without the caller's `CHUNKCAST_TOKEN` and with warnings logged to stderr.
pub fn command(program: &str) -> Command {
    let mut c = Command::new(program);
    c.env_remove("CHUNKCAST_TOKEN").env("RUST_LOG", "warn");
    c
}

/// Waits for `child` up to `limit`, killing it (by its handle) if it takes longer, reading
/// its piped outputs meanwhile (a child blocked on a full pipe would never end).
pub fn wait_bounded(mut child: Child, limit: Duration) -> Output {
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
        if let Some(status) = child.try_wait().expect("waits for the child") {
            break status;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            break child.wait().expect("reaps the killed child");
        }
        // real time: a child process runs on the wall clock; this polls its exit.
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout drained"),
        stderr: stderr.join().expect("stderr drained"),
    }
}

/// Polls `check` on this thread every 20 ms until it holds, for at most `within`; whether it
/// did. For the blocking code that drives child processes (in `spawn_blocking`).
pub fn wait_until(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    loop {
        if check() {
            return true;
        }
        if t0.elapsed() > within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `signal` (`INT`, `TERM`, `KILL`, `STOP`, `CONT`) to `child`, by its pid.
pub fn signal(child: &Child, signal: &str) {
    signal_pid(child.id(), signal);
}

/// Sends `signal` to the process `pid` (a `tokio::process::Child`'s `id()`, say).
pub fn signal_pid(pid: u32, signal: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("runs kill");
    assert!(sent.success(), "kill -{signal} {pid}");
}

/// Output bytes as text, for messages and matching.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
