//! Packetizers: file bytes → timed chunks, one layout per format.
//!
//! Everything here is sans-IO: the caller reads the file and feeds bytes in, and writes what
//! comes out. The only reads happen in [`Packetizer::open`], which probes the source through a
//! caller-supplied `Read + Seek` (headers, an image's structure, an MP4 `moov` box).
//!
//! Where things are:
//! - [`Packetizer`] (`packetizer.rs`): the front. It cuts a file into ordered [`Chunk`](chunkcast_protocol::Chunk)s whose
//!   payloads, concatenated in `seq` order, are the file byte for byte, whatever the format.
//!   The format decides only *where* the cuts fall and which flags and timestamps each chunk
//!   carries.
//! - `probe.rs`: detects the format from the head bytes and the file-name extension.
//! - `wav.rs`, `mjpeg.rs`, `y4m.rs`, `mp4.rs`, `image.rs`, `bytes.rs`: one layout per format.
//! - [`Reassembler`](crate::Reassembler) (`reassemble.rs`): chunks in any order → in-order writes, with gap
//!   reporting, length and BLAKE3 checks.
//! - [`UnitAssembler`](crate::UnitAssembler) (`units.rs`): in-order chunks → whole media units for playback.
//!
//! # What each chunk carries
//!
//! | format | `INIT` chunks | media chunks (one unit each, split at the chunk size) |
//! |---|---|---|
//! | bytes | none | every chunk `KEY` + `END_OF_UNIT`, pts 0 |
//! | image | none | the whole file is one unit: every piece `KEY`, the last `END_OF_UNIT`, pts 0 |
//! | WAV | header and every chunk before `data`; pad byte, chunks after `data`, a partial last frame | whole PCM frames, [`Config::audio_chunk_us`] each, `KEY` + `END_OF_UNIT` |
//! | MJPEG | bytes between frames (if any) | one JPEG per unit, every piece `KEY` |
//! | Y4M | the stream header line | `FRAME…\n` line + planes per unit, every piece `KEY` |
//! | MP4 | every byte that is not a video sample (ftyp, moov, mdat header, audio samples, free) | one video sample per unit, `KEY` on sync samples |
//!
//! The last chunk of every stream has `END_OF_STREAM`. An empty file is one empty chunk.
//!
//! # Error policy
//!
//! [`Packetizer::open`] decides: a file that claims a format (by magic bytes, or by extension
//! when the magic matches nothing) but does not parse as it is refused with a [`MediaError`]
//! saying why, unless [`Config::raw`] asks for bytes. [`Packetizer::open_any`], which the
//! server uses, refuses nothing readable: such a file is cut as bytes and
//! [`Packetizer::warning`] says why (`served as bytes: …`); a WAV whose audio is cut short is
//! audio up to its last whole frame, with a `damaged at byte N: …` warning; and a structure
//! that breaks after open turns the rest of the file into `INIT` bytes
//! ([`Packetizer::damage`]). Two exceptions, both served as bytes with
//! [`Packetizer::warning`] set: an MP4 that cannot be demuxed (fragmented, no video track,
//! broken tables), and a JPEG-magic file named neither `.jpg` nor `.mjpeg` whose first frame is
//! broken. After `open`, the stream is the file: a structural surprise later in an MJPEG
//! stream never stops it (the scanner resynchronises), while input that does not match the
//! length given at open (or the headers validated then) is an error from
//! [`Packetizer::push`]/[`Packetizer::finish`].
//!
//! Limits: chunk payloads at most [`MAX_CHUNK_SIZE`]; Y4M frames at most
//! [`MAX_FRAME_BYTES`]; MP4 `moov` at most [`MAX_MOOV_BYTES`] and [`MAX_MP4_SAMPLES`] video
//! samples; images at most [`MAX_IMAGE_DIMENSION`] per side and [`MAX_IMAGE_ALLOC`]
//! bytes of decoder memory. No allocation is sized by a header field before it is checked
//! against one of these.

mod bytes;
mod image;
mod mjpeg;
pub(crate) mod mp4;
mod packetizer;
mod probe;
pub(crate) mod wav;
pub(crate) mod y4m;

pub use packetizer::Packetizer;

pub(crate) use mp4::find_moov;
pub(crate) use probe::read_at;

use chunkcast_protocol::wire::chunk::StreamId;

/// The default maximum payload of one chunk: 64 KiB.
///
/// A first guess that keeps per-chunk overhead (header, CRC, syscalls) below 0.1 % and a lost
/// chunk cheap to resend; the lead will tune it by measurement.
pub const DEFAULT_CHUNK_SIZE: usize = 64 * 1024;

/// The largest accepted [`Config::chunk_size`]: 1 MiB, the wire codec's default maximum
/// payload, so that every chunk a packetizer emits can be framed.
pub const MAX_CHUNK_SIZE: usize = 1 << 20;

/// The default audio chunk duration: 20 ms (960 frames at 48 kHz).
pub const DEFAULT_AUDIO_CHUNK_US: u32 = 20_000;

/// The largest accepted [`Config::audio_chunk_us`]: 10 s.
pub const MAX_AUDIO_CHUNK_US: u32 = 10_000_000;

/// The largest raw video frame (Y4M) accepted: 64 MiB (8K 4:4:4 16-bit is 199 MB and refused;
/// 8K 4:2:0 8-bit is 50 MB and fine).
pub const MAX_FRAME_BYTES: u64 = 64 << 20;

/// The largest MP4 `moov` box read at open: 64 MiB.
pub const MAX_MOOV_BYTES: u64 = 64 << 20;

/// The most video samples an MP4 may have: 2²¹ (23 hours at 25 fps), which bounds the sample
/// table kept in memory to 64 MiB.
pub const MAX_MP4_SAMPLES: u64 = 1 << 21;

/// The widest or tallest image served as an image (its headers say its size).
pub const MAX_IMAGE_DIMENSION: u32 = 16_384;

/// The most memory the image decoder may allocate while reading an image's headers: 256 MiB.
pub const MAX_IMAGE_ALLOC: u64 = 256 << 20;

/// How a file is cut into chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// The stream every chunk is stamped with.
    pub stream: StreamId,
    /// Maximum payload bytes per chunk, 1..=[`MAX_CHUNK_SIZE`]. Default [`DEFAULT_CHUNK_SIZE`].
    pub chunk_size: usize,
    /// Target duration of one audio chunk in microseconds, 1..=[`MAX_AUDIO_CHUNK_US`]
    /// (rounded down to whole frames, at least one). Default [`DEFAULT_AUDIO_CHUNK_US`].
    pub audio_chunk_us: u32,
    /// Serve the file as opaque bytes whatever its format.
    pub raw: bool,
    /// MJPEG frame rate as (numerator, denominator), since the format does not carry one.
    /// Default 25/1.
    pub mjpeg_fps: (u32, u32),
}

impl Config {
    /// The defaults, for `stream`.
    pub fn new(stream: StreamId) -> Self {
        Self {
            stream,
            chunk_size: DEFAULT_CHUNK_SIZE,
            audio_chunk_us: DEFAULT_AUDIO_CHUNK_US,
            raw: false,
            mjpeg_fps: (25, 1),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), MediaError> {
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK_SIZE {
            return Err(MediaError::InvalidConfig(
                "chunk_size must be 1..=MAX_CHUNK_SIZE",
            ));
        }
        if self.audio_chunk_us == 0 || self.audio_chunk_us > MAX_AUDIO_CHUNK_US {
            return Err(MediaError::InvalidConfig(
                "audio_chunk_us must be 1..=MAX_AUDIO_CHUNK_US",
            ));
        }
        if self.mjpeg_fps.0 == 0 || self.mjpeg_fps.1 == 0 {
            return Err(MediaError::InvalidConfig(
                "mjpeg_fps must have a non-zero numerator and denominator",
            ));
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new(StreamId(0))
    }
}

/// Why a file could not be packetized.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// Reading the source during [`Packetizer::open`] failed.
    #[error("reading the source failed: {0}")]
    Io(#[from] std::io::Error),
    /// The file is shorter than its headers say (at open), or fewer bytes were pushed than the
    /// length given at open (at finish).
    #[error("{format} is truncated: expected {expected} bytes, found {actual}")]
    Truncated {
        /// The format whose structure is cut short, or "input".
        format: &'static str,
        /// Bytes needed.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// More bytes were pushed than the length given at open: the file changed.
    #[error("input is longer than announced: expected {expected} bytes, got at least {actual}")]
    TooLong {
        /// The length given at open.
        expected: u64,
        /// Bytes pushed so far.
        actual: u64,
    },
    /// The file claims a format but its structure is broken.
    #[error("corrupt {format}: {reason}")]
    Corrupt {
        /// The claimed format.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A well-formed file using a variant this packetizer does not handle (serve it with
    /// [`Config::raw`] instead).
    #[error("unsupported {format}: {reason}")]
    Unsupported {
        /// The format.
        format: &'static str,
        /// What is not supported.
        reason: String,
    },
    /// A size beyond one of this module's limits.
    #[error("{what} of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A [`Config`] field out of range.
    #[error("invalid packetizer config: {0}")]
    InvalidConfig(&'static str),
}

impl MediaError {
    pub(crate) fn corrupt(format: &'static str, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            format,
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(format: &'static str, reason: impl Into<String>) -> Self {
        Self::Unsupported {
            format,
            reason: reason.into(),
        }
    }
}

/// The presentation time of the frame after `frames` frames at `rate` Hz, in microseconds,
/// rounded down. Computed from the frame count rather than by summing durations, so that an
/// hour of audio ends exactly at 3 600 000 000 µs. `rate` 0 gives 0.
pub fn frames_to_us(frames: u64, rate: u32) -> u64 {
    if rate == 0 {
        return 0;
    }
    let us = u128::from(frames) * 1_000_000 / u128::from(rate);
    u64::try_from(us).unwrap_or(u64::MAX)
}

/// The presentation time of video frame `n` at `fps_num / fps_den` frames per second, in
/// microseconds, rounded down (`n * 1e6 * den / num`). A zero numerator gives 0.
pub fn frame_pts_us(n: u64, fps_num: u32, fps_den: u32) -> u64 {
    if fps_num == 0 {
        return 0;
    }
    let us = u128::from(n) * 1_000_000 * u128::from(fps_den) / u128::from(fps_num);
    u64::try_from(us).unwrap_or(u64::MAX)
}

/// The duration from `a` to `b` microseconds as a chunk's `duration_us`, saturating.
pub(crate) fn span_us(a: u64, b: u64) -> u32 {
    u32::try_from(b.saturating_sub(a)).unwrap_or(u32::MAX)
}
