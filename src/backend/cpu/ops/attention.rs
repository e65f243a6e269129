//! Scaled dot-product attention for one sequence, with grouped-query heads, an optional causal mask
//! with a query offset, and LaTtE-Flow's TCRA hook: an additive bias on a block of score columns,
//! before or after the softmax, and a readout of that block for the next layer.
//!
//! Layouts (token-major, heads interleaved, as a QKV projection produces them):
//! - `q`: `[n_q, n_heads, d]`; `k`, `v`: `[n_kv, n_kv_heads, d]`; `out`: `[n_q, n_heads, d]`.
//! - GQA: query head `h` reads KV head `h / (n_heads / n_kv_heads)` (transformers' `repeat_kv`).
//! - Scores `S[i, j] = scale · q_i·k_j`, `scale = 1/√d` unless overridden.
//! - [`Mask::Causal`]`{ offset }`: query `i` sees keys `j ≤ i + offset` (a KV cache holding
//!   `offset` earlier tokens, or a prompt prefix the queries follow). [`Mask::None`]: all keys.
//! - [`BlockBias`] covers score columns `col0 .. col0 + n_cols` of every row, per head; its
//!   arrays are `[n_heads, n_q, n_cols]`.
//!   - `PreSoftmax`: `S[h, i, col0 + c] += add[h, i, c]`, then softmax (TCRA pre-softmax; RealFormer).
//!     Readout: the biased scores of the block.
//!   - `PostSoftmax`: `P = softmax(S)`, `P[h, i, col0 + c] += add[h, i, c]`, then each row is divided
//!     by its new sum (TCRA post-softmax). Readout: the renormalised probabilities of the block, the
//!     ones that weight V.
//!   - Masked entries stay masked (the bias does not reach them) and read out as 0, so a gated reuse
//!     of the readout never multiplies an infinity.
//!
//! One row of scores per head is computed, normalised and used at a time; rows never meet, so the
//! plain three-pass softmax (max, exp-sum, scale) is exact and simple. Heads run in parallel with
//! rayon. All working memory is the caller's [`AttentionScratch`], which grows to the largest call
//! it has seen and is then reused: no allocation per call once warm.

use rayon::prelude::*;

use super::error::{checked_product, OpError};
use super::kernels::{self, multiversion};
pub use crate::backend::params::{AttentionShape, BiasMode, Mask};

/// The TCRA hook: a block of score columns that can receive a bias and be read out.
#[derive(Debug)]
pub struct BlockBias<'a> {
    pub mode: BiasMode,
    /// First key column of the block.
    pub col0: usize,
    /// Number of key columns in the block.
    pub n_cols: usize,
    /// `[n_heads, n_q, n_cols]` values to add, or `None` (e.g. the first layer of a group).
    pub add: Option<&'a [f32]>,
    /// `[n_heads, n_q, n_cols]` buffer that receives the block after the bias, or `None`.
    pub readout: Option<&'a mut [f32]>,
}

/// Reusable working memory: one score row and one output block per head.
#[derive(Debug, Default)]
pub struct AttentionScratch {
    scores: Vec<f32>,
    out: Vec<f32>,
}

impl AttentionScratch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Scratch already sized for `shape`, so the first call does not allocate either.
    pub fn for_shape(shape: &AttentionShape) -> Result<Self, OpError> {
        let mut s = Self::new();
        s.reserve(shape)?;
        Ok(s)
    }

    /// f32 values held now.
    pub fn held_values(&self) -> usize {
        self.scores.len() + self.out.len()
    }

    /// Grows to hold calls of `shape`.
    pub fn reserve(&mut self, shape: &AttentionShape) -> Result<(), OpError> {
        let scores = checked_product("attention", &[shape.n_heads, shape.n_kv])?;
        let out = checked_product("attention", &[shape.n_heads, shape.n_q, shape.head_dim])?;
        if self.scores.len() < scores {
            self.scores.resize(scores, 0.0);
        }
        if self.out.len() < out {
            self.out.resize(out, 0.0);
        }
        Ok(())
    }
}

/// `out = softmax(scale·QKᵀ (+ bias) ) V` per head, with the mask and TCRA hook described in the
/// module docs. `scale = None` means `1/√head_dim`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttentionShape,
    scale: Option<f32>,
    mask: Mask,
    mut bias: Option<BlockBias<'_>>,
    out: &mut [f32],
    scratch: &mut AttentionScratch,
) -> Result<(), OpError> {
    let AttentionShape {
        n_q,
        n_kv,
        n_heads,
        head_dim: d,
        ..
    } = shape;
    shape.check(q.len(), k.len(), v.len(), out.len())?;
    if let Some(b) = &bias {
        shape.check_block(
            b.col0,
            b.n_cols,
            b.add.map(<[f32]>::len),
            b.readout.as_ref().map(|r| r.len()),
        )?;
    }
    if n_q == 0 {
        return Ok(());
    }
    if n_kv == 0 {
        out.fill(0.0);
        return Ok(());
    }
    scratch.reserve(&shape)?;
    let scale = scale.unwrap_or(1.0 / (d as f32).sqrt());
    let ctx = Context {
        q,
        k,
        v,
        shape,
        scale,
        mask,
        block: bias.as_ref().map(|b| (b.mode, b.col0, b.n_cols, b.add)),
    };
    let scores = scratch.scores[..n_heads * n_kv].par_chunks_mut(n_kv);
    let head_out = scratch.out[..n_heads * n_q * d].par_chunks_mut(n_q * d);
    match bias.as_mut().and_then(|b| b.readout.as_deref_mut()) {
        // An empty block (n_cols = 0) has nothing to read out, and zero-length chunks would not zip.
        Some(readout) if !readout.is_empty() => {
            let per_head = readout.len() / n_heads;
            scores
                .zip(head_out)
                .zip(readout.par_chunks_mut(per_head))
                .enumerate()
                .for_each(|(h, ((s, o), r))| attend_head(&ctx, h, s, o, Some(r)));
        }
        _ => scores
            .zip(head_out)
            .enumerate()
            .for_each(|(h, (s, o))| attend_head(&ctx, h, s, o, None)),
    }
    // Interleave the per-head outputs into the token-major layout.
    for (h, head) in scratch.out[..n_heads * n_q * d]
        .chunks_exact(n_q * d)
        .enumerate()
    {
        for (i, row) in head.chunks_exact(d).enumerate() {
            let at = (i * n_heads + h) * d;
            out[at..at + d].copy_from_slice(row);
        }
    }
    Ok(())
}

/// Everything one head needs, checked and shared read-only across threads.
struct Context<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    shape: AttentionShape,
    scale: f32,
    mask: Mask,
    /// `(mode, col0, n_cols, add)` of the bias block.
    block: Option<(BiasMode, usize, usize, Option<&'a [f32]>)>,
}

multiversion! {
    /// Head `h`: `scores` is one row of `n_kv`, `out` is `[n_q, d]`, `readout` is `[n_q, n_cols]`.
    /// Multiversioned as a whole so the axpys inline into AVX2 code.
    fn attend_head / attend_head_portable(
        ctx: &Context<'_>,
        h: usize,
        scores: &mut [f32],
        out: &mut [f32],
        readout: Option<&mut [f32]>
    ) {
        let mut readout = readout;
        let AttentionShape {
            n_q,
            n_kv,
            n_heads,
            n_kv_heads,
            head_dim: d,
        } = ctx.shape;
        let kv_head = h / (n_heads / n_kv_heads);
        let kv_stride = n_kv_heads * d;
        let kv_at = |j: usize| j * kv_stride + kv_head * d;
        for i in 0..n_q {
            let visible = match ctx.mask {
                Mask::None => n_kv,
                Mask::Causal { offset } => n_kv.min(i.saturating_add(offset).saturating_add(1)),
            };
            let qi = &ctx.q[(i * n_heads + h) * d..][..d];
            let s = &mut scores[..visible];
            for (j, sj) in s.iter_mut().enumerate() {
                *sj = ctx.scale * kernels::dot(qi, &ctx.k[kv_at(j)..][..d]);
            }
            // The part of the bias block this row can see, and the row's slices of add/readout.
            let block = ctx.block.map(|(mode, col0, n_cols, add)| {
                let seen = visible.saturating_sub(col0).min(n_cols);
                let row_add = add.map(|a| &a[(h * n_q + i) * n_cols..][..seen]);
                (mode, col0, n_cols, seen, row_add)
            });
            if let Some((BiasMode::PreSoftmax, col0, n_cols, seen, row_add)) = block {
                let cols = &mut s[col0..col0 + seen];
                if let Some(a) = row_add {
                    cols.iter_mut().zip(a).for_each(|(x, b)| *x += b);
                }
                if let Some(r) = readout_row(&mut readout, i, n_cols) {
                    r[..seen].copy_from_slice(cols);
                }
            }
            super::softmax::softmax_row(s);
            if let Some((BiasMode::PostSoftmax, col0, n_cols, seen, row_add)) = block {
                if let Some(a) = row_add {
                    s[col0..col0 + seen]
                        .iter_mut()
                        .zip(a)
                        .for_each(|(x, b)| *x += b);
                    let inv = 1.0 / kernels::sum(s);
                    s.iter_mut().for_each(|x| *x *= inv);
                }
                if let Some(r) = readout_row(&mut readout, i, n_cols) {
                    r[..seen].copy_from_slice(&s[col0..col0 + seen]);
                }
            }
            let oi = &mut out[i * d..(i + 1) * d];
            oi.fill(0.0);
            for (j, &p) in s.iter().enumerate() {
                kernels::axpy_portable(p, &ctx.v[kv_at(j)..][..d], oi);
            }
        }
    }
}

/// Row `i` of a head's `[n_q, n_cols]` readout, zeroed (masked columns stay 0).
fn readout_row<'r>(
    readout: &'r mut Option<&mut [f32]>,
    i: usize,
    n_cols: usize,
) -> Option<&'r mut [f32]> {
    readout.as_deref_mut().map(|r| {
        let row = &mut r[i * n_cols..(i + 1) * n_cols];
        row.fill(0.0);
        row
    })
}
