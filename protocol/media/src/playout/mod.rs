//! The playout (jitter) buffer: media units go in as they arrive, come out at
//! their presentation time on the caller's clock.
//!
//! Sans-IO: the buffer never reads a clock. Every call that depends on time
//! takes `now: Instant` from the caller, so tests drive it with a simulated
//! clock (`t0 + Duration`) and are fully deterministic.
//!
//! # Clock mapping
//!
//! The first [`push`](PlayoutBuffer::push) anchors the mapping between media
//! time and the caller's clock:
//!
//! ```text
//! play_instant(pts) = anchor_instant + config.buffer + (pts - first_pts)
//! ```
//!
//! where `anchor_instant` is the `now` of that first push and `first_pts` its
//! pts (a later arrival with a smaller pts simply maps before
//! `anchor_instant + buffer`). All of it is integer arithmetic from the anchor
//! (microseconds of media time, nanoseconds of clock time), so an hour-long
//! stream does not drift: the unit with pts `p` is due exactly at the instant
//! above, never at an accumulated approximation of it.
//!
//! # Drive contract
//!
//! 1. On every arrival call [`push`](PlayoutBuffer::push) (or
//!    [`push_sized`](PlayoutBuffer::push_sized)) with the arrival instant.
//! 2. After every push, and whenever woken, call
//!    [`poll`](PlayoutBuffer::poll) repeatedly with the current instant until
//!    it returns [`Output::Wait`] or [`Output::Idle`], rendering each
//!    [`Output::Play`] and [`Output::Conceal`] it returns, in order.
//! 3. Sleep until the [`Output::Wait`] instant or the next arrival, whichever
//!    comes first; after [`Output::Idle`], until the next arrival only.
//! 4. When the source is finished call
//!    [`end_of_stream`](PlayoutBuffer::end_of_stream): the queue drains and then
//!    `poll` returns `Idle` (no concealment is emitted after the last unit).
//!
//! A real client loop looks like this (pseudo-code):
//!
//! ```text
//! let mut wake = None;
//! loop {
//!     select! {
//!         unit = socket.recv() => buffer.push(Instant::now(), unit),
//!         _ = sleep_until(wake), if wake.is_some() => {}
//!     }
//!     let now = Instant::now();
//!     wake = loop {
//!         match buffer.poll(now) {
//!             Output::Play(unit) => sink.play(unit),
//!             Output::Conceal { pts_us, duration_us, kind } => sink.conceal(pts_us, duration_us, kind),
//!             Output::Wait(at) => break Some(at),
//!             Output::Idle => break None,
//!         }
//!     };
//! }
//! ```
//!
//! # Gaps
//!
//! The *play head* is the end (pts + duration) of the last output; it is the
//! next expected pts. When its play instant has passed and no queued unit
//! starts there (within [`Config::gap_tolerance`]), the buffer is in underrun
//! and emits [`Output::Conceal`] pieces, each when it is due, that tile the
//! gap exactly:
//!
//! - a piece is one *step* long, the duration of the last played unit
//!   (clamped to 1 ms ..= 1 s), and pieces stay on that step's grid from the
//!   start of the underrun, so a stream that resumes on its own grid finds
//!   its slot free;
//! - a piece never runs past the next queued unit, and a remainder shorter
//!   than the tolerance is absorbed into the last piece;
//! - audio uses [`Config::conceal`] (silence, or repeat for the first
//!   `max_repeat` of the underrun, cut exactly there); video always freezes
//!   on the last frame ([`Concealment::Freeze`]).
//!
//! While the source is silent and not ended this goes on, one piece per step
//! in real time; the caller decides when to give up. The buffer keeps no copy
//! of the last unit: for `Repeat`/`Freeze` the caller re-renders (a prefix
//! of) the last unit it played. An arrival whose slot has already been
//! played or concealed is a late drop; one that arrives after its slot's
//! piece started is late even if its own play instant has not come yet.
//!
//! Units are released in pts order. Codecs whose decode order differs from
//! presentation order (B-frames) need ordering by decode time instead, which
//! this buffer does not do.
//!
//! # Live sources
//!
//! Two calls serve a live source, which may go away and come back, or be
//! left behind while the caller was not running:
//!
//! - [`restart`](PlayoutBuffer::restart): the source stopped without ending
//!   and may come back (a live channel's publisher restarting). What is
//!   queued plays out, nothing is concealed while the source is away, and the
//!   next arrival re-anchors the clock (it plays `buffer` after it arrived),
//!   starting at a keyframe: units before the first `key` one are skipped.
//! - [`set_catch_up`](PlayoutBuffer::set_catch_up): when playout falls behind
//!   by more than a bound (the caller was paused or starved while units kept
//!   arriving, so queued units are overdue or the queue holds far more than
//!   the buffer), skip to the newest queued keyframe and play on from there,
//!   `buffer` from now, instead of releasing the backlog in a burst.
//!
//! Both count what they skip ([`Stats::skips`], [`Stats::skipped`]).
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! use bytes::Bytes;
//! use chunkcast_media::playout::{Config, Output, PlayoutBuffer, Unit};
//!
//! let t0 = Instant::now();
//! let mut buffer = PlayoutBuffer::new(Config::default()); // 100 ms, audio
//! for seq in [0u64, 2, 1] {
//!     let unit = Unit {
//!         seq,
//!         pts_us: seq * 20_000,
//!         duration_us: 20_000,
//!         key: true,
//!         payload: Bytes::from_static(&[0; 160]),
//!     };
//!     buffer.push(t0, unit); // all three arrive at t0, out of order
//! }
//! buffer.end_of_stream();
//!
//! let mut now = t0;
//! let mut released = Vec::new();
//! loop {
//!     match buffer.poll(now) {
//!         Output::Play(unit) => released.push((unit.pts_us, now - t0)),
//!         Output::Conceal { .. } => unreachable!("nothing is missing"),
//!         Output::Wait(at) => now = at, // a real driver sleeps here
//!         Output::Idle => break,
//!     }
//! }
//! assert_eq!(
//!     released,
//!     [
//!         (0, Duration::from_millis(100)),
//!         (20_000, Duration::from_millis(120)),
//!         (40_000, Duration::from_millis(140)),
//!     ]
//! );
//! let stats = buffer.stats();
//! assert_eq!((stats.played, stats.reordered, stats.underruns), (3, 1, 0));
//! assert_eq!(stats.startup_delay, Some(Duration::from_millis(100)));
//! ```

mod seq_window;
mod stats;
#[cfg(test)]
mod tests;
mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use seq_window::SeqWindow;
use stats::Recorder;
pub use stats::Stats;
pub use types::{Conceal, Concealment, Config, Kind, Output, Unit};

/// Concealment pieces are the last unit's duration, clamped to this range (µs).
const MIN_CONCEAL_STEP_US: u64 = 1_000;
const MAX_CONCEAL_STEP_US: u64 = 1_000_000;

/// The clock mapping, fixed by the first arrival.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    at: Instant,
    first_pts: u64,
}

/// Where playout stands in media time, once something was played.
#[derive(Debug, Clone, Copy)]
struct Head {
    /// The next expected pts: end of the last output (play or conceal).
    next_us: u64,
    /// Arrivals with a smaller pts are late (their slot is already output).
    floor_us: u64,
    /// Duration of the last played unit: the concealment step.
    last_duration_us: u32,
}

#[derive(Debug)]
struct Queued<T> {
    unit: Unit<T>,
    len: u64,
}

/// A playout (jitter) buffer over units carrying payloads of type `T`.
///
/// See the [module docs](self) for the clock mapping and the drive contract.
/// Memory is bounded: at most [`Config::max_units`] queued units plus a fixed
/// amount of bookkeeping, however long the stream.
#[derive(Debug)]
pub struct PlayoutBuffer<T> {
    config: Config,
    buffer_us: u64,
    tolerance_us: u64,
    anchor: Option<Anchor>,
    /// Queued units by (pts, seq): the first entry is due first.
    queue: BTreeMap<(u64, u64), Queued<T>>,
    queued_seqs: BTreeSet<u64>,
    played_seqs: SeqWindow,
    max_seq: Option<u64>,
    head: Option<Head>,
    /// Media time concealed in the current underrun; `None` when not in one.
    underrun_us: Option<u64>,
    eos: bool,
    /// The source went away ([`restart`](Self::restart)): idle when drained,
    /// and the next arrival re-anchors the clock.
    restarting: bool,
    /// Skip arrivals until a keyframe (after a restart).
    await_key: bool,
    /// Skip to the newest keyframe when this far behind (µs); see
    /// [`set_catch_up`](Self::set_catch_up).
    catch_up_us: Option<u64>,
    request_at: Option<Instant>,
    rec: Recorder,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl<T> PlayoutBuffer<T> {
    /// An empty buffer; the clock is anchored by the first push.
    pub fn new(config: Config) -> Self {
        Self {
            buffer_us: micros(config.buffer),
            tolerance_us: micros(config.gap_tolerance),
            config,
            anchor: None,
            queue: BTreeMap::new(),
            queued_seqs: BTreeSet::new(),
            played_seqs: SeqWindow::new(),
            max_seq: None,
            head: None,
            underrun_us: None,
            eos: false,
            restarting: false,
            await_key: false,
            catch_up_us: None,
            request_at: None,
            rec: Recorder::new(),
        }
    }

    /// For a live source: when playout is more than `limit` behind (the first
    /// queued unit overdue by more than `limit`, or more than `buffer + limit`
    /// of media queued), drop what is queued before the newest queued
    /// keyframe and play it `buffer` from then on. `None` (the default) never
    /// skips: every unit of a file is played, late or not.
    pub fn set_catch_up(&mut self, limit: Option<Duration>) {
        self.catch_up_us = limit.map(micros);
    }

    /// The source stopped without ending and may come back (a live channel's
    /// publisher went away). What is queued still plays; once drained,
    /// [`poll`](Self::poll) idles instead of concealing. The next arrival
    /// re-anchors the clock: it plays `buffer` after it arrived, whatever its
    /// pts, and arrivals are skipped until a keyframe (counted in
    /// [`Stats::skipped`]).
    pub fn restart(&mut self) {
        self.restarting = true;
        self.await_key = true;
    }

    /// The configuration this buffer was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Number of units currently queued (never more than
    /// [`Config::max_units`]).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no unit is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The instant at which a unit with this pts is (or was) due, once the
    /// first arrival has anchored the clock; `None` before that.
    pub fn play_instant(&self, pts_us: u64) -> Option<Instant> {
        let anchor = self.anchor?;
        Some(self.instant_at(anchor, self.play_ns(anchor, pts_us)))
    }

    /// Measure [`Stats::startup_delay`] from `at` (when the caller asked for
    /// the stream) instead of from the first arrival. May be called before or
    /// after the first push.
    pub fn set_request_instant(&mut self, at: Instant) {
        self.request_at = Some(at);
    }

    /// No more units will arrive: once the queue drains, [`poll`](Self::poll)
    /// returns [`Output::Idle`] instead of concealing. A later push is still
    /// accepted.
    pub fn end_of_stream(&mut self) {
        self.eos = true;
    }

    /// A unit arrived at `now`, with `len` bytes of payload counted in
    /// [`Stats::bytes`] if it is played. Works for any payload type.
    ///
    /// The unit is queued unless it is a duplicate (its seq is queued or was
    /// played recently), late (its slot was already played or concealed), or
    /// pushed out by [`Config::max_units`]; each of those is counted.
    pub fn push_sized(&mut self, now: Instant, unit: Unit<T>, len: usize) {
        self.rec.received += 1;
        let seq = unit.seq;
        if self.queued_seqs.contains(&seq) || self.played_seqs.contains(seq) {
            self.rec.duplicates += 1;
            return;
        }
        if self.await_key {
            if !unit.key {
                self.rec.skipped += 1;
                return;
            }
            self.await_key = false;
        }
        if self.restarting {
            // The source is back: its first unit plays `buffer` from now, whatever the time
            // spent without it. What is still queued from before plays first.
            self.restarting = false;
            self.anchor = Some(Anchor {
                at: now,
                first_pts: unit.pts_us,
            });
            self.head = None;
            self.underrun_us = None;
        }
        let anchor = *self.anchor.get_or_insert(Anchor {
            at: now,
            first_pts: unit.pts_us,
        });
        // Transit from the anchoring unit's arrival: a re-anchored clock starts it over.
        let transit_ns = Self::offset_ns(anchor, now)
            - (i128::from(unit.pts_us) - i128::from(anchor.first_pts)) * 1000;
        self.rec.jitter.sample(transit_ns);
        let reordered = self.max_seq.is_some_and(|m| seq < m);
        self.max_seq = Some(self.max_seq.map_or(seq, |m| m.max(seq)));
        if self.head.is_some_and(|h| unit.pts_us < h.floor_us) {
            self.rec.late_drops += 1;
            return;
        }
        if reordered {
            self.rec.reordered += 1;
        }
        self.queued_seqs.insert(seq);
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        self.queue.insert((unit.pts_us, seq), Queued { unit, len });
        while self.queue.len() > self.config.max_units {
            if let Some(((_, s), _)) = self.queue.pop_first() {
                self.queued_seqs.remove(&s);
                self.rec.overflow_drops += 1;
            }
        }
    }

    /// What to do at `now`: play a unit, conceal a gap, wait, or idle.
    ///
    /// Call repeatedly until it returns [`Output::Wait`] or [`Output::Idle`].
    /// Played pts never decrease. A `now` earlier than a previous one is
    /// tolerated (nothing becomes due).
    pub fn poll(&mut self, now: Instant) -> Output<T> {
        let Some(anchor) = self.anchor else {
            return Output::Idle;
        };
        let mut anchor = anchor;
        if let Some(limit) = self.catch_up_us {
            anchor = self.catch_up(anchor, now, limit);
        }
        let now_ns = Self::offset_ns(anchor, now);
        // Units that overlap what was already played (beyond the tolerance)
        // can only be queued before the overlapping unit was released.
        if let Some(head) = self.head {
            while let Some((&(pts, seq), _)) = self.queue.first_key_value() {
                if pts >= head.floor_us {
                    break;
                }
                self.queue.pop_first();
                self.queued_seqs.remove(&seq);
                self.rec.late_drops += 1;
            }
        }
        let first = self.queue.first_key_value().map(|(&(pts, _), _)| pts);
        let Some(head) = self.head else {
            return match first {
                None => Output::Idle,
                Some(pts) => self.play_or_wait(anchor, now, now_ns, pts),
            };
        };
        match first {
            Some(pts) if pts <= head.next_us.saturating_add(self.tolerance_us) => {
                self.play_or_wait(anchor, now, now_ns, pts)
            }
            None if self.eos || self.restarting => Output::Idle,
            _ => {
                let due_ns = self.play_ns(anchor, head.next_us);
                if now_ns < due_ns {
                    Output::Wait(self.instant_at(anchor, due_ns))
                } else {
                    self.conceal(head, first)
                }
            }
        }
    }

    /// A snapshot of the statistics so far.
    pub fn stats(&self) -> Stats {
        let since = self.request_at.or(self.anchor.map(|a| a.at));
        let startup_delay = match (self.rec.first_play_at, since) {
            (Some(played), Some(since)) => Some(played.saturating_duration_since(since)),
            _ => None,
        };
        self.rec.snapshot(startup_delay, self.queue.len())
    }

    /// Skips to the newest queued keyframe if playout is more than `limit_us`
    /// behind; returns the (possibly new) anchor.
    fn catch_up(&mut self, anchor: Anchor, now: Instant, limit_us: u64) -> Anchor {
        let (Some((&(first, _), _)), Some((_, last))) =
            (self.queue.first_key_value(), self.queue.last_key_value())
        else {
            return anchor;
        };
        let overdue_ns = Self::offset_ns(anchor, now) - self.play_ns(anchor, first);
        let span_us = last.unit.end_us().saturating_sub(first);
        let behind = overdue_ns > i128::from(limit_us) * 1000
            || span_us > self.buffer_us.saturating_add(limit_us);
        if !behind {
            return anchor;
        }
        let Some(&(key_pts, key_seq)) = self
            .queue
            .iter()
            .rev()
            .find(|(_, q)| q.unit.key)
            .map(|(k, _)| k)
        else {
            return anchor; // no keyframe to go to: play on
        };
        if key_pts == first && overdue_ns <= i128::from(limit_us) * 1000 {
            return anchor; // already at the newest keyframe, and on time
        }
        let behind_key = self.queue.split_off(&(key_pts, key_seq));
        let dropped = std::mem::replace(&mut self.queue, behind_key);
        for (_, seq) in dropped.keys() {
            self.queued_seqs.remove(seq);
        }
        self.rec.skipped += dropped.len() as u64;
        self.rec.skips = self.rec.skips.saturating_add(1);
        let anchor = Anchor {
            at: now,
            first_pts: key_pts,
        };
        self.anchor = Some(anchor);
        // Nothing before the keyframe plays any more, and nothing is concealed up to it.
        self.head = self.head.map(|h| Head {
            next_us: key_pts,
            floor_us: key_pts,
            last_duration_us: h.last_duration_us,
        });
        self.underrun_us = None;
        anchor
    }

    fn play_or_wait(&mut self, anchor: Anchor, now: Instant, now_ns: i128, pts: u64) -> Output<T> {
        let due_ns = self.play_ns(anchor, pts);
        if now_ns < due_ns {
            return Output::Wait(self.instant_at(anchor, due_ns));
        }
        let Some((_, Queued { unit, len })) = self.queue.pop_first() else {
            return Output::Idle;
        };
        self.queued_seqs.remove(&unit.seq);
        self.played_seqs.insert(unit.seq);
        let end = unit.end_us();
        let tol = self.tolerance_us;
        self.head = Some(match self.head {
            None => Head {
                next_us: end,
                floor_us: unit.pts_us.max(end.saturating_sub(tol)),
                last_duration_us: unit.duration_us,
            },
            Some(h) => {
                let next_us = h.next_us.max(end);
                Head {
                    next_us,
                    floor_us: h.floor_us.max(unit.pts_us).max(next_us.saturating_sub(tol)),
                    last_duration_us: unit.duration_us,
                }
            }
        });
        self.underrun_us = None;
        self.rec.played(now, unit.pts_us, end, len);
        Output::Play(unit)
    }

    fn conceal(&mut self, head: Head, first: Option<u64>) -> Output<T> {
        let start = head.next_us;
        let used = self.underrun_us.unwrap_or(0);
        let step = u64::from(head.last_duration_us).clamp(MIN_CONCEAL_STEP_US, MAX_CONCEAL_STEP_US);
        // Pieces stay on the grid of `step` from the start of the underrun
        // (the repeat budget may cut one short), so a stream that resumes on
        // its own grid finds its slot free.
        let mut len = step - used % step;
        if let Some(pts) = first {
            // The gap to the next queued unit is known (and longer than the
            // tolerance): don't leave a sliver under the tolerance unconcealed.
            let gap = pts.saturating_sub(start);
            if gap <= len.saturating_add(self.tolerance_us) {
                len = gap;
            }
        }
        let kind = match (self.config.kind, self.config.conceal) {
            (Kind::Video, _) => Concealment::Freeze,
            (Kind::Audio, Conceal::Silence) => Concealment::Silence,
            (Kind::Audio, Conceal::RepeatThenSilence { max_repeat }) => {
                let budget = micros(max_repeat).saturating_sub(used);
                if budget > 0 {
                    len = len.min(budget);
                    Concealment::Repeat
                } else {
                    Concealment::Silence
                }
            }
        };
        let len = len.clamp(1, u64::from(u32::MAX));
        let Some(next_us) = start.checked_add(len) else {
            // Media time is exhausted (pts near u64::MAX): nothing more can follow.
            return Output::Idle;
        };
        if self.underrun_us.is_none() {
            self.rec.underruns = self.rec.underruns.saturating_add(1);
        }
        self.underrun_us = Some(used.saturating_add(len));
        self.rec.concealed(len);
        self.head = Some(Head {
            next_us,
            floor_us: head.floor_us.max(next_us),
            last_duration_us: head.last_duration_us,
        });
        Output::Conceal {
            pts_us: start,
            duration_us: u32::try_from(len).unwrap_or(u32::MAX),
            kind,
        }
    }

    /// Nanoseconds from the anchor to the play instant of `pts`.
    fn play_ns(&self, anchor: Anchor, pts: u64) -> i128 {
        (i128::from(self.buffer_us) + i128::from(pts) - i128::from(anchor.first_pts)) * 1000
    }

    /// Signed nanoseconds from the anchor to `now`.
    fn offset_ns(anchor: Anchor, now: Instant) -> i128 {
        if now >= anchor.at {
            (now - anchor.at).as_nanos() as i128
        } else {
            -((anchor.at - now).as_nanos() as i128)
        }
    }

    /// The instant `off_ns` after (or before) the anchor, saturating to
    /// something representable for absurd offsets.
    fn instant_at(&self, anchor: Anchor, off_ns: i128) -> Instant {
        const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        let abs = off_ns.unsigned_abs();
        let secs = u64::try_from(abs / 1_000_000_000).unwrap_or(u64::MAX);
        let d = Duration::new(secs, (abs % 1_000_000_000) as u32);
        if off_ns >= 0 {
            anchor
                .at
                .checked_add(d)
                .or_else(|| anchor.at.checked_add(FAR))
                .unwrap_or(anchor.at)
        } else {
            anchor
                .at
                .checked_sub(d)
                .or_else(|| anchor.at.checked_sub(FAR))
                .unwrap_or(anchor.at)
        }
    }
}

impl<T: AsRef<[u8]>> PlayoutBuffer<T> {
    /// A unit arrived at `now`; its payload length is counted in
    /// [`Stats::bytes`] if it is played. Same as
    /// [`push_sized`](Self::push_sized) with `payload.as_ref().len()`; use
    /// `push_sized` for payloads that are not byte slices.
    pub fn push(&mut self, now: Instant, unit: Unit<T>) {
        let len = unit.payload.as_ref().len();
        self.push_sized(now, unit, len);
    }
}
