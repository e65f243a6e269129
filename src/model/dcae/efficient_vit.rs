//! diffusers' DC-AE `EfficientViTBlock`: multi-scale linear attention (context mixing), then
//! GLUMBConv (local mixing), each with its own residual connection.

use super::config::NormType;
use super::glumb_conv::GluMbConv;
use super::multiscale_attention::MultiscaleAttention;
use super::scratch::{BufferSizes, DecoderScratch};
use crate::backend::Backend;
use crate::model::{ModelError, ModelFile};

pub struct EfficientVitBlock<'a, B: Backend> {
    attention: MultiscaleAttention<'a, B>,
    conv_out: GluMbConv<'a, B>,
}

impl<'a, B: Backend> EfficientVitBlock<'a, B> {
    /// Host bytes of its convolution weights beyond the file (`None` on overflow).
    pub fn host_weight_bytes(&self) -> Option<u64> {
        self.attention
            .host_weight_bytes()?
            .checked_add(self.conv_out.host_weight_bytes()?)
    }
    /// Loads `{name}.attn` and `{name}.conv_out`.
    pub fn load(
        backend: &'a B,
        file: &'a ModelFile,
        name: &str,
        channels: usize,
        head_dim: usize,
        kernel_sizes: &[usize],
        norm: NormType,
    ) -> Result<Self, ModelError> {
        Ok(EfficientVitBlock {
            attention: MultiscaleAttention::load(
                backend,
                file,
                &format!("{name}.attn"),
                channels,
                head_dim,
                kernel_sizes,
                norm,
            )?,
            conv_out: GluMbConv::load(backend, file, &format!("{name}.conv_out"), channels)?,
        })
    }

    pub fn sizes(&self, hw: [usize; 2]) -> Option<BufferSizes> {
        Some(self.attention.sizes(hw)?.max(self.conv_out.sizes(hw)?))
    }

    pub fn forward(&self, s: &mut DecoderScratch<B>, hw: [usize; 2]) -> Result<(), ModelError> {
        self.attention.forward(s, hw)?;
        self.conv_out.forward(s, hw)
    }
}
