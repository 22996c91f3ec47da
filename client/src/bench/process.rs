//! This process's CPU time and peak memory, read from `/proc` (Linux; elsewhere `None`).
//!
//! With the embedded server, the process is client *and* server: the CPU time and the memory
//! are both ends together.

use std::time::Duration;

/// Clock ticks per second in `/proc/*/stat`: `USER_HZ`, fixed at 100 by the Linux ABI
/// whatever the kernel's `HZ` (so no `sysconf` call, and no `libc` dependency, is needed).
const USER_HZ: f64 = 100.0;

/// User plus system CPU time of every thread of this process so far, threads that have
/// exited included (fields 14 and 15 of `/proc/self/stat`, 10 ms resolution).
pub fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_ascii_whitespace();
    // `rest` starts at field 3, so utime (14) is the 12th item and stime (15) the 13th.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / USER_HZ))
}

/// The peak resident set size (`VmHWM` of `/proc/self/status`), in bytes.
pub fn peak_rss() -> Option<u64> {
    status_kib("VmHWM:").map(|k| k * 1024)
}

/// The current resident set size (`VmRSS`), in bytes.
pub fn rss() -> Option<u64> {
    status_kib("VmRSS:").map(|k| k * 1024)
}

/// Resets the peak resident set size to the current one (writing `5` to
/// `/proc/self/clear_refs`), so that each measurement reports its own peak. Returns whether
/// it worked; if not, [`peak_rss`] is the peak since the process started.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return; // not Linux
        }
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_time().is_some());
        let peak = peak_rss().expect("VmHWM");
        let now = rss().expect("VmRSS");
        assert!(peak >= now / 2 && now > 0);
    }
}
