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

use crate::backend::cpu::ops::rope::{vision_positions, RopeTable};
use crate::backend::{AttentionShape, Backend, DeviceBuffer, Mask, Placement, Unary};
use crate::model::{Linear, ModelError, ModelFile};

use super::config::{VisionActivation, VisionConfig};

struct VisionBlock<'a, B: Backend> {
    norm1: (B::Buffer, B::Buffer),
    q: Linear<'a, B>,
    k: Linear<'a, B>,
    v: Linear<'a, B>,
    output: Linear<'a, B>,
    norm2: (B::Buffer, B::Buffer),
    up: Linear<'a, B>,
    down: Linear<'a, B>,
}

pub(super) fn load_norm<B: Backend>(
    backend: &B,
    file: &ModelFile,
    name: &str,
    dim: usize,
) -> Result<(B::Buffer, B::Buffer), ModelError> {
    let tensor = |part: &str| -> Result<B::Buffer, ModelError> {
        let values = file.tensor_f32(&format!("{name}.{part}"), &[dim as u64])?;
        Ok(backend.upload_owned(values)?)
    };
    Ok((tensor("weight")?, tensor("bias")?))
}

/// The patch embedding and the transformer blocks.
pub struct VisionEncoder<'a, B: Backend> {
    backend: &'a B,
    config: VisionConfig,
    /// One `[3·p², E]` kernel per temporal slice.
    patch_embed: Vec<Linear<'a, B>>,
    blocks: Vec<VisionBlock<'a, B>>,
}

impl<'a, B: Backend> VisionEncoder<'a, B> {
    pub fn load(
        backend: &'a B,
        file: &'a ModelFile,
        config: &VisionConfig,
    ) -> Result<Self, ModelError> {
        let e = config.embed;
        let slice = 3 * config.preprocess.patch_size.pow(2);
        let patch_embed = (0..config.preprocess.temporal_patch_size)
            .map(|t| {
                let name = match t {
                    0 => "v.patch_embd.weight".to_string(),
                    t => format!("v.patch_embd.weight.{t}"),
                };
                Linear::load_flattened(backend, file, &name, [slice, e])
            })
            .collect::<Result<Vec<_>, _>>()?;
        let blocks = (0..config.layers)
            .map(|l| {
                let name = |part: &str| format!("v.blk.{l}.{part}");
                let linear = |part: &str, shape: [usize; 2]| {
                    Linear::load_pair(backend, file, &name(part), true, shape, Placement::Shared)
                };
                Ok(VisionBlock {
                    norm1: load_norm(backend, file, &name("ln1"), e)?,
                    q: linear("attn_q", [e, e])?,
                    k: linear("attn_k", [e, e])?,
                    v: linear("attn_v", [e, e])?,
                    output: linear("attn_out", [e, e])?,
                    norm2: load_norm(backend, file, &name("ln2"), e)?,
                    up: linear("ffn_up", [e, config.ffn])?,
                    down: linear("ffn_down", [config.ffn, e])?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(VisionEncoder {
            backend,
            config: config.clone(),
            patch_embed,
            blocks,
        })
    }

    /// Hidden states `[patches, E]` of one image's `pixels` (`[patches, patch_len]`, merge-window
    /// order) on a `grid = [t, h, w]` of patches.
    pub fn forward(&self, pixels: &[f32], grid: [usize; 3]) -> Result<Vec<f32>, ModelError> {
        let b = self.backend;
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

        // Patch embedding: gather each temporal slice (rows are ordered channel, time, y, x).
        let temporal = c.preprocess.temporal_patch_size;
        let plane = c.preprocess.patch_size.pow(2);
        let mut slice = vec![0f32; n * 3 * plane];
        let mut slice_device = b.alloc(n * 3 * plane)?;
        let mut hidden = b.alloc(n * e)?;
        let mut part = b.alloc(n * e)?;
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
            b.write(slice_device.all_mut(), &slice)?;
            kernel.forward(slice_device.all(), n, part.all_mut())?;
            b.add(hidden.all_mut(), part.all())?;
        }
        drop(slice_device);

        let positions = vision_positions(frames, gh, gw, merge)?;
        let rope = b.rope_table(&RopeTable::vision_2d(&positions, c.head_dim, c.rope_theta)?)?;
        let per_frame = gh * gw;
        let shape = AttentionShape {
            n_q: per_frame,
            n_kv: per_frame,
            n_heads: c.heads,
            n_kv_heads: c.heads,
            head_dim: c.head_dim,
        };
        b.reserve_attention(shape)?;
        let mut normed = b.alloc(n * e)?;
        let (mut q, mut k, mut v, mut attn) = (
            b.alloc(n * e)?,
            b.alloc(n * e)?,
            b.alloc(n * e)?,
            b.alloc(n * e)?,
        );
        let mut up = b.alloc(n * c.ffn)?;
        for block in &self.blocks {
            b.copy(hidden.all(), normed.all_mut())?;
            b.layer_norm(
                normed.all_mut(),
                e,
                Some(block.norm1.0.all()),
                Some(block.norm1.1.all()),
                c.eps,
            )?;
            block.q.forward(normed.all(), n, q.all_mut())?;
            block.k.forward(normed.all(), n, k.all_mut())?;
            block.v.forward(normed.all(), n, v.all_mut())?;
            b.rope(q.all_mut(), c.heads, &rope)?;
            b.rope(k.all_mut(), c.heads, &rope)?;
            // Each frame attends within itself (transformers' cu_seqlens).
            for f in 0..frames {
                let r = f * per_frame * e..(f + 1) * per_frame * e;
                b.attention(
                    q.slice(r.clone()),
                    k.slice(r.clone()),
                    v.slice(r.clone()),
                    shape,
                    Mask::None,
                    None,
                    attn.slice_mut(r),
                )?;
            }
            block.output.forward(attn.all(), n, part.all_mut())?;
            b.add(hidden.all_mut(), part.all())?;

            b.copy(hidden.all(), normed.all_mut())?;
            b.layer_norm(
                normed.all_mut(),
                e,
                Some(block.norm2.0.all()),
                Some(block.norm2.1.all()),
                c.eps,
            )?;
            block.up.forward(normed.all(), n, up.all_mut())?;
            b.unary(up.all_mut(), activation(c.activation))?;
            block.down.forward(up.all(), n, part.all_mut())?;
            b.add(hidden.all_mut(), part.all())?;
        }
        Ok(b.read_vec(hidden.all())?)
    }
}

fn activation(activation: VisionActivation) -> Unary {
    match activation {
        VisionActivation::QuickGelu => Unary::QuickGelu,
        VisionActivation::Gelu => Unary::GeluErf,
        VisionActivation::GeluTanh => Unary::GeluTanh,
        VisionActivation::Silu => Unary::Silu,
    }
}

pub(super) fn invalid(what: String) -> ModelError {
    ModelError::Invalid {
        file: "vision input".into(),
        what,
    }
}
