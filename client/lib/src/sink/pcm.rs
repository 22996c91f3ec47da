//! `pcm:-`: raw interleaved PCM on stdout, exactly as in the file, at play time.
//!
//! Gaps are filled with silence (or a repeat of the last unit) of exactly their length, so a
//! player downstream keeps time. The format has no header: [`Sink::note`] names it, with the
//! `ffplay` line that plays it.

use bytes::Bytes;
use chunkcast_media::playout::{Concealment, Unit};
use chunkcast_protocol::{AudioParams, Codec, SampleFormat};

use super::{Output, Sink, Target, audio, conceal_pcm};
use crate::error::ClientError;

/// Writes played audio as raw PCM.
pub struct Pcm {
    out: Output,
    params: AudioParams,
    last: Bytes,
    scratch: Vec<u8>,
}

impl Pcm {
    /// Starts writing a stream of `codec` (audio only) to `target`.
    pub fn create(target: &Target, codec: &Codec) -> Result<Self, ClientError> {
        let params = audio("pcm", codec)?;
        if format(&params).is_none() {
            return Err(ClientError::Usage(format!(
                "the pcm sink cannot describe {}; use --sink wav:PATH",
                codec.summary()
            )));
        }
        Ok(Self {
            out: Output::create(target)?,
            params,
            last: Bytes::new(),
            scratch: Vec::new(),
        })
    }
}

/// The ffmpeg name of the sample format (`s16le`, ...), if it has one.
pub fn format(p: &AudioParams) -> Option<&'static str> {
    Some(match (p.sample_format, p.bits_per_sample) {
        (SampleFormat::Int, 8) => "u8",
        (SampleFormat::Int, 16) => "s16le",
        (SampleFormat::Int, 24) => "s24le",
        (SampleFormat::Int, 32) => "s32le",
        (SampleFormat::Float, 32) => "f32le",
        _ => return None,
    })
}

impl Sink for Pcm {
    fn play(&mut self, unit: &Unit<Bytes>) -> Result<(), ClientError> {
        self.out.write_all(&unit.payload)?;
        self.out.unit_done()?;
        self.last = unit.payload.clone();
        Ok(())
    }

    fn conceal(
        &mut self,
        pts_us: u64,
        duration_us: u32,
        kind: Concealment,
    ) -> Result<(), ClientError> {
        conceal_pcm(
            &self.params,
            &self.last,
            pts_us,
            duration_us,
            kind,
            &mut self.scratch,
        );
        self.out.write_all(&self.scratch)?;
        self.out.unit_done()
    }

    fn note(&self) -> Option<String> {
        let p = &self.params;
        let f = format(p)?;
        let (rate, ch) = (p.sample_rate, p.channels);
        Some(format!(
            "pcm: {f} {rate} Hz {ch} ch (play it with: ffplay -f {f} -ar {rate} -ac {ch} -)"
        ))
    }

    fn finish(self: Box<Self>) -> Result<(), ClientError> {
        self.out.finish()
    }
}
