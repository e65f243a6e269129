//! Rotary position embeddings, NEOX layout (transformers' `rotate_half`), from precomputed cos/sin
//! tables: plain 1-D RoPE, Qwen2-VL's multimodal M-RoPE, and Qwen2-VL's 2-D vision rotary.
//!
//! Conventions (all three share them):
//! - A head vector of `d` values is rotated as `d/2` pairs `(i, i + d/2)` (NEOX / "rotate halves",
//!   not the interleaved GPT-J pairs `(2i, 2i+1)`): with angle `θ_i`,
//!   `out[i] = x[i]·cos θ_i − x[i+d/2]·sin θ_i`, `out[i+d/2] = x[i+d/2]·cos θ_i + x[i]·sin θ_i`.
//!   This is transformers' `x·cos + rotate_half(x)·sin` with `cos = cat(cos θ, cos θ)`.
//! - A [`RopeTable`] holds `cos θ_i` and `sin θ_i` for `i < d/2`, one row per token. Angles are
//!   formed in f32 as `position · inv_freq[i]`, as transformers does, and their cos/sin evaluated in
//!   f64 and rounded.
//! - `inv_freq[i] = theta^(−2i/dim)` for `i < dim/2` ([`inv_freqs`]), computed in f64 and rounded.
//! - M-RoPE ([`RopeTable::mrope`]): each position is `[t, h, w]`; `sections = [s_t, s_h, s_w]` with
//!   `s_t + s_h + s_w = d/2` partition the frequency indices: `i < s_t` uses `t`, the next `s_h` use
//!   `h`, the last `s_w` use `w`. This is exactly transformers' `apply_multimodal_rotary_pos_emb`,
//!   which splits the concatenated `[freqs, freqs]` cos/sin with `mrope_section * 2` and takes chunk
//!   `k` from component `k % 3`: dimensions `i` and `i + d/2` (the two halves of one pair) both get
//!   frequency `i` from the same component. Qwen2-VL-2B: `d = 128`, sections `[16, 24, 24]`.
//! - Vision 2-D rotary ([`RopeTable::vision_2d`]): Qwen2-VL's `VisionRotaryEmbedding(d/2)` gives
//!   `d/4` frequencies `theta^(−2j/(d/2))`; a patch at `(row, col)` gets angles
//!   `[row·f_0 … row·f_{d/4−1}, col·f_0 … col·f_{d/4−1}]` (row frequencies, then column ones, the
//!   `flatten(1)` of `freqs[pos_ids]`), applied NEOX-style over the whole head dimension.
//!   [`vision_positions`] gives the `(row, col)` of each patch in Qwen2-VL's merge-window order.
//!
//! This module owns tables and the rotation; it must not decide positions for a model beyond
//! Qwen2-VL's documented vision order.

use rayon::prelude::*;

use super::error::{check_len, checked_product, param, OpError};

/// `inv_freq[i] = theta^(−2i/dim)` for `i < dim/2` (dim even).
pub fn inv_freqs(dim: usize, theta: f32) -> Result<Vec<f32>, OpError> {
    if dim == 0 || !dim.is_multiple_of(2) || theta.is_nan() || theta <= 0.0 {
        return Err(param(
            "inv_freqs",
            format!("dim {dim} must be even and positive, theta {theta} positive"),
        ));
    }
    Ok((0..dim / 2)
        .map(|i| (theta as f64).powf(-((2 * i) as f64) / dim as f64) as f32)
        .collect())
}

/// cos/sin of the rotation angles: `half = d/2` values per token, token-major.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeTable {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// Plain RoPE: token `n` at `positions[n]`, angles `positions[n] · inv_freq[i]`.
    pub fn new(positions: &[u32], inv_freq: &[f32]) -> Result<Self, OpError> {
        Self::from_angles(positions.len(), inv_freq.len(), |n, i| {
            positions[n] as f32 * inv_freq[i]
        })
    }

    /// Qwen2-VL M-RoPE: token `n` at `positions[n] = [t, h, w]`; `sections` split the `d/2`
    /// frequencies among t, h and w (see the module docs).
    pub fn mrope(
        positions: &[[u32; 3]],
        inv_freq: &[f32],
        sections: [usize; 3],
    ) -> Result<Self, OpError> {
        let mut table = RopeTable {
            half: inv_freq.len(),
            cos: Vec::new(),
            sin: Vec::new(),
        };
        table.set_mrope(positions, inv_freq, sections)?;
        Ok(table)
    }

    /// [`RopeTable::mrope`] into this table's existing storage: once it has held as many tokens,
    /// refilling allocates nothing (a decoder calls this for every decoded token).
    pub fn set_mrope(
        &mut self,
        positions: &[[u32; 3]],
        inv_freq: &[f32],
        sections: [usize; 3],
    ) -> Result<(), OpError> {
        let total = sections.iter().try_fold(0usize, |a, &s| a.checked_add(s));
        if total != Some(inv_freq.len()) {
            return Err(param(
                "rope_mrope",
                format!(
                    "sections {sections:?} must add up to the {} frequencies",
                    inv_freq.len()
                ),
            ));
        }
        let component = |i: usize| {
            if i < sections[0] {
                0
            } else if i < sections[0] + sections[1] {
                1
            } else {
                2
            }
        };
        self.fill(positions.len(), inv_freq.len(), |n, i| {
            positions[n][component(i)] as f32 * inv_freq[i]
        })
    }

    /// Qwen2-VL vision rotary for a head dimension `head_dim` (a multiple of 4): patch `n` at
    /// `positions[n] = [row, col]`, `theta` the base (10000 in Qwen2-VL).
    pub fn vision_2d(positions: &[[u32; 2]], head_dim: usize, theta: f32) -> Result<Self, OpError> {
        if !head_dim.is_multiple_of(4) {
            return Err(param(
                "rope_vision_2d",
                format!("head_dim {head_dim} must be a multiple of 4"),
            ));
        }
        let freqs = inv_freqs(head_dim / 2, theta)?;
        let quarter = freqs.len();
        Self::from_angles(positions.len(), head_dim / 2, |n, i| {
            if i < quarter {
                positions[n][0] as f32 * freqs[i]
            } else {
                positions[n][1] as f32 * freqs[i - quarter]
            }
        })
    }

    fn from_angles(
        n_tokens: usize,
        half: usize,
        angle: impl Fn(usize, usize) -> f32,
    ) -> Result<Self, OpError> {
        let mut table = RopeTable {
            half,
            cos: Vec::new(),
            sin: Vec::new(),
        };
        table.fill(n_tokens, half, angle)?;
        Ok(table)
    }

    /// Replaces the table's rows with `n_tokens` rows of `half` angles, reusing its storage.
    fn fill(
        &mut self,
        n_tokens: usize,
        half: usize,
        angle: impl Fn(usize, usize) -> f32,
    ) -> Result<(), OpError> {
        let len = checked_product("rope_table", &[n_tokens, half])?;
        self.half = half;
        self.cos.clear();
        self.sin.clear();
        self.cos.reserve(len);
        self.sin.reserve(len);
        for n in 0..n_tokens {
            for i in 0..half {
                let (s, c) = (angle(n, i) as f64).sin_cos();
                self.cos.push(c as f32);
                self.sin.push(s as f32);
            }
        }
        Ok(())
    }

    /// Becomes a copy of `other`, reusing this table's storage (no allocation once it has held as
    /// many rows).
    pub fn copy_from(&mut self, other: &RopeTable) {
        self.half = other.half;
        self.cos.clone_from(&other.cos);
        self.sin.clone_from(&other.sin);
    }

    /// Every token's cos values, `[tokens, half]`.
    pub fn cos(&self) -> &[f32] {
        &self.cos
    }

    /// Every token's sin values, `[tokens, half]`.
    pub fn sin(&self) -> &[f32] {
        &self.sin
    }

    /// Number of tokens (rows).
    pub fn n_tokens(&self) -> usize {
        self.cos.len().checked_div(self.half).unwrap_or(0)
    }

    /// Pairs per head (`d/2`).
    pub fn half(&self) -> usize {
        self.half
    }

    /// `(cos, sin)` of token `n`, `half` values each; `None` past the last token.
    pub fn row(&self, n: usize) -> Option<(&[f32], &[f32])> {
        let r = n.checked_mul(self.half)?..n.checked_add(1)?.checked_mul(self.half)?;
        Some((self.cos.get(r.clone())?, self.sin.get(r)?))
    }
}

/// Rotates `x` (`[n_tokens, n_heads, 2·table.half()]`, token-major) in place, NEOX layout.
pub fn rope_neox(x: &mut [f32], n_heads: usize, table: &RopeTable) -> Result<(), OpError> {
    const OP: &str = "rope_neox";
    let half = table.half();
    let head_dim = 2 * half;
    if half == 0 || n_heads == 0 {
        return Err(param(OP, "empty heads"));
    }
    let expected = checked_product(OP, &[table.n_tokens(), n_heads, head_dim])?;
    check_len(OP, "x", expected, x.len())?;
    x.par_chunks_mut(n_heads * head_dim)
        .enumerate()
        .for_each(|(n, token)| {
            // Always `Some`: x holds exactly `n_tokens` tokens (checked above).
            let Some((cos, sin)) = table.row(n) else {
                return;
            };
            for head in token.chunks_exact_mut(head_dim) {
                let (lo, hi) = head.split_at_mut(half);
                for i in 0..half {
                    let (a, b) = (lo[i], hi[i]);
                    lo[i] = a * cos[i] - b * sin[i];
                    hi[i] = b * cos[i] + a * sin[i];
                }
            }
        });
    Ok(())
}

/// `(row, col)` of each patch of a `grid_t × grid_h × grid_w` grid in Qwen2-VL's vision order:
/// frames one after another; within a frame, `merge × merge` windows in row-major order, and
/// row-major inside each window (transformers' `rot_pos_emb`: `reshape(h/m, m, w/m, m)`,
/// `permute(0, 2, 1, 3)`).
pub fn vision_positions(
    grid_t: usize,
    grid_h: usize,
    grid_w: usize,
    merge: usize,
) -> Result<Vec<[u32; 2]>, OpError> {
    const OP: &str = "vision_positions";
    if merge == 0 || !grid_h.is_multiple_of(merge) || !grid_w.is_multiple_of(merge) {
        return Err(param(
            OP,
            format!("grid {grid_h}×{grid_w} is not divisible by merge {merge}"),
        ));
    }
    if u32::try_from(grid_h.max(grid_w)).is_err() {
        return Err(param(OP, "grid too large"));
    }
    let n = checked_product(OP, &[grid_t, grid_h, grid_w])?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..grid_t {
        for bh in 0..grid_h / merge {
            for bw in 0..grid_w / merge {
                for ih in 0..merge {
                    for iw in 0..merge {
                        out.push([(bh * merge + ih) as u32, (bw * merge + iw) as u32]);
                    }
                }
            }
        }
    }
    Ok(out)
}
