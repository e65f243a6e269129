//! What a planned conversion will produce, for `--dry-run` and the final report: sizes per part
//! and per expert group, the tensors that fell back to another type, and the peak memory
//! `latte generate` and `latte describe` are predicted to need with the file.
//!
//! The predictions are arithmetic on tensor sizes, not measurements: weights resident during
//! each phase (the engine maps the file and touches only what a phase needs) plus f32 KV caches.

use super::write::OutputTensor;
use crate::gguf::is_padding_tensor;
use crate::model::expert_groups::GROUP_ALIGNMENT;

/// Context assumed for `latte describe`'s KV cache (image tokens plus question and answer).
pub const DESCRIBE_CONTEXT: u64 = 4096;
/// Prompt length assumed for `latte generate` (conditional and unconditional prompt each).
pub const GENERATE_PROMPT: u64 = 256;

/// KV-cache shape of the text model: layers, KV heads, head dim.
#[derive(Clone, Copy, Debug)]
pub struct KvShape {
    pub layers: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
}

impl KvShape {
    /// f32 K and V for `tokens` tokens over all layers.
    pub fn bytes(&self, tokens: u64) -> u64 {
        2 * self.layers * self.kv_heads * self.head_dim * tokens * 4
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanSummary {
    pub tensors: usize,
    pub total_bytes: u64,
    pub text_bytes: u64,
    pub vision_bytes: u64,
    pub flow_shared_bytes: u64,
    pub dcae_bytes: u64,
    /// Bytes of each expert group.
    pub group_bytes: Vec<u64>,
    /// Predicted peak of `latte describe` (text + vision weights, KV cache).
    pub describe_peak: u64,
    /// Predicted peak of `latte generate`, `None` for an understanding-only model.
    pub generate_peak: Option<u64>,
}

impl PlanSummary {
    pub fn new(tensors: &[OutputTensor], groups: usize, kv: KvShape) -> PlanSummary {
        let mut s = PlanSummary {
            tensors: tensors.len(),
            group_bytes: vec![0; groups],
            ..PlanSummary::default()
        };
        for t in tensors {
            let n = t.n_bytes();
            s.total_bytes += n;
            let name = t.plan.name.as_str();
            if let Some(g) = t.group {
                s.group_bytes[g] += n;
            } else if name.starts_with("flow.") {
                s.flow_shared_bytes += n;
            } else if name.starts_with("dcae.") {
                s.dcae_bytes += n;
            } else if name.starts_with("v.") || name.starts_with("mm.") {
                s.vision_bytes += n;
            } else if !is_padding_tensor(name) {
                s.text_bytes += n;
            }
        }
        // Each group costs up to one boundary of padding in the file.
        s.total_bytes += groups as u64 * GROUP_ALIGNMENT;
        s.describe_peak = s.text_bytes + s.vision_bytes + kv.bytes(DESCRIBE_CONTEXT);
        if groups > 0 {
            let largest = s.group_bytes.iter().copied().max().unwrap_or(0);
            let prompt_kv = kv.bytes(2 * GENERATE_PROMPT);
            // Prefill: the text model runs both prompts. Sampling: shared tensors, the decoder,
            // the active group and the prefetched next one, and the kept prompt K/V.
            let prefill = s.text_bytes + prompt_kv;
            let sampling = s.flow_shared_bytes + s.dcae_bytes + 2 * largest + prompt_kv;
            s.generate_peak = Some(prefill.max(sampling));
        }
        s
    }
}
