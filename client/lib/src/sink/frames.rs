//! `frames:DIR`: each played video frame decoded and written as `DIR/frame-NNNNNN.png`, named
//! by its index in the stream (so a frame's file name is its number in the sample clips).
//!
//! MJPEG frames and images are decoded with the `image` crate; Y4M frames are converted from
//! their planes (4:2:0, 4:2:2, 4:1:1, 4:4:4 or mono, 8-bit) to RGB as limited-range BT.601,
//! which is what players assume for Y4M. An image stream is one unit, written when complete.
//! A freeze writes nothing: the last file stays the frame on screen.
//!
//! Decoding and PNG encoding take milliseconds per frame, too long for the playout task, so
//! they run on a thread of their own behind a queue of [`QUEUE`] frames. When the queue is
//! full (the disk or CPU cannot keep up with the frame rate), playout waits for it.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use bytes::Bytes;
use chunkcast_media::playout::{Concealment, Unit};
use chunkcast_protocol::{Chunk, ChunkFlags, Codec, VisualFormat};
use image::{DynamicImage, ImageFormat, RgbImage};

use super::{Sink, ensure_dir};
use crate::error::ClientError;

/// Frames waiting for the encoder thread: about a second of 25 fps video, enough to ride out a
/// slow write without holding many decoded frames.
pub const QUEUE: usize = 32;

/// The longest Y4M stream header line (as the packetizer accepts).
const MAX_Y4M_HEADER: usize = 4096;

/// How a Y4M frame's planes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Planes {
    width: usize,
    height: usize,
    /// Chroma subsampling (horizontal, vertical); `None` for mono.
    chroma: Option<(usize, usize)>,
    /// Bytes after the colour planes per frame (the 4:4:4 alpha plane).
    extra: usize,
}

#[derive(Debug, Clone, Copy)]
enum Decode {
    /// Any format the `image` crate reads (JPEG frames, still images).
    Image,
    Y4m(Planes),
}

struct Job {
    index: u64,
    data: Bytes,
    decode: Decode,
}

/// Writes played frames as PNG files.
pub struct Frames {
    tx: Option<SyncSender<Job>>,
    worker: Option<JoinHandle<Result<(), ClientError>>>,
    decode: Decode,
    /// Y4M: the header line gathered from the `INIT` chunks until it is complete.
    header: Option<Vec<u8>>,
    dir: PathBuf,
}

impl Frames {
    /// Creates `dir` if needed and starts the encoder thread for a stream of `codec`.
    pub fn create(dir: &Path, codec: &Codec) -> Result<Self, ClientError> {
        let (decode, header) = match codec {
            Codec::Video(v) if v.format == VisualFormat::Mjpeg => (Decode::Image, None),
            Codec::Video(v) if v.format == VisualFormat::Y4m => {
                let planes = Planes {
                    width: v.width as usize,
                    height: v.height as usize,
                    chroma: Some((2, 2)),
                    extra: 0,
                };
                (Decode::Y4m(planes), Some(Vec::new()))
            }
            Codec::Image(_) => (Decode::Image, None),
            other => {
                return Err(ClientError::Usage(format!(
                    "the frames sink decodes MJPEG, Y4M and images, and this stream is {}; try --sink file:PATH",
                    other.summary()
                )));
            }
        };
        ensure_dir(dir)?;
        let (tx, rx) = sync_channel(QUEUE);
        let out = dir.to_owned();
        let worker = std::thread::Builder::new()
            .name("chunkcast-frames".into())
            .spawn(move || encode_all(&rx, &out))
            .map_err(|e| ClientError::file(dir, e))?;
        Ok(Self {
            tx: Some(tx),
            worker: Some(worker),
            decode,
            header,
            dir: dir.to_owned(),
        })
    }

    /// The encoder's error once it has stopped (it stops only on an error).
    fn worker_error(&mut self) -> ClientError {
        self.tx = None;
        match self.worker.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            _ => ClientError::Sink {
                sink: "frames".into(),
                reason: "the encoder thread stopped".into(),
            },
        }
    }
}

impl Sink for Frames {
    fn arrived(&mut self, chunk: &Chunk) -> Result<(), ClientError> {
        let Some(header) = &mut self.header else {
            return Ok(());
        };
        if !chunk.has(ChunkFlags::INIT) {
            // Media before a complete header: keep the layout from the announced codec.
            self.header = None;
            return Ok(());
        }
        header.extend_from_slice(&chunk.payload);
        let Some(nl) = header.iter().position(|&b| b == b'\n') else {
            if header.len() > MAX_Y4M_HEADER {
                self.header = None;
            }
            return Ok(());
        };
        let line = String::from_utf8_lossy(&header[..nl]).into_owned();
        self.header = None;
        if let Decode::Y4m(planes) = &mut self.decode {
            *planes = parse_y4m(&line, *planes)?;
        }
        Ok(())
    }

    fn play(&mut self, unit: &Unit<Bytes>) -> Result<(), ClientError> {
        let job = Job {
            index: unit.seq,
            data: unit.payload.clone(),
            decode: self.decode,
        };
        let Some(tx) = &self.tx else {
            return Err(self.worker_error());
        };
        if tx.send(job).is_err() {
            return Err(self.worker_error());
        }
        Ok(())
    }

    fn conceal(&mut self, _: u64, _: u32, _: Concealment) -> Result<(), ClientError> {
        Ok(())
    }

    fn note(&self) -> Option<String> {
        // `join`, not a `/` of our own: `frames:out/` must not print `out//`.
        let pattern = self.dir.join("frame-NNNNNN.png");
        Some(format!("frames: writing {}", pattern.display()))
    }

    fn finish(mut self: Box<Self>) -> Result<(), ClientError> {
        self.tx = None;
        match self.worker.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err(ClientError::Sink {
                sink: "frames".into(),
                reason: "the encoder thread panicked".into(),
            }),
        }
    }
}

/// The file a frame is written to.
pub fn frame_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("frame-{index:06}.png"))
}

fn encode_all(rx: &Receiver<Job>, dir: &Path) -> Result<(), ClientError> {
    while let Ok(job) = rx.recv() {
        let fail = |reason: String| ClientError::Sink {
            sink: "frames".into(),
            reason: format!("frame {}: {reason}", job.index),
        };
        let image = match job.decode {
            Decode::Image => image::load_from_memory(&job.data).map_err(|e| fail(e.to_string()))?,
            Decode::Y4m(p) => DynamicImage::ImageRgb8(y4m_to_rgb(&p, &job.data).map_err(fail)?),
        };
        let path = frame_path(dir, job.index);
        image
            .save_with_format(&path, ImageFormat::Png)
            .map_err(|e| match e {
                image::ImageError::IoError(io) => ClientError::file(&path, io),
                other => fail(other.to_string()),
            })?;
    }
    Ok(())
}

/// Reads the layout from a `YUV4MPEG2 W.. H.. C..` line; `planes` gives the defaults.
fn parse_y4m(line: &str, mut planes: Planes) -> Result<Planes, ClientError> {
    let mut colour = "420jpeg";
    for t in line.split(' ').skip(1) {
        let Some((tag, val)) = t.split_at_checked(1) else {
            continue;
        };
        match tag {
            "W" => planes.width = val.parse().unwrap_or(planes.width),
            "H" => planes.height = val.parse().unwrap_or(planes.height),
            "C" => colour = val,
            _ => {}
        }
    }
    (planes.chroma, planes.extra) = match colour {
        "420jpeg" | "420paldv" | "420mpeg2" | "420" => (Some((2, 2)), 0),
        "422" => (Some((2, 1)), 0),
        "411" => (Some((4, 1)), 0),
        "444" => (Some((1, 1)), 0),
        "444alpha" => (Some((1, 1)), planes.width * planes.height),
        "mono" => (None, 0),
        other => {
            return Err(ClientError::Sink {
                sink: "frames".into(),
                reason: format!("y4m colour space C{other} is not supported (8-bit only)"),
            });
        }
    };
    Ok(planes)
}

/// Converts one frame's planes to RGB: limited-range BT.601, each chroma sample shared by its
/// block of luma samples.
fn y4m_to_rgb(p: &Planes, data: &[u8]) -> Result<RgbImage, String> {
    let (w, h) = (p.width, p.height);
    let luma = w.checked_mul(h).ok_or("frame too large")?;
    let (cw, ch) = p
        .chroma
        .map_or((0, 0), |(sx, sy)| (w.div_ceil(sx), h.div_ceil(sy)));
    let expected = luma + 2 * cw * ch + p.extra;
    if data.len() != expected {
        return Err(format!(
            "{} bytes of planes, expected {expected}",
            data.len()
        ));
    }
    let (y, rest) = data.split_at(luma);
    let (u, v) = rest.split_at(cw * ch);
    let mut rgb = Vec::with_capacity(luma * 3);
    for row in 0..h {
        for col in 0..w {
            let c = 298 * (i32::from(y[row * w + col]) - 16);
            let (d, e) = match p.chroma {
                Some((sx, sy)) => {
                    let i = row / sy * cw + col / sx;
                    (i32::from(u[i]) - 128, i32::from(v[i]) - 128)
                }
                None => (0, 0),
            };
            let clamp = |x: i32| ((x + 128) >> 8).clamp(0, 255) as u8;
            rgb.extend([
                clamp(c + 409 * e),
                clamp(c - 100 * d - 208 * e),
                clamp(c + 516 * d),
            ]);
        }
    }
    RgbImage::from_raw(w as u32, h as u32, rgb).ok_or_else(|| "frame too large".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn y4m_header_sets_the_layout() {
        let base = Planes {
            width: 1,
            height: 1,
            chroma: Some((2, 2)),
            extra: 0,
        };
        let p = parse_y4m("YUV4MPEG2 W320 H240 F25:1 Ip A1:1 C420jpeg", base).unwrap();
        assert_eq!((p.width, p.height, p.chroma), (320, 240, Some((2, 2))));
        let p = parse_y4m("YUV4MPEG2 W4 H2 Cmono", base).unwrap();
        assert_eq!(p.chroma, None);
        assert!(parse_y4m("YUV4MPEG2 W4 H2 C420p10", base).is_err());
    }

    #[test]
    fn limited_range_grey_and_colour() {
        // 2x2 4:2:0: luma 16 (black), 235 (white), 126 and 126; one neutral chroma sample.
        let p = Planes {
            width: 2,
            height: 2,
            chroma: Some((2, 2)),
            extra: 0,
        };
        let img = y4m_to_rgb(&p, &[16, 235, 126, 126, 128, 128]).unwrap();
        assert_eq!(img.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(1, 0).0, [255, 255, 255]);
        assert_eq!(img.get_pixel(0, 1).0, [128, 128, 128]);
        // Pure red in BT.601 limited range: Y 81, U 90, V 240.
        let red = y4m_to_rgb(&p, &[81, 81, 81, 81, 90, 240]).unwrap();
        let [r, g, b] = red.get_pixel(0, 0).0;
        assert!(r > 250 && g < 5 && b < 5, "{r} {g} {b}");
        assert!(y4m_to_rgb(&p, &[0; 5]).is_err());
    }
}
