//! Seeded randomness, split per component.
//!
//! One seed drives a run. Each component (a path of the network, a client's choices) gets its
//! own generator derived from the seed and a stable label, so that adding a draw in one
//! component does not shift the numbers every other component sees.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A generator for the component named `label` in the run of `seed`.
pub fn derive(seed: u64, label: &str) -> StdRng {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(label.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(h.finalize().as_bytes());
    StdRng::from_seed(key)
}

/// A uniformly drawn duration in `[lo, hi]` milliseconds.
pub fn millis(rng: &mut StdRng, lo: u64, hi: u64) -> std::time::Duration {
    std::time::Duration::from_millis(rng.random_range(lo..=hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_label_same_numbers_other_label_other_numbers() {
        let a: u64 = derive(7, "net").random();
        let b: u64 = derive(7, "net").random();
        let c: u64 = derive(7, "client/1").random();
        let d: u64 = derive(8, "net").random();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }
}
