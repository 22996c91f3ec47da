//! Video clips: Motion JPEG and YUV4MPEG2, each frame stamped with its index.

use std::io::{self, Write};

use ::image::RgbImage;

use crate::Failure;
use crate::image::{draw_number_padded, encode_jpeg, read_number};

/// Width of both sample clips, in pixels.
pub const CLIP_WIDTH: u32 = 320;
/// Height of both sample clips, in pixels.
pub const CLIP_HEIGHT: u32 = 240;
/// Frame rate of both sample clips, in frames per second.
pub const CLIP_FPS: u32 = 25;
/// Frames in `clip-320x240-25fps.mjpeg` (5 s).
pub const MJPEG_FRAMES: u32 = 125;
/// Frames in `clip-320x240-25fps.y4m` (2 s).
pub const Y4M_FRAMES: u32 = 50;
/// The exact stream header of `clip-320x240-25fps.y4m`.
pub const Y4M_HEADER: &str = "YUV4MPEG2 W320 H240 F25:1 Ip A1:1 C420jpeg\n";
/// Bytes per Y4M frame: `FRAME\n`, then 4:2:0 planes (Y, then U and V at
/// quarter size).
pub const Y4M_FRAME_LEN: u64 = 6 + (CLIP_WIDTH * CLIP_HEIGHT * 3 / 2) as u64;

/// Where each clip frame shows its 0-based index: top-left corner of the
/// [`draw_number_padded`] block, font scale and digit count, for use with
/// [`read_number`] / [`read_number_gray`](crate::read_number_gray).
pub const CLIP_NUMBER_X: u32 = (CLIP_WIDTH - (6 * CLIP_NUMBER_DIGITS + 1) * CLIP_NUMBER_SCALE) / 2;
/// See [`CLIP_NUMBER_X`].
pub const CLIP_NUMBER_Y: u32 = (CLIP_HEIGHT - 9 * CLIP_NUMBER_SCALE) / 2;
/// See [`CLIP_NUMBER_X`].
pub const CLIP_NUMBER_SCALE: u32 = 8;
/// See [`CLIP_NUMBER_X`].
pub const CLIP_NUMBER_DIGITS: u32 = 3;

/// JPEG quality of the MJPEG frames: ffmpeg's usual range, and high enough
/// that the frame number always reads back.
const MJPEG_QUALITY: u8 = 85;

/// Renders frame `index` of a clip that is `total` frames long, as stored
/// (before compression) in the sample clips: the MJPEG clip is
/// `clip_frame(i, MJPEG_FRAMES)`, the Y4M clip `clip_frame(i, Y4M_FRAMES)`
/// converted to YUV.
///
/// Everything moves every frame (scrolling stripes, a sweeping bar, a
/// one-second ticker, a progress bar) so that a dropped or repeated frame is
/// visible to a person, and the large index in the middle makes it
/// checkable by a program via [`read_clip_frame_number`].
pub fn clip_frame(index: u32, total: u32) -> RgbImage {
    let (w, h) = (CLIP_WIDTH, CLIP_HEIGHT);
    // Reduced up front so arbitrary indices cannot overflow below.
    let shift = index % 256 * 4;
    let sweep_x = index % (w / 8) * 8;
    // The stripes depend only on x + y, so each row is a window into one
    // diagonal palette: a memcpy per row instead of per-pixel arithmetic,
    // which matters because this crate is unoptimised in dev builds.
    let palette: Vec<u8> = (0..w + h)
        .flat_map(|d| {
            let t = (d + shift) * 3 % 256;
            // Muted rainbow, kept between 40 and 200 so the white and black
            // overlays always stand out.
            [tint(t), tint(t + 85), tint(t + 170)]
        })
        .collect();
    let row_len = w as usize * 3;
    let mut img = RgbImage::new(w, h);
    let buf: &mut [u8] = &mut img;
    for (y, row) in buf.chunks_exact_mut(row_len).enumerate() {
        row.copy_from_slice(&palette[y * 3..y * 3 + row_len]);
    }
    crate::image::fill_rect(&mut img, sweep_x, 0, 4, h, [255, 255, 255]);
    // Ticker: 25 cells, one lit per frame, so one second wraps once.
    const CELL: u32 = 12;
    let ticker_x = (w - CELL * CLIP_FPS) / 2;
    for cell in 0..CLIP_FPS {
        let colour = if cell == index % CLIP_FPS {
            [255, 255, 0]
        } else {
            [32, 32, 32]
        };
        crate::image::fill_rect(&mut img, ticker_x + cell * CELL, 8, CELL - 2, 12, colour);
    }
    let progress = (u64::from(index) + 1) * u64::from(w) / u64::from(total.max(1));
    crate::image::fill_rect(&mut img, 0, h - 8, w, 8, [32, 32, 32]);
    crate::image::fill_rect(
        &mut img,
        0,
        h - 8,
        progress.min(u64::from(w)) as u32,
        8,
        [0, 200, 0],
    );
    draw_number_padded(
        &mut img,
        index,
        CLIP_NUMBER_DIGITS,
        CLIP_NUMBER_X,
        CLIP_NUMBER_Y,
        CLIP_NUMBER_SCALE,
    );
    img
}

/// Triangle wave 40..=200 with period 256.
fn tint(t: u32) -> u8 {
    let v = t % 256;
    let tri = if v < 128 { v } else { 255 - v };
    (40 + tri * 160 / 127) as u8
}

/// Reads the frame index stamped on a decoded clip frame (from either
/// sample clip), or `None` if it is unreadable.
pub fn read_clip_frame_number(frame: &RgbImage) -> Option<u32> {
    read_number(
        frame,
        CLIP_NUMBER_X,
        CLIP_NUMBER_Y,
        CLIP_NUMBER_SCALE,
        CLIP_NUMBER_DIGITS,
    )
}

/// Writes the frames back to back, as `ffmpeg -f mjpeg` does: each a
/// complete baseline JPEG from SOI to EOI, with nothing in between.
///
/// Frames are encoded on several threads because this is by far the
/// slowest sample in unoptimised builds (the encoder is generic, so it is
/// compiled with this crate's settings); the output order is unaffected.
pub(crate) fn write_mjpeg(out: &mut impl Write) -> Result<(), Failure> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4)) as u32;
    let per_worker = MJPEG_FRAMES.div_ceil(workers);
    let chunks = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let frames = w * per_worker..((w + 1) * per_worker).min(MJPEG_FRAMES);
                scope.spawn(move || {
                    frames
                        .map(|i| encode_jpeg(&clip_frame(i, MJPEG_FRAMES), MJPEG_QUALITY))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| io::Error::other("MJPEG encoder thread panicked"))
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    for chunk in chunks {
        for jpeg in chunk? {
            out.write_all(&jpeg)?;
        }
    }
    Ok(())
}

/// Writes the YUV4MPEG2 clip: limited-range BT.601, as players assume for
/// Y4M without an `XCOLORRANGE` tag, with each chroma sample the average of
/// its 2x2 luma block, which is what `C420jpeg` (centred) siting means.
pub(crate) fn write_y4m(out: &mut impl Write) -> io::Result<()> {
    let (w, h) = (CLIP_WIDTH as usize, CLIP_HEIGHT as usize);
    out.write_all(Y4M_HEADER.as_bytes())?;
    let mut y_plane = vec![0_u8; w * h];
    let mut u_plane = vec![0_u8; w * h / 4];
    let mut v_plane = vec![0_u8; w * h / 4];
    for index in 0..Y4M_FRAMES {
        let frame = clip_frame(index, Y4M_FRAMES);
        let rgb = frame.as_raw();
        for (luma, px) in y_plane.iter_mut().zip(rgb.chunks_exact(3)) {
            let (r, g, b) = (i32::from(px[0]), i32::from(px[1]), i32::from(px[2]));
            *luma = (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8;
        }
        for cy in 0..h / 2 {
            for cx in 0..w / 2 {
                let (mut r, mut g, mut b) = (0, 0, 0);
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let i = ((cy * 2 + dy) * w + cx * 2 + dx) * 3;
                    r += i32::from(rgb[i]);
                    g += i32::from(rgb[i + 1]);
                    b += i32::from(rgb[i + 2]);
                }
                // Sums of four: fold the /4 into the final shift.
                let u = ((-38 * r - 74 * g + 112 * b + 512) >> 10) + 128;
                let v = ((112 * r - 94 * g - 18 * b + 512) >> 10) + 128;
                u_plane[cy * (w / 2) + cx] = u as u8;
                v_plane[cy * (w / 2) + cx] = v as u8;
            }
        }
        out.write_all(b"FRAME\n")?;
        out.write_all(&y_plane)?;
        out.write_all(&u_plane)?;
        out.write_all(&v_plane)?;
    }
    Ok(())
}

/// Splits a Motion JPEG stream (concatenated JPEG images, as written by
/// `ffmpeg -f mjpeg` and `clip-320x240-25fps.mjpeg`) into its frames.
///
/// It walks the marker segments rather than searching for `FF D9`, so a
/// byte pair inside a table or thumbnail cannot cut a frame short. Returns
/// `None` if the data is not exactly a sequence of complete JPEG images
/// (garbage between frames, or a truncated last frame).
pub fn split_mjpeg(data: &[u8]) -> Option<Vec<&[u8]>> {
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let start = pos;
        if data.get(pos..pos + 2)? != [0xFF, 0xD8] {
            return None;
        }
        pos += 2;
        loop {
            if *data.get(pos)? != 0xFF {
                return None;
            }
            // Any number of 0xFF fill bytes may precede a marker code.
            while *data.get(pos + 1)? == 0xFF {
                pos += 1;
            }
            let marker = data[pos + 1];
            pos += 2;
            match marker {
                0xD9 => break,
                // Standalone markers carry no length.
                0x01 | 0xD0..=0xD7 => continue,
                _ => {}
            }
            let len = usize::from(u16::from_be_bytes(data.get(pos..pos + 2)?.try_into().ok()?));
            if len < 2 {
                return None;
            }
            pos += len;
            if marker == 0xDA {
                // Entropy-coded data ends at the first FF that is neither
                // stuffing (FF 00) nor a restart marker (FF D0..D7).
                loop {
                    match (data.get(pos)?, data.get(pos + 1)?) {
                        (0xFF, 0x00 | 0xD0..=0xD7) => pos += 2,
                        (0xFF, _) => break,
                        _ => pos += 1,
                    }
                }
            }
        }
        frames.push(&data[start..pos]);
    }
    Some(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_block_is_centred_and_inside() {
        let (w, h) = crate::number_size(CLIP_NUMBER_DIGITS, CLIP_NUMBER_SCALE);
        assert!(CLIP_NUMBER_X + w <= CLIP_WIDTH && CLIP_NUMBER_Y + h <= CLIP_HEIGHT);
        assert!((CLIP_WIDTH - w) / 2 == CLIP_NUMBER_X);
    }

    #[test]
    fn rendered_frames_carry_their_index() {
        for i in [0, 1, 9, 10, 99, 124] {
            assert_eq!(
                read_clip_frame_number(&clip_frame(i, MJPEG_FRAMES)),
                Some(i)
            );
        }
    }

    #[test]
    fn split_rejects_garbage() {
        assert_eq!(split_mjpeg(&[]), Some(vec![]));
        assert_eq!(split_mjpeg(&[0x00, 0x01]), None);
        let jpeg = encode_jpeg(&clip_frame(3, 5), 85).unwrap();
        let mut two = jpeg.clone();
        two.extend_from_slice(&jpeg);
        assert_eq!(split_mjpeg(&two).map(|f| f.len()), Some(2));
        assert_eq!(split_mjpeg(&two[..two.len() - 1]), None);
        two.push(0);
        assert_eq!(split_mjpeg(&two), None);
    }
}
