//! One replica block (MODEL.md §4–§5, tools/reference/README.md "Replica layer"):
//!
//! ```text
//! a_attn, shift_ffn, scale_ffn, a_ffn = chunk4(modulation(SiLU(e)));  g = tanh(tcra_gate(e))
//! x = attn_norm(h);  q, k, v from x (RoPE on q, k);  K = [prompt K; k], V = [prompt V; v]
//! S = q Kᵀ/√dh;  TCRA on the image-image block with g ⊙ B_prev (pre or post softmax)
//! h += tanh(a_attn) ⊙ attn_post_norm(o_proj(softmax(S) V))
//! x = ffn_norm(h) ⊙ (1 + scale_ffn) + shift_ffn
//! h += tanh(a_ffn) ⊙ ffn_post_norm(down(SiLU(gate(x)) ⊙ up(x)))
//! ```
//!
//! This module owns one layer's weights and math; it must not choose layers, groups or timesteps.
//! All working memory is the caller's [`LayerScratch`].

use crate::backend::cpu::matmul::MatmulScratch;
use crate::backend::cpu::ops::{
    attention, rms_norm, rope_neox, silu, swiglu, AttentionScratch, AttentionShape, BiasMode,
    BlockBias, Mask, RopeTable,
};
use crate::model::{Linear, ModelError, ModelFile};

use super::config::{FlowConfig, Tcra};

/// The parts of a layer that depend only on the timestep: computed once per evaluation time and
/// shared by the conditional and unconditional passes.
#[derive(Clone, Debug, Default)]
pub struct LayerConditioning {
    /// tanh(a_attn), [D].
    pub attn_gate: Vec<f32>,
    pub shift_ffn: Vec<f32>,
    /// 1 + scale_ffn, [D].
    pub scale_ffn: Vec<f32>,
    /// tanh(a_ffn), [D].
    pub ffn_gate: Vec<f32>,
    /// tanh(tcra_gate(e)), one per query head.
    pub tcra_gate: Vec<f32>,
}

/// One pass's per-layer working buffers, sized for `n` image tokens and a prompt of up to `p` tokens.
#[derive(Default)]
pub struct LayerScratch {
    x: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    keys: Vec<f32>,
    values: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    bias: Vec<f32>,
    modulation: Vec<f32>,
    silu_e: Vec<f32>,
    pub(crate) matmul: MatmulScratch,
    attention: AttentionScratch,
}

fn ensure(buffer: &mut Vec<f32>, len: usize) {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
}

impl LayerScratch {
    /// Sizes every buffer for `n` image tokens and prompts of up to `prompt_len` tokens; later calls
    /// with the same or smaller sizes do not allocate.
    pub fn reserve(&mut self, config: &FlowConfig, n: usize, prompt_len: usize) {
        let d = config.hidden;
        let q = config.heads * config.head_dim;
        let kv = config.kv_heads * config.head_dim;
        ensure(&mut self.x, n * d);
        ensure(&mut self.q, n * q);
        ensure(&mut self.k, n * kv);
        ensure(&mut self.v, n * kv);
        ensure(&mut self.keys, (prompt_len + n) * kv);
        ensure(&mut self.values, (prompt_len + n) * kv);
        ensure(&mut self.attn, n * q);
        ensure(&mut self.proj, n * d);
        ensure(&mut self.gate, n * config.ffn_hidden);
        ensure(&mut self.up, n * config.ffn_hidden);
        ensure(&mut self.bias, config.heads * n * n);
        ensure(&mut self.modulation, 4 * d);
        ensure(&mut self.silu_e, d);
    }
}

/// The prompt keys and values one layer attends to: `[len, kv_heads·head_dim]` each, RoPE applied.
#[derive(Clone, Copy, Debug)]
pub struct PromptKvView<'p> {
    pub len: usize,
    pub keys: &'p [f32],
    pub values: &'p [f32],
}

/// The TCRA residual in and out of one layer: `[H, N, N]` blocks.
pub struct TcraBlocks<'b> {
    /// The previous layer's block, or `None` in a group's first layer.
    pub previous: Option<&'b [f32]>,
    /// Receives this layer's block (biased scores or renormalised probabilities).
    pub current: &'b mut [f32],
}

/// One replica layer's weights (`flow.blk.{l}.*`).
pub struct ReplicaLayer<'a> {
    index: usize,
    kv_heads: usize,
    attn_norm: Vec<f32>,
    attn_q: Linear<'a>,
    attn_k: Linear<'a>,
    attn_v: Linear<'a>,
    attn_output: Linear<'a>,
    attn_post_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    ffn_gate: Linear<'a>,
    ffn_up: Linear<'a>,
    ffn_down: Linear<'a>,
    ffn_post_norm: Vec<f32>,
    modulation: Linear<'a>,
    tcra_gate: Linear<'a>,
}

impl<'a> ReplicaLayer<'a> {
    pub fn load(
        file: &'a ModelFile,
        config: &FlowConfig,
        index: usize,
    ) -> Result<Self, ModelError> {
        let p = format!("flow.blk.{index}.");
        let d = config.hidden;
        let q = config.heads * config.head_dim;
        let kv = config.kv_heads * config.head_dim;
        let f = config.ffn_hidden;
        let norm = |name: &str| file.tensor_f32(&format!("{p}{name}.weight"), &[d as u64]);
        let linear = |name: &str, bias: bool, i: usize, o: usize| {
            Linear::load_pair(file, &format!("{p}{name}"), bias, i, o)
        };
        Ok(ReplicaLayer {
            index,
            kv_heads: config.kv_heads,
            attn_norm: norm("attn_norm")?,
            attn_q: linear("attn_q", true, d, q)?,
            attn_k: linear("attn_k", true, d, kv)?,
            attn_v: linear("attn_v", true, d, kv)?,
            attn_output: linear("attn_output", false, q, d)?,
            attn_post_norm: norm("attn_post_norm")?,
            ffn_norm: norm("ffn_norm")?,
            ffn_gate: linear("ffn_gate", false, d, f)?,
            ffn_up: linear("ffn_up", false, d, f)?,
            ffn_down: linear("ffn_down", false, f, d)?,
            ffn_post_norm: norm("ffn_post_norm")?,
            modulation: linear("modulation", true, d, 4 * d)?,
            tcra_gate: linear("tcra_gate", true, d, config.heads)?,
        })
    }

    pub fn index(&self) -> usize {
        self.index
    }

    /// The timestep-dependent gates of this layer from the time embedding `e`.
    pub fn condition(
        &self,
        e: &[f32],
        out: &mut LayerConditioning,
        scratch: &mut LayerScratch,
    ) -> Result<(), ModelError> {
        let d = e.len();
        let heads = self.tcra_gate.out_features();
        ensure(&mut scratch.silu_e, d);
        ensure(&mut scratch.modulation, 4 * d);
        let silu_e = &mut scratch.silu_e[..d];
        silu_e.copy_from_slice(e);
        silu(silu_e);
        let modulation = &mut scratch.modulation[..4 * d];
        self.modulation
            .forward(silu_e, 1, modulation, &mut scratch.matmul)?;
        let (a_attn, rest) = modulation.split_at(d);
        let (shift, rest) = rest.split_at(d);
        let (scale, a_ffn) = rest.split_at(d);
        fill(&mut out.attn_gate, a_attn.iter().map(|a| a.tanh()));
        fill(&mut out.shift_ffn, shift.iter().copied());
        fill(&mut out.scale_ffn, scale.iter().map(|s| 1.0 + s));
        fill(&mut out.ffn_gate, a_ffn.iter().map(|a| a.tanh()));
        out.tcra_gate.resize(heads, 0.0);
        self.tcra_gate
            .forward(e, 1, &mut out.tcra_gate, &mut scratch.matmul)?;
        out.tcra_gate.iter_mut().for_each(|g| *g = g.tanh());
        Ok(())
    }

    /// `ctx_kv = replica`: this layer's keys (RoPE at the prompt positions) and values of the frozen
    /// VLM layer's normed prompt input `normed` ([len, D]).
    pub fn context_kv(
        &self,
        normed: &[f32],
        len: usize,
        rope: &RopeTable,
        keys: &mut [f32],
        values: &mut [f32],
        scratch: &mut MatmulScratch,
    ) -> Result<(), ModelError> {
        self.attn_k.forward(normed, len, keys, scratch)?;
        rope_neox(keys, self.kv_heads, rope)?;
        self.attn_v.forward(normed, len, values, scratch)?;
        Ok(())
    }

    /// Runs the layer on `h` ([n, D] image tokens) in place.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        config: &FlowConfig,
        h: &mut [f32],
        n: usize,
        conditioning: &LayerConditioning,
        prompt: PromptKvView<'_>,
        image_rope: &RopeTable,
        tcra: TcraBlocks<'_>,
        scratch: &mut LayerScratch,
    ) -> Result<(), ModelError> {
        let d = config.hidden;
        let (heads, kv_heads, head_dim) = (config.heads, config.kv_heads, config.head_dim);
        let q_len = heads * head_dim;
        let kv_len = kv_heads * head_dim;
        let f = config.ffn_hidden;
        let p = prompt.len;
        scratch.reserve(config, n, p);
        let s = scratch;

        // Attention.
        let x = &mut s.x[..n * d];
        x.copy_from_slice(h);
        rms_norm(x, &self.attn_norm, config.rms_eps)?;
        let q = &mut s.q[..n * q_len];
        self.attn_q.forward(x, n, q, &mut s.matmul)?;
        rope_neox(q, heads, image_rope)?;
        let keys = &mut s.keys[..(p + n) * kv_len];
        let values = &mut s.values[..(p + n) * kv_len];
        keys[..p * kv_len].copy_from_slice(prompt.keys);
        values[..p * kv_len].copy_from_slice(prompt.values);
        self.attn_k
            .forward(x, n, &mut keys[p * kv_len..], &mut s.matmul)?;
        rope_neox(&mut keys[p * kv_len..], kv_heads, image_rope)?;
        self.attn_v
            .forward(x, n, &mut values[p * kv_len..], &mut s.matmul)?;

        let block_len = heads * n * n;
        let add = match (config.tcra, tcra.previous) {
            (Tcra::None, _) | (_, None) => None,
            (_, Some(previous)) => {
                let bias = &mut s.bias[..block_len];
                for (head, (out, prev)) in bias
                    .chunks_exact_mut(n * n)
                    .zip(previous.chunks_exact(n * n))
                    .enumerate()
                {
                    let g = conditioning.tcra_gate[head];
                    out.iter_mut().zip(prev).for_each(|(o, &b)| *o = g * b);
                }
                Some(&s.bias[..block_len])
            }
        };
        let mode = match config.tcra {
            Tcra::PreSoftmax => Some(BiasMode::PreSoftmax),
            Tcra::PostSoftmax => Some(BiasMode::PostSoftmax),
            Tcra::None => None,
        };
        let bias = mode.map(|mode| BlockBias {
            mode,
            col0: p,
            n_cols: n,
            add,
            readout: Some(&mut tcra.current[..block_len]),
        });
        let attn = &mut s.attn[..n * q_len];
        attention(
            q,
            keys,
            values,
            AttentionShape {
                n_q: n,
                n_kv: p + n,
                n_heads: heads,
                n_kv_heads: kv_heads,
                head_dim,
            },
            None,
            Mask::None,
            bias,
            attn,
            &mut s.attention,
        )?;
        let proj = &mut s.proj[..n * d];
        self.attn_output.forward(attn, n, proj, &mut s.matmul)?;
        rms_norm(proj, &self.attn_post_norm, config.rms_eps)?;
        add_gated(h, proj, &conditioning.attn_gate);

        // Feed-forward.
        let x = &mut s.x[..n * d];
        x.copy_from_slice(h);
        rms_norm(x, &self.ffn_norm, config.rms_eps)?;
        for row in x.chunks_exact_mut(d) {
            for ((v, scale), shift) in row
                .iter_mut()
                .zip(&conditioning.scale_ffn)
                .zip(&conditioning.shift_ffn)
            {
                *v = *v * scale + shift;
            }
        }
        let gate = &mut s.gate[..n * f];
        let up = &mut s.up[..n * f];
        self.ffn_gate.forward(x, n, gate, &mut s.matmul)?;
        self.ffn_up.forward(x, n, up, &mut s.matmul)?;
        swiglu(gate, up)?;
        self.ffn_down.forward(gate, n, proj, &mut s.matmul)?;
        rms_norm(proj, &self.ffn_post_norm, config.rms_eps)?;
        add_gated(h, proj, &conditioning.ffn_gate);
        Ok(())
    }
}

/// `h[i, :] += gate ⊙ delta[i, :]` for every token row.
fn add_gated(h: &mut [f32], delta: &[f32], gate: &[f32]) {
    for (row, delta) in h
        .chunks_exact_mut(gate.len())
        .zip(delta.chunks_exact(gate.len()))
    {
        for ((v, dv), g) in row.iter_mut().zip(delta).zip(gate) {
            *v += g * dv;
        }
    }
}

fn fill(out: &mut Vec<f32>, values: impl Iterator<Item = f32>) {
    out.clear();
    out.extend(values);
}
