//! Sinks: where `play` renders what the playout buffer releases.
//!
//! A [`Sink`] gets every chunk as it arrives ([`Sink::arrived`]), then each unit at its play
//! time ([`Sink::play`]) and each concealed gap when it is due ([`Sink::conceal`]); finally
//! [`Sink::finish`] flushes it and moves its output to the final name. Every call is short
//! (a write of one unit to a file or a pipe), so sinks run inline on the playout task; the
//! one that does real work, [`frames`], hands decoding and PNG encoding to its own thread.
//!
//! | `--sink` | sink | writes |
//! |---|---|---|
//! | `null` (default) | [`Null`] | nothing: plays in real time for the statistics |
//! | `file:PATH` | [`file::File`] | the stream's bytes as they arrived, init chunks included (rebuilds the file) |
//! | `wav:PATH` | [`wav::Wav`] | a WAV of what was played, concealment included |
//! | `pcm:-` or `pcm:PATH` | [`pcm::Pcm`] | raw interleaved PCM as played (the file's sample format) |
//! | `mjpeg:-` or `mjpeg:PATH` | [`mjpeg::Mjpeg`] | each played JPEG; a freeze repeats the last one |
//! | `frames:DIR` | [`frames::Frames`] | each played frame (or the image) as `DIR/frame-NNNNNN.png` |
//!
//! Files are written as `PATH.partial` and renamed by [`Sink::finish`], so a failed or
//! interrupted run never leaves a truncated file under the final name (a `wav:` sink is still
//! finished on Ctrl-C: the WAV of what was played is complete).
//!
//! ```
//! use chunkcast_client::sink::Spec;
//!
//! let spec: Spec = "wav:out.wav".parse()?;
//! assert_eq!(spec.to_string(), "wav:out.wav");
//! assert!("pcm:-".parse::<Spec>()?.is_stdout());
//! assert!("speaker:".parse::<Spec>().is_err());
//! # Ok::<(), chunkcast_client::error::ClientError>(())
//! ```

pub mod decode;
pub mod file;
pub mod frames;
pub mod mjpeg;
pub mod pcm;
pub mod wav;

use std::fmt;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use bytes::Bytes;
use chunkcast_media::playout::{Concealment, Unit};
use chunkcast_protocol::{AudioParams, Chunk, Codec, SampleFormat};

use crate::error::ClientError;
use crate::get::partial_path;

/// Renders played media. See the [module docs](self) for the call order.
pub trait Sink: Send {
    /// A chunk arrived from the server (in order, before it is assembled or played). Only
    /// sinks that keep the stream's bytes as they came need this.
    fn arrived(&mut self, chunk: &Chunk) -> Result<(), ClientError> {
        let _ = chunk;
        Ok(())
    }

    /// Renders `unit` now: its play time has come. `unit.seq` is the unit's index in the
    /// stream (0, 1, 2, ...), so a video frame's number.
    fn play(&mut self, unit: &Unit<Bytes>) -> Result<(), ClientError>;

    /// Nothing arrived for `duration_us` of media time from `pts_us`: fill it now with
    /// silence, a repeat of (a prefix of) the last unit, or the frozen last frame.
    fn conceal(
        &mut self,
        pts_us: u64,
        duration_us: u32,
        kind: Concealment,
    ) -> Result<(), ClientError>;

    /// A line for the user about what this sink writes (e.g. the PCM format and how to
    /// listen to it), if it has one.
    fn note(&self) -> Option<String> {
        None
    }

    /// Flushes and completes the output (renames `PATH.partial` to `PATH`).
    fn finish(self: Box<Self>) -> Result<(), ClientError>;
}

/// Where a `pcm:`, `mjpeg:` or `file:` sink writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Standard output (`-`).
    Stdout,
    /// A file, written as `PATH.partial` and renamed when finished.
    Path(PathBuf),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdout => f.write_str("-"),
            Self::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A parsed `--sink` value: which sink, and where it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// `null`: discard, still playing in real time.
    Null,
    /// `file:PATH` (or `file:-`).
    File(Target),
    /// `wav:PATH`.
    Wav(PathBuf),
    /// `pcm:-` (or `pcm:PATH`).
    Pcm(Target),
    /// `mjpeg:-` (or `mjpeg:PATH`).
    Mjpeg(Target),
    /// `frames:DIR`.
    Frames(PathBuf),
}

/// The accepted forms, for error messages.
const KINDS: &str = "file:PATH, wav:PATH, pcm:-, mjpeg:-, frames:DIR or null";

impl Spec {
    /// Whether this sink writes to standard output.
    pub fn is_stdout(&self) -> bool {
        matches!(
            self,
            Self::File(Target::Stdout) | Self::Pcm(Target::Stdout) | Self::Mjpeg(Target::Stdout)
        )
    }
}

impl FromStr for Spec {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, ClientError> {
        if s == "null" {
            return Ok(Self::Null);
        }
        let usage = ClientError::Usage;
        let Some((kind, arg)) = s.split_once(':') else {
            return Err(usage(format!("{s:?}: expected {KINDS}")));
        };
        if arg.is_empty() {
            return Err(usage(format!("{kind}: needs a path after the ':'")));
        }
        let target = || match arg {
            "-" => Target::Stdout,
            p => Target::Path(PathBuf::from(p)),
        };
        let file_only = |what: &str| match arg {
            "-" => Err(usage(format!(
                "{kind}: cannot write to stdout; give a {what} (pipe raw audio with pcm:-)"
            ))),
            p => Ok(PathBuf::from(p)),
        };
        Ok(match kind {
            "null" => Self::Null,
            "file" => Self::File(target()),
            "wav" => Self::Wav(file_only("file")?),
            "pcm" => Self::Pcm(target()),
            "mjpeg" => Self::Mjpeg(target()),
            "frames" => Self::Frames(file_only("directory")?),
            _ => return Err(usage(format!("unknown sink {kind:?}; expected {KINDS}"))),
        })
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("null"),
            Self::File(t) => write!(f, "file:{t}"),
            Self::Wav(p) => write!(f, "wav:{}", p.display()),
            Self::Pcm(t) => write!(f, "pcm:{t}"),
            Self::Mjpeg(t) => write!(f, "mjpeg:{t}"),
            Self::Frames(d) => write!(f, "frames:{}", d.display()),
        }
    }
}

/// Checks that at most one sink writes to standard output.
pub fn check(specs: &[Spec]) -> Result<(), ClientError> {
    if specs.iter().filter(|s| s.is_stdout()).count() > 1 {
        return Err(ClientError::Usage(
            "only one sink can write to stdout (-); send the others to files".into(),
        ));
    }
    Ok(())
}

/// Opens the sinks for a stream of `codec`: [`Null`] for none, the sink itself for one, a
/// [`Tee`] for several. Fails if a sink cannot render this kind of stream.
pub fn open(specs: &[Spec], codec: &Codec) -> Result<Box<dyn Sink>, ClientError> {
    check(specs)?;
    let mut sinks = specs
        .iter()
        .map(|s| open_one(s, codec))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(match sinks.len() {
        0 => Box::new(Null),
        1 => sinks.remove(0),
        _ => Box::new(Tee(sinks)),
    })
}

fn open_one(spec: &Spec, codec: &Codec) -> Result<Box<dyn Sink>, ClientError> {
    Ok(match spec {
        Spec::Null => Box::new(Null),
        Spec::File(t) => Box::new(file::File::create(t)?),
        Spec::Wav(p) => decoded(codec, "wav", |c| Ok(Box::new(wav::Wav::create(p, c)?)))?,
        Spec::Pcm(t) => decoded(codec, "pcm", |c| Ok(Box::new(pcm::Pcm::create(t, c)?)))?,
        Spec::Mjpeg(t) => Box::new(mjpeg::Mjpeg::create(t, codec)?),
        Spec::Frames(d) => Box::new(frames::Frames::create(d, codec)?),
    })
}

/// A PCM sink for `codec`: the sink itself for PCM, behind a [`decode::Decode`] for coded
/// audio it can decode; for a coding it cannot, a usage error naming it, before anything plays.
fn decoded(
    codec: &Codec,
    sink: &str,
    make: impl FnOnce(&Codec) -> Result<Box<dyn Sink>, ClientError>,
) -> Result<Box<dyn Sink>, ClientError> {
    let Codec::Audio(a) = codec else {
        return make(codec);
    };
    if a.sample_format.is_pcm() {
        return make(codec);
    }
    let name = match a.sample_format {
        SampleFormat::Coded(c) => c.name(),
        SampleFormat::MuLaw => "mu-law".to_owned(),
        _ => "a-law".to_owned(),
    };
    let Some(decoder) = decode::Decoder::for_params(a) else {
        return Err(ClientError::Usage(format!(
            "cannot decode {name} audio to PCM for the {sink} sink; \
             keep the stream as it is with --sink file:PATH (or save it with `chunkcast get`)"
        )));
    };
    let pcm = Codec::Audio(decode::pcm_params(a));
    Ok(Box::new(decode::Decode::new(make(&pcm)?, decoder, name)))
}

/// Discards everything.
#[derive(Debug, Default)]
pub struct Null;

impl Sink for Null {
    fn play(&mut self, _: &Unit<Bytes>) -> Result<(), ClientError> {
        Ok(())
    }

    fn conceal(&mut self, _: u64, _: u32, _: Concealment) -> Result<(), ClientError> {
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), ClientError> {
        Ok(())
    }
}

/// Several sinks fed the same calls, in order.
pub struct Tee(pub Vec<Box<dyn Sink>>);

impl Sink for Tee {
    fn arrived(&mut self, chunk: &Chunk) -> Result<(), ClientError> {
        self.0.iter_mut().try_for_each(|s| s.arrived(chunk))
    }

    fn play(&mut self, unit: &Unit<Bytes>) -> Result<(), ClientError> {
        self.0.iter_mut().try_for_each(|s| s.play(unit))
    }

    fn conceal(
        &mut self,
        pts_us: u64,
        duration_us: u32,
        kind: Concealment,
    ) -> Result<(), ClientError> {
        self.0
            .iter_mut()
            .try_for_each(|s| s.conceal(pts_us, duration_us, kind))
    }

    fn note(&self) -> Option<String> {
        let notes: Vec<String> = self.0.iter().filter_map(|s| s.note()).collect();
        (!notes.is_empty()).then(|| notes.join("\n"))
    }

    fn finish(self: Box<Self>) -> Result<(), ClientError> {
        // Finish every sink even if one fails, then report the first failure.
        let mut first = Ok(());
        for s in self.0 {
            let r = s.finish();
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

/// A byte destination: stdout (flushed after every unit, so a player downstream keeps real
/// time), or `PATH.partial`, renamed to `PATH` by [`Output::finish`].
pub(crate) struct Output {
    w: BufWriter<Box<dyn Write + Send>>,
    stdout: bool,
    /// `(partial, final)` for a file.
    rename: Option<(PathBuf, PathBuf)>,
    name: String,
}

impl Output {
    pub(crate) fn create(target: &Target) -> Result<Self, ClientError> {
        match target {
            Target::Stdout => Ok(Self {
                w: BufWriter::new(Box::new(std::io::stdout())),
                stdout: true,
                rename: None,
                name: crate::error::STDOUT.into(),
            }),
            Target::Path(path) => {
                let partial = partial_path(path);
                let f =
                    std::fs::File::create(&partial).map_err(|e| ClientError::file(&partial, e))?;
                Ok(Self {
                    w: BufWriter::new(Box::new(f)),
                    stdout: false,
                    rename: Some((partial, path.clone())),
                    name: path.display().to_string(),
                })
            }
        }
    }

    pub(crate) fn write_all(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.w.write_all(data).map_err(|e| self.error(e))
    }

    /// Ends a unit: pushes it down the pipe when writing to stdout.
    pub(crate) fn unit_done(&mut self) -> Result<(), ClientError> {
        if self.stdout {
            self.w.flush().map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<(), ClientError> {
        self.w.flush().map_err(|e| self.error(e))?;
        drop(self.w);
        if let Some((partial, path)) = self.rename {
            std::fs::rename(&partial, &path).map_err(|e| ClientError::file(&path, e))?;
        }
        Ok(())
    }

    /// Flushes without renaming: an incomplete output stays in `PATH.partial`. Returns that
    /// path (`None` for stdout).
    pub(crate) fn keep_partial(mut self) -> Result<Option<PathBuf>, ClientError> {
        self.w.flush().map_err(|e| self.error(e))?;
        Ok(self.rename.map(|(partial, _)| partial))
    }

    fn error(&self, source: std::io::Error) -> ClientError {
        ClientError::File {
            path: self.name.clone(),
            source,
        }
    }
}

/// The audio parameters of `codec`, or a usage error naming the sink.
pub(crate) fn audio(sink: &str, codec: &Codec) -> Result<AudioParams, ClientError> {
    match codec {
        Codec::Audio(a) if a.bytes_per_frame() > 0 => Ok(*a),
        other => Err(ClientError::Usage(format!(
            "the {sink} sink plays audio, and this stream is {}; try --sink file:PATH",
            other.summary()
        ))),
    }
}

/// Renders concealment as PCM bytes: the frames of `duration_us` from `pts_us` (rounded on
/// the sample grid, so consecutive pieces tile exactly), as silence or as a repeat of
/// `last` (its prefix, cycled if the piece is longer).
pub(crate) fn conceal_pcm(
    params: &AudioParams,
    last: &[u8],
    pts_us: u64,
    duration_us: u32,
    kind: Concealment,
    out: &mut Vec<u8>,
) {
    let frame = params.bytes_per_frame() as usize;
    let at = |us: u64| (u128::from(us) * u128::from(params.sample_rate) + 500_000) / 1_000_000;
    let frames = at(pts_us + u64::from(duration_us)) - at(pts_us);
    let len = usize::try_from(frames)
        .unwrap_or(usize::MAX)
        .saturating_mul(frame);
    out.clear();
    let whole = last.len() / frame * frame;
    if kind == Concealment::Repeat && whole > 0 {
        out.extend(last[..whole].iter().copied().cycle().take(len));
        return;
    }
    // WAV stores 8-bit samples unsigned, centred on 128.
    let zero = if params.bits_per_sample == 8 && params.sample_format == SampleFormat::Int {
        0x80
    } else {
        0
    };
    out.resize(len, zero);
}

/// Creates the directory `path` (and its parents) if it does not exist.
pub(crate) fn ensure_dir(path: &Path) -> Result<(), ClientError> {
    std::fs::create_dir_all(path).map_err(|e| ClientError::file(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_and_refuses_the_rest() {
        for s in [
            "null",
            "file:a.bin",
            "file:-",
            "wav:a.wav",
            "pcm:-",
            "pcm:a.raw",
            "mjpeg:-",
            "frames:dir",
        ] {
            let spec: Spec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
        }
        for bad in ["speaker", "speaker:x", "wav:-", "frames:-", "wav:", "file"] {
            let e = bad.parse::<Spec>().unwrap_err().to_string();
            let kind = bad.split(':').next().unwrap_or(bad);
            assert!(e.contains(kind), "{e}");
        }
        let e = "alsa:hw0".parse::<Spec>().unwrap_err().to_string();
        assert!(
            e.contains("unknown sink \"alsa\"") && e.contains("frames:DIR"),
            "{e}"
        );
    }

    #[test]
    fn one_stdout_sink_at_most() {
        let two = ["pcm:-".parse().unwrap(), "file:-".parse().unwrap()];
        assert!(check(&two).is_err());
        let ok = ["pcm:-".parse().unwrap(), "file:x".parse().unwrap()];
        assert!(check(&ok).is_ok());
    }

    #[test]
    fn concealment_tiles_the_sample_grid() {
        let p = AudioParams {
            sample_rate: 44_100,
            channels: 2,
            bits_per_sample: 16,
            sample_format: SampleFormat::Int,
        };
        let mut out = Vec::new();
        let mut total = 0;
        // Ten pieces of 10 ms at 44.1 kHz: 441 frames each, 4410 in all.
        for i in 0..10 {
            conceal_pcm(&p, &[], i * 10_000, 10_000, Concealment::Silence, &mut out);
            total += out.len();
        }
        assert_eq!(total, 4410 * 4);
        let last = [1u8, 2, 3, 4, 5, 6, 7, 8];
        conceal_pcm(&p, &last, 0, 100, Concealment::Repeat, &mut out);
        // 100 µs is 4.41 frames: 4, the two-frame unit cycled.
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        let u8p = AudioParams {
            bits_per_sample: 8,
            channels: 1,
            ..p
        };
        conceal_pcm(&u8p, &[], 0, 100, Concealment::Silence, &mut out);
        assert!(out.iter().all(|&b| b == 0x80) && out.len() == 4);
    }
}
