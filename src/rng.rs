//! The seedable random numbers of the engine: splitmix64 in counter form and Box–Muller normals,
//! bit for bit as `tools/reference/rng.py` specifies them, so the same seed gives the same initial
//! noise (and the same image) in the PyTorch reference and on every backend and thread count.
//!
//! This module owns the number streams only; it must not know about latents or tokens.

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
const MIX1: u64 = 0xBF58_476D_1CE4_E5B9;
const MIX2: u64 = 0x94D0_49BB_1331_11EB;

/// splitmix64's output function (Vigna).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(MIX1);
    z = (z ^ (z >> 27)).wrapping_mul(MIX2);
    z ^ (z >> 31)
}

/// Number `n` (0-based) of the stream of `seed`: what a splitmix64 generator whose state starts at
/// `seed` returns on its `(n+1)`-th call. Counter form, so any element can be computed directly.
pub fn splitmix64_at(seed: u64, n: u64) -> u64 {
    mix(seed.wrapping_add(n.wrapping_add(1).wrapping_mul(GAMMA)))
}

/// A sequential splitmix64 generator (token sampling; anything that draws numbers one by one).
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// A uniform f64 in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Fills `out` with standard normal values of the stream of `seed`: pair `j` uses numbers `2j` and
/// `2j+1` through Box–Muller in f64, each value rounded to f32; an odd length drops the last sine.
pub fn fill_normal(seed: u64, out: &mut [f32]) {
    let scale = 1.0 / (1u64 << 53) as f64;
    for (j, pair) in out.chunks_mut(2).enumerate() {
        let a = splitmix64_at(seed, 2 * j as u64);
        let b = splitmix64_at(seed, 2 * j as u64 + 1);
        // u1 in (0, 1], never 0, so the logarithm is finite.
        let u1 = ((a >> 11) + 1) as f64 * scale;
        let u2 = (b >> 11) as f64 * scale;
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        pair[0] = (r * theta.cos()) as f32;
        if let Some(second) = pair.get_mut(1) {
            *second = (r * theta.sin()) as f32;
        }
    }
}

/// A seed drawn now, for `--seed -1` and requests without a seed: the standard library's
/// per-process random keys (from the OS) mixed with the clock. 32 bits, as stable-diffusion.cpp's
/// `rand()` seeds: short enough to retype, and a batch's `s + N − 1` stays far from overflow.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(now);
    hasher.finish() >> 32
}

#[cfg(test)]
mod tests {
    use super::*;

    // Test vectors from tools/reference/README.md ("Noise RNG"), produced by rng.py.
    #[test]
    fn matches_the_reference_vectors() {
        assert_eq!(splitmix64_at(0, 0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64_at(42, 0), 0xBDD7_3226_2FEB_6E95);
        let mut normals = [0f32; 8];
        fill_normal(0, &mut normals);
        let expected = [
            -0.452_757_75,
            0.207_766_04,
            2.650_606,
            -0.490_422_82,
            -0.988_604_1,
            1.872_101_4,
            0.252_462_71,
            -1.853_424_3,
        ];
        assert_eq!(normals, expected);
    }

    #[test]
    fn sequential_and_counter_forms_agree() {
        let mut rng = SplitMix64::new(1234);
        for n in 0..100 {
            assert_eq!(rng.next_u64(), splitmix64_at(1234, n));
        }
    }

    #[test]
    fn odd_lengths_drop_the_last_sine() {
        let mut five = [0f32; 5];
        let mut six = [0f32; 6];
        fill_normal(7, &mut five);
        fill_normal(7, &mut six);
        assert_eq!(five, six[..5]);
    }
}
