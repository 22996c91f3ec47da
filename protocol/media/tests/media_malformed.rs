//! Malformed and hostile inputs: each a clear error at open or a correct stream, never a panic
//! and never an allocation sized by a header field.

mod media_common;

use std::io::Cursor;

use chunkcast_media::{MediaError, Packetizer};
use chunkcast_protocol::{Codec, VisualFormat};
use image::{DynamicImage, ImageFormat, RgbImage};
use media_common::*;

fn err(data: &[u8], name: &str) -> MediaError {
    match open(data, name, config()) {
        Ok(p) => panic!("{name}: expected an error, got {:?}", p.codec()),
        Err(e) => {
            // Every error explains itself.
            assert!(!e.to_string().is_empty());
            e
        }
    }
}

fn jpeg() -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(RgbImage::from_fn(64, 64, |x, y| {
        image::Rgb([x as u8, y as u8, 7])
    }))
    .write_to(&mut out, ImageFormat::Jpeg)
    .unwrap();
    out.into_inner()
}

#[test]
fn truncated_wav_is_refused_at_open() {
    let data = wav(&WavSpec::pcm(2, 48_000, 16), 1000, false, false, 1);
    let e = err(&data[..data.len() - 10], "cut.wav");
    assert!(
        matches!(e, MediaError::Truncated { format: "wav", .. }),
        "{e}"
    );
    // A header claiming 4 GB of audio in a tiny file: refused, nothing allocated.
    let data = wav_with(
        &WavSpec::pcm(2, 48_000, 16),
        &[0; 64],
        false,
        false,
        Some(0xFFFF_FFF0),
    );
    assert!(matches!(
        err(&data, "huge.wav"),
        MediaError::Truncated { .. }
    ));
    // Cut inside the header.
    for n in [0, 1, 11, 12, 20, 30, 43] {
        let e = err(&data[..n], "short.wav");
        assert!(
            matches!(e, MediaError::Truncated { .. } | MediaError::Corrupt { .. }),
            "{n}: {e}"
        );
    }
}

#[test]
fn corrupt_wav_headers() {
    let good = wav(&WavSpec::pcm(2, 48_000, 16), 100, false, false, 1);
    let patch = |at: usize, bytes: &[u8]| {
        let mut d = good.clone();
        d[at..at + bytes.len()].copy_from_slice(bytes);
        d
    };
    // Zero channels, bad block alignment, inconsistent byte rate, missing fmt, no WAVE.
    let cases = [
        (patch(22, &[0, 0]), "zero channels"),
        (patch(32, &[3, 0]), "block align"),
        (patch(28, &[1, 2, 3, 4]), "byte rate"),
        (patch(12, b"junk"), "no fmt"),
        (patch(8, b"WAVX"), "no WAVE (named .wav)"),
    ];
    for (data, what) in cases {
        let e = err(&data, "c.wav");
        assert!(
            matches!(
                e,
                MediaError::Corrupt { .. } | MediaError::Unsupported { .. }
            ),
            "{what}: {e}"
        );
    }
    // Another format tag is still WAV: cut on its block alignment, timed by its byte rate.
    match open(&patch(20, &[2, 0]), "c.wav", config())
        .unwrap()
        .codec()
    {
        Codec::Audio(a) => assert!(
            matches!(
                a.sample_format,
                chunkcast_protocol::SampleFormat::Coded(c) if c.tag == 2 && c.block_align == 4
            ),
            "{a:?}"
        ),
        other => panic!("{other:?}"),
    }
    // RIFF/WAVE magic wins over the name.
    assert!(matches!(
        open(&good, "really.png", config()).unwrap().codec(),
        Codec::Audio(_)
    ));
}

#[test]
fn broken_images_are_refused_unless_raw() {
    let j = jpeg();
    let e = err(&j[..j.len() / 2], "cut.jpg");
    assert!(
        matches!(e, MediaError::Corrupt { format: "jpeg", .. }),
        "{e}"
    );
    let text = b"this is not a picture\n".repeat(10);
    let e = err(&text, "notes.png");
    assert!(
        matches!(e, MediaError::Corrupt { format: "png", .. }),
        "{e}"
    );
    let mut raw = config();
    raw.raw = true;
    let (p, chunks) = packetize(&text, "notes.png", raw, Pieces::Random(50), 0);
    assert_eq!(p.codec(), Codec::Bytes);
    reassemble(&chunks, &text, 0);
    // Empty and one-byte files that claim a format by name.
    for name in [
        "e.wav", "e.png", "e.jpg", "e.gif", "e.bmp", "e.webp", "e.tif", "e.y4m", "e.mjpeg",
    ] {
        err(&[], name);
        err(&[0x42], name);
    }
    // ... while an MP4 that cannot be demuxed is served as bytes, with a warning.
    for data in [&[][..], &[0x42][..], &text[..]] {
        let (p, chunks) = packetize(data, "clip.mp4", config(), Pieces::Random(7), 0);
        assert_eq!(p.codec(), Codec::Bytes);
        assert!(p.warning().is_some() || data.is_empty() || data.len() == 1);
        reassemble(&chunks, data, 0);
    }
    // A PNG named with spaces and non-ASCII characters, and a wrong extension: magic wins.
    let mut png = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(RgbImage::new(3, 2))
        .write_to(&mut png, ImageFormat::Png)
        .unwrap();
    let png = png.into_inner();
    let (p, chunks) = packetize(
        &png,
        "Mes vacances d'été — 日本 🌸.JPG",
        config(),
        Pieces::Fixed(1),
        0,
    );
    assert!(matches!(p.codec(), Codec::Image(i) if i.format == VisualFormat::Png));
    reassemble(&chunks, &png, 0);
}

#[test]
fn y4m_limits_and_truncation() {
    let e = err(
        b"YUV4MPEG2 W100000 H100000 F25:1 C420jpeg\nFRAME\n",
        "big.y4m",
    );
    assert!(matches!(e, MediaError::TooLarge { .. }), "{e}");
    let e = err(
        b"YUV4MPEG2 W4294967295 H4294967295 F25:1 C444alpha\n",
        "big.y4m",
    );
    assert!(matches!(e, MediaError::TooLarge { .. }), "{e}");
    for bad in [
        &b"YUV4MPEG2 W4 H4 F0:1\n"[..],
        b"YUV4MPEG2 W4 F25:1\n",
        b"YUV4MPEG2 W4 H4 Cweird\n",
        b"YUV4MPEG2 W4 H4",
    ] {
        err(bad, "bad.y4m");
    }
    let mut data = b"YUV4MPEG2 W4 H4 F25:1 C444\n".to_vec();
    data.extend_from_slice(b"FRAME\n");
    data.extend_from_slice(&[0; 48]);
    data.extend_from_slice(b"FRAME\n");
    data.extend_from_slice(&[0; 20]);
    assert!(matches!(
        err(&data, "cut.y4m"),
        MediaError::Truncated { format: "y4m", .. }
    ));
    data.truncate(data.len() - 20 - 6);
    data.extend_from_slice(b"FRAMX\n");
    assert!(matches!(err(&data, "bad.y4m"), MediaError::Corrupt { .. }));
}

#[test]
fn mjpeg_without_a_first_frame_is_refused() {
    let j = jpeg();
    assert!(err(&j[..100], "cut.mjpeg").to_string().contains("mjpeg"));
    err(b"not jpeg at all", "x.mjpeg");
    // A later frame cut short is served anyway: the stream is the file.
    let mut data = j.clone();
    data.extend_from_slice(&j[..j.len() / 3]);
    let (_, chunks) = packetize(&data, "x.mjpeg", config(), Pieces::Random(999), 0);
    reassemble(&chunks, &data, 0);
}

#[test]
fn input_not_matching_the_announced_length() {
    let data = wav(&WavSpec::pcm(1, 8000, 16), 100, false, false, 0);
    let mut p = Packetizer::open(
        config(),
        &mut Cursor::new(&data),
        data.len() as u64,
        "a.wav",
    )
    .unwrap();
    let mut out = Vec::new();
    p.push(bytes::Bytes::copy_from_slice(&data[..50]), &mut out)
        .unwrap();
    assert!(matches!(
        p.finish(&mut out),
        Err(MediaError::Truncated {
            format: "input",
            ..
        })
    ));
    p.push(bytes::Bytes::copy_from_slice(&data[50..]), &mut out)
        .unwrap();
    assert!(matches!(
        p.push(bytes::Bytes::from_static(b"x"), &mut out),
        Err(MediaError::TooLong { .. })
    ));
    p.finish(&mut out).unwrap();
    // A config out of range.
    let mut c = config();
    c.chunk_size = 0;
    assert!(matches!(
        open(&data, "a.wav", c),
        Err(MediaError::InvalidConfig(_))
    ));
}

const NAMES: [&str; 16] = [
    "x.wav",
    "x.png",
    "x.jpg",
    "x.gif",
    "x.bmp",
    "x.webp",
    "x.tiff",
    "x.mjpeg",
    "x.y4m",
    "x.mp4",
    "x.mov",
    "x.mkv",
    "x",
    "x.bin",
    "é è.wav",
    "",
];

/// Opens with every name; when open succeeds, the stream must be the file.
fn survive(data: &[u8], seed: u64) {
    for (k, name) in NAMES.iter().enumerate() {
        let mut c = config();
        c.chunk_size = 1 + (seed as usize * 31 + k) % 5000;
        if let Ok(mut p) = open(data, name, c.clone()) {
            let chunks = feed(&mut p, data, Pieces::Random(3000), &mut Rng::new(seed))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            check_stream(&p, &chunks, data, &c);
        }
    }
}

#[test]
fn hostile_random_bytes_never_panic() {
    let mut rng = Rng::new(99);
    for i in 0..150u64 {
        let n = [0, 1, 2, 7, 16, 100, 1000, 5000][(i % 8) as usize];
        let mut data = rng.bytes(n);
        // Give some of them a real signature so the format parsers see the garbage.
        let magic: &[u8] = match i % 10 {
            0 => b"RIFF\0\0\0\0WAVEfmt ",
            1 => b"\x89PNG\r\n\x1a\n",
            2 => &[0xFF, 0xD8, 0xFF, 0xE0],
            3 => b"GIF89a",
            4 => b"YUV4MPEG2 W2 H2 C444\n",
            5 => b"\0\0\0\x18ftypisom",
            6 => b"II*\0",
            7 => b"RIFF\0\0\0\0WEBPVP8 ",
            _ => b"",
        };
        let m = magic.len().min(data.len());
        data[..m].copy_from_slice(&magic[..m]);
        survive(&data, i);
    }
}

#[test]
fn mutated_valid_files_never_panic() {
    let mut rng = Rng::new(7);
    let mut files = vec![
        wav(&WavSpec { extensible: true, ..WavSpec::pcm(2, 44_100, 24) }, 300, true, true, 1),
        jpeg(),
        b"YUV4MPEG2 W4 H2 F25:1 C420jpeg\nFRAME\n\0\0\0\0\0\0\0\0\0\0\0\0FRAME Ix\n\0\0\0\0\0\0\0\0\0\0\0\0".to_vec(),
    ];
    let mut j2 = jpeg();
    j2.extend_from_slice(&jpeg());
    files.push(j2);
    for f in [
        ImageFormat::Png,
        ImageFormat::Gif,
        ImageFormat::Bmp,
        ImageFormat::Tiff,
        ImageFormat::WebP,
    ] {
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(RgbImage::new(9, 7))
            .write_to(&mut out, f)
            .unwrap();
        files.push(out.into_inner());
    }
    for (k, file) in files.iter().enumerate() {
        for i in 0..25u64 {
            let mut data = file.clone();
            // Flip bytes in the header region, and sometimes truncate.
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(data.len().min(64) as u64) as usize;
                data[at] = rng.next() as u8;
            }
            if i % 3 == 0 {
                data.truncate(rng.below(data.len() as u64) as usize);
            }
            survive(&data, k as u64 * 100 + i);
        }
    }
}

#[test]
fn mutated_mp4_falls_back_or_streams_but_never_panics() {
    if !have_ffmpeg() {
        eprintln!(
            "skipping mutated_mp4_falls_back_or_streams_but_never_panics: ffmpeg not on PATH"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (data, _) =
        ffmpeg_mp4(dir.path(), "m.mp4", &["-movflags", "+faststart"]).expect("ffmpeg failed");
    let moov = data.windows(4).position(|w| w == b"moov").unwrap() - 4;
    let moov_len = u32::from_be_bytes(data[moov..moov + 4].try_into().unwrap()) as usize;
    let mut rng = Rng::new(17);
    let mut fallbacks = 0;
    for i in 0..300u64 {
        let mut d = data.clone();
        for _ in 0..1 + rng.below(3) {
            let at = moov + rng.below(moov_len as u64) as usize;
            d[at] = match rng.below(3) {
                0 => 0,
                1 => 0xFF,
                _ => rng.next() as u8,
            };
        }
        if i % 10 == 0 {
            d.truncate(rng.below(d.len() as u64) as usize);
        }
        let c = config();
        let mut p = open(&d, "m.mp4", c.clone()).expect("MP4 never fails at open");
        fallbacks += usize::from(p.codec() == Codec::Bytes);
        let chunks = feed(&mut p, &d, Pieces::Random(50_000), &mut Rng::new(i)).unwrap();
        check_stream(&p, &chunks, &d, &c);
    }
    assert!(fallbacks > 0);
}
