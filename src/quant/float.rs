//! The plain float formats: F32 (a copy), F16 and BF16, converted exactly as ggml converts them.
//!
//! ggml's quantizers (in `ggml-base`) use its portable conversions, not the F16C instructions, so
//! these follow `ggml_compute_fp32_to_fp16` / `ggml_compute_fp16_to_fp32` (Maratyszcza's FP16
//! algorithm: round to nearest even, NaN → canonical quiet NaN 0x7E00) and
//! `ggml_compute_fp32_to_bf16` (round to nearest even, NaN forced quiet, not truncation) bit for
//! bit. Everything that stores an `f16` scale goes through [`f32_to_f16`]. This module must not know
//! about blocks.

use half::{bf16, f16};

/// ggml's FP32 → FP16: round to nearest even, overflow to ±inf, every NaN to a quiet NaN with no
/// payload (`sign | 0x7E00`). (`half::f16::from_f32` keeps NaN payload bits, so it differs there.)
#[inline]
pub fn f32_to_f16(f: f32) -> f16 {
    const SCALE_TO_INF: f32 = f32::from_bits(0x7780_0000); // 2^112
    const SCALE_TO_ZERO: f32 = f32::from_bits(0x0880_0000); // 2^-110
    let mut base = (f.abs() * SCALE_TO_INF) * SCALE_TO_ZERO;

    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let bias = (shl1_w & 0xFF00_0000).max(0x7100_0000);

    // Adding a power of two scaled to the value's exponent makes the FPU round the mantissa to the
    // 10 bits f16 keeps (or to the subnormal grid).
    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7C00;
    let mantissa_bits = bits & 0x0000_0FFF;
    let nonsign = exp_bits + mantissa_bits;
    let out = (sign >> 16)
        | if shl1_w > 0xFF00_0000 {
            0x7E00
        } else {
            nonsign
        };
    f16::from_bits(out as u16)
}

/// ggml's FP16 → FP32 (exact for every finite value and infinity; NaNs stay NaN, made quiet).
#[inline]
pub fn f16_to_f32(h: f16) -> f32 {
    let w = (h.to_bits() as u32) << 16;
    let sign = w & 0x8000_0000;
    let two_w = w.wrapping_add(w);

    const EXP_OFFSET: u32 = 0xE0 << 23;
    const EXP_SCALE: f32 = f32::from_bits(0x0780_0000); // 2^-112
    let normalized = f32::from_bits((two_w >> 4) + EXP_OFFSET) * EXP_SCALE;

    const MAGIC_MASK: u32 = 126 << 23;
    let denormalized = f32::from_bits((two_w >> 17) | MAGIC_MASK) - 0.5;

    const DENORMALIZED_CUTOFF: u32 = 1 << 27;
    let result = sign
        | if two_w < DENORMALIZED_CUTOFF {
            denormalized.to_bits()
        } else {
            normalized.to_bits()
        };
    f32::from_bits(result)
}

/// ggml's FP32 → BF16: round to nearest even; a NaN keeps its top bits and is forced quiet.
#[inline]
pub fn f32_to_bf16(s: f32) -> bf16 {
    let i = s.to_bits();
    if i & 0x7fff_ffff > 0x7f80_0000 {
        return bf16::from_bits(((i >> 16) | 64) as u16);
    }
    bf16::from_bits((i.wrapping_add(0x7fff + ((i >> 16) & 1)) >> 16) as u16)
}

/// BF16 → FP32: the bits shifted into place (exact).
#[inline]
pub fn bf16_to_f32(h: bf16) -> f32 {
    f32::from_bits((h.to_bits() as u32) << 16)
}

/// `ggml_fp32_to_fp16_row`. Panics if the lengths differ.
pub fn quantize_row_f16(src: &[f32], dst: &mut [f16]) {
    assert_eq!(src.len(), dst.len(), "quantize_row_f16: length mismatch");
    for (y, &x) in dst.iter_mut().zip(src) {
        *y = f32_to_f16(x);
    }
}

/// `ggml_fp16_to_fp32_row`. Panics if the lengths differ.
pub fn dequantize_row_f16(src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "dequantize_row_f16: length mismatch");
    for (y, &x) in dst.iter_mut().zip(src) {
        *y = f16_to_f32(x);
    }
}

/// `ggml_fp32_to_bf16_row_ref`. Panics if the lengths differ.
pub fn quantize_row_bf16(src: &[f32], dst: &mut [bf16]) {
    assert_eq!(src.len(), dst.len(), "quantize_row_bf16: length mismatch");
    for (y, &x) in dst.iter_mut().zip(src) {
        *y = f32_to_bf16(x);
    }
}

/// `ggml_bf16_to_fp32_row`. Panics if the lengths differ.
pub fn dequantize_row_bf16(src: &[bf16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "dequantize_row_bf16: length mismatch");
    for (y, &x) in dst.iter_mut().zip(src) {
        *y = bf16_to_f32(x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks f32 bit patterns with a stride that visits every exponent and many mantissas.
    fn sample_bits() -> impl Iterator<Item = u32> {
        (0..=u32::MAX).step_by(4093).chain([
            0x0000_0000,
            0x8000_0000,
            0x7f80_0000,
            0xff80_0000,
            0x477f_f000, // 65520: rounds up to inf
            0x477f_efff, // just below: 65504
            0x3380_0000, // 2^-24: smallest f16 subnormal
            0x3300_0000, // 2^-25: tie, rounds to even (zero)
            0x3300_0001,
        ])
    }

    #[test]
    fn f16_matches_ieee_round_to_nearest_even_except_nan_payloads() {
        // `half` implements IEEE binary16 conversion with round-to-nearest-even: an independent
        // oracle for every non-NaN input.
        for bits in sample_bits() {
            let x = f32::from_bits(bits);
            let ours = f32_to_f16(x);
            if x.is_nan() {
                assert_eq!(ours.to_bits() & 0x7fff, 0x7E00, "{bits:#x}");
                assert_eq!(ours.to_bits() & 0x8000, ((bits >> 16) & 0x8000) as u16);
            } else {
                assert_eq!(ours.to_bits(), f16::from_f32(x).to_bits(), "{bits:#x}");
            }
        }
    }

    #[test]
    fn f16_to_f32_is_exact_for_all_halves() {
        for h in 0..=u16::MAX {
            let h = f16::from_bits(h);
            let ours = f16_to_f32(h);
            let theirs = h.to_f32();
            if theirs.is_nan() {
                assert!(ours.is_nan());
                assert_eq!(ours.to_bits(), theirs.to_bits() | 0x0040_0000);
            } else {
                assert_eq!(ours.to_bits(), theirs.to_bits(), "{:#x}", h.to_bits());
                // Round trip is the identity on non-NaN halves.
                assert_eq!(f32_to_f16(ours).to_bits(), h.to_bits());
            }
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even_and_quiets_nan() {
        for bits in sample_bits() {
            let x = f32::from_bits(bits);
            let ours = f32_to_bf16(x);
            if x.is_nan() {
                assert!(bf16_to_f32(ours).is_nan());
                assert_eq!(ours.to_bits() & 0x40, 0x40);
            } else {
                assert_eq!(ours.to_bits(), bf16::from_f32(x).to_bits(), "{bits:#x}");
            }
        }
        // Ties: 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7; even wins.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)).to_bits(), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)).to_bits(), 0x3f82);
        // Not truncation.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)).to_bits(), 0x3f81);
        // A signalling NaN is made quiet.
        assert_eq!(f32_to_bf16(f32::from_bits(0x7f80_0001)).to_bits(), 0x7fc0);
    }
}
