//! Playout statistics: the public snapshot and the bounded accumulators
//! behind it.

use std::fmt;
use std::time::{Duration, Instant};

/// A snapshot of a [`PlayoutBuffer`](super::PlayoutBuffer)'s statistics.
///
/// Every arrival is counted once in `received` and ends up in exactly one of
/// `played`, `late_drops`, `duplicates`, `overflow_drops`, `skipped` or
/// `queued`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stats {
    /// From the first push (or the instant given to
    /// [`set_request_instant`](super::PlayoutBuffer::set_request_instant)) to
    /// the `now` of the poll that returned the first `Play`; `None` until then.
    pub startup_delay: Option<Duration>,
    /// Underrun episodes: maximal runs of `Conceal` outputs between played
    /// units (startup and the drain after end of stream are not underruns).
    pub underruns: u32,
    /// Total media time concealed, which is the playout time spent in
    /// underrun.
    pub underrun_time: Duration,
    /// Arrivals dropped because their slot was already played or concealed
    /// (or because they overlapped an already played unit by more than the
    /// gap tolerance).
    pub late_drops: u64,
    /// Arrivals dropped because a unit with the same seq was queued or played
    /// (played seqs are remembered for the last 4096 sequence numbers; an
    /// older duplicate counts as a late drop).
    pub duplicates: u64,
    /// Queued arrivals whose seq is lower than that of an earlier
    /// (non-duplicate) arrival: reordered in transit and put back in order.
    pub reordered: u64,
    /// Queued units dropped because the queue was full
    /// ([`Config::max_units`](super::Config::max_units)).
    pub overflow_drops: u64,
    /// Arrivals (every push).
    pub received: u64,
    /// Units currently queued.
    pub queued: u64,
    /// `Play` outputs.
    pub played: u64,
    /// `Conceal` outputs (pieces; see `underrun_time` for their total length).
    pub concealed: u64,
    /// Jumps to the newest keyframe because playout fell behind (see
    /// [`set_catch_up`](super::PlayoutBuffer::set_catch_up)).
    pub skips: u32,
    /// Units skipped: dropped by those jumps, or arriving before the first
    /// keyframe after a [`restart`](super::PlayoutBuffer::restart).
    pub skipped: u64,
    /// Mean packet delay variation: for each non-duplicate arrival,
    /// `(arrival − pts) − min(arrival − pts)` over the arrivals so far, i.e.
    /// how much later than the fastest unit it arrived (RFC 5481 PDV, the
    /// distribution of arrival minus expected arrival with the best-case
    /// transit as the reference). Late drops are included.
    pub jitter_mean: Duration,
    /// 99th percentile (nearest rank) of the same samples, from a fixed
    /// log-scale histogram: accurate to 1/16 (6.25 %) and never above
    /// `jitter_max`. A buffer at least this long would have absorbed 99 % of
    /// arrivals had the clock been anchored on the fastest one.
    pub jitter_p99: Duration,
    /// Largest delay variation sample.
    pub jitter_max: Duration,
    /// The RFC 3550 §6.4.1 interarrival jitter estimate `J` after the last
    /// arrival (the running mean of |transit difference| between
    /// consecutive arrivals, gain 1/16), for comparison with RTP tools.
    pub jitter_rfc3550: Duration,
    /// Payload bytes of the played units (the size given to `push_sized`, or
    /// the payload length for `push`).
    pub bytes: u64,
    /// `bytes * 8` over the played media span (first played pts to the end
    /// of the last played unit, gaps included), in bits per second; 0 before
    /// anything was played or if that span is empty.
    pub bitrate_bps: f64,
}

impl Stats {
    /// A single-line JSON object with these keys, in this order (durations
    /// in integer microseconds, `startup_delay_us` is `null` until the first
    /// unit is played):
    /// `startup_delay_us, underruns, underrun_time_us, late_drops,
    /// duplicates, reordered, overflow_drops, received, queued, played,
    /// concealed, jitter_mean_us, jitter_p99_us, jitter_max_us,
    /// jitter_rfc3550_us, bytes, bitrate_bps`.
    pub fn to_json(&self) -> String {
        let startup = self
            .startup_delay
            .map_or_else(|| "null".to_owned(), |d| d.as_micros().to_string());
        let bitrate = if self.bitrate_bps.is_finite() {
            format!("{:.0}", self.bitrate_bps)
        } else {
            "null".to_owned()
        };
        format!(
            concat!(
                "{{\"startup_delay_us\":{},\"underruns\":{},\"underrun_time_us\":{},",
                "\"late_drops\":{},\"duplicates\":{},\"reordered\":{},\"overflow_drops\":{},",
                "\"received\":{},\"queued\":{},\"played\":{},\"concealed\":{},",
                "\"skips\":{},\"skipped\":{},",
                "\"jitter_mean_us\":{},\"jitter_p99_us\":{},\"jitter_max_us\":{},",
                "\"jitter_rfc3550_us\":{},\"bytes\":{},\"bitrate_bps\":{}}}"
            ),
            startup,
            self.underruns,
            self.underrun_time.as_micros(),
            self.late_drops,
            self.duplicates,
            self.reordered,
            self.overflow_drops,
            self.received,
            self.queued,
            self.played,
            self.concealed,
            self.skips,
            self.skipped,
            self.jitter_mean.as_micros(),
            self.jitter_p99.as_micros(),
            self.jitter_max.as_micros(),
            self.jitter_rfc3550.as_micros(),
            self.bytes,
            bitrate,
        )
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let startup = self.startup_delay.map_or_else(|| "-".to_owned(), ms);
        let rows: [(&str, String); 11] = [
            ("startup delay", startup),
            (
                "underruns",
                format!("{} ({})", self.underruns, ms(self.underrun_time)),
            ),
            (
                "played",
                format!("{} units, {} concealed pieces", self.played, self.concealed),
            ),
            (
                "received",
                format!("{} ({} queued)", self.received, self.queued),
            ),
            ("late drops", self.late_drops.to_string()),
            ("duplicates", self.duplicates.to_string()),
            ("reordered", self.reordered.to_string()),
            ("overflow drops", self.overflow_drops.to_string()),
            (
                "skipped",
                format!(
                    "{} units ({} jumps to a keyframe)",
                    self.skipped, self.skips
                ),
            ),
            (
                "jitter",
                format!(
                    "mean {}, p99 {}, max {}, rfc3550 {}",
                    ms(self.jitter_mean),
                    ms(self.jitter_p99),
                    ms(self.jitter_max),
                    ms(self.jitter_rfc3550)
                ),
            ),
            (
                "bitrate",
                format!(
                    "{:.1} kbit/s ({} bytes)",
                    self.bitrate_bps / 1000.0,
                    self.bytes
                ),
            ),
        ];
        for (label, value) in rows {
            writeln!(f, "{label:<15} {value}")?;
        }
        Ok(())
    }
}

/// Sub-buckets per power of two in the jitter histogram (2^4 = 16).
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Highest exponent with its own buckets: values of 2^(MAX_EXP+1) µs
/// (about 50 days) and more share the last bucket.
const MAX_EXP: u32 = 41;
const BUCKETS: usize = (SUB + (MAX_EXP - SUB_BITS + 1) as u64 * SUB) as usize;

fn bucket(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    if e > MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = (v >> (e - SUB_BITS)) & (SUB - 1);
    (SUB + u64::from(e - SUB_BITS) * SUB + sub) as usize
}

/// The largest value that falls in bucket `i`.
fn bucket_max(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let e = (i - SUB) / SUB + u64::from(SUB_BITS);
    let sub = (i - SUB) % SUB;
    ((SUB + sub + 1) << (e - u64::from(SUB_BITS))) - 1
}

/// Delay variation accumulators in fixed memory.
#[derive(Debug)]
pub(super) struct Jitter {
    min_transit_ns: Option<i128>,
    prev_transit_ns: Option<i128>,
    /// RFC 3550 `J`, in ns, scaled by 16 (as in its appendix A.8).
    j16_ns: i128,
    count: u64,
    sum_us: u128,
    max_us: u64,
    hist: Box<[u64]>,
}

impl Jitter {
    fn new() -> Self {
        Self {
            min_transit_ns: None,
            prev_transit_ns: None,
            j16_ns: 0,
            count: 0,
            sum_us: 0,
            max_us: 0,
            hist: vec![0; BUCKETS].into_boxed_slice(),
        }
    }

    /// One arrival with `transit_ns` = arrival instant − pts (any fixed
    /// origin).
    pub(super) fn sample(&mut self, transit_ns: i128) {
        if let Some(prev) = self.prev_transit_ns {
            let d = (transit_ns - prev).abs();
            self.j16_ns += d - ((self.j16_ns + 8) >> 4);
        }
        self.prev_transit_ns = Some(transit_ns);
        let min = self
            .min_transit_ns
            .map_or(transit_ns, |m| m.min(transit_ns));
        self.min_transit_ns = Some(min);
        let pdv_us = u64::try_from((transit_ns - min) / 1000).unwrap_or(u64::MAX);
        self.count += 1;
        self.sum_us += u128::from(pdv_us);
        self.max_us = self.max_us.max(pdv_us);
        self.hist[bucket(pdv_us)] += 1;
    }

    fn mean(&self) -> Duration {
        match self.count {
            0 => Duration::ZERO,
            n => Duration::from_micros(
                u64::try_from(self.sum_us / u128::from(n)).unwrap_or(u64::MAX),
            ),
        }
    }

    fn p99(&self) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        // Nearest rank: the ceil(0.99 n)-th smallest sample.
        let rank = u64::try_from((u128::from(self.count) * 99).div_ceil(100)).unwrap_or(u64::MAX);
        let mut seen = 0u64;
        for (i, &n) in self.hist.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_micros(bucket_max(i).min(self.max_us));
            }
        }
        Duration::from_micros(self.max_us)
    }

    fn rfc3550(&self) -> Duration {
        let ns = u64::try_from(self.j16_ns.max(0) >> 4).unwrap_or(u64::MAX);
        Duration::from_nanos(ns)
    }
}

/// Everything counted while the buffer runs; bounded memory.
#[derive(Debug)]
pub(super) struct Recorder {
    pub(super) received: u64,
    pub(super) late_drops: u64,
    pub(super) duplicates: u64,
    pub(super) reordered: u64,
    pub(super) overflow_drops: u64,
    pub(super) underruns: u32,
    pub(super) skips: u32,
    pub(super) skipped: u64,
    pub(super) first_play_at: Option<Instant>,
    pub(super) jitter: Jitter,
    played: u64,
    concealed: u64,
    underrun_us: u64,
    bytes: u64,
    first_played_pts: Option<u64>,
    played_end_us: u64,
}

impl Recorder {
    pub(super) fn new() -> Self {
        Self {
            received: 0,
            late_drops: 0,
            duplicates: 0,
            reordered: 0,
            overflow_drops: 0,
            underruns: 0,
            skips: 0,
            skipped: 0,
            first_play_at: None,
            jitter: Jitter::new(),
            played: 0,
            concealed: 0,
            underrun_us: 0,
            bytes: 0,
            first_played_pts: None,
            played_end_us: 0,
        }
    }

    pub(super) fn played(&mut self, now: Instant, pts_us: u64, end_us: u64, len: u64) {
        self.played += 1;
        self.bytes = self.bytes.saturating_add(len);
        self.first_play_at.get_or_insert(now);
        self.first_played_pts.get_or_insert(pts_us);
        self.played_end_us = self.played_end_us.max(end_us);
    }

    pub(super) fn concealed(&mut self, len_us: u64) {
        self.concealed += 1;
        self.underrun_us = self.underrun_us.saturating_add(len_us);
    }

    pub(super) fn snapshot(&self, startup_delay: Option<Duration>, queued: usize) -> Stats {
        let span_us = self
            .first_played_pts
            .map_or(0, |first| self.played_end_us.saturating_sub(first));
        let bitrate_bps = if span_us == 0 {
            0.0
        } else {
            self.bytes as f64 * 8.0 * 1e6 / span_us as f64
        };
        Stats {
            startup_delay,
            underruns: self.underruns,
            underrun_time: Duration::from_micros(self.underrun_us),
            late_drops: self.late_drops,
            duplicates: self.duplicates,
            reordered: self.reordered,
            overflow_drops: self.overflow_drops,
            received: self.received,
            queued: queued as u64,
            played: self.played,
            concealed: self.concealed,
            skips: self.skips,
            skipped: self.skipped,
            jitter_mean: self.jitter.mean(),
            jitter_p99: self.jitter.p99(),
            jitter_max: Duration::from_micros(self.jitter.max_us),
            jitter_rfc3550: self.jitter.rfc3550(),
            bytes: self.bytes,
            bitrate_bps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_bounded() {
        let mut prev = 0;
        for v in (0..100_000u64).chain([u64::MAX / 2, u64::MAX]) {
            let b = bucket(v);
            assert!(b < BUCKETS);
            assert!(b >= prev || v > 100_000, "bucket order at {v}");
            prev = b;
            if b < BUCKETS - 1 {
                assert!(
                    bucket_max(b) >= v,
                    "{v} in bucket {b} max {}",
                    bucket_max(b)
                );
                assert!(bucket_max(b) - v <= v / 16 + 1, "{v} too coarse");
            }
        }
        for i in 0..BUCKETS - 1 {
            assert_eq!(bucket(bucket_max(i)), i);
            assert_eq!(bucket(bucket_max(i) + 1), i + 1);
        }
    }

    #[test]
    fn p99_nearest_rank() {
        let mut j = Jitter::new();
        // Transits 0..=99 ms once each: PDV = transit (min is 0).
        for ms in 0..100i128 {
            j.sample(ms * 1_000_000);
        }
        // Rank 99 of 100 is 98 ms; 98 000 µs falls in a bucket of width 2048.
        let p99 = j.p99().as_micros() as u64;
        assert!((98_000..=98_000 + 98_000 / 16).contains(&p99), "{p99}");
        assert_eq!(j.mean(), Duration::from_micros(49_500));
        assert_eq!(j.max_us, 99_000);

        let mut same = Jitter::new();
        for _ in 0..1000 {
            same.sample(5_000_000);
        }
        assert_eq!(same.p99(), Duration::ZERO);
        assert_eq!(same.rfc3550(), Duration::ZERO);
    }

    #[test]
    fn json_is_one_line_with_stable_keys() {
        let stats = Stats {
            startup_delay: Some(Duration::from_millis(100)),
            bitrate_bps: 64_000.4,
            ..Stats::default()
        };
        let json = stats.to_json();
        assert!(!json.contains('\n'));
        assert!(json.starts_with("{\"startup_delay_us\":100000,\"underruns\":0,"));
        assert!(json.ends_with("\"bytes\":0,\"bitrate_bps\":64000}"));
        assert!(
            Stats::default()
                .to_json()
                .starts_with("{\"startup_delay_us\":null,")
        );
        let table = stats.to_string();
        assert!(table.contains("startup delay   100.0 ms"));
    }
}
