//! The request rate of one connection: pure arithmetic on the `Instant`s it is given.

use std::time::Instant;

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    burst: f64,
    rate: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            burst,
            rate,
            last: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What to do with a request, by its connection's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it.
    Serve,
    /// Refuse it (busy) and carry on.
    Refuse,
    /// Refuse it and close the connection: it keeps hammering.
    Close,
}

/// The request rate of one connection: `per_sec` requests a second with bursts of as many;
/// over that, requests are refused, and once more than `per_sec` refusals come within about
/// a second (a second bucket of the same size, drained by refusals), the connection is closed.
#[derive(Debug, Clone)]
pub struct RateLimit {
    requests: Bucket,
    refusals: Bucket,
}

impl RateLimit {
    /// A full bucket at `now`.
    pub fn new(per_sec: u32, now: Instant) -> Self {
        let rate = f64::from(per_sec.max(1));
        Self {
            requests: Bucket::new(rate, rate, now),
            refusals: Bucket::new(rate, rate, now),
        }
    }

    /// Judges a request arriving at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.requests.take(now) {
            Verdict::Serve
        } else if self.refusals.take(now) {
            Verdict::Refuse
        } else {
            Verdict::Close
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_is_served_then_refused_then_the_hammer_is_closed() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(10, t0);
        let verdicts: Vec<_> = (0..25).map(|_| r.check(t0)).collect();
        assert!(verdicts[..10].iter().all(|v| *v == Verdict::Serve));
        assert!(verdicts[10..20].iter().all(|v| *v == Verdict::Refuse));
        assert_eq!(verdicts[20], Verdict::Close);
    }

    #[test]
    fn a_client_within_its_rate_is_never_refused() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(10, t0);
        for i in 0..1000 {
            let now = t0 + Duration::from_millis(100) * i;
            assert_eq!(r.check(now), Verdict::Serve, "request {i}");
        }
    }

    #[test]
    fn refusals_are_forgiven_with_time() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(5, t0);
        for _ in 0..5 {
            assert_eq!(r.check(t0), Verdict::Serve);
        }
        for _ in 0..4 {
            assert_eq!(r.check(t0), Verdict::Refuse);
        }
        // Two seconds later both buckets are full again.
        let t1 = t0 + Duration::from_secs(2);
        for _ in 0..5 {
            assert_eq!(r.check(t1), Verdict::Serve);
        }
        for _ in 0..5 {
            assert_eq!(r.check(t1), Verdict::Refuse);
        }
        assert_eq!(r.check(t1), Verdict::Close);
    }
}
