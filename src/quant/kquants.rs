//! The K-quant weight formats Q4_K, Q5_K and Q6_K (256-weight super-blocks): reference quantizers
//! (`quantize_row_q{4,5,6}_K_ref`, no importance matrix) and dequantizers, transcribed from
//! `ggml-quants.c`. Their scale searches (`make_qkx2_quants`, `make_qx_quants`) are in
//! [`super::kquant_search`], which runs them on a super-block's sub-blocks at once.
//!
//! Bit-exactness rests on the same float operations in the same order (`a*b*c` is `(a*b)*c`, an
//! `int` operand is converted to `float` first, no fused multiply-add) and on [`nearest_int`]. Index
//! loops mirror ggml's so the two can be read side by side; `v.min(hi).max(lo)` is C's
//! `MAX(lo, MIN(hi, v))` (and has no `clamp` assertion in the hot loops). This module must stay
//! scalar.
//!
//! The typed row functions panic when `src` and `dst` lengths disagree (a caller bug, like slice
//! indexing); [`crate::quant::quantize`] / [`crate::quant::dequantize`] check and return errors.

#![allow(clippy::needless_range_loop)] // index loops keep the transcription checkable against C

use super::blocks::{BlockQ4K, BlockQ5K, BlockQ6K, K_SCALE_SIZE};
use super::float::{f16_to_f32, f32_to_f16};
use super::kquant_search::{qkx2_row, qx_rmse1_sub_blocks, Qkx2, GROUP_MAX_EPS};
use super::round::nearest_int;
use crate::dtype::QK_K;

fn check_lengths(what: &str, values: usize, blocks: usize) {
    assert_eq!(
        values,
        blocks * QK_K,
        "{what}: {values} values for {blocks} blocks of {QK_K}"
    );
}

/// Scale and min of sub-block `j` (0..8) from the 12 packed bytes of Q4_K / Q5_K
/// (`get_scale_min_k4`): 6 bits each, the top two bits of 4..8 spread over bytes 0..8.
#[inline]
pub fn get_scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The inverse of [`get_scale_min_k4`] for all 8 sub-blocks (both already clamped to 63).
fn pack_scales_mins(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; K_SCALE_SIZE] {
    let mut scales = [0u8; K_SCALE_SIZE];
    for j in 0..QK_K / 32 {
        if j < 4 {
            scales[j] = ls[j];
            scales[j + 4] = lm[j];
        } else {
            scales[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            scales[j - 4] |= (ls[j] >> 4) << 6;
            scales[j] |= (lm[j] >> 4) << 6;
        }
    }
    scales
}

/// The rest of the sub-block quantization Q4_K and Q5_K share, for the super-block `x` and what
/// the `make_qkx2_quants` search ([`qkx2_row`], weights `rms(x) + |x|`) found for its 8
/// sub-blocks: scales and mins quantized to 6 bits against the largest, and the quants
/// recomputed with the rounded scales. Returns `(d, dmin, packed scales, L)`.
fn quantize_k_sub_blocks(
    x: &[f32],
    found: &Qkx2<8>,
    nmax: i32,
) -> (half::f16, half::f16, [u8; K_SCALE_SIZE], [u8; QK_K]) {
    let xs: &[[f32; 32]] = bytemuck::cast_slice(x);
    let Qkx2 {
        scales,
        mins,
        quants: mut l,
    } = *found;
    let mut max_scale = 0.0f32; // the min is deducted, so scales are never negative
    let mut max_min = 0.0f32;
    for j in 0..QK_K / 32 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }

    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..QK_K / 32 {
        // C stores nearest_int's int into a uint8_t (mod 256) before clamping.
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let packed = pack_scales_mins(&ls, &lm);
    let d = f32_to_f16(max_scale / 63.0);
    let dmin = f32_to_f16(max_min / 63.0);

    for j in 0..QK_K / 32 {
        let (sc, m) = get_scale_min_k4(j, &packed);
        let dj = f16_to_f32(d) * sc as f32;
        if dj == 0.0 {
            continue;
        }
        let dm = f16_to_f32(dmin) * m as f32;
        for ii in 0..32 {
            let q = nearest_int((xs[j][ii] + dm) / dj);
            l[j][ii] = q.min(nmax).max(0) as u8;
        }
    }
    (d, dmin, packed, bytemuck::cast(l))
}

/// `quantize_row_q4_K_ref`.
pub fn quantize_row_q4_k(src: &[f32], dst: &mut [BlockQ4K]) {
    check_lengths("quantize_row_q4_k", src.len(), dst.len());
    qkx2_row(src, 15, -1.0, 0.1, 20, |k, found| {
        let (x, y) = (&src[k * QK_K..(k + 1) * QK_K], &mut dst[k]);
        let (d, dmin, scales, l) = quantize_k_sub_blocks(x, found, 15);
        y.d = d;
        y.dmin = dmin;
        y.scales = scales;
        for (chunk, q) in y.qs.chunks_exact_mut(32).enumerate() {
            let j = 64 * chunk;
            for i in 0..32 {
                q[i] = l[j + i] | (l[j + i + 32] << 4);
            }
        }
    });
}

/// `quantize_row_q5_K_ref`.
pub fn quantize_row_q5_k(src: &[f32], dst: &mut [BlockQ5K]) {
    check_lengths("quantize_row_q5_k", src.len(), dst.len());
    qkx2_row(src, 31, -0.5, 0.1, 15, |k, found| {
        let (x, y) = (&src[k * QK_K..(k + 1) * QK_K], &mut dst[k]);
        let (d, dmin, scales, l) = quantize_k_sub_blocks(x, found, 31);
        y.d = d;
        y.dmin = dmin;
        y.scales = scales;
        y.qh = [0; QK_K / 8];
        let (mut m1, mut m2) = (1u8, 2u8);
        for (chunk, ql) in y.qs.chunks_exact_mut(32).enumerate() {
            let n = 64 * chunk;
            for j in 0..32 {
                let mut l1 = l[n + j];
                if l1 > 15 {
                    l1 -= 16;
                    y.qh[j] |= m1;
                }
                let mut l2 = l[n + j + 32];
                if l2 > 15 {
                    l2 -= 16;
                    y.qh[j] |= m2;
                }
                ql[j] = l1 | (l2 << 4);
            }
            m1 <<= 2;
            m2 <<= 2;
        }
    });
}

/// `quantize_row_q6_K_ref`.
pub fn quantize_row_q6_k(src: &[f32], dst: &mut [BlockQ6K]) {
    check_lengths("quantize_row_q6_k", src.len(), dst.len());
    for (x, y) in src.chunks_exact(QK_K).zip(dst.iter_mut()) {
        let x16: &[[f32; 16]] = bytemuck::cast_slice(x);
        let block: &[f32; QK_K] = x.try_into().expect("one super-block");
        let (scales, mut l16) = qx_rmse1_sub_blocks(block, 32);
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for ib in 0..QK_K / 16 {
            let scale = scales[ib];
            let abs_scale = scale.abs();
            if abs_scale > max_abs_scale {
                max_abs_scale = abs_scale;
                max_scale = scale;
            }
        }

        if max_abs_scale < GROUP_MAX_EPS {
            *y = bytemuck::Zeroable::zeroed();
            continue;
        }

        let iscale = -128.0 / max_scale;
        y.d = f32_to_f16(1.0 / iscale);
        for ib in 0..QK_K / 16 {
            // C clamps only from above, then stores the int into an int8_t (mod 256).
            y.scales[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
        }

        for j in 0..QK_K / 16 {
            let d = f16_to_f32(y.d) * y.scales[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(x16[j][ii] / d).clamp(-32, 31);
                l16[j][ii] = (q + 32) as i8;
            }
        }
        let l: &[i8; QK_K] = bytemuck::cast_ref(&l16);

        for (half_block, (ql, qh)) in
            y.ql.chunks_exact_mut(64)
                .zip(y.qh.chunks_exact_mut(32))
                .enumerate()
        {
            let j = 128 * half_block;
            for i in 0..32 {
                let q1 = l[j + i] as u8 & 0xF;
                let q2 = l[j + i + 32] as u8 & 0xF;
                let q3 = l[j + i + 64] as u8 & 0xF;
                let q4 = l[j + i + 96] as u8 & 0xF;
                ql[i] = q1 | (q3 << 4);
                ql[i + 32] = q2 | (q4 << 4);
                qh[i] = (l[j + i] as u8 >> 4)
                    | ((l[j + i + 32] as u8 >> 4) << 2)
                    | ((l[j + i + 64] as u8 >> 4) << 4)
                    | ((l[j + i + 96] as u8 >> 4) << 6);
            }
        }
    }
}

/// `dequantize_row_q4_K`: `x = d·sc·q − dmin·m` per sub-block of 32.
pub fn dequantize_row_q4_k(src: &[BlockQ4K], dst: &mut [f32]) {
    check_lengths("dequantize_row_q4_k", dst.len(), src.len());
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        let min = f16_to_f32(b.dmin);
        for (chunk, (q, out)) in
            b.qs.chunks_exact(32)
                .zip(y.chunks_exact_mut(64))
                .enumerate()
        {
            let (sc, m) = get_scale_min_k4(2 * chunk, &b.scales);
            let (d1, m1) = (d * sc as f32, min * m as f32);
            let (sc, m) = get_scale_min_k4(2 * chunk + 1, &b.scales);
            let (d2, m2) = (d * sc as f32, min * m as f32);
            for l in 0..32 {
                out[l] = d1 * (q[l] & 0xF) as f32 - m1;
                out[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

/// `dequantize_row_q5_K`: as Q4_K with a fifth bit from `qh`.
pub fn dequantize_row_q5_k(src: &[BlockQ5K], dst: &mut [f32]) {
    check_lengths("dequantize_row_q5_k", dst.len(), src.len());
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        let min = f16_to_f32(b.dmin);
        let (mut u1, mut u2) = (1u8, 2u8);
        for (chunk, (ql, out)) in
            b.qs.chunks_exact(32)
                .zip(y.chunks_exact_mut(64))
                .enumerate()
        {
            let (sc, m) = get_scale_min_k4(2 * chunk, &b.scales);
            let (d1, m1) = (d * sc as f32, min * m as f32);
            let (sc, m) = get_scale_min_k4(2 * chunk + 1, &b.scales);
            let (d2, m2) = (d * sc as f32, min * m as f32);
            for l in 0..32 {
                let hi1 = if b.qh[l] & u1 != 0 { 16 } else { 0 };
                let hi2 = if b.qh[l] & u2 != 0 { 16 } else { 0 };
                out[l] = d1 * ((ql[l] & 0xF) + hi1) as f32 - m1;
                out[l + 32] = d2 * ((ql[l] >> 4) + hi2) as f32 - m2;
            }
            u1 <<= 2;
            u2 <<= 2;
        }
    }
}

/// `dequantize_row_q6_K`: `x = d·sc·(q − 32)` per sub-block of 16.
pub fn dequantize_row_q6_k(src: &[BlockQ6K], dst: &mut [f32]) {
    check_lengths("dequantize_row_q6_k", dst.len(), src.len());
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        for (half_block, out) in y.chunks_exact_mut(128).enumerate() {
            let ql = &b.ql[64 * half_block..64 * half_block + 64];
            let qh = &b.qh[32 * half_block..32 * half_block + 32];
            let sc = &b.scales[8 * half_block..8 * half_block + 8];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                out[l] = d * sc[is] as f32 * q1 as f32;
                out[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                out[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                out[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_packing_round_trips_every_6_bit_value() {
        for v in 0u8..64 {
            let ls: [u8; 8] = std::array::from_fn(|j| (v + 7 * j as u8) % 64);
            let lm: [u8; 8] = std::array::from_fn(|j| (63 - v + 3 * j as u8) % 64);
            let packed = pack_scales_mins(&ls, &lm);
            for j in 0..8 {
                assert_eq!(get_scale_min_k4(j, &packed), (ls[j], lm[j]), "v {v} j {j}");
            }
        }
    }

    #[test]
    fn quants_stay_in_range_and_reconstruct_constant_blocks() {
        // A constant positive block is all min: every weight must come back within f16 rounding.
        let x = vec![0.75f32; QK_K];
        let mut q4 = [BlockQ4K::zeroed()];
        let mut q5 = [BlockQ5K::zeroed()];
        let mut q6 = [BlockQ6K::zeroed()];
        quantize_row_q4_k(&x, &mut q4);
        quantize_row_q5_k(&x, &mut q5);
        quantize_row_q6_k(&x, &mut q6);
        let mut y4 = vec![0f32; QK_K];
        let mut y5 = vec![0f32; QK_K];
        let mut y6 = vec![0f32; QK_K];
        dequantize_row_q4_k(&q4, &mut y4);
        dequantize_row_q5_k(&q5, &mut y5);
        dequantize_row_q6_k(&q6, &mut y6);
        for y in [&y4, &y5, &y6] {
            // 2^-9 relative: the 6-bit scale times an f16 super-scale, each rounded.
            assert!(y.iter().all(|&v| (v - 0.75).abs() <= 0.75 / 512.0), "{y:?}");
        }
        let mut y = y6;
        // Q6_K scales are signed 8-bit and quants 6-bit: the extreme weight maps to ±32 steps.
        let x: Vec<f32> = (0..QK_K).map(|i| i as f32 - 128.0).collect();
        quantize_row_q6_k(&x, &mut q6);
        dequantize_row_q6_k(&q6, &mut y);
        let worst = x
            .iter()
            .zip(&y)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= 128.0 / 32.0, "{worst}");
    }

    use bytemuck::Zeroable;
}
