//! aarch64 Advanced SIMD kernels: ggml's block arithmetic with 16-byte vectors (`smull` +
//! `sadalp` for the int8 products, which every aarch64 CPU has), tiled over up to
//! [`MAX_COLS`](super::MAX_COLS) activation columns like the AVX2 ones.
//!
//! Activations are quantized by the scalar reference quantizers, and F16 weights use the scalar
//! kernel (Rust's f16 vector types are not stable); every other type has a NEON kernel here.
//! Tested under qemu-aarch64 against the scalar reference.

// Column loops index several per-column arrays (accumulators, sums) in step, and the tile
// kernels take the raw pointers of a DotFn plus their block layout.
#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]

use std::arch::aarch64::*;
use std::ptr::read_unaligned;

use super::{check_dot_args, scalar, Columns, DotFn, QuantizeFn};
use crate::dtype::{TensorType, QK_K};

pub(crate) fn kernels(ty: TensorType) -> Option<(QuantizeFn, DotFn)> {
    use TensorType::*;
    Some(match ty {
        F32 => (scalar::quantize_f32 as QuantizeFn, dot_f32 as DotFn),
        F16 => scalar::kernels(F16)?,
        BF16 => (scalar::quantize_bf16, dot_bf16),
        Q8_0 => (scalar::quantize_q8_0, dot_q8_0),
        Q4_0 => (scalar::quantize_q8_0, dot_q4_0),
        Q5_0 => (scalar::quantize_q8_0, dot_q5_0),
        Q4_1 => (scalar::quantize_q8_1, dot_q4_1),
        Q5_1 => (scalar::quantize_q8_1, dot_q5_1),
        Q4_K => (scalar::quantize_q8_k, dot_q4_k),
        Q5_K => (scalar::quantize_q8_k, dot_q5_k),
        Q6_K => (scalar::quantize_q8_k, dot_q6_k),
        _ => return None,
    })
}

tiled_dot!(dot_f32, f32_tile, 4, 4, 0);
tiled_dot!(dot_bf16, bf16_tile, 2, 2, 0);
tiled_dot!(dot_q8_0, q8_0_tile, 34, 34, 0);
tiled_dot!(dot_q4_0, q4_0_tile, 18, 34, 0);
tiled_dot!(dot_q5_0, q5_0_tile, 22, 34, 0);
tiled_dot!(dot_q4_1, q4_1_tile, 20, 36, 0);
tiled_dot!(dot_q5_1, q5_1_tile, 24, 36, 0);
tiled_dot!(dot_q4_k, q4_k_tile, 144, 292, 0);
tiled_dot!(dot_q5_k, q5_k_tile, 176, 292, 0);
tiled_dot!(dot_q6_k, q6_k_tile, 210, 292, 0);

// ---------------------------------------------------------------------------------------------
// Helpers.

#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    half::f16::from_bits(read_unaligned(p as *const u16)).to_f32()
}

#[inline(always)]
unsafe fn f32_at(p: *const u8) -> f32 {
    read_unaligned(p as *const f32)
}

#[inline(always)]
unsafe fn ld(p: *const u8) -> int8x16_t {
    vld1q_s8(p as *const i8)
}

/// `acc` + the products of 16 signed byte pairs, summed pairwise into 4 i32 lanes.
#[inline(always)]
unsafe fn dot16(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    let hi = vmull_high_s8(a, b);
    vpadalq_s16(vpadalq_s16(acc, lo), hi)
}

/// Σ of the products of 32 signed byte pairs (two vectors each).
#[inline(always)]
unsafe fn dot32(a: [int8x16_t; 2], b0: int8x16_t, b1: int8x16_t) -> int32x4_t {
    dot16(dot16(vdupq_n_s32(0), a[0], b0), a[1], b1)
}

/// 16 bytes of packed nibbles → [low nibbles (weights 0..16), high nibbles (16..32)].
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> [uint8x16_t; 2] {
    let b = vld1q_u8(p);
    [vandq_u8(b, vdupq_n_u8(0x0f)), vshrq_n_u8::<4>(b)]
}

/// The fifth bits of a Q5_0 / Q5_1 block (bit j of the u32 at `p` for weight j) as 0x10 bytes.
#[inline(always)]
unsafe fn high_bits(p: *const u8) -> [uint8x16_t; 2] {
    const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let bit = vld1q_u8(BIT.as_ptr());
    let half = |b0: u8, b1: u8| {
        let v = vcombine_u8(vdup_n_u8(b0), vdup_n_u8(b1));
        vandq_u8(vtstq_u8(v, bit), vdupq_n_u8(0x10))
    };
    let qh = read_unaligned(p as *const [u8; 4]);
    [half(qh[0], qh[1]), half(qh[2], qh[3])]
}

#[inline(always)]
unsafe fn s8(v: uint8x16_t) -> int8x16_t {
    vreinterpretq_s8_u8(v)
}

// ---------------------------------------------------------------------------------------------
// Float weights.

#[inline(always)]
unsafe fn float_tile<const C: usize>(
    k: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    out: *mut f32,
    elem: usize,
    load: impl Fn(*const u8) -> float32x4_t,
    scalar: impl Fn(*const u8) -> f32,
) {
    let mut acc = [vdupq_n_f32(0.0); C];
    let mut i = 0;
    while i + 4 <= k {
        let wv = load(w.add(i * elem));
        for c in 0..C {
            acc[c] = vfmaq_f32(acc[c], wv, load(x.add(c * xs + i * elem)));
        }
        i += 4;
    }
    for c in 0..C {
        let mut s = vaddvq_f32(acc[c]);
        for j in i..k {
            s += scalar(w.add(j * elem)) * scalar(x.add(c * xs + j * elem));
        }
        *out.add(c) = s;
    }
}

#[target_feature(enable = "neon")]
unsafe fn f32_tile<const C: usize>(
    k: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    _s: *const f32,
    out: *mut f32,
) {
    float_tile::<C>(
        k,
        w,
        x,
        xs,
        out,
        4,
        |p| vld1q_f32(p as *const f32),
        |p| f32_at(p),
    )
}

#[target_feature(enable = "neon")]
unsafe fn bf16_tile<const C: usize>(
    k: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    _s: *const f32,
    out: *mut f32,
) {
    float_tile::<C>(
        k,
        w,
        x,
        xs,
        out,
        2,
        |p| vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(p as *const u16))),
        |p| scalar::bf16_bits_to_f32(read_unaligned(p as *const u16)),
    )
}

// ---------------------------------------------------------------------------------------------
// Legacy 32-weight blocks.

/// Symmetric types against Q8_0: `decode` gives 32 signed weights and the block scale.
#[inline(always)]
unsafe fn signed_tile<const C: usize>(
    nb: usize,
    w: *const u8,
    w_block: usize,
    x: *const u8,
    xs: usize,
    out: *mut f32,
    decode: impl Fn(*const u8) -> ([int8x16_t; 2], f32),
) {
    let mut acc = [vdupq_n_f32(0.0); C];
    for b in 0..nb {
        let (q, dw) = decode(w.add(b * w_block));
        for c in 0..C {
            let xb = x.add(c * xs + b * 34);
            let sumi = dot32(q, ld(xb.add(2)), ld(xb.add(18)));
            acc[c] = vfmaq_n_f32(acc[c], vcvtq_f32_s32(sumi), dw * f16_at(xb));
        }
    }
    for c in 0..C {
        *out.add(c) = vaddvq_f32(acc[c]);
    }
}

#[target_feature(enable = "neon")]
unsafe fn q8_0_tile<const C: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    _s: *const f32,
    out: *mut f32,
) {
    signed_tile::<C>(nb, w, 34, x, xs, out, |p| {
        ([ld(p.add(2)), ld(p.add(18))], f16_at(p))
    })
}

#[target_feature(enable = "neon")]
unsafe fn q4_0_tile<const C: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    _s: *const f32,
    out: *mut f32,
) {
    signed_tile::<C>(nb, w, 18, x, xs, out, |p| {
        let [lo, hi] = nibbles(p.add(2));
        let eight = vdupq_n_s8(8);
        (
            [vsubq_s8(s8(lo), eight), vsubq_s8(s8(hi), eight)],
            f16_at(p),
        )
    })
}

#[target_feature(enable = "neon")]
unsafe fn q5_0_tile<const C: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    _s: *const f32,
    out: *mut f32,
) {
    signed_tile::<C>(nb, w, 22, x, xs, out, |p| {
        let [lo, hi] = nibbles(p.add(6));
        let [hlo, hhi] = high_bits(p.add(2));
        let sixteen = vdupq_n_s8(16);
        (
            [
                vsubq_s8(s8(vorrq_u8(lo, hlo)), sixteen),
                vsubq_s8(s8(vorrq_u8(hi, hhi)), sixteen),
            ],
            f16_at(p),
        )
    })
}

/// Offset types against Q8_1: unsigned q (< 32, so also valid as i8), plus m·s per block.
#[inline(always)]
unsafe fn offset_tile<const C: usize>(
    nb: usize,
    w: *const u8,
    w_block: usize,
    x: *const u8,
    xs: usize,
    out: *mut f32,
    decode: impl Fn(*const u8) -> [int8x16_t; 2],
) {
    let mut acc = [vdupq_n_f32(0.0); C];
    let mut offsets = [0.0f32; C];
    for b in 0..nb {
        let p = w.add(b * w_block);
        let (dw, mw) = (f16_at(p), f16_at(p.add(2)));
        let q = decode(p);
        for c in 0..C {
            let xb = x.add(c * xs + b * 36);
            let sumi = dot32(q, ld(xb.add(4)), ld(xb.add(20)));
            acc[c] = vfmaq_n_f32(acc[c], vcvtq_f32_s32(sumi), dw * f16_at(xb));
            offsets[c] += mw * f16_at(xb.add(2));
        }
    }
    for c in 0..C {
        *out.add(c) = vaddvq_f32(acc[c]) + offsets[c];
    }
}

#[target_feature(enable = "neon")]
unsafe fn q4_1_tile<const C: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    _s: *const f32,
    out: *mut f32,
) {
    offset_tile::<C>(nb, w, 20, x, xs, out, |p| {
        let [lo, hi] = nibbles(p.add(4));
        [s8(lo), s8(hi)]
    })
}

#[target_feature(enable = "neon")]
unsafe fn q5_1_tile<const C: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    _s: *const f32,
    out: *mut f32,
) {
    offset_tile::<C>(nb, w, 24, x, xs, out, |p| {
        let [lo, hi] = nibbles(p.add(8));
        let [hlo, hhi] = high_bits(p.add(4));
        [s8(vorrq_u8(lo, hlo)), s8(vorrq_u8(hi, hhi))]
    })
}

// ---------------------------------------------------------------------------------------------
// K-quants against Q8_K (d: f32 at 0, qs: 256 i8 at 4, bsums: 16 i16 at 260).

const Q8K_BYTES: usize = 292;

/// Q4_K / Q5_K: `decode(j)` gives sub-blocks 2j and 2j+1 (32 unsigned weights each).
#[inline(always)]
unsafe fn k4_tile<const C: usize>(
    nb: usize,
    w: *const u8,
    w_block: usize,
    x: *const u8,
    xs: usize,
    out: *mut f32,
    decode: impl Fn(*const u8, usize) -> ([int8x16_t; 2], [int8x16_t; 2]),
) {
    let mut acc = [0.0f32; C];
    for b in 0..nb {
        let p = w.add(b * w_block);
        let (d, dmin) = (f16_at(p), f16_at(p.add(2)));
        let (sc, mn) = scalar::k4_scales_mins(&read_unaligned(p.add(4) as *const [u8; 12]));
        let mins = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(mn.as_ptr())));
        let mut sumi = [0i32; C];
        for j in 0..QK_K / 64 {
            let (lo, hi) = decode(p, j);
            for c in 0..C {
                let y = x.add(c * xs + b * Q8K_BYTES + 4 + 64 * j);
                let s_lo = vaddvq_s32(dot32(lo, ld(y), ld(y.add(16))));
                let s_hi = vaddvq_s32(dot32(hi, ld(y.add(32)), ld(y.add(48))));
                sumi[c] += s_lo * sc[2 * j] as i32 + s_hi * sc[2 * j + 1] as i32;
            }
        }
        for c in 0..C {
            let xb = x.add(c * xs + b * Q8K_BYTES);
            let bs = xb.add(260) as *const i16;
            // Pairwise sums of bsums are the sums of each 32-value sub-block.
            let pairs = vpaddq_s16(vld1q_s16(bs), vld1q_s16(bs.add(8)));
            let m = vmull_s16(vget_low_s16(pairs), vget_low_s16(mins));
            let m = vaddvq_s32(vmlal_high_s16(m, pairs, mins));
            let yd = f32_at(xb);
            acc[c] += d * yd * sumi[c] as f32 - dmin * yd * m as f32;
        }
    }
    for c in 0..C {
        *out.add(c) = acc[c];
    }
}

#[target_feature(enable = "neon")]
unsafe fn q4_k_tile<const C: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    _s: *const f32,
    out: *mut f32,
) {
    k4_tile::<C>(nb, w, 144, x, xs, out, |p, j| {
        let q = p.add(16 + 32 * j);
        let [lo0, hi0] = nibbles(q);
        let [lo1, hi1] = nibbles(q.add(16));
        ([s8(lo0), s8(lo1)], [s8(hi0), s8(hi1)])
    })
}

#[target_feature(enable = "neon")]
unsafe fn q5_k_tile<const C: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    _s: *const f32,
    out: *mut f32,
) {
    k4_tile::<C>(nb, w, 176, x, xs, out, |p, j| {
        let q = p.add(48 + 32 * j);
        let [lo0, hi0] = nibbles(q);
        let [lo1, hi1] = nibbles(q.add(16));
        // Sub-block s takes its fifth bit from bit s of qh[l].
        let shift = vdupq_n_s8(-(2 * j as i8));
        let h0 = vshlq_u8(vld1q_u8(p.add(16)), shift);
        let h1 = vshlq_u8(vld1q_u8(p.add(32)), shift);
        let one = vdupq_n_u8(1);
        let bit = |h: uint8x16_t| vshlq_n_u8::<4>(vandq_u8(h, one));
        let bit2 = |h: uint8x16_t| vshlq_n_u8::<3>(vandq_u8(h, vdupq_n_u8(2)));
        (
            [s8(vorrq_u8(lo0, bit(h0))), s8(vorrq_u8(lo1, bit(h1)))],
            [s8(vorrq_u8(hi0, bit2(h0))), s8(vorrq_u8(hi1, bit2(h1)))],
        )
    })
}

#[target_feature(enable = "neon")]
unsafe fn q6_k_tile<const C: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    _s: *const f32,
    out: *mut f32,
) {
    let mut acc = [0.0f32; C];
    let m4 = vdupq_n_u8(0x0f);
    let m3 = vdupq_n_u8(0x03);
    let off = vdupq_n_s8(32);
    for b in 0..nb {
        let p = w.add(b * 210);
        let (ql, qh) = (p, p.add(128));
        let sc = read_unaligned(p.add(192) as *const [i8; 16]);
        let d = f16_at(p.add(208));
        let mut sumi = [0i32; C];
        for h in 0..2 {
            // Two 16-byte halves of each 32-byte run of low bits and of the high bits.
            for part in 0..2 {
                let b1 = vld1q_u8(ql.add(64 * h + 16 * part));
                let b2 = vld1q_u8(ql.add(64 * h + 32 + 16 * part));
                let bh = vld1q_u8(qh.add(32 * h + 16 * part));
                let q = [
                    vorrq_u8(vandq_u8(b1, m4), vshlq_n_u8::<4>(vandq_u8(bh, m3))),
                    vorrq_u8(
                        vandq_u8(b2, m4),
                        vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<2>(bh), m3)),
                    ),
                    vorrq_u8(
                        vshrq_n_u8::<4>(b1),
                        vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<4>(bh), m3)),
                    ),
                    vorrq_u8(vshrq_n_u8::<4>(b2), vshlq_n_u8::<4>(vshrq_n_u8::<6>(bh))),
                ];
                for (g, q) in q.iter().enumerate() {
                    // Weights 128h + 32g + 16part .. +16: sub-block 8h + 2g + part.
                    let q = vsubq_s8(s8(*q), off);
                    let scale = sc[8 * h + 2 * g + part] as i32;
                    for c in 0..C {
                        let y = x.add(c * xs + b * Q8K_BYTES + 4 + 128 * h + 32 * g + 16 * part);
                        sumi[c] += scale * vaddvq_s32(dot16(vdupq_n_s32(0), q, ld(y)));
                    }
                }
            }
        }
        for c in 0..C {
            acc[c] += d * f32_at(x.add(c * xs + b * Q8K_BYTES)) * sumi[c] as f32;
        }
    }
    for c in 0..C {
        *out.add(c) = acc[c];
    }
}
