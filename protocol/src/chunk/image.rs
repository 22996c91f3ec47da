//! Still images (PNG, JPEG, GIF, BMP, WebP, TIFF): validated at open by decoding them, then
//! served as one unit cut at the chunk size.
//!
//! The decode runs straight from the source (buffered), so the file is never held whole in
//! memory here; the decoder's own memory is bounded by [`MAX_IMAGE_DIMENSION`] per side and
//! [`MAX_IMAGE_ALLOC`], so a decompression bomb is refused as [`MediaError::Unsupported`]
//! rather than exhausting memory. A JPEG must also end (`FF D9`, within
//! [`MAX_FRAME_BYTES`](super::MAX_FRAME_BYTES)): the decoder would otherwise accept a truncated
//! file, filling the missing rows with grey.

use std::io::{BufReader, Read, Seek, SeekFrom};

use ::image::error::{ImageError, LimitErrorKind};
use ::image::{ColorType, ImageFormat, ImageReader, Limits};

use super::packetizer::{Kind, Layout, Probed};
use super::{Config, MAX_IMAGE_ALLOC, MAX_IMAGE_DIMENSION, MediaError, bytes::pieces, mjpeg};
use crate::media::{Codec, ImageParams, VisualFormat};

/// Decodes the image to validate it and learn its size and colour type.
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
        VisualFormat::Mjpeg | VisualFormat::Y4m | VisualFormat::Mp4 => {
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
    let decoded = reader.decode().map_err(|e| match e {
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
        other => MediaError::corrupt(name, other.to_string()),
    })?;
    let params = ImageParams {
        format,
        width: decoded.width(),
        height: decoded.height(),
        color: color_code(decoded.color()),
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
