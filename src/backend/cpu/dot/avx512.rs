//! AVX-512 kernels (F, BW, VL, VNNI): the Q8_0, Q4_0 and packed Q4_0 / Q8_0 / Q4_K / Q6_K dots with
//! `vpdpbusd`, which fuses the AVX2 path's multiply–add pair into one instruction. Every other type
//! uses the AVX2 kernels, which every AVX-512 CPU can run.
//!
//! Selected only when the CPU reports all four features; the test suite then runs them against
//! the scalar reference (the development machine, an AMD EPYC, does). 256-bit registers only:
//! 512-bit versions of these kernels have not been written or measured yet.

// Column loops index several per-column arrays (accumulators, sums) in step, and the tile
// kernels take the raw pointers of a DotFn plus their block layout.
#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]
use std::arch::asm;
use std::arch::x86_64::*;

use super::avx2::{self, f16_at, unpack_nibbles, unsigned_tile};
use super::{
    check_dot_args, check_packed_args, check_rows_args, Columns, DotFn, PackedDotFn, PackedTile,
    QuantizeFn, RowsDotFn, Tile, WeightRows, MAX_COLS,
};
use crate::backend::cpu::packed::PACK_ROWS;
use crate::dtype::TensorType;

pub(crate) fn kernels(ty: TensorType) -> Option<(QuantizeFn, DotFn)> {
    match ty {
        TensorType::Q8_0 => Some((avx2::quantize_q8_0 as QuantizeFn, dot_q8_0 as DotFn)),
        TensorType::Q4_0 => Some((avx2::quantize_q8_0, dot_q4_0)),
        _ => avx2::kernels(ty),
    }
}

/// The multi-row kernel for `ty`, where there is one.
pub(crate) fn rows_kernel(ty: TensorType) -> Option<RowsDotFn> {
    match ty {
        TensorType::Q8_0 => Some(rows_q8_0 as RowsDotFn),
        TensorType::Q4_0 => Some(rows_q4_0),
        _ => avx2::rows_kernel(ty),
    }
}

/// The packed-layout kernel for `ty`, where there is one (all of AVX2's, on `vpdpbusd`).
pub(crate) fn packed_kernel(ty: TensorType) -> Option<PackedDotFn> {
    match ty {
        TensorType::Q4_0 => Some(packed_q4_0 as PackedDotFn),
        TensorType::Q8_0 => Some(packed_q8_0),
        TensorType::Q4_K => Some(packed_q4_k),
        TensorType::Q6_K => Some(packed_q6_k),
        _ => avx2::packed_kernel(ty),
    }
}

row_tiled_dot!(rows_q8_0, q8_0_rows, 34, 34, 2);
row_tiled_dot!(rows_q4_0, q4_0_rows, 18, 34, 2);
tiled_dot!(dot_q8_0, rows q8_0_rows, 34, 34, 2);
tiled_dot!(dot_q4_0, rows q4_0_rows, 18, 34, 2);

// The packed Q4_0 kernel on AVX512-VNNI: `vpdpbusd` (unsigned nibbles × signed activations).
packed_dot!(
    packed_q4_0,
    PACK_ROWS * 18,
    8.0,
    |p, v| avx2::unpack_packed_nibbles(p, v),
    |acc, u, y| dpbusd(acc, u, y)
);

// The packed Q8_0 kernel on AVX512-VNNI: w + 128 (the top bit flipped) as unsigned bytes, whose
// i32 sums cannot saturate; the offset comes off through the columns' d·Σy, as in `q8_0_rows`.
packed_dot!(
    packed_q8_0,
    PACK_ROWS * 34,
    128.0,
    |p, v| {
        let (first, second) = avx2::packed_bytes(p, v);
        let top = _mm256_set1_epi8(-128);
        (_mm256_xor_si256(first, top), _mm256_xor_si256(second, top))
    },
    |acc, u, y| dpbusd(acc, u, y)
);

// The packed Q4_K kernel on AVX512-VNNI: unsigned nibbles straight into `vpdpbusd`.
packed_dot!(k_quant packed_q4_k, packed_q4_k_tile, 144, |acc, u, y| {
    dpbusd(acc, u, y)
});

// The packed Q6_K kernel on AVX512-VNNI: q = w + 32 (unsigned) into `vpdpbusd`.
packed_dot!(k_quant packed_q6_k, packed_q6_k_tile, 210, |acc, u, y| {
    dpbusd(acc, u, y)
});

/// `acc + Σ₄ a·b` per i32 lane (u8 `a`, i8 `b`): AVX512-VNNI `vpdpbusd` on ymm registers.
///
/// Inline assembly so that the tile code shared with the AVX2 kernels (compiled for AVX2 only)
/// inlines it: the intrinsic would need the AVX-512 target features on every caller. The EVEX
/// form the assembler picks for this operand shape needs AVX512-VNNI + AVX512-VL, which
/// `Isa::Avx512` detection requires.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn dpbusd(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    let mut acc = acc;
    // SAFETY: register-only instruction; callers run only where Isa::Avx512 was detected.
    asm!(
        "vpdpbusd {acc}, {a}, {b}",
        acc = inout(ymm_reg) acc,
        a = in(ymm_reg) a,
        b = in(ymm_reg) b,
        options(pure, nomem, nostack, preserves_flags),
    );
    acc
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_rows<const R: usize, const C: usize>(
    nb: usize,
    w: *const u8,
    ws: usize,
    x: *const u8,
    xs: usize,
    s: *const f32,
    out: *mut f32,
) {
    // w + 128 as unsigned bytes is w with its top bit flipped; vpdpbusd sums into i32 without the
    // i16 saturation that rules this out for maddubs.
    let decode = |p: *const u8| {
        let q = _mm256_loadu_si256(p.add(2) as *const __m256i);
        (_mm256_xor_si256(q, _mm256_set1_epi8(-128)), f16_at(p))
    };
    let dot = |u, y| dpbusd(_mm256_setzero_si256(), u, y);
    unsigned_tile::<R, C>(nb, w, ws, 34, x, xs, s, out, 128.0, decode, dot)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0_rows<const R: usize, const C: usize>(
    nb: usize,
    w: *const u8,
    ws: usize,
    x: *const u8,
    xs: usize,
    s: *const f32,
    out: *mut f32,
) {
    let decode = |p: *const u8| (unpack_nibbles(p.add(2)), f16_at(p));
    let dot = |u, y| dpbusd(_mm256_setzero_si256(), u, y);
    unsigned_tile::<R, C>(nb, w, ws, 18, x, xs, s, out, 8.0, decode, dot)
}
