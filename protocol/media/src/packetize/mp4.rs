//! MP4 (ISO BMFF, progressive: H.264 + AAC as ffmpeg writes it, `moov` first or last).
//!
//! Open walks the top-level boxes, reads the `moov` box (at most [`MAX_MOOV_BYTES`]) and has
//! mp4parse parse it; the first video track's sample tables (`stsz`, `stsc`, `stco`/`co64`,
//! `stts`, `ctts`, `stss`, plus the edit list's media time) give every video sample's offset,
//! size, presentation time and sync flag.
//!
//! Byte layout: each video sample is one unit (`KEY` on sync samples), cut at the chunk size;
//! every other byte (`ftyp`, `moov`, the `mdat` header, audio samples interleaved in `mdat`,
//! `free`, ...) travels as `INIT`, in file order. So the concatenation is the file, and a late
//! joiner needs the leading `INIT` run (`ftyp`, `moov` when faststart, `mdat` header) and then
//! any `KEY` unit. Chunks are in file (decode) order; with B-frames their `pts_us` is not
//! monotonic. An initial empty edit (`empty_duration`) is ignored.
//!
//! If demuxing fails (fragmented MP4, no video track, inconsistent or oversized tables, a
//! truncated box), the file is served as bytes and [`Packetizer::warning`] says why.
//!
//! [`Packetizer::warning`]: super::Packetizer::warning

use std::io::{Cursor, Read, Seek};

use mp4parse::{SampleEntry, TimeOffsetVersion, TrackType};

use super::packetizer::{Kind, Layout, Probed, Segment};
use super::probe::read_at;
use super::{Config, MAX_MOOV_BYTES, MAX_MP4_SAMPLES, MediaError, bytes, bytes::pieces, span_us};
use chunkcast_protocol::media::{Codec, VideoParams, VisualFormat};

const FORMAT: &str = "mp4";

/// How many top-level boxes the walk visits.
const MAX_BOXES: u32 = 100_000;

/// One video sample.
#[derive(Debug, Clone, Copy)]
struct Sample {
    offset: u64,
    pts_us: u64,
    size: u32,
    duration_us: u32,
    key: bool,
}

impl Sample {
    fn end(&self) -> u64 {
        self.offset + u64::from(self.size)
    }
}

/// The video samples sorted by offset, non-overlapping, within the file.
#[derive(Debug)]
pub(crate) struct Mp4Layout {
    samples: Vec<Sample>,
    /// The first sample not wholly before the cutter.
    next: usize,
    len: u64,
}

impl Mp4Layout {
    pub(crate) fn segment_at(&mut self, pos: u64) -> Option<Segment> {
        while self.samples.get(self.next).is_some_and(|s| s.end() <= pos) {
            self.next += 1;
        }
        let prev_end = self
            .next
            .checked_sub(1)
            .map_or(0, |i| self.samples[i].end());
        Some(match self.samples.get(self.next) {
            Some(s) if pos >= s.offset => {
                let kind = Kind::Media {
                    key: s.key,
                    pts_us: s.pts_us,
                    duration_us: s.duration_us,
                };
                Segment::new(s.offset, s.end(), kind)
            }
            Some(s) => Segment::new(prev_end, s.offset, Kind::Init),
            None => Segment::new(prev_end, self.len, Kind::Init),
        })
    }

    fn chunk_count(&self, chunk_size: usize) -> u64 {
        let mut n = 0;
        let mut pos = 0;
        for s in &self.samples {
            n += pieces(s.offset - pos, chunk_size) + pieces(u64::from(s.size), chunk_size);
            pos = s.end();
        }
        n + pieces(self.len - pos, chunk_size)
    }
}

/// Demuxes, or falls back to bytes with a warning.
pub(crate) fn probe<R: Read + Seek>(
    config: &Config,
    source: &mut R,
    len: u64,
) -> Result<Probed, MediaError> {
    match demux(source, len) {
        Ok((params, duration_us, samples, warning)) => {
            let layout = Mp4Layout {
                samples,
                next: 0,
                len,
            };
            Ok(Probed {
                codec: Codec::Video(params),
                duration_us: Some(duration_us),
                chunk_count: Some(layout.chunk_count(config.chunk_size)),
                layout: Layout::Mp4(layout),
                warning,
            })
        }
        Err(MediaError::Io(e)) => Err(MediaError::Io(e)),
        Err(e) => Ok(bytes::probed(
            len,
            config.chunk_size,
            Some(format!("served as bytes: {e}")),
        )),
    }
}

type Demuxed = (VideoParams, u64, Vec<Sample>, Option<String>);

fn demux<R: Read + Seek>(source: &mut R, len: u64) -> Result<Demuxed, MediaError> {
    let bad = |r: &str| MediaError::corrupt(FORMAT, r.to_owned());
    let (moov_at, moov_len) = find_moov(source, len)?;
    if moov_len > MAX_MOOV_BYTES {
        return Err(MediaError::TooLarge {
            what: "moov box",
            size: moov_len,
            limit: MAX_MOOV_BYTES,
        });
    }
    let moov = read_at(source, moov_at, moov_len as usize)?;
    let ctx = mp4parse::read_mp4(&mut Cursor::new(moov))
        .map_err(|e| MediaError::corrupt(FORMAT, e.to_string()))?;
    let (track, entry) = ctx
        .tracks
        .iter()
        .filter(|t| t.track_type == TrackType::Video)
        .find_map(|t| match t.stsd.as_ref()?.descriptions.first()? {
            SampleEntry::Video(v) => Some((t, v)),
            _ => None,
        })
        .ok_or_else(|| MediaError::unsupported(FORMAT, "no video track"))?;
    let timescale = track.timescale.map_or(0, |t| t.0);
    if timescale == 0 || timescale > u64::from(u32::MAX) {
        return Err(bad("video track timescale is 0"));
    }
    let (Some(stts), Some(stsc), Some(stsz), Some(stco)) =
        (&track.stts, &track.stsc, &track.stsz, &track.stco)
    else {
        return Err(MediaError::unsupported(
            FORMAT,
            "no sample tables (fragmented MP4?)",
        ));
    };
    let (n, size_of) = sample_sizes(stts, stsz, "video sample count")?;

    // Offsets: stsc maps runs of chunks to samples per chunk; samples are contiguous in a chunk.
    let mut samples = Vec::with_capacity(n);
    let runs = &stsc.samples;
    for (r, run) in runs.iter().enumerate() {
        let first = u64::from(run.first_chunk);
        let chunks = stco.offsets.len() as u64;
        // Runs must start at chunk 1 or later, in increasing order, within the chunk table.
        let next_first = runs.get(r + 1).map(|next| u64::from(next.first_chunk));
        if first == 0 || first > chunks || next_first.is_some_and(|n| n <= first) {
            return Err(bad("bad sample-to-chunk table"));
        }
        let last = next_first.map_or(chunks, |n| (n - 1).min(chunks));
        for c in first..=last {
            let mut at = stco.offsets[(c - 1) as usize];
            for _ in 0..run.samples_per_chunk {
                if samples.len() == n {
                    break;
                }
                let size = size_of(samples.len());
                samples.push(Sample {
                    offset: at,
                    pts_us: 0,
                    size,
                    duration_us: 0,
                    key: true,
                });
                at = at
                    .checked_add(u64::from(size))
                    .ok_or_else(|| bad("sample offset overflows"))?;
            }
        }
    }
    if samples.len() != n {
        return Err(bad("chunk tables cover fewer samples than stsz"));
    }

    // Times: decode times from stts, composition offsets from ctts, minus the edit's start.
    let us =
        |t: i128| u64::try_from(t.max(0) * 1_000_000 / i128::from(timescale)).unwrap_or(u64::MAX);
    let shift = i128::from(track.media_time.map_or(0, |t| t.0));
    let mut offsets = track
        .ctts
        .iter()
        .flat_map(|c| c.samples.iter())
        .flat_map(|o| {
            let v = match o.time_offset {
                TimeOffsetVersion::Version0(v) => i128::from(v),
                TimeOffsetVersion::Version1(v) => i128::from(v),
            };
            std::iter::repeat_n(v, o.sample_count as usize)
        });
    let mut dts = 0i128;
    let mut i = 0;
    let mut delta_counts: Vec<(u32, u64)> = Vec::new();
    for run in &stts.samples {
        for _ in 0..run.sample_count {
            let cto = offsets.next().unwrap_or(0);
            let next = dts + i128::from(run.sample_delta);
            samples[i].pts_us = us(dts + cto - shift);
            samples[i].duration_us = span_us(us(dts), us(next));
            dts = next;
            i += 1;
        }
        match delta_counts
            .iter_mut()
            .find(|(d, _)| *d == run.sample_delta)
        {
            Some((_, c)) => *c += u64::from(run.sample_count),
            None => delta_counts.push((run.sample_delta, u64::from(run.sample_count))),
        }
    }
    if let Some(stss) = &track.stss {
        samples.iter_mut().for_each(|s| s.key = false);
        for &k in stss.samples.iter() {
            if let Some(s) = (k as usize).checked_sub(1).and_then(|k| samples.get_mut(k)) {
                s.key = true;
            }
        }
    }

    samples.retain(|s| s.size > 0);
    samples.sort_by_key(|s| s.offset);
    let mut end = 0;
    for s in &samples {
        if s.offset < end || s.end() > len {
            return Err(bad("video samples overlap or lie outside the file"));
        }
        end = s.end();
    }

    // The most common sample duration gives the frame rate.
    let delta = delta_counts
        .iter()
        .filter(|(d, _)| *d > 0)
        .max_by_key(|(_, c)| *c)
        .map_or(1, |(d, _)| *d);
    let g = gcd(timescale, u64::from(delta));
    let params = VideoParams {
        format: VisualFormat::Mp4,
        width: u32::from(entry.width),
        height: u32::from(entry.height),
        fps_num: (timescale / g) as u32,
        fps_den: (u64::from(delta) / g) as u32,
    };
    let duration_us = match track.duration {
        Some(d) => us(i128::from(d.0)),
        None => us(dts),
    };
    let warning = (entry.codec_type != mp4parse::CodecType::H264)
        .then(|| format!("video codec is {:?}, not H.264", entry.codec_type));
    Ok((params, duration_us, samples, warning))
}

/// Walks the top-level boxes: returns the first `moov` box's offset and size.
pub(crate) fn find_moov<R: Read + Seek>(
    source: &mut R,
    len: u64,
) -> Result<(u64, u64), MediaError> {
    let bad = |r: String| MediaError::corrupt(FORMAT, r);
    let mut pos = 0u64;
    let mut moov = None;
    for _ in 0..MAX_BOXES {
        if pos == len {
            return moov.ok_or_else(|| bad("no moov box".into()));
        }
        if pos + 8 > len {
            return Err(MediaError::Truncated {
                format: FORMAT,
                expected: pos + 8,
                actual: len,
            });
        }
        let h = read_at(source, pos, 8)?;
        let kind = [h[4], h[5], h[6], h[7]];
        let (size, header) = match u32::from_be_bytes([h[0], h[1], h[2], h[3]]) {
            0 => (len - pos, 8),
            1 if pos + 16 <= len => {
                let l = read_at(source, pos + 8, 8)?;
                (
                    u64::from_be_bytes([l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7]]),
                    16,
                )
            }
            1 => {
                return Err(MediaError::Truncated {
                    format: FORMAT,
                    expected: pos + 16,
                    actual: len,
                });
            }
            s => (u64::from(s), 8),
        };
        if size < header {
            return Err(bad(format!("box of {size} bytes at offset {pos}")));
        }
        let end = pos.checked_add(size).filter(|&e| e <= len);
        let Some(end) = end else {
            return Err(MediaError::Truncated {
                format: FORMAT,
                expected: pos.saturating_add(size),
                actual: len,
            });
        };
        match &kind {
            b"moov" if moov.is_none() => moov = Some((pos, size)),
            b"moof" => return Err(MediaError::unsupported(FORMAT, "fragmented MP4")),
            _ => {}
        }
        pos = end;
    }
    Err(bad(format!("more than {MAX_BOXES} top-level boxes")))
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a.max(1) } else { gcd(b, a % b) }
}

/// The number of samples a track's `stts` and `stsz` agree on (at most `MAX_MP4_SAMPLES`),
/// and each sample's size; shared by the packetizer and the fragmenter.
pub(crate) fn sample_sizes<'a>(
    stts: &mp4parse::TimeToSampleBox,
    stsz: &'a mp4parse::SampleSizeBox,
    what: &'static str,
) -> Result<(usize, impl Fn(usize) -> u32 + 'a), MediaError> {
    let timed: u64 = stts.samples.iter().map(|s| u64::from(s.sample_count)).sum();
    let count = if stsz.sample_size == 0 {
        stsz.sample_sizes.len() as u64
    } else {
        timed
    };
    if count > MAX_MP4_SAMPLES {
        return Err(MediaError::TooLarge {
            what,
            size: count,
            limit: MAX_MP4_SAMPLES,
        });
    }
    if count != timed {
        return Err(MediaError::corrupt(
            FORMAT,
            "stts and stsz disagree on the sample count".to_owned(),
        ));
    }
    let size_of = move |i: usize| {
        if stsz.sample_size == 0 {
            stsz.sample_sizes[i]
        } else {
            stsz.sample_size
        }
    };
    Ok((count as usize, size_of))
}
