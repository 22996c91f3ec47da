//! Format detection: the head bytes first, the file-name extension when they match nothing.
//!
//! Magic wins over the extension (a PNG named `.jpg` is a PNG), because names lie more often
//! than signatures. Only signatures of at least four distinctive bytes count as magic; BMP's
//! two-byte `BM` is accepted only with a known DIB header size after it, so that a text file
//! starting with "BM" is not taken for an image.

use std::io::{Read, Seek, SeekFrom};

use super::packetizer::Probed;
use super::{Config, MediaError, bytes, image, mjpeg, mp4, wav, y4m};
use chunkcast_protocol::media::VisualFormat;

/// What a file looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Wav,
    Image(VisualFormat),
    Mjpeg,
    Y4m,
    Mp4,
    Bytes,
}

/// How many head bytes detection looks at.
const HEAD: usize = 32;

/// Detects the format and hands over to its probe.
pub(crate) fn probe<R: Read + Seek>(
    config: &Config,
    source: &mut R,
    len: u64,
    name_hint: &str,
    lenient: bool,
) -> Result<Probed, MediaError> {
    if config.raw {
        return Ok(bytes::probed(len, config.chunk_size, None));
    }
    let head = read_at(source, 0, HEAD.min(usize::try_from(len).unwrap_or(HEAD)))?;
    let ext = extension(name_hint);
    let format = match by_magic(&head) {
        Some(Format::Image(VisualFormat::Jpeg)) => jpeg_or_mjpeg(source, len, ext.as_deref())?,
        Some(f) => f,
        None => ext
            .as_deref()
            .and_then(by_extension)
            .unwrap_or(Format::Bytes),
    };
    match format {
        Format::Bytes => Ok(bytes::probed(len, config.chunk_size, None)),
        Format::Wav => wav::probe(config, source, len, lenient),
        Format::Image(f) => image::probe(config, source, len, f),
        Format::Mjpeg => mjpeg::probe(config, source, len),
        Format::Y4m => y4m::probe(config, source, len),
        Format::Mp4 => mp4::probe(config, source, len),
    }
}

/// A JPEG-magic file is an MJPEG stream when named so, an image when named as one, and
/// otherwise an MJPEG stream only if a second JPEG starts right where the first ends (JPEGs
/// with appended MPF pictures are named `.jpg`, so the name wins for them).
fn jpeg_or_mjpeg<R: Read + Seek>(
    source: &mut R,
    len: u64,
    ext: Option<&str>,
) -> Result<Format, MediaError> {
    match ext.and_then(by_extension) {
        Some(Format::Mjpeg) => return Ok(Format::Mjpeg),
        Some(Format::Image(VisualFormat::Jpeg)) => return Ok(Format::Image(VisualFormat::Jpeg)),
        _ => {}
    }
    if let Some(end) = mjpeg::first_frame_end(source, len)? {
        if end + 2 <= len && read_at(source, end, 2)? == [0xFF, 0xD8] {
            return Ok(Format::Mjpeg);
        }
    }
    Ok(Format::Image(VisualFormat::Jpeg))
}

/// The format a signature announces.
pub(crate) fn by_magic(head: &[u8]) -> Option<Format> {
    let f = |v| Some(Format::Image(v));
    if head.len() >= 12 && head.starts_with(b"RIFF") && &head[8..12] == b"WAVE" {
        return Some(Format::Wav);
    }
    if head.len() >= 12 && head.starts_with(b"RIFF") && &head[8..12] == b"WEBP" {
        return f(VisualFormat::WebP);
    }
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        return f(VisualFormat::Png);
    }
    if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return f(VisualFormat::Jpeg);
    }
    if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        return f(VisualFormat::Gif);
    }
    if head.starts_with(b"II*\0") || head.starts_with(b"MM\0*") {
        return f(VisualFormat::Tiff);
    }
    if head.len() >= 18 && head.starts_with(b"BM") {
        let dib = u32::from_le_bytes([head[14], head[15], head[16], head[17]]);
        if matches!(dib, 12 | 16 | 40 | 52 | 56 | 64 | 108 | 124) {
            return f(VisualFormat::Bmp);
        }
    }
    if head.starts_with(b"YUV4MPEG2") {
        return Some(Format::Y4m);
    }
    if head.len() >= 8 && &head[4..8] == b"ftyp" {
        return Some(Format::Mp4);
    }
    None
}

/// The format an extension (lower case, no dot) names.
pub(crate) fn by_extension(ext: &str) -> Option<Format> {
    let f = |v| Some(Format::Image(v));
    match ext {
        "wav" | "wave" => Some(Format::Wav),
        "png" => f(VisualFormat::Png),
        "jpg" | "jpeg" | "jpe" | "jfif" => f(VisualFormat::Jpeg),
        "gif" => f(VisualFormat::Gif),
        "bmp" | "dib" => f(VisualFormat::Bmp),
        "webp" => f(VisualFormat::WebP),
        "tif" | "tiff" => f(VisualFormat::Tiff),
        "mjpeg" | "mjpg" => Some(Format::Mjpeg),
        "y4m" => Some(Format::Y4m),
        "mp4" | "m4v" | "mov" => Some(Format::Mp4),
        _ => None,
    }
}

/// The lower-cased extension of a file name or path, if any.
pub(crate) fn extension(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let (stem, ext) = base.rsplit_once('.')?;
    if stem.is_empty() || ext.is_empty() || ext.len() > 8 {
        return None;
    }
    Some(ext.to_ascii_lowercase())
}

/// Reads exactly `n` bytes at `offset` (`n` is always small or checked by the caller).
pub(crate) fn read_at<R: Read + Seek>(
    source: &mut R,
    offset: u64,
    n: usize,
) -> Result<Vec<u8>, MediaError> {
    source.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0; n];
    source.read_exact(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_handles_paths_and_dots() {
        assert_eq!(extension("a/b.c/Film Été.MP4").as_deref(), Some("mp4"));
        assert_eq!(extension(".hidden"), None);
        assert_eq!(extension("noext"), None);
        assert_eq!(extension("x."), None);
    }

    #[test]
    fn bmp_magic_needs_a_dib_header() {
        assert_eq!(by_magic(b"BMW cars are nice, says the text"), None);
    }
}
