//! Qwen2-VL's patch merger: LayerNorm (`v.post_ln`, transformers' `merger.ln_q`) on each patch,
//! each `merge × merge` window's patches (consecutive rows, in the processor's order)
//! concatenated, then `mm.2(GELU(mm.0(·)))` (exact erf GELU) into the text decoder's width.
//!
//! This module owns the merge; it must not run the vision blocks.

use crate::backend::{Backend, DeviceBuffer, Placement, Unary};
use crate::model::{Linear, ModelError, ModelFile};

use super::config::VisionConfig;
use super::encoder::{invalid, load_norm};

pub struct PatchMerger<'a, B: Backend> {
    backend: &'a B,
    embed: usize,
    merge_count: usize,
    eps: f32,
    norm: (B::Buffer, B::Buffer),
    fc1: Linear<'a, B>,
    fc2: Linear<'a, B>,
}

impl<'a, B: Backend> PatchMerger<'a, B> {
    pub fn load(
        backend: &'a B,
        file: &'a ModelFile,
        config: &VisionConfig,
    ) -> Result<Self, ModelError> {
        let wide = config.embed * config.merge_count();
        let linear = |name: &str, shape: [usize; 2]| {
            Linear::load_pair(backend, file, name, true, shape, Placement::Shared)
        };
        Ok(PatchMerger {
            backend,
            embed: config.embed,
            merge_count: config.merge_count(),
            eps: config.eps,
            norm: load_norm(backend, file, "v.post_ln", config.embed)?,
            fc1: linear("mm.0", [wide, wide])?,
            fc2: linear("mm.2", [wide, config.out_dim])?,
        })
    }

    /// `[patches, E]` → `[patches / merge², out_dim]`.
    pub fn forward(&self, hidden: &[f32]) -> Result<Vec<f32>, ModelError> {
        let b = self.backend;
        let group = self.embed * self.merge_count;
        if hidden.is_empty() || !hidden.len().is_multiple_of(group) {
            return Err(invalid(format!(
                "{} values are not whole windows of {} patches of width {}",
                hidden.len(),
                self.merge_count,
                self.embed
            )));
        }
        let tokens = hidden.len() / group;
        let mut x = b.upload(hidden)?;
        b.layer_norm(
            x.all_mut(),
            self.embed,
            Some(self.norm.0.all()),
            Some(self.norm.1.all()),
            self.eps,
        )?;
        let mut mid = b.alloc(tokens * group)?;
        self.fc1.forward(x.all(), tokens, mid.all_mut())?;
        b.unary(mid.all_mut(), Unary::GeluErf)?;
        let mut out = b.alloc(tokens * self.fc2.out_features())?;
        self.fc2.forward(mid.all(), tokens, out.all_mut())?;
        Ok(b.read_vec(out.all())?)
    }
}
