//! ReLU linear attention as DC-AE's EfficientViT blocks compute it (diffusers' `SanaMultiscale
//! LinearAttention`, "LiteMLA"), over the pixels of one image.
//!
//! Layout: `qkv` is `[n_heads, 3, d, n]`: each head owns `3·d` consecutive channel planes of `n`
//! pixels, queries first, then keys, then values (diffusers reshapes the concatenated multi-scale
//! qkv image to `(B, −1, 3·d, H·W)` and chunks it in three along that axis). Output `[n_heads, d, n]`.
//!
//! Per head, with `Q = relu(q)` and `K = relu(k)` (`d × n`) and `V = v`:
//! `out = (V Kᵀ) Q / (1ᵀ Kᵀ Q + eps)`, the division per pixel (column). This is diffusers'
//! `apply_linear_attention` (V padded with a row of ones, `(V_pad Kᵀ) Q`, last row as divisor). Its
//! `apply_quadratic_attention`, used when `n ≤ d`, is the same quantity associated the other way,
//! `V · (KᵀQ / (colsum(KᵀQ) + eps))` (colsum(KᵀQ) = 1ᵀKᵀQ), so this op serves both; only rounding
//! differs. Cost `O(d²·n)`, linear in pixels.
//!
//! Working memory is the caller's scratch vector, grown once and reused.

use rayon::prelude::*;

use super::error::{check_len, checked_product, param, OpError};
use super::kernels;

/// Scratch values [`relu_linear_attention`] needs: per head relu(q) and relu(k) (d·n each), V·Kᵀ
/// with its row of key sums ((d+1)·d) and the per-pixel divisor (n). `None` on overflow.
pub fn scratch_values(n_heads: usize, head_dim: usize, n_pixels: usize) -> Option<usize> {
    let plane = head_dim.checked_mul(n_pixels)?;
    let per_head = plane
        .checked_mul(2)?
        .checked_add((head_dim + 1).checked_mul(head_dim)?)?
        .checked_add(n_pixels)?;
    n_heads.checked_mul(per_head)
}

/// `out = relu linear attention(qkv)` per head, see the module docs; `scratch` is resized as needed.
pub fn relu_linear_attention(
    qkv: &[f32],
    n_heads: usize,
    head_dim: usize,
    n_pixels: usize,
    eps: f32,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) -> Result<(), OpError> {
    const OP: &str = "relu_linear_attention";
    let d = head_dim;
    if n_heads == 0 || d == 0 {
        return Err(param(OP, "n_heads and head_dim must be positive"));
    }
    let plane = checked_product(OP, &[d, n_pixels])?;
    check_len(
        OP,
        "qkv",
        checked_product(OP, &[n_heads, 3, plane])?,
        qkv.len(),
    )?;
    check_len(
        OP,
        "out",
        checked_product(OP, &[n_heads, plane])?,
        out.len(),
    )?;
    if n_pixels == 0 {
        return Ok(());
    }
    let per_head = 2 * plane + (d + 1) * d + n_pixels;
    let total = scratch_values(n_heads, d, n_pixels)
        .ok_or_else(|| param(OP, "scratch size overflows usize"))?;
    if scratch.len() < total {
        scratch.resize(total, 0.0);
    }
    out.par_chunks_mut(plane)
        .zip(qkv.par_chunks(3 * plane))
        .zip(scratch[..total].par_chunks_mut(per_head))
        .for_each(|((o, head), s)| {
            let (qkv_q, rest) = head.split_at(plane);
            let (qkv_k, v) = rest.split_at(plane);
            let (q, s) = s.split_at_mut(plane);
            let (k, s) = s.split_at_mut(plane);
            let (kv, divisor) = s.split_at_mut((d + 1) * d);
            for (dst, src) in [(&mut *q, qkv_q), (&mut *k, qkv_k)] {
                dst.iter_mut().zip(src).for_each(|(a, &b)| *a = b.max(0.0));
            }
            // kv[i][j] = Σ_p v[i,p]·K[j,p]; kv[d][j] = Σ_p K[j,p] (the padded row of ones).
            for (j, kj) in k.chunks_exact(n_pixels).enumerate() {
                for (i, vi) in v.chunks_exact(n_pixels).enumerate() {
                    kv[i * d + j] = kernels::dot(vi, kj);
                }
                kv[d * d + j] = kernels::sum(kj);
            }
            // out[i] = Σ_j kv[i][j]·Q[j]; divisor = Σ_j kv[d][j]·Q[j] + eps.
            o.fill(0.0);
            divisor.fill(0.0);
            for (j, qj) in q.chunks_exact(n_pixels).enumerate() {
                for (i, oi) in o.chunks_exact_mut(n_pixels).enumerate() {
                    kernels::axpy(kv[i * d + j], qj, oi);
                }
                kernels::axpy(kv[d * d + j], qj, divisor);
            }
            for oi in o.chunks_exact_mut(n_pixels) {
                for (x, &den) in oi.iter_mut().zip(divisor.iter()) {
                    *x /= den + eps;
                }
            }
        });
    Ok(())
}
