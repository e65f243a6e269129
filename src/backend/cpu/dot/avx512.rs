//! AVX-512 kernels (F, BW, VL, VNNI): the Q8_0 and Q4_0 dots with `vpdpbusd`, which fuses the
//! AVX2 path's multiply–add pair into one instruction. Every other type uses the AVX2 kernels,
//! which every AVX-512 CPU can run.
//!
//! Selected only when the CPU reports all four features; the test suite then runs them against
//! the scalar reference (the development machine, an AMD EPYC, does). 256-bit registers only:
//! 512-bit ones need target features that Rust stabilised after this crate's minimum version.

// Column loops index several per-column arrays (accumulators, sums) in step, and the tile
// kernels take the raw pointers of a DotFn plus their block layout.
#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]
use std::arch::asm;
use std::arch::x86_64::*;

use super::avx2::{self, f16_at, hsum_ps, unpack_nibbles};
use super::{check_dot_args, Columns, DotFn, QuantizeFn, MAX_COLS};
use crate::dtype::TensorType;

pub(crate) fn kernels(ty: TensorType) -> Option<(QuantizeFn, DotFn)> {
    match ty {
        TensorType::Q8_0 => Some((avx2::quantize_q8_0 as QuantizeFn, dot_q8_0 as DotFn)),
        TensorType::Q4_0 => Some((avx2::quantize_q8_0, dot_q4_0)),
        _ => avx2::kernels(ty),
    }
}

tiled_dot!(dot_q8_0, q8_0_tile, 34, 34, 1);
tiled_dot!(dot_q4_0, q4_0_tile, 18, 34, 1);

/// `acc + Σ₄ a·b` per i32 lane (u8 `a`, i8 `b`): AVX512-VNNI `vpdpbusd` on ymm registers.
///
/// Inline assembly because the crate's minimum Rust (1.85) predates the stable AVX-512
/// intrinsics and target features (1.89); the EVEX form the assembler picks for this operand
/// shape needs AVX512-VNNI + AVX512-VL, which `Isa::Avx512` detection requires.
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

#[inline(always)]
unsafe fn vnni_tile<const C: usize>(
    nb: usize,
    w: *const u8,
    w_block: usize,
    x: *const u8,
    xs: usize,
    s: *const f32,
    out: *mut f32,
    decode: impl Fn(*const u8) -> (__m256i, f32),
) {
    let mut acc = [_mm256_setzero_ps(); C];
    for b in 0..nb {
        let (q, dw) = decode(w.add(b * w_block));
        let aq = _mm256_sign_epi8(q, q);
        let dw = _mm256_set1_ps(dw);
        for c in 0..C {
            let y = _mm256_loadu_si256(x.add(c * xs + b * 34 + 2) as *const __m256i);
            let dot = dpbusd(_mm256_setzero_si256(), aq, _mm256_sign_epi8(y, q));
            let dot = _mm256_mul_ps(_mm256_cvtepi32_ps(dot), dw);
            acc[c] = _mm256_fmadd_ps(_mm256_broadcast_ss(&*s.add(b * MAX_COLS + c)), dot, acc[c]);
        }
    }
    for c in 0..C {
        *out.add(c) = hsum_ps(acc[c]);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_tile<const C: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    s: *const f32,
    out: *mut f32,
) {
    vnni_tile::<C>(nb, w, 34, x, xs, s, out, |p| {
        (_mm256_loadu_si256(p.add(2) as *const __m256i), f16_at(p))
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0_tile<const C: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    s: *const f32,
    out: *mut f32,
) {
    vnni_tile::<C>(nb, w, 18, x, xs, s, out, |p| {
        let q = _mm256_sub_epi8(unpack_nibbles(p.add(2)), _mm256_set1_epi8(8));
        (q, f16_at(p))
    })
}
