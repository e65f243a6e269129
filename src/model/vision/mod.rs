//! The Qwen2-VL vision tower: configuration (`config`), the transformer (`encoder`) and the patch
//! merger (`merger`). `VisionModel::encode` turns the image processor's pixel values into one
//! embedding per merged patch, ready to replace the prompt's `<|image_pad|>` tokens.
//!
//! This module must not decode or resize images (that is `crate::image`) nor build prompts.

pub mod config;
pub mod encoder;
pub mod merger;

pub use config::{VisionActivation, VisionConfig};
pub use encoder::VisionEncoder;
pub use merger::PatchMerger;

use crate::backend::cpu::CpuBackend;
use crate::backend::Backend;
use crate::image::PixelValues;
use crate::model::positions::MergedGrid;
use crate::model::{ModelError, ModelFile};

/// What the tower gives for one image.
pub struct VisionOutput {
    /// Before the merger, `[patches, E]`.
    pub hidden: Vec<f32>,
    /// After the merger, `[tokens, out_dim]`.
    pub embeddings: Vec<f32>,
    /// The merged grid `[t, h/merge, w/merge]` (for M-RoPE positions).
    pub merged_grid: MergedGrid,
}

impl VisionOutput {
    pub fn n_tokens(&self) -> usize {
        self.merged_grid.iter().product()
    }
}

pub struct VisionModel<'a, B: Backend = CpuBackend> {
    config: VisionConfig,
    encoder: VisionEncoder<'a, B>,
    merger: PatchMerger<'a, B>,
}

impl<'a> VisionModel<'a, CpuBackend> {
    /// [`VisionModel::load_on`] the CPU.
    pub fn load(file: &'a ModelFile) -> Result<Self, ModelError> {
        Self::load_on(&crate::backend::cpu::CPU, file)
    }
}

impl<'a, B: Backend> VisionModel<'a, B> {
    pub fn load_on(backend: &'a B, file: &'a ModelFile) -> Result<Self, ModelError> {
        let config = VisionConfig::from_file(file)?;
        Ok(VisionModel {
            encoder: VisionEncoder::load(backend, file, &config)?,
            merger: PatchMerger::load(backend, file, &config)?,
            config,
        })
    }

    pub fn config(&self) -> &VisionConfig {
        &self.config
    }

    pub fn encode(&self, pixels: &PixelValues) -> Result<VisionOutput, ModelError> {
        let hidden = self.encoder.forward(&pixels.values, pixels.grid)?;
        let embeddings = self.merger.forward(&hidden)?;
        let m = self.config.preprocess.merge_size;
        let [t, h, w] = pixels.grid;
        Ok(VisionOutput {
            hidden,
            embeddings,
            merged_grid: [t, h / m, w / m],
        })
    }
}
