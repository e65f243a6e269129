//! Which checkpoint tensor becomes which GGUF tensor, with the shape the config implies.
//!
//! Qwen2-VL parts get llama.cpp's names (`token_embd`, `blk.N.*`, `v.*`, `mm.*`); the generation
//! replica gets `flow.blk.{layer}.*`, its ends `flow.*` (or `flow.group.{k}.*` with
//! `per_group_head`); the DC-AE decoder `dcae.*` (the diffusers name without `decoder.`). Two
//! checkpoint tensors are split the way llama.cpp splits them: the vision `attn.qkv` into
//! `attn_q`/`attn_k`/`attn_v`, and the Conv3d patch embedding into one Conv2d kernel per temporal
//! slice (`v.patch_embd.weight`, `v.patch_embd.weight.1`). This module only names; it reads nothing.

use super::config::{GenerationConfig, Qwen2VlConfig};

/// Which weight set a tensor comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightSetId {
    /// `model.safetensors` (Qwen2-VL).
    Vlm,
    /// `generation/model.safetensors` (the replica).
    Generation,
    /// `autoencoder/diffusion_pytorch_model.safetensors` (DC-AE).
    Autoencoder,
}

/// Part of a source tensor: viewed as `[outer, parts, inner]` elements (row-major), part `index`.
/// The whole tensor is `parts = 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    pub outer: u64,
    pub parts: u64,
    pub index: u64,
    pub inner: u64,
}

/// One output tensor and where it comes from.
#[derive(Clone, Debug, PartialEq)]
pub struct Mapping {
    pub gguf: String,
    pub set: WeightSetId,
    pub source: String,
    /// The source's shape (torch order) the config implies; `None` when the config does not fix
    /// it (DC-AE tensors, taken as the file has them).
    pub expected: Option<Vec<u64>>,
    /// `None`: the whole tensor.
    pub split: Option<Split>,
    /// Expert group, for replica layers and per-group heads.
    pub group: Option<usize>,
}

impl Mapping {
    fn whole(set: WeightSetId, source: String, gguf: String, shape: &[u64]) -> Mapping {
        Mapping {
            gguf,
            set,
            source,
            expected: Some(shape.to_vec()),
            split: None,
            group: None,
        }
    }

    /// The output's shape in torch order (outermost first).
    ///
    /// A DC-AE 1×1 convolution kernel `[out, in, 1, 1]` is written as the matrix `[out, in]`:
    /// with its unit axes kept, a ggml row would be one value wide and the kernel could never
    /// quantize; as a matrix its rows are `in` wide, like any linear layer's. The bytes are the
    /// same, so only the shape changes.
    pub fn output_shape(&self, source_shape: &[u64]) -> Vec<u64> {
        match self.split {
            None if self.set == WeightSetId::Autoencoder && is_pointwise_kernel(source_shape) => {
                source_shape[..2].to_vec()
            }
            None => source_shape.to_vec(),
            // qkv: rows split in `parts`; Conv3d [E, C, T, P, P]: drop the temporal axis.
            Some(split) if split.outer == 1 => {
                let mut shape = source_shape.to_vec();
                shape[0] /= split.parts;
                shape
            }
            Some(_) => {
                let mut shape = source_shape.to_vec();
                shape.remove(2);
                shape
            }
        }
    }
}

/// A convolution kernel `[out, in, 1, 1]` (torch order).
fn is_pointwise_kernel(shape: &[u64]) -> bool {
    matches!(shape, [_, _, 1, 1])
}

/// Qwen2-VL: text model then vision tower, in llama.cpp's names.
pub fn qwen2vl(c: &Qwen2VlConfig) -> Vec<Mapping> {
    use WeightSetId::Vlm;
    let (d, f, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let q = c.heads * c.head_dim();
    let kv = c.kv_heads * c.head_dim();
    let mut out = Vec::new();
    let mut push = |src: &str, gguf: &str, shape: &[u64]| {
        out.push(Mapping::whole(Vlm, src.into(), gguf.into(), shape));
    };
    push("model.embed_tokens.weight", "token_embd.weight", &[v, d]);
    for n in 0..c.layers {
        let s = format!("model.layers.{n}");
        let b = format!("blk.{n}");
        push(
            &format!("{s}.input_layernorm.weight"),
            &format!("{b}.attn_norm.weight"),
            &[d],
        );
        for (proj, name, rows) in [
            ("q_proj", "attn_q", q),
            ("k_proj", "attn_k", kv),
            ("v_proj", "attn_v", kv),
        ] {
            push(
                &format!("{s}.self_attn.{proj}.weight"),
                &format!("{b}.{name}.weight"),
                &[rows, d],
            );
            push(
                &format!("{s}.self_attn.{proj}.bias"),
                &format!("{b}.{name}.bias"),
                &[rows],
            );
        }
        push(
            &format!("{s}.self_attn.o_proj.weight"),
            &format!("{b}.attn_output.weight"),
            &[d, q],
        );
        push(
            &format!("{s}.post_attention_layernorm.weight"),
            &format!("{b}.ffn_norm.weight"),
            &[d],
        );
        push(
            &format!("{s}.mlp.gate_proj.weight"),
            &format!("{b}.ffn_gate.weight"),
            &[f, d],
        );
        push(
            &format!("{s}.mlp.up_proj.weight"),
            &format!("{b}.ffn_up.weight"),
            &[f, d],
        );
        push(
            &format!("{s}.mlp.down_proj.weight"),
            &format!("{b}.ffn_down.weight"),
            &[d, f],
        );
    }
    push("model.norm.weight", "output_norm.weight", &[d]);
    if !c.tie_word_embeddings {
        push("lm_head.weight", "output.weight", &[v, d]);
    }

    let vc = &c.vision;
    let e = vc.embed_dim;
    let (p, t, ch) = (vc.patch_size, vc.temporal_patch_size, vc.in_channels);
    let patch_shape = [e, ch, t, p, p];
    for slice in 0..t {
        let gguf = if slice == 0 {
            "v.patch_embd.weight".to_string()
        } else {
            format!("v.patch_embd.weight.{slice}")
        };
        out.push(Mapping {
            gguf,
            set: Vlm,
            source: "visual.patch_embed.proj.weight".into(),
            expected: Some(patch_shape.to_vec()),
            split: Some(Split {
                outer: e * ch,
                parts: t,
                index: slice,
                inner: p * p,
            }),
            group: None,
        });
    }
    let mut push = |src: &str, gguf: &str, shape: &[u64]| {
        out.push(Mapping::whole(Vlm, src.into(), gguf.into(), shape));
    };
    let ff = e * vc.mlp_ratio;
    for n in 0..vc.depth {
        let s = format!("visual.blocks.{n}");
        let b = format!("v.blk.{n}");
        for (norm, name) in [("norm1", "ln1"), ("norm2", "ln2")] {
            push(
                &format!("{s}.{norm}.weight"),
                &format!("{b}.{name}.weight"),
                &[e],
            );
            push(
                &format!("{s}.{norm}.bias"),
                &format!("{b}.{name}.bias"),
                &[e],
            );
        }
        push(
            &format!("{s}.attn.proj.weight"),
            &format!("{b}.attn_out.weight"),
            &[e, e],
        );
        push(
            &format!("{s}.attn.proj.bias"),
            &format!("{b}.attn_out.bias"),
            &[e],
        );
        push(
            &format!("{s}.mlp.fc1.weight"),
            &format!("{b}.ffn_up.weight"),
            &[ff, e],
        );
        push(
            &format!("{s}.mlp.fc1.bias"),
            &format!("{b}.ffn_up.bias"),
            &[ff],
        );
        push(
            &format!("{s}.mlp.fc2.weight"),
            &format!("{b}.ffn_down.weight"),
            &[e, ff],
        );
        push(
            &format!("{s}.mlp.fc2.bias"),
            &format!("{b}.ffn_down.bias"),
            &[e],
        );
    }
    let merged = e * vc.spatial_merge_size * vc.spatial_merge_size;
    push("visual.merger.ln_q.weight", "v.post_ln.weight", &[e]);
    push("visual.merger.ln_q.bias", "v.post_ln.bias", &[e]);
    push(
        "visual.merger.mlp.0.weight",
        "mm.0.weight",
        &[merged, merged],
    );
    push("visual.merger.mlp.0.bias", "mm.0.bias", &[merged]);
    push(
        "visual.merger.mlp.2.weight",
        "mm.2.weight",
        &[vc.projection_dim, merged],
    );
    push(
        "visual.merger.mlp.2.bias",
        "mm.2.bias",
        &[vc.projection_dim],
    );
    // The fused qkv, split like llama.cpp does (row blocks q, k, v).
    for n in 0..vc.depth {
        for (index, name) in ["attn_q", "attn_k", "attn_v"].iter().enumerate() {
            for (suffix, shape, inner) in
                [("weight", vec![3 * e, e], e * e), ("bias", vec![3 * e], e)]
            {
                out.push(Mapping {
                    gguf: format!("v.blk.{n}.{name}.{suffix}"),
                    set: Vlm,
                    source: format!("visual.blocks.{n}.attn.qkv.{suffix}"),
                    expected: Some(shape),
                    split: Some(Split {
                        outer: 1,
                        parts: 3,
                        index: index as u64,
                        inner,
                    }),
                    group: None,
                });
            }
        }
    }
    out
}

/// Newer transformers save Qwen2-VL as `model.language_model.*` / `model.visual.*`; the table
/// above uses the hub's `model.*` / `visual.*`. Returns the hub name.
pub fn canonical_vlm_name(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("model.language_model.") {
        format!("model.{rest}")
    } else if let Some(rest) = name.strip_prefix("model.visual.") {
        format!("visual.{rest}")
    } else {
        name.to_string()
    }
}

/// The replica's ends (patch embedding, time embedding, image head) under `src`/`dst` prefixes.
fn flow_ends(g: &GenerationConfig, src: &str, dst: &str, group: Option<usize>) -> Vec<Mapping> {
    let d = g.hidden_size;
    let cp = g.latent_channels * g.patch_size * g.patch_size;
    let ft = g.time_freq_dim;
    let rows: Vec<(&str, &str, Vec<u64>)> = vec![
        ("patch_embed.weight", "patch_embd.weight", vec![d, cp]),
        ("patch_embed.bias", "patch_embd.bias", vec![d]),
        (
            "time_embed.linear_1.weight",
            "time_embd_1.weight",
            vec![d, ft],
        ),
        ("time_embed.linear_1.bias", "time_embd_1.bias", vec![d]),
        (
            "time_embed.linear_2.weight",
            "time_embd_2.weight",
            vec![d, d],
        ),
        ("time_embed.linear_2.bias", "time_embd_2.bias", vec![d]),
        ("image_head.norm.weight", "head_norm.weight", vec![d]),
        ("image_head.proj.weight", "head.weight", vec![cp, d]),
        ("image_head.proj.bias", "head.bias", vec![cp]),
    ];
    rows.into_iter()
        .map(|(s, n, shape)| Mapping {
            group,
            ..Mapping::whole(
                WeightSetId::Generation,
                format!("{src}{s}"),
                format!("{dst}{n}"),
                &shape,
            )
        })
        .collect()
}

/// One replica layer.
fn flow_layer(g: &GenerationConfig, l: u64) -> Vec<Mapping> {
    let (d, f, h) = (g.hidden_size, g.intermediate_size, g.heads);
    let q = h * g.head_dim;
    let kv = g.kv_heads * g.head_dim;
    let group = Some((l / g.layers_per_group()) as usize);
    let rows: Vec<(&str, &str, Vec<u64>)> = vec![
        ("input_norm.weight", "attn_norm.weight", vec![d]),
        ("q_proj.weight", "attn_q.weight", vec![q, d]),
        ("q_proj.bias", "attn_q.bias", vec![q]),
        ("k_proj.weight", "attn_k.weight", vec![kv, d]),
        ("k_proj.bias", "attn_k.bias", vec![kv]),
        ("v_proj.weight", "attn_v.weight", vec![kv, d]),
        ("v_proj.bias", "attn_v.bias", vec![kv]),
        ("o_proj.weight", "attn_output.weight", vec![d, q]),
        ("attn_out_norm.weight", "attn_post_norm.weight", vec![d]),
        ("ffn_norm.weight", "ffn_norm.weight", vec![d]),
        ("gate_proj.weight", "ffn_gate.weight", vec![f, d]),
        ("up_proj.weight", "ffn_up.weight", vec![f, d]),
        ("down_proj.weight", "ffn_down.weight", vec![d, f]),
        ("ffn_out_norm.weight", "ffn_post_norm.weight", vec![d]),
        ("modulation.weight", "modulation.weight", vec![4 * d, d]),
        ("modulation.bias", "modulation.bias", vec![4 * d]),
        ("tcra_gate.weight", "tcra_gate.weight", vec![h, d]),
        ("tcra_gate.bias", "tcra_gate.bias", vec![h]),
    ];
    rows.into_iter()
        .map(|(s, n, shape)| Mapping {
            group,
            ..Mapping::whole(
                WeightSetId::Generation,
                format!("layers.{l}.{s}"),
                format!("flow.blk.{l}.{n}"),
                &shape,
            )
        })
        .collect()
}

/// The shared generation tensors (empty with `per_group_head`).
pub fn flow_shared(g: &GenerationConfig) -> Vec<Mapping> {
    if g.per_group_head {
        Vec::new()
    } else {
        flow_ends(g, "", "flow.", None)
    }
}

/// Expert group `k`: its layers, then its own ends with `per_group_head`.
pub fn flow_group(g: &GenerationConfig, k: u64) -> Vec<Mapping> {
    let m = g.layers_per_group();
    let mut out: Vec<Mapping> = (k * m..(k + 1) * m)
        .flat_map(|l| flow_layer(g, l))
        .collect();
    if g.per_group_head {
        out.extend(flow_ends(
            g,
            &format!("groups.{k}."),
            &format!("flow.group.{k}."),
            Some(k as usize),
        ));
    }
    out
}

/// The DC-AE decoder tensor a diffusers name becomes; `None` for encoder tensors (not needed to
/// generate) and for BatchNorm's `num_batches_tracked` (an int64 training counter that eval-mode
/// inference never reads), `Err(())` for names that are neither.
#[allow(clippy::result_unit_err)]
pub fn dcae_name(source: &str) -> Result<Option<String>, ()> {
    if source.starts_with("decoder.") && source.ends_with(".num_batches_tracked") {
        Ok(None)
    } else if let Some(rest) = source.strip_prefix("decoder.") {
        Ok(Some(format!("dcae.{rest}")))
    } else if source.starts_with("encoder.") {
        Ok(None)
    } else {
        Err(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_conventions() {
        assert_eq!(
            canonical_vlm_name("model.language_model.norm.weight"),
            "model.norm.weight"
        );
        assert_eq!(
            canonical_vlm_name("model.visual.blocks.0.norm1.weight"),
            "visual.blocks.0.norm1.weight"
        );
        assert_eq!(canonical_vlm_name("lm_head.weight"), "lm_head.weight");
        assert_eq!(
            dcae_name("decoder.conv_in.weight"),
            Ok(Some("dcae.conv_in.weight".into()))
        );
        assert_eq!(dcae_name("encoder.conv_in.weight"), Ok(None));
        assert_eq!(
            dcae_name("decoder.up_blocks.0.1.norm.num_batches_tracked"),
            Ok(None)
        );
        assert_eq!(dcae_name("quant_conv.weight"), Err(()));
    }

    #[test]
    fn dcae_pointwise_kernels_become_matrices() {
        let dcae = Mapping {
            gguf: "dcae.up_blocks.0.1.conv_out.weight".into(),
            set: WeightSetId::Autoencoder,
            source: "decoder.up_blocks.0.1.conv_out.weight".into(),
            expected: None,
            split: None,
            group: None,
        };
        assert_eq!(dcae.output_shape(&[2048, 512, 1, 1]), vec![2048, 512]);
        // 3×3 kernels, vectors and depthwise 5×5 kernels keep their shape.
        assert_eq!(dcae.output_shape(&[512, 512, 3, 3]), vec![512, 512, 3, 3]);
        assert_eq!(dcae.output_shape(&[512]), vec![512]);
        assert_eq!(dcae.output_shape(&[96, 1, 5, 5]), vec![96, 1, 5, 5]);
        // Only the autoencoder's kernels are reshaped.
        let vlm = Mapping {
            set: WeightSetId::Vlm,
            ..dcae
        };
        assert_eq!(vlm.output_shape(&[64, 32, 1, 1]), vec![64, 32, 1, 1]);
    }

    #[test]
    fn splits_shrink_the_right_axis() {
        let qkv = Mapping {
            gguf: "v.blk.0.attn_k.weight".into(),
            set: WeightSetId::Vlm,
            source: "visual.blocks.0.attn.qkv.weight".into(),
            expected: None,
            split: Some(Split {
                outer: 1,
                parts: 3,
                index: 1,
                inner: 32 * 32,
            }),
            group: None,
        };
        assert_eq!(qkv.output_shape(&[96, 32]), vec![32, 32]);
        let patch = Mapping {
            split: Some(Split {
                outer: 32 * 3,
                parts: 2,
                index: 1,
                inner: 196,
            }),
            ..qkv
        };
        assert_eq!(patch.output_shape(&[32, 3, 2, 14, 14]), vec![32, 3, 14, 14]);
    }
}
