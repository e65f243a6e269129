//! `PromptKv`: the per-layer prompt keys and values the replica's image tokens attend to, computed
//! once per prompt and reused at every sampling step (MODEL.md §2), plus the image tokens' RoPE
//! table, which depends only on where the prompt's positions end. Both live on the backend that
//! runs the replica.
//!
//! This module owns that container and its shape checks; it must not run the VLM (the pipeline's
//! `PromptContext` fills it).

use crate::backend::cpu::CpuBackend;
use crate::backend::{Backend, DeviceBuffer};
use crate::model::ModelError;

use super::config::FlowConfig;
use super::layer::PromptKvView;
use super::positions::image_rope;

/// Keys `[len, kv_heads·head_dim]` (RoPE applied at the prompt's positions) and values of each
/// replica layer, for one prompt.
pub struct PromptKv<B: Backend = CpuBackend> {
    len: usize,
    image_start: usize,
    keys: Vec<B::Buffer>,
    values: Vec<B::Buffer>,
    image_rope: B::Rope,
}

impl PromptKv<CpuBackend> {
    /// [`PromptKv::upload`] on the CPU.
    pub fn new(
        config: &FlowConfig,
        len: usize,
        image_start: usize,
        keys: Vec<Vec<f32>>,
        values: Vec<Vec<f32>>,
    ) -> Result<Self, ModelError> {
        Self::upload(
            &crate::backend::cpu::CPU,
            config,
            len,
            image_start,
            keys,
            values,
        )
    }

    /// The same prompt K/V on `backend` (the CPU's vectors move, a GPU's are uploaded).
    pub fn to_backend<B: Backend>(
        self,
        backend: &B,
        config: &FlowConfig,
    ) -> Result<PromptKv<B>, ModelError> {
        PromptKv::upload(
            backend,
            config,
            self.len,
            self.image_start,
            self.keys,
            self.values,
        )
    }
}

impl<B: Backend> PromptKv<B> {
    /// Checks one `[len, kv_heads·head_dim]` key and value buffer per replica layer and moves them
    /// to `backend`. `image_start` is the prompt's next free position, where the generated image
    /// tokens start: `len` for a text prompt, less when the prompt holds an image (whose tokens
    /// share positions).
    pub fn upload(
        backend: &B,
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
        let upload = |layers: Vec<Vec<f32>>| -> Result<Vec<B::Buffer>, ModelError> {
            layers
                .into_iter()
                .map(|v| Ok(backend.upload_owned(v)?))
                .collect()
        };
        Ok(PromptKv {
            len,
            image_start,
            keys: upload(keys)?,
            values: upload(values)?,
            image_rope: backend.rope_table(&image_rope(config, image_start)?)?,
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

    /// Layer `l`'s keys and values and the image RoPE (`l` < layer count, checked at
    /// construction).
    pub fn layer(&self, l: usize) -> PromptKvView<'_, B> {
        PromptKvView {
            len: self.len,
            keys: self.keys[l].all(),
            values: self.values[l].all(),
            image_rope: &self.image_rope,
        }
    }

    /// Bytes held (for the memory summary).
    pub fn bytes(&self) -> usize {
        4 * (self
            .keys
            .iter()
            .chain(&self.values)
            .map(DeviceBuffer::len)
            .sum::<usize>())
    }
}
