//! The values that go in and out of the buffer: units, settings, outputs.

use std::time::{Duration, Instant};

#[cfg(doc)]
use super::{PlayoutBuffer, Stats};

/// One media unit (an audio block or a video frame) with its timing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Unit<T> {
    /// Unit sequence number in send order: detects duplicates and reordering.
    pub seq: u64,
    /// Presentation time in microseconds of media time.
    pub pts_us: u64,
    /// How long the unit plays, in microseconds; the next unit is expected at
    /// `pts_us + duration_us`.
    pub duration_us: u32,
    /// Whether the unit is independently decodable (a key frame; always true
    /// for PCM audio). Carried through, not interpreted.
    pub key: bool,
    /// The media bytes (in practice `bytes::Bytes`).
    pub payload: T,
}

impl<T> Unit<T> {
    /// The media time at which this unit ends: `pts_us + duration_us`
    /// (saturating).
    pub fn end_us(&self) -> u64 {
        self.pts_us.saturating_add(u64::from(self.duration_us))
    }
}

/// What the buffer carries, which decides how gaps are concealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Kind {
    /// Audio: gaps are concealed per [`Config::conceal`].
    #[default]
    Audio,
    /// Video: gaps freeze on the last frame ([`Concealment::Freeze`]).
    Video,
}

/// How audio gaps are concealed. Ignored for [`Kind::Video`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Conceal {
    /// Fill every gap with silence.
    #[default]
    Silence,
    /// Repeat the last unit for the first `max_repeat` of each underrun, then
    /// silence. The repeat phase is cut exactly at `max_repeat`, so the last
    /// `Repeat` piece may be shorter than the unit (play a prefix of it).
    RepeatThenSilence {
        /// How much of an underrun is filled by repeating; the rest is silence.
        max_repeat: Duration,
    },
}

/// The kind of an [`Output::Conceal`] piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Concealment {
    /// Audio: play silence.
    Silence,
    /// Audio: play the last played unit again (or the first `duration_us` of it).
    Repeat,
    /// Video: keep showing the last played frame.
    Freeze,
}

/// Playout buffer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Config {
    /// Delay between the first arrival and the play instant of its unit: the
    /// window within which late and reordered arrivals are absorbed.
    /// Default 100 ms.
    pub buffer: Duration,
    /// Audio or video. Default audio.
    pub kind: Kind,
    /// How audio gaps are filled. Default [`Conceal::Silence`].
    pub conceal: Conceal,
    /// Hard bound on queued units; pushing onto a full queue drops the unit
    /// due first (counted in [`Stats::overflow_drops`]). Default 4096.
    pub max_units: usize,
    /// Gaps and overlaps between consecutive units up to this size are
    /// ignored (timestamp rounding, e.g. 33 333 vs 33 334 µs frames): no
    /// concealment is emitted for them and a slightly overlapping unit is
    /// still played. Default 1 ms.
    pub gap_tolerance: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            buffer: Duration::from_millis(100),
            kind: Kind::Audio,
            conceal: Conceal::Silence,
            max_units: 4096,
            gap_tolerance: Duration::from_millis(1),
        }
    }
}

/// What [`PlayoutBuffer::poll`] asks the caller to do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Output<T> {
    /// Render this unit now (its play instant has been reached).
    Play(Unit<T>),
    /// Nothing arrived for this stretch of media time: conceal it now.
    Conceal {
        /// Start of the concealed stretch (media time, µs).
        pts_us: u64,
        /// Length of the concealed stretch (µs, at least 1).
        duration_us: u32,
        /// Silence, repeat of the last unit, or frozen frame.
        kind: Concealment,
    },
    /// Nothing is due before this instant (always later than `now`): call
    /// `poll` again then, or on the next arrival.
    Wait(Instant),
    /// Nothing is queued and nothing is expected (before the first arrival,
    /// or drained after [`PlayoutBuffer::end_of_stream`]): call `poll` again
    /// after the next arrival.
    Idle,
}
