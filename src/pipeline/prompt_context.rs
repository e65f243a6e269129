//! `PromptContext`: the per-layer prompt K/V of the conditional and the unconditional prompt,
//! computed once and reused at every sampling step (MODEL.md §2, switch `ctx_kv`).
//!
//! - `ctx_kv = frozen`: layer l's keys/values are the frozen VLM layer's KV cache (keys after M-RoPE).
//! - `ctx_kv = replica`: they are the replica layer l's k/v projections of the frozen layer's normed
//!   input (its `input_layernorm` output), keys rotated at the prompt's M-RoPE positions.
//!
//! A prompt may hold one image (the VLM sees it, as in understanding: `image_prompt`); its tokens
//! then sit on the image's grid, so the prompt's positions end before its length and the
//! generated image tokens start at the next free position, not at P.
//!
//! This module owns that choice; it must not sample or decode.

use crate::backend::cpu::CPU;
use crate::backend::{Backend, DeviceBuffer};
use crate::model::flow::positions::prompt_rope;
use crate::model::flow::{ContextKv, FlowConfig, PromptKv, Replica};
use crate::model::text::{KvCache, Logits, TextModel, TextScratch};
use crate::model::ModelError;

use super::image_prompt::{embed_prompt, PromptImage};

/// The prompt K/V of one generation: conditional, and unconditional when guidance needs it.
pub struct PromptContext {
    pub cond: PromptKv,
    pub uncond: Option<PromptKv>,
}

/// What the frozen VLM produced for one prompt of `len` tokens (`len` = `positions.len()`): the
/// tokens' `(t, h, w)` positions and the next free position (where the generated image tokens
/// start); per layer its cached keys (`[len, kv_heads·head_dim]`, RoPE applied) and values, and its
/// normed layer inputs (`[len, D]`, needed only for `ctx_kv = replica`).
pub struct VlmPromptOutputs {
    pub positions: Vec<[u32; 3]>,
    pub next_position: usize,
    pub cache_keys: Vec<Vec<f32>>,
    pub cache_values: Vec<Vec<f32>>,
    pub normed_inputs: Vec<Vec<f32>>,
}

/// The image item of a prompt, as Qwen2-VL's chat template writes an image.
pub const IMAGE_ITEM: &str = "<|vision_start|><|image_pad|><|vision_end|>";

/// The generation prompt's text for `prompt` with an image: the image item before the text inside
/// the user turn (the layout of understanding prompts), in the model's `prompt_template`.
pub fn image_prompt_text(config: &FlowConfig, prompt: &str) -> String {
    config.prompt_text(&format!("{IMAGE_ITEM}{prompt}"))
}

/// Binds the VLM's prompt outputs to the replica according to `ctx_kv`.
pub fn bind(replica: &Replica<'_>, vlm: VlmPromptOutputs) -> Result<PromptKv, ModelError> {
    let config = replica.config();
    let len = vlm.positions.len();
    match config.ctx_kv {
        ContextKv::Frozen => PromptKv::new(
            config,
            len,
            vlm.next_position,
            vlm.cache_keys,
            vlm.cache_values,
        ),
        ContextKv::Replica => {
            let row = config.kv_heads * config.head_dim;
            if vlm.normed_inputs.len() != config.layer_count
                || vlm
                    .normed_inputs
                    .iter()
                    .any(|x| x.len() != len * config.hidden)
            {
                return Err(ModelError::Invalid {
                    file: "prompt context".into(),
                    what: format!(
                        "ctx_kv = replica needs {} normed layer inputs of {len} × {}",
                        config.layer_count, config.hidden
                    ),
                });
            }
            let rope = CPU.rope_table(&prompt_rope(config, &vlm.positions)?)?;
            let mut keys = Vec::with_capacity(config.layer_count);
            let mut values = Vec::with_capacity(config.layer_count);
            for (l, normed) in vlm.normed_inputs.iter().enumerate() {
                let layer = replica.layer(l).ok_or_else(|| ModelError::Invalid {
                    file: "prompt context".into(),
                    what: format!("replica has no layer {l}"),
                })?;
                let mut k = vec![0.0; len * row];
                let mut v = vec![0.0; len * row];
                if len > 0 {
                    layer.context_kv(normed.all(), len, &rope, k.all_mut(), v.all_mut())?;
                }
                keys.push(k);
                values.push(v);
            }
            PromptKv::new(config, len, vlm.next_position, keys, values)
        }
    }
}

/// Runs `ids` once through the frozen VLM's text decoder and binds the result to the replica: the
/// prompt K/V every sampling step reuses. With `image`, `ids` hold its pad run (expanded,
/// `image_prompt::expand_image_pad`), whose embeddings are the image's and whose positions are on
/// its grid; without, the prompt is text (positions 0..P with t = h = w).
pub fn prefill(
    text: &TextModel<'_>,
    replica: &Replica<'_>,
    ids: &[u32],
    image: Option<&PromptImage>,
    scratch: &mut TextScratch,
) -> Result<PromptKv, ModelError> {
    let config = replica.config();
    let tc = text.config();
    if tc.layers != config.layer_count
        || tc.hidden != config.hidden
        || tc.kv_dim() != config.kv_heads * config.head_dim
    {
        return Err(ModelError::Invalid {
            file: "prompt context".into(),
            what: format!(
                "the replica ({} layers, width {}, KV width {}) does not mirror the VLM's text decoder ({} layers, width {}, KV width {})",
                config.layer_count,
                config.hidden,
                config.kv_heads * config.head_dim,
                tc.layers,
                tc.hidden,
                tc.kv_dim()
            ),
        });
    }
    // Generated image tokens are placed after the prompt, so the prompt (its own image tokens
    // included: `ids` hold the expanded pad run) and the generated image must fit the context.
    if ids.len() + config.image_tokens() > tc.context_length {
        let in_prompt = image.map_or(String::new(), |i| {
            format!(" ({} of them image)", i.tokens())
        });
        return Err(ModelError::Invalid {
            file: "prompt".into(),
            what: format!(
                "the prompt is too long: {} tokens{in_prompt} and {} generated image tokens exceed the context of {} tokens",
                ids.len(),
                config.image_tokens(),
                tc.context_length
            ),
        });
    }
    let len = ids.len();
    let mut cache = KvCache::new(tc, len);
    let mut embeddings = vec![0.0; len * tc.hidden];
    let (positions, next_position) = embed_prompt(text, ids, image, &mut embeddings)?;
    let replica_kv = config.ctx_kv == ContextKv::Replica;
    let mut captured = Vec::new();
    let mut logits = Vec::new();
    text.forward(
        &embeddings,
        &positions,
        &mut cache,
        scratch,
        replica_kv.then_some(&mut captured),
        Logits::None,
        &mut logits,
    )?;
    let (cache_keys, cache_values) = if replica_kv {
        (Vec::new(), Vec::new())
    } else {
        (0..tc.layers)
            .map(|l| {
                let (k, v) = cache.layer(l);
                (k.to_vec(), v.to_vec())
            })
            .unzip()
    };
    if replica_kv && captured.len() != tc.layers {
        // An empty prompt captures nothing: every layer's input is empty.
        captured.resize(tc.layers, Vec::new());
    }
    bind(
        replica,
        VlmPromptOutputs {
            positions,
            next_position: next_position as usize,
            cache_keys,
            cache_values,
            normed_inputs: captured,
        },
    )
}
