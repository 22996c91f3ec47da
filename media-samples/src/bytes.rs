//! Incompressible filler bytes.

use std::io::{self, Write};

/// Length of `random-50MB.bin`: exactly 50 MB (decimal), not MiB.
pub const RANDOM_LEN: u64 = 50_000_000;

/// Seed of the generator behind `random-50MB.bin` ("chunkcas" in ASCII).
const RANDOM_SEED: u64 = 0x6368_756e_6b63_6173;

/// The splitmix64 increment (the 64-bit golden ratio).
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// splitmix64: tiny, fast, well distributed, and, crucially, counter based:
/// output `i` depends only on `seed + (i + 1)·GAMMA`, which lets
/// [`random_bytes_at`] reproduce any byte range without generating a prefix.
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `buf` with the contents of `random-50MB.bin` starting at byte
/// `offset`, without touching the file.
///
/// Tests of range requests and resumable transfers can check any slice they
/// receive against this. Bytes past [`RANDOM_LEN`] continue the same stream
/// (they are simply not part of the file).
pub fn random_bytes_at(offset: u64, buf: &mut [u8]) {
    let mut word_index = offset / 8;
    let mut skip = (offset % 8) as usize;
    let mut filled = 0;
    while filled < buf.len() {
        let word = word_at(word_index).to_le_bytes();
        let take = (8 - skip).min(buf.len() - filled);
        buf[filled..filled + take].copy_from_slice(&word[skip..skip + take]);
        filled += take;
        skip = 0;
        word_index += 1;
    }
}

fn word_at(index: u64) -> u64 {
    mix(RANDOM_SEED.wrapping_add(index.wrapping_add(1).wrapping_mul(GAMMA)))
}

/// Streams the whole file through a 1 MiB buffer: large enough that the
/// syscall count is negligible, small enough not to matter for memory.
pub(crate) fn write_random(out: &mut impl Write) -> io::Result<()> {
    const CHUNK: usize = 1 << 20;
    let mut rng = SplitMix64::new(RANDOM_SEED);
    let mut buf = vec![0_u8; CHUNK];
    let mut remaining = RANDOM_LEN;
    while remaining > 0 {
        let len = CHUNK.min(remaining as usize);
        // CHUNK is a multiple of 8, so only the final chunk can end mid-word.
        for word in buf[..len].chunks_mut(8) {
            let bytes = rng.next_u64().to_le_bytes();
            word.copy_from_slice(&bytes[..word.len()]);
        }
        out.write_all(&buf[..len])?;
        remaining -= len as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_access_matches_stream() {
        let mut stream = Vec::new();
        let mut rng = SplitMix64::new(RANDOM_SEED);
        for _ in 0..16 {
            stream.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        for start in 0..40 {
            for len in [0, 1, 7, 8, 9, 50] {
                let mut buf = vec![0; len];
                random_bytes_at(start as u64, &mut buf);
                assert_eq!(buf, stream[start..start + len]);
            }
        }
    }

    #[test]
    fn splitmix64_reference_values() {
        // First outputs for seed 1234567 from the reference C implementation.
        let mut rng = SplitMix64::new(1_234_567);
        assert_eq!(rng.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(rng.next_u64(), 3_203_168_211_198_807_973);
    }
}
