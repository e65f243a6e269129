//! Shared helpers of the kernel tests: a tiny deterministic RNG and weight / activation makers.
#![allow(dead_code)]

#[cfg(feature = "wgpu")]
pub mod gpu;

use latte::dtype::TensorType;

/// xorshift64*: deterministic, dependency-free test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Activation-like values: mostly small, now and then an outlier, sometimes exactly zero.
    pub fn activations(&mut self, len: usize) -> Vec<f32> {
        (0..len)
            .map(|_| match self.next_u64() % 64 {
                0 => self.uniform() * 20.0,
                1 => 0.0,
                _ => self.uniform(),
            })
            .collect()
    }
}

/// Element count of a row of `ty` of at least `blocks` blocks.
pub fn block_len(ty: TensorType) -> usize {
    ty.block_size().max(1)
}

/// A weight matrix of m rows of k values of type `ty`, quantized from random values by the
/// reference quantizer (`latte::quant::quantize`).
pub fn weight_bytes(ty: TensorType, k: usize, m: usize, rng: &mut Rng) -> Vec<u8> {
    let values: Vec<f32> = (0..k * m).map(|_| rng.uniform() * 0.5).collect();
    let mut bytes = vec![0u8; ty.row_bytes((k * m) as u64).unwrap() as usize];
    latte::quant::quantize(ty, &values, &mut bytes).unwrap();
    bytes
}

/// Dequantized values of `bytes` of type `ty` holding `len` elements (the reference dequantizer).
pub fn dequantized(ty: TensorType, bytes: &[u8], len: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; len];
    latte::quant::dequantize(ty, bytes, &mut out).unwrap();
    out
}

/// Byte offsets of the f16 scale fields (d, dmin / m) in one block of `ty`.
fn scale_fields(ty: TensorType) -> &'static [usize] {
    use TensorType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q6_K => &[208],
        _ => &[],
    }
}

/// Quantized weights of random bytes (every bit pattern of quants, scales and high bits), with
/// finite random f16 scales; `None` for the float types, whose random bytes could be NaN.
pub fn random_block_bytes(ty: TensorType, k: usize, m: usize, rng: &mut Rng) -> Option<Vec<u8>> {
    if !ty.is_quantized() {
        return None;
    }
    let len = ty.row_bytes((k * m) as u64).unwrap() as usize;
    let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    for block in bytes.chunks_exact_mut(ty.block_bytes()) {
        for &at in scale_fields(ty) {
            let d = half::f16::from_f32(rng.uniform() * 0.01);
            block[at..at + 2].copy_from_slice(&d.to_le_bytes());
        }
    }
    Some(bytes)
}

/// k values per row to test for `ty`: one block, and a few blocks (odd counts included).
pub fn test_ks(ty: TensorType) -> Vec<usize> {
    match ty.block_size() {
        1 => vec![1, 8, 23, 64, 96],
        32 => vec![32, 96, 160],
        _ => vec![256, 768],
    }
}
