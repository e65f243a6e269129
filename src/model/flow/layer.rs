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
//! The guidance passes go through a layer together: their rows share every product, while RoPE
//! and attention run per pass on that pass's prompt.
//!
//! This module owns one layer's weights and math; it must not choose layers, groups or timesteps.
//! All working memory is the caller's [`LayerScratch`].

use crate::backend::{
    ensure_len, AttentionShape, Backend, BiasMode, DeviceBuffer, GatedScores, Mask, Placement,
    ScoreBlock, Slice, SliceMut, Unary,
};
use crate::model::{Linear, ModelError, ModelFile};

use super::config::{FlowConfig, Tcra};
use super::prompt_kv::PromptKv;

/// The parts of a layer that depend only on the timestep: computed once per evaluation time and
/// shared by the conditional and unconditional passes.
pub struct LayerConditioning<B: Backend> {
    hidden: usize,
    /// `[tanh(a_attn) | shift_ffn | 1 + scale_ffn | tanh(a_ffn)]`, 4·D.
    modulation: B::Buffer,
    /// tanh(tcra_gate(e)), one per query head.
    tcra_gate: B::Buffer,
    heads: usize,
}

impl<B: Backend> Default for LayerConditioning<B> {
    fn default() -> Self {
        LayerConditioning {
            hidden: 0,
            modulation: B::Buffer::default(),
            tcra_gate: B::Buffer::default(),
            heads: 0,
        }
    }
}

impl<B: Backend> LayerConditioning<B> {
    fn part(&self, i: usize) -> Slice<'_, B::Buffer> {
        let d = self.hidden;
        self.modulation.slice(i * d..(i + 1) * d)
    }

    /// tanh(a_attn), [D].
    pub fn attn_gate(&self) -> Slice<'_, B::Buffer> {
        self.part(0)
    }

    pub fn shift_ffn(&self) -> Slice<'_, B::Buffer> {
        self.part(1)
    }

    /// 1 + scale_ffn, [D].
    pub fn scale_ffn(&self) -> Slice<'_, B::Buffer> {
        self.part(2)
    }

    /// tanh(a_ffn), [D].
    pub fn ffn_gate(&self) -> Slice<'_, B::Buffer> {
        self.part(3)
    }

    /// One gate per query head.
    pub fn tcra_gate(&self) -> Slice<'_, B::Buffer> {
        self.tcra_gate.slice(..self.heads)
    }
}

/// The per-layer working buffers of one evaluation, sized for `passes` prompts of `n` image tokens
/// each.
pub struct LayerScratch<B: Backend> {
    x: B::Buffer,
    q: B::Buffer,
    /// The image rows' own keys and values, `[passes·n, kv_heads·head_dim]`, before they join each
    /// pass's prompt keys and values.
    image_keys: B::Buffer,
    image_values: B::Buffer,
    /// One `[p + n, kv_heads·head_dim]` region per pass, one after the other.
    keys: B::Buffer,
    values: B::Buffer,
    attn: B::Buffer,
    proj: B::Buffer,
    gate: B::Buffer,
    up: B::Buffer,
    silu_e: B::Buffer,
}

impl<B: Backend> Default for LayerScratch<B> {
    fn default() -> Self {
        LayerScratch {
            x: Default::default(),
            q: Default::default(),
            image_keys: Default::default(),
            image_values: Default::default(),
            keys: Default::default(),
            values: Default::default(),
            attn: Default::default(),
            proj: Default::default(),
            gate: Default::default(),
            up: Default::default(),
            silu_e: Default::default(),
        }
    }
}

impl<B: Backend> LayerScratch<B> {
    /// Sizes every buffer for `n` image tokens per pass and one pass per prompt length of
    /// `prompt_lens`; later calls with the same or smaller sizes do not allocate.
    pub fn reserve(
        &mut self,
        backend: &B,
        config: &FlowConfig,
        n: usize,
        prompt_lens: impl ExactSizeIterator<Item = usize>,
    ) -> Result<(), ModelError> {
        let d = config.hidden;
        let q = config.heads * config.head_dim;
        let kv = config.kv_heads * config.head_dim;
        let rows = prompt_lens.len() * n;
        let keys: usize = prompt_lens.map(|p| p + n).sum();
        for (buffer, len) in [
            (&mut self.x, rows * d),
            (&mut self.q, rows * q),
            (&mut self.image_keys, rows * kv),
            (&mut self.image_values, rows * kv),
            (&mut self.keys, keys * kv),
            (&mut self.values, keys * kv),
            (&mut self.attn, rows * q),
            (&mut self.proj, rows * d),
            (&mut self.gate, rows * config.ffn_hidden),
            (&mut self.up, rows * config.ffn_hidden),
            (&mut self.silu_e, d),
        ] {
            ensure_len(backend, buffer, len)?;
        }
        Ok(())
    }
}

/// What one pass's image tokens attend to in one layer: the prompt's keys and values
/// (`[len, kv_heads·head_dim]` each, RoPE applied) and the RoPE of image tokens placed after it.
pub struct PromptKvView<'p, B: Backend> {
    pub len: usize,
    pub keys: Slice<'p, B::Buffer>,
    pub values: Slice<'p, B::Buffer>,
    pub image_rope: &'p B::Rope,
}

/// The TCRA residual in and out of one layer: `[H, N, N]` blocks, one per pass, one after the other.
pub struct TcraBlocks<'b, B: Backend> {
    /// The previous layer's blocks, or `None` in a group's first layer.
    pub previous: Option<Slice<'b, B::Buffer>>,
    /// Receives this layer's blocks (biased scores or renormalised probabilities).
    pub current: SliceMut<'b, B::Buffer>,
}

/// One replica layer's weights (`flow.blk.{l}.*`).
pub struct ReplicaLayer<'a, B: Backend> {
    backend: &'a B,
    index: usize,
    kv_heads: usize,
    attn_norm: B::Buffer,
    attn_q: Linear<'a, B>,
    attn_k: Linear<'a, B>,
    attn_v: Linear<'a, B>,
    attn_output: Linear<'a, B>,
    attn_post_norm: B::Buffer,
    ffn_norm: B::Buffer,
    ffn_gate: Linear<'a, B>,
    ffn_up: Linear<'a, B>,
    ffn_down: Linear<'a, B>,
    ffn_post_norm: B::Buffer,
    modulation: Linear<'a, B>,
    tcra_gate: Linear<'a, B>,
}

impl<'a, B: Backend> ReplicaLayer<'a, B> {
    /// Loads layer `index`; its matrices are placed in its expert group (norms and biases, a few
    /// KiB, stay resident with the shared tensors).
    pub fn load(
        backend: &'a B,
        file: &'a ModelFile,
        config: &FlowConfig,
        index: usize,
    ) -> Result<Self, ModelError> {
        let p = format!("flow.blk.{index}.");
        let d = config.hidden;
        let q = config.heads * config.head_dim;
        let kv = config.kv_heads * config.head_dim;
        let f = config.ffn_hidden;
        let placement = Placement::Group(index / config.layers_per_group.max(1));
        let norm = |name: &str| -> Result<B::Buffer, ModelError> {
            let values = file.tensor_f32(&format!("{p}{name}.weight"), &[d as u64])?;
            Ok(backend.upload_owned(values)?)
        };
        let linear = |name: &str, bias: bool, i: usize, o: usize| {
            Linear::load_pair(
                backend,
                file,
                &format!("{p}{name}"),
                bias,
                [i, o],
                placement,
            )
        };
        Ok(ReplicaLayer {
            backend,
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

    /// The matrices of this layer (what its group slot holds).
    pub fn weights(&self) -> impl Iterator<Item = &B::Weight<'a>> {
        [
            &self.attn_q,
            &self.attn_k,
            &self.attn_v,
            &self.attn_output,
            &self.ffn_gate,
            &self.ffn_up,
            &self.ffn_down,
            &self.modulation,
            &self.tcra_gate,
        ]
        .into_iter()
        .map(Linear::weight)
    }

    /// The timestep-dependent gates of this layer from the time embedding `e` (`[D]`).
    pub fn condition(
        &self,
        e: Slice<'_, B::Buffer>,
        out: &mut LayerConditioning<B>,
        scratch: &mut LayerScratch<B>,
    ) -> Result<(), ModelError> {
        let b = self.backend;
        let d = e.len;
        let heads = self.tcra_gate.out_features();
        ensure_len(b, &mut scratch.silu_e, d)?;
        ensure_len(b, &mut out.modulation, 4 * d)?;
        ensure_len(b, &mut out.tcra_gate, heads)?;
        out.hidden = d;
        out.heads = heads;
        let silu_e = &mut scratch.silu_e;
        b.copy(e, silu_e.slice_mut(..d))?;
        b.unary(silu_e.slice_mut(..d), Unary::Silu)?;
        let m = &mut out.modulation;
        self.modulation
            .forward(silu_e.slice(..d), 1, m.slice_mut(..4 * d))?;
        b.unary(m.slice_mut(..d), Unary::Tanh)?;
        b.unary(m.slice_mut(2 * d..3 * d), Unary::Add(1.0))?;
        b.unary(m.slice_mut(3 * d..4 * d), Unary::Tanh)?;
        self.tcra_gate
            .forward(e, 1, out.tcra_gate.slice_mut(..heads))?;
        b.unary(out.tcra_gate.slice_mut(..heads), Unary::Tanh)?;
        Ok(())
    }

    /// `ctx_kv = replica`: this layer's keys (RoPE at the prompt positions) and values of the frozen
    /// VLM layer's normed prompt input `normed` ([len, D]).
    pub fn context_kv(
        &self,
        normed: Slice<'_, B::Buffer>,
        len: usize,
        rope: &B::Rope,
        mut keys: SliceMut<'_, B::Buffer>,
        values: SliceMut<'_, B::Buffer>,
    ) -> Result<(), ModelError> {
        self.attn_k.forward(normed, len, keys.reborrow())?;
        self.backend.rope(keys, self.kv_heads, rope)?;
        self.attn_v.forward(normed, len, values)?;
        Ok(())
    }

    /// Runs the layer in place on `h`, `[passes·n, D]`: `n` image tokens for each of `prompts`, one
    /// pass per prompt, in order. The products, norms and gates run over all rows at once (each
    /// weight is read once for every pass); RoPE and attention run per pass, on that pass's prompt
    /// K/V and TCRA block.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        config: &FlowConfig,
        mut h: SliceMut<'_, B::Buffer>,
        n: usize,
        conditioning: &LayerConditioning<B>,
        prompts: &[&PromptKv<B>],
        mut tcra: TcraBlocks<'_, B>,
        scratch: &mut LayerScratch<B>,
    ) -> Result<(), ModelError> {
        let b = self.backend;
        let d = config.hidden;
        let (heads, kv_heads, head_dim) = (config.heads, config.kv_heads, config.head_dim);
        let q_len = heads * head_dim;
        let kv_len = kv_heads * head_dim;
        let f = config.ffn_hidden;
        let rows = prompts.len() * n;
        scratch.reserve(b, config, n, prompts.iter().map(|p| p.len()))?;
        let s = scratch;
        let eps = config.rms_eps;

        // Attention.
        b.copy(h.as_slice(), s.x.slice_mut(..rows * d))?;
        b.rms_norm(s.x.slice_mut(..rows * d), self.attn_norm.all(), eps)?;
        let x = s.x.slice(..rows * d);
        self.attn_q
            .forward(x, rows, s.q.slice_mut(..rows * q_len))?;
        self.attn_k
            .forward(x, rows, s.image_keys.slice_mut(..rows * kv_len))?;
        self.attn_v
            .forward(x, rows, s.image_values.slice_mut(..rows * kv_len))?;
        let block_len = heads * n * n;
        let mut start = 0;
        for (i, prompt) in prompts.iter().enumerate() {
            let prompt = prompt.layer(self.index);
            let p = prompt.len;
            let (own_q, own_kv) = (
                i * n * q_len..(i + 1) * n * q_len,
                i * n * kv_len..(i + 1) * n * kv_len,
            );
            let (joined, image) = (
                start..start + (p + n) * kv_len,
                start + p * kv_len..start + (p + n) * kv_len,
            );
            start = joined.end;
            b.rope(s.q.slice_mut(own_q.clone()), heads, prompt.image_rope)?;
            if p > 0 {
                b.copy(prompt.keys, s.keys.slice_mut(joined.start..image.start))?;
                b.copy(prompt.values, s.values.slice_mut(joined.start..image.start))?;
            }
            b.copy(
                s.image_keys.slice(own_kv.clone()),
                s.keys.slice_mut(image.clone()),
            )?;
            b.rope(s.keys.slice_mut(image.clone()), kv_heads, prompt.image_rope)?;
            b.copy(s.image_values.slice(own_kv), s.values.slice_mut(image))?;
            let own_block = i * block_len..(i + 1) * block_len;
            let block = tcra_block(
                config.tcra,
                p,
                n,
                conditioning,
                tcra.previous
                    .map(|previous| previous.slice(own_block.clone())),
                tcra.current.slice_mut(own_block),
            );
            b.attention(
                s.q.slice(own_q.clone()),
                s.keys.slice(joined.clone()),
                s.values.slice(joined),
                AttentionShape {
                    n_q: n,
                    n_kv: p + n,
                    n_heads: heads,
                    n_kv_heads: kv_heads,
                    head_dim,
                },
                Mask::None,
                block,
                s.attn.slice_mut(own_q),
            )?;
        }
        self.attn_output.forward(
            s.attn.slice(..rows * q_len),
            rows,
            s.proj.slice_mut(..rows * d),
        )?;
        b.rms_norm(s.proj.slice_mut(..rows * d), self.attn_post_norm.all(), eps)?;
        b.add_gated_rows(
            h.reborrow(),
            s.proj.slice(..rows * d),
            conditioning.attn_gate(),
        )?;

        // Feed-forward.
        b.copy(h.as_slice(), s.x.slice_mut(..rows * d))?;
        b.rms_norm(s.x.slice_mut(..rows * d), self.ffn_norm.all(), eps)?;
        b.modulate_rows(
            s.x.slice_mut(..rows * d),
            conditioning.scale_ffn(),
            conditioning.shift_ffn(),
        )?;
        let x = s.x.slice(..rows * d);
        self.ffn_gate
            .forward(x, rows, s.gate.slice_mut(..rows * f))?;
        self.ffn_up.forward(x, rows, s.up.slice_mut(..rows * f))?;
        b.swiglu(s.gate.slice_mut(..rows * f), s.up.slice(..rows * f))?;
        self.ffn_down
            .forward(s.gate.slice(..rows * f), rows, s.proj.slice_mut(..rows * d))?;
        b.rms_norm(s.proj.slice_mut(..rows * d), self.ffn_post_norm.all(), eps)?;
        b.add_gated_rows(h, s.proj.slice(..rows * d), conditioning.ffn_gate())?;
        Ok(())
    }
}

/// One pass's TCRA block for this layer: columns `p .. p + n` (the image keys) of every image
/// query, gated by the previous layer's block when there is one, read out into `current` for the
/// next layer.
fn tcra_block<'b, B: Backend>(
    tcra: Tcra,
    p: usize,
    n: usize,
    conditioning: &'b LayerConditioning<B>,
    previous: Option<Slice<'b, B::Buffer>>,
    current: SliceMut<'b, B::Buffer>,
) -> Option<ScoreBlock<'b, B::Buffer>> {
    let mode = match tcra {
        Tcra::PreSoftmax => BiasMode::PreSoftmax,
        Tcra::PostSoftmax => BiasMode::PostSoftmax,
        Tcra::None => return None,
    };
    Some(ScoreBlock {
        mode,
        col0: p,
        n_cols: n,
        add: previous.map(|previous| GatedScores {
            previous,
            gate: conditioning.tcra_gate(),
        }),
        readout: Some(current),
    })
}
