//! Progressive MP4 → fragmented MP4 (CMAF-style): an init segment and one fragment per
//! keyframe group, so that Media Source Extensions, HLS and a live channel can carry a file
//! that was written with one `moov` and one `mdat`.
//!
//! Sans-IO: [`Fragmenter::from_moov`] takes the `moov` box's bytes and the file's length; it
//! expands every kept track's sample tables (at most [`MAX_MP4_SAMPLES`](crate::packetize::MAX_MP4_SAMPLES) per track, like the
//! MP4 packetizer) and plans the fragments. A fragment is [`Fragmenter::fragment_header`]
//! (`moof` + `mdat` header) followed by the file ranges [`Fragmenter::fragment_ranges`] names,
//! in order; [`Fragmenter::read_fragment`] does those reads for a `Read + Seek` source.
//!
//! Kept tracks: the first video track and the first audio track (any codec whose sample entry
//! mp4parse reads; `stsd` travels unchanged, so the codec configuration is the file's). Other
//! tracks (timecode, subtitles, a second audio) are left out of the init segment.
//!
//! The init segment is `ftyp` + the file's `moov` with, in each kept track's `stbl`, `stsd`
//! kept and empty `stts`/`stsc`/`stsz`/`stco` (the tables that described the file's samples
//! are dropped: `stss`, `ctts`, `co64`, `sdtp`, sample groups), `udta` dropped, and an `mvex`
//! with one `trex` per track appended. Edit lists stay, so the presentation timeline is the
//! file's.
//!
//! Fragments: with a video track, a new fragment starts at every sync sample, and also when a
//! group reaches [`MAX_FRAGMENT_SAMPLES`] video samples or [`MAX_FRAGMENT_BYTES`] of video (so
//! a file with one keyframe still streams in bounded pieces; such a fragment is not key).
//! Audio samples go to the fragment whose time span holds their decode time. Audio only:
//! a fragment per [`AUDIO_FRAGMENT_US`] of audio, every one key. Each fragment is `moof`
//! (`mfhd` with sequence numbers from 1, then per track a `traf`: `tfhd` with
//! default-base-is-moof, `tfdt` v1, `trun` v1 with data offset and per-sample duration, size,
//! flags and composition offset) and one `mdat` holding the video samples then the audio
//! samples.

use std::io::{Cursor, Read, Seek, SeekFrom};

use bytes::{BufMut, Bytes, BytesMut};
use mp4parse::{SampleEntry, TimeOffsetVersion, TrackType};

use crate::packetize::{MAX_MOOV_BYTES, MediaError, span_us};
use chunkcast_protocol::media::{VideoParams, VisualFormat};
use chunkcast_protocol::wire::chunk::{Chunk, ChunkFlags, StreamId};

const FORMAT: &str = "mp4";

/// The most video samples in one fragment: a longer keyframe group is split (10 s at 60 fps).
pub const MAX_FRAGMENT_SAMPLES: usize = 600;

/// The most video bytes in one fragment (32 MiB): a larger keyframe group is split, and one
/// sample larger than this is refused.
pub const MAX_FRAGMENT_BYTES: u64 = 32 << 20;

/// The span of one fragment of an audio-only file: 1 s.
pub const AUDIO_FRAGMENT_US: u64 = 1_000_000;

/// How many boxes one container may hold before the file is refused as hostile.
const MAX_CHILDREN: usize = 4096;

/// One sample, in its track's timescale.
#[derive(Debug, Clone, Copy)]
struct Sample {
    offset: u64,
    size: u32,
    dts: u64,
    duration: u32,
    cto: i32,
    key: bool,
}

#[derive(Debug)]
struct Track {
    id: u32,
    timescale: u32,
    samples: Vec<Sample>,
}

/// A fragment: per track (video first), a range of sample indices.
#[derive(Debug, Clone)]
struct Plan {
    runs: Vec<(usize, std::ops::Range<usize>)>,
    key: bool,
}

/// What one fragment holds, for the caller's chunk header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentInfo {
    /// Starts with a sync sample of the video track (always, audio only).
    pub key: bool,
    /// Decode time of the fragment's first sample of the reference track (video, else audio),
    /// from the track's first sample, in microseconds.
    pub start_us: u64,
    /// Until the next fragment's start (the last: until its last sample ends).
    pub duration_us: u32,
    /// Total bytes: header plus samples.
    pub len: u64,
}

/// A progressive MP4's plan as a fragmented MP4. See the [module docs](self).
#[derive(Debug)]
pub struct Fragmenter {
    init: Bytes,
    tracks: Vec<Track>,
    plans: Vec<Plan>,
    video: Option<VideoParams>,
    has_audio: bool,
    duration_us: u64,
}

impl Fragmenter {
    /// Finds and reads the `moov` box of `source` (`len` bytes; at most [`MAX_MOOV_BYTES`])
    /// and plans the fragments. Refuses a file that is already fragmented.
    pub fn open<R: Read + Seek>(source: &mut R, len: u64) -> Result<Self, MediaError> {
        let (at, size) = crate::packetize::find_moov(source, len)?;
        if size > MAX_MOOV_BYTES {
            return Err(MediaError::TooLarge {
                what: "moov box",
                size,
                limit: MAX_MOOV_BYTES,
            });
        }
        let moov = crate::packetize::read_at(source, at, size as usize)?;
        Self::from_moov(&moov, len)
    }

    /// Plans from the bytes of a `moov` box (header included) of a file of `file_len` bytes.
    pub fn from_moov(moov: &[u8], file_len: u64) -> Result<Self, MediaError> {
        let ctx = mp4parse::read_mp4(&mut Cursor::new(moov))
            .map_err(|e| MediaError::corrupt(FORMAT, e.to_string()))?;
        let pick = |kind: TrackType| {
            ctx.tracks.iter().enumerate().find(|(_, t)| {
                t.track_type == kind
                    && t.stsd
                        .as_ref()
                        .and_then(|d| d.descriptions.first())
                        .is_some_and(|e| match e {
                            SampleEntry::Video(_) => kind == TrackType::Video,
                            SampleEntry::Audio(_) => kind == TrackType::Audio,
                            _ => false,
                        })
            })
        };
        let video = pick(TrackType::Video);
        let audio = pick(TrackType::Audio);
        if video.is_none() && audio.is_none() {
            return Err(MediaError::unsupported(FORMAT, "no video or audio track"));
        }
        let mut tracks = Vec::new();
        let mut keep = Vec::new();
        let mut params = None;
        for (index, t) in [video, audio].into_iter().flatten() {
            let track = expand(t, file_len)?;
            if let Some(SampleEntry::Video(v)) =
                t.stsd.as_ref().and_then(|d| d.descriptions.first())
            {
                params = Some(video_params(
                    &track,
                    u32::from(v.width),
                    u32::from(v.height),
                ));
            }
            keep.push(index);
            tracks.push(track);
        }
        let duration_us = tracks
            .iter()
            .map(|t| {
                t.samples.last().map_or(0, |s| {
                    to_us(s.dts + u64::from(s.duration) - first_dts(t), t.timescale)
                })
            })
            .max()
            .unwrap_or(0);
        let init = init_segment(moov, &keep, &tracks)?;
        let plans = plan(&tracks, video.is_some())?;
        Ok(Self {
            init,
            video: params,
            has_audio: audio.is_some(),
            tracks,
            plans,
            duration_us,
        })
    }

    /// The init segment: `ftyp` + `moov` (with `mvex`, without sample tables).
    pub fn init_segment(&self) -> &Bytes {
        &self.init
    }

    /// The video track's size and frame rate (format [`VisualFormat::Fmp4`]), if there is one.
    pub fn video(&self) -> Option<VideoParams> {
        self.video
    }

    /// Whether an audio track is kept.
    pub fn has_audio(&self) -> bool {
        self.has_audio
    }

    /// The longest kept track's duration in microseconds.
    pub fn duration_us(&self) -> u64 {
        self.duration_us
    }

    /// How many fragments there are.
    pub fn len(&self) -> usize {
        self.plans.len()
    }

    /// Whether there are no fragments (no samples at all).
    pub fn is_empty(&self) -> bool {
        self.plans.is_empty()
    }

    /// What fragment `i` holds. Panics if `i >= len()`.
    pub fn fragment_info(&self, i: usize) -> FragmentInfo {
        let plan = &self.plans[i];
        let start = |p: &Plan| {
            let (t, r) = &p.runs[0];
            let track = &self.tracks[*t];
            to_us(
                track.samples[r.start].dts - first_dts(track),
                track.timescale,
            )
        };
        let start_us = start(plan);
        let end_us = match self.plans.get(i + 1) {
            Some(next) => start(next),
            None => self.duration_us,
        };
        let data: u64 = self.ranges(plan).map(|(_, n)| u64::from(n)).sum();
        FragmentInfo {
            key: plan.key,
            start_us,
            duration_us: span_us(start_us, end_us),
            len: self.header(i).len() as u64 + data,
        }
    }

    /// The `moof` box and `mdat` header of fragment `i`. Panics if `i >= len()`.
    pub fn fragment_header(&self, i: usize) -> Bytes {
        self.header(i).freeze()
    }

    /// The file ranges `(offset, length)` whose bytes, in this order, follow
    /// [`fragment_header`](Self::fragment_header) to make fragment `i` (adjacent samples are
    /// merged into one range). Panics if `i >= len()`.
    pub fn fragment_ranges(&self, i: usize) -> Vec<(u64, u32)> {
        let mut out: Vec<(u64, u32)> = Vec::new();
        for (at, n) in self.ranges(&self.plans[i]) {
            match out.last_mut() {
                Some((o, l)) if *o + u64::from(*l) == at && u32::MAX - *l >= n => *l += n,
                _ => out.push((at, n)),
            }
        }
        out
    }

    /// Fragment `i` whole, reading its samples from `source` (the file the `moov` came from).
    /// Panics if `i >= len()`.
    pub fn read_fragment<R: Read + Seek>(
        &self,
        i: usize,
        source: &mut R,
    ) -> Result<Bytes, MediaError> {
        let header = self.header(i);
        let ranges = self.fragment_ranges(i);
        let data: u64 = ranges.iter().map(|(_, n)| u64::from(*n)).sum();
        let mut out = BytesMut::with_capacity(header.len() + data as usize);
        out.extend_from_slice(&header);
        for (at, n) in ranges {
            source.seek(SeekFrom::Start(at))?;
            let start = out.len();
            out.resize(start + n as usize, 0);
            source.read_exact(&mut out[start..])?;
        }
        Ok(out.freeze())
    }

    /// The fragmented stream's length: init segment plus every fragment.
    pub fn total_len(&self) -> u64 {
        self.init.len() as u64
            + (0..self.len())
                .map(|i| self.fragment_info(i).len)
                .sum::<u64>()
    }

    /// How many chunks of at most `chunk_size` bytes a [`Chunker`] cuts the stream into.
    pub fn chunk_count(&self, chunk_size: usize) -> u64 {
        let cs = chunk_size.max(1) as u64;
        let pieces = |n: u64| n.div_ceil(cs).max(1);
        pieces(self.init.len() as u64)
            + (0..self.len())
                .map(|i| pieces(self.fragment_info(i).len))
                .sum::<u64>()
    }

    fn ranges<'a>(&'a self, plan: &'a Plan) -> impl Iterator<Item = (u64, u32)> + 'a {
        plan.runs.iter().flat_map(move |(t, r)| {
            self.tracks[*t].samples[r.clone()]
                .iter()
                .map(|s| (s.offset, s.size))
        })
    }

    fn header(&self, i: usize) -> BytesMut {
        let plan = &self.plans[i];
        let mut moof = BytesMut::new();
        let mut patches = Vec::new();
        boxed(&mut moof, b"moof", |b| {
            full_box(b, b"mfhd", 0, 0, |b| b.put_u32(i as u32 + 1));
            for (t, r) in &plan.runs {
                let track = &self.tracks[*t];
                let samples = &track.samples[r.clone()];
                boxed(b, b"traf", |b| {
                    // default-base-is-moof: data offsets count from this moof's first byte.
                    full_box(b, b"tfhd", 0, 0x02_0000, |b| b.put_u32(track.id));
                    full_box(b, b"tfdt", 1, 0, |b| b.put_u64(samples[0].dts));
                    // data offset, sample duration, size, flags, composition offset.
                    full_box(
                        b,
                        b"trun",
                        1,
                        0x0001 | 0x0100 | 0x0200 | 0x0400 | 0x0800,
                        |b| {
                            b.put_u32(samples.len() as u32);
                            patches.push(b.len());
                            b.put_i32(0);
                            for s in samples {
                                b.put_u32(s.duration);
                                b.put_u32(s.size);
                                // Key: depends on nothing; else depends on others and is non-sync.
                                b.put_u32(if s.key { 0x0200_0000 } else { 0x0101_0000 });
                                b.put_i32(s.cto);
                            }
                        },
                    );
                });
            }
        });
        let mut data_at = moof.len() as u64 + 8;
        for ((t, r), at) in plan.runs.iter().zip(patches) {
            let offset = i32::try_from(data_at).unwrap_or(i32::MAX);
            moof[at..at + 4].copy_from_slice(&offset.to_be_bytes());
            data_at += self.tracks[*t].samples[r.clone()]
                .iter()
                .map(|s| u64::from(s.size))
                .sum::<u64>();
        }
        let mdat_len = data_at - moof.len() as u64;
        // Fragments are bounded well below 4 GiB, so a 32-bit mdat size suffices.
        moof.put_u32(u32::try_from(mdat_len).unwrap_or(u32::MAX));
        moof.put_slice(b"mdat");
        moof
    }
}

fn first_dts(t: &Track) -> u64 {
    t.samples.first().map_or(0, |s| s.dts)
}

fn to_us(t: u64, timescale: u32) -> u64 {
    u64::try_from(u128::from(t) * 1_000_000 / u128::from(timescale.max(1))).unwrap_or(u64::MAX)
}

fn video_params(track: &Track, width: u32, height: u32) -> VideoParams {
    // The most common sample duration gives the frame rate.
    let mut counts: Vec<(u32, u64)> = Vec::new();
    for s in &track.samples {
        if let Some((_, c)) = counts.iter_mut().find(|(d, _)| *d == s.duration) {
            *c += 1;
        } else if counts.len() < 64 {
            counts.push((s.duration, 1));
        }
    }
    let delta = counts
        .iter()
        .filter(|(d, _)| *d > 0)
        .max_by_key(|(_, c)| *c)
        .map_or(1, |(d, _)| *d);
    let g = gcd(u64::from(track.timescale), u64::from(delta));
    VideoParams {
        format: VisualFormat::Fmp4,
        width,
        height,
        fps_num: (u64::from(track.timescale) / g) as u32,
        fps_den: (u64::from(delta) / g) as u32,
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a.max(1) } else { gcd(b, a % b) }
}

/// Every sample of `t` in decode order, checked against the file's length.
fn expand(t: &mp4parse::Track, file_len: u64) -> Result<Track, MediaError> {
    let bad = |r: &str| MediaError::corrupt(FORMAT, r.to_owned());
    let timescale = t.timescale.map_or(0, |t| t.0);
    let timescale = u32::try_from(timescale)
        .ok()
        .filter(|&t| t > 0)
        .ok_or_else(|| bad("track timescale is 0 or too large"))?;
    let id = t.track_id.ok_or_else(|| bad("track without an id"))?;
    let (Some(stts), Some(stsc), Some(stsz), Some(stco)) = (&t.stts, &t.stsc, &t.stsz, &t.stco)
    else {
        return Err(MediaError::unsupported(
            FORMAT,
            "a track without sample tables",
        ));
    };
    let (n, size_of) = crate::packetize::mp4::sample_sizes(stts, stsz, "track sample count")?;
    let mut samples: Vec<Sample> = Vec::with_capacity(n);
    let runs = &stsc.samples;
    let chunks = stco.offsets.len() as u64;
    for (r, run) in runs.iter().enumerate() {
        let first = u64::from(run.first_chunk);
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
                let end = at
                    .checked_add(u64::from(size))
                    .filter(|&e| e <= file_len)
                    .ok_or_else(|| bad("a sample lies outside the file"))?;
                samples.push(Sample {
                    offset: at,
                    size,
                    dts: 0,
                    duration: 0,
                    cto: 0,
                    key: true,
                });
                at = end;
            }
        }
    }
    if samples.len() != n {
        return Err(bad("chunk tables cover fewer samples than stsz"));
    }
    let mut offsets = t.ctts.iter().flat_map(|c| c.samples.iter()).flat_map(|o| {
        let v = match o.time_offset {
            TimeOffsetVersion::Version0(v) => i64::from(v),
            TimeOffsetVersion::Version1(v) => i64::from(v),
        };
        std::iter::repeat_n(v, o.sample_count as usize)
    });
    let mut dts = 0u64;
    let mut i = 0;
    for run in &stts.samples {
        for _ in 0..run.sample_count {
            let cto = offsets.next().unwrap_or(0);
            samples[i].dts = dts;
            samples[i].duration = run.sample_delta;
            samples[i].cto = i32::try_from(cto).map_err(|_| bad("composition offset too large"))?;
            dts = dts
                .checked_add(u64::from(run.sample_delta))
                .ok_or_else(|| bad("decode time overflows"))?;
            i += 1;
        }
    }
    if let Some(stss) = &t.stss {
        samples.iter_mut().for_each(|s| s.key = false);
        for &k in stss.samples.iter() {
            if let Some(s) = (k as usize).checked_sub(1).and_then(|k| samples.get_mut(k)) {
                s.key = true;
            }
        }
    }
    if let Some(s) = samples
        .iter()
        .find(|s| u64::from(s.size) > MAX_FRAGMENT_BYTES)
    {
        return Err(MediaError::TooLarge {
            what: "sample",
            size: u64::from(s.size),
            limit: MAX_FRAGMENT_BYTES,
        });
    }
    Ok(Track {
        id,
        timescale,
        samples,
    })
}

/// Cuts the tracks (video first when `has_video`) into fragments.
fn plan(tracks: &[Track], has_video: bool) -> Result<Vec<Plan>, MediaError> {
    let reference = &tracks[0];
    // Fragment starts in the reference track: sample indices.
    let mut starts = Vec::new();
    if has_video {
        let (mut count, mut bytes) = (0usize, 0u64);
        for (i, s) in reference.samples.iter().enumerate() {
            let full =
                count >= MAX_FRAGMENT_SAMPLES || bytes + u64::from(s.size) > MAX_FRAGMENT_BYTES;
            if i == 0 || (s.key && count > 0) || full {
                starts.push(i);
                (count, bytes) = (0, 0);
            }
            count += 1;
            bytes += u64::from(s.size);
        }
    } else {
        let span = u64::from(reference.timescale) * AUDIO_FRAGMENT_US / 1_000_000;
        let mut next = 0u64;
        let (mut count, mut bytes) = (0usize, 0u64);
        for (i, s) in reference.samples.iter().enumerate() {
            let full =
                count >= 4 * MAX_FRAGMENT_SAMPLES || bytes + u64::from(s.size) > MAX_FRAGMENT_BYTES;
            if i == 0 || s.dts >= next || full {
                starts.push(i);
                next = s.dts + span.max(1);
                (count, bytes) = (0, 0);
            }
            count += 1;
            bytes += u64::from(s.size);
        }
    }
    let mut plans: Vec<Plan> = Vec::with_capacity(starts.len());
    let mut cursor = vec![0usize; tracks.len()];
    for (f, &start) in starts.iter().enumerate() {
        let end = starts
            .get(f + 1)
            .copied()
            .unwrap_or(reference.samples.len());
        let mut runs = vec![(0, start..end)];
        // The other tracks' samples whose decode time is before the next fragment's start.
        let limit = starts.get(f + 1).map(|&s| {
            (
                reference.samples[s].dts - first_dts(reference),
                reference.timescale,
            )
        });
        for (t, track) in tracks.iter().enumerate().skip(1) {
            let from = cursor[t];
            let mut to = from;
            while let Some(s) = track.samples.get(to) {
                let before = limit.is_none_or(|(d, ts)| {
                    u128::from(s.dts - first_dts(track)) * u128::from(ts)
                        < u128::from(d) * u128::from(track.timescale)
                });
                if !before {
                    break;
                }
                to += 1;
            }
            if to > from {
                runs.push((t, from..to));
            }
            cursor[t] = to;
        }
        let key = reference.samples[start].key || !has_video;
        plans.push(Plan { runs, key });
    }
    Ok(plans)
}

/// Writes a box of `kind` whose body `body` writes.
fn boxed(out: &mut BytesMut, kind: &[u8; 4], body: impl FnOnce(&mut BytesMut)) {
    let at = out.len();
    out.put_u32(0);
    out.put_slice(kind);
    body(out);
    let len = u32::try_from(out.len() - at).unwrap_or(u32::MAX);
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Writes a full box (version and flags) of `kind`.
fn full_box(
    out: &mut BytesMut,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut BytesMut),
) {
    boxed(out, kind, |b| {
        b.put_u32((u32::from(version) << 24) | (flags & 0xff_ffff));
        body(b);
    });
}

/// A child box: (type, whole box bytes, header length).
type Child<'a> = ([u8; 4], &'a [u8], usize);

/// The children of a container's body.
fn children(body: &[u8]) -> Result<Vec<Child<'_>>, MediaError> {
    let bad = |r: &str| MediaError::corrupt(FORMAT, r.to_owned());
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < body.len() {
        if out.len() >= MAX_CHILDREN {
            return Err(bad("too many boxes in one container"));
        }
        let h = body
            .get(pos..pos + 8)
            .ok_or_else(|| bad("truncated box header"))?;
        let kind = [h[4], h[5], h[6], h[7]];
        let (size, header) = match u32::from_be_bytes([h[0], h[1], h[2], h[3]]) {
            0 => ((body.len() - pos) as u64, 8),
            1 => {
                let l = body
                    .get(pos + 8..pos + 16)
                    .ok_or_else(|| bad("truncated box header"))?;
                let mut b = [0u8; 8];
                b.copy_from_slice(l);
                (u64::from_be_bytes(b), 16)
            }
            s => (u64::from(s), 8),
        };
        let end = usize::try_from(size)
            .ok()
            .filter(|&s| s >= header)
            .and_then(|s| pos.checked_add(s))
            .filter(|&e| e <= body.len())
            .ok_or_else(|| bad("box size runs past its container"))?;
        out.push((kind, &body[pos..end], header));
        pos = end;
    }
    Ok(out)
}

/// `ftyp` + the rewritten `moov`: only the tracks at `keep` (indices among the `trak` boxes),
/// empty sample tables, an `mvex`.
fn init_segment(moov: &[u8], keep: &[usize], tracks: &[Track]) -> Result<Bytes, MediaError> {
    let top = children(moov)?;
    let Some(&(b"moov", moov, header)) = top.first().map(|(k, b, h)| (k, *b, *h)).as_ref() else {
        return Err(MediaError::corrupt(FORMAT, "not a moov box"));
    };
    let mut out = BytesMut::new();
    boxed(&mut out, b"ftyp", |b| {
        b.put_slice(b"isom");
        b.put_u32(0x200);
        for brand in [b"isom", b"iso5", b"iso6", b"mp41"] {
            b.put_slice(brand);
        }
    });
    let mut trak = 0usize;
    let body = children(&moov[header..])?;
    let mut err = None;
    boxed(&mut out, b"moov", |b| {
        for (kind, bytes, h) in &body {
            match kind {
                b"trak" => {
                    if keep.contains(&trak) {
                        if let Err(e) = rewrite(b, kind, bytes, *h) {
                            err = Some(e);
                        }
                    }
                    trak += 1;
                }
                b"udta" | b"mvex" | b"meta" => {}
                _ => b.put_slice(bytes),
            }
        }
        boxed(b, b"mvex", |b| {
            for t in tracks {
                full_box(b, b"trex", 0, 0, |b| {
                    b.put_u32(t.id);
                    b.put_u32(1);
                    b.put_u32(0);
                    b.put_u32(0);
                    b.put_u32(0);
                });
            }
        });
    });
    match err {
        Some(e) => Err(e),
        None => Ok(out.freeze()),
    }
}

/// Copies `bytes` (a box of `kind` with a `header`-byte header) into `out`, descending into
/// the containers on the way to `stbl` and emptying the sample tables there.
fn rewrite(
    out: &mut BytesMut,
    kind: &[u8; 4],
    bytes: &[u8],
    header: usize,
) -> Result<(), MediaError> {
    match kind {
        b"trak" | b"mdia" | b"minf" => {
            let kids = children(&bytes[header..])?;
            let mut err = Ok(());
            boxed(out, kind, |b| {
                for (k, bytes, h) in &kids {
                    if let Err(e) = rewrite(b, k, bytes, *h) {
                        err = Err(e);
                    }
                }
            });
            err
        }
        b"stbl" => {
            let kids = children(&bytes[header..])?;
            let stsd = kids
                .iter()
                .find(|(k, _, _)| k == b"stsd")
                .ok_or_else(|| MediaError::corrupt(FORMAT, "a track without stsd"))?;
            boxed(out, b"stbl", |b| {
                b.put_slice(stsd.1);
                full_box(b, b"stts", 0, 0, |b| b.put_u32(0));
                full_box(b, b"stsc", 0, 0, |b| b.put_u32(0));
                full_box(b, b"stsz", 0, 0, |b| {
                    b.put_u32(0);
                    b.put_u32(0);
                });
                full_box(b, b"stco", 0, 0, |b| b.put_u32(0));
            });
            Ok(())
        }
        b"udta" | b"meta" => Ok(()),
        _ => {
            out.put_slice(bytes);
            Ok(())
        }
    }
}

/// Cuts a fragmented stream into chunks: the init segment as `INIT` chunks, each fragment one
/// unit (`KEY` when [`FragmentInfo::key`], `END_OF_UNIT` on its last piece, `pts_us` its
/// start), `END_OF_STREAM` on the very last chunk. `offset` counts bytes of the fragmented
/// stream, so the payloads concatenated in `seq` order are the fMP4.
#[derive(Debug)]
pub struct Chunker {
    stream: StreamId,
    chunk_size: usize,
    seq: u64,
    offset: u64,
}

impl Chunker {
    /// A chunker for `stream`, pieces of at most `chunk_size` bytes (at least 1).
    pub fn new(stream: StreamId, chunk_size: usize) -> Self {
        Self {
            stream,
            chunk_size: chunk_size.max(1),
            seq: 0,
            offset: 0,
        }
    }

    /// Cuts the init segment.
    pub fn init(&mut self, init: Bytes, out: &mut Vec<Chunk>) {
        self.cut(init, None, false, out);
    }

    /// Cuts one fragment; `last` marks the stream's last fragment.
    pub fn fragment(&mut self, info: FragmentInfo, bytes: Bytes, last: bool, out: &mut Vec<Chunk>) {
        self.cut(bytes, Some(info), last, out);
    }

    fn cut(
        &mut self,
        mut bytes: Bytes,
        unit: Option<FragmentInfo>,
        last: bool,
        out: &mut Vec<Chunk>,
    ) {
        loop {
            let piece = bytes.split_to(self.chunk_size.min(bytes.len()));
            let end = bytes.is_empty();
            let (mut flags, pts, dur) = match unit {
                None => (ChunkFlags::INIT, 0, 0),
                Some(u) => {
                    let mut f = if u.key {
                        ChunkFlags::KEY
                    } else {
                        ChunkFlags::empty()
                    };
                    if end {
                        f = f | ChunkFlags::END_OF_UNIT;
                    }
                    (f, u.start_us, u.duration_us)
                }
            };
            if end && last {
                flags = flags | ChunkFlags::END_OF_STREAM;
            }
            let n = piece.len() as u64;
            out.push(Chunk::new(
                self.stream,
                self.seq,
                self.offset,
                pts,
                dur,
                flags,
                piece,
            ));
            self.seq += 1;
            self.offset += n;
            if end {
                return;
            }
        }
    }
}
