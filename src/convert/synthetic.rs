//! A synthetic full-size model for benchmarks: the paper's shapes (Qwen2-VL-2B, a 28-layer
//! replica in 4 groups of 7, a DC-AE f32c32 decoder) with seeded random weights, planned exactly
//! like a converted checkpoint (same names, types, fallbacks and group layout) and streamed
//! straight to GGUF, so no multi-GB intermediate checkpoint is ever written.
//!
//! The file says what it is: `latte.synthetic` describes it, and it carries no tokenizer. The
//! DC-AE decoder's tensors follow diffusers' `AutoencoderDC` decoder layout for the f32c32 config
//! (`mit-han-lab/dc-ae-f32c32-in-1.0-diffusers`) as written down here; they are meant to have
//! the right sizes for memory and bandwidth measurements, not to be loadable by diffusers; the file
//! carries the matching `latte.dcae.config_json`, so latte's own decoder loads and runs them.

use super::config::{
    GenerationConfig, PreprocessorConfig, Qwen2VlConfig, VisionConfig, GENERATION_FORMAT,
};
use super::error::ConvertError;
use super::metadata::{self, KEY_DCAE_CONFIG, KEY_MODEL_KIND, KEY_SYNTHETIC};
use super::names::{self, Mapping, WeightSetId};
use super::preset::LayerCounts;
use super::quantize::{plan_tensor, QuantizeOptions};
use super::write::{file_type_metadata, write_gguf, OutputTensor, Progress, TensorFiller};
use crate::dtype::TensorType;
use crate::gguf::{MetadataValue, TensorInfo};

/// A synthetic model, planned.
pub struct SyntheticModel {
    pub name: String,
    pub vlm: Qwen2VlConfig,
    pub generation: GenerationConfig,
    pub metadata: Vec<(String, MetadataValue)>,
    pub tensors: Vec<OutputTensor>,
    /// `general.file_type` of the output (llama.cpp's `llama_ftype`).
    pub file_type: u32,
    seed: u64,
    /// Per tensor: fill with ones (norm weights) instead of noise.
    ones: Vec<bool>,
}

fn qwen2vl_2b() -> Qwen2VlConfig {
    Qwen2VlConfig {
        vocab_size: 151_936,
        hidden_size: 1536,
        intermediate_size: 8960,
        layers: 28,
        heads: 12,
        kv_heads: 2,
        rms_norm_eps: 1e-6,
        rope_theta: 1e6,
        mrope_section: [16, 24, 24],
        context_length: 32_768,
        tie_word_embeddings: true,
        vision: VisionConfig {
            depth: 32,
            embed_dim: 1280,
            heads: 16,
            mlp_ratio: 4,
            patch_size: 14,
            temporal_patch_size: 2,
            spatial_merge_size: 2,
            in_channels: 3,
            projection_dim: 1536,
            hidden_act: "quick_gelu".into(),
        },
        image_token_id: Some(151_655),
        vision_start_token_id: Some(151_652),
        vision_end_token_id: Some(151_653),
    }
}

fn replica(vlm: &Qwen2VlConfig, layers: u64, groups: u64) -> GenerationConfig {
    GenerationConfig {
        layers,
        hidden_size: vlm.hidden_size,
        heads: vlm.heads,
        kv_heads: vlm.kv_heads,
        head_dim: vlm.head_dim(),
        intermediate_size: vlm.intermediate_size,
        rms_norm_eps: vlm.rms_norm_eps,
        rope_theta: vlm.rope_theta,
        mrope_section: vlm.mrope_section.to_vec(),
        groups,
        group_boundaries: (0..=groups).map(|k| k as f64 / groups as f64).collect(),
        ctx_kv: "frozen".into(),
        img_pos: "mrope2d".into(),
        tcra: "pre_softmax".into(),
        per_group_head: false,
        time_shift: 1.0,
        guidance_scale: 4.0,
        num_steps: 40,
        latent_channels: 32,
        latent_size: 8,
        patch_size: 1,
        // DC-AE f32c32-in-1.0's published scaling factor.
        scaling_factor: 0.41407,
        image_size: 256,
        time_freq_dim: 256,
        prompt_template: "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n".into(),
        format: GENERATION_FORMAT.into(),
    }
}

/// The diffusers `AutoencoderDC` config of the f32c32 decoder (the tensors below), with every
/// channel count divided by `widths_scale`, as `latte.dcae.config_json` holds it; so the synthetic
/// decoder loads and runs like a converted one.
fn dcae_f32c32_config(latent: u64, scaling_factor: f64, widths_scale: u64) -> String {
    let widths: Vec<u64> = [128u64, 256, 512, 512, 1024, 1024]
        .iter()
        .map(|w| w / widths_scale)
        .collect();
    serde_json::json!({
        "_class_name": "AutoencoderDC",
        "in_channels": 3,
        "latent_channels": latent,
        "attention_head_dim": 32,
        "decoder_block_types": ["ResBlock", "ResBlock", "ResBlock",
            "EfficientViTBlock", "EfficientViTBlock", "EfficientViTBlock"],
        "decoder_block_out_channels": widths,
        "decoder_layers_per_block": [3, 3, 3, 3, 3, 3],
        "decoder_qkv_multiscales": [[], [], [], [5], [5], [5]],
        "upsample_block_type": "interpolate",
        "decoder_norm_types": "rms_norm",
        "decoder_act_fns": "silu",
        "decoder_in_shortcut": true,
        "decoder_conv_act_fn": "relu",
        "scaling_factor": scaling_factor,
    })
    .to_string()
}

/// DC-AE f32c32 decoder tensors (torch shapes), diffusers naming with `decoder.` → `dcae.`.
fn dcae_f32c32_decoder(latent: u64) -> Vec<(String, Vec<u64>)> {
    let widths = [128u64, 256, 512, 512, 1024, 1024];
    let per_block = [3u64, 3, 3, 3, 3, 3];
    let mut out: Vec<(String, Vec<u64>)> = Vec::new();
    let mut push = |name: String, shape: Vec<u64>| out.push((name, shape));
    let top = widths[widths.len() - 1];
    push("dcae.conv_in.weight".into(), vec![top, latent, 3, 3]);
    push("dcae.conv_in.bias".into(), vec![top]);
    for (i, (&c, &n)) in widths.iter().zip(&per_block).enumerate() {
        let p = format!("dcae.up_blocks.{i}");
        let mut j = 0;
        if i + 1 < widths.len() {
            // Upsampling from the next (wider) stage: interpolate, then a 3×3 conv.
            push(format!("{p}.0.conv.weight"), vec![c, widths[i + 1], 3, 3]);
            push(format!("{p}.0.conv.bias"), vec![c]);
            j = 1;
        }
        for b in j..j + n {
            let q = format!("{p}.{b}");
            if i < 3 {
                // ResBlock.
                push(format!("{q}.conv1.weight"), vec![c, c, 3, 3]);
                push(format!("{q}.conv1.bias"), vec![c]);
                push(format!("{q}.conv2.weight"), vec![c, c, 3, 3]);
                push(format!("{q}.norm.weight"), vec![c]);
                push(format!("{q}.norm.bias"), vec![c]);
            } else {
                // EfficientViTBlock: linear attention with a 5×5 multiscale branch, then GLUMBConv.
                for proj in ["to_q", "to_k", "to_v"] {
                    push(format!("{q}.attn.{proj}.weight"), vec![c, c]);
                }
                push(
                    format!("{q}.attn.to_qkv_multiscale.0.proj_in.weight"),
                    vec![3 * c, 1, 5, 5],
                );
                push(
                    format!("{q}.attn.to_qkv_multiscale.0.proj_out.weight"),
                    vec![3 * c, 32, 1, 1],
                );
                push(format!("{q}.attn.to_out.weight"), vec![c, 2 * c]);
                push(format!("{q}.attn.norm_out.weight"), vec![c]);
                push(format!("{q}.attn.norm_out.bias"), vec![c]);
                push(
                    format!("{q}.conv_out.conv_inverted.weight"),
                    vec![8 * c, c, 1, 1],
                );
                push(format!("{q}.conv_out.conv_inverted.bias"), vec![8 * c]);
                push(
                    format!("{q}.conv_out.conv_depth.weight"),
                    vec![8 * c, 1, 3, 3],
                );
                push(format!("{q}.conv_out.conv_depth.bias"), vec![8 * c]);
                push(
                    format!("{q}.conv_out.conv_point.weight"),
                    vec![c, 4 * c, 1, 1],
                );
                push(format!("{q}.conv_out.norm.weight"), vec![c]);
                push(format!("{q}.conv_out.norm.bias"), vec![c]);
            }
        }
    }
    push("dcae.norm_out.weight".into(), vec![widths[0]]);
    push("dcae.norm_out.bias".into(), vec![widths[0]]);
    push("dcae.conv_out.weight".into(), vec![3, widths[0], 3, 3]);
    push("dcae.conv_out.bias".into(), vec![3]);
    out
}

impl SyntheticModel {
    /// `latte-flow-2b` (the paper's shapes) or `latte-flow-tiny` (a few MB, for tests).
    pub fn plan(
        name: &str,
        options: &QuantizeOptions,
        seed: u64,
    ) -> Result<SyntheticModel, ConvertError> {
        let (vlm, generation) = match name {
            "latte-flow-2b" => {
                let vlm = qwen2vl_2b();
                let generation = replica(&vlm, 28, 4);
                (vlm, generation)
            }
            "latte-flow-tiny" => {
                let mut vlm = qwen2vl_2b();
                vlm.vocab_size = 512;
                // The vision tokens, like Qwen2-VL's, at the end of the vocabulary.
                vlm.vision_start_token_id = Some(508);
                vlm.vision_end_token_id = Some(509);
                vlm.image_token_id = Some(511);
                vlm.hidden_size = 128;
                vlm.intermediate_size = 256;
                vlm.layers = 4;
                vlm.heads = 2;
                vlm.kv_heads = 1;
                vlm.mrope_section = [8, 12, 12];
                vlm.vision.depth = 2;
                vlm.vision.embed_dim = 64;
                vlm.vision.heads = 2;
                vlm.vision.projection_dim = 128;
                let generation = replica(&vlm, 4, 2);
                (vlm, generation)
            }
            other => return Err(ConvertError::UnknownSynthetic(other.into())),
        };
        let mut mappings: Vec<(Mapping, bool)> = names::qwen2vl(&vlm)
            .into_iter()
            .chain(names::flow_shared(&generation))
            .map(|m| (m, false))
            .collect();
        let widths_scale = if name == "latte-flow-tiny" { 16 } else { 1 };
        for (gguf, mut shape) in dcae_f32c32_decoder(generation.latent_channels) {
            // The tiny variant narrows every channel count (but the latent's and the image's).
            if widths_scale > 1 {
                for (axis, d) in shape.iter_mut().enumerate() {
                    let is_latent_in = gguf == "dcae.conv_in.weight" && axis == 1;
                    let is_rgb_out = gguf.starts_with("dcae.conv_out.") && axis == 0;
                    if *d >= 64 && !is_latent_in && !is_rgb_out {
                        *d /= widths_scale;
                    }
                }
            }
            let source = gguf.clone();
            mappings.push((
                Mapping {
                    gguf,
                    set: WeightSetId::Autoencoder,
                    source,
                    expected: Some(shape),
                    split: None,
                    group: None,
                },
                false,
            ));
        }
        for k in 0..generation.groups {
            for (i, m) in names::flow_group(&generation, k).into_iter().enumerate() {
                mappings.push((m, i == 0));
            }
        }
        let layers = LayerCounts::of(mappings.iter().map(|(m, _)| m.gguf.as_str()));
        let mut tensors = Vec::with_capacity(mappings.len());
        let mut ones = Vec::with_capacity(mappings.len());
        for (m, starts_group) in mappings {
            let shape = m.output_shape(m.expected.as_deref().unwrap_or(&[]));
            let dims: Vec<u64> = shape.iter().rev().copied().collect();
            let info = TensorInfo {
                name: m.gguf.clone(),
                ty: TensorType::F32,
                dims: dims.clone(),
                offset: 0,
                n_bytes: 0,
            };
            ones.push(m.gguf.contains("norm") && m.gguf.ends_with(".weight") && dims.len() == 1);
            tensors.push(OutputTensor {
                plan: plan_tensor(&info, options, &layers),
                dims,
                group: m.group,
                starts_group,
            });
        }
        let preprocessor = PreprocessorConfig {
            min_pixels: 3136,
            max_pixels: 12_845_056,
            image_mean: vec![0.48145466, 0.4578275, 0.40821073],
            image_std: vec![0.26862954, 0.26130258, 0.27577711],
            rescale_factor: 1.0 / 255.0,
            resample: 3,
            patch_size: 14,
            merge_size: 2,
            temporal_patch_size: 2,
        };
        let mut metadata = metadata::text_model(&vlm, name);
        metadata.push((KEY_MODEL_KIND.into(), "latte-flow".into()));
        metadata.push((
            KEY_SYNTHETIC.into(),
            format!(
                "synthetic {name}: seeded random weights (seed {seed}) with the paper's shapes, for benchmarks only; no tokenizer"
            )
            .as_str()
            .into(),
        ));
        metadata.extend(metadata::vision(&vlm, &preprocessor));
        metadata.extend(metadata::generation(&generation));
        metadata.push((
            KEY_DCAE_CONFIG.into(),
            dcae_f32c32_config(
                generation.latent_channels,
                generation.scaling_factor,
                widths_scale,
            )
            .as_str()
            .into(),
        ));
        super::validate::check_planned(
            std::path::Path::new(&format!("synthetic {name}")),
            &metadata,
            &tensors,
        )?;
        Ok(SyntheticModel {
            name: name.into(),
            vlm,
            generation,
            metadata,
            tensors,
            file_type: options.file_type,
            seed,
            ones,
        })
    }

    pub fn write(
        &self,
        output: &std::path::Path,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<u64, ConvertError> {
        let mut metadata = self.metadata.clone();
        metadata.extend(file_type_metadata(self.file_type, &self.tensors));
        write_gguf(output, &metadata, &self.tensors, self, progress)
    }
}

/// splitmix64's output function: element n of tensor i gets `mix(seed, i, n)`, so any chunk can
/// be generated independently.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

impl TensorFiller for SyntheticModel {
    fn fill(&self, index: usize, first: u64, out: &mut [f32]) -> Result<(), ConvertError> {
        if self.ones[index] {
            out.fill(1.0);
            return Ok(());
        }
        // Uniform in ±1/sqrt(fan_in): the scale of an initialised layer.
        let fan_in = self.tensors[index].dims[0] as f32;
        let scale = 2.0 / fan_in.sqrt();
        let base = self.seed ^ (index as u64).wrapping_mul(0x9E3779B97F4A7C15);
        for (i, o) in out.iter_mut().enumerate() {
            let r = mix(base.wrapping_add((first + i as u64).wrapping_mul(0x9E3779B97F4A7C15)));
            *o = ((r >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale;
        }
        Ok(())
    }
}
