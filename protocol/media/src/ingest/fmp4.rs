//! Fragmented MP4 as it streams: the init segment, then fragments.
//!
//! Only the boxes needed to cut and time the stream are read: in `moov`, each track's id,
//! handler, timescale, sample entry (codec, width, height) and `trex` defaults; in each
//! `moof`, the `tfhd`, `tfdt` and `trun` of the reference track (the first video track, else
//! the first audio track). A fragment is `KEY` when its first sample of that track is a sync sample
//! (`sample_is_non_sync_sample` clear in the first-sample flags, else the sample's own flags,
//! else the `tfhd` default, else the `trex` default). Audio only (AAC or Opus in fMP4, for
//! Media Source Extensions' `audio/mp4`): every fragment is `KEY`, and the channel is
//! announced as visual format `fmp4` with width and height 0 (the codec table has no coded
//! audio in MP4; what the stream holds is in its init segment).

use chunkcast_protocol::media::{Codec, VideoParams, VisualFormat};

use super::{Found, Limits, too_large};
use crate::packetize::{MediaError, span_us};

const FORMAT: &str = "fmp4";

/// Most boxes visited inside one box, so that a hostile `moov` of empty boxes is cheap.
const MAX_CHILDREN: usize = 4096;

#[derive(Debug, Clone, Copy, Default)]
struct Track {
    id: u32,
    timescale: u32,
    video: bool,
    /// A sound track (`hdlr` `soun`): the reference track when there is no video.
    audio: bool,
    width: u32,
    height: u32,
    /// `trex` defaults.
    default_duration: u32,
    default_flags: u32,
}

#[derive(Debug, Default)]
pub(super) struct Fmp4 {
    /// Bytes of the current init segment or fragment already walked (whole boxes).
    walked: usize,
    /// The init segment has been emitted.
    init_done: bool,
    /// The reference track, from `moov`.
    track: Option<Track>,
    /// The current fragment's `moof` was read: (key, decode time, duration) in track units.
    moof: Option<(bool, Option<u64>, u64)>,
    /// Decode time of the first fragment (the zero of timestamps), and where the next
    /// fragment starts when one has no `tfdt`.
    first_dts: Option<u64>,
    next_dts: u64,
    /// Frame duration in track units, from `trex` or the first fragment.
    frame: Option<u64>,
}

/// A box header at `pos` of `buf`: (type, header length, total length).
fn box_at(buf: &[u8], pos: usize) -> Result<Option<([u8; 4], usize, u64)>, MediaError> {
    if pos + 8 > buf.len() {
        return Ok(None);
    }
    let size = u32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]);
    let kind = [buf[pos + 4], buf[pos + 5], buf[pos + 6], buf[pos + 7]];
    let (size, header) = match size {
        0 => {
            return Err(MediaError::unsupported(
                FORMAT,
                format!(
                    "a {} box that runs to the end of the file cannot be streamed",
                    name(kind)
                ),
            ));
        }
        1 => {
            if pos + 16 > buf.len() {
                return Ok(None);
            }
            let mut l = [0u8; 8];
            l.copy_from_slice(&buf[pos + 8..pos + 16]);
            (u64::from_be_bytes(l), 16)
        }
        s => (u64::from(s), 8),
    };
    if size < header as u64 {
        return Err(MediaError::corrupt(
            FORMAT,
            format!("a {} box of {size} bytes", name(kind)),
        ));
    }
    Ok(Some((kind, header, size)))
}

fn name(kind: [u8; 4]) -> String {
    String::from_utf8_lossy(&kind).into_owned()
}

/// A child box: its type and body.
type Child<'a> = ([u8; 4], &'a [u8]);

/// The children of a box body.
fn children(body: &[u8]) -> Result<Vec<Child<'_>>, MediaError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        if out.len() >= MAX_CHILDREN {
            return Err(MediaError::corrupt(FORMAT, "too many boxes"));
        }
        let Some((kind, header, size)) = box_at(body, pos)? else {
            return Err(MediaError::corrupt(FORMAT, "a box header cut short"));
        };
        let end = pos as u64 + size;
        if end > body.len() as u64 {
            return Err(MediaError::corrupt(
                FORMAT,
                format!("a {} box larger than its parent", name(kind)),
            ));
        }
        out.push((kind, &body[pos + header..end as usize]));
        pos = end as usize;
    }
    Ok(out)
}

fn child<'a>(body: &'a [u8], kind: &[u8; 4]) -> Result<Option<&'a [u8]>, MediaError> {
    Ok(children(body)?
        .into_iter()
        .find(|(k, _)| k == kind)
        .map(|(_, b)| b))
}

fn u32_at(b: &[u8], i: usize) -> Result<u32, MediaError> {
    b.get(i..i + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| MediaError::corrupt(FORMAT, "a box cut short"))
}

fn u64_at(b: &[u8], i: usize) -> Result<u64, MediaError> {
    Ok((u64::from(u32_at(b, i)?) << 32) | u64::from(u32_at(b, i + 4)?))
}

impl Fmp4 {
    pub(super) fn codec(&self) -> Option<Codec> {
        let t = self.track?;
        let frame = self.frame?;
        let g = gcd(u64::from(t.timescale), frame);
        Some(Codec::Video(VideoParams {
            format: VisualFormat::Fmp4,
            width: t.width,
            height: t.height,
            fps_num: u32::try_from(u64::from(t.timescale) / g).unwrap_or(u32::MAX),
            fps_den: u32::try_from(frame / g).unwrap_or(u32::MAX).max(1),
        }))
    }

    pub(super) fn next(&mut self, buf: &[u8], limits: &Limits) -> Result<Found, MediaError> {
        let limit = if self.init_done {
            limits.max_unit_bytes
        } else {
            limits.max_header_bytes
        };
        let what = if self.init_done {
            "fMP4 fragment"
        } else {
            "fMP4 init segment"
        };
        loop {
            let pos = self.walked;
            let Some((kind, header, size)) = box_at(buf, pos)? else {
                return Ok(Found::More);
            };
            let end = pos as u64 + size;
            if end > limit as u64 {
                return Err(too_large(what, end, limit));
            }
            let end = end as usize;
            if end > buf.len() {
                return Ok(Found::More);
            }
            let body = &buf[pos + header..end];
            self.walked = end;
            match (&kind, self.init_done) {
                (b"moov", false) => {
                    self.moov(body)?;
                    self.init_done = true;
                    self.walked = 0;
                    return Ok(Found::Init(end));
                }
                (b"moof" | b"mdat", false) => {
                    return Err(MediaError::unsupported(
                        FORMAT,
                        format!(
                            "a {} box before the moov: not a fragmented MP4 with its init \
                             segment first (ffmpeg: -movflags frag_keyframe+empty_moov)",
                            name(kind)
                        ),
                    ));
                }
                (b"moov" | b"ftyp", true) => {
                    return Err(MediaError::unsupported(
                        FORMAT,
                        "a second init segment in the stream",
                    ));
                }
                (b"moof", true) => {
                    if self.moof.is_some() {
                        return Err(MediaError::corrupt(FORMAT, "a moof without its mdat"));
                    }
                    self.moof = Some(self.parse_moof(body)?);
                }
                (b"mdat", true) => {
                    let Some((key, dts, duration)) = self.moof.take() else {
                        return Err(MediaError::corrupt(FORMAT, "an mdat without a moof"));
                    };
                    let t = self.track.unwrap_or_default();
                    let dts = dts.unwrap_or(self.next_dts);
                    self.next_dts = dts.saturating_add(duration);
                    let first = *self.first_dts.get_or_insert(dts);
                    let us = |v: u64| {
                        u64::try_from(u128::from(v) * 1_000_000 / u128::from(t.timescale.max(1)))
                            .unwrap_or(u64::MAX)
                    };
                    let pts = us(dts.saturating_sub(first));
                    let end_us = us(dts.saturating_sub(first).saturating_add(duration));
                    self.walked = 0;
                    return Ok(Found::Unit {
                        len: end,
                        key,
                        pts_us: pts,
                        duration_us: span_us(pts, end_us),
                    });
                }
                // ftyp, free, styp, sidx, prft, emsg, uuid...: carried along with what follows.
                _ => {}
            }
        }
    }

    fn moov(&mut self, moov: &[u8]) -> Result<(), MediaError> {
        let mut tracks = Vec::new();
        let mut fragmented = false;
        let mut trex = Vec::new();
        for (kind, body) in children(moov)? {
            match &kind {
                b"trak" => tracks.push(trak(body)?),
                b"mvex" => {
                    fragmented = true;
                    for (k, b) in children(body)? {
                        if &k == b"trex" {
                            // version/flags, track_ID, description index, duration, size, flags
                            trex.push((u32_at(b, 4)?, u32_at(b, 12)?, u32_at(b, 20)?));
                        }
                    }
                }
                _ => {}
            }
        }
        if !fragmented {
            return Err(MediaError::unsupported(
                FORMAT,
                "the moov has no mvex: not a fragmented MP4 (ffmpeg: -movflags \
                 frag_keyframe+empty_moov+default_base_moof)",
            ));
        }
        // Audio only: the sound track times the stream, every fragment a place to start.
        let reference = tracks
            .iter()
            .copied()
            .find(|t| t.video)
            .or_else(|| tracks.iter().copied().find(|t| t.audio));
        let Some(mut t) = reference else {
            return Err(MediaError::unsupported(FORMAT, "no video or audio track"));
        };
        if t.timescale == 0 {
            return Err(MediaError::corrupt(
                FORMAT,
                "the reference track's timescale is 0",
            ));
        }
        if let Some(&(_, d, f)) = trex.iter().find(|(id, _, _)| *id == t.id) {
            t.default_duration = d;
            t.default_flags = f;
        }
        if t.default_duration > 0 {
            self.frame = Some(u64::from(t.default_duration));
        }
        self.track = Some(t);
        Ok(())
    }

    /// The reference track's (key, decode time, duration) in this fragment.
    fn parse_moof(&mut self, moof: &[u8]) -> Result<(bool, Option<u64>, u64), MediaError> {
        let t = self.track.unwrap_or_default();
        for (kind, traf) in children(moof)? {
            if &kind != b"traf" {
                continue;
            }
            let tfhd = child(traf, b"tfhd")?
                .ok_or_else(|| MediaError::corrupt(FORMAT, "a traf without tfhd"))?;
            if u32_at(tfhd, 4)? != t.id {
                continue;
            }
            let flags = u32_at(tfhd, 0)? & 0x00FF_FFFF;
            let mut at = 8;
            if flags & 0x1 != 0 {
                at += 8;
            }
            if flags & 0x2 != 0 {
                at += 4;
            }
            let mut duration = t.default_duration;
            if flags & 0x8 != 0 {
                duration = u32_at(tfhd, at)?;
                at += 4;
            }
            if flags & 0x10 != 0 {
                at += 4;
            }
            let mut sample_flags = t.default_flags;
            if flags & 0x20 != 0 {
                sample_flags = u32_at(tfhd, at)?;
            }
            let dts = match child(traf, b"tfdt")? {
                Some(b) if b.first() == Some(&1) => Some(u64_at(b, 4)?),
                Some(b) => Some(u64::from(u32_at(b, 4)?)),
                None => None,
            };
            let mut total = 0u64;
            let mut first_flags = None;
            for (k, trun) in children(traf)? {
                if &k != b"trun" {
                    continue;
                }
                let f = u32_at(trun, 0)? & 0x00FF_FFFF;
                let count = u64::from(u32_at(trun, 4)?);
                let mut at = 8;
                if f & 0x1 != 0 {
                    at += 4;
                }
                let mut first = None;
                if f & 0x4 != 0 {
                    first = Some(u32_at(trun, at)?);
                    at += 4;
                }
                let per = [0x100, 0x200, 0x400, 0x800]
                    .iter()
                    .filter(|&&b| f & b != 0)
                    .count()
                    * 4;
                if count * per as u64 > (trun.len() - at.min(trun.len())) as u64 {
                    return Err(MediaError::corrupt(
                        FORMAT,
                        format!("a trun of {count} samples larger than its box"),
                    ));
                }
                for i in 0..count as usize {
                    let mut s = at + i * per;
                    let d = if f & 0x100 != 0 {
                        let d = u32_at(trun, s)?;
                        s += 4;
                        d
                    } else {
                        duration
                    };
                    if f & 0x200 != 0 {
                        s += 4;
                    }
                    let sf = if f & 0x400 != 0 {
                        Some(u32_at(trun, s)?)
                    } else {
                        None
                    };
                    if first_flags.is_none() {
                        first_flags =
                            Some(if i == 0 { first.or(sf) } else { sf }.unwrap_or(sample_flags));
                    }
                    if self.frame.is_none() && d > 0 {
                        self.frame = Some(u64::from(d));
                    }
                    total += u64::from(d);
                }
            }
            // Audio frames all decode on their own: an audio-only fragment is always key.
            let key = !t.video || first_flags.is_some_and(|f| f & 0x0001_0000 == 0);
            return Ok((key, dts, total));
        }
        // A fragment without the reference track (audio only, here): not a place to start.
        Ok((false, None, 0))
    }
}

fn trak(body: &[u8]) -> Result<Track, MediaError> {
    let mut t = Track::default();
    if let Some(tkhd) = child(body, b"tkhd")? {
        let v1 = tkhd.first() == Some(&1);
        t.id = u32_at(tkhd, if v1 { 20 } else { 12 })?;
        if tkhd.len() >= 8 {
            t.width = u32_at(tkhd, tkhd.len() - 8)? >> 16;
            t.height = u32_at(tkhd, tkhd.len() - 4)? >> 16;
        }
    }
    let Some(mdia) = child(body, b"mdia")? else {
        return Ok(t);
    };
    if let Some(mdhd) = child(mdia, b"mdhd")? {
        let v1 = mdhd.first() == Some(&1);
        t.timescale = u32_at(mdhd, if v1 { 20 } else { 12 })?;
    }
    if let Some(hdlr) = child(mdia, b"hdlr")? {
        t.video = hdlr.get(8..12) == Some(b"vide");
        t.audio = hdlr.get(8..12) == Some(b"soun");
    }
    let stsd = match child(mdia, b"minf")? {
        Some(minf) => match child(minf, b"stbl")? {
            Some(stbl) => child(stbl, b"stsd")?,
            None => None,
        },
        None => None,
    };
    if let Some(stsd) = stsd
        && t.video
        && stsd.len() >= 8 + 36
    {
        // The first visual sample entry: 8-byte box header, 24 bytes, then width and height.
        let w = u16::from_be_bytes([stsd[8 + 32], stsd[8 + 33]]);
        let h = u16::from_be_bytes([stsd[8 + 34], stsd[8 + 35]]);
        if w > 0 && h > 0 {
            t.width = u32::from(w);
            t.height = u32::from(h);
        }
    }
    Ok(t)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a.max(1) } else { gcd(b, a % b) }
}

/// Each track's (id, timescale) in an init segment (`ftyp` … `moov`).
pub(crate) fn timescales(init: &[u8]) -> Result<Vec<(u32, u32)>, MediaError> {
    let mut out = Vec::new();
    for (kind, body) in children(init)? {
        if &kind != b"moov" {
            continue;
        }
        for (k, b) in children(body)? {
            if &k == b"trak" {
                let t = trak(b)?;
                out.push((t.id, t.timescale));
            }
        }
    }
    Ok(out)
}

/// Rewrites every `tfdt` decode time in a fragment (`styp`? `moof` `mdat`): `f(track, dts)`
/// gives the new one. A version-0 `tfdt` whose new time needs 64 bits is refused.
pub(crate) fn map_tfdt(
    fragment: &mut [u8],
    mut f: impl FnMut(u32, u64) -> u64,
) -> Result<(), MediaError> {
    // Offsets first (the tree is read-only while walked), then the writes.
    let mut at: Vec<(usize, bool, u32, u64)> = Vec::new();
    {
        let base = fragment.as_ptr() as usize;
        for (kind, moof) in children(fragment)? {
            if &kind != b"moof" {
                continue;
            }
            for (k, traf) in children(moof)? {
                if &k != b"traf" {
                    continue;
                }
                let Some(tfhd) = child(traf, b"tfhd")? else {
                    continue;
                };
                let track = u32_at(tfhd, 4)?;
                if let Some(tfdt) = child(traf, b"tfdt")? {
                    let v1 = tfdt.first() == Some(&1);
                    let dts = if v1 {
                        u64_at(tfdt, 4)?
                    } else {
                        u64::from(u32_at(tfdt, 4)?)
                    };
                    at.push((tfdt.as_ptr() as usize - base + 4, v1, track, dts));
                }
            }
        }
    }
    for (offset, v1, track, dts) in at {
        let new = f(track, dts);
        if v1 {
            fragment[offset..offset + 8].copy_from_slice(&new.to_be_bytes());
        } else {
            let new = u32::try_from(new)
                .map_err(|_| MediaError::unsupported(FORMAT, "a 32-bit tfdt overflows"))?;
            fragment[offset..offset + 4].copy_from_slice(&new.to_be_bytes());
        }
    }
    Ok(())
}

/// Whether `rest`, left at the end of the stream, is only whole boxes that carry no media
/// (`mfra`, the seek index ffmpeg writes last; `free`, `skip`, `udta`...): a trailer, not a
/// fragment cut short.
pub(super) fn is_trailer(rest: &[u8]) -> bool {
    children(rest).is_ok_and(|boxes| {
        boxes
            .iter()
            .all(|(k, _)| !matches!(k, b"moof" | b"mdat" | b"moov" | b"ftyp" | b"styp"))
    })
}
