//! MJPEG (concatenated JPEG frames): a streaming scanner finds each frame's extent.
//!
//! Inside a frame the scanner skips marker segments by their lengths until `SOS` (so an `FF D9`
//! inside an APP1 thumbnail is never taken for the end), then scans the entropy-coded data for
//! a marker, ignoring `FF 00` stuffing, `RSTn` and fill bytes; another marker there (`DHT`,
//! `SOS` of a progressive scan) goes back to segment skipping, and `EOI` ends the frame. Bytes
//! between frames travel as `INIT`. A broken structure does not stop the stream: the scanner
//! then looks for the next `FF D9` to end the frame, and a frame cut short by the end of the
//! file is served as the last unit.

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom};

use super::packetizer::{End, Kind, Layout, Probed, Segment};
use super::{Config, MAX_FRAME_BYTES, MediaError, frame_pts_us, span_us};
use chunkcast_protocol::media::{Codec, VideoParams, VisualFormat};

const FORMAT: &str = "mjpeg";
/// Files up to this size have their frames counted at probe time, so that listings and
/// `OPENED` carry a duration (MJPEG has no header that says it). One pass over 16 MiB costs a
/// few milliseconds; a larger file would delay its first chunk, so its duration stays unknown.
const COUNT_FRAMES_UP_TO: u64 = 16 << 20;

/// The scanner's position in the JPEG grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between frames, looking for `FF D8`.
    Seek,
    /// Between frames, after an `FF`.
    SeekFf,
    /// In a frame's header, expecting the `FF` of a marker.
    Marker,
    /// After a marker's `FF`.
    MarkerFf,
    /// The high byte of a segment length; `sos` = the segment is a start of scan.
    LenHi {
        sos: bool,
    },
    LenLo {
        sos: bool,
        hi: u8,
    },
    /// Inside a segment's body.
    Skip {
        left: u32,
        sos: bool,
    },
    /// In entropy-coded data.
    Entropy,
    EntropyFf,
    /// The structure broke: looking for `FF D9` to end the frame.
    Lost,
    LostFf,
}

/// What one byte did to the frame structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    None,
    /// A frame starts at the `FF` before this byte.
    Start,
    /// The frame ends after this byte.
    End,
}

/// The JPEG grammar as a byte-at-a-time state machine.
#[derive(Debug, Clone, Copy)]
struct Scanner {
    state: State,
}

impl Scanner {
    fn new() -> Self {
        Self { state: State::Seek }
    }

    /// Scans `data`, returning the index of the first byte that caused an event and the event
    /// (the rest of `data` is unscanned), or `None` when `data` held no event.
    fn scan(&mut self, data: &[u8]) -> Option<(usize, Event)> {
        let mut i = 0;
        while i < data.len() {
            // Fast paths: runs of bytes that cannot change anything.
            match self.state {
                State::Seek | State::Entropy | State::Lost => {
                    match data[i..].iter().position(|&b| b == 0xFF) {
                        Some(k) => i += k,
                        None => return None,
                    }
                }
                State::Skip { left, sos } if left > 0 => {
                    let k = (left as usize).min(data.len() - i);
                    i += k;
                    let left = left - k as u32;
                    self.state = if left == 0 {
                        Self::after_segment(sos)
                    } else {
                        State::Skip { left, sos }
                    };
                    continue;
                }
                _ => {}
            }
            let ev = self.step(data[i]);
            if ev != Event::None {
                return Some((i, ev));
            }
            i += 1;
        }
        None
    }

    fn after_segment(sos: bool) -> State {
        if sos { State::Entropy } else { State::Marker }
    }

    fn step(&mut self, b: u8) -> Event {
        use State::*;
        let (next, ev) = match self.state {
            Seek => (if b == 0xFF { SeekFf } else { Seek }, Event::None),
            SeekFf => match b {
                0xD8 => (Marker, Event::Start),
                0xFF => (SeekFf, Event::None),
                _ => (Seek, Event::None),
            },
            Marker => (if b == 0xFF { MarkerFf } else { Lost }, Event::None),
            MarkerFf => match b {
                0xFF => (MarkerFf, Event::None),
                0xD9 => (Seek, Event::End),
                0xD0..=0xD7 | 0x01 => (Marker, Event::None),
                0x00 | 0xD8 => (Lost, Event::None),
                m => (LenHi { sos: m == 0xDA }, Event::None),
            },
            LenHi { sos } => (LenLo { sos, hi: b }, Event::None),
            LenLo { sos, hi } => {
                let len = u32::from(u16::from_be_bytes([hi, b]));
                match len {
                    0 | 1 => (Lost, Event::None),
                    2 => (Self::after_segment(sos), Event::None),
                    _ => (Skip { left: len - 2, sos }, Event::None),
                }
            }
            Skip { left, sos } if left > 1 => (
                Skip {
                    left: left - 1,
                    sos,
                },
                Event::None,
            ),
            Skip { sos, .. } => (Self::after_segment(sos), Event::None),
            Entropy => (if b == 0xFF { EntropyFf } else { Entropy }, Event::None),
            EntropyFf => match b {
                0x00 | 0xD0..=0xD7 => (Entropy, Event::None),
                0xFF => (EntropyFf, Event::None),
                0xD9 => (Seek, Event::End),
                0x01 | 0xD8 => (Lost, Event::None),
                m => (LenHi { sos: m == 0xDA }, Event::None),
            },
            Lost => (if b == 0xFF { LostFf } else { Lost }, Event::None),
            LostFf => match b {
                0xD9 => (Seek, Event::End),
                0xFF => (LostFf, Event::None),
                _ => (Lost, Event::None),
            },
        };
        self.state = next;
        ev
    }

    fn in_frame(&self) -> bool {
        !matches!(self.state, State::Seek | State::SeekFf)
    }
}

/// The MJPEG layout: segments found so far, plus the one still open.
#[derive(Debug)]
pub(crate) struct MjpegLayout {
    scanner: Scanner,
    /// Closed segments not yet passed by the cutter.
    done: VecDeque<Segment>,
    /// Start of the open segment (a gap or a frame, per `scanner.in_frame()`).
    open_start: u64,
    /// Bytes observed so far.
    scanned: u64,
    /// Frames closed so far (the open frame's index).
    frames: u64,
    fps: (u32, u32),
    eof: bool,
}

impl MjpegLayout {
    fn new(fps: (u32, u32)) -> Self {
        Self {
            scanner: Scanner::new(),
            done: VecDeque::new(),
            open_start: 0,
            scanned: 0,
            frames: 0,
            fps,
            eof: false,
        }
    }

    fn frame_kind(&self) -> Kind {
        let pts_us = frame_pts_us(self.frames, self.fps.0, self.fps.1);
        let next = frame_pts_us(self.frames + 1, self.fps.0, self.fps.1);
        Kind::Media {
            key: true,
            pts_us,
            duration_us: span_us(pts_us, next),
        }
    }

    /// Closes the open segment at `end` (if non-empty).
    fn close(&mut self, end: u64, frame: bool) {
        if end > self.open_start {
            let kind = if frame { self.frame_kind() } else { Kind::Init };
            self.done
                .push_back(Segment::new(self.open_start, end, kind));
            if frame {
                self.frames += 1;
            }
        }
        self.open_start = end;
    }

    pub(crate) fn observe(&mut self, offset: u64, data: &[u8]) {
        let mut rest = data;
        let mut at = offset;
        while let Some((i, ev)) = self.scanner.scan(rest) {
            let pos = at + i as u64;
            match ev {
                // The frame starts at the FF before this byte, which may lie in an earlier
                // buffer; the gap before it closes there.
                Event::Start => self.close(pos - 1, false),
                Event::End => self.close(pos + 1, true),
                Event::None => {}
            }
            rest = &rest[i + 1..];
            at = pos + 1;
        }
        self.scanned = offset + data.len() as u64;
    }

    pub(crate) fn end_of_input(&mut self, len: u64) {
        let frame = self.scanner.in_frame();
        self.close(len, frame);
        self.eof = true;
    }

    pub(crate) fn segment_at(&mut self, pos: u64) -> Option<Segment> {
        while self
            .done
            .front()
            .is_some_and(|s| matches!(s.end, End::At(e) if e <= pos))
        {
            self.done.pop_front();
        }
        if let Some(s) = self.done.front() {
            return Some(*s);
        }
        if self.eof {
            return None;
        }
        // The open segment: a frame ends after the last scanned byte at the earliest; a gap
        // ends where an `FF D8` starts, so up to one byte before the last scanned one.
        let (kind, after) = if self.scanner.in_frame() {
            (self.frame_kind(), self.scanned)
        } else {
            let back = if self.scanner.state == State::SeekFf {
                2
            } else {
                1
            };
            (Kind::Init, self.scanned.saturating_sub(back))
        };
        Some(Segment {
            start: self.open_start,
            end: End::After(after),
            kind,
        })
    }
}

/// The end offset of the first JPEG in `source` (after its `FF D9`), or `None` if it does
/// not end within [`MAX_FRAME_BYTES`] or the file.
pub(crate) fn first_frame_end<R: Read + Seek>(
    source: &mut R,
    len: u64,
) -> Result<Option<u64>, MediaError> {
    source.seek(SeekFrom::Start(0))?;
    let mut scanner = Scanner::new();
    let mut buf = vec![0; 64 * 1024];
    let mut at = 0u64;
    let limit = len.min(MAX_FRAME_BYTES);
    let mut started = false;
    while at < limit {
        let n = (limit - at).min(buf.len() as u64) as usize;
        source.read_exact(&mut buf[..n])?;
        let mut rest = &buf[..n];
        let mut pos = at;
        while let Some((i, ev)) = scanner.scan(rest) {
            match ev {
                Event::Start if pos + i as u64 != 1 => return Ok(None),
                Event::Start => started = true,
                Event::End if started => return Ok(Some(pos + i as u64 + 1)),
                _ => {}
            }
            rest = &rest[i + 1..];
            pos += i as u64 + 1;
        }
        at += n as u64;
    }
    Ok(None)
}

/// The number of whole frames (`FF D8` … `FF D9`) in the first `len` bytes of `source`, by
/// the same scanner the packetizer uses: a frame cut short by the end is not counted.
fn count_frames<R: Read + Seek>(source: &mut R, len: u64) -> Result<u64, MediaError> {
    source.seek(SeekFrom::Start(0))?;
    let mut scanner = Scanner::new();
    let mut buf = vec![0; 64 * 1024];
    let mut at = 0u64;
    let (mut frames, mut open) = (0u64, false);
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        source.read_exact(&mut buf[..n])?;
        let mut rest = &buf[..n];
        while let Some((i, ev)) = scanner.scan(rest) {
            match ev {
                Event::Start => open = true,
                Event::End if open => {
                    frames += 1;
                    open = false;
                }
                _ => {}
            }
            rest = &rest[i + 1..];
        }
        at += n as u64;
    }
    Ok(frames)
}

/// Width and height from the first frame's `SOFn` segment, walking marker segments by their
/// lengths (so a thumbnail in APP1 is skipped).
fn frame_size<R: Read + Seek>(source: &mut R, len: u64) -> Result<(u32, u32), MediaError> {
    let mut pos = 2u64;
    for _ in 0..1000 {
        if pos + 4 > len {
            break;
        }
        source.seek(SeekFrom::Start(pos))?;
        let mut h = [0; 4];
        source.read_exact(&mut h)?;
        if h[0] != 0xFF {
            return Err(MediaError::corrupt(
                FORMAT,
                "bad marker in the first frame's header",
            ));
        }
        if h[1] == 0xFF {
            pos += 1; // Fill byte.
            continue;
        }
        let seg = u64::from(u16::from_be_bytes([h[2], h[3]]));
        let is_sof = matches!(h[1], 0xC0..=0xCF) && !matches!(h[1], 0xC4 | 0xC8 | 0xCC);
        if is_sof && seg >= 7 && pos + 9 <= len {
            let mut s = [0; 5];
            source.read_exact(&mut s)?;
            let height = u32::from(u16::from_be_bytes([s[1], s[2]]));
            let width = u32::from(u16::from_be_bytes([s[3], s[4]]));
            return Ok((width, height));
        }
        if h[1] == 0xDA || h[1] == 0xD9 || seg < 2 {
            break;
        }
        pos += 2 + seg;
    }
    Err(MediaError::corrupt(
        FORMAT,
        "no frame header (SOF) in the first frame",
    ))
}

/// Validates the first frame and reads its size.
pub(crate) fn probe<R: Read + Seek>(
    config: &Config,
    source: &mut R,
    len: u64,
) -> Result<Probed, MediaError> {
    let mut magic = [0; 3];
    if len < 4 {
        return Err(MediaError::Truncated {
            format: FORMAT,
            expected: 4,
            actual: len,
        });
    }
    source.seek(SeekFrom::Start(0))?;
    source.read_exact(&mut magic)?;
    if magic != [0xFF, 0xD8, 0xFF] {
        return Err(MediaError::corrupt(
            FORMAT,
            "does not start with a JPEG frame (FF D8)",
        ));
    }
    let (width, height) = frame_size(source, len)?;
    if first_frame_end(source, len)?.is_none() {
        return Err(MediaError::corrupt(
            FORMAT,
            "the first frame does not end (no FF D9) within the file or 64 MiB",
        ));
    }
    let (fps_num, fps_den) = config.mjpeg_fps;
    let duration_us = if len <= COUNT_FRAMES_UP_TO {
        let frames = count_frames(source, len)?;
        Some(frame_pts_us(frames, fps_num, fps_den))
    } else {
        None
    };
    let params = VideoParams {
        format: VisualFormat::Mjpeg,
        width,
        height,
        fps_num,
        fps_den,
    };
    Ok(Probed {
        codec: Codec::Video(params),
        layout: Layout::Mjpeg(MjpegLayout::new(config.mjpeg_fps)),
        duration_us,
        chunk_count: None,
        warning: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(data: &[u8], piece: usize) -> Vec<Segment> {
        let mut l = MjpegLayout::new((25, 1));
        for (k, c) in data.chunks(piece).enumerate() {
            l.observe((k * piece) as u64, c);
        }
        l.end_of_input(data.len() as u64);
        l.done.into_iter().collect()
    }

    #[test]
    fn thumbnail_eoi_in_app1_and_stuffing_are_not_frame_ends() {
        // SOI, APP1 holding FF D9, SOS, entropy data with FF 00 and RST0, EOI; then junk.
        let mut f = vec![0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xD8, 0xFF, 0xD9];
        f.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x02, 0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0]);
        f.extend_from_slice(&[0x56, 0xFF, 0xFF, 0xD9]);
        let one = f.len() as u64;
        f.extend_from_slice(b"junk");
        f.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xD9]);
        for piece in [1, 2, 3, 7, 100] {
            let segs = frames(&f, piece);
            let ends: Vec<_> = segs.iter().map(|s| (s.start, s.end, s.kind)).collect();
            assert_eq!(ends.len(), 3, "{piece}: {ends:?}");
            assert_eq!(ends[0].1, End::At(one));
            assert_eq!(ends[1].2, Kind::Init);
            assert_eq!(ends[2].1, End::At(f.len() as u64));
        }
    }

    #[test]
    fn whole_frames_are_counted_and_a_cut_one_is_not() {
        let mut f = Vec::new();
        for _ in 0..3 {
            // SOI, APP1 holding a thumbnail's FF D9, SOS, entropy data, EOI.
            f.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x04, 0xFF, 0xD9]);
            f.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x02, 0x12, 0xFF, 0x00, 0xFF, 0xD9]);
        }
        let whole = f.len() as u64;
        f.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02, 0x34]);
        let mut c = std::io::Cursor::new(&f);
        assert_eq!(count_frames(&mut c, whole).unwrap(), 3);
        assert_eq!(count_frames(&mut c, f.len() as u64).unwrap(), 3);
    }
}
