//! Qwen2-VL's patch merger: LayerNorm (`v.post_ln`, transformers' `merger.ln_q`) on each patch,
//! each `merge × merge` window's patches (consecutive rows, in the processor's order)
//! concatenated, then `mm.2(GELU(mm.0(·)))` (exact erf GELU) into the text decoder's width.
//!
//! This module owns the merge; it must not run the vision blocks.

use crate::backend::cpu::matmul::MatmulScratch;
use crate::backend::cpu::ops::{gelu_erf, layer_norm};
use crate::model::{Linear, ModelError, ModelFile};

use super::config::VisionConfig;
use super::encoder::invalid;

pub struct PatchMerger<'a> {
    embed: usize,
    merge_count: usize,
    eps: f32,
    norm: (Vec<f32>, Vec<f32>),
    fc1: Linear<'a>,
    fc2: Linear<'a>,
}

impl<'a> PatchMerger<'a> {
    pub fn load(file: &'a ModelFile, config: &VisionConfig) -> Result<Self, ModelError> {
        let e = config.embed as u64;
        let wide = config.embed * config.merge_count();
        Ok(PatchMerger {
            embed: config.embed,
            merge_count: config.merge_count(),
            eps: config.eps,
            norm: (
                file.tensor_f32("v.post_ln.weight", &[e])?,
                file.tensor_f32("v.post_ln.bias", &[e])?,
            ),
            fc1: Linear::load_pair(file, "mm.0", true, wide, wide)?,
            fc2: Linear::load_pair(file, "mm.2", true, wide, config.out_dim)?,
        })
    }

    /// `[patches, E]` → `[patches / merge², out_dim]`.
    pub fn forward(&self, hidden: &[f32]) -> Result<Vec<f32>, ModelError> {
        let group = self.embed * self.merge_count;
        if hidden.is_empty() || hidden.len() % group != 0 {
            return Err(invalid(format!(
                "{} values are not whole windows of {} patches of width {}",
                hidden.len(),
                self.merge_count,
                self.embed
            )));
        }
        let tokens = hidden.len() / group;
        let mut x = hidden.to_vec();
        layer_norm(
            &mut x,
            self.embed,
            Some(&self.norm.0),
            Some(&self.norm.1),
            self.eps,
        )?;
        let mut mid = vec![0f32; tokens * group];
        let mut matmul = MatmulScratch::new();
        self.fc1.forward(&x, tokens, &mut mid, &mut matmul)?;
        gelu_erf(&mut mid);
        let mut out = vec![0f32; tokens * self.fc2.out_features()];
        self.fc2.forward(&mid, tokens, &mut out, &mut matmul)?;
        Ok(out)
    }
}
