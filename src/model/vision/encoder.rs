//! The Qwen2-VL vision transformer up to (not including) the merger: Conv3d patch embedding as
//! one matrix product per temporal slice, then pre-LayerNorm blocks with full (bidirectional)
//! attention within each frame, 2-D rotary on queries and keys, and an MLP:
//! ```text
//! h = Σ_t W_t · x_t                                   (x_t: the patch's values of time slice t)
//! h = h + proj(attention(rope(q), rope(k), v))        (q, k, v = LayerNorm1(h)·W + b)
//! h = h + fc2(act(fc1(LayerNorm2(h))))
//! ```
//! (transformers' `Qwen2VisionTransformerPretrainedModel` without its merger.)
//!
//! This module owns that math; it must not preprocess images or merge patches.

use crate::backend::cpu::matmul::MatmulScratch;
use crate::backend::cpu::ops::attention::{attention, AttentionScratch, AttentionShape, Mask};
use crate::backend::cpu::ops::rope::{rope_neox, vision_positions, RopeTable};
use crate::backend::cpu::ops::{gelu_erf, gelu_tanh, layer_norm, quick_gelu, silu};
use crate::model::{Linear, ModelError, ModelFile};

use super::config::{VisionActivation, VisionConfig};

struct VisionBlock<'a> {
    norm1: (Vec<f32>, Vec<f32>),
    q: Linear<'a>,
    k: Linear<'a>,
    v: Linear<'a>,
    output: Linear<'a>,
    norm2: (Vec<f32>, Vec<f32>),
    up: Linear<'a>,
    down: Linear<'a>,
}

fn load_norm(file: &ModelFile, name: &str, dim: usize) -> Result<(Vec<f32>, Vec<f32>), ModelError> {
    Ok((
        file.tensor_f32(&format!("{name}.weight"), &[dim as u64])?,
        file.tensor_f32(&format!("{name}.bias"), &[dim as u64])?,
    ))
}

/// The patch embedding and the transformer blocks.
pub struct VisionEncoder<'a> {
    config: VisionConfig,
    /// One `[3·p², E]` kernel per temporal slice.
    patch_embed: Vec<Linear<'a>>,
    blocks: Vec<VisionBlock<'a>>,
}

impl<'a> VisionEncoder<'a> {
    pub fn load(file: &'a ModelFile, config: &VisionConfig) -> Result<Self, ModelError> {
        let e = config.embed;
        let slice = 3 * config.preprocess.patch_size.pow(2);
        let patch_embed = (0..config.preprocess.temporal_patch_size)
            .map(|t| {
                let name = match t {
                    0 => "v.patch_embd.weight".to_string(),
                    t => format!("v.patch_embd.weight.{t}"),
                };
                Linear::load_flattened(file, &name, slice, e)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let blocks = (0..config.layers)
            .map(|l| {
                let name = |part: &str| format!("v.blk.{l}.{part}");
                Ok(VisionBlock {
                    norm1: load_norm(file, &name("ln1"), e)?,
                    q: Linear::load_pair(file, &name("attn_q"), true, e, e)?,
                    k: Linear::load_pair(file, &name("attn_k"), true, e, e)?,
                    v: Linear::load_pair(file, &name("attn_v"), true, e, e)?,
                    output: Linear::load_pair(file, &name("attn_out"), true, e, e)?,
                    norm2: load_norm(file, &name("ln2"), e)?,
                    up: Linear::load_pair(file, &name("ffn_up"), true, e, config.ffn)?,
                    down: Linear::load_pair(file, &name("ffn_down"), true, config.ffn, e)?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(VisionEncoder {
            config: config.clone(),
            patch_embed,
            blocks,
        })
    }

    /// Hidden states `[patches, E]` of one image's `pixels` (`[patches, patch_len]`, merge-window
    /// order) on a `grid = [t, h, w]` of patches.
    pub fn forward(&self, pixels: &[f32], grid: [usize; 3]) -> Result<Vec<f32>, ModelError> {
        let c = &self.config;
        let (e, merge) = (c.embed, c.preprocess.merge_size);
        let [frames, gh, gw] = grid;
        let n = frames
            .checked_mul(gh)
            .and_then(|x| x.checked_mul(gw))
            .filter(|&n| n > 0)
            .ok_or_else(|| invalid(format!("empty or overflowing patch grid {grid:?}")))?;
        if gh % merge != 0 || gw % merge != 0 {
            return Err(invalid(format!(
                "patch grid {gh}×{gw} is not a multiple of the merge size {merge}"
            )));
        }
        let patch_len = c.patch_len();
        if pixels.len() != n * patch_len {
            return Err(invalid(format!(
                "{n} patches need {} pixel values, got {}",
                n * patch_len,
                pixels.len()
            )));
        }
        let mut matmul = MatmulScratch::new();

        // Patch embedding: gather each temporal slice (rows are ordered channel, time, y, x).
        let temporal = c.preprocess.temporal_patch_size;
        let plane = c.preprocess.patch_size.pow(2);
        let mut slice = vec![0f32; n * 3 * plane];
        let mut hidden = vec![0f32; n * e];
        let mut part = vec![0f32; n * e];
        for (t, kernel) in self.patch_embed.iter().enumerate() {
            for (row, out) in pixels
                .chunks_exact(patch_len)
                .zip(slice.chunks_exact_mut(3 * plane))
            {
                for ch in 0..3 {
                    let from = (ch * temporal + t) * plane;
                    out[ch * plane..(ch + 1) * plane].copy_from_slice(&row[from..from + plane]);
                }
            }
            kernel.forward(&slice, n, &mut part, &mut matmul)?;
            add_assign(&mut hidden, &part);
        }

        let positions = vision_positions(frames, gh, gw, merge)?;
        let rope = RopeTable::vision_2d(&positions, c.head_dim, c.rope_theta)?;
        let per_frame = gh * gw;
        let shape = AttentionShape {
            n_q: per_frame,
            n_kv: per_frame,
            n_heads: c.heads,
            n_kv_heads: c.heads,
            head_dim: c.head_dim,
        };
        let mut attention_scratch = AttentionScratch::for_shape(&shape)?;
        let mut normed = vec![0f32; n * e];
        let (mut q, mut k, mut v, mut attn) = (
            vec![0f32; n * e],
            vec![0f32; n * e],
            vec![0f32; n * e],
            vec![0f32; n * e],
        );
        let mut up = vec![0f32; n * c.ffn];
        for block in &self.blocks {
            normed.copy_from_slice(&hidden);
            layer_norm(
                &mut normed,
                e,
                Some(&block.norm1.0),
                Some(&block.norm1.1),
                c.eps,
            )?;
            block.q.forward(&normed, n, &mut q, &mut matmul)?;
            block.k.forward(&normed, n, &mut k, &mut matmul)?;
            block.v.forward(&normed, n, &mut v, &mut matmul)?;
            rope_neox(&mut q, c.heads, &rope)?;
            rope_neox(&mut k, c.heads, &rope)?;
            // Each frame attends within itself (transformers' cu_seqlens).
            for f in 0..frames {
                let r = f * per_frame * e..(f + 1) * per_frame * e;
                attention(
                    &q[r.clone()],
                    &k[r.clone()],
                    &v[r.clone()],
                    shape,
                    None,
                    Mask::None,
                    None,
                    &mut attn[r],
                    &mut attention_scratch,
                )?;
            }
            block.output.forward(&attn, n, &mut part, &mut matmul)?;
            add_assign(&mut hidden, &part);

            normed.copy_from_slice(&hidden);
            layer_norm(
                &mut normed,
                e,
                Some(&block.norm2.0),
                Some(&block.norm2.1),
                c.eps,
            )?;
            block.up.forward(&normed, n, &mut up, &mut matmul)?;
            activate(c.activation, &mut up);
            block.down.forward(&up, n, &mut part, &mut matmul)?;
            add_assign(&mut hidden, &part);
        }
        Ok(hidden)
    }
}

fn activate(activation: VisionActivation, x: &mut [f32]) {
    match activation {
        VisionActivation::QuickGelu => quick_gelu(x),
        VisionActivation::Gelu => gelu_erf(x),
        VisionActivation::GeluTanh => gelu_tanh(x),
        VisionActivation::Silu => silu(x),
    }
}

pub(super) fn add_assign(acc: &mut [f32], x: &[f32]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

pub(super) fn invalid(what: String) -> ModelError {
    ModelError::Invalid {
        file: "vision input".into(),
        what,
    }
}
