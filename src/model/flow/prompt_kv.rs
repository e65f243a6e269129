//! `PromptKv`: the per-layer prompt keys and values the replica's image tokens attend to, computed
//! once per prompt and reused at every sampling step (MODEL.md §2), plus the image tokens' RoPE
//! table, which depends only on where the prompt's positions end.
//!
//! This module owns that container and its shape checks; it must not run the VLM (the pipeline's
//! `PromptContext` fills it).

use crate::backend::cpu::ops::RopeTable;
use crate::model::ModelError;

use super::config::FlowConfig;
use super::layer::PromptKvView;
use super::positions::image_rope;

/// Keys `[len, kv_heads·head_dim]` (RoPE applied at the prompt's positions) and values of each
/// replica layer, for one prompt.
#[derive(Clone, Debug)]
pub struct PromptKv {
    len: usize,
    image_start: usize,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    image_rope: RopeTable,
}

impl PromptKv {
    /// Checks one `[len, kv_heads·head_dim]` key and value buffer per replica layer.
    /// `image_start` is the prompt's next free position, where the generated image tokens start:
    /// `len` for a text prompt, less when the prompt holds an image (whose tokens share positions).
    pub fn new(
        config: &FlowConfig,
        len: usize,
        image_start: usize,
        keys: Vec<Vec<f32>>,
        values: Vec<Vec<f32>>,
    ) -> Result<Self, ModelError> {
        let row = config.kv_heads * config.head_dim;
        let bad = |what: String| ModelError::Invalid {
            file: "prompt context".into(),
            what,
        };
        if keys.len() != config.layer_count || values.len() != config.layer_count {
            return Err(bad(format!(
                "{} key and {} value layers for {} replica layers",
                keys.len(),
                values.len(),
                config.layer_count
            )));
        }
        if let Some(l) =
            (0..keys.len()).find(|&l| keys[l].len() != len * row || values[l].len() != len * row)
        {
            return Err(bad(format!(
                "layer {l}: prompt keys/values of {} / {} values, expected {len} × {row}",
                keys[l].len(),
                values[l].len()
            )));
        }
        if image_start > len {
            return Err(bad(format!(
                "image start position {image_start} is past the prompt's {len} tokens"
            )));
        }
        Ok(PromptKv {
            len,
            image_start,
            keys,
            values,
            image_rope: image_rope(config, image_start)?,
        })
    }

    /// Prompt tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first position of the image tokens (the prompt's next free position).
    pub fn image_start(&self) -> usize {
        self.image_start
    }

    /// Layer `l`'s keys and values (`l` < layer count, checked at construction).
    pub fn layer(&self, l: usize) -> PromptKvView<'_> {
        PromptKvView {
            len: self.len,
            keys: &self.keys[l],
            values: &self.values[l],
        }
    }

    /// RoPE of the image tokens placed after this prompt.
    pub fn image_rope(&self) -> &RopeTable {
        &self.image_rope
    }

    /// Bytes held (for the memory summary).
    pub fn bytes(&self) -> usize {
        4 * (self
            .keys
            .iter()
            .chain(&self.values)
            .map(Vec::len)
            .sum::<usize>())
    }
}
