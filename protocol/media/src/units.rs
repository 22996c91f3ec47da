//! Units: in-order chunks → whole media units for playback.
//!
//! A unit is the pieces up to and including an `END_OF_UNIT` chunk: for audio raw interleaved
//! PCM frames (as in the file), for MJPEG a complete JPEG, for Y4M the planes (the `FRAME` line
//! stripped), for MP4 one video sample, for an image the whole file. `INIT` chunks are not
//! units: the ones before the first media chunk (the WAV header, the MP4 `ftyp`/`moov`, the
//! Y4M stream header) are kept in [`UnitAssembler::init_bytes`]; later ones (bytes between
//! MJPEG frames, MP4 audio samples, WAV trailers) are counted and dropped.
//!
//! Chunks must come in `seq` order, but may skip some (a lossy playout): after a gap the
//! assembler drops the partial unit and resumes at the next unit boundary.

use bytes::{Bytes, BytesMut};

use chunkcast_protocol::media::{AudioParams, Codec, SampleFormat, VisualFormat};
use chunkcast_protocol::wire::chunk::{Chunk, ChunkFlags};

/// One media unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Units assembled before this one by this assembler (0, 1, 2, ...).
    pub index: u64,
    /// The `seq` of the unit's first chunk.
    pub first_seq: u64,
    /// Presentation time in microseconds.
    pub pts_us: u64,
    /// Duration in microseconds.
    pub duration_us: u32,
    /// Decodable on its own.
    pub key: bool,
    /// The unit's bytes (see [`UnitAssembler`]).
    pub data: Bytes,
}

/// Why a unit was dropped. The assembler has resynchronised; keep pushing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnitError {
    /// A chunk still compressed: decompress before pushing.
    #[error("chunk {seq} is still compressed")]
    Compressed {
        /// Its sequence number.
        seq: u64,
    },
    /// A unit grew beyond the bound given at construction.
    #[error("unit starting at chunk {first_seq} exceeds {limit} bytes")]
    TooLarge {
        /// The `seq` of its first chunk.
        first_seq: u64,
        /// The bound.
        limit: usize,
    },
    /// A Y4M unit without its `FRAME` line.
    #[error("unit starting at chunk {first_seq} is malformed: {reason}")]
    Malformed {
        /// The `seq` of its first chunk.
        first_seq: u64,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The unit being gathered.
#[derive(Debug)]
struct Partial {
    first_seq: u64,
    pts_us: u64,
    duration_us: u32,
    key: bool,
    parts: Vec<Bytes>,
    len: usize,
}

/// Joins the pieces of each unit.
///
/// A unit is the pieces up to and including an `END_OF_UNIT` chunk: for audio raw interleaved
/// PCM frames (as in the file), for MJPEG a complete JPEG, for Y4M the planes (the `FRAME` line
/// stripped), for MP4 one video sample, for an image the whole file. `INIT` chunks are not
/// units: the ones before the first media chunk (the WAV header, the MP4 `ftyp`/`moov`, the
/// Y4M stream header) are kept in [`init_bytes`](Self::init_bytes); later ones (bytes between
/// MJPEG frames, MP4 audio samples, WAV trailers) are counted and dropped.
///
/// Chunks must come in `seq` order, but may skip some (a lossy playout): after a gap the
/// assembler drops the partial unit and resumes at the next unit boundary.
#[derive(Debug)]
pub struct UnitAssembler {
    codec: Codec,
    max_unit: usize,
    init: BytesMut,
    /// Whether a media chunk was seen (so later INIT chunks are not the init segment).
    media_seen: bool,
    dropped_init: u64,
    partial: Option<Partial>,
    /// The seq expected next, once a chunk was seen.
    next_seq: Option<u64>,
    /// Whether the next chunk starts a unit (false after a gap, until an `END_OF_UNIT`).
    synced: bool,
    /// Whether the current unit is being discarded (too large).
    skipping: bool,
    units: u64,
}

impl UnitAssembler {
    /// An assembler for a stream of `codec`, refusing units (and init bytes) above
    /// `max_unit_bytes`.
    pub fn new(codec: Codec, max_unit_bytes: usize) -> Self {
        Self {
            codec,
            max_unit: max_unit_bytes,
            init: BytesMut::new(),
            media_seen: false,
            dropped_init: 0,
            partial: None,
            next_seq: None,
            synced: true,
            skipping: false,
            units: 0,
        }
    }

    /// The `INIT` bytes seen before the first media chunk (the container header), up to the
    /// unit bound.
    pub fn init_bytes(&self) -> &[u8] {
        &self.init
    }

    /// `INIT` bytes after the first media chunk, or beyond the bound, that were dropped.
    pub fn dropped_init_bytes(&self) -> u64 {
        self.dropped_init
    }

    /// Takes the next chunk (in `seq` order, gaps allowed); returns a unit when this chunk
    /// completes one.
    pub fn push(&mut self, chunk: Chunk) -> Result<Option<Unit>, UnitError> {
        let seq = chunk.seq;
        if chunk.has(ChunkFlags::COMPRESSED) {
            return Err(UnitError::Compressed { seq });
        }
        if self.next_seq.is_some_and(|n| n != seq) {
            // Lost chunks: whatever was gathered is incomplete, and the next chunk may be in
            // the middle of a unit.
            self.partial = None;
            self.skipping = false;
            self.synced = false;
        }
        self.next_seq = Some(seq.saturating_add(1));
        let end = chunk.has(ChunkFlags::END_OF_UNIT);
        if chunk.has(ChunkFlags::INIT) {
            // Init bytes lie between units: a partial unit before them is broken.
            self.partial = None;
            self.skipping = false;
            if !self.media_seen && self.init.len() + chunk.payload.len() <= self.max_unit {
                self.init.extend_from_slice(&chunk.payload);
            } else {
                self.dropped_init += chunk.payload.len() as u64;
            }
            // The next media chunk after init bytes starts a unit.
            self.synced = true;
            return Ok(None);
        }
        self.media_seen = true;
        if !self.synced {
            self.synced = end;
            return Ok(None);
        }
        if self.skipping {
            self.skipping = !end;
            return Ok(None);
        }
        let p = self.partial.get_or_insert_with(|| Partial {
            first_seq: seq,
            pts_us: chunk.pts_us,
            duration_us: chunk.duration_us,
            key: chunk.has(ChunkFlags::KEY),
            parts: Vec::new(),
            len: 0,
        });
        if p.len + chunk.payload.len() > self.max_unit {
            let first_seq = p.first_seq;
            self.partial = None;
            self.skipping = !end;
            return Err(UnitError::TooLarge {
                first_seq,
                limit: self.max_unit,
            });
        }
        p.len += chunk.payload.len();
        p.parts.push(chunk.payload);
        if !end {
            return Ok(None);
        }
        let Some(p) = self.partial.take() else {
            return Ok(None);
        };
        let data = join(p.parts, p.len);
        let data = match self.codec {
            Codec::Video(v) if v.format == VisualFormat::Y4m => {
                let Some(nl) = data.iter().take(256).position(|&b| b == b'\n') else {
                    return Err(UnitError::Malformed {
                        first_seq: p.first_seq,
                        reason: "no FRAME line",
                    });
                };
                data.slice(nl + 1..)
            }
            _ => data,
        };
        let unit = Unit {
            index: self.units,
            first_seq: p.first_seq,
            pts_us: p.pts_us,
            duration_us: p.duration_us,
            key: p.key,
            data,
        };
        self.units += 1;
        Ok(Some(unit))
    }
}

/// Joins parts without copying when there is only one.
fn join(mut parts: Vec<Bytes>, len: usize) -> Bytes {
    if parts.len() == 1 {
        return parts.pop().unwrap_or_default();
    }
    let mut out = BytesMut::with_capacity(len);
    for p in parts {
        out.extend_from_slice(&p);
    }
    out.freeze()
}

/// Decodes interleaved little-endian PCM (as in a WAV `data` chunk) to `f32` in `[-1, 1]`,
/// appending to `out`. 8-bit samples are unsigned, as WAV stores them; a trailing partial
/// sample is ignored. Formats [`AudioParams`] cannot describe append nothing.
pub fn pcm_to_f32(params: &AudioParams, data: &[u8], out: &mut Vec<f32>) {
    let width = usize::from(params.bits_per_sample / 8);
    if width == 0 {
        return;
    }
    let samples = data.chunks_exact(width);
    out.reserve(samples.len());
    match (params.sample_format, width) {
        (SampleFormat::Int, 1) => out.extend(samples.map(|s| (f32::from(s[0]) - 128.0) / 128.0)),
        (SampleFormat::Int, 2) => {
            out.extend(samples.map(|s| f32::from(i16::from_le_bytes([s[0], s[1]])) / 32_768.0));
        }
        (SampleFormat::Int, 3) => out.extend(samples.map(|s| {
            let v = i32::from_le_bytes([0, s[0], s[1], s[2]]) >> 8;
            v as f32 / 8_388_608.0
        })),
        (SampleFormat::Int, 4) => out.extend(
            samples.map(|s| i32::from_le_bytes([s[0], s[1], s[2], s[3]]) as f32 / 2_147_483_648.0),
        ),
        (SampleFormat::Float, 4) => {
            out.extend(samples.map(|s| f32::from_le_bytes([s[0], s[1], s[2], s[3]])))
        }
        _ => {}
    }
}
