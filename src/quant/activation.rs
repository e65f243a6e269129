//! The activation formats the matmul kernels quantize their inputs to on the fly: Q8_1 (for the
//! Q4_1 / Q5_1 dot products) and Q8_K (for the K-quants), as ggml's `quantize_row_q8_1_ref` and
//! `quantize_row_q8_K_ref` make them. (Q8_0, the third one, is a weight format too and lives in
//! [`super::legacy`].)
//!
//! These are the definitions the SIMD quantizers of `backend::cpu` are tested against; this module
//! must stay scalar. The typed row functions panic when `src` and `dst` lengths disagree (a caller
//! bug, like slice indexing).

use super::blocks::{BlockQ8K, BlockQ8_1, QK};
use super::float::{f16_to_f32, f32_to_f16};
use super::legacy::absmax;
use super::round::{c_float_to_int, nearest_int};
use crate::dtype::QK_K;

/// `quantize_row_q8_1_ref`: as Q8_0 (`d = amax / 127`, `q = roundf(x/d)`), plus `s = d · Σq`.
pub fn quantize_row_q8_1(src: &[f32], dst: &mut [BlockQ8_1]) {
    assert_eq!(
        src.len(),
        dst.len() * QK,
        "quantize_row_q8_1: length mismatch"
    );
    for (x, y) in src.chunks_exact(QK).zip(dst.iter_mut()) {
        let d = absmax(x) / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        y.d = f32_to_f16(d);
        let mut sum = 0i32;
        for (q, &v) in y.qs.iter_mut().zip(x) {
            *q = c_float_to_int((v * id).round()) as i8;
            sum += *q as i32;
        }
        y.s = f32_to_f16(sum as f32 * d);
    }
}

/// `quantize_row_q8_K_ref`: `d = max / -127` with `max` the signed element of largest magnitude,
/// `q = min(127, nearest_int(x/d))` (ties to even), `bsums` = sums of each 16 q. An all-zero
/// block gets `d = 0` and zero quants; ggml leaves that block's `bsums` untouched, we zero them.
pub fn quantize_row_q8_k(src: &[f32], dst: &mut [BlockQ8K]) {
    assert_eq!(
        src.len(),
        dst.len() * QK_K,
        "quantize_row_q8_k: length mismatch"
    );
    for (x, y) in src.chunks_exact(QK_K).zip(dst.iter_mut()) {
        let mut max = 0.0f32;
        let mut amax = 0.0f32;
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            y.d = 0.0;
            y.qs = [0; QK_K];
            y.bsums = [0; QK_K / 16];
            continue;
        }
        // -127 rather than -128 so that q never reaches -128 (ggml: "for IQ2_XXS").
        let iscale = -127.0 / max;
        for (q, &v) in y.qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (sum, qs) in y.bsums.iter_mut().zip(y.qs.chunks_exact(16)) {
            *sum = qs.iter().map(|&q| q as i32).sum::<i32>() as i16;
        }
        y.d = 1.0 / iscale;
    }
}

/// `x = q · d` for Q8_1 (ggml defines no Q8_1 dequantizer; this is Q8_0's, `s` unused).
pub fn dequantize_row_q8_1(src: &[BlockQ8_1], dst: &mut [f32]) {
    assert_eq!(
        dst.len(),
        src.len() * QK,
        "dequantize_row_q8_1: length mismatch"
    );
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = f16_to_f32(b.d);
        for (out, &q) in y.iter_mut().zip(&b.qs) {
            *out = q as f32 * d;
        }
    }
}

/// `dequantize_row_q8_K`: `x = d · q`.
pub fn dequantize_row_q8_k(src: &[BlockQ8K], dst: &mut [f32]) {
    assert_eq!(
        dst.len(),
        src.len() * QK_K,
        "dequantize_row_q8_k: length mismatch"
    );
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
        for (out, &q) in y.iter_mut().zip(&b.qs) {
            *out = b.d * q as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytemuck::Zeroable;

    fn wave(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (i as f32 * 0.731).sin() * 3.0 - 0.4)
            .collect()
    }

    #[test]
    fn q8_1_sum_is_d_times_sum_of_quants() {
        let x = wave(4 * QK);
        let mut y = [BlockQ8_1::zeroed(); 4];
        quantize_row_q8_1(&x, &mut y);
        for b in &y {
            let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
            // ggml multiplies by the f32 scale before it is rounded to f16, so `s` agrees with the
            // stored `d` up to two f16 roundings (2 · 2^-11 relative).
            let expected = sum as f32 * f16_to_f32(b.d);
            let s = f16_to_f32(b.s);
            assert!(
                (s - expected).abs() <= expected.abs() / 1024.0,
                "{s} {expected}"
            );
            assert!(b.qs.iter().any(|&q| q.unsigned_abs() == 127));
        }
    }

    #[test]
    fn q8_k_bsums_are_sums_of_sixteen_and_extreme_maps_to_127() {
        let x = wave(2 * QK_K);
        let mut y = [BlockQ8K::zeroed(); 2];
        quantize_row_q8_k(&x, &mut y);
        for b in &y {
            for (s, qs) in b.bsums.iter().zip(b.qs.chunks(16)) {
                assert_eq!(*s as i32, qs.iter().map(|&q| q as i32).sum::<i32>());
            }
            // The element of largest magnitude becomes exactly -127 (d has the opposite sign).
            assert!(b.qs.contains(&-127));
            assert!(!b.qs.contains(&-128));
        }
        let mut back = vec![0f32; 2 * QK_K];
        dequantize_row_q8_k(&y, &mut back);
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() <= 3.4 / 254.0 + 1e-6, "{a} {b}");
        }
    }
}
