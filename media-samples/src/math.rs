//! Portable transcendental functions.
//!
//! The platform `sin`/`exp` come from the system libm, and glibc alone picks
//! different implementations depending on whether the CPU has FMA. A one-ulp
//! difference is enough to flip the rounding of a handful of the ~1.5 million
//! audio samples, so two machines would produce WAV files with different
//! hashes. These versions use only IEEE-754 basic operations (which Rust never
//! contracts into FMA), so every platform computes the same bits.

use std::f64::consts::FRAC_PI_2;

/// `sin(2π·cycles)`, taking the angle in turns so callers can reduce phase
/// exactly (e.g. with integer arithmetic) before it ever becomes a float.
pub(crate) fn sin_turns(cycles: f64) -> f64 {
    let quarters = cycles * 4.0;
    let q = quarters.round();
    let a = (quarters - q) * FRAC_PI_2;
    match q.rem_euclid(4.0) as u8 {
        0 => sin_poly(a),
        1 => cos_poly(a),
        2 => -sin_poly(a),
        _ => -cos_poly(a),
    }
}

/// Taylor series to a^15: on |a| <= π/4 the truncation error is below 1e-16.
fn sin_poly(a: f64) -> f64 {
    let a2 = a * a;
    let mut acc = 1.0 / 1_307_674_368_000.0; // 1/15!
    acc = -(acc * a2) + 1.0 / 6_227_020_800.0; // 1/13!
    acc = -(acc * a2) + 1.0 / 39_916_800.0; // 1/11!
    acc = -(acc * a2) + 1.0 / 362_880.0; // 1/9!
    acc = -(acc * a2) + 1.0 / 5040.0; // 1/7!
    acc = -(acc * a2) + 1.0 / 120.0; // 1/5!
    acc = -(acc * a2) + 1.0 / 6.0; // 1/3!
    acc = -(acc * a2) + 1.0;
    acc * a
}

/// Taylor series to a^16, same error bound as [`sin_poly`].
fn cos_poly(a: f64) -> f64 {
    let a2 = a * a;
    let mut acc = 1.0 / 20_922_789_888_000.0; // 1/16!
    acc = -(acc * a2) + 1.0 / 87_178_291_200.0; // 1/14!
    acc = -(acc * a2) + 1.0 / 479_001_600.0; // 1/12!
    acc = -(acc * a2) + 1.0 / 3_628_800.0; // 1/10!
    acc = -(acc * a2) + 1.0 / 40_320.0; // 1/8!
    acc = -(acc * a2) + 1.0 / 720.0; // 1/6!
    acc = -(acc * a2) + 1.0 / 24.0; // 1/4!
    acc = -(acc * a2) + 1.0 / 2.0; // 1/2!
    -(acc * a2) + 1.0
}

/// `e^x` for moderate `x` (|x| < 700): reduce by multiples of ln 2 (split in
/// two parts so the reduction itself loses nothing), then a Taylor series on
/// |r| <= ln2/2 and an exact power-of-two scale.
pub(crate) fn exp(x: f64) -> f64 {
    // fdlibm's split of ln 2: the high part has its low bits zero, so
    // k·LN2_HI is exact for any k we see.
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    const LOG2_E: f64 = std::f64::consts::LOG2_E;
    let k = (x * LOG2_E).round();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let mut sum = 1.0;
    let mut term = 1.0;
    for i in 1..=14 {
        term = term * r / f64::from(i);
        sum += term;
    }
    // k is bounded by the documented input range, so the biased exponent
    // stays within the normal range and this is an exact 2^k.
    let biased = (k as i64 + 1023).clamp(1, 2046) as u64;
    sum * f64::from_bits(biased << 52)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sin_matches_libm() {
        for i in -4000..4000 {
            let t = f64::from(i) * 0.001_234_567;
            let ours = sin_turns(t);
            let libm = (t * std::f64::consts::TAU).sin();
            assert!((ours - libm).abs() < 1e-12, "t={t} ours={ours} libm={libm}");
        }
    }

    #[test]
    fn exp_matches_libm() {
        for i in -2000..2000 {
            let x = f64::from(i) * 0.0123;
            let ours = exp(x);
            let libm = x.exp();
            assert!(
                ((ours - libm) / libm).abs() < 1e-14,
                "x={x} ours={ours} libm={libm}"
            );
        }
    }
}
