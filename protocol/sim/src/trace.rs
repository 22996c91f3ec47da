//! The run's trace: a BLAKE3 hash over every event, and optionally the events as text.
//!
//! Two runs of one seed must produce the same hash; a difference means something outside the
//! seed (a clock read, a `HashMap` order, an address) leaked into the run.

use std::fmt::Write as _;
use std::time::Duration;

/// Where events are recorded.
#[derive(Debug)]
pub struct Trace {
    hasher: blake3::Hasher,
    events: u64,
    print: bool,
    line: String,
}

impl Trace {
    /// A trace; `print` writes every event to stdout as well.
    pub fn new(print: bool) -> Self {
        Self {
            hasher: blake3::Hasher::new(),
            events: 0,
            print,
            line: String::new(),
        }
    }

    /// Records one event: when, on which host, what, and a size or other number.
    pub fn event(&mut self, at: Duration, host: u32, kind: &str, a: u64, b: u64) {
        self.events += 1;
        let nanos = u64::try_from(at.as_nanos()).unwrap_or(u64::MAX);
        self.hasher.update(&nanos.to_le_bytes());
        self.hasher.update(&host.to_le_bytes());
        self.hasher.update(kind.as_bytes());
        self.hasher.update(&[0]);
        self.hasher.update(&a.to_le_bytes());
        self.hasher.update(&b.to_le_bytes());
        if self.print {
            self.line.clear();
            let _ = write!(
                self.line,
                "{:>10.6} h{host:<4} {kind:<18} {a} {b}",
                at.as_secs_f64()
            );
            println!("{}", self.line);
        }
    }

    /// Events recorded.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The hash of everything recorded so far, as hex.
    pub fn hash(&self) -> String {
        self.hasher.finalize().to_hex()[..32].to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_covers_time_host_kind_and_sizes() {
        let run = |t: u64, host: u32, kind: &str, a: u64| {
            let mut tr = Trace::new(false);
            tr.event(Duration::from_micros(t), host, kind, a, 0);
            tr.hash()
        };
        let base = run(1, 1, "send", 10);
        assert_eq!(base, run(1, 1, "send", 10));
        assert_ne!(base, run(2, 1, "send", 10));
        assert_ne!(base, run(1, 2, "send", 10));
        assert_ne!(base, run(1, 1, "recv", 10));
        assert_ne!(base, run(1, 1, "send", 11));
    }
}
