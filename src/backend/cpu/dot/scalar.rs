//! The scalar reference kernels: ggml's generic C (`ggml-cpu/quants.c`, `*_generic`) in plain Rust,
//! block by block. Every SIMD kernel is tested against these. The activation quantizers are
//! `crate::quant`'s reference ones (`quantize_row_q8_0_ref` and friends), wrapped.
//!
//! Blocks are read with unaligned copies, so any byte slice works; speed is not the point here.

use bytemuck::Pod;
use half::f16;

use super::{Columns, DotFn, QuantizeFn};
use crate::dtype::{TensorType, QK_K};
use crate::quant::blocks::{
    BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0,
    BlockQ8_1, QK,
};

pub(crate) fn kernels(ty: TensorType) -> Option<(QuantizeFn, DotFn)> {
    use TensorType::*;
    Some(match ty {
        F32 => (quantize_f32, dot_f32 as DotFn),
        F16 => (quantize_f16, dot_f16),
        BF16 => (quantize_bf16, dot_bf16),
        Q8_0 => (quantize_q8_0, dot_blocks::<BlockQ8_0, BlockQ8_0> as DotFn),
        Q4_0 => (quantize_q8_0, dot_blocks::<BlockQ4_0, BlockQ8_0>),
        Q5_0 => (quantize_q8_0, dot_blocks::<BlockQ5_0, BlockQ8_0>),
        Q4_1 => (quantize_q8_1, dot_blocks::<BlockQ4_1, BlockQ8_1>),
        Q5_1 => (quantize_q8_1, dot_blocks::<BlockQ5_1, BlockQ8_1>),
        Q4_K => (quantize_q8_k, dot_blocks::<BlockQ4K, BlockQ8K>),
        Q5_K => (quantize_q8_k, dot_blocks::<BlockQ5K, BlockQ8K>),
        Q6_K => (quantize_q8_k, dot_blocks::<BlockQ6K, BlockQ8K>),
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Activation quantizers: the reference ones of `crate::quant`, behind the `QuantizeFn` shape.

fn reference_quantize(ty: TensorType, x: &[f32], out: &mut [u8]) {
    if let Err(e) = crate::quant::quantize(ty, x, out) {
        // Unreachable through `matmul`, which sizes `out` from `x`; see `QuantizeFn`.
        panic!("activation quantizer called with inconsistent lengths: {e}");
    }
}

pub(crate) fn quantize_f32(x: &[f32], out: &mut [u8]) {
    reference_quantize(TensorType::F32, x, out)
}

pub(crate) fn quantize_f16(x: &[f32], out: &mut [u8]) {
    reference_quantize(TensorType::F16, x, out)
}

pub(crate) fn quantize_bf16(x: &[f32], out: &mut [u8]) {
    reference_quantize(TensorType::BF16, x, out)
}

pub(crate) fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
    reference_quantize(TensorType::Q8_0, x, out)
}

pub(crate) fn quantize_q8_1(x: &[f32], out: &mut [u8]) {
    reference_quantize(TensorType::Q8_1, x, out)
}

pub(crate) fn quantize_q8_k(x: &[f32], out: &mut [u8]) {
    reference_quantize(TensorType::Q8_K, x, out)
}

pub(crate) fn bf16_bits_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

// ---------------------------------------------------------------------------------------------
// Dot products.

fn dot_f32(w_row: &[u8], cols: Columns<'_>, out: &mut [f32]) {
    let col_bytes = cols.col_bytes;
    super::check_dot_args(w_row, 4, &cols, 4, 0, out.len());
    for (c, o) in out.iter_mut().enumerate() {
        let x = &cols.bytes[c * col_bytes..][..col_bytes];
        let mut sum = 0.0f64;
        for (w, x) in w_row.chunks_exact(4).zip(x.chunks_exact(4)) {
            let w = f32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            let x = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
            sum += (w * x) as f64;
        }
        *o = sum as f32;
    }
}

/// `ggml_vec_dot_f16` generic: products in f32, sum in f64.
fn dot_f16(w_row: &[u8], cols: Columns<'_>, out: &mut [f32]) {
    let col_bytes = cols.col_bytes;
    super::check_dot_args(w_row, 2, &cols, 2, 0, out.len());
    for (c, o) in out.iter_mut().enumerate() {
        let x = &cols.bytes[c * col_bytes..][..col_bytes];
        let mut sum = 0.0f64;
        for (w, x) in w_row.chunks_exact(2).zip(x.chunks_exact(2)) {
            let w = f16::from_le_bytes([w[0], w[1]]).to_f32();
            let x = f16::from_le_bytes([x[0], x[1]]).to_f32();
            sum += (w * x) as f64;
        }
        *o = sum as f32;
    }
}

/// `ggml_vec_dot_bf16` generic: products in f32, sum in f64.
fn dot_bf16(w_row: &[u8], cols: Columns<'_>, out: &mut [f32]) {
    let col_bytes = cols.col_bytes;
    super::check_dot_args(w_row, 2, &cols, 2, 0, out.len());
    for (c, o) in out.iter_mut().enumerate() {
        let x = &cols.bytes[c * col_bytes..][..col_bytes];
        let mut sum = 0.0f64;
        for (w, x) in w_row.chunks_exact(2).zip(x.chunks_exact(2)) {
            let w = bf16_bits_to_f32(u16::from_le_bytes([w[0], w[1]]));
            let x = bf16_bits_to_f32(u16::from_le_bytes([x[0], x[1]]));
            sum += (w * x) as f64;
        }
        *o = sum as f32;
    }
}

/// A weight block type that can be dotted with activation blocks of type `X`.
trait BlockDot<X: Pod>: Pod {
    /// The contribution of one block pair (ggml's per-block arithmetic, integers then f32).
    fn block_dot(&self, x: &X) -> f32;
}

/// A weight row of `W` blocks dotted with each column of `X` blocks, block contributions summed
/// in f32 in block order (as the generic ggml code does).
fn dot_blocks<W: BlockDot<X>, X: Pod>(w_row: &[u8], cols: Columns<'_>, out: &mut [f32]) {
    let col_bytes = cols.col_bytes;
    let (wb, xb) = (std::mem::size_of::<W>(), std::mem::size_of::<X>());
    super::check_dot_args(w_row, wb, &cols, xb, 0, out.len());
    for (c, o) in out.iter_mut().enumerate() {
        let x = &cols.bytes[c * col_bytes..][..col_bytes];
        let mut sum = 0.0f32;
        for (w, x) in w_row.chunks_exact(wb).zip(x.chunks_exact(xb)) {
            let w: W = bytemuck::pod_read_unaligned(w);
            let x: X = bytemuck::pod_read_unaligned(x);
            sum += w.block_dot(&x);
        }
        *o = sum;
    }
}

/// Σ w·y over a block whose 32 weights have already been unpacked to integers.
fn int_dot(w: &[i32; QK], y: &[i8; QK]) -> i32 {
    w.iter().zip(y).map(|(&w, &y)| w * y as i32).sum()
}

/// Weights 0..16 are the low nibbles of `qs`, 16..32 the high nibbles.
fn nibbles(qs: &[u8; QK / 2]) -> [i32; QK] {
    let mut q = [0i32; QK];
    for (j, &b) in qs.iter().enumerate() {
        q[j] = (b & 0x0f) as i32;
        q[j + QK / 2] = (b >> 4) as i32;
    }
    q
}

/// Adds the fifth bit (bit j of `qh` for weight j) to 4-bit values.
fn with_high_bit(mut q: [i32; QK], qh: [u8; 4]) -> [i32; QK] {
    let qh = u32::from_le_bytes(qh);
    for (j, v) in q.iter_mut().enumerate() {
        *v |= (((qh >> j) & 1) << 4) as i32;
    }
    q
}

impl BlockDot<BlockQ8_0> for BlockQ8_0 {
    fn block_dot(&self, x: &BlockQ8_0) -> f32 {
        let w = self.qs.map(|q| q as i32);
        int_dot(&w, &x.qs) as f32 * (self.d.to_f32() * x.d.to_f32())
    }
}

impl BlockDot<BlockQ8_0> for BlockQ4_0 {
    fn block_dot(&self, x: &BlockQ8_0) -> f32 {
        let w = nibbles(&self.qs).map(|q| q - 8);
        int_dot(&w, &x.qs) as f32 * self.d.to_f32() * x.d.to_f32()
    }
}

impl BlockDot<BlockQ8_0> for BlockQ5_0 {
    fn block_dot(&self, x: &BlockQ8_0) -> f32 {
        let w = with_high_bit(nibbles(&self.qs), self.qh).map(|q| q - 16);
        int_dot(&w, &x.qs) as f32 * self.d.to_f32() * x.d.to_f32()
    }
}

impl BlockDot<BlockQ8_1> for BlockQ4_1 {
    fn block_dot(&self, x: &BlockQ8_1) -> f32 {
        let sumi = int_dot(&nibbles(&self.qs), &x.qs);
        (self.d.to_f32() * x.d.to_f32()) * sumi as f32 + self.m.to_f32() * x.s.to_f32()
    }
}

impl BlockDot<BlockQ8_1> for BlockQ5_1 {
    fn block_dot(&self, x: &BlockQ8_1) -> f32 {
        let sumi = int_dot(&with_high_bit(nibbles(&self.qs), self.qh), &x.qs);
        (self.d.to_f32() * x.d.to_f32()) * sumi as f32 + self.m.to_f32() * x.s.to_f32()
    }
}

/// The 8 six-bit scales and 8 six-bit mins of Q4_K / Q5_K (`get_scale_min_k4`).
pub(crate) fn k4_scales_mins(s: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        (sc[j], mn[j]) = crate::quant::get_scale_min_k4(j, s);
    }
    (sc, mn)
}

/// The K-quant super-block dot: Σ_sub d·sc·(q·y) − dmin·Σ_sub m·(Σ y), with `q` the 256 unpacked
/// weights (0..32) in sub-blocks of 32.
fn k4_dot(q: &[i32; QK_K], d: f16, dmin: f16, scales: &[u8; 12], x: &BlockQ8K) -> f32 {
    let (sc, mn) = k4_scales_mins(scales);
    let mins: i32 = (0..QK_K / 16)
        .map(|j| x.bsums[j] as i32 * mn[j / 2] as i32)
        .sum();
    let sumi: i32 = (0..QK_K / 32)
        .map(|j| {
            let qs = &q[j * 32..][..32];
            let ys = &x.qs[j * 32..][..32];
            sc[j] as i32 * qs.iter().zip(ys).map(|(&q, &y)| q * y as i32).sum::<i32>()
        })
        .sum();
    d.to_f32() * x.d * sumi as f32 - dmin.to_f32() * x.d * mins as f32
}

impl BlockDot<BlockQ8K> for BlockQ4K {
    fn block_dot(&self, x: &BlockQ8K) -> f32 {
        let mut q = [0i32; QK_K];
        // Each 32 bytes hold two sub-blocks: low nibbles, then high nibbles.
        for (j, chunk) in self.qs.chunks_exact(32).enumerate() {
            for (l, &b) in chunk.iter().enumerate() {
                q[j * 64 + l] = (b & 0x0f) as i32;
                q[j * 64 + 32 + l] = (b >> 4) as i32;
            }
        }
        k4_dot(&q, self.d, self.dmin, &self.scales, x)
    }
}

impl BlockDot<BlockQ8K> for BlockQ5K {
    fn block_dot(&self, x: &BlockQ8K) -> f32 {
        let mut q = [0i32; QK_K];
        // As Q4_K; the fifth bit of sub-block s is bit s of qh[l].
        for (j, chunk) in self.qs.chunks_exact(32).enumerate() {
            for (l, &b) in chunk.iter().enumerate() {
                let h = self.qh[l] >> (2 * j);
                q[j * 64 + l] = ((b & 0x0f) | ((h & 1) << 4)) as i32;
                q[j * 64 + 32 + l] = ((b >> 4) | (((h >> 1) & 1) << 4)) as i32;
            }
        }
        k4_dot(&q, self.d, self.dmin, &self.scales, x)
    }
}

impl BlockDot<BlockQ8K> for BlockQ6K {
    fn block_dot(&self, x: &BlockQ8K) -> f32 {
        let mut q = [0i32; QK_K];
        for half in 0..2 {
            let ql = &self.ql[half * 64..][..64];
            let qh = &self.qh[half * 32..][..32];
            let q = &mut q[half * 128..][..128];
            for l in 0..32 {
                q[l] = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
                q[l + 32] = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                q[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                q[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            }
        }
        // 16 sub-blocks of 16, each with a signed 8-bit scale.
        let sumi: i32 = (0..QK_K / 16)
            .map(|j| {
                let s: i32 = (0..16)
                    .map(|l| q[j * 16 + l] * x.qs[j * 16 + l] as i32)
                    .sum();
                self.scales[j] as i32 * s
            })
            .sum();
        self.d.to_f32() * x.d * sumi as f32
    }
}
