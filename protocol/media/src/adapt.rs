//! Congestion adaptation for a call's sender, sans IO: what to send when the path cannot
//! carry the stream.
//!
//! [`Adapter`] takes path measurements with their time ([`PathSample`]: the sender's own
//! queueing delay, the round-trip time, the loss rate) and says how much video to send
//! ([`Level`]). [`UnitFilter`] applies a level to a video track's chunks, whole units at a
//! time. Audio is never degraded: it is small, and a person forgives a frozen picture long
//! before broken sound.
//!
//! The order is the one a person would want: full video; half the frame rate; a quarter;
//! keyframes only (one unit in eight for a stream of only keyframes, such as MJPEG). Each
//! step down needs congestion sustained for [`AdaptConfig::degrade_after`] and comes at most
//! every [`AdaptConfig::step_every`], so a bottleneck is met within a second or two; each step
//! back up needs a clear path for a hold time, which doubles (up to
//! [`AdaptConfig::max_hold`]) when a step up congested the path again, so that the sender
//! does not flap at the edge of the link's capacity.

use std::time::{Duration, Instant};

use chunkcast_protocol::{Chunk, ChunkFlags};

/// How much video is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Level {
    /// Everything.
    #[default]
    Full,
    /// Half the frame rate.
    Half,
    /// A quarter of the frame rate.
    Quarter,
    /// Keyframes only (one unit in eight for a stream of keyframes only).
    KeyframesOnly,
}

impl Level {
    /// The level's name, for stats.
    pub fn name(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Half => "half-rate",
            Self::Quarter => "quarter-rate",
            Self::KeyframesOnly => "keyframes-only",
        }
    }

    /// 0 for full, up to 3 for keyframes only.
    pub fn index(self) -> u8 {
        self as u8
    }

    fn down(self) -> Self {
        match self {
            Self::Full => Self::Half,
            Self::Half => Self::Quarter,
            Self::Quarter | Self::KeyframesOnly => Self::KeyframesOnly,
        }
    }

    fn up(self) -> Self {
        match self {
            Self::Full | Self::Half => Self::Full,
            Self::Quarter => Self::Half,
            Self::KeyframesOnly => Self::Quarter,
        }
    }

    /// Keep one unit in this many (of those that may be dropped): 1 for full, 8 for
    /// keyframes only. A sender's rate at one level scales by the ratio to another's.
    pub fn keep_every(self) -> u64 {
        match self {
            Self::Full => 1,
            Self::Half => 2,
            Self::Quarter => 4,
            Self::KeyframesOnly => 8,
        }
    }
}

/// One measurement of the path.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PathSample {
    /// How long media waits at the sender before the link takes it: how late a chunk left
    /// compared with when its pacing made it due. Grows as soon as the link is slower than
    /// the stream.
    pub queue_delay: Duration,
    /// The round-trip time, when the transport knows it (QUIC's estimate, or a ping's).
    pub rtt: Option<Duration>,
    /// Fraction of packets lost since the last sample (0 to 1), when known.
    pub loss: Option<f64>,
    /// Fraction of units the sender skipped lately (0 to 1) because the one before had not
    /// all left yet, when it sends a unit per stream: with a sender that no longer waits
    /// behind its own queue, this is what a path slower than the stream shows first.
    pub skipped: Option<f64>,
}

/// The policy's thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptConfig {
    /// Queueing (the sender's, or the RTT above its minimum) above this is congestion.
    pub congested_delay: Duration,
    /// Queueing below this (and little loss) is a clear path.
    pub clear_delay: Duration,
    /// Loss above this is congestion (a random-loss path below it is not the sender's to fix).
    pub max_loss: f64,
    /// A share of skipped units above this is congestion.
    pub max_skipped: f64,
    /// A clear path skips at most this share of units.
    pub clear_skipped: f64,
    /// Congestion must last this long before a step down.
    pub degrade_after: Duration,
    /// Steps down at most this often.
    pub step_every: Duration,
    /// A clear path for this long allows a step up.
    pub hold: Duration,
    /// The hold doubles up to this after a step up that congested the path again.
    pub max_hold: Duration,
}

impl Default for AdaptConfig {
    /// Thresholds for a call: congestion is 80 ms of queueing (a call's whole budget is
    /// ~150 ms one way), a clear path under 30 ms; 25 % loss (the 2 % of a poor radio link is
    /// concealed, not fled; and QUIC's count of lost packets includes the spurious ones of a
    /// reordering path: 15 % measured on 30 ms ± 5 ms with 2 % real loss). Down to keyframes in about a second; from keyframes back to full
    /// in 1.5 s on a steady path, at most 4.5 s after a failed probe.
    fn default() -> Self {
        Self {
            congested_delay: Duration::from_millis(80),
            clear_delay: Duration::from_millis(30),
            max_loss: 0.25,
            // One frame in five: a path that drops that many frames at the sender shows a
            // frame rate the level should say, and a stray skip (a burst of loss) is not it.
            max_skipped: 0.2,
            // One unit in eight (the sender's window): on a lossy path a retransmission now
            // and then holds a unit back and the next is skipped (9 % of units at 2 % loss);
            // with no skip allowed the call seldom stepped back up after a cap (2 of 5 runs
            // within 5 s).
            clear_skipped: 0.125,
            degrade_after: Duration::from_millis(150),
            step_every: Duration::from_millis(400),
            hold: Duration::from_millis(500),
            max_hold: Duration::from_millis(1500),
        }
    }
}

/// A step up that congests the path within this long failed: the next one waits longer.
const PROBE_WINDOW: Duration = Duration::from_secs(2);

/// The adaptation policy. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Adapter {
    config: AdaptConfig,
    level: Level,
    min_rtt: Option<Duration>,
    congested_since: Option<Instant>,
    clear_since: Option<Instant>,
    last_down: Option<Instant>,
    last_up: Option<Instant>,
    hold: Duration,
    changes: u64,
}

impl Adapter {
    /// Starts at full video.
    pub fn new(config: AdaptConfig) -> Self {
        Self {
            hold: config.hold,
            config,
            level: Level::Full,
            min_rtt: None,
            congested_since: None,
            clear_since: None,
            last_down: None,
            last_up: None,
            changes: 0,
        }
    }

    /// The current level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Level changes so far.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The queueing a sample shows: the sender's own, or the RTT above the least seen,
    /// whichever is larger.
    fn queueing(&mut self, s: &PathSample) -> Duration {
        let mut q = s.queue_delay;
        if let Some(rtt) = s.rtt {
            let min = self.min_rtt.map_or(rtt, |m| m.min(rtt));
            self.min_rtt = Some(min);
            q = q.max(rtt.saturating_sub(min));
        }
        q
    }

    /// Takes a measurement made at `now`; returns the level to send at from now on.
    pub fn on_sample(&mut self, now: Instant, s: PathSample) -> Level {
        let q = self.queueing(&s);
        let loss = s.loss.unwrap_or(0.0);
        let skipped = s.skipped.unwrap_or(0.0);
        let c = self.config;
        // Skips count only with some queueing behind them: on a lossy path with room to
        // spare, a retransmission now and then holds a unit back and the next is skipped
        // (two in eight at times) while the round trip stays at its least; stepping down for
        // those cost 1 to 3 s of the recovery after a cap and a step down at every call's start.
        let skipping = skipped > c.max_skipped && q >= c.clear_delay;
        let congested = q > c.congested_delay || loss > c.max_loss || skipping;
        // Loss a little under the congestion bound still lets a clear path step up: a few
        // dozen packets at a low level measure 2 % loss (and the spurious losses of jitter) as
        // up to 16 %, and a bound at half of it held a call at a quarter of its frame rate for
        // seconds after a cap was lifted.
        let clear = q < c.clear_delay && loss <= c.max_loss * 0.8 && skipped <= c.clear_skipped;
        if congested {
            self.clear_since = None;
            let since = *self.congested_since.get_or_insert(now);
            // A step up that brought congestion back: probe less eagerly next time.
            if self
                .last_up
                .is_some_and(|t| now.saturating_duration_since(t) < PROBE_WINDOW)
            {
                self.hold = (self.hold * 2).min(c.max_hold);
                self.last_up = None;
            }
            let sustained = now.saturating_duration_since(since) >= c.degrade_after;
            let spaced = self
                .last_down
                .is_none_or(|t| now.saturating_duration_since(t) >= c.step_every);
            if sustained && spaced && self.level != Level::KeyframesOnly {
                self.level = self.level.down();
                self.last_down = Some(now);
                self.changes += 1;
            }
        } else {
            self.congested_since = None;
            if clear {
                let since = *self.clear_since.get_or_insert(now);
                if self.level != Level::Full && now.saturating_duration_since(since) >= self.hold {
                    self.level = self.level.up();
                    self.last_up = Some(now);
                    self.clear_since = Some(now);
                    self.changes += 1;
                }
            } else {
                self.clear_since = None;
            }
        }
        // A long clear spell forgets past failed probes.
        if self
            .clear_since
            .is_some_and(|t| now.saturating_duration_since(t) >= PROBE_WINDOW * 5)
        {
            self.hold = c.hold;
        }
        self.level
    }
}

/// Applies a [`Level`] to a video track's chunks: whole units are sent or dropped.
#[derive(Debug, Clone, Default)]
pub struct UnitFilter {
    /// Every unit so far was a keyframe (MJPEG, Y4M): any of them may be dropped. Otherwise
    /// keyframes are always kept and the units between them are the ones dropped.
    seen_delta: bool,
    units: u64,
    in_unit: bool,
    keep: bool,
    kept: u64,
    dropped: u64,
}

impl UnitFilter {
    /// A filter that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Units sent so far.
    pub fn kept(&self) -> u64 {
        self.kept
    }

    /// Units dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether to send `chunk` at `level`. The decision is taken at a unit's first chunk and
    /// holds for the rest of it; set-up (`INIT`) and the end of the stream always go.
    pub fn admit(&mut self, chunk: &Chunk, level: Level) -> bool {
        if chunk.has(ChunkFlags::INIT) || chunk.has(ChunkFlags::END_OF_STREAM) {
            return true;
        }
        if !self.in_unit {
            let key = chunk.has(ChunkFlags::KEY);
            self.seen_delta |= !key;
            let protected = key && self.seen_delta;
            self.keep = level == Level::Full
                || protected
                || (!(self.seen_delta && level == Level::KeyframesOnly)
                    && self.units % level.keep_every() == 0);
            self.units += 1;
            if self.keep {
                self.kept += 1;
            } else {
                self.dropped += 1;
            }
        }
        self.in_unit = !chunk.has(ChunkFlags::END_OF_UNIT);
        self.keep
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use chunkcast_protocol::StreamId;

    use super::*;

    const TICK: Duration = Duration::from_millis(10);

    /// A path as a fluid queue: the sender offers `rate(level)` bits a second, the link
    /// carries `capacity`; queueing delay is the backlog over the capacity. Sampled every
    /// 10 ms, as a sender would.
    struct Path {
        adapter: Adapter,
        now: Instant,
        backlog_bits: f64,
        capacity_bps: f64,
    }

    const VIDEO_BPS: f64 = 2_000_000.0;
    const AUDIO_BPS: f64 = 64_000.0;

    fn offered(level: Level) -> f64 {
        AUDIO_BPS + VIDEO_BPS / level.keep_every() as f64
    }

    impl Path {
        fn new(capacity_bps: f64) -> Self {
            Self {
                adapter: Adapter::new(AdaptConfig::default()),
                now: Instant::now(),
                backlog_bits: 0.0,
                capacity_bps,
            }
        }

        fn delay(&self) -> Duration {
            Duration::from_secs_f64(self.backlog_bits / self.capacity_bps)
        }

        /// Runs for `d`; returns the largest queueing delay seen.
        fn run(&mut self, d: Duration) -> Duration {
            let mut worst = Duration::ZERO;
            let end = self.now + d;
            while self.now < end {
                let dt = TICK.as_secs_f64();
                let level = self.adapter.level();
                self.backlog_bits =
                    (self.backlog_bits + (offered(level) - self.capacity_bps) * dt).max(0.0);
                self.now += TICK;
                worst = worst.max(self.delay());
                let sample = PathSample {
                    queue_delay: self.delay(),
                    rtt: Some(Duration::from_millis(60) + self.delay()),
                    loss: Some(0.02),
                    skipped: None,
                };
                self.adapter.on_sample(self.now, sample);
            }
            worst
        }

        /// Runs until `pred` holds of the level; how long it took.
        fn until(&mut self, limit: Duration, pred: impl Fn(Level) -> bool) -> Option<Duration> {
            let start = self.now;
            while self.now - start < limit {
                if pred(self.adapter.level()) {
                    return Some(self.now - start);
                }
                self.run(TICK);
            }
            None
        }
    }

    /// The case: the link capped at half the video rate. The sender lowers the frame
    /// rate within 2 s, its queueing stays bounded (no growing queue) while capped, and it is
    /// back at full video within 5 s of the cap's lifting.
    #[test]
    fn a_cap_at_half_the_video_rate_is_met_within_2_s_and_left_within_5_s() {
        let mut p = Path::new(VIDEO_BPS * 4.0);
        assert!(p.run(Duration::from_secs(3)) < Duration::from_millis(1));
        assert_eq!(
            p.adapter.level(),
            Level::Full,
            "a clear path keeps full video"
        );
        p.capacity_bps = VIDEO_BPS / 2.0;
        let adapted = p.until(Duration::from_secs(2), |l| l >= Level::Quarter);
        assert!(adapted.is_some(), "the frame rate drops within 2 s");
        // Capped for 20 s: the sender probes upwards now and then, but its queue stays
        // bounded, and it spends most of the time at a level the link carries.
        let worst = p.run(Duration::from_secs(20));
        assert!(
            worst < Duration::from_millis(300),
            "worst queueing {worst:?}"
        );
        assert!(p.adapter.level() >= Level::Half);
        p.capacity_bps = VIDEO_BPS * 4.0;
        let recovered = p.until(Duration::from_secs(5), |l| l == Level::Full);
        eprintln!(
            "adapted in {adapted:?}, worst queueing while capped {worst:?}, recovered in \
             {recovered:?}, {} level changes",
            p.adapter.changes()
        );
        assert!(recovered.is_some(), "back to full video within 5 s");
    }

    #[test]
    fn random_loss_below_the_threshold_is_not_congestion() {
        let mut a = Adapter::new(AdaptConfig::default());
        let t0 = Instant::now();
        for i in 0..500u32 {
            let s = PathSample {
                queue_delay: Duration::from_millis(5),
                rtt: Some(Duration::from_millis(60 + u64::from(i % 10))),
                loss: Some(0.02),
                skipped: Some(0.0),
            };
            assert_eq!(a.on_sample(t0 + TICK * i, s), Level::Full);
        }
    }

    #[test]
    fn heavy_loss_or_a_growing_rtt_degrades() {
        let t0 = Instant::now();
        let mut a = Adapter::new(AdaptConfig::default());
        let lossy = PathSample {
            loss: Some(0.3),
            ..Default::default()
        };
        for i in 0..=20u32 {
            a.on_sample(t0 + TICK * i, lossy);
        }
        assert_eq!(a.level(), Level::Half);
        let mut a = Adapter::new(AdaptConfig::default());
        for i in 0..=100u32 {
            let rtt = Duration::from_millis(40 + 3 * u64::from(i));
            let s = PathSample {
                rtt: Some(rtt),
                ..Default::default()
            };
            a.on_sample(t0 + TICK * i, s);
        }
        assert!(a.level() >= Level::Half, "{:?}", a.level());
    }

    /// A sender that no longer waits behind its queue (a unit per stream) shows a slow path
    /// by the units it skips: a sustained share above the threshold, with some queueing
    /// behind it, steps down; a path that skips none lets it back up; a stray skip now and
    /// then is neither.
    #[test]
    fn skipped_units_with_queueing_degrade_and_their_absence_recovers() {
        let t0 = Instant::now();
        let mut a = Adapter::new(AdaptConfig::default());
        let skipping = PathSample {
            skipped: Some(0.5),
            queue_delay: Duration::from_millis(40),
            rtt: Some(Duration::from_millis(60)),
            ..Default::default()
        };
        for i in 0..=20u32 {
            a.on_sample(t0 + TICK * i, skipping);
        }
        assert_eq!(a.level(), Level::Half);
        let clear = PathSample {
            skipped: Some(0.0),
            rtt: Some(Duration::from_millis(60)),
            ..Default::default()
        };
        let t1 = t0 + TICK * 21;
        for i in 0..=100u32 {
            a.on_sample(t1 + TICK * i, clear);
        }
        assert_eq!(a.level(), Level::Full);
        // A few skips (under the clear bound) on a steady path: no change either way.
        let mut b = Adapter::new(AdaptConfig::default());
        let stray = PathSample {
            skipped: Some(0.1),
            rtt: Some(Duration::from_millis(60)),
            ..Default::default()
        };
        for i in 0..500u32 {
            assert_eq!(b.on_sample(t0 + TICK * i, stray), Level::Full);
        }
        // Between the bounds (neither congested nor clear): held where it is.
        let mut c = Adapter::new(AdaptConfig::default());
        for i in 0..=20u32 {
            c.on_sample(t0 + TICK * i, skipping);
        }
        let middling = PathSample {
            skipped: Some(0.15),
            rtt: Some(Duration::from_millis(60)),
            ..Default::default()
        };
        for i in 0..500u32 {
            assert_eq!(c.on_sample(t1 + TICK * i, middling), Level::Half);
        }
    }

    /// On a lossy path with room to spare a retransmission now and then holds a unit back
    /// and the next is skipped, often two in a row, while nothing queues: that is not a
    /// path too slow for the stream, and stepping down for it cost seconds of full video
    /// (measured between namespaces, 2 % loss).
    #[test]
    fn skips_without_queueing_do_not_degrade() {
        let t0 = Instant::now();
        let mut a = Adapter::new(AdaptConfig::default());
        for i in 0..500u32 {
            let s = PathSample {
                skipped: Some(if i % 50 < 25 { 0.375 } else { 0.125 }),
                queue_delay: Duration::from_millis(u64::from(i % 5)),
                rtt: Some(Duration::from_millis(60 + u64::from(i % 7))),
                loss: Some(0.02),
            };
            assert_eq!(a.on_sample(t0 + TICK * i, s), Level::Full, "sample {i}");
        }
    }

    /// The loss of a few dozen packets at a low level is a coarse measure: 2 % loss (and the
    /// spurious losses of jitter) reads up to 16 %. Below the congestion bound's 80 % a path
    /// without queueing is clear, and the call climbs back to full video.
    #[test]
    fn noisy_loss_under_the_bound_does_not_hold_a_call_down() {
        let t0 = Instant::now();
        let mut a = Adapter::new(AdaptConfig::default());
        let queueing = PathSample {
            queue_delay: Duration::from_millis(120),
            rtt: Some(Duration::from_millis(60)),
            ..Default::default()
        };
        let mut i = 0u32;
        while a.level() != Level::KeyframesOnly {
            a.on_sample(t0 + TICK * i, queueing);
            i += 1;
            assert!(i < 300, "degraded to keyframes");
        }
        let t1 = t0 + TICK * i;
        for j in 0..300u32 {
            let s = PathSample {
                rtt: Some(Duration::from_millis(60)),
                loss: Some([0.02, 0.16, 0.0, 0.08][j as usize % 4]),
                ..Default::default()
            };
            a.on_sample(t1 + TICK * j, s);
        }
        assert_eq!(a.level(), Level::Full, "back to full within 3 s");
        // Heavier loss, still under the congestion bound, is not a clear path.
        let mut b = Adapter::new(AdaptConfig::default());
        let mut i = 0u32;
        while b.level() != Level::KeyframesOnly {
            b.on_sample(t0 + TICK * i, queueing);
            i += 1;
        }
        let t1 = t0 + TICK * i;
        for j in 0..300u32 {
            let s = PathSample {
                rtt: Some(Duration::from_millis(60)),
                loss: Some(0.22),
                ..Default::default()
            };
            assert_eq!(b.on_sample(t1 + TICK * j, s), Level::KeyframesOnly);
        }
    }

    fn unit(key: bool, chunks: usize) -> Vec<Chunk> {
        (0..chunks)
            .map(|i| {
                let mut flags = ChunkFlags::default();
                if key && i == 0 {
                    flags = flags | ChunkFlags::KEY;
                }
                if i + 1 == chunks {
                    flags = flags | ChunkFlags::END_OF_UNIT;
                }
                Chunk::new(StreamId(1), 0, 0, 0, 0, flags, Bytes::from_static(b"x"))
            })
            .collect()
    }

    /// Units sent of `units` (each key or not, two chunks) at `level`; checks that a unit is
    /// sent or dropped whole.
    fn sent(f: &mut UnitFilter, units: &[bool], level: Level) -> Vec<bool> {
        units
            .iter()
            .map(|&key| {
                let admitted: Vec<bool> = unit(key, 2).iter().map(|c| f.admit(c, level)).collect();
                assert!(
                    admitted[0] == admitted[1],
                    "a unit is sent whole or not at all"
                );
                admitted[0]
            })
            .collect()
    }

    #[test]
    fn the_filter_keeps_keyframes_of_coded_video_and_thins_the_rest() {
        // A group of 8: a keyframe and 7 deltas.
        let gop = [true, false, false, false, false, false, false, false];
        let mut f = UnitFilter::new();
        assert_eq!(sent(&mut f, &gop, Level::Full), [true; 8]);
        let half = sent(&mut f, &gop, Level::Half);
        assert_eq!(half.iter().filter(|&&s| s).count(), 4);
        assert!(half[0], "the keyframe is kept");
        let key_only = sent(&mut f, &gop, Level::KeyframesOnly);
        assert_eq!(
            key_only,
            [true, false, false, false, false, false, false, false]
        );
        assert_eq!((f.kept(), f.dropped()), (13, 11));
    }

    #[test]
    fn the_filter_thins_a_stream_of_keyframes_by_the_level() {
        let mjpeg = [true; 16];
        let mut f = UnitFilter::new();
        let count = |v: Vec<bool>| v.into_iter().filter(|&s| s).count();
        assert_eq!(count(sent(&mut f, &mjpeg, Level::Full)), 16);
        assert_eq!(count(sent(&mut f, &mjpeg, Level::Half)), 8);
        assert_eq!(count(sent(&mut f, &mjpeg, Level::Quarter)), 4);
        assert_eq!(count(sent(&mut f, &mjpeg, Level::KeyframesOnly)), 2);
        let init = Chunk::new(StreamId(1), 0, 0, 0, 0, ChunkFlags::INIT, Bytes::new());
        assert!(f.admit(&init, Level::KeyframesOnly));
    }
}
