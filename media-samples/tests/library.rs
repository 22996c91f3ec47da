//! End-to-end checks of the generated library, decoding every file with
//! independent readers (hound, the image crate's decoders) rather than
//! trusting the writers.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chunkcast_media_samples::{self as samples, Error, SAMPLES};
use image::{DynamicImage, GrayImage};

/// One library shared by the read-only tests, since generating is the slow
/// part, with the paths `generate` returned. It sits one level below the
/// temporary directory to check that `generate` creates directories.
fn shared() -> &'static (tempfile::TempDir, Vec<PathBuf>) {
    static LIBRARY: OnceLock<(tempfile::TempDir, Vec<PathBuf>)> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let written = samples::generate(&tmp.path().join("lib")).unwrap();
        (tmp, written)
    })
}

fn library() -> PathBuf {
    shared().0.path().join("lib")
}

fn read(name: &str) -> Vec<u8> {
    fs::read(library().join(name)).unwrap()
}

#[test]
fn generate_returns_every_sample_and_leaves_no_temporaries() {
    let expected: Vec<PathBuf> = SAMPLES.iter().map(|s| library().join(s.name)).collect();
    assert_eq!(shared().1, expected);
    let mut names: Vec<String> = fs::read_dir(library())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut want: Vec<String> = SAMPLES.iter().map(|s| s.name.to_owned()).collect();
    want.push(samples::STAMP_FILE.to_owned());
    want.sort();
    assert_eq!(names, want);
    // generate() leaves a stamp that ensure() accepts without rewriting.
    let before = identities(&library());
    samples::ensure(&library()).unwrap();
    assert_eq!(identities(&library()), before);
}

fn check_wav(name: &str, channels: u16, rate: u32, bits: u16, seconds: u32) -> Vec<i32> {
    let reader = hound::WavReader::open(library().join(name)).unwrap();
    let spec = reader.spec();
    assert_eq!(
        (
            spec.channels,
            spec.sample_rate,
            spec.bits_per_sample,
            spec.sample_format
        ),
        (channels, rate, bits, hound::SampleFormat::Int),
        "{name}"
    );
    assert_eq!(reader.duration(), rate * seconds, "{name}");
    let samples: Vec<i32> = reader.into_samples().map(Result::unwrap).collect();
    // -6 dBFS peak: within a couple of LSB of half scale, never above.
    let half = ((1_i64 << (bits - 1)) - 1) as f64 * 0.5;
    let peak = samples.iter().map(|s| i64::from(*s).abs()).max().unwrap() as f64;
    assert!(
        peak <= half.round() && peak > half * 0.99,
        "{name}: peak {peak}"
    );
    samples
}

#[test]
fn wav_files_have_the_documented_format() {
    for (name, rate, bits, seconds) in [
        (samples::SWEEP_48K_WAV, 48_000, 16, 10),
        (samples::SWEEP_96K_WAV, 96_000, 24, 3),
    ] {
        let interleaved = check_wav(name, 2, rate, bits, seconds);
        let left: Vec<i32> = interleaved.iter().step_by(2).copied().collect();
        let right: Vec<i32> = interleaved.iter().skip(1).step_by(2).copied().collect();
        assert!(
            left.iter().eq(right.iter().rev()),
            "{name}: right is reversed left"
        );
        assert_eq!(left[0], 0, "{name}: fades in from silence");
        // Zero crossings per 10 ms near the start vs the end show the sweep
        // rises from ~20 Hz to ~20 kHz.
        let crossings = |s: &[i32]| s.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        let window = rate as usize / 100;
        let start = crossings(&left[window..2 * window]);
        let end = crossings(&left[left.len() - 3 * window..left.len() - 2 * window]);
        assert!(start <= 2, "{name}: {start} crossings at start");
        assert!(end > 300, "{name}: {end} crossings at end");
    }
    let tone = check_wav(samples::TONE_8K_WAV, 1, 8_000, 16, 3);
    let crossings = tone.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    assert!(
        (2 * 440 * 3 - 4..=2 * 440 * 3 + 4).contains(&crossings),
        "{crossings}"
    );
}

#[test]
fn testcard_png_has_alpha() {
    let img =
        image::load_from_memory_with_format(&read(samples::TESTCARD_PNG), image::ImageFormat::Png)
            .unwrap();
    assert!(matches!(img, DynamicImage::ImageRgba8(_)));
    let rgba = img.to_rgba8();
    assert_eq!(rgba.dimensions(), (640, 480));
    let alphas: std::collections::BTreeSet<u8> = rgba.pixels().map(|p| p.0[3]).collect();
    assert!(alphas.contains(&0) && alphas.contains(&255) && alphas.len() > 100);
    let rgb = DynamicImage::ImageRgba8(rgba).to_rgb8();
    assert_eq!(samples::read_number(&rgb, 245, 93, 6, 4), Some(1234));
}

#[test]
fn photo_jpg_decodes() {
    let data = read(samples::PHOTO_JPG);
    assert_eq!(&data[..2], [0xFF, 0xD8]);
    let img = image::load_from_memory_with_format(&data, image::ImageFormat::Jpeg).unwrap();
    assert_eq!((img.width(), img.height()), (640, 480));
}

#[test]
fn mjpeg_is_125_numbered_baseline_frames() {
    let data = read(samples::CLIP_MJPEG);
    let frames = samples::split_mjpeg(&data).expect("clean SOI..EOI sequence");
    assert_eq!(frames.len(), 125);
    assert_eq!(frames.iter().map(|f| f.len()).sum::<usize>(), data.len());
    for (index, frame) in (0_u32..).zip(&frames) {
        assert_eq!(&frame[..2], [0xFF, 0xD8]);
        assert_eq!(&frame[frame.len() - 2..], [0xFF, 0xD9]);
        // SOF0 = baseline DCT, which every MJPEG consumer supports.
        assert!(
            frame.windows(2).any(|w| w == [0xFF, 0xC0]),
            "frame {index} is baseline"
        );
        let img = image::load_from_memory_with_format(frame, image::ImageFormat::Jpeg)
            .unwrap()
            .to_rgb8();
        assert_eq!(img.dimensions(), (320, 240));
        assert_eq!(
            samples::read_clip_frame_number(&img),
            Some(index),
            "frame {index}"
        );
    }
}

#[test]
fn y4m_layout_and_frame_numbers() {
    let data = read(samples::CLIP_Y4M);
    let header = b"YUV4MPEG2 W320 H240 F25:1 Ip A1:1 C420jpeg\n";
    assert_eq!(&data[..header.len()], header);
    assert_eq!(samples::Y4M_HEADER.as_bytes(), header);
    let (w, h) = (320_usize, 240_usize);
    let frame_len = 6 + w * h * 3 / 2;
    assert_eq!(frame_len as u64, samples::Y4M_FRAME_LEN);
    assert_eq!(data.len(), header.len() + 50 * frame_len);
    for (index, frame) in (0_u32..).zip(data[header.len()..].chunks_exact(frame_len)) {
        assert_eq!(&frame[..6], b"FRAME\n");
        let luma = GrayImage::from_raw(w as u32, h as u32, frame[6..6 + w * h].to_vec()).unwrap();
        let number = samples::read_number_gray(
            &luma,
            samples::CLIP_NUMBER_X,
            samples::CLIP_NUMBER_Y,
            samples::CLIP_NUMBER_SCALE,
            samples::CLIP_NUMBER_DIGITS,
        );
        assert_eq!(number, Some(index));
        // Limited range: black and white overlays land on 16 and 235.
        assert_eq!(frame[6..6 + w * h].iter().min(), Some(&16));
        assert_eq!(frame[6..6 + w * h].iter().max(), Some(&235));
    }
}

#[test]
fn random_bin_matches_its_generator() {
    let path = library().join(samples::RANDOM_BIN);
    assert_eq!(fs::metadata(&path).unwrap().len(), 50_000_000);
    let data = fs::read(path).unwrap();
    for (start, len) in [(0, 1 << 20), (12_345_677, 1000), (49_999_000, 1000)] {
        let mut want = vec![0; len];
        samples::random_bytes_at(start as u64, &mut want);
        assert!(data[start..start + len] == want[..], "range at {start}");
    }
}

/// Content hash pinned for the files produced purely by this crate's own
/// arithmetic, so any change to their bytes (which must come with a VERSION
/// bump) fails here, and so a platform with different floating point or
/// integer behaviour is caught. PNG and JPEG bytes depend on the image
/// crate's encoders and are covered by the decode tests instead.
#[test]
fn pinned_content_hashes() {
    fn fnv1a(data: &[u8]) -> u64 {
        data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }
    let got: Vec<(&str, u64)> = [
        samples::SWEEP_48K_WAV,
        samples::TONE_8K_WAV,
        samples::SWEEP_96K_WAV,
        samples::CLIP_Y4M,
    ]
    .into_iter()
    .map(|name| (name, fnv1a(&read(name))))
    .collect();
    let mut head = [0; 8];
    samples::random_bytes_at(0, &mut head);
    assert_eq!(
        (got, head),
        (
            vec![
                (samples::SWEEP_48K_WAV, 1_354_094_609_522_742_646),
                (samples::TONE_8K_WAV, 967_812_976_554_524_197),
                (samples::SWEEP_96K_WAV, 7_806_816_395_252_772_537),
                (samples::CLIP_Y4M, 16_347_931_723_027_996_598),
            ],
            [124, 147, 213, 245, 124, 213, 200, 187]
        )
    );
}

#[cfg(unix)]
fn identity(path: &Path) -> (u64, std::time::SystemTime) {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(path).unwrap();
    (meta.ino(), meta.modified().unwrap())
}

#[cfg(not(unix))]
fn identity(path: &Path) -> (u64, std::time::SystemTime) {
    let meta = fs::metadata(path).unwrap();
    (meta.len(), meta.modified().unwrap())
}

fn identities(dir: &Path) -> Vec<(u64, std::time::SystemTime)> {
    SAMPLES
        .iter()
        .map(|s| s.name)
        .chain([samples::STAMP_FILE])
        .map(|name| identity(&dir.join(name)))
        .collect()
}

/// Also the determinism check: `ensure` generates a second library, which
/// must match the shared one byte for byte. (Folded together because each
/// generation costs a few seconds in unoptimised builds.)
#[test]
fn ensure_generates_once_deterministically_and_repairs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    samples::ensure(&dir).unwrap();
    for sample in SAMPLES {
        let a = fs::read(library().join(sample.name)).unwrap();
        let b = fs::read(dir.join(sample.name)).unwrap();
        assert!(a == b, "{} differs between runs", sample.name);
    }
    let first = identities(&dir);
    // Every file is replaced by rename when written, so an untouched library
    // keeps its inode numbers (and mtimes).
    samples::ensure(&dir).unwrap();
    assert_eq!(identities(&dir), first);

    // A truncated sample (say, a stray edit) is noticed by its size, and a
    // missing one by its absence.
    let tone = dir.join(samples::TONE_8K_WAV);
    let photo = dir.join(samples::PHOTO_JPG);
    fs::write(&tone, b"RIFF").unwrap();
    fs::remove_file(&photo).unwrap();
    let bin = dir.join(samples::RANDOM_BIN);
    let bin_before = identity(&bin);
    samples::ensure(&dir).unwrap();
    // Only the damaged files are rewritten.
    assert_eq!(identity(&bin), bin_before);
    assert_eq!(
        fs::read(&tone).unwrap(),
        fs::read(library().join(samples::TONE_8K_WAV)).unwrap()
    );
    assert_eq!(
        fs::read(&photo).unwrap(),
        fs::read(library().join(samples::PHOTO_JPG)).unwrap()
    );

    // Without the stamp, a run that died midway is assumed and redone.
    let stamp = dir.join(samples::STAMP_FILE);
    fs::remove_file(&stamp).unwrap();
    let before = identity(&dir.join(samples::CLIP_Y4M));
    samples::ensure(&dir).unwrap();
    assert!(stamp.is_file());
    assert_ne!(identity(&dir.join(samples::CLIP_Y4M)), before);
}

#[test]
fn errors_name_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    fs::write(&file, b"").unwrap();
    let err = samples::generate(&file).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
    assert!(std::error::Error::source(&err).is_some());
}
