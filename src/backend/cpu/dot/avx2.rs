//! AVX2 + FMA + F16C kernels (x86-64): the integer block dots of ggml's AVX2 code
//! (`ggml-cpu/arch/x86/quants.c`), rearranged so that each weight block is unpacked once and
//! reused for up to [`MAX_COLS`](super::MAX_COLS) activation columns (Q4_0, Q5_0 and Q8_0 also
//! over several weight rows: `row_tiled_dot!`); the tiles of the packed layout (8 rows × up to 4
//! columns, `packed`) for Q4_0, Q8_0, Q4_K and Q6_K, which the AVX-512 module shares; and
//! activation quantizers that produce exactly the blocks of the scalar reference quantizers.
//!
//! Everything here is only reachable through `Kernels::new(_, Isa::Avx2 | Isa::Avx512)` or
//! `packed_kernel`, which check the CPU first; `check_dot_args` and `check_packed_args` bound
//! every raw-pointer read to the caller's slices.

// Column loops index several per-column arrays (accumulators, sums) in step, and the tile
// kernels take the raw pointers of a DotFn plus their block layout.
#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]
use std::arch::x86_64::*;
use std::ptr::read_unaligned;

use super::{
    check_dot_args, check_packed_args, check_rows_args, scalar, Columns, DotFn, PackedDotFn,
    PackedTile, QuantizeFn, RowsDotFn, Tile, WeightRows, MAX_COLS,
};
use crate::backend::cpu::packed::PACK_ROWS;
use crate::backend::cpu::prefetch::prefetch_ahead;

use crate::dtype::{TensorType, QK_K};
use crate::quant::blocks::QK;

pub(crate) fn kernels(ty: TensorType) -> Option<(QuantizeFn, DotFn)> {
    use TensorType::*;
    Some(match ty {
        F32 => (scalar::quantize_f32 as QuantizeFn, dot_f32 as DotFn),
        F16 => (scalar::quantize_f16, dot_f16),
        BF16 => (scalar::quantize_bf16, dot_bf16),
        Q8_0 => (quantize_q8_0, dot_q8_0),
        Q4_0 => (quantize_q8_0, dot_q4_0),
        Q5_0 => (quantize_q8_0, dot_q5_0),
        Q4_1 => (quantize_q8_1, dot_q4_1),
        Q5_1 => (quantize_q8_1, dot_q5_1),
        Q4_K => (quantize_q8_k, dot_q4_k),
        Q5_K => (quantize_q8_k, dot_q5_k),
        Q6_K => (quantize_q8_k, dot_q6_k),
        _ => return None,
    })
}

/// The multi-row kernel for `ty`, where there is one.
pub(crate) fn rows_kernel(ty: TensorType) -> Option<RowsDotFn> {
    match ty {
        TensorType::Q8_0 => Some(rows_q8_0 as RowsDotFn),
        TensorType::Q4_0 => Some(rows_q4_0),
        TensorType::Q5_0 => Some(rows_q5_0),
        _ => None,
    }
}

/// The packed-layout kernel for `ty`, where there is one.
pub(crate) fn packed_kernel(ty: TensorType) -> Option<PackedDotFn> {
    match ty {
        TensorType::Q4_0 => Some(packed_q4_0 as PackedDotFn),
        TensorType::Q8_0 => Some(packed_q8_0),
        TensorType::Q4_K => Some(packed_q4_k),
        TensorType::Q6_K => Some(packed_q6_k),
        _ => None,
    }
}

row_tiled_dot!(rows_q8_0, q8_0_rows, 34, 34, 1);
row_tiled_dot!(rows_q4_0, q4_0_rows, 18, 34, 2);
row_tiled_dot!(rows_q5_0, q5_0_rows, 22, 34, 1);
tiled_dot!(dot_f32, f32_tile, 4, 4, 0);
tiled_dot!(dot_f16, f16_tile, 2, 2, 0);
tiled_dot!(dot_bf16, bf16_tile, 2, 2, 0);
tiled_dot!(dot_q8_0, rows q8_0_rows, 34, 34, 1);
tiled_dot!(dot_q4_0, rows q4_0_rows, 18, 34, 2);
tiled_dot!(dot_q5_0, rows q5_0_rows, 22, 34, 1);
tiled_dot!(dot_q4_1, q4_1_tile, 20, 36, 2);
tiled_dot!(dot_q5_1, q5_1_tile, 24, 36, 2);
tiled_dot!(dot_q4_k, q4_k_tile, 144, 292, 0);
tiled_dot!(dot_q5_k, q5_k_tile, 176, 292, 0);
tiled_dot!(dot_q6_k, q6_k_tile, 210, 292, 0);

// ---------------------------------------------------------------------------------------------
// Helpers.

#[inline(always)]
pub(crate) unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = read_unaligned(p as *const u16);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline(always)]
pub(crate) unsafe fn f32_at(p: *const u8) -> f32 {
    read_unaligned(p as *const f32)
}

#[inline(always)]
pub(crate) unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[inline(always)]
unsafe fn loadu(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// 16 bytes of packed nibbles → 32 bytes: low nibbles first (weights 0..16), then high (16..32).
#[inline(always)]
pub(crate) unsafe fn unpack_nibbles(p: *const u8) -> __m256i {
    let qs = _mm_loadu_si128(p as *const __m128i);
    let both = _mm256_set_m128i(_mm_srli_epi16::<4>(qs), qs);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
}

/// 32 bits → 32 bytes, byte i = 0xFF where bit i is set (ggml's `bytes_from_bits_32`).
#[inline(always)]
pub(crate) unsafe fn bytes_from_bits_32(p: *const u8) -> __m256i {
    let bits = read_unaligned(p as *const u32) as i32;
    let shuffle = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(bits), shuffle);
    let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
    _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
}

/// Σ of the signed products of 32 byte pairs, as 8 i32 lanes; `ax` = |w|, `sy` = y·sign(w).
#[inline(always)]
pub(crate) unsafe fn dot_u8i8(ax: __m256i, sy: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1))
}

// ---------------------------------------------------------------------------------------------
// Float weights.

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn float_tile<const C: usize>(
    k: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    out: *mut f32,
    elem: usize,
    load: impl Fn(*const u8) -> __m256,
    scalar: impl Fn(*const u8) -> f32,
) {
    let mut acc0 = [_mm256_setzero_ps(); C];
    let mut acc1 = [_mm256_setzero_ps(); C];
    let mut i = 0;
    while i + 16 <= k {
        let w0 = load(w.add(i * elem));
        let w1 = load(w.add((i + 8) * elem));
        for c in 0..C {
            let xc = x.add(c * xs);
            acc0[c] = _mm256_fmadd_ps(w0, load(xc.add(i * elem)), acc0[c]);
            acc1[c] = _mm256_fmadd_ps(w1, load(xc.add((i + 8) * elem)), acc1[c]);
        }
        i += 16;
    }
    for c in 0..C {
        let xc = x.add(c * xs);
        let mut s = hsum_ps(_mm256_add_ps(acc0[c], acc1[c]));
        for j in i..k {
            s += scalar(w.add(j * elem)) * scalar(xc.add(j * elem));
        }
        *out.add(c) = s;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
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
        |p| _mm256_loadu_ps(p as *const f32),
        |p| f32_at(p),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_tile<const C: usize>(
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
        |p| _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
        |p| f16_at(p),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
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
        |p| {
            let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h))
        },
        |p| scalar::bf16_bits_to_f32(read_unaligned(p as *const u16)),
    )
}

// ---------------------------------------------------------------------------------------------
// Legacy 32-weight blocks against Q8_0 / Q8_1 activations.

/// The shared loop of the symmetric types: `decode` turns a weight block into 32 signed bytes and
/// its scale; each column adds d_w·d_x·Σ w·y per block. R rows × C columns as in `unsigned_tile`.
#[inline(always)]
unsafe fn signed_tile<const R: usize, const C: usize>(
    nb: usize,
    w: *const u8,
    ws: usize,
    w_block: usize,
    x: *const u8,
    xs: usize,
    s: *const f32,
    out: *mut f32,
    decode: impl Fn(*const u8) -> (__m256i, f32),
) {
    let acc = block_loop::<R, C>(nb, |b, acc| {
        let mut q = [_mm256_setzero_si256(); R];
        let mut aq = [_mm256_setzero_si256(); R];
        let mut dw = [_mm256_setzero_ps(); R];
        for r in 0..R {
            let p = w.add(r * ws + b * w_block);
            prefetch_ahead(p);
            let (qr, d) = decode(p);
            (q[r], aq[r], dw[r]) = (qr, _mm256_sign_epi8(qr, qr), _mm256_set1_ps(d));
        }
        for c in 0..C {
            let y = loadu(x.add(c * xs + b * 34 + 2));
            // The column's f32 block scale, loaded straight into all lanes.
            let dx = _mm256_broadcast_ss(&*s.add(b * MAX_COLS + c));
            for r in 0..R {
                let dot = dot_u8i8(aq[r], _mm256_sign_epi8(y, q[r]));
                let dot = _mm256_mul_ps(_mm256_cvtepi32_ps(dot), dw[r]);
                acc[r][c] = _mm256_fmadd_ps(dx, dot, acc[r][c]);
            }
        }
    });
    for r in 0..R {
        for c in 0..C {
            *out.add(r * MAX_COLS + c) = hsum_ps(acc[r][c]);
        }
    }
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
    signed_tile::<R, C>(nb, w, ws, 34, x, xs, s, out, |p| {
        (loadu(p.add(2)), f16_at(p))
    })
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
    // q ≤ 15, so maddubs cannot saturate on the unsigned nibbles.
    let decode = |p: *const u8| (unpack_nibbles(p.add(2)), f16_at(p));
    let dot = |u, y| dot_u8i8(u, y);
    unsigned_tile::<R, C>(nb, w, ws, 18, x, xs, s, out, 8.0, decode, dot)
}

/// Symmetric types whose weights are handled as unsigned `u = w + offset`: Σ w·y = Σ u·y −
/// offset·Σ y, with d_x·Σ y per column block precomputed (scale set 1), which saves the per-column
/// sign flip of `signed_tile`. `dot` is the unsigned×signed byte dot (maddubs or VNNI).
///
/// R weight rows `ws` bytes apart × C columns; results go to `out[r·MAX_COLS + c]`. Each column's
/// block is loaded once for all R rows.
#[inline(always)]
pub(crate) unsafe fn unsigned_tile<const R: usize, const C: usize>(
    nb: usize,
    w: *const u8,
    ws: usize,
    w_block: usize,
    x: *const u8,
    xs: usize,
    s: *const f32,
    out: *mut f32,
    offset: f32,
    decode: impl Fn(*const u8) -> (__m256i, f32),
    dot: impl Fn(__m256i, __m256i) -> __m256i,
) {
    let mut corr = [_mm_setzero_ps(); R];
    let step = |b: usize, acc: &mut [[__m256; C]; R], corr: &mut [__m128; R]| {
        let sums = _mm_loadu_ps(s.add((nb + b) * MAX_COLS));
        let mut u = [_mm256_setzero_si256(); R];
        let mut dw = [_mm256_setzero_ps(); R];
        for r in 0..R {
            let p = w.add(r * ws + b * w_block);
            prefetch_ahead(p);
            let (ur, d) = decode(p);
            corr[r] = _mm_fmadd_ps(_mm_set1_ps(d), sums, corr[r]);
            (u[r], dw[r]) = (ur, _mm256_set1_ps(d));
        }
        for c in 0..C {
            let y = loadu(x.add(c * xs + b * 34 + 2));
            let dx = _mm256_broadcast_ss(&*s.add(b * MAX_COLS + c));
            for r in 0..R {
                let d = _mm256_mul_ps(_mm256_cvtepi32_ps(dot(u[r], y)), dw[r]);
                acc[r][c] = _mm256_fmadd_ps(dx, d, acc[r][c]);
            }
        }
    };
    let acc = block_loop::<R, C>(nb, |b, acc| step(b, acc, &mut corr));
    for r in 0..R {
        let mut corrections = [0.0f32; 4];
        _mm_storeu_ps(corrections.as_mut_ptr(), corr[r]);
        for c in 0..C {
            *out.add(r * MAX_COLS + c) = hsum_ps(acc[r][c]) - offset * corrections[c];
        }
    }
}

// The packed Q4_0 kernel on AVX2: `maddubs` products of the unsigned nibbles and the signed
// activation bytes, widened to i32 by `madd` (at most 2·15·128 per i16 pair: no saturation).
packed_dot!(
    packed_q4_0,
    PACK_ROWS * 18,
    8.0,
    |p, v| unpack_packed_nibbles(p, v),
    |acc, u, y| _mm256_add_epi32(acc, dot_u8i8(u, y))
);

// The packed Q8_0 kernel on AVX2: signed weights, so `maddubs` takes |w| and y with w's sign
// (at most 2·128·127 per i16 pair: no saturation, where w + 128 could reach 2·255·128).
packed_dot!(
    packed_q8_0,
    PACK_ROWS * 34,
    0.0,
    |p, v| packed_bytes(p, v),
    |acc, w, y| _mm256_add_epi32(
        acc,
        dot_u8i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(y, w))
    )
);

// The packed Q4_K kernel on AVX2: nibbles are unsigned, so `maddubs` takes them as they are.
packed_dot!(k_quant packed_q4_k, packed_q4_k_tile, 144, |acc, u, y| {
    _mm256_add_epi32(acc, dot_u8i8(u, y))
});

// The packed Q6_K kernel on AVX2: q = w + 32 is unsigned (< 64), so `maddubs` takes it as it is.
packed_dot!(k_quant packed_q6_k, packed_q6_k_tile, 210, |acc, u, y| {
    _mm256_add_epi32(acc, dot_u8i8(u, y))
});

/// Weights `4v..4v+4` and `16 + 4v..16 + 4v + 4` of the 8 rows of the packed Q4_0 block at `p`
/// (vector v's low and high nibbles), counting from 0.
#[inline(always)]
pub(crate) unsafe fn unpack_packed_nibbles(p: *const u8, v: usize) -> (__m256i, __m256i) {
    let low = _mm256_set1_epi8(0x0F);
    let q = loadu(p.add(16 + 32 * v));
    (
        _mm256_and_si256(q, low),
        _mm256_and_si256(_mm256_srli_epi16(q, 4), low),
    )
}

/// Weights `4v..4v+4` and `16 + 4v..16 + 4v + 4` of the 8 rows of the packed Q8_0 block at `p`
/// (vectors v and v + 4), as stored: signed.
#[inline(always)]
pub(crate) unsafe fn packed_bytes(p: *const u8, v: usize) -> (__m256i, __m256i) {
    (loadu(p.add(16 + 32 * v)), loadu(p.add(16 + 32 * (v + 4))))
}

/// Dispatches a packed group to the tile of its column count.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) unsafe fn packed_columns(
    nb: usize,
    block: usize,
    w: *const u8,
    cols: &Columns<'_>,
    n_cols: usize,
    out: &mut PackedTile,
    offset: f32,
    unpack: impl Fn(*const u8, usize) -> (__m256i, __m256i),
    dot: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
) {
    let (x, xs, s) = (cols.bytes.as_ptr(), cols.col_bytes, cols.scales.as_ptr());
    let tile = PackedBlocks {
        nb,
        block,
        w,
        offset,
    };
    for_columns!(n_cols, packed_tile(&tile, x, xs, s, out, unpack, dot))
}

/// One packed row group: `nb` blocks of `block` bytes from `w`, its quants stored with `offset`
/// added (subtracted again through the columns' d·Σy).
struct PackedBlocks {
    nb: usize,
    block: usize,
    w: *const u8,
    offset: f32,
}

/// 8 packed rows × C Q8_0 columns. Lane r of every vector is row r: one 32-byte load holds
/// 4 bytes of each row, a broadcast activation word multiplies all 8, and the block's integer
/// sums (exact, so their order is free) are scaled once per block by the 8 row scales. As in
/// `unsigned_tile`, where the quants are stored with an offset, offset·d_w·d_x·Σy is subtracted
/// at the end.
#[inline(always)]
unsafe fn packed_tile<const C: usize>(
    tile: &PackedBlocks,
    x: *const u8,
    xs: usize,
    s: *const f32,
    out: &mut PackedTile,
    unpack: impl Fn(*const u8, usize) -> (__m256i, __m256i),
    dot: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
) {
    let nb = tile.nb;
    let mut acc = [_mm256_setzero_ps(); C];
    let mut corr = [_mm256_setzero_ps(); C];
    for b in 0..nb {
        // No software prefetch: one sequential stream per task in huge pages is what the
        // hardware prefetchers follow best (measured: tg128 24.4 t/s without, 17–20 with 8–16 KiB).
        let p = tile.w.add(b * tile.block);
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
        // Two chains per column (first and second half of the block) halve the dependent dot
        // latency.
        let mut sums = [[_mm256_setzero_si256(); 2]; C];
        for v in 0..4 {
            let (first, second) = unpack(p, v);
            for c in 0..C {
                let y = x.add(c * xs + b * 34 + 2);
                let y_first = _mm256_set1_epi32(read_unaligned(y.add(4 * v) as *const i32));
                let y_second = _mm256_set1_epi32(read_unaligned(y.add(16 + 4 * v) as *const i32));
                sums[c][0] = dot(sums[c][0], first, y_first);
                sums[c][1] = dot(sums[c][1], second, y_second);
            }
        }
        for c in 0..C {
            let dx = _mm256_broadcast_ss(&*s.add(b * MAX_COLS + c));
            let total = _mm256_add_epi32(sums[c][0], sums[c][1]);
            let d = _mm256_mul_ps(_mm256_cvtepi32_ps(total), dw);
            acc[c] = _mm256_fmadd_ps(dx, d, acc[c]);
            if tile.offset != 0.0 {
                let sum_x = _mm256_broadcast_ss(&*s.add((nb + b) * MAX_COLS + c));
                corr[c] = _mm256_fmadd_ps(dw, sum_x, corr[c]);
            }
        }
    }
    if tile.offset != 0.0 {
        for c in 0..C {
            acc[c] = _mm256_fnmadd_ps(_mm256_set1_ps(tile.offset), corr[c], acc[c]);
        }
    }
    store_packed(acc, out);
}

/// Σ_j a_j·b_j per i32 lane, for 8 i16 values b (`sums`, shared by every lane) and per lane the
/// 8 i16 values a as pairs: `pairs` holds (a0, a2), (a1, a3), (a4, a6), (a5, a7) in each lane
/// (how even and odd bytes of two 4-byte words widen to i16).
#[inline(always)]
unsafe fn madd_eight_sums(pairs: &[__m256i; 4], sums: __m128i) -> __m256i {
    // b0..b7 → the i32 words (b0, b2), (b1, b3), (b4, b6), (b5, b7).
    let order = _mm_setr_epi8(0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15);
    let b = _mm_shuffle_epi8(sums, order);
    let word = |i: __m128i| _mm256_broadcastd_epi32(i);
    _mm256_add_epi32(
        _mm256_add_epi32(
            _mm256_madd_epi16(pairs[0], word(b)),
            _mm256_madd_epi16(pairs[1], word(_mm_srli_si128(b, 4))),
        ),
        _mm256_add_epi32(
            _mm256_madd_epi16(pairs[2], word(_mm_srli_si128(b, 8))),
            _mm256_madd_epi16(pairs[3], word(_mm_srli_si128(b, 12))),
        ),
    )
}

/// Writes C columns of 8 row results (lane r: row r) into `out`.
#[inline(always)]
unsafe fn store_packed<const C: usize>(results: [__m256; C], out: &mut PackedTile) {
    for (c, result) in results.iter().enumerate() {
        let mut values = [0.0f32; PACK_ROWS];
        _mm256_storeu_ps(values.as_mut_ptr(), *result);
        for (r, v) in values.iter().enumerate() {
            out[r][c] = *v;
        }
    }
}

/// Bytes of one packed Q4_K block of 8 rows (8 d, 8 dmin, 3 vectors of scale words, 32 of quants).
const PACKED_Q4_K_BYTES: usize = PACK_ROWS * 144;

/// The 8 rows' six-bit scales and mins from the three packed scale words at `p` (lane r: row r's
/// words), ggml's `utmp` shuffle on all 8 rows at once: byte j of lane r of the first vector is
/// scale j (j < 4) of row r, of the second scale 4 + j; the third and fourth hold the mins alike.
#[inline(always)]
unsafe fn packed_q4_k_scales(p: *const u8) -> [__m256i; 4] {
    let (w0, w1, w2) = (loadu(p), loadu(p.add(32)), loadu(p.add(64)));
    let (low_6, low_4, low_2) = (
        _mm256_set1_epi8(0x3f),
        _mm256_set1_epi8(0x0f),
        _mm256_set1_epi8(0x03),
    );
    // Bits 6 and 7 of each byte, moved to bits 4 and 5.
    let top = |w| _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(w, 6), low_2), 4);
    [
        _mm256_and_si256(w0, low_6),
        _mm256_or_si256(_mm256_and_si256(w2, low_4), top(w0)),
        _mm256_and_si256(w1, low_6),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(w2, 4), low_4), top(w1)),
    ]
}

/// 8 packed Q4_K rows (`nb` blocks from `w`) × C Q8_K columns, lane r for row r as in
/// `packed_tile`; `dot` is the byte dot of one x86 family (unsigned nibbles, signed y). Per
/// super-block, each sub-block's exact i32 dot is multiplied by its six-bit scale in integers, and
/// the mins meet the columns' sub-block sums (from bsums) through `madd`, so a row's result is
/// summed in super-block order whatever the tile's shape: d_x·(d·Σ sc·q·y − dmin·Σ m·Σy).
#[inline(always)]
pub(crate) unsafe fn packed_q4_k_tile<const C: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    out: &mut PackedTile,
    dot: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
) {
    let low = _mm256_set1_epi8(0x0F);
    let byte = _mm256_set1_epi32(0xFF);
    let even = _mm256_set1_epi32(0x00FF_00FF);
    let mut acc = [_mm256_setzero_ps(); C];
    for b in 0..nb {
        let p = w.add(b * PACKED_Q4_K_BYTES);
        let d = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
        let dmin = _mm256_cvtph_ps(_mm_loadu_si128(p.add(16) as *const __m128i));
        let [scales_lo, scales_hi, mins_lo, mins_hi] = packed_q4_k_scales(p.add(32));
        let quants = p.add(128);
        let mut totals = [_mm256_setzero_si256(); C];
        for j in 0..QK_K / 64 {
            let mut sums = [[_mm256_setzero_si256(); 2]; C];
            for u in 0..8 {
                let q = loadu(quants.add(32 * (8 * j + u)));
                let first = _mm256_and_si256(q, low);
                let second = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
                for c in 0..C {
                    let y = x.add(c * xs + b * Q8K_BYTES + 4 + 64 * j + 4 * u);
                    let y_first = _mm256_set1_epi32(read_unaligned(y as *const i32));
                    let y_second = _mm256_set1_epi32(read_unaligned(y.add(32) as *const i32));
                    sums[c][0] = dot(sums[c][0], first, y_first);
                    sums[c][1] = dot(sums[c][1], second, y_second);
                }
            }
            // Sub-blocks 2j and 2j + 1: bytes 2j mod 4 and 2j + 1 mod 4 of their scale vector.
            let scales = if j < 2 { scales_lo } else { scales_hi };
            let shift = 16 * (j as i32 % 2);
            let scale_at =
                |bits| _mm256_and_si256(_mm256_srl_epi32(scales, _mm_cvtsi32_si128(bits)), byte);
            let (sc_first, sc_second) = (scale_at(shift), scale_at(shift + 8));
            for c in 0..C {
                let scaled = _mm256_add_epi32(
                    _mm256_mullo_epi32(sums[c][0], sc_first),
                    _mm256_mullo_epi32(sums[c][1], sc_second),
                );
                totals[c] = _mm256_add_epi32(totals[c], scaled);
            }
        }
        // Per row the i16 pairs (m0, m2), (m1, m3), (m4, m6), (m5, m7) that madd_eight_sums takes.
        let mins = [
            _mm256_and_si256(mins_lo, even),
            _mm256_and_si256(_mm256_srli_epi32(mins_lo, 8), even),
            _mm256_and_si256(mins_hi, even),
            _mm256_and_si256(_mm256_srli_epi32(mins_hi, 8), even),
        ];
        for c in 0..C {
            let xb = x.add(c * xs + b * Q8K_BYTES);
            // Σy of each 32-weight sub-block: adjacent pairs of the 16 bsums.
            let bsums = _mm_hadd_epi16(
                _mm_loadu_si128(xb.add(260) as *const __m128i),
                _mm_loadu_si128(xb.add(276) as *const __m128i),
            );
            let min_sum = madd_eight_sums(&mins, bsums);
            let block = _mm256_fmsub_ps(
                d,
                _mm256_cvtepi32_ps(totals[c]),
                _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(min_sum)),
            );
            acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(f32_at(xb)), block, acc[c]);
        }
    }
    store_packed(acc, out);
}

/// Bytes of one packed Q6_K block of 8 rows (8 d, then 52 vectors: the scales, then per 32
/// weights of each half their low nibbles and high bit pairs, `packed::PackedWeight`).
const PACKED_Q6_K_BYTES: usize = PACK_ROWS * 210;

/// [`packed_q4_k_tile`] for Q6_K. Each 16-weight sub-block s (weights 16s..) is rebuilt from its
/// low nibbles and high bit pairs as unsigned q = w + 32, its exact i32 dot is multiplied by the
/// row's i8 scale in integers, and the offset comes off through the columns' bsums (each the Σy of
/// one sub-block): d_x·d·Σ sc·(Σ q·y − 32·Σy), summed in super-block order whatever the tile's
/// shape.
#[inline(always)]
pub(crate) unsafe fn packed_q6_k_tile<const C: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    out: &mut PackedTile,
    dot: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
) {
    let low = _mm256_set1_epi8(0x0F);
    let bits_4_5 = _mm256_set1_epi8(0x30);
    let mut acc = [_mm256_setzero_ps(); C];
    for b in 0..nb {
        let p = w.add(b * PACKED_Q6_K_BYTES);
        let d = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
        let vector = |v: usize| loadu(p.add(16 + 32 * v));
        let scale_words = [vector(0), vector(1), vector(2), vector(3)];
        let mut totals = [_mm256_setzero_si256(); C];
        // Weight 128n + 32t + 16h + l of a row (l < 16) is in sub-block s = 8n + 2t + h; its low
        // nibble is nibble t / 2 of ql[64n + 32(t % 2) + 16h + l], and its high bits are bits 2t
        // and 2t + 1 of qh[32n + 16h + l]. Sub-blocks t and t + 2 share their ql bytes.
        for n in 0..2 {
            for h in 0..2 {
                for odd in 0..2 {
                    let mut sums = [[_mm256_setzero_si256(); 2]; C];
                    for u in 0..4 {
                        let chunk = 4 + 12 * (2 * n + h);
                        let ql = vector(chunk + 4 * odd + u);
                        let qh = vector(chunk + 8 + u);
                        // Bits 2t, 2t + 1 to bits 4, 5 of each byte (16-bit shifts, then a mask
                        // that drops what crossed from the neighbouring byte).
                        let (high_first, high_second) = if odd == 0 {
                            (_mm256_slli_epi16(qh, 4), qh)
                        } else {
                            (_mm256_slli_epi16(qh, 2), _mm256_srli_epi16(qh, 2))
                        };
                        let first = _mm256_or_si256(
                            _mm256_and_si256(ql, low),
                            _mm256_and_si256(high_first, bits_4_5),
                        );
                        let second = _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(ql, 4), low),
                            _mm256_and_si256(high_second, bits_4_5),
                        );
                        for c in 0..C {
                            let y = x.add(c * xs + b * Q8K_BYTES + 4 + 128 * n + 32 * odd);
                            let y = y.add(16 * h + 4 * u);
                            let y_first = _mm256_set1_epi32(read_unaligned(y as *const i32));
                            let y_second =
                                _mm256_set1_epi32(read_unaligned(y.add(64) as *const i32));
                            sums[c][0] = dot(sums[c][0], first, y_first);
                            sums[c][1] = dot(sums[c][1], second, y_second);
                        }
                    }
                    // Sub-blocks s (t = odd) and s + 4 (t = odd + 2): byte s % 4 of scale word
                    // s / 4 and of the next word, sign-extended.
                    let s = 8 * n + 2 * odd + h;
                    let scale_at = |word: __m256i| {
                        _mm256_srai_epi32(_mm256_sll_epi32(word, shift(24 - 8 * (s % 4))), 24)
                    };
                    let (sc_first, sc_second) = (
                        scale_at(scale_words[s / 4]),
                        scale_at(scale_words[s / 4 + 1]),
                    );
                    for c in 0..C {
                        let scaled = _mm256_add_epi32(
                            _mm256_mullo_epi32(sums[c][0], sc_first),
                            _mm256_mullo_epi32(sums[c][1], sc_second),
                        );
                        totals[c] = _mm256_add_epi32(totals[c], scaled);
                    }
                }
            }
        }
        // Σ sc·Σy per row: i16 pairs (sc 4w, sc 4w + 2) and (sc 4w + 1, sc 4w + 3) of each scale
        // word against the matching bsums.
        let scales: [[__m256i; 4]; 2] = std::array::from_fn(|half| {
            std::array::from_fn(|i| {
                let word = scale_words[2 * half + i / 2];
                if i % 2 == 0 {
                    _mm256_srai_epi16(_mm256_slli_epi16(word, 8), 8)
                } else {
                    _mm256_srai_epi16(word, 8)
                }
            })
        });
        for c in 0..C {
            let xb = x.add(c * xs + b * Q8K_BYTES);
            let mut offsets = _mm256_setzero_si256();
            for half in 0..2 {
                let bsums = _mm_loadu_si128(xb.add(260 + 16 * half) as *const __m128i);
                offsets = _mm256_add_epi32(offsets, madd_eight_sums(&scales[half], bsums));
            }
            let sum = _mm256_sub_epi32(totals[c], _mm256_slli_epi32(offsets, 5));
            let dx = _mm256_set1_ps(f32_at(xb));
            acc[c] = _mm256_fmadd_ps(_mm256_mul_ps(dx, d), _mm256_cvtepi32_ps(sum), acc[c]);
        }
    }
    store_packed(acc, out);
}

/// A shift count for the `_mm256_s?l_epi*` forms that take it in a register.
#[inline(always)]
unsafe fn shift(bits: usize) -> __m128i {
    _mm_cvtsi32_si128(bits as i32)
}

/// Runs `step` over blocks 0..nb into accumulators it returns: one per row and column, summed
/// in block order whatever the tile's shape, so that a row's result does not depend on which
/// tile computed it (and images do not depend on the thread count or the batch).
#[inline(always)]
unsafe fn block_loop<const R: usize, const C: usize>(
    nb: usize,
    mut step: impl FnMut(usize, &mut [[__m256; C]; R]),
) -> [[__m256; C]; R] {
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    for b in 0..nb {
        step(b, &mut acc);
    }
    acc
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_0_rows<const R: usize, const C: usize>(
    nb: usize,
    w: *const u8,
    ws: usize,
    x: *const u8,
    xs: usize,
    s: *const f32,
    out: *mut f32,
) {
    signed_tile::<R, C>(nb, w, ws, 22, x, xs, s, out, |p| {
        // Where the fifth bit is clear, q − 16 = q | 0xF0 (two's complement).
        let high = _mm256_andnot_si256(bytes_from_bits_32(p.add(2)), _mm256_set1_epi8(-16));
        (_mm256_or_si256(unpack_nibbles(p.add(6)), high), f16_at(p))
    })
}

/// The shared loop of the offset types (Q4_1, Q5_1 against Q8_1): unsigned q, so each block adds
/// d_w·d_x·Σ q·y + m_w·s_x.
#[inline(always)]
unsafe fn offset_tile<const C: usize>(
    nb: usize,
    w: *const u8,
    w_block: usize,
    x: *const u8,
    xs: usize,
    s: *const f32,
    out: *mut f32,
    decode: impl Fn(*const u8) -> __m256i,
) {
    // Two accumulators per column (even and odd blocks), so that the FMA latency chains of a
    // narrow tile overlap.
    let mut acc = [[_mm256_setzero_ps(); C]; 2];
    let mut offsets = _mm_setzero_ps();
    for b in 0..nb {
        let p = w.add(b * w_block);
        let (dw, mw) = (_mm256_set1_ps(f16_at(p)), f16_at(p.add(2)));
        let q = decode(p);
        // s_x of the tile's columns (lanes), after the d_x set.
        let sums = _mm_loadu_ps(s.add((nb + b) * MAX_COLS));
        offsets = _mm_fmadd_ps(sums, _mm_set1_ps(mw), offsets);
        let acc = &mut acc[b & 1];
        for c in 0..C {
            let dot = dot_u8i8(q, loadu(x.add(c * xs + b * 36 + 4)));
            let dot = _mm256_mul_ps(_mm256_cvtepi32_ps(dot), dw);
            let dx = _mm256_broadcast_ss(&*s.add(b * MAX_COLS + c));
            acc[c] = _mm256_fmadd_ps(dx, dot, acc[c]);
        }
    }
    let mut off = [0.0f32; 4];
    _mm_storeu_ps(off.as_mut_ptr(), offsets);
    for c in 0..C {
        *out.add(c) = hsum_ps(_mm256_add_ps(acc[0][c], acc[1][c])) + off[c];
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_1_tile<const C: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    s: *const f32,
    out: *mut f32,
) {
    offset_tile::<C>(nb, w, 20, x, xs, s, out, |p| unpack_nibbles(p.add(4)))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_1_tile<const C: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    s: *const f32,
    out: *mut f32,
) {
    offset_tile::<C>(nb, w, 24, x, xs, s, out, |p| {
        let high = _mm256_and_si256(bytes_from_bits_32(p.add(4)), _mm256_set1_epi8(0x10));
        _mm256_or_si256(unpack_nibbles(p.add(8)), high)
    })
}

// ---------------------------------------------------------------------------------------------
// K-quants against Q8_K (d: f32 at 0, qs: 256 i8 at 4, bsums: 16 i16 at 260).

const Q8K_BYTES: usize = 292;

/// The 12 packed bytes of Q4_K / Q5_K scales and mins → 16 i16 lanes: the 8 six-bit scales, then
/// the 8 six-bit mins (ggml's `utmp` shuffle, four 32-bit words at a time).
#[inline(always)]
unsafe fn k4_scales_mins(p: *const u8) -> __m256i {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let raw = read_unaligned(p as *const [u32; 3]);
    let scales_lo = raw[0] & KMASK1;
    let scales_hi = (raw[2] & KMASK2) | (((raw[0] >> 6) & KMASK3) << 4);
    let mins_lo = raw[1] & KMASK1;
    let mins_hi = ((raw[2] >> 4) & KMASK2) | (((raw[1] >> 6) & KMASK3) << 4);
    _mm256_cvtepu8_epi16(_mm_set_epi32(
        mins_hi as i32,
        mins_lo as i32,
        scales_hi as i32,
        scales_lo as i32,
    ))
}

/// A `pshufb` mask that broadcasts i16 lane `i` (< 8) of each 128-bit half.
#[inline(always)]
unsafe fn broadcast_i16_lane(i: usize) -> __m256i {
    _mm256_set1_epi16((((2 * i + 1) << 8) | (2 * i)) as i16)
}

/// Q4_K / Q5_K: `decode(j)` gives the weights of sub-blocks 2j and 2j+1 (unsigned, 32 bytes each).
#[inline(always)]
unsafe fn k4_tile<const C: usize>(
    nb: usize,
    w: *const u8,
    w_block: usize,
    x: *const u8,
    xs: usize,
    out: *mut f32,
    decode: impl Fn(*const u8, usize) -> (__m256i, __m256i),
) {
    let mut acc = [_mm256_setzero_ps(); C];
    for b in 0..nb {
        let p = w.add(b * w_block);
        let (d, dmin) = (f16_at(p), f16_at(p.add(2)));
        let scales_mins = k4_scales_mins(p.add(4));
        let sc128 = _mm256_castsi256_si128(scales_mins);
        let scales = _mm256_set_m128i(sc128, sc128);
        // mins·(Σ of each sub-block's y) through the pairwise sums of bsums.
        let mins = _mm256_extracti128_si256::<1>(scales_mins);
        for c in 0..C {
            let xb = x.add(c * xs + b * Q8K_BYTES);
            let bsums = loadu(xb.add(260));
            let pairs = _mm_hadd_epi16(
                _mm256_castsi256_si128(bsums),
                _mm256_extracti128_si256::<1>(bsums),
            );
            let m = _mm_cvtepi32_ps(_mm_madd_epi16(mins, pairs));
            // Into the main accumulator (lanes 0..4), keeping registers free for the tile.
            let m = _mm256_set_m128(_mm_setzero_ps(), m);
            acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(-dmin * f32_at(xb)), m, acc[c]);
        }
        let mut sumi = [_mm256_setzero_si256(); C];
        for j in 0..QK_K / 64 {
            let (lo, hi) = decode(p, j);
            let s_lo = _mm256_shuffle_epi8(scales, broadcast_i16_lane(2 * j));
            let s_hi = _mm256_shuffle_epi8(scales, broadcast_i16_lane(2 * j + 1));
            for c in 0..C {
                let y = x.add(c * xs + b * Q8K_BYTES + 4 + 64 * j);
                let p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, loadu(y)), s_lo);
                let p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, loadu(y.add(32))), s_hi);
                sumi[c] = _mm256_add_epi32(sumi[c], _mm256_add_epi32(p_lo, p_hi));
            }
        }
        for c in 0..C {
            let yd = f32_at(x.add(c * xs + b * Q8K_BYTES));
            acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(d * yd), _mm256_cvtepi32_ps(sumi[c]), acc[c]);
        }
    }
    for c in 0..C {
        *out.add(c) = hsum_ps(acc[c]);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_tile<const C: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    _s: *const f32,
    out: *mut f32,
) {
    k4_tile::<C>(nb, w, 144, x, xs, out, |p, j| {
        let bits = loadu(p.add(16 + 32 * j));
        let m4 = _mm256_set1_epi8(0x0f);
        (
            _mm256_and_si256(bits, m4),
            _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4),
        )
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_k_tile<const C: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    _s: *const f32,
    out: *mut f32,
) {
    k4_tile::<C>(nb, w, 176, x, xs, out, |p, j| {
        let bits = loadu(p.add(48 + 32 * j));
        // Sub-block s takes its fifth bit from bit s of qh[l].
        let hbits = _mm256_srl_epi16(loadu(p.add(16)), _mm_cvtsi32_si128(2 * j as i32));
        let m4 = _mm256_set1_epi8(0x0f);
        let one = _mm256_set1_epi8(1);
        let h_lo = _mm256_slli_epi16::<4>(_mm256_and_si256(hbits, one));
        let h_hi = _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<1>(hbits), one));
        (
            _mm256_or_si256(_mm256_and_si256(bits, m4), h_lo),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4), h_hi),
        )
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_tile<const C: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    _s: *const f32,
    out: *mut f32,
) {
    let mut acc = [_mm256_setzero_ps(); C];
    let m4 = _mm256_set1_epi8(0x0f);
    let m30 = _mm256_set1_epi8(0x30);
    for b in 0..nb {
        let p = w.add(b * 210);
        let (ql, qh, scp) = (p, p.add(128), p.add(192));
        let d = f16_at(p.add(208));
        let scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(scp as *const __m128i));
        // The 8 scales of each half, as i16, in both 128-bit lanes.
        let half_scales = [0, 8].map(|o| {
            let s = _mm_cvtepi8_epi16(_mm_loadl_epi64(scp.add(o) as *const __m128i));
            _mm256_set_m128i(s, s)
        });
        // The stored q is w + 32: subtract 32·Σ sc·(Σ y) per column from the bsums.
        let mut sumi = [_mm256_setzero_si256(); C];
        for c in 0..C {
            let xb = x.add(c * xs + b * Q8K_BYTES);
            let corr = _mm256_madd_epi16(scales16, loadu(xb.add(260)));
            sumi[c] = _mm256_sub_epi32(sumi[c], _mm256_slli_epi32::<5>(corr));
        }
        for h in 0..2 {
            let b1 = loadu(ql.add(64 * h));
            let b2 = loadu(ql.add(64 * h + 32));
            let bh = loadu(qh.add(32 * h));
            let q = [
                _mm256_or_si256(
                    _mm256_and_si256(b1, m4),
                    _mm256_and_si256(_mm256_slli_epi16::<4>(bh), m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(b2, m4),
                    _mm256_and_si256(_mm256_slli_epi16::<2>(bh), m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(b1), m4),
                    _mm256_and_si256(bh, m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(b2), m4),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(bh), m30),
                ),
            ];
            for (g, q) in q.iter().enumerate() {
                // 32 weights = two sub-blocks of 16, each with its own scale.
                let lanes = _mm256_set_m128i(
                    _mm_set1_epi16((((4 * g + 3) << 8) | (4 * g + 2)) as i16),
                    _mm_set1_epi16((((4 * g + 1) << 8) | (4 * g)) as i16),
                );
                let scale = _mm256_shuffle_epi8(half_scales[h], lanes);
                for c in 0..C {
                    let y = x.add(c * xs + b * Q8K_BYTES + 4 + 128 * h + 32 * g);
                    let p16 = _mm256_maddubs_epi16(*q, loadu(y));
                    sumi[c] = _mm256_add_epi32(sumi[c], _mm256_madd_epi16(p16, scale));
                }
            }
        }
        for c in 0..C {
            let yd = f32_at(x.add(c * xs + b * Q8K_BYTES));
            acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(d * yd), _mm256_cvtepi32_ps(sumi[c]), acc[c]);
        }
    }
    for c in 0..C {
        *out.add(c) = hsum_ps(acc[c]);
    }
}

// ---------------------------------------------------------------------------------------------
// Activation quantizers, bit-exact with the scalar reference ones.

/// Round half away from zero (C `roundf`), which `quantize_row_q8_0_ref` uses. ggml's own AVX2
/// `quantize_row_q8_0` rounds half to even instead; we follow the reference.
#[inline(always)]
unsafe fn round_away(v: __m256) -> __m256 {
    let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
    // v − t is exact (|v| ≤ 128); step one further out when the dropped part is ≥ ½.
    let sign = _mm256_and_ps(v, _mm256_set1_ps(-0.0));
    let frac = _mm256_andnot_ps(_mm256_set1_ps(-0.0), _mm256_sub_ps(v, t));
    let up = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, _mm256_set1_ps(0.5));
    let step = _mm256_and_ps(up, _mm256_or_ps(sign, _mm256_set1_ps(1.0)));
    _mm256_add_ps(t, step)
}

/// Packs 32 integral floats (4 vectors, in order) into 32 bytes.
#[inline(always)]
unsafe fn pack_i8(v: [__m256; 4]) -> __m256i {
    let i = v.map(|v| _mm256_cvtps_epi32(v));
    let a = _mm256_packs_epi32(i[0], i[1]);
    let b = _mm256_packs_epi32(i[2], i[3]);
    let p = _mm256_packs_epi16(a, b);
    // The packs work per 128-bit lane; restore element order.
    _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

#[inline(always)]
unsafe fn max_abs(v: &[__m256]) -> f32 {
    let mut m = _mm256_setzero_ps();
    for &v in v {
        m = _mm256_max_ps(m, _mm256_andnot_ps(_mm256_set1_ps(-0.0), v));
    }
    let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    _mm_cvtss_f32(m)
}

/// Whether every lane is finite (not NaN, not ±∞).
#[inline(always)]
unsafe fn all_finite(v: &[__m256]) -> bool {
    let max = _mm256_set1_ps(f32::MAX);
    let mut ok = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    for &v in v {
        let a = _mm256_andnot_ps(_mm256_set1_ps(-0.0), v);
        ok = _mm256_and_ps(ok, _mm256_cmp_ps::<_CMP_LE_OQ>(a, max));
    }
    _mm256_movemask_ps(ok) == 0xff
}

/// One Q8_0 / Q8_1 block: writes the 32 q at `qs` and returns (d, Σq); `None` (nothing written)
/// for blocks with non-finite values or a non-finite 1/d, which the caller hands to the scalar
/// reference so that even those blocks come out as the reference makes them.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_block(x: *const f32, qs: *mut u8) -> Option<(f32, i32)> {
    let v = [0, 8, 16, 24].map(|o| _mm256_loadu_ps(x.add(o)));
    if !all_finite(&v) {
        return None;
    }
    let amax = max_abs(&v);
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    if !id.is_finite() {
        return None;
    }
    let r = v.map(|v| round_away(_mm256_mul_ps(v, _mm256_set1_ps(id))));
    let q = pack_i8(r);
    _mm256_storeu_si256(qs as *mut __m256i, q);
    let sum = _mm256_add_ps(_mm256_add_ps(r[0], r[1]), _mm256_add_ps(r[2], r[3]));
    Some((d, hsum_ps(sum) as i32))
}

pub(crate) fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
    let nb = x.len() / QK;
    assert!(
        x.len() == nb * QK && out.len() == nb * 34,
        "quantize_q8_0: bad lengths"
    );
    for b in 0..nb {
        // SAFETY: AVX2 is present (module doc); block b's 32 floats and 34 bytes are in bounds.
        match unsafe { q8_block(x.as_ptr().add(b * QK), out.as_mut_ptr().add(b * 34 + 2)) } {
            Some((d, _)) => {
                out[b * 34..][..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes())
            }
            None => scalar::quantize_q8_0(&x[b * QK..][..QK], &mut out[b * 34..][..34]),
        }
    }
}

fn quantize_q8_1(x: &[f32], out: &mut [u8]) {
    let nb = x.len() / QK;
    assert!(
        x.len() == nb * QK && out.len() == nb * 36,
        "quantize_q8_1: bad lengths"
    );
    for b in 0..nb {
        // SAFETY: AVX2 is present (module doc); block b's 32 floats and 36 bytes are in bounds.
        match unsafe { q8_block(x.as_ptr().add(b * QK), out.as_mut_ptr().add(b * 36 + 4)) } {
            Some((d, sum)) => {
                let o = &mut out[b * 36..];
                o[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
                o[2..4].copy_from_slice(&half::f16::from_f32(sum as f32 * d).to_le_bytes());
            }
            None => scalar::quantize_q8_1(&x[b * QK..][..QK], &mut out[b * 36..][..36]),
        }
    }
}

fn quantize_q8_k(x: &[f32], out: &mut [u8]) {
    let nb = x.len() / QK_K;
    assert!(
        x.len() == nb * QK_K && out.len() == nb * Q8K_BYTES,
        "quantize_q8_k: bad lengths"
    );
    for (xb, o) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(Q8K_BYTES)) {
        // SAFETY: AVX2 is present (module doc); xb has 256 floats, o has 292 bytes.
        if !unsafe { q8_k_block(xb, o) } {
            // Non-finite input: the reference decides what the block holds.
            scalar::quantize_q8_k(xb, o);
        }
    }
}

/// One Q8_K block; false (nothing written) for non-finite values or scale, see `q8_block`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_k_block(xb: &[f32], o: &mut [u8]) -> bool {
    let x = xb.as_ptr();
    let v: [__m256; 32] = std::array::from_fn(|i| _mm256_loadu_ps(x.add(8 * i)));
    if !all_finite(&v) {
        return false;
    }
    let amax = max_abs(&v);
    if amax == 0.0 {
        o.fill(0);
        return true;
    }
    // The reference keeps the first value of largest magnitude (its sign sets the scale's).
    let max = xb.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
    let iscale = -127.0 / max;
    if !iscale.is_finite() {
        return false;
    }
    let s = _mm256_set1_ps(iscale);
    let r: [__m256; 32] = std::array::from_fn(|i| {
        let q = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(v[i], s),
        );
        _mm256_min_ps(q, _mm256_set1_ps(127.0))
    });
    let qs = o.as_mut_ptr().add(4);
    for g in 0..8 {
        let q = pack_i8([r[4 * g], r[4 * g + 1], r[4 * g + 2], r[4 * g + 3]]);
        _mm256_storeu_si256(qs.add(32 * g) as *mut __m256i, q);
        // bsums of the two 16-value halves of these 32.
        let lo = hsum_ps(_mm256_add_ps(r[4 * g], r[4 * g + 1])) as i16;
        let hi = hsum_ps(_mm256_add_ps(r[4 * g + 2], r[4 * g + 3])) as i16;
        o[260 + 4 * g..][..2].copy_from_slice(&lo.to_le_bytes());
        o[262 + 4 * g..][..2].copy_from_slice(&hi.to_le_bytes());
    }
    o[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    true
}
