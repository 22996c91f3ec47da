//! Every format through packetize (random piece sizes) → shuffle and duplicate → reassemble,
//! comparing bytes and BLAKE3 with the source; plus the per-format chunk layout and units.

mod media_common;

use std::io::Cursor;

use bytes::Bytes;
use chunkcast_media::{Config, Packetizer, UnitAssembler, frames_to_us, pcm_to_f32};
use chunkcast_protocol::{Chunk, ChunkFlags, Codec, SampleFormat, VisualFormat};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use media_common::*;

/// Audio chunks hold whole frames of the configured duration, with exact running timestamps.
fn check_audio(p: &Packetizer, chunks: &[Chunk], spec: &WavSpec, frames: usize, config: &Config) {
    let Codec::Audio(a) = p.codec() else {
        panic!("not audio: {:?}", p.codec())
    };
    assert_eq!(a.channels, spec.channels);
    assert_eq!(a.sample_rate, spec.rate);
    assert_eq!(a.bits_per_sample, spec.bits);
    assert_eq!(
        a.sample_format,
        if spec.float {
            SampleFormat::Float
        } else {
            SampleFormat::Int
        }
    );
    let fb = spec.frame_bytes();
    let target =
        (u64::from(spec.rate) * u64::from(config.audio_chunk_us) / 1_000_000).max(1) as usize;
    let per = target.min(config.chunk_size / fb).max(1);
    let mut done = 0usize;
    let audio: Vec<&Chunk> = chunks.iter().filter(|c| !c.has(ChunkFlags::INIT)).collect();
    for (i, c) in audio.iter().enumerate() {
        assert!(c.has(ChunkFlags::KEY) && c.has(ChunkFlags::END_OF_UNIT));
        assert_eq!(c.payload.len() % fb, 0, "whole frames");
        let n = c.payload.len() / fb;
        assert!(
            n == per || i + 1 == audio.len(),
            "chunk {i} has {n} frames, want {per}"
        );
        assert_eq!(c.pts_us, frames_to_us(done as u64, spec.rate));
        done += n;
        assert_eq!(
            u64::from(c.duration_us),
            frames_to_us(done as u64, spec.rate) - c.pts_us
        );
    }
    assert_eq!(done, frames);
    assert_eq!(
        p.duration_us(),
        Some(frames_to_us(frames as u64, spec.rate))
    );
    // INIT chunks only before and after the audio: INIT* AUDIO* INIT*.
    let mut phase = 0;
    for c in chunks {
        match (phase, c.has(ChunkFlags::INIT)) {
            (0, false) => phase = 1,
            (1, true) => phase = 2,
            (2, false) => panic!("audio after trailing INIT"),
            _ => {}
        }
    }
}

#[test]
fn wav_variants_round_trip() {
    let specs = [
        WavSpec::pcm(1, 8000, 8),
        WavSpec::pcm(2, 44_100, 16),
        WavSpec::pcm(6, 48_000, 16),
        WavSpec::pcm(2, 96_000, 24),
        WavSpec::pcm(1, 22_050, 32),
        WavSpec {
            float: true,
            ..WavSpec::pcm(2, 48_000, 32)
        },
        WavSpec {
            extensible: true,
            ..WavSpec::pcm(6, 48_000, 24)
        },
        WavSpec {
            extensible: true,
            valid_bits: 20,
            ..WavSpec::pcm(2, 44_100, 24)
        },
        WavSpec {
            extensible: true,
            float: true,
            ..WavSpec::pcm(1, 32_000, 32)
        },
        WavSpec::pcm(3, 11_025, 16),
        WavSpec::pcm(1, 7, 16),
        WavSpec::pcm(5, 12_345, 24),
    ];
    for (k, spec) in specs.iter().enumerate() {
        for (before, after) in [(false, false), (true, false), (false, true), (true, true)] {
            let frames = [0, 1, 3, 1000, 7777][(k + usize::from(before) * 2) % 5];
            let data = wav(spec, frames, before, after, k as u64);
            let config = config();
            let (p, chunks) = packetize(
                &data,
                "a.wav",
                config.clone(),
                Pieces::Random(9000),
                k as u64,
            );
            check_audio(&p, &chunks, spec, frames, &config);
            reassemble(&chunks, &data, k as u64);
        }
    }
}

#[test]
fn wav_fed_one_byte_at_a_time_and_odd_sizes() {
    // 8-bit mono, odd frame count: the data chunk has a pad byte, then a LIST chunk.
    let spec = WavSpec::pcm(1, 8000, 8);
    let data = wav(&spec, 1001, true, true, 3);
    let mut config = config();
    config.chunk_size = 100;
    let (p, chunks) = packetize(&data, "x.WAV", config.clone(), Pieces::Fixed(1), 1);
    check_audio(&p, &chunks, &spec, 1001, &config);
    // The pad byte and the LIST chunk are trailing INIT bytes.
    assert!(chunks.last().is_some_and(|c| c.has(ChunkFlags::INIT)));
    reassemble(&chunks, &data, 1);
    // Large frames with a small chunk size: fewer frames per chunk, still whole frames.
    let spec = WavSpec::pcm(6, 48_000, 32);
    let data = wav(&spec, 2000, false, false, 4);
    let (p, chunks) = packetize(&data, "big.wav", config_with(1000), Pieces::Random(5000), 2);
    check_audio(&p, &chunks, &spec, 2000, &config_with(1000));
    reassemble(&chunks, &data, 2);
}

fn config_with(chunk_size: usize) -> Config {
    let mut c = config();
    c.chunk_size = chunk_size;
    c
}

#[test]
fn wav_streaming_writer_sizes_run_to_the_end() {
    let spec = WavSpec::pcm(2, 48_000, 16);
    // 1000 frames plus 2 stray bytes: the partial frame travels as INIT.
    let mut audio = Rng::new(5).bytes(1000 * 4);
    audio.extend_from_slice(&[1, 2]);
    for size in [0, u32::MAX] {
        let data = wav_with(&spec, &audio, true, false, Some(size));
        let config = config();
        let (p, chunks) = packetize(&data, "live.wav", config.clone(), Pieces::Random(3000), 9);
        check_audio(&p, &chunks, &spec, 1000, &config);
        let last = chunks.last().unwrap();
        assert!(last.has(ChunkFlags::INIT));
        assert!(last.payload.ends_with(&[1, 2]));
        reassemble(&chunks, &data, 9);
    }
}

#[test]
fn wav_hour_ends_exactly() {
    static ZEROS: [u8; 1 << 20] = [0; 1 << 20];
    let spec = WavSpec::pcm(2, 48_000, 16);
    let frames = 3600 * 48_000u64;
    let header = wav_with(&spec, &[], false, false, Some((frames * 4) as u32));
    let len = header.len() as u64 + frames * 4;
    let mut source = Cursor::new(header.clone());
    let mut p = Packetizer::open(config(), &mut source, len, "hour.wav").unwrap();
    assert_eq!(p.duration_us(), Some(3_600_000_000));
    assert_eq!(p.chunk_count(), Some(1 + 180_000));
    let mut out = Vec::new();
    p.push(Bytes::from(header), &mut out).unwrap();
    let mut left = frames * 4;
    let (mut count, mut last_end, mut expect_pts) = (0u64, 0u64, 0u64);
    while left > 0 {
        let n = left.min(ZEROS.len() as u64) as usize;
        p.push(Bytes::from_static(&ZEROS[..n]), &mut out).unwrap();
        left -= n as u64;
        if left == 0 {
            p.finish(&mut out).unwrap();
        }
        for c in out.drain(..) {
            count += 1;
            if !c.has(ChunkFlags::INIT) {
                assert_eq!(c.pts_us, expect_pts);
                expect_pts += u64::from(c.duration_us);
                assert_eq!(c.duration_us, 20_000);
                last_end = c.pts_us + u64::from(c.duration_us);
            }
        }
    }
    assert_eq!(count, 180_001);
    assert_eq!(last_end, 3_600_000_000);
    // At 44.1 kHz 20 ms is 882 frames exactly; at 11.025 kHz it is 220.5 → 220, and the
    // timestamps still end on the exact duration.
    assert_eq!(frames_to_us(3600 * 44_100, 44_100), 3_600_000_000);
    assert_eq!(frames_to_us(3600 * 11_025, 11_025), 3_600_000_000);
}

fn rgb(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x * 7) as u8, (y * 5) as u8, ((x ^ y) * 3) as u8])
    })
}

fn encode(img: &DynamicImage, f: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, f).unwrap();
    out.into_inner()
}

#[test]
fn images_round_trip() {
    let rgb8 = DynamicImage::ImageRgb8(rgb(300, 200));
    let rgba8 = DynamicImage::ImageRgba8(RgbaImage::from_fn(120, 90, |x, y| {
        Rgba([x as u8, y as u8, 9, (x + y) as u8])
    }));
    let cases = [
        (&rgba8, ImageFormat::Png, "card.png", VisualFormat::Png, 3),
        (
            &rgb8,
            ImageFormat::Jpeg,
            "photo.jpeg",
            VisualFormat::Jpeg,
            2,
        ),
        (&rgba8, ImageFormat::Gif, "anim.gif", VisualFormat::Gif, 3),
        (&rgb8, ImageFormat::Bmp, "pic.bmp", VisualFormat::Bmp, 2),
        (&rgba8, ImageFormat::WebP, "pic.webp", VisualFormat::WebP, 3),
        (&rgb8, ImageFormat::Tiff, "scan.tiff", VisualFormat::Tiff, 2),
    ];
    for (i, (img, f, name, vf, color)) in cases.into_iter().enumerate() {
        let data = encode(img, f);
        // Named as the format, and nameless (magic only).
        for name in [name, "download"] {
            let (p, chunks) = packetize(
                &data,
                name,
                config_with(4096),
                Pieces::Random(3000),
                i as u64,
            );
            let Codec::Image(params) = p.codec() else {
                panic!("{name}: {:?}", p.codec())
            };
            assert_eq!(
                (params.format, params.width, params.height, params.color),
                (vf, img.width(), img.height(), color)
            );
            assert!(
                chunks
                    .iter()
                    .all(|c| c.has(ChunkFlags::KEY) && c.pts_us == 0)
            );
            assert!(
                chunks
                    .iter()
                    .rev()
                    .skip(1)
                    .all(|c| !c.has(ChunkFlags::END_OF_UNIT))
            );
            reassemble(&chunks, &data, i as u64);
            let units = units(p.codec(), &chunks);
            assert_eq!(units.len(), 1);
            assert!(units[0].data == data);
        }
    }
}

fn units(codec: Codec, chunks: &[Chunk]) -> Vec<chunkcast_media::Unit> {
    let mut a = UnitAssembler::new(codec, 64 << 20);
    chunks
        .iter()
        .filter_map(|c| a.push(c.clone()).unwrap())
        .collect()
}

fn jpeg(seed: u32, w: u32, h: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x + seed * 10) as u8, (y * 3) as u8, seed as u8])
    });
    encode(&DynamicImage::ImageRgb8(img), ImageFormat::Jpeg)
}

/// A JPEG with an APP1 segment holding a "thumbnail" (its own SOI..EOI) after the SOI.
fn jpeg_with_thumbnail(seed: u32) -> Vec<u8> {
    let inner = jpeg(seed + 100, 8, 8);
    let main = jpeg(seed, 64, 48);
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend_from_slice(&((inner.len() + 2 + 6) as u16).to_be_bytes());
    app1.extend_from_slice(b"Exif\0\0");
    app1.extend_from_slice(&inner);
    let mut out = main[..2].to_vec();
    out.extend_from_slice(&app1);
    out.extend_from_slice(&main[2..]);
    out
}

#[test]
fn mjpeg_frames_are_units() {
    let mut data = Vec::new();
    let mut frames = Vec::new();
    for i in 0..12 {
        // Frame 5 is large (several chunks) and frame 3 carries a thumbnail.
        let f = match i {
            3 => jpeg_with_thumbnail(i),
            5 => jpeg(i, 400, 300),
            _ => jpeg(i, 64, 48),
        };
        data.extend_from_slice(&f);
        if i == 7 {
            data.extend_from_slice(b"\0\0padding\xFF\xFF");
        }
        frames.push(f);
    }
    for (name, seed) in [
        ("clip.mjpeg", 1),
        ("clip.MJPG", 2),
        ("clip", 3),
        ("clip.bin", 4),
    ] {
        let mut config = config_with(2000);
        config.mjpeg_fps = (30000, 1001);
        let pieces = if seed == 4 {
            Pieces::Fixed(1)
        } else {
            Pieces::Random(5000)
        };
        let (p, chunks) = packetize(&data, name, config, pieces, seed);
        let Codec::Video(v) = p.codec() else {
            panic!("{name}: {:?}", p.codec())
        };
        assert_eq!(
            (v.format, v.width, v.height, v.fps_num, v.fps_den),
            (VisualFormat::Mjpeg, 64, 48, 30000, 1001)
        );
        assert!(
            chunks
                .iter()
                .filter(|c| !c.has(ChunkFlags::INIT))
                .all(|c| c.has(ChunkFlags::KEY))
        );
        assert_eq!(
            chunks.iter().filter(|c| c.has(ChunkFlags::INIT)).count(),
            1,
            "the padding"
        );
        reassemble(&chunks, &data, seed);
        let units = units(p.codec(), &chunks);
        assert_eq!(units.len(), frames.len());
        for (n, (u, f)) in units.iter().zip(&frames).enumerate() {
            assert!(u.data == f[..], "frame {n}");
            assert!(u.key);
            assert_eq!(u.pts_us, n as u64 * 1_000_000 * 1001 / 30000);
        }
        image::load_from_memory_with_format(&units[3].data, ImageFormat::Jpeg).unwrap();
    }
    // A single JPEG named .jpg with another JPEG appended (MPF-style) stays an image.
    let (p, _) = packetize(&data, "photo.jpg", config(), Pieces::Random(5000), 5);
    assert!(matches!(p.codec(), Codec::Image(i) if i.format == VisualFormat::Jpeg));
}

fn y4m(
    w: u32,
    h: u32,
    colour: &str,
    frame_bytes: usize,
    frames: usize,
    params: bool,
) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut data =
        format!("YUV4MPEG2 W{w} H{h} F30000:1001 Ip A1:1 C{colour} XYSCSS=TEST\n").into_bytes();
    let mut planes = Vec::new();
    let mut rng = Rng::new(u64::from(w * h));
    for i in 0..frames {
        if params && i % 2 == 1 {
            data.extend_from_slice(format!("FRAME Ixyz{i} Xa=b\n").as_bytes());
        } else {
            data.extend_from_slice(b"FRAME\n");
        }
        let p = rng.bytes(frame_bytes);
        data.extend_from_slice(&p);
        planes.push(p);
    }
    (data, planes)
}

#[test]
fn y4m_frames_are_units() {
    let cases = [
        (16, 8, "420jpeg", 16 * 8 + 2 * 8 * 4),
        (15, 9, "420mpeg2", 135 + 2 * 8 * 5),
        (16, 8, "420paldv", 192),
        (10, 4, "422", 40 + 2 * 5 * 4),
        (10, 4, "444", 120),
        (10, 4, "mono", 40),
        (10, 4, "420p10", 2 * (40 + 2 * 5 * 2)),
        (160, 120, "420", 28_800),
    ];
    for (k, (w, h, colour, fb)) in cases.into_iter().enumerate() {
        for params in [false, true] {
            let frames = 7;
            let (data, planes) = y4m(w, h, colour, fb, frames, params);
            let (p, chunks) = packetize(
                &data,
                "v.y4m",
                config_with(1000),
                Pieces::Random(2500),
                k as u64,
            );
            let Codec::Video(v) = p.codec() else { panic!() };
            assert_eq!(
                (v.format, v.width, v.height, v.fps_num, v.fps_den),
                (VisualFormat::Y4m, w, h, 30000, 1001)
            );
            assert_eq!(p.duration_us(), Some(7 * 1_000_000 * 1001 / 30000));
            assert!(chunks[0].has(ChunkFlags::INIT));
            reassemble(&chunks, &data, k as u64);
            let units = units(p.codec(), &chunks);
            assert_eq!(units.len(), frames);
            for (u, pl) in units.iter().zip(&planes) {
                assert!(u.data == pl[..]);
            }
        }
    }
    // Only a header: one INIT chunk.
    let (data, _) = y4m(4, 4, "444", 48, 0, false);
    let (_, chunks) = packetize(&data, "empty.y4m", config(), Pieces::Fixed(5), 0);
    assert_eq!(chunks.len(), 1);
}

#[test]
fn bytes_formats_and_tiny_files() {
    let mut rng = Rng::new(11);
    let blob = rng.bytes(300_000);
    for name in [
        "movie.mkv",
        "movie.webm",
        "old.avi",
        "data",
        "archive.tar.gz",
        "Mon film d'été 🎬.bin",
    ] {
        let (p, chunks) = packetize(&blob, name, config(), Pieces::Random(100_000), 1);
        assert_eq!(p.codec(), Codec::Bytes);
        assert_eq!(chunks.len(), 300_000usize.div_ceil(64 * 1024));
        assert!(
            chunks
                .iter()
                .all(|c| c.has(ChunkFlags::KEY) && c.has(ChunkFlags::END_OF_UNIT))
        );
        reassemble(&chunks, &blob, 1);
    }
    let (p, chunks) = packetize(&[], "empty.bin", config(), Pieces::Fixed(1), 0);
    assert_eq!(
        (p.codec(), p.chunk_count(), chunks.len()),
        (Codec::Bytes, Some(1), 1)
    );
    assert!(chunks[0].payload.is_empty() && chunks[0].has(ChunkFlags::END_OF_STREAM));
    reassemble(&chunks, &[], 0);
    let (_, chunks) = packetize(&[0x42], "one", config(), Pieces::Fixed(1), 0);
    assert_eq!(chunks.len(), 1);
    reassemble(&chunks, &[0x42], 0);
    // raw serves anything as bytes.
    let data = wav(&WavSpec::pcm(2, 48_000, 16), 100, false, false, 0);
    let mut raw = config();
    raw.raw = true;
    let (p, _) = packetize(&data, "a.wav", raw, Pieces::Random(100), 0);
    assert_eq!(p.codec(), Codec::Bytes);
}

#[test]
fn audio_units_are_pcm_and_init_is_the_header() {
    let spec = WavSpec::pcm(2, 48_000, 16);
    let data = wav(&spec, 5000, true, true, 8);
    let (p, chunks) = packetize(&data, "a.wav", config(), Pieces::Random(10_000), 3);
    let mut a = UnitAssembler::new(p.codec(), 1 << 20);
    let mut pcm = Vec::new();
    for c in &chunks {
        if let Some(u) = a.push(c.clone()).unwrap() {
            assert!(u.key);
            pcm.extend_from_slice(&u.data);
        }
    }
    let header_len = data.windows(4).position(|w| w == b"data").unwrap() + 8;
    assert_eq!(a.init_bytes(), &data[..header_len]);
    assert!(pcm == data[header_len..header_len + 20_000]);
    let Codec::Audio(params) = p.codec() else {
        panic!()
    };
    let mut f = Vec::new();
    pcm_to_f32(&params, &pcm, &mut f);
    assert_eq!(f.len(), 10_000);
    assert!(f.iter().all(|s| (-1.0..1.0).contains(s)));
}

#[test]
fn mp4_video_samples_are_units() {
    if !have_ffmpeg() {
        eprintln!("skipping mp4_video_samples_are_units: ffmpeg not on PATH");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in [
        ("plain.mp4", &[][..]),
        ("fast.mp4", &["-movflags", "+faststart"][..]),
    ] {
        let (data, h264) = ffmpeg_mp4(dir.path(), name, extra).expect("ffmpeg failed");
        let (p, chunks) = packetize(&data, name, config_with(8192), Pieces::Random(100_000), 6);
        // Without libx264 the clip is MPEG-4 part 2, which is served but flagged.
        assert_eq!(p.warning().is_none(), h264, "{name}: {:?}", p.warning());
        let Codec::Video(v) = p.codec() else {
            panic!("{name}: {:?} {:?}", p.codec(), p.warning())
        };
        assert_eq!(
            (v.format, v.width, v.height, v.fps_num, v.fps_den),
            (VisualFormat::Mp4, 160, 120, 25, 1)
        );
        assert!(
            (1_900_000..=2_100_000).contains(&p.duration_us().unwrap()),
            "{:?}",
            p.duration_us()
        );
        reassemble(&chunks, &data, 6);
        let units = units(p.codec(), &chunks);
        assert_eq!(units.len(), 50, "{name}");
        let keys: Vec<_> = units.iter().filter(|u| u.key).map(|u| u.index).collect();
        assert_eq!(keys, [0, 12, 24, 36, 48], "{name}");
        let mut pts: Vec<u64> = units.iter().map(|u| u.pts_us).collect();
        pts.sort_unstable();
        assert_eq!(
            pts,
            (0..50).map(|n| n * 40_000).collect::<Vec<_>>(),
            "{name}"
        );
        assert!(units.iter().all(|u| u.duration_us == 40_000));
        // Every unit is an AVCC sample: 4-byte NAL lengths that add up.
        for u in units.iter().filter(|_| h264) {
            let mut at = 0;
            while at < u.data.len() {
                let n = u32::from_be_bytes(u.data[at..at + 4].try_into().unwrap()) as usize;
                at += 4 + n;
            }
            assert_eq!(at, u.data.len());
        }
        // The leading INIT run holds ftyp (and moov when faststart).
        let mut a = UnitAssembler::new(p.codec(), 64 << 20);
        chunks.iter().for_each(|c| drop(a.push(c.clone())));
        assert_eq!(&a.init_bytes()[4..8], b"ftyp");
        let has_moov = a.init_bytes().windows(4).any(|w| w == b"moov");
        assert_eq!(has_moov, name == "fast.mp4");
        assert!(a.dropped_init_bytes() > 0, "audio samples travel as INIT");
    }
}

#[test]
fn state_machines_can_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Packetizer>();
    send_sync::<chunkcast_media::Reassembler>();
    send_sync::<UnitAssembler>();
}
