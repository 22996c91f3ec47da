//! `wav:PATH`: a WAV file of what was played, concealment included.
//!
//! Written with hound in the stream's own sample format, so with no underrun the output's
//! samples are the source's, one for one. A gap adds exactly its length of silence (or of
//! repeated audio), so the file's duration is the playout's. Finishing (also on Ctrl-C)
//! completes the header and renames `PATH.partial` to `PATH`.

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chunkcast_media::playout::{Concealment, Unit};
use chunkcast_protocol::{AudioParams, Codec, SampleFormat};

use super::{Sink, audio, conceal_pcm};
use crate::error::ClientError;
use crate::get::partial_path;

type Writer = hound::WavWriter<BufWriter<std::fs::File>>;

/// Writes played audio to a WAV file.
pub struct Wav {
    writer: Writer,
    params: AudioParams,
    last: Bytes,
    scratch: Vec<u8>,
    partial: PathBuf,
    path: PathBuf,
}

impl Wav {
    /// Starts `PATH.partial` for a stream of `codec` (audio only).
    pub fn create(path: &Path, codec: &Codec) -> Result<Self, ClientError> {
        let params = audio("wav", codec)?;
        let spec = hound::WavSpec {
            channels: params.channels,
            sample_rate: params.sample_rate,
            bits_per_sample: params.bits_per_sample,
            sample_format: match params.sample_format {
                SampleFormat::Int => hound::SampleFormat::Int,
                SampleFormat::Float => hound::SampleFormat::Float,
                // `sink::open` puts a decoder in front of coded audio.
                _ => {
                    return Err(ClientError::Usage(format!(
                        "the wav sink writes PCM, and this stream is {}",
                        codec.summary()
                    )));
                }
            },
        };
        let partial = partial_path(path);
        let writer =
            hound::WavWriter::create(&partial, spec).map_err(|e| hound_error(&partial, e))?;
        Ok(Self {
            writer,
            params,
            last: Bytes::new(),
            scratch: Vec::new(),
            partial,
            path: path.to_owned(),
        })
    }

    fn write(&mut self, data: &[u8]) -> Result<(), ClientError> {
        write_samples(&mut self.writer, &self.params, data)
            .map_err(|e| hound_error(&self.partial, e))
    }
}

impl Sink for Wav {
    fn play(&mut self, unit: &Unit<Bytes>) -> Result<(), ClientError> {
        self.write(&unit.payload)?;
        self.last = unit.payload.clone();
        Ok(())
    }

    fn conceal(
        &mut self,
        pts_us: u64,
        duration_us: u32,
        kind: Concealment,
    ) -> Result<(), ClientError> {
        let mut buf = std::mem::take(&mut self.scratch);
        conceal_pcm(
            &self.params,
            &self.last,
            pts_us,
            duration_us,
            kind,
            &mut buf,
        );
        let r = self.write(&buf);
        self.scratch = buf;
        r
    }

    fn finish(self: Box<Self>) -> Result<(), ClientError> {
        let Self {
            writer,
            partial,
            path,
            ..
        } = *self;
        writer.finalize().map_err(|e| hound_error(&partial, e))?;
        std::fs::rename(&partial, &path).map_err(|e| ClientError::file(&path, e))
    }
}

/// Writes interleaved little-endian PCM (as in a WAV `data` chunk) sample by sample; a trailing
/// partial frame is ignored (units hold whole frames).
fn write_samples(w: &mut Writer, p: &AudioParams, data: &[u8]) -> Result<(), hound::Error> {
    let frame = p.bytes_per_frame() as usize;
    let data = &data[..data.len() / frame * frame];
    let width = usize::from(p.bits_per_sample.div_ceil(8));
    for s in data.chunks_exact(width) {
        match (p.sample_format, width) {
            // WAV stores 8-bit samples unsigned; hound takes them signed and adds 128 back.
            (SampleFormat::Int, 1) => w.write_sample((i16::from(s[0]) - 128) as i8)?,
            (SampleFormat::Int, 2) => w.write_sample(i16::from_le_bytes([s[0], s[1]]))?,
            (SampleFormat::Int, 3) => {
                w.write_sample(i32::from_le_bytes([0, s[0], s[1], s[2]]) >> 8)?
            }
            (SampleFormat::Int, 4) => {
                w.write_sample(i32::from_le_bytes([s[0], s[1], s[2], s[3]]))?
            }
            (SampleFormat::Float, 4) => {
                w.write_sample(f32::from_le_bytes([s[0], s[1], s[2], s[3]]))?
            }
            _ => return Err(hound::Error::Unsupported),
        }
    }
    Ok(())
}

fn hound_error(path: &Path, e: hound::Error) -> ClientError {
    let source = match e {
        hound::Error::IoError(io) => io,
        other => std::io::Error::other(other.to_string()),
    };
    ClientError::file(path, source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_was_played_and_the_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.wav");
        let params = AudioParams {
            sample_rate: 1000,
            channels: 2,
            bits_per_sample: 24,
            sample_format: SampleFormat::Int,
        };
        let mut sink = Box::new(Wav::create(&path, &Codec::Audio(params)).unwrap());
        // Two frames: (1, -1), (8388607, -8388608).
        let pcm = Bytes::from_static(&[1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0x80]);
        let unit = Unit {
            seq: 0,
            pts_us: 0,
            duration_us: 2000,
            key: true,
            payload: pcm,
        };
        sink.play(&unit).unwrap();
        sink.conceal(2000, 3000, Concealment::Silence).unwrap();
        sink.conceal(5000, 2000, Concealment::Repeat).unwrap();
        assert!(
            !path.exists(),
            "written under the partial name until finished"
        );
        sink.finish().unwrap();
        let mut r = hound::WavReader::open(&path).unwrap();
        let got: Vec<i32> = r.samples::<i32>().map(Result::unwrap).collect();
        let frames = [
            1, -1, 8_388_607, -8_388_608, 0, 0, 0, 0, 0, 0, 1, -1, 8_388_607, -8_388_608,
        ];
        assert_eq!(got, frames);
    }
}
