//! `TextConfig`: the shape of the Qwen2-VL text decoder, read from the `qwen2vl.*` keys (llama.cpp's
//! names) and the embedding tensor.
//!
//! This module owns reading and validating those numbers; it must not load weights.

use crate::model::{ModelError, ModelFile};

/// Sizes and constants of the decoder (Qwen2-VL-2B: 1536, 28, 12, 2, 128, 8960, 1e-6, 1e6,
/// [16, 24, 24], 151936, tied).
#[derive(Clone, Debug, PartialEq)]
pub struct TextConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub eps: f32,
    pub rope_theta: f32,
    /// M-RoPE sections `[t, h, w]` in frequencies; they add up to `head_dim / 2`.
    pub mrope_sections: [usize; 3],
    pub vocab: usize,
    /// The output head is the embedding matrix (no `output.weight`).
    pub tied: bool,
    /// The trained context length (`qwen2vl.context_length`), the default KV-cache size.
    pub context_length: usize,
}

const ARCH: &str = "qwen2vl";

impl TextConfig {
    pub fn from_file(file: &ModelFile) -> Result<Self, ModelError> {
        let key = |k: &str| format!("{ARCH}.{k}");
        let hidden = file.usize(&key("embedding_length"))?;
        let heads = file.usize(&key("attention.head_count"))?;
        let kv_heads = file.usize(&key("attention.head_count_kv"))?;
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(file.invalid(format!(
                "{heads} attention heads are not a positive multiple of {kv_heads} KV heads"
            )));
        }
        let head_dim = match file.get(&key("attention.key_length")) {
            Some(_) => file.usize(&key("attention.key_length"))?,
            None => hidden / heads,
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(file.invalid(format!("head dimension {head_dim} must be even")));
        }
        let sections = file.i64_array(&key("rope.dimension_sections"))?;
        let mrope_sections = match sections.as_slice() {
            [t, h, w, rest @ ..] if rest.iter().all(|&x| x == 0) => {
                let s = [*t, *h, *w].map(|x| usize::try_from(x).unwrap_or(usize::MAX));
                if s.iter().try_fold(0usize, |a, &x| a.checked_add(x)) != Some(head_dim / 2) {
                    return Err(file.invalid(format!(
                        "M-RoPE sections {sections:?} must add up to head_dim/2 = {}",
                        head_dim / 2
                    )));
                }
                s
            }
            _ => {
                return Err(file.invalid(format!(
                    "'{}' should be [t, h, w] (then zeros), got {sections:?}",
                    key("rope.dimension_sections")
                )))
            }
        };
        let vocab = match file.tensor_dims("token_embd.weight")? {
            [d, v] if *d as usize == hidden => *v as usize,
            dims => {
                return Err(ModelError::TensorShape {
                    file: file.name().into(),
                    name: "token_embd.weight".into(),
                    expected: vec![hidden as u64, 0],
                    got: dims.to_vec(),
                })
            }
        };
        // llama.cpp's files carry no latte key: there the absence of `output.weight` means tied.
        let tied = match file.get("latte.tie_word_embeddings") {
            Some(_) => file.bool("latte.tie_word_embeddings")?,
            None => !file.has_tensor("output.weight"),
        };
        let config = TextConfig {
            hidden,
            layers: file.usize(&key("block_count"))?,
            heads,
            kv_heads,
            head_dim,
            ffn: file.usize(&key("feed_forward_length"))?,
            eps: file.f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: file.f32(&key("rope.freq_base"))?,
            mrope_sections,
            vocab,
            tied,
            context_length: file.usize(&key("context_length"))?,
        };
        if config.layers == 0 || config.ffn == 0 || config.hidden == 0 || config.vocab == 0 {
            return Err(file.invalid(format!("degenerate text decoder: {config:?}")));
        }
        if !(config.rope_theta.is_finite()
            && config.rope_theta > 0.0
            && config.eps.is_finite()
            && config.eps >= 0.0)
        {
            return Err(file.invalid(format!(
                "{} {} must be positive and {} {} at least 0",
                key("rope.freq_base"),
                config.rope_theta,
                key("attention.layer_norm_rms_epsilon"),
                config.eps
            )));
        }
        Ok(config)
    }

    /// Values per token of all query heads.
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Values per token of all key (or value) heads: one row of the KV cache.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}
