//! Realtime pacing: when each chunk is due, from its presentation timestamp.

use std::time::{Duration, Instant};

/// Maps presentation timestamps to wall-clock instants, anchored at the first timed chunk, so
/// that a sender releases media at the rate it plays. Sans-IO: the caller sleeps.
#[derive(Debug, Clone, Default)]
pub struct Pacer {
    anchor: Option<(Instant, u64)>,
}

impl Pacer {
    /// A pacer anchored at the first call to [`Pacer::due`].
    pub fn new() -> Self {
        Self::default()
    }

    /// When a chunk with `pts_us` is due; the first one is due `now`. Timestamps before the
    /// anchor's are due at once.
    pub fn due(&mut self, now: Instant, pts_us: u64) -> Instant {
        let (t0, pts0) = *self.anchor.get_or_insert((now, pts_us));
        t0 + Duration::from_micros(pts_us.saturating_sub(pts0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_follow_timestamps_from_the_first() {
        let t0 = Instant::now();
        let mut p = Pacer::new();
        assert_eq!(p.due(t0, 5_000_000), t0);
        assert_eq!(
            p.due(t0 + Duration::from_secs(9), 5_040_000),
            t0 + Duration::from_millis(40)
        );
        assert_eq!(p.due(t0, 1), t0, "earlier than the anchor: at once");
    }
}
