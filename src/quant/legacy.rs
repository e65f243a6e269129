//! The legacy 32-weight block formats Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0: reference quantizers
//! (`quantize_row_*_ref`) and dequantizers (`dequantize_row_*`), transcribed from `ggml-quants.c`.
//!
//! Bit-exactness with ggml rests on doing the same float operations in the same order (Rust never
//! fuses a multiply and an add, and neither does ggml's default x86-64 build) and on the same
//! float → integer conversions ([`c_float_to_int`]: C's `(int8_t)f` truncates toward zero; on the
//! degenerate out-of-range values C leaves undefined it does what ggml's x86-64 build does). This
//! module must not contain SIMD or anything a kernel needs beyond the format's definition.
//!
//! The typed row functions panic when `src` and `dst` lengths disagree (a caller bug, like slice
//! indexing); [`crate::quant::quantize`] / [`crate::quant::dequantize`] check and return errors.

use super::blocks::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, QK};
use super::float::{f16_to_f32, f32_to_f16};
use super::round::c_float_to_int;

fn check_lengths(what: &str, values: usize, blocks: usize) {
    assert_eq!(
        values,
        blocks * QK,
        "{what}: {values} values for {blocks} blocks of {QK}"
    );
}

/// The element of largest magnitude (the first one on ties), with its sign: ggml's `max`.
#[inline]
fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// `(min, max)` of the block, starting from ±FLT_MAX as ggml does (NaNs are skipped).
#[inline]
fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// `1/d`, or 0 for a zero scale (C's `d ? 1.0f/d : 0.0f`; a NaN `d` is "true" there too).
#[inline]
fn inverse_or_zero(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// `quantize_row_q4_0_ref`: `d = max / -8`, `q = min(15, trunc(x/d + 8.5))`.
pub fn quantize_row_q4_0(src: &[f32], dst: &mut [BlockQ4_0]) {
    check_lengths("quantize_row_q4_0", src.len(), dst.len());
    for (x, y) in src.chunks_exact(QK).zip(dst.iter_mut()) {
        let d = signed_absmax(x) / -8.0;
        let id = inverse_or_zero(d);
        y.d = f32_to_f16(d);
        for j in 0..QK / 2 {
            let x0 = x[j] * id;
            let x1 = x[QK / 2 + j] * id;
            let xi0 = (c_float_to_int(x0 + 8.5) as i8).min(15) as u8;
            let xi1 = (c_float_to_int(x1 + 8.5) as i8).min(15) as u8;
            y.qs[j] = xi0 | (xi1 << 4);
        }
    }
}

/// `quantize_row_q4_1_ref`: `d = (max − min) / 15`, `m = min`, `q = min(15, trunc((x−m)/d + 0.5))`.
pub fn quantize_row_q4_1(src: &[f32], dst: &mut [BlockQ4_1]) {
    check_lengths("quantize_row_q4_1", src.len(), dst.len());
    for (x, y) in src.chunks_exact(QK).zip(dst.iter_mut()) {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = inverse_or_zero(d);
        y.d = f32_to_f16(d);
        y.m = f32_to_f16(min);
        for j in 0..QK / 2 {
            let x0 = (x[j] - min) * id;
            let x1 = (x[QK / 2 + j] - min) * id;
            let xi0 = (c_float_to_int(x0 + 0.5) as i8).min(15) as u8;
            let xi1 = (c_float_to_int(x1 + 0.5) as i8).min(15) as u8;
            y.qs[j] = xi0 | (xi1 << 4);
        }
    }
}

/// `quantize_row_q5_0_ref`: `d = max / -16`, `q = min(31, trunc(x/d + 16.5))`.
pub fn quantize_row_q5_0(src: &[f32], dst: &mut [BlockQ5_0]) {
    check_lengths("quantize_row_q5_0", src.len(), dst.len());
    for (x, y) in src.chunks_exact(QK).zip(dst.iter_mut()) {
        let d = signed_absmax(x) / -16.0;
        let id = inverse_or_zero(d);
        y.d = f32_to_f16(d);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let x0 = x[j] * id;
            let x1 = x[QK / 2 + j] * id;
            let xi0 = (c_float_to_int(x0 + 16.5) as i8).min(31) as u8;
            let xi1 = (c_float_to_int(x1 + 16.5) as i8).min(31) as u8;
            y.qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
            qh |= (((xi0 & 0x10) >> 4) as u32) << j;
            qh |= (((xi1 & 0x10) >> 4) as u32) << (j + QK / 2);
        }
        y.qh = qh.to_le_bytes();
    }
}

/// `quantize_row_q5_1_ref`: `d = (max − min) / 31`, `m = min`, `q = trunc((x−m)/d + 0.5)`.
pub fn quantize_row_q5_1(src: &[f32], dst: &mut [BlockQ5_1]) {
    check_lengths("quantize_row_q5_1", src.len(), dst.len());
    for (x, y) in src.chunks_exact(QK).zip(dst.iter_mut()) {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = inverse_or_zero(d);
        y.d = f32_to_f16(d);
        y.m = f32_to_f16(min);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let x0 = (x[j] - min) * id;
            let x1 = (x[QK / 2 + j] - min) * id;
            // ggml converts straight to uint8_t here, with no clamp.
            let xi0 = c_float_to_int(x0 + 0.5) as u8;
            let xi1 = c_float_to_int(x1 + 0.5) as u8;
            y.qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
            qh |= (((xi0 & 0x10) >> 4) as u32) << j;
            qh |= (((xi1 & 0x10) >> 4) as u32) << (j + QK / 2);
        }
        y.qh = qh.to_le_bytes();
    }
}

/// `quantize_row_q8_0_ref`: `d = amax / 127`, `q = roundf(x/d)` (ties away from zero). Also the
/// activation format of the Q8_0 and Q4_0 / Q5_0 dot products.
pub fn quantize_row_q8_0(src: &[f32], dst: &mut [BlockQ8_0]) {
    check_lengths("quantize_row_q8_0", src.len(), dst.len());
    for (x, y) in src.chunks_exact(QK).zip(dst.iter_mut()) {
        let d = absmax(x) / 127.0;
        let id = inverse_or_zero(d);
        y.d = f32_to_f16(d);
        for (q, &v) in y.qs.iter_mut().zip(x) {
            *q = c_float_to_int((v * id).round()) as i8;
        }
    }
}

/// ggml's `amax = MAX(amax, fabsf(v))` with its macro's exact NaN behaviour
/// (`MAX(a, b) = a > b ? a : b`).
#[inline]
pub(super) fn absmax(x: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    for &v in x {
        let a = v.abs();
        amax = if amax > a { amax } else { a };
    }
    amax
}

/// `dequantize_row_q4_0`: `x = (q − 8) · d`.
pub fn dequantize_row_q4_0(src: &[BlockQ4_0], dst: &mut [f32]) {
    check_lengths("dequantize_row_q4_0", dst.len(), src.len());
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = f16_to_f32(b.d);
        for j in 0..QK / 2 {
            let x0 = (b.qs[j] & 0x0F) as i32 - 8;
            let x1 = (b.qs[j] >> 4) as i32 - 8;
            y[j] = x0 as f32 * d;
            y[j + QK / 2] = x1 as f32 * d;
        }
    }
}

/// `dequantize_row_q4_1`: `x = q · d + m`.
pub fn dequantize_row_q4_1(src: &[BlockQ4_1], dst: &mut [f32]) {
    check_lengths("dequantize_row_q4_1", dst.len(), src.len());
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = f16_to_f32(b.d);
        let m = f16_to_f32(b.m);
        for j in 0..QK / 2 {
            let x0 = (b.qs[j] & 0x0F) as f32;
            let x1 = (b.qs[j] >> 4) as f32;
            y[j] = x0 * d + m;
            y[j + QK / 2] = x1 * d + m;
        }
    }
}

/// The fifth bit of weights `j` and `j + 16`, from the 32-bit `qh`, already shifted to 0x10.
#[inline]
fn fifth_bits(qh: u32, j: usize) -> (u8, u8) {
    let xh_0 = (((qh >> j) << 4) & 0x10) as u8;
    let xh_1 = ((qh >> (j + 12)) & 0x10) as u8;
    (xh_0, xh_1)
}

/// `dequantize_row_q5_0`: `x = (q − 16) · d`.
pub fn dequantize_row_q5_0(src: &[BlockQ5_0], dst: &mut [f32]) {
    check_lengths("dequantize_row_q5_0", dst.len(), src.len());
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = f16_to_f32(b.d);
        let qh = u32::from_le_bytes(b.qh);
        for j in 0..QK / 2 {
            let (xh_0, xh_1) = fifth_bits(qh, j);
            let x0 = ((b.qs[j] & 0x0F) | xh_0) as i32 - 16;
            let x1 = ((b.qs[j] >> 4) | xh_1) as i32 - 16;
            y[j] = x0 as f32 * d;
            y[j + QK / 2] = x1 as f32 * d;
        }
    }
}

/// `dequantize_row_q5_1`: `x = q · d + m`.
pub fn dequantize_row_q5_1(src: &[BlockQ5_1], dst: &mut [f32]) {
    check_lengths("dequantize_row_q5_1", dst.len(), src.len());
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = f16_to_f32(b.d);
        let m = f16_to_f32(b.m);
        let qh = u32::from_le_bytes(b.qh);
        for j in 0..QK / 2 {
            let (xh_0, xh_1) = fifth_bits(qh, j);
            let x0 = ((b.qs[j] & 0x0F) | xh_0) as f32;
            let x1 = ((b.qs[j] >> 4) | xh_1) as f32;
            y[j] = x0 * d + m;
            y[j + QK / 2] = x1 * d + m;
        }
    }
}

/// `dequantize_row_q8_0`: `x = q · d`.
pub fn dequantize_row_q8_0(src: &[BlockQ8_0], dst: &mut [f32]) {
    check_lengths("dequantize_row_q8_0", dst.len(), src.len());
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = f16_to_f32(b.d);
        for (out, &q) in y.iter_mut().zip(&b.qs) {
            *out = q as f32 * d;
        }
    }
}
