//! WAV (RIFF/WAVE, any format tag): header and non-audio chunks as `INIT`, audio as chunks of
//! whole frames (whole `block_align` blocks for coded audio).
//!
//! Our own RIFF walk finds the `data` chunk (skipping `LIST`, `bext`, ... before it, noting
//! `fact`); hound parses a PCM `fmt ` chunk (PCM 8/16/24/32-bit int, 32-bit float,
//! WAVE_FORMAT_EXTENSIBLE). Any other format tag (µ-law, A-law, MS/IMA-ADPCM, GSM 6.10, MPEG,
//! an EXTENSIBLE sub-format) is cut on `block_align` boundaries, timed by its samples per
//! block (from the fmt extension or the ADPCM block layout) or else by its average byte rate.
//! The walk stops at `data`: whatever follows the audio (pad byte, `LIST`, `id3 `, garbage) is
//! trailing `INIT` bytes, so it need not parse.
//!
//! Sizes: a `data` size of 0 or 0xFFFFFFFF, as streaming writers leave it, means "to the end
//! of the file" (except a 0 followed by well-formed chunks that end exactly at the end of the
//! file: a genuinely empty `data` chunk). Any other `data` size (or a chunk before it) reaching past the end of the file
//! is refused at open as [`MediaError::Truncated`]. A `data` size that is not a whole number of
//! frames is accepted: the partial frame travels as trailing `INIT` bytes. The RIFF size field
//! is ignored (streaming writers get it wrong too); the file length is what counts.

use std::io::{Cursor, Read, Seek};

use super::packetizer::{Kind, Layout, Probed, Segment};
use super::probe::read_at;
use super::{Config, MediaError, bytes::pieces, frames_to_us, span_us};
use chunkcast_protocol::media::{AudioParams, Codec, CodedAudio, SampleFormat};

const FORMAT: &str = "wav";

/// How many RIFF chunks the walk visits before giving up on finding `data`.
const MAX_CHUNKS: u32 = 10_000;

/// The largest `fmt ` chunk read (WAVE_FORMAT_EXTENSIBLE is 40 bytes).
const MAX_FMT: u32 = 1024;

/// Where the audio is and how it is cut.
#[derive(Debug)]
pub(crate) struct WavLayout {
    /// Offset of the first audio byte (= length of the leading `INIT` bytes).
    data_start: u64,
    /// End of the last whole frame (block, for coded audio).
    audio_end: u64,
    /// File length.
    len: u64,
    /// Bytes per frame (per block, for coded audio): where cuts may fall.
    frame_bytes: u64,
    /// Frames (blocks) per audio chunk.
    chunk_frames: u64,
    /// Timing: frame (block) `i` starts at `i × tick.0` ticks of a `tick.1` Hz clock. Sample
    /// frames for PCM, G.711 and coded audio whose samples per block are known; bytes at the
    /// average byte rate otherwise.
    tick: (u64, u32),
}

impl WavLayout {
    pub(crate) fn segment_at(&self, pos: u64) -> Segment {
        if pos < self.data_start {
            return Segment::new(0, self.data_start, Kind::Init);
        }
        if pos >= self.audio_end {
            return Segment::new(self.audio_end, self.len, Kind::Init);
        }
        let unit_bytes = self.chunk_frames * self.frame_bytes;
        let k = (pos - self.data_start) / unit_bytes;
        let start = self.data_start + k * unit_bytes;
        let end = (start + unit_bytes).min(self.audio_end);
        let first = k * self.chunk_frames;
        let pts_us = self.time_us(first);
        let next = self.time_us(first + (end - start) / self.frame_bytes);
        let kind = Kind::Media {
            key: true,
            pts_us,
            duration_us: span_us(pts_us, next),
        };
        Segment::new(start, end, kind)
    }

    /// When frame (block) `i` starts.
    fn time_us(&self, i: u64) -> u64 {
        frames_to_us(i.saturating_mul(self.tick.0), self.tick.1)
    }

    fn chunk_count(&self, chunk_size: usize) -> u64 {
        let unit_bytes = self.chunk_frames * self.frame_bytes;
        pieces(self.data_start, chunk_size)
            + (self.audio_end - self.data_start).div_ceil(unit_bytes)
            + pieces(self.len - self.audio_end, chunk_size)
    }
}

/// What the `fmt ` chunk says.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WavFmt {
    pub(crate) params: AudioParams,
    /// Average bytes per second.
    byte_rate: u32,
}

/// Reads the headers and plans the cut. `lenient`: audio cut short by the end of the file is
/// served up to its last whole frame, with a warning, instead of refused.
pub(crate) fn probe<R: Read + Seek>(
    config: &Config,
    source: &mut R,
    len: u64,
    lenient: bool,
) -> Result<Probed, MediaError> {
    if len < 12 {
        return Err(MediaError::Truncated {
            format: FORMAT,
            expected: 12,
            actual: len,
        });
    }
    let riff = read_at(source, 0, 12)?;
    if &riff[0..4] != b"RIFF" || &riff[8..12] != b"WAVE" {
        if &riff[0..4] == b"RF64" {
            return Err(MediaError::unsupported(
                FORMAT,
                "RF64 (64-bit WAV) is not supported",
            ));
        }
        return Err(MediaError::corrupt(FORMAT, "missing RIFF/WAVE header"));
    }
    let walked = walk(source, len)?;
    let data_start = walked.data_start;
    let mut warning = None;
    let data_len = match walked.data_size {
        // A genuinely empty `data` chunk followed by well-formed chunks up to the end of the
        // file (LIST, id3) is not a streaming writer's placeholder.
        0 if tiles(source, data_start, len)? => 0,
        0 | u32::MAX => len - data_start,
        n if data_start + u64::from(n) > len => {
            if !lenient {
                return Err(MediaError::Truncated {
                    format: FORMAT,
                    expected: data_start + u64::from(n),
                    actual: len,
                });
            }
            warning = Some(format!(
                "damaged at byte {len}: wav audio cut short: the data chunk says {n} bytes, \
                 the file holds {}",
                len - data_start
            ));
            len - data_start
        }
        n => u64::from(n),
    };
    let WavFmt { params, byte_rate } = parse_fmt(&walked.fmt)?;
    let frame_bytes = u64::from(params.bytes_per_frame());
    if frame_bytes > config.chunk_size as u64 {
        return Err(MediaError::unsupported(
            FORMAT,
            format!(
                "a frame of {frame_bytes} bytes does not fit in one chunk of {}",
                config.chunk_size
            ),
        ));
    }
    let tick = match params.sample_format {
        SampleFormat::Coded(c) if c.samples_per_block > 0 => {
            (u64::from(c.samples_per_block), params.sample_rate)
        }
        SampleFormat::Coded(_) if byte_rate == 0 => {
            return Err(MediaError::corrupt(
                FORMAT,
                "neither samples per block nor a byte rate: no timing",
            ));
        }
        SampleFormat::Coded(c) => (u64::from(c.block_align), byte_rate),
        _ => (1, params.sample_rate),
    };
    let by_time = u64::from(tick.1) * u64::from(config.audio_chunk_us) / 1_000_000 / tick.0;
    let chunk_frames = by_time.min(config.chunk_size as u64 / frame_bytes).max(1);
    let frames = data_len / frame_bytes;
    let layout = WavLayout {
        data_start,
        audio_end: data_start + frames * frame_bytes,
        len,
        frame_bytes,
        chunk_frames,
        tick,
    };
    let duration_us = match (params.sample_format, walked.fact) {
        // The `fact` chunk counts the samples of coded audio exactly (the last block may be
        // partly filled); not when the audio is cut short.
        (SampleFormat::Coded(_), Some(n)) if warning.is_none() => {
            frames_to_us(u64::from(n), params.sample_rate)
        }
        _ => layout.time_us(frames),
    };
    Ok(Probed {
        codec: Codec::Audio(params),
        duration_us: Some(duration_us),
        chunk_count: Some(layout.chunk_count(config.chunk_size)),
        layout: Layout::Wav(layout),
        warning,
    })
}

/// What the RIFF walk found.
struct Walked {
    /// The `fmt ` body.
    fmt: Vec<u8>,
    /// The `fact` chunk's sample count, when there is one before `data`.
    fact: Option<u32>,
    /// Offset of the first audio byte.
    data_start: u64,
    /// The declared `data` size.
    data_size: u32,
}

/// Walks the RIFF chunks from offset 12 to `data`.
fn walk<R: Read + Seek>(source: &mut R, len: u64) -> Result<Walked, MediaError> {
    let mut pos = 12u64;
    let mut fmt = None;
    let mut fact = None;
    for _ in 0..MAX_CHUNKS {
        if pos + 8 > len {
            let reason = if fmt.is_some() {
                "no data chunk"
            } else {
                "no fmt chunk"
            };
            return Err(MediaError::corrupt(FORMAT, reason));
        }
        let h = read_at(source, pos, 8)?;
        let size = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let body = pos + 8;
        match &h[0..4] {
            b"data" => {
                let fmt =
                    fmt.ok_or_else(|| MediaError::corrupt(FORMAT, "data chunk before fmt chunk"))?;
                return Ok(Walked {
                    fmt,
                    fact,
                    data_start: body,
                    data_size: size,
                });
            }
            b"fact" if size >= 4 && body + 4 <= len => {
                let n = read_at(source, body, 4)?;
                fact = Some(u32::from_le_bytes([n[0], n[1], n[2], n[3]]));
            }
            b"fmt " => {
                if size > MAX_FMT {
                    return Err(MediaError::corrupt(
                        FORMAT,
                        format!("fmt chunk of {size} bytes"),
                    ));
                }
                if body + u64::from(size) > len {
                    return Err(MediaError::Truncated {
                        format: FORMAT,
                        expected: body + u64::from(size),
                        actual: len,
                    });
                }
                fmt = Some(read_at(source, body, size as usize)?);
            }
            _ => {}
        }
        // Chunks are padded to an even size.
        let next = body + u64::from(size) + u64::from(size & 1);
        if next > len {
            return Err(MediaError::Truncated {
                format: FORMAT,
                expected: next,
                actual: len,
            });
        }
        pos = next;
    }
    Err(MediaError::corrupt(
        FORMAT,
        format!("no data chunk in the first {MAX_CHUNKS} chunks"),
    ))
}

/// Whether `[from, len)` is a run of (at most 64) RIFF chunks with plausible ids that ends
/// exactly at `len`. PCM audio passes this only by a vanishingly small chance.
fn tiles<R: Read + Seek>(source: &mut R, from: u64, len: u64) -> Result<bool, MediaError> {
    let mut pos = from;
    for _ in 0..64 {
        if pos == len {
            return Ok(true);
        }
        if pos + 8 > len {
            return Ok(false);
        }
        let h = read_at(source, pos, 8)?;
        if !h[..4]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b' ')
        {
            return Ok(false);
        }
        let size = u64::from(u32::from_le_bytes([h[4], h[5], h[6], h[7]]));
        pos += 8 + size + (size & 1);
    }
    Ok(false)
}

/// WAVE format tags read here rather than by hound.
const TAG_PCM: u16 = 0x0001;
const TAG_FLOAT: u16 = 0x0003;
const TAG_ALAW: u16 = 0x0006;
const TAG_MULAW: u16 = 0x0007;
const TAG_MS_ADPCM: u16 = 0x0002;
const TAG_IMA_ADPCM: u16 = 0x0011;
const TAG_EXTENSIBLE: u16 = 0xFFFE;

/// Parses a `fmt ` body: linear PCM and float through hound (which checks them closely),
/// every other format tag (or WAVE_FORMAT_EXTENSIBLE sub-format) as G.711 or coded audio cut
/// on `block_align`.
pub(crate) fn parse_fmt(fmt: &[u8]) -> Result<WavFmt, MediaError> {
    if fmt.len() < 16 {
        return Err(MediaError::corrupt(
            FORMAT,
            format!("fmt chunk of {} bytes (at least 16 needed)", fmt.len()),
        ));
    }
    let u16_at = |i: usize| u16::from_le_bytes([fmt[i], fmt[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([fmt[i], fmt[i + 1], fmt[i + 2], fmt[i + 3]]);
    let tag = u16_at(0);
    let channels = u16_at(2);
    let sample_rate = u32_at(4);
    let byte_rate = u32_at(8);
    let block_align = u16_at(12);
    let bits = u16_at(14);
    let sub = match tag {
        TAG_EXTENSIBLE if fmt.len() >= 26 => u16_at(24),
        TAG_EXTENSIBLE => {
            return Err(MediaError::corrupt(
                FORMAT,
                "WAVE_FORMAT_EXTENSIBLE without its sub-format",
            ));
        }
        t => t,
    };
    if channels == 0 {
        return Err(MediaError::corrupt(FORMAT, "the header says 0 channels"));
    }
    if sample_rate == 0 {
        return Err(MediaError::corrupt(FORMAT, "sample rate is 0"));
    }
    if block_align == 0 {
        return Err(MediaError::corrupt(FORMAT, "block alignment is 0"));
    }
    let params = |sample_format| AudioParams {
        sample_rate,
        channels,
        bits_per_sample: bits,
        sample_format,
    };
    let params = match sub {
        TAG_PCM | TAG_FLOAT => parse_pcm(fmt)?,
        TAG_MULAW | TAG_ALAW if bits == 8 && block_align == channels => {
            params(if sub == TAG_MULAW {
                SampleFormat::MuLaw
            } else {
                SampleFormat::ALaw
            })
        }
        _ => {
            // Samples per block: from the fmt extension where the codec keeps it there (cbSize
            // at 16, wSamplesPerBlock at 18: MS-ADPCM, IMA-ADPCM, GSM 6.10, ...), else from
            // the ADPCM block layouts; 0 (unknown) otherwise, and timing follows the byte rate.
            let ch = u32::from(channels);
            let ba = u32::from(block_align);
            let from_ext = (tag != TAG_EXTENSIBLE && fmt.len() >= 20 && u16_at(16) >= 2)
                .then(|| u32::from(u16_at(18)))
                .filter(|&n| n > 0);
            let from_layout = match sub {
                TAG_IMA_ADPCM if bits == 4 && ba > 4 * ch => Some((ba - 4 * ch) * 8 / (4 * ch) + 1),
                TAG_MS_ADPCM if bits == 4 && ba > 7 * ch => Some((ba - 7 * ch) * 8 / (4 * ch) + 2),
                _ => None,
            };
            params(SampleFormat::Coded(CodedAudio {
                tag: sub,
                block_align,
                samples_per_block: from_ext.or(from_layout).unwrap_or(0),
            }))
        }
    };
    Ok(WavFmt { params, byte_rate })
}

/// Parses a PCM or float `fmt ` body with hound, which knows the PCM and EXTENSIBLE variants.
fn parse_pcm(fmt: &[u8]) -> Result<AudioParams, MediaError> {
    // hound reads whole files only: give it a header-only one around this `fmt ` body.
    let size = u32::try_from(fmt.len()).unwrap_or(u32::MAX);
    let pad = fmt.len() % 2;
    let mut fake = Vec::with_capacity(fmt.len() + 28);
    fake.extend_from_slice(b"RIFF");
    fake.extend_from_slice(&(size + 20 + pad as u32).to_le_bytes());
    fake.extend_from_slice(b"WAVEfmt ");
    fake.extend_from_slice(&size.to_le_bytes());
    fake.extend_from_slice(fmt);
    fake.resize(fake.len() + pad, 0);
    fake.extend_from_slice(b"data\0\0\0\0");
    let reader = hound::WavReader::new(Cursor::new(fake)).map_err(|e| match e {
        hound::Error::Unsupported => {
            MediaError::unsupported(FORMAT, "the codec is not PCM or IEEE float")
        }
        hound::Error::FormatError(msg) => MediaError::corrupt(FORMAT, msg),
        other => MediaError::corrupt(FORMAT, other.to_string()),
    })?;
    let s = reader.spec();
    if s.sample_rate == 0 {
        return Err(MediaError::corrupt(FORMAT, "sample rate is 0"));
    }
    let sample_format = match s.sample_format {
        hound::SampleFormat::Int => SampleFormat::Int,
        hound::SampleFormat::Float => SampleFormat::Float,
    };
    // hound accepted the body, so it holds at least the 16-byte WAVEFORMAT with a non-zero
    // channel count. The container size comes from the block alignment, as hound computes it.
    let block_align = u16::from_le_bytes([fmt[12], fmt[13]]);
    let bytes_per_sample = block_align / s.channels;
    if u32::from(bytes_per_sample) * u32::from(s.channels) != u32::from(block_align) {
        return Err(MediaError::corrupt(
            FORMAT,
            "block alignment is not channels × sample size",
        ));
    }
    let container_bits = bytes_per_sample * 8;
    if !matches!(container_bits, 8 | 16 | 24 | 32) {
        return Err(MediaError::unsupported(
            FORMAT,
            format!("{container_bits}-bit samples"),
        ));
    }
    if sample_format == SampleFormat::Float && container_bits != 32 {
        return Err(MediaError::unsupported(
            FORMAT,
            format!("{container_bits}-bit float samples"),
        ));
    }
    Ok(AudioParams {
        sample_rate: s.sample_rate,
        channels: s.channels,
        // The container size, so that `bytes_per_frame` is the block alignment: a 20-bit
        // sample in a 24-bit container is read as 24-bit (the valid bits are the high ones).
        bits_per_sample: container_bits,
        sample_format,
    })
}
