//! A deterministic sample media library and its generator.
//!
//! The chunkcast server generates this library on first start (into
//! [`default_cache_dir`]) and serves it as its built-in library; tests across
//! the workspace generate it into temporary directories. Every file is
//! synthesised, so nothing binary lives in the repository, and generation is
//! byte-for-byte reproducible: audio uses portable arithmetic rather than the
//! platform libm, and the filler bytes come from a fixed-seed splitmix64.
//!
//! | File | Contents |
//! |------|----------|
//! | `sweep-48k-stereo-s16.wav` | 10 s, 48 kHz, stereo, 16-bit PCM: 20 Hz → 20 kHz log sweep left, reversed right, -6 dBFS |
//! | `tone-8k-mono-s16.wav` | 3 s, 8 kHz, mono, 16-bit PCM: 440 Hz at -6 dBFS |
//! | `sweep-96k-stereo-s24.wav` | 3 s, 96 kHz, stereo, 24-bit PCM: the same sweep layout |
//! | `testcard-rgba.png` | 640x480 RGBA test card: colour bars, ramps, alpha ramp, transparent block, the number 1234 |
//! | `photo.jpg` | 640x480 baseline JPEG, quality 85, photo-like plasma with grain |
//! | `clip-320x240-25fps.mjpeg` | 125 frames (5 s) of 320x240 25 fps Motion JPEG, as `ffmpeg -f mjpeg` writes it |
//! | `clip-320x240-25fps.y4m` | 50 frames (2 s) of 320x240 25 fps YUV4MPEG2, 4:2:0 `C420jpeg` |
//! | `random-50MB.bin` | exactly 50,000,000 pseudo-random bytes |
//!
//! Each video frame shows its 0-based index in a small built-in bitmap font
//! that [`read_number`] / [`read_clip_frame_number`] read back from decoded
//! frames, so players and tests can detect dropped, repeated or reordered
//! frames.
//!
//! # Example
//!
//! ```no_run
//! use chunkcast_media_samples as samples;
//!
//! let dir = samples::default_cache_dir();
//! // Cheap when the library is already there: it only checks sizes.
//! samples::ensure(&dir)?;
//! let clip = std::fs::read(dir.join(samples::CLIP_MJPEG))?;
//! let frames = samples::split_mjpeg(&clip).expect("well-formed MJPEG");
//! assert_eq!(frames.len() as u32, samples::MJPEG_FRAMES);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Stamping and reading a frame number:
//!
//! ```
//! use chunkcast_media_samples::{draw_number, read_number};
//!
//! let mut img = image::RgbImage::new(100, 40);
//! draw_number(&mut img, 42, 4, 4, 3);
//! assert_eq!(read_number(&img, 4, 4, 3, 2), Some(42));
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod bytes;
mod image;
mod math;
mod video;
mod wav;

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub use crate::bytes::{RANDOM_LEN, random_bytes_at};
pub use crate::image::{
    draw_number, draw_number_padded, number_size, read_number, read_number_gray,
};
pub use crate::video::{
    CLIP_FPS, CLIP_HEIGHT, CLIP_NUMBER_DIGITS, CLIP_NUMBER_SCALE, CLIP_NUMBER_X, CLIP_NUMBER_Y,
    CLIP_WIDTH, MJPEG_FRAMES, Y4M_FRAME_LEN, Y4M_FRAMES, Y4M_HEADER, clip_frame,
    read_clip_frame_number, split_mjpeg,
};

/// Version of the generated content. Bump it whenever any output byte
/// changes, so existing caches (whose directory and stamp carry the
/// version) are regenerated instead of trusted.
pub const VERSION: u32 = 1;

/// Name of the marker file written after every sample is in place.
pub const STAMP_FILE: &str = ".chunkcast-samples-v1";

/// Last path component of [`default_cache_dir`].
const CACHE_LEAF: &str = "samples-v1";

/// `sweep-48k-stereo-s16.wav`.
pub const SWEEP_48K_WAV: &str = "sweep-48k-stereo-s16.wav";
/// `tone-8k-mono-s16.wav`.
pub const TONE_8K_WAV: &str = "tone-8k-mono-s16.wav";
/// `sweep-96k-stereo-s24.wav`.
pub const SWEEP_96K_WAV: &str = "sweep-96k-stereo-s24.wav";
/// `testcard-rgba.png`.
pub const TESTCARD_PNG: &str = "testcard-rgba.png";
/// `photo.jpg`.
pub const PHOTO_JPG: &str = "photo.jpg";
/// `clip-320x240-25fps.mjpeg`.
pub const CLIP_MJPEG: &str = "clip-320x240-25fps.mjpeg";
/// `clip-320x240-25fps.y4m`.
pub const CLIP_Y4M: &str = "clip-320x240-25fps.y4m";
/// `random-50MB.bin`.
pub const RANDOM_BIN: &str = "random-50MB.bin";

/// One file of the sample library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sample {
    /// File name inside the library directory (no path separators).
    pub name: &'static str,
    /// One-line human description of the contents.
    pub description: &'static str,
    /// Keeps the generator next to its name, so the list cannot drift from
    /// what [`generate`] writes.
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Sweep48k,
    Tone8k,
    Sweep96k,
    Testcard,
    Photo,
    Mjpeg,
    Y4m,
    Random,
}

/// Every file in the library, in the order [`generate`] writes them.
pub const SAMPLES: &[Sample] = &[
    Sample {
        name: SWEEP_48K_WAV,
        description: "10 s 48 kHz stereo 16-bit PCM, 20 Hz-20 kHz log sweep (right reversed), -6 dBFS",
        kind: Kind::Sweep48k,
    },
    Sample {
        name: TONE_8K_WAV,
        description: "3 s 8 kHz mono 16-bit PCM, 440 Hz tone, -6 dBFS",
        kind: Kind::Tone8k,
    },
    Sample {
        name: SWEEP_96K_WAV,
        description: "3 s 96 kHz stereo 24-bit PCM, 20 Hz-20 kHz log sweep (right reversed), -6 dBFS",
        kind: Kind::Sweep96k,
    },
    Sample {
        name: TESTCARD_PNG,
        description: "640x480 RGBA PNG test card with colour bars, ramps and transparency",
        kind: Kind::Testcard,
    },
    Sample {
        name: PHOTO_JPG,
        description: "640x480 baseline JPEG, quality 85, photo-like content",
        kind: Kind::Photo,
    },
    Sample {
        name: CLIP_MJPEG,
        description: "5 s 320x240 25 fps Motion JPEG (125 numbered frames)",
        kind: Kind::Mjpeg,
    },
    Sample {
        name: CLIP_Y4M,
        description: "2 s 320x240 25 fps YUV4MPEG2 4:2:0 (50 numbered frames)",
        kind: Kind::Y4m,
    },
    Sample {
        name: RANDOM_BIN,
        description: "50,000,000 deterministic pseudo-random bytes",
        kind: Kind::Random,
    },
];

/// Why generating the library failed. Every variant names the file involved.
///
/// The message does not repeat the underlying cause; it is available from
/// [`std::error::Error::source`] (anyhow's `{:#}` prints both).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file or directory failed.
    #[error("I/O error on {}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Encoding an image or video frame failed.
    #[error("cannot encode image {}", path.display())]
    Image {
        /// The sample being written.
        path: PathBuf,
        /// The underlying error.
        source: ::image::ImageError,
    },
    /// Encoding a WAV file failed.
    #[error("cannot encode WAV {}", path.display())]
    Wav {
        /// The sample being written.
        path: PathBuf,
        /// The underlying error.
        source: hound::Error,
    },
}

/// Path-less failure inside a format writer; [`write_sample`] attaches the
/// path once rather than every writer threading it through.
#[derive(Debug)]
pub(crate) enum Failure {
    Io(io::Error),
    Image(::image::ImageError),
    Wav(hound::Error),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<::image::ImageError> for Failure {
    fn from(e: ::image::ImageError) -> Self {
        Self::Image(e)
    }
}

impl From<hound::Error> for Failure {
    fn from(e: hound::Error) -> Self {
        Self::Wav(e)
    }
}

impl Failure {
    fn at(self, path: &Path) -> Error {
        let path = path.to_path_buf();
        match self {
            Self::Io(source) => Error::Io { path, source },
            Self::Image(source) => Error::Image { path, source },
            Self::Wav(source) => Error::Wav { path, source },
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes every sample into `dir` (created if missing), replacing any
/// existing files, and returns their paths in [`SAMPLES`] order.
///
/// Each file is written under a temporary name and renamed into place, and
/// the [`STAMP_FILE`] is written last, so an interrupted or failed run never
/// leaves a truncated file under a sample's name nor a stamp claiming the
/// library is complete. Concurrent runs on the same directory are safe: they
/// produce identical bytes and each rename is atomic.
pub fn generate(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let all: Vec<&Sample> = SAMPLES.iter().collect();
    let sizes = regenerate(dir, &all, &[])?;
    Ok(sizes.into_iter().map(|(name, _)| dir.join(name)).collect())
}

/// Makes sure `dir` holds a complete library from this generator version,
/// generating it only if not.
///
/// "Complete" means the [`STAMP_FILE`] is present and every sample exists
/// with the size recorded there; a healthy cache costs one small read and a
/// few `stat`s. Without a valid stamp everything is regenerated (an earlier
/// run may have died midway); with one, only samples that are missing or
/// have the wrong size are rewritten.
pub fn ensure(dir: &Path) -> Result<(), Error> {
    let Some(recorded) = read_stamp(dir) else {
        return generate(dir).map(drop);
    };
    let (intact, damaged): (Vec<_>, Vec<_>) = SAMPLES.iter().zip(recorded).partition(|(s, len)| {
        fs::metadata(dir.join(s.name)).is_ok_and(|meta| meta.is_file() && meta.len() == *len)
    });
    if damaged.is_empty() {
        return Ok(());
    }
    let damaged: Vec<&Sample> = damaged.into_iter().map(|(s, _)| s).collect();
    let intact: Vec<(&str, u64)> = intact.into_iter().map(|(s, len)| (s.name, len)).collect();
    regenerate(dir, &damaged, &intact).map(drop)
}

/// Writes `samples` and then a stamp covering them plus `intact` (already
/// present, with their sizes). Returns every sample's name and size in
/// [`SAMPLES`] order.
fn regenerate(
    dir: &Path,
    samples: &[&Sample],
    intact: &[(&'static str, u64)],
) -> Result<Vec<(&'static str, u64)>, Error> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    // Removed first so that, until everything below succeeds, the
    // directory does not claim to be complete.
    let stamp = dir.join(STAMP_FILE);
    match fs::remove_file(&stamp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_error(&stamp)(e)),
        _ => {}
    }
    // One thread per sample: the files are independent, and in unoptimised
    // builds the MJPEG encode alone would otherwise dominate. Results are
    // taken in order, so the first error reported is deterministic.
    let results: Vec<Result<u64, Error>> = std::thread::scope(|scope| {
        let workers: Vec<_> = samples
            .iter()
            .map(|&sample| scope.spawn(move || write_sample(dir, sample)))
            .collect();
        workers
            .into_iter()
            .zip(samples)
            .map(|(worker, sample)| {
                worker.join().unwrap_or_else(|_| {
                    Err(io_error(&dir.join(sample.name))(io::Error::other(
                        "sample writer panicked",
                    )))
                })
            })
            .collect()
    });
    let mut sizes = intact.to_vec();
    for (sample, result) in samples.iter().zip(results) {
        sizes.push((sample.name, result?));
    }
    sizes.sort_by_key(|(name, _)| SAMPLES.iter().position(|s| s.name == *name));
    let mut manifest = format!("{STAMP_HEADER}\n");
    for (name, len) in &sizes {
        manifest.push_str(&format!("{len} {name}\n"));
    }
    write_atomically(dir, STAMP_FILE, |out| {
        Ok(out.write_all(manifest.as_bytes())?)
    })?;
    Ok(sizes)
}

/// First line of the stamp; the rest is one `SIZE NAME` line per sample.
const STAMP_HEADER: &str = "chunkcast-media-samples 1";

/// The recorded size of every sample, in [`SAMPLES`] order, or `None` if the
/// stamp is missing, from another version, or does not list exactly the
/// current samples.
fn read_stamp(dir: &Path) -> Option<Vec<u64>> {
    let stamp = fs::read_to_string(dir.join(STAMP_FILE)).ok()?;
    let mut lines = stamp.lines();
    if lines.next()? != STAMP_HEADER {
        return None;
    }
    let mut sizes = Vec::with_capacity(SAMPLES.len());
    for (sample, line) in SAMPLES.iter().zip(lines.by_ref()) {
        let (len, name) = line.split_once(' ')?;
        if name != sample.name {
            return None;
        }
        sizes.push(len.parse().ok()?);
    }
    (sizes.len() == SAMPLES.len() && lines.next().is_none()).then_some(sizes)
}

/// Where the server keeps its generated library:
///
/// 1. `$CHUNKCAST_SAMPLES_DIR`, if set and non-empty;
/// 2. `$XDG_CACHE_HOME/chunkcast/samples-v1`, if that is an absolute path;
/// 3. `$HOME/.cache/chunkcast/samples-v1`;
/// 4. `<temp dir>/chunkcast-samples-v1`.
///
/// The directory is not created; [`ensure`] and [`generate`] do that.
pub fn default_cache_dir() -> PathBuf {
    cache_dir_from(|key| std::env::var_os(key))
}

fn cache_dir_from(var: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let var = |key| {
        var(key)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("CHUNKCAST_SAMPLES_DIR") {
        return dir;
    }
    let leaf = Path::new("chunkcast").join(CACHE_LEAF);
    // The XDG spec says relative values are invalid and must be ignored.
    if let Some(cache) = var("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
        return cache.join(leaf);
    }
    if let Some(home) = var("HOME") {
        return home.join(".cache").join(leaf);
    }
    std::env::temp_dir().join(format!("chunkcast-{CACHE_LEAF}"))
}

fn write_sample(dir: &Path, sample: &Sample) -> Result<u64, Error> {
    write_atomically(dir, sample.name, |out| {
        match sample.kind {
            Kind::Sweep48k => out.write_all(&wav::sweep_48k_stereo_s16()?)?,
            Kind::Tone8k => out.write_all(&wav::tone_8k_mono_s16()?)?,
            Kind::Sweep96k => out.write_all(&wav::sweep_96k_stereo_s24()?)?,
            Kind::Testcard => out.write_all(&image::testcard_png()?)?,
            Kind::Photo => out.write_all(&image::photo_jpg()?)?,
            Kind::Mjpeg => video::write_mjpeg(out)?,
            Kind::Y4m => video::write_y4m(out)?,
            Kind::Random => bytes::write_random(out)?,
        }
        Ok(())
    })
}

/// Distinguishes temporary files of concurrent writers in one process;
/// the process id distinguishes processes.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `name` in `dir` via a temporary file and an atomic rename, and
/// returns the file's size.
///
/// The data is deliberately not fsynced: syncing 60 MB would slow every
/// test that generates, and this is a regenerable cache. The rename already
/// protects against a killed process; after a power loss, unflushed files
/// typically come back empty or short, which [`ensure`]'s size check catches.
fn write_atomically(
    dir: &Path,
    name: &str,
    body: impl FnOnce(&mut BufWriter<File>) -> Result<(), Failure>,
) -> Result<u64, Error> {
    let path = dir.join(name);
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    // Leading dot and `.partial` keep it out of listings and .gitignore'd.
    let temp = TempFile(dir.join(format!(".{name}.{}-{n}.partial", std::process::id())));
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(&temp.0)
        .map_err(io_error(&temp.0))?;
    let mut out = BufWriter::with_capacity(1 << 16, file);
    body(&mut out).map_err(|e| e.at(&path))?;
    let file = out
        .into_inner()
        .map_err(|e| io_error(&path)(e.into_error()))?;
    let len = file.metadata().map_err(io_error(&temp.0))?.len();
    drop(file);
    fs::rename(&temp.0, &path).map_err(io_error(&path))?;
    temp.disarm();
    Ok(len)
}

/// Deletes the temporary file on every early return; disarmed once renamed.
struct TempFile(PathBuf);

impl TempFile {
    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // Best effort: the write error being reported matters more.
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn cache_dir_precedence() {
        let env = |pairs: &[(&str, &str)]| {
            let map: HashMap<String, OsString> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), OsString::from(v)))
                .collect();
            cache_dir_from(move |k| map.get(k).cloned())
        };
        let all = [
            ("CHUNKCAST_SAMPLES_DIR", "/explicit"),
            ("XDG_CACHE_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(env(&all), Path::new("/explicit"));
        assert_eq!(env(&all[1..]), Path::new("/xdg/chunkcast/samples-v1"));
        assert_eq!(
            env(&[
                ("CHUNKCAST_SAMPLES_DIR", ""),
                ("XDG_CACHE_HOME", "rel"),
                ("HOME", "/h")
            ]),
            Path::new("/h/.cache/chunkcast/samples-v1")
        );
        assert_eq!(env(&[]), std::env::temp_dir().join("chunkcast-samples-v1"));
    }

    #[test]
    fn stamp_must_match_version_and_sample_list() {
        let dir = tempfile::tempdir().unwrap();
        let good: String = std::iter::once(format!("{STAMP_HEADER}\n"))
            .chain(
                SAMPLES
                    .iter()
                    .map(|s| format!("{} {}\n", s.name.len(), s.name)),
            )
            .collect();
        let stamp = dir.path().join(STAMP_FILE);
        fs::write(&stamp, &good).unwrap();
        let lens: Vec<u64> = SAMPLES.iter().map(|s| s.name.len() as u64).collect();
        assert_eq!(read_stamp(dir.path()), Some(lens));
        for bad in [
            good.replace(STAMP_HEADER, "chunkcast-media-samples 0"),
            good.replace(SAMPLES[1].name, "other.wav"),
            good.replacen(" ", "x ", 2),
            format!("{good}1 extra.bin\n"),
            good.lines()
                .take(SAMPLES.len())
                .collect::<Vec<_>>()
                .join("\n"),
            String::new(),
        ] {
            fs::write(&stamp, &bad).unwrap();
            assert_eq!(read_stamp(dir.path()), None, "{bad:?}");
        }
    }

    #[test]
    fn sample_names_are_unique_plain_file_names() {
        for (i, s) in SAMPLES.iter().enumerate() {
            assert!(!s.name.contains(['/', '\\']) && !s.name.starts_with('.'));
            assert!(
                SAMPLES[..i]
                    .iter()
                    .all(|t| t.name != s.name && t.kind != s.kind)
            );
        }
        assert!(STAMP_FILE.ends_with(&format!("v{VERSION}")));
        assert!(STAMP_HEADER.ends_with(&format!(" {VERSION}")));
        assert!(CACHE_LEAF.ends_with(&format!("v{VERSION}")));
    }
}
