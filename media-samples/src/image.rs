//! Still images and the machine-readable frame-number glyphs.
//!
//! The external `image` crate is always spelled `::image` here because this
//! module shares its name.

use ::image::codecs::jpeg::JpegEncoder;
use ::image::codecs::png::PngEncoder;
use ::image::{ExtendedColorType, GrayImage, ImageEncoder, ImageError, RgbImage};

use crate::math;

/// Glyph bitmap size in font pixels.
const GLYPH_W: u32 = 5;
const GLYPH_H: u32 = 7;
/// Horizontal distance between glyph origins: glyph plus a one-pixel gap.
const ADVANCE: u32 = GLYPH_W + 1;

/// The classic 5x7 digits. Each row is 5 bits, most significant bit leftmost.
const GLYPHS: [[u8; GLYPH_H as usize]; 10] = [
    [
        0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110,
    ],
    [
        0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110,
    ],
    [
        0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111,
    ],
    [
        0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110,
    ],
    [
        0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010,
    ],
    [
        0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110,
    ],
    [
        0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110,
    ],
    [
        0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000,
    ],
    [
        0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110,
    ],
    [
        0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100,
    ],
];

/// How many wrong cells a glyph may have and still be recognised. The
/// closest two digits differ in 3 cells (checked by a test), so correcting
/// one flipped cell can never turn one digit into another.
const MAX_CELL_ERRORS: u32 = 1;

/// u32 never needs more than 10 decimal digits.
const MAX_DIGITS: u32 = 10;

const INK: [u8; 3] = [255, 255, 255];
const PAPER: [u8; 3] = [0, 0, 0];

/// The pixel size of a number drawn by [`draw_number_padded`] with `digits`
/// digits at `scale`: `((6·digits + 1)·scale, 9·scale)`.
///
/// The block is the digits (5x7 font pixels each, one pixel apart) inside a
/// one-font-pixel dark margin, so the glyphs stay legible on any background.
pub fn number_size(digits: u32, scale: u32) -> (u32, u32) {
    (
        (ADVANCE * digits + 1).saturating_mul(scale),
        (GLYPH_H + 2).saturating_mul(scale),
    )
}

/// Draws `n` in decimal with its top-left corner at (`x`, `y`), each font
/// pixel `scale`×`scale` image pixels: white digits on a black block of
/// [`number_size`]`(digits of n, scale)`.
///
/// Anything falling outside the image is clipped. Read it back with
/// [`read_number`], passing the number of digits drawn.
pub fn draw_number(img: &mut RgbImage, n: u32, x: u32, y: u32, scale: u32) {
    draw_number_padded(img, n, 1, x, y, scale);
}

/// Like [`draw_number`], but zero-padded to at least `digits` digits so that a
/// counter keeps a fixed width and position (as in the sample video clips).
/// Numbers wider than `digits` are drawn in full rather than truncated.
pub fn draw_number_padded(img: &mut RgbImage, n: u32, digits: u32, x: u32, y: u32, scale: u32) {
    let count = digits.clamp(decimal_digits(n), MAX_DIGITS);
    let (w, h) = number_size(count, scale);
    fill_rect(img, x, y, w, h, PAPER);
    for i in 0..count {
        let digit = digit_at(n, count - 1 - i);
        let origin_x = u64::from(x) + u64::from(1 + ADVANCE * i) * u64::from(scale);
        for (row, bits) in GLYPHS[digit].iter().enumerate() {
            for col in 0..GLYPH_W {
                if bits >> (GLYPH_W - 1 - col) & 1 == 1 {
                    let px = origin_x + u64::from(col) * u64::from(scale);
                    let py = u64::from(y) + (row as u64 + 1) * u64::from(scale);
                    fill_rect_u64(img, px, py, scale, scale, INK);
                }
            }
        }
    }
}

/// Reads back a number drawn by [`draw_number`] / [`draw_number_padded`] at
/// the same `x`, `y`, `scale` and exactly `digits` digits.
///
/// It samples the middle of every font pixel, so it survives lossy coding
/// (JPEG, chroma subsampling, limited-range YUV) and tolerates one wrong
/// cell per digit. Returns `None` if the block lies outside the image, a
/// glyph is not recognisable, or the value does not fit in a `u32`.
pub fn read_number(img: &RgbImage, x: u32, y: u32, scale: u32, digits: u32) -> Option<u32> {
    read_with(img.width(), img.height(), x, y, scale, digits, |px, py| {
        let [r, g, b] = img.get_pixel(px, py).0;
        luma(r, g, b)
    })
}

/// [`read_number`] for a single-channel image, e.g. the luma plane of a
/// decoded Y4M frame wrapped with `GrayImage::from_raw`.
pub fn read_number_gray(img: &GrayImage, x: u32, y: u32, scale: u32, digits: u32) -> Option<u32> {
    read_with(img.width(), img.height(), x, y, scale, digits, |px, py| {
        img.get_pixel(px, py).0[0]
    })
}

fn read_with(
    width: u32,
    height: u32,
    x: u32,
    y: u32,
    scale: u32,
    digits: u32,
    luma: impl Fn(u32, u32) -> u8,
) -> Option<u32> {
    if scale == 0 || digits == 0 || digits > MAX_DIGITS {
        return None;
    }
    let (w, h) = number_size(digits, scale);
    if u64::from(x) + u64::from(w) > u64::from(width)
        || u64::from(y) + u64::from(h) > u64::from(height)
    {
        return None;
    }
    // Average the central half of each cell: its edges are where JPEG
    // ringing and chroma bleed live.
    let inset = scale / 4;
    let span = scale - 2 * inset;
    let mut value: u64 = 0;
    for i in 0..digits {
        let origin_x = x + (1 + ADVANCE * i) * scale;
        let origin_y = y + scale;
        let mut pattern: u64 = 0;
        for row in 0..GLYPH_H {
            for col in 0..GLYPH_W {
                let cx = origin_x + col * scale + inset;
                let cy = origin_y + row * scale + inset;
                let mut sum: u64 = 0;
                for dy in 0..span {
                    for dx in 0..span {
                        sum += u64::from(luma(cx + dx, cy + dy));
                    }
                }
                let on = sum * 2 > 255 * u64::from(span * span);
                pattern = pattern << 1 | u64::from(on);
            }
        }
        value = value * 10 + u64::from(match_glyph(pattern)?);
    }
    u32::try_from(value).ok()
}

/// Nearest glyph by Hamming distance, if it is close enough to be unambiguous.
fn match_glyph(pattern: u64) -> Option<u8> {
    let mut best = (u32::MAX, 0_u8);
    for (digit, glyph) in (0_u8..).zip(GLYPHS.iter()) {
        let distance = (glyph_bits(glyph) ^ pattern).count_ones();
        if distance < best.0 {
            best = (distance, digit);
        }
    }
    (best.0 <= MAX_CELL_ERRORS).then_some(best.1)
}

/// A glyph as 35 bits, row-major, first cell most significant, matching the
/// order [`read_with`] shifts samples in.
fn glyph_bits(glyph: &[u8; GLYPH_H as usize]) -> u64 {
    glyph
        .iter()
        .fold(0, |acc, &row| acc << GLYPH_W | u64::from(row))
}

fn decimal_digits(mut n: u32) -> u32 {
    let mut count = 1;
    while n >= 10 {
        n /= 10;
        count += 1;
    }
    count
}

/// The decimal digit of `n` worth 10^`place`; zero beyond the number's length.
fn digit_at(n: u32, place: u32) -> usize {
    (u64::from(n) / 10_u64.pow(place) % 10) as usize
}

/// BT.601 luma in 8.8 fixed point.
pub(crate) fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((77 * u32::from(r) + 150 * u32::from(g) + 29 * u32::from(b)) >> 8) as u8
}

pub(crate) fn fill_rect(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, rgb: [u8; 3]) {
    fill_rect_u64(img, u64::from(x), u64::from(y), w, h, rgb);
}

/// Clipped rectangle fill; u64 origins so callers never overflow computing
/// positions that fall off the image.
fn fill_rect_u64(img: &mut RgbImage, x: u64, y: u64, w: u32, h: u32, rgb: [u8; 3]) {
    let (width, height) = (u64::from(img.width()), u64::from(img.height()));
    let x1 = (x + u64::from(w)).min(width);
    let y1 = (y + u64::from(h)).min(height);
    if x >= x1 || y >= y1 {
        return;
    }
    let row_bytes = width as usize * 3;
    let buf: &mut [u8] = img;
    for row in y as usize..y1 as usize {
        let line = &mut buf[row * row_bytes..(row + 1) * row_bytes];
        for px in line[x as usize * 3..x1 as usize * 3].chunks_exact_mut(3) {
            px.copy_from_slice(&rgb);
        }
    }
}

/// Encodes through the slice-based `encode` entry point: it is not generic
/// over the pixel container, so it runs the image crate's optimised code
/// even when this crate is built without optimisation.
pub(crate) fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::with_capacity(img.as_raw().len() / 8);
    JpegEncoder::new_with_quality(&mut out, quality).encode(
        img.as_raw(),
        img.width(),
        img.height(),
        ExtendedColorType::Rgb8,
    )?;
    Ok(out)
}

const CARD_W: u32 = 640;
const CARD_H: u32 = 480;

/// Number printed on the test card and where, so tests can read it back.
pub(crate) const CARD_NUMBER: u32 = 1234;
pub(crate) const CARD_NUMBER_X: u32 = 245;
pub(crate) const CARD_NUMBER_Y: u32 = 93;
pub(crate) const CARD_NUMBER_SCALE: u32 = 6;

/// 640x480 RGBA test card: 100% colour bars, grey and primary ramps, an alpha
/// ramp, a fully transparent block, a fine checkerboard, and "1234" in the
/// machine-readable glyphs.
pub(crate) fn testcard_png() -> Result<Vec<u8>, ImageError> {
    const BARS: [[u8; 3]; 8] = [
        [255, 255, 255],
        [255, 255, 0],
        [0, 255, 255],
        [0, 255, 0],
        [255, 0, 255],
        [255, 0, 0],
        [0, 0, 255],
        [0, 0, 0],
    ];
    let mut rgb = RgbImage::new(CARD_W, CARD_H);
    for (x, y, px) in rgb.enumerate_pixels_mut() {
        let ramp = (x * 255 / (CARD_W - 1)) as u8;
        px.0 = match y {
            0..240 => BARS[(x / (CARD_W / 8)) as usize],
            240..300 => [ramp; 3],
            300..320 => [ramp, 0, 0],
            320..340 => [0, ramp, 0],
            340..360 => [0, 0, ramp],
            // Hidden behind alpha 0 below: a decoder that drops alpha shows
            // glaring magenta instead of silently looking right.
            _ if (320..480).contains(&x) => [255, 0, 255],
            _ if (x / 4 + y / 4) % 2 == 0 => [255; 3],
            _ => [0; 3],
        };
    }
    // A one-pixel border shows cropping or off-by-one scaling at a glance.
    fill_rect(&mut rgb, 0, 0, CARD_W, 1, [255, 255, 255]);
    fill_rect(&mut rgb, 0, CARD_H - 1, CARD_W, 1, [255, 255, 255]);
    fill_rect(&mut rgb, 0, 0, 1, CARD_H, [255, 255, 255]);
    fill_rect(&mut rgb, CARD_W - 1, 0, 1, CARD_H, [255, 255, 255]);
    draw_number(
        &mut rgb,
        CARD_NUMBER,
        CARD_NUMBER_X,
        CARD_NUMBER_Y,
        CARD_NUMBER_SCALE,
    );

    let mut rgba = Vec::with_capacity((CARD_W * CARD_H * 4) as usize);
    for (x, y, px) in rgb.enumerate_pixels() {
        let alpha = match (x, y) {
            (_, 0..360) => 255,
            (0..320, _) => (x * 255 / 319) as u8,
            (320..480, _) => 0,
            _ => 255,
        };
        rgba.extend_from_slice(&px.0);
        rgba.push(alpha);
    }
    let mut out = Vec::new();
    PngEncoder::new(&mut out).write_image(&rgba, CARD_W, CARD_H, ExtendedColorType::Rgba8)?;
    Ok(out)
}

/// 640x480 photo-like JPEG at quality 85: smooth plasma plus fine noise, so
/// it compresses like a real photograph rather than like flat test bars.
pub(crate) fn photo_jpg() -> Result<Vec<u8>, ImageError> {
    let turns = |num: u32, den: u32| math::sin_turns(f64::from(num % den) / f64::from(den));
    // Separable terms are tabulated; only the radial term is per pixel.
    let col: Vec<f64> = (0..CARD_W).map(|x| turns(x, 213)).collect();
    let row: Vec<f64> = (0..CARD_H).map(|y| turns(y, 157)).collect();
    let diag: Vec<f64> = (0..CARD_W + CARD_H).map(|d| turns(d, 331)).collect();
    let mut noise = crate::bytes::SplitMix64::new(0x7068_6f74_6f2e_6a70);
    let mut img = RgbImage::new(CARD_W, CARD_H);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let dx = f64::from(x) - 400.0;
        let dy = f64::from(y) - 180.0;
        // sqrt is correctly rounded by IEEE 754, so this stays portable.
        let ring = math::sin_turns((dx * dx + dy * dy).sqrt() / 47.0);
        let (c, r, d) = (col[x as usize], row[y as usize], diag[(x + y) as usize]);
        let grain = (noise.next_u64() >> 61) as f64 - 3.5;
        let channel = |v: f64| (128.0 + 100.0 * v / 2.0 + grain).round().clamp(0.0, 255.0) as u8;
        px.0 = [channel(c + ring), channel(r + d), channel(d - ring)];
    }
    encode_jpeg(&img, 85)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(jpeg: &[u8]) -> RgbImage {
        ::image::load_from_memory(jpeg).unwrap().to_rgb8()
    }

    #[test]
    fn glyphs_are_far_enough_apart() {
        let mut min = u32::MAX;
        for (i, a) in GLYPHS.iter().enumerate() {
            for b in &GLYPHS[i + 1..] {
                min = min.min((glyph_bits(a) ^ glyph_bits(b)).count_ones());
            }
        }
        assert!(
            min > 2 * MAX_CELL_ERRORS,
            "closest glyphs differ in {min} cells"
        );
    }

    #[test]
    fn number_round_trips_through_jpeg() {
        for &scale in &[2, 3, 4, 8] {
            for &n in &[0, 7, 42, 99, 123, 4096, 65_535, 1_000_000, u32::MAX] {
                let digits = decimal_digits(n);
                let (w, h) = number_size(digits, scale);
                // A busy background proves the block's own margin is enough.
                let mut img = RgbImage::from_fn(w + 20, h + 14, |x, y| {
                    ::image::Rgb([(x * 13) as u8, (y * 29) as u8, ((x ^ y) * 7) as u8])
                });
                draw_number(&mut img, n, 9, 5, scale);
                assert_eq!(read_number(&img, 9, 5, scale, digits), Some(n));
                for quality in [50, 85] {
                    let decoded = decode(&encode_jpeg(&img, quality).unwrap());
                    assert_eq!(
                        read_number(&decoded, 9, 5, scale, digits),
                        Some(n),
                        "n={n} scale={scale} quality={quality}"
                    );
                }
            }
        }
    }

    #[test]
    fn padding_and_gray_reading() {
        let mut img = RgbImage::new(200, 60);
        draw_number_padded(&mut img, 5, 4, 3, 3, 3);
        assert_eq!(read_number(&img, 3, 3, 3, 4), Some(5));
        let gray = ::image::DynamicImage::ImageRgb8(img).to_luma8();
        assert_eq!(read_number_gray(&gray, 3, 3, 3, 4), Some(5));
    }

    #[test]
    fn rejects_non_numbers() {
        let black = RgbImage::new(100, 40);
        assert_eq!(read_number(&black, 0, 0, 2, 3), None);
        let white = RgbImage::from_pixel(100, 40, ::image::Rgb([255; 3]));
        assert_eq!(read_number(&white, 0, 0, 2, 3), None);
        // Out of bounds, zero scale, zero digits.
        assert_eq!(read_number(&black, 90, 0, 2, 3), None);
        assert_eq!(read_number(&black, 0, 0, 0, 3), None);
        assert_eq!(read_number(&black, 0, 0, 2, 0), None);
    }

    #[test]
    fn drawing_off_the_edge_clips() {
        let mut img = RgbImage::new(10, 10);
        draw_number(&mut img, 8, 5, 5, 4);
        draw_number(&mut img, 8, u32::MAX - 1, u32::MAX - 1, u32::MAX);
    }
}
