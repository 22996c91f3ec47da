//! Still images (PNG, JPEG, GIF, BMP, WebP, TIFF): known from their headers at open, then
//! served as one unit cut at the chunk size.
//!
//! Nothing is decoded: the `image` crate's decoder is built (which reads the headers only:
//! PNG up to the first `IDAT`, with the CRCs of the chunks before it, the JPEG frame header,
//! the GIF screen descriptor, ...) for the size and colour type, so any image the container
//! allows (paletted or CMYK TIFF, CMYK or progressive JPEG, 16-bit PNG, animated GIF, WebP or
//! APNG) is served as an image without the server paying for a decode. A TIFF whose colour
//! layout the decoder does not handle is sized from its first IFD by our own reader. Cheap
//! structural checks catch the common damage that headers alone do not show: a JPEG must end
//! (`FF D9`, within [`MAX_FRAME_BYTES`](super::MAX_FRAME_BYTES)), a PNG's chunks must run to
//! `IEND` within the file, a GIF must end with its trailer, a WebP or BMP must be as long as
//! its header says. The decoder's memory is still bounded by [`MAX_IMAGE_DIMENSION`] per side
//! and [`MAX_IMAGE_ALLOC`] (a header announcing a 100 000-pixel-wide image is refused).

use std::io::{BufReader, Read, Seek, SeekFrom};

use ::image::error::{ImageError, LimitErrorKind};
use ::image::{ColorType, ImageDecoder, ImageFormat, ImageReader, Limits};

use super::packetizer::{Kind, Layout, Probed};
use super::probe::read_at;
use super::{Config, MAX_IMAGE_ALLOC, MAX_IMAGE_DIMENSION, MediaError, bytes::pieces, mjpeg};
use chunkcast_protocol::media::{Codec, ImageParams, VisualFormat};

/// Reads the image's headers for its size and colour type, and checks its structure.
pub(crate) fn probe<R: Read + Seek>(
    config: &Config,
    source: &mut R,
    len: u64,
    format: VisualFormat,
) -> Result<Probed, MediaError> {
    let name = format.name();
    if len == 0 {
        return Err(MediaError::corrupt(name, "empty file"));
    }
    if format == VisualFormat::Jpeg && mjpeg::first_frame_end(source, len)?.is_none() {
        return Err(MediaError::corrupt(
            name,
            "no end-of-image marker (FF D9) in the file or its first 64 MiB: truncated?",
        ));
    }
    let image_format = match format {
        VisualFormat::Png => ImageFormat::Png,
        VisualFormat::Jpeg => ImageFormat::Jpeg,
        VisualFormat::Gif => ImageFormat::Gif,
        VisualFormat::Bmp => ImageFormat::Bmp,
        VisualFormat::WebP => ImageFormat::WebP,
        VisualFormat::Tiff => ImageFormat::Tiff,
        VisualFormat::Mjpeg | VisualFormat::Y4m | VisualFormat::Mp4 | VisualFormat::Fmp4 => {
            return Err(MediaError::unsupported(name, "not a still image format"));
        }
    };
    source.seek(SeekFrom::Start(0))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_DIMENSION);
    limits.max_image_height = Some(MAX_IMAGE_DIMENSION);
    limits.max_alloc = Some(MAX_IMAGE_ALLOC);
    let mut reader = ImageReader::with_format(BufReader::new(&mut *source), image_format);
    reader.limits(limits);
    let header = reader.into_decoder().map(|d| {
        let (width, height) = d.dimensions();
        (width, height, color_code(d.color_type()))
    });
    let (width, height, color) = match header {
        Ok(h) => h,
        // A valid TIFF in a layout the decoder does not take (paletted, CMYK, ...): its size
        // is in the first IFD all the same.
        Err(ImageError::Unsupported(_)) if format == VisualFormat::Tiff => {
            let (w, h) = tiff_size(source, len)?;
            (w, h, 255)
        }
        Err(e) => return Err(image_error(name, e)),
    };
    if width > MAX_IMAGE_DIMENSION || height > MAX_IMAGE_DIMENSION {
        return Err(MediaError::unsupported(
            name,
            format!("wider or taller than {MAX_IMAGE_DIMENSION} pixels"),
        ));
    }
    if width == 0 || height == 0 {
        return Err(MediaError::corrupt(name, "zero width or height"));
    }
    // After the headers, so that a file that is not this format at all says so.
    check_structure(source, len, format)?;
    let params = ImageParams {
        format,
        width,
        height,
        color,
    };
    Ok(Probed {
        codec: Codec::Image(params),
        layout: Layout::Whole(Kind::Media {
            key: true,
            pts_us: 0,
            duration_us: 0,
        }),
        duration_us: None,
        chunk_count: Some(pieces(len, config.chunk_size)),
        warning: None,
    })
}

/// The colour-type code of [`ImageParams::color`].
fn color_code(c: ColorType) -> u8 {
    match c {
        ColorType::L8 => 0,
        ColorType::La8 => 1,
        ColorType::Rgb8 => 2,
        ColorType::Rgba8 => 3,
        ColorType::L16 => 4,
        ColorType::La16 => 5,
        ColorType::Rgb16 => 6,
        ColorType::Rgba16 => 7,
        ColorType::Rgb32F => 8,
        ColorType::Rgba32F => 9,
        _ => 255,
    }
}

fn image_error(name: &'static str, e: ImageError) -> MediaError {
    match e {
        ImageError::IoError(io) => MediaError::Io(io),
        ImageError::Limits(l) => match l.kind() {
            LimitErrorKind::DimensionError => MediaError::unsupported(
                name,
                format!("wider or taller than {MAX_IMAGE_DIMENSION} pixels"),
            ),
            _ => MediaError::unsupported(
                name,
                format!("decoding needs more than {} MiB", MAX_IMAGE_ALLOC >> 20),
            ),
        },
        ImageError::Unsupported(u) => MediaError::unsupported(name, u.to_string()),
        other => MediaError::corrupt(name, other.to_string()),
    }
}

/// The most PNG chunks walked: a PNG has a handful plus its `IDAT`s (a few thousand at most).
const MAX_PNG_CHUNKS: u32 = 1 << 20;

/// The structural checks headers alone miss, each a few small reads.
fn check_structure<R: Read + Seek>(
    source: &mut R,
    len: u64,
    format: VisualFormat,
) -> Result<(), MediaError> {
    let name = format.name();
    let cut = |expected: u64| MediaError::Truncated {
        format: name,
        expected,
        actual: len,
    };
    match format {
        VisualFormat::Png => {
            let mut pos = 8u64;
            for _ in 0..MAX_PNG_CHUNKS {
                if pos + 12 > len {
                    return Err(cut(pos + 12));
                }
                let h = read_at(source, pos, 8)?;
                let size = u64::from(u32::from_be_bytes([h[0], h[1], h[2], h[3]]));
                let next = pos + 12 + size;
                if next > len {
                    return Err(cut(next));
                }
                if &h[4..8] == b"IEND" {
                    return Ok(());
                }
                pos = next;
            }
            Err(MediaError::corrupt(name, "no IEND chunk"))
        }
        VisualFormat::Gif => match read_at(source, len.saturating_sub(1), 1)?[..] {
            [0x3B] => Ok(()),
            _ => Err(MediaError::corrupt(
                name,
                "no trailer (3B) at the end: truncated?",
            )),
        },
        VisualFormat::WebP if len >= 12 => {
            let h = read_at(source, 4, 4)?;
            let riff = u64::from(u32::from_le_bytes([h[0], h[1], h[2], h[3]])) + 8;
            if riff > len { Err(cut(riff)) } else { Ok(()) }
        }
        VisualFormat::Bmp if len >= 14 => {
            let h = read_at(source, 2, 12)?;
            let size = u64::from(u32::from_le_bytes([h[0], h[1], h[2], h[3]]));
            let pixels = u64::from(u32::from_le_bytes([h[8], h[9], h[10], h[11]]));
            // Some writers leave the size field 0; the pixel data must start in the file.
            if size > len {
                Err(cut(size))
            } else if pixels >= len {
                Err(cut(pixels + 1))
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

/// Width and height from a TIFF's first IFD (tags 256 and 257).
fn tiff_size<R: Read + Seek>(source: &mut R, len: u64) -> Result<(u32, u32), MediaError> {
    let bad = |r: &str| MediaError::corrupt("tiff", r.to_owned());
    if len < 8 {
        return Err(bad("shorter than its header"));
    }
    let h = read_at(source, 0, 8)?;
    let le = &h[0..2] == b"II";
    let u16_of = |b: &[u8]| {
        if le {
            u16::from_le_bytes([b[0], b[1]])
        } else {
            u16::from_be_bytes([b[0], b[1]])
        }
    };
    let u32_of = |b: &[u8]| {
        if le {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        } else {
            u32::from_be_bytes([b[0], b[1], b[2], b[3]])
        }
    };
    let ifd = u64::from(u32_of(&h[4..8]));
    if ifd + 2 > len {
        return Err(bad("first IFD past the end"));
    }
    let n = u64::from(u16_of(&read_at(source, ifd, 2)?));
    if ifd + 2 + n * 12 > len {
        return Err(bad("first IFD cut short"));
    }
    let entries = read_at(source, ifd + 2, (n * 12) as usize)?;
    let (mut w, mut hgt) = (None, None);
    for e in entries.chunks_exact(12) {
        let value = match u16_of(&e[2..4]) {
            3 => u32::from(u16_of(&e[8..10])),
            4 => u32_of(&e[8..12]),
            _ => continue,
        };
        match u16_of(&e[0..2]) {
            256 => w = Some(value),
            257 => hgt = Some(value),
            _ => {}
        }
    }
    w.zip(hgt)
        .ok_or_else(|| bad("no ImageWidth/ImageLength in the first IFD"))
}
