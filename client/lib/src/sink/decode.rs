//! Coded audio to 16-bit PCM, for the `pcm:` and `wav:` sinks: G.711 µ-law and A-law,
//! IMA-ADPCM and MS-ADPCM (as WAV stores them). Other codings cannot be played to those
//! sinks; `file:PATH` keeps the stream as it is.
//!
//! A unit of coded audio holds whole blocks (the server cuts on `block_align`), so each unit
//! decodes on its own.

use bytes::Bytes;
use chunkcast_media::playout::{Concealment, Unit};
use chunkcast_protocol::{AudioParams, Chunk, CodedAudio, SampleFormat};

use super::Sink;
use crate::error::ClientError;

const TAG_MS_ADPCM: u16 = 0x0002;
const TAG_IMA_ADPCM: u16 = 0x0011;

/// A decoder from one coding to interleaved 16-bit PCM.
#[derive(Debug, Clone, Copy)]
pub enum Decoder {
    /// G.711 µ-law.
    MuLaw,
    /// G.711 A-law.
    ALaw,
    /// IMA-ADPCM (WAVE tag 0x0011), 4 bits per sample.
    Ima {
        /// Channels.
        channels: usize,
        /// Bytes per block.
        block: usize,
    },
    /// MS-ADPCM (WAVE tag 0x0002), 4 bits per sample, the standard coefficient set.
    Ms {
        /// Channels.
        channels: usize,
        /// Bytes per block.
        block: usize,
    },
}

impl Decoder {
    /// The decoder for `p`, if there is one (`None` also for plain PCM, which needs none).
    pub fn for_params(p: &AudioParams) -> Option<Self> {
        let channels = usize::from(p.channels);
        match p.sample_format {
            SampleFormat::MuLaw => Some(Self::MuLaw),
            SampleFormat::ALaw => Some(Self::ALaw),
            SampleFormat::Coded(CodedAudio {
                tag, block_align, ..
            }) if p.bits_per_sample == 4 && channels > 0 => {
                let block = usize::from(block_align);
                match tag {
                    TAG_IMA_ADPCM
                        if block > 4 * channels && (block - 4 * channels) % (4 * channels) == 0 =>
                    {
                        Some(Self::Ima { channels, block })
                    }
                    TAG_MS_ADPCM if block >= 7 * channels => Some(Self::Ms { channels, block }),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Decodes `data` (whole blocks; a trailing partial block is ignored) to little-endian
    /// 16-bit samples appended to `out`.
    pub fn decode(&self, data: &[u8], out: &mut Vec<u8>) {
        let mut put = |s: i16| out.extend_from_slice(&s.to_le_bytes());
        match *self {
            Self::MuLaw => data.iter().for_each(|&b| put(mulaw(b))),
            Self::ALaw => data.iter().for_each(|&b| put(alaw(b))),
            Self::Ima { channels, block } => {
                data.chunks_exact(block)
                    .for_each(|b| ima_block(b, channels, &mut put));
            }
            Self::Ms { channels, block } => {
                data.chunks_exact(block)
                    .for_each(|b| ms_block(b, channels, &mut put));
            }
        }
    }
}

/// The parameters of the PCM a coded stream decodes to.
pub fn pcm_params(p: &AudioParams) -> AudioParams {
    AudioParams {
        sample_rate: p.sample_rate,
        channels: p.channels,
        bits_per_sample: 16,
        sample_format: SampleFormat::Int,
    }
}

/// G.711 µ-law to linear.
pub fn mulaw(b: u8) -> i16 {
    let u = !b;
    let exp = (u >> 4) & 7;
    let mant = i32::from(u & 0x0F);
    let mag = (((mant << 3) + 0x84) << exp) - 0x84;
    (if u & 0x80 != 0 { -mag } else { mag }) as i16
}

/// G.711 A-law to linear.
pub fn alaw(b: u8) -> i16 {
    let a = b ^ 0x55;
    let exp = (a >> 4) & 7;
    let mant = i32::from(a & 0x0F);
    let mag = if exp == 0 {
        (mant << 4) + 8
    } else {
        ((mant << 4) + 0x108) << (exp - 1)
    };
    (if a & 0x80 != 0 { mag } else { -mag }) as i16
}

const IMA_STEPS: [i32; 89] = [
    7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 19, 21, 23, 25, 28, 31, 34, 37, 41, 45, 50, 55, 60, 66,
    73, 80, 88, 97, 107, 118, 130, 143, 157, 173, 190, 209, 230, 253, 279, 307, 337, 371, 408, 449,
    494, 544, 598, 658, 724, 796, 876, 963, 1060, 1166, 1282, 1411, 1552, 1707, 1878, 2066, 2272,
    2499, 2749, 3024, 3327, 3660, 4026, 4428, 4871, 5358, 5894, 6484, 7132, 7845, 8630, 9493,
    10442, 11487, 12635, 13899, 15289, 16818, 18500, 20350, 22385, 24623, 27086, 29794, 32767,
];
const IMA_INDEX: [i32; 16] = [-1, -1, -1, -1, 2, 4, 6, 8, -1, -1, -1, -1, 2, 4, 6, 8];

/// One IMA-ADPCM block: per channel a 4-byte header (first sample, step index), then words of
/// 4 bytes per channel in turn, 8 samples each, low nibble first.
fn ima_block(b: &[u8], ch: usize, put: &mut impl FnMut(i16)) {
    let mut pred = vec![0i32; ch];
    let mut index = vec![0i32; ch];
    for c in 0..ch {
        pred[c] = i32::from(i16::from_le_bytes([b[4 * c], b[4 * c + 1]]));
        index[c] = i32::from(b[4 * c + 2]).min(88);
        put(pred[c] as i16);
    }
    let data = &b[4 * ch..];
    let mut frame = vec![0i16; ch * 8];
    for group in data.chunks_exact(4 * ch) {
        for c in 0..ch {
            for (k, &byte) in group[4 * c..4 * c + 4].iter().enumerate() {
                for (h, nib) in [byte & 0x0F, byte >> 4].into_iter().enumerate() {
                    let step = IMA_STEPS[index[c] as usize];
                    let mut diff = step >> 3;
                    if nib & 1 != 0 {
                        diff += step >> 2;
                    }
                    if nib & 2 != 0 {
                        diff += step >> 1;
                    }
                    if nib & 4 != 0 {
                        diff += step;
                    }
                    pred[c] = if nib & 8 != 0 {
                        pred[c] - diff
                    } else {
                        pred[c] + diff
                    }
                    .clamp(-32768, 32767);
                    index[c] = (index[c] + IMA_INDEX[usize::from(nib)]).clamp(0, 88);
                    frame[(2 * k + h) * ch + c] = pred[c] as i16;
                }
            }
        }
        frame.iter().for_each(|&s| put(s));
    }
}

const MS_ADAPT: [i32; 16] = [
    230, 230, 230, 230, 307, 409, 512, 614, 768, 614, 512, 409, 307, 230, 230, 230,
];
const MS_COEF: [(i32, i32); 7] = [
    (256, 0),
    (512, -256),
    (0, 0),
    (192, 64),
    (240, 0),
    (460, -208),
    (392, -232),
];

/// One MS-ADPCM block: per channel a predictor index, then per channel the delta, the second
/// and the first sample (both output first, oldest first), then nibbles, high first,
/// alternating channels.
fn ms_block(b: &[u8], ch: usize, put: &mut impl FnMut(i16)) {
    let i16_at = |i: usize| i32::from(i16::from_le_bytes([b[i], b[i + 1]]));
    let mut coef = vec![(0, 0); ch];
    let mut delta = vec![0i32; ch];
    let mut s1 = vec![0i32; ch];
    let mut s2 = vec![0i32; ch];
    for c in 0..ch {
        coef[c] = MS_COEF[usize::from(b[c]).min(MS_COEF.len() - 1)];
        delta[c] = i16_at(ch + 2 * c);
        s1[c] = i16_at(3 * ch + 2 * c);
        s2[c] = i16_at(5 * ch + 2 * c);
    }
    s2.iter().for_each(|&s| put(s as i16));
    s1.iter().for_each(|&s| put(s as i16));
    let mut c = 0;
    for &byte in &b[7 * ch..] {
        for nib in [byte >> 4, byte & 0x0F] {
            let signed = i32::from(nib) - if nib >= 8 { 16 } else { 0 };
            let predicted = (s1[c] * coef[c].0 + s2[c] * coef[c].1) >> 8;
            let sample = (predicted + signed * delta[c]).clamp(-32768, 32767);
            put(sample as i16);
            s2[c] = s1[c];
            s1[c] = sample;
            delta[c] = ((MS_ADAPT[usize::from(nib)] * delta[c]) >> 8).max(16);
            c = (c + 1) % ch;
        }
    }
}

/// A sink in front of a PCM sink: decodes every played unit, passes the rest on.
pub struct Decode {
    inner: Box<dyn Sink>,
    decoder: Decoder,
    name: String,
    scratch: Vec<u8>,
}

impl Decode {
    /// Decodes with `decoder` into `inner` (opened for [`pcm_params`]); `name` names the
    /// coding in the sink's note.
    pub fn new(inner: Box<dyn Sink>, decoder: Decoder, name: String) -> Self {
        Self {
            inner,
            decoder,
            name,
            scratch: Vec::new(),
        }
    }
}

impl Sink for Decode {
    fn arrived(&mut self, chunk: &Chunk) -> Result<(), ClientError> {
        self.inner.arrived(chunk)
    }

    fn play(&mut self, unit: &Unit<Bytes>) -> Result<(), ClientError> {
        self.scratch.clear();
        self.decoder.decode(&unit.payload, &mut self.scratch);
        let pcm = Unit {
            seq: unit.seq,
            pts_us: unit.pts_us,
            duration_us: unit.duration_us,
            key: unit.key,
            payload: Bytes::copy_from_slice(&self.scratch),
        };
        self.inner.play(&pcm)
    }

    fn conceal(
        &mut self,
        pts_us: u64,
        duration_us: u32,
        kind: Concealment,
    ) -> Result<(), ClientError> {
        self.inner.conceal(pts_us, duration_us, kind)
    }

    fn note(&self) -> Option<String> {
        let inner = self.inner.note();
        Some(match inner {
            Some(n) => format!("{n} (decoded from {})", self.name),
            None => format!("decoding {} to 16-bit PCM", self.name),
        })
    }

    fn finish(self: Box<Self>) -> Result<(), ClientError> {
        self.inner.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_reference_points() {
        // Values from the G.711 tables: silence, the extremes and a middle code.
        assert_eq!(mulaw(0xFF), 0);
        assert_eq!(mulaw(0x7F), 0);
        assert_eq!(mulaw(0x80), 32124);
        assert_eq!(mulaw(0x00), -32124);
        assert_eq!(alaw(0xD5), 8);
        assert_eq!(alaw(0x55), -8);
        assert_eq!(alaw(0xAA), 32256);
        assert_eq!(alaw(0x2A), -32256);
        // Every code decodes, and the two halves mirror each other.
        for b in 0..=255u8 {
            assert_eq!(mulaw(b), -mulaw(b ^ 0x80));
            assert_eq!(alaw(b), -alaw(b ^ 0x80));
        }
    }

    #[test]
    fn ima_block_of_silence_stays_silent() {
        // Mono, block of 4 header bytes + 4 data bytes: 1 + 8 samples.
        let block = [0, 0, 0, 0, 0, 0, 0, 0];
        let mut out = Vec::new();
        Decoder::Ima {
            channels: 1,
            block: 8,
        }
        .decode(&block, &mut out);
        assert_eq!(out.len(), 9 * 2);
        let samples: Vec<i16> = out
            .chunks_exact(2)
            .map(|s| i16::from_le_bytes([s[0], s[1]]))
            .collect();
        assert!(samples.iter().all(|s| s.abs() <= 8), "{samples:?}");
    }
}
