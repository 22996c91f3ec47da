//! YUV4MPEG2: the stream header line is `INIT`; each `FRAME[ params]\n` line with its planes is
//! one key unit (the unit assembler strips the line).
//!
//! Open parses the header (`W`, `H`, `F`, `C`; `I`, `A`, `X` are ignored) and walks every
//! `FRAME` line (one small read each, up to [`MAX_WALK`] frames) to validate the file and count
//! chunks exactly. The stream then re-parses the lines as they pass, since a `FRAME` line may
//! carry parameters and so has no fixed length.

use std::collections::VecDeque;
use std::io::{Read, Seek};

use super::packetizer::{End, Kind, Layout, Probed, Segment};
use super::probe::read_at;
use super::{Config, MAX_FRAME_BYTES, MediaError, bytes::pieces, frame_pts_us, span_us};
use chunkcast_protocol::media::{Codec, VideoParams, VisualFormat};

const FORMAT: &str = "y4m";

/// The longest stream header line.
const MAX_HEADER: u64 = 4096;

/// The longest `FRAME` line.
const MAX_LINE: usize = 256;

/// How many frames open walks; beyond, the chunk count and duration are unknown.
pub(crate) const MAX_WALK: u64 = 1 << 20;

/// The parsed stream header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) len: u64,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) fps: (u32, u32),
    pub(crate) frame_bytes: u64,
}

/// The Y4M layout: the header segment, then frames as their lines go by.
#[derive(Debug)]
pub(crate) struct Y4mLayout {
    header: Header,
    /// Where the next `FRAME` line starts.
    next_line_at: u64,
    /// The part of that line seen so far.
    line: Vec<u8>,
    /// Frames whose segment is known.
    frames: u64,
    segs: VecDeque<Segment>,
}

impl Y4mLayout {
    pub(crate) fn observe(&mut self, offset: u64, data: &[u8]) -> Result<(), MediaError> {
        let end = offset + data.len() as u64;
        loop {
            let at = self.next_line_at + self.line.len() as u64;
            if at >= end {
                return Ok(());
            }
            // Everything before `end` was observed, so `at` lies within `data`.
            let rest = &data[usize::try_from(at - offset)
                .unwrap_or(usize::MAX)
                .min(data.len())..];
            let room = MAX_LINE + 1 - self.line.len();
            let Some(k) = rest.iter().take(room).position(|&b| b == b'\n') else {
                if rest.len() >= room {
                    return Err(MediaError::corrupt(FORMAT, "FRAME line too long"));
                }
                self.line.extend_from_slice(rest);
                return Ok(());
            };
            self.line.extend_from_slice(&rest[..=k]);
            if !is_frame_line(&self.line) {
                return Err(MediaError::corrupt(
                    FORMAT,
                    format!("no FRAME line at offset {}", self.next_line_at),
                ));
            }
            let start = self.next_line_at;
            let unit_end = start + self.line.len() as u64 + self.header.frame_bytes;
            let (num, den) = self.header.fps;
            let pts_us = frame_pts_us(self.frames, num, den);
            let duration_us = span_us(pts_us, frame_pts_us(self.frames + 1, num, den));
            self.segs.push_back(Segment::new(
                start,
                unit_end,
                Kind::Media {
                    key: true,
                    pts_us,
                    duration_us,
                },
            ));
            self.frames += 1;
            self.next_line_at = unit_end;
            self.line.clear();
        }
    }

    pub(crate) fn end_of_input(&mut self, len: u64) -> Result<(), MediaError> {
        match self.next_line_at.cmp(&len) {
            std::cmp::Ordering::Equal if self.line.is_empty() => Ok(()),
            std::cmp::Ordering::Greater => Err(MediaError::Truncated {
                format: FORMAT,
                expected: self.next_line_at,
                actual: len,
            }),
            _ => Err(MediaError::corrupt(
                FORMAT,
                "trailing bytes after the last frame",
            )),
        }
    }

    pub(crate) fn segment_at(&mut self, pos: u64) -> Option<Segment> {
        if pos < self.header.len {
            return Some(Segment::new(0, self.header.len, Kind::Init));
        }
        while self
            .segs
            .front()
            .is_some_and(|s| matches!(s.end, End::At(e) if e <= pos))
        {
            self.segs.pop_front();
        }
        self.segs.front().copied()
    }
}

fn is_frame_line(line: &[u8]) -> bool {
    line.starts_with(b"FRAME") && matches!(line.get(5), Some(b' ' | b'\n'))
}

/// Parses the stream header and walks the frames.
pub(crate) fn probe<R: Read + Seek>(
    config: &Config,
    source: &mut R,
    len: u64,
) -> Result<Probed, MediaError> {
    let head = read_at(source, 0, usize::try_from(len.min(MAX_HEADER)).unwrap_or(0))?;
    let header = parse_header(&head)?;
    let mut pos = header.len;
    let mut frames = 0u64;
    let mut chunks = pieces(header.len, config.chunk_size);
    let mut complete = true;
    while pos < len {
        if frames == MAX_WALK {
            complete = false;
            break;
        }
        let probe = read_at(
            source,
            pos,
            usize::try_from((len - pos).min(MAX_LINE as u64)).unwrap_or(0),
        )?;
        let Some(k) = probe.iter().position(|&b| b == b'\n') else {
            if probe.len() < MAX_LINE {
                return Err(MediaError::Truncated {
                    format: FORMAT,
                    expected: len + 1,
                    actual: len,
                });
            }
            return Err(MediaError::corrupt(FORMAT, "FRAME line too long"));
        };
        if !is_frame_line(&probe[..=k]) {
            return Err(MediaError::corrupt(
                FORMAT,
                format!("no FRAME line at offset {pos}"),
            ));
        }
        let unit = k as u64 + 1 + header.frame_bytes;
        if pos + unit > len {
            return Err(MediaError::Truncated {
                format: FORMAT,
                expected: pos + unit,
                actual: len,
            });
        }
        chunks += pieces(unit, config.chunk_size);
        frames += 1;
        pos += unit;
    }
    let (num, den) = header.fps;
    let params = VideoParams {
        format: VisualFormat::Y4m,
        width: header.width,
        height: header.height,
        fps_num: num,
        fps_den: den,
    };
    Ok(Probed {
        codec: Codec::Video(params),
        layout: Layout::Y4m(Y4mLayout {
            header,
            next_line_at: header.len,
            line: Vec::new(),
            frames: 0,
            segs: VecDeque::new(),
        }),
        duration_us: complete.then(|| frame_pts_us(frames, num, den)),
        chunk_count: complete.then_some(chunks),
        warning: None,
    })
}

/// Parses `YUV4MPEG2 W.. H.. F..:.. C..\n`.
pub(crate) fn parse_header(head: &[u8]) -> Result<Header, MediaError> {
    let bad = |r: &str| MediaError::corrupt(FORMAT, r.to_owned());
    let Some(nl) = head.iter().position(|&b| b == b'\n') else {
        if (head.len() as u64) < MAX_HEADER {
            return Err(MediaError::Truncated {
                format: FORMAT,
                expected: head.len() as u64 + 1,
                actual: head.len() as u64,
            });
        }
        return Err(bad("header line longer than 4 KiB"));
    };
    let line = std::str::from_utf8(&head[..nl]).map_err(|_| bad("header is not ASCII"))?;
    let mut tokens = line.split(' ').filter(|t| !t.is_empty());
    if tokens.next() != Some("YUV4MPEG2") {
        return Err(bad("missing YUV4MPEG2 signature"));
    }
    let (mut width, mut height, mut fps, mut colour) = (None, None, (25, 1), "420jpeg");
    for t in tokens {
        let Some((tag, val)) = t.split_at_checked(1) else {
            continue;
        };
        match tag {
            "W" => width = Some(val.parse::<u32>().map_err(|_| bad("bad width"))?),
            "H" => height = Some(val.parse::<u32>().map_err(|_| bad("bad height"))?),
            "F" => {
                let (n, d) = val.split_once(':').ok_or_else(|| bad("bad frame rate"))?;
                let n = n.parse::<u32>().map_err(|_| bad("bad frame rate"))?;
                let d = d.parse::<u32>().map_err(|_| bad("bad frame rate"))?;
                if n == 0 || d == 0 {
                    return Err(bad("frame rate with a zero term"));
                }
                fps = (n, d);
            }
            "C" => colour = val,
            _ => {}
        }
    }
    let (Some(width), Some(height)) = (width, height) else {
        return Err(bad("missing W or H"));
    };
    if width == 0 || height == 0 {
        return Err(bad("zero width or height"));
    }
    let frame_bytes = frame_bytes(width, height, colour)?;
    Ok(Header {
        len: nl as u64 + 1,
        width,
        height,
        fps,
        frame_bytes,
    })
}

/// Bytes of one frame's planes, refused above [`MAX_FRAME_BYTES`].
fn frame_bytes(width: u32, height: u32, colour: &str) -> Result<u64, MediaError> {
    // u128: 4 planes of (2^32 - 1)^2 samples of 2 bytes fit, u64 would overflow.
    let (w, h) = (u128::from(width), u128::from(height));
    // Colour spaces with more than 8 bits (420p10, mono16, ...) store 2 bytes per sample.
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (base, depth) = match colour.rsplit_once('p') {
        Some((base, depth)) if digits(depth) => (base, depth),
        _ => match colour.strip_prefix("mono") {
            Some(depth) if digits(depth) => ("mono", depth),
            _ => (colour, "8"),
        },
    };
    let sample = match depth.parse::<u32>() {
        Ok(8) => 1,
        Ok(9..=16) => 2,
        _ => {
            return Err(MediaError::unsupported(
                FORMAT,
                format!("colour space {colour}"),
            ));
        }
    };
    let luma = w * h;
    let planes = match base {
        "420jpeg" | "420paldv" | "420mpeg2" | "420" => luma + 2 * w.div_ceil(2) * h.div_ceil(2),
        "422" => luma + 2 * w.div_ceil(2) * h,
        "411" => luma + 2 * w.div_ceil(4) * h,
        "444" => 3 * luma,
        "444alpha" => 4 * luma,
        "mono" => luma,
        _ => {
            return Err(MediaError::unsupported(
                FORMAT,
                format!("colour space {colour}"),
            ));
        }
    };
    let size = planes * sample;
    if size > u128::from(MAX_FRAME_BYTES) {
        let size = u64::try_from(size).unwrap_or(u64::MAX);
        return Err(MediaError::TooLarge {
            what: "Y4M frame",
            size,
            limit: MAX_FRAME_BYTES,
        });
    }
    // At most MAX_FRAME_BYTES, so it fits.
    Ok(size as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes() {
        assert_eq!(frame_bytes(5, 3, "420jpeg").unwrap(), 15 + 2 * 3 * 2);
        assert_eq!(frame_bytes(4, 2, "422").unwrap(), 8 + 2 * 2 * 2);
        assert_eq!(frame_bytes(4, 2, "444").unwrap(), 24);
        assert_eq!(frame_bytes(4, 2, "mono").unwrap(), 8);
        assert_eq!(frame_bytes(4, 2, "420p10").unwrap(), 2 * (8 + 2 * 2));
        assert_eq!(frame_bytes(4, 2, "mono16").unwrap(), 16);
        assert_eq!(frame_bytes(4, 2, "444alpha").unwrap(), 32);
        assert_eq!(frame_bytes(4, 2, "420paldv").unwrap(), 12);
        assert!(matches!(
            frame_bytes(100_000, 100_000, "420jpeg"),
            Err(MediaError::TooLarge { .. })
        ));
        assert!(matches!(
            frame_bytes(4, 4, "xyz"),
            Err(MediaError::Unsupported { .. })
        ));
    }

    #[test]
    fn header_fields() {
        let h =
            parse_header(b"YUV4MPEG2 W160 H120 F30000:1001 Ip A1:1 C420mpeg2 XYSCSS=420MPEG2\n")
                .unwrap();
        assert_eq!(
            (h.width, h.height, h.fps, h.frame_bytes),
            (160, 120, (30000, 1001), 28_800)
        );
    }
}
