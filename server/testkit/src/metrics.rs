//! The server's metrics as a test reads them, and this process's memory.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How often the awaited conditions are checked.
pub const POLL_EVERY: Duration = Duration::from_millis(10);

/// `GET /metrics` over plain HTTP/1.0: the whole response.
pub async fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.expect("the metrics port");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .await
        .expect("request sent");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("response read");
    out
}

/// The value of the sample `series` (name with its labels, as printed) in a scrape; 0 when
/// it is absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().expect("a metric value"))
        })
        .unwrap_or(0.0)
}

/// Scrapes `addr` until `series` satisfies `ok`, for at most `within`: how a test waits for
/// the server to have done something it counts. Returns the last value; panics, naming the
/// series and its last value, if the condition never held.
pub async fn await_metric(
    addr: SocketAddr,
    series: &str,
    within: Duration,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let last = metric(&scrape(addr).await, series);
        if ok(last) {
            return last;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} is still {last} after {within:?}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Polls `check` every [`POLL_EVERY`] until it is true, for at most `within`; whether it became true.
pub async fn poll_until<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Resident memory of this process, in bytes.
pub fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
