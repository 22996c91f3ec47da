//! PCM WAV samples: sine sweeps and a plain tone.

use std::io::Cursor;

use hound::{SampleFormat, WavSpec, WavWriter};

use crate::math;

/// Peak amplitude relative to full scale. 0.5 is -6.02 dBFS, which leaves
/// headroom for resamplers and codecs that overshoot on a full-band sweep.
const AMPLITUDE: f64 = 0.5;

/// Sweep bounds: the conventional audible band, so the same sweep is
/// meaningful at every sample rate we ship.
const SWEEP_START_HZ: f64 = 20.0;
/// `ln(20_000 / 20)` as a literal, since a libm `ln` could differ per machine.
const SWEEP_LN_RATIO: f64 = 6.907_755_278_982_137;

/// Short linear fades keep the abrupt start and end from producing
/// broadband clicks that would smear a spectrum view.
const FADE_SECONDS_NUM: u32 = 1;
const FADE_SECONDS_DEN: u32 = 100;

/// 10 s of 48 kHz stereo 16-bit: left sweeps 20 Hz → 20 kHz, right is the
/// same sweep time-reversed, so swapped channels are audible and visible.
pub(crate) fn sweep_48k_stereo_s16() -> Result<Vec<u8>, hound::Error> {
    stereo_sweep(48_000, 10, 16)
}

/// 3 s of 96 kHz stereo 24-bit, laid out like the 48 kHz sweep.
pub(crate) fn sweep_96k_stereo_s24() -> Result<Vec<u8>, hound::Error> {
    stereo_sweep(96_000, 3, 24)
}

/// 3 s of a 440 Hz tone, mono 8 kHz 16-bit: the telephone-quality corner case.
pub(crate) fn tone_8k_mono_s16() -> Result<Vec<u8>, hound::Error> {
    const RATE: u32 = 8_000;
    const HZ: u64 = 440;
    let frames = RATE * 3;
    let full_scale = full_scale(16);
    let samples = (0..frames).map(|n| {
        // Reduce the phase in integers: 440·n/8000 turns is exact this way.
        let turns = (HZ * u64::from(n) % u64::from(RATE)) as f64 / f64::from(RATE);
        quantise(math::sin_turns(turns) * fade(n, frames, RATE), full_scale)
    });
    encode(1, RATE, 16, frames, samples)
}

fn stereo_sweep(rate: u32, seconds: u32, bits: u16) -> Result<Vec<u8>, hound::Error> {
    let frames = rate * seconds;
    let full_scale = full_scale(bits);
    let duration = f64::from(seconds);
    // Exponential sweep phase (Farina): φ(t) = f0·T/L · (e^{L·t/T} − 1) turns.
    let k = SWEEP_START_HZ * duration / SWEEP_LN_RATIO;
    let left: Vec<i32> = (0..frames)
        .map(|n| {
            let t = f64::from(n) / f64::from(rate);
            let turns = k * (math::exp(SWEEP_LN_RATIO * t / duration) - 1.0);
            quantise(math::sin_turns(turns) * fade(n, frames, rate), full_scale)
        })
        .collect();
    let interleaved = left
        .iter()
        .zip(left.iter().rev())
        .flat_map(|(&l, &r)| [l, r]);
    encode(2, rate, bits, frames, interleaved)
}

fn full_scale(bits: u16) -> f64 {
    f64::from((1_u32 << (bits - 1)) - 1)
}

fn quantise(x: f64, full_scale: f64) -> i32 {
    (x * AMPLITUDE * full_scale).round() as i32
}

/// Linear gain ramp over the first and last 10 ms.
fn fade(n: u32, frames: u32, rate: u32) -> f64 {
    let len = rate * FADE_SECONDS_NUM / FADE_SECONDS_DEN;
    let edge = n.min(frames - 1 - n);
    if edge >= len {
        1.0
    } else {
        f64::from(edge) / f64::from(len)
    }
}

fn encode(
    channels: u16,
    sample_rate: u32,
    bits_per_sample: u16,
    frames: u32,
    samples: impl Iterator<Item = i32>,
) -> Result<Vec<u8>, hound::Error> {
    let spec = WavSpec {
        channels,
        sample_rate,
        bits_per_sample,
        sample_format: SampleFormat::Int,
    };
    let data_len = frames as usize * usize::from(channels) * usize::from(bits_per_sample / 8);
    let mut out = Cursor::new(Vec::with_capacity(data_len + 128));
    let mut writer = WavWriter::new(&mut out, spec)?;
    for s in samples {
        writer.write_sample(s)?;
    }
    writer.finalize()?;
    Ok(out.into_inner())
}
