//! `TextModel`: the Qwen2-VL text decoder (Qwen2 layers with M-RoPE) over a preallocated KV cache:
//! token embeddings, a causal forward pass for any number of new tokens (batched prefill, or one
//! token per decode step) and the output head.
//!
//! Per layer, as transformers' `Qwen2VLDecoderLayer`:
//! ```text
//! x = rms_norm(h);  q, k, v = x·Wqᵀ + bq, x·Wkᵀ + bk, x·Wvᵀ + bv;  q, k = mrope(q), mrope(k)
//! h = h + o_proj(attention(q, [cache k; k], [cache v; v], causal, GQA))
//! h = h + down(silu(gate(rms_norm(h))) ⊙ up(rms_norm(h)))
//! ```
//! then `logits = rms_norm(h)·Wᵀ` with `W` = `output.weight`, or the embedding matrix when tied.
//!
//! This module owns the decoder math; it must not decide positions (`model::positions`), build
//! prompts or sample (pipelines do).

use crate::backend::cpu::ops::rope::{inv_freqs, RopeTable};
use crate::backend::cpu::{CpuBackend, CPU};
use crate::backend::{ensure_len, AttentionShape, Backend, DeviceBuffer, Mask, Placement};
use crate::model::{Linear, ModelError, ModelFile};
use crate::tensor::TensorView;

use super::config::TextConfig;
use super::kv_cache::KvCache;

/// Which logits a forward pass computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// None (filling the cache only, e.g. prompt K/V for generation).
    None,
    /// The last new token's `[vocab]` (prefill before decoding, every decode step).
    Last,
    /// Every new token's, `[n, vocab]` (parity tests, scoring).
    All,
}

struct DecoderLayer<'a, B: Backend> {
    attn_norm: B::Buffer,
    q: Linear<'a, B>,
    k: Linear<'a, B>,
    v: Linear<'a, B>,
    output: Linear<'a, B>,
    ffn_norm: B::Buffer,
    gate: Linear<'a, B>,
    up: Linear<'a, B>,
    down: Linear<'a, B>,
}

impl<'a, B: Backend> DecoderLayer<'a, B> {
    fn load(
        backend: &'a B,
        file: &'a ModelFile,
        c: &TextConfig,
        l: usize,
    ) -> Result<Self, ModelError> {
        let name = |part: &str| format!("blk.{l}.{part}");
        let d = c.hidden as u64;
        let norm = |part: &str| -> Result<B::Buffer, ModelError> {
            Ok(backend.upload_owned(file.tensor_f32(&name(part), &[d])?)?)
        };
        let linear = |part: &str, bias: bool, shape: [usize; 2]| {
            Linear::load_pair(backend, file, &name(part), bias, shape, Placement::Shared)
        };
        Ok(DecoderLayer {
            attn_norm: norm("attn_norm.weight")?,
            q: linear("attn_q", true, [c.hidden, c.q_dim()])?,
            k: linear("attn_k", true, [c.hidden, c.kv_dim()])?,
            v: linear("attn_v", true, [c.hidden, c.kv_dim()])?,
            output: linear("attn_output", false, [c.q_dim(), c.hidden])?,
            ffn_norm: norm("ffn_norm.weight")?,
            gate: linear("ffn_gate", false, [c.hidden, c.ffn])?,
            up: linear("ffn_up", false, [c.hidden, c.ffn])?,
            down: linear("ffn_down", false, [c.ffn, c.hidden])?,
        })
    }
}

/// The decoder's weights on backend `B` (the embedding matrix stays a view of the mapped file:
/// a prompt reads only its tokens' rows).
pub struct TextModel<'a, B: Backend = CpuBackend> {
    backend: &'a B,
    file: &'a ModelFile,
    config: TextConfig,
    embedding: TensorView<'a>,
    layers: Vec<DecoderLayer<'a, B>>,
    output_norm: B::Buffer,
    head: Linear<'a, B>,
    inv_freq: Vec<f32>,
}

/// Working memory of a forward pass. It grows to the largest number of new tokens it has seen and
/// is then reused, so decoding one token after another allocates nothing.
pub struct TextScratch<B: Backend = CpuBackend> {
    tokens: usize,
    hidden: B::Buffer,
    normed: B::Buffer,
    q: B::Buffer,
    attn: B::Buffer,
    proj: B::Buffer,
    gate: B::Buffer,
    up: B::Buffer,
    logits: B::Buffer,
    rope_host: Option<RopeTable>,
    rope: Option<B::Rope>,
}

impl<B: Backend> Default for TextScratch<B> {
    fn default() -> Self {
        TextScratch {
            tokens: 0,
            hidden: Default::default(),
            normed: Default::default(),
            q: Default::default(),
            attn: Default::default(),
            proj: Default::default(),
            gate: Default::default(),
            up: Default::default(),
            logits: Default::default(),
            rope_host: None,
            rope: None,
        }
    }
}

impl TextScratch<CpuBackend> {
    pub fn new() -> Self {
        Self::default()
    }

    /// [`TextScratch::with_capacity_on`] the CPU.
    pub fn with_capacity(config: &TextConfig, tokens: usize, context: usize) -> Self {
        // Sizing up front is an optimisation: a failure here only means the first call grows.
        Self::with_capacity_on(&CPU, config, tokens, context).unwrap_or_default()
    }
}

impl<B: Backend> TextScratch<B> {
    /// Scratch already sized for `tokens` new tokens per call with a cache of `context` tokens
    /// (the backend's attention working memory included).
    pub fn with_capacity_on(
        backend: &B,
        config: &TextConfig,
        tokens: usize,
        context: usize,
    ) -> Result<Self, ModelError> {
        let mut s = Self::default();
        s.reserve(backend, config, tokens, 1)?;
        backend.reserve_attention(AttentionShape {
            n_q: tokens,
            n_kv: context,
            n_heads: config.heads,
            n_kv_heads: config.kv_heads,
            head_dim: config.head_dim,
        })?;
        Ok(s)
    }

    fn reserve(
        &mut self,
        backend: &B,
        c: &TextConfig,
        n: usize,
        logit_rows: usize,
    ) -> Result<(), ModelError> {
        ensure_len(backend, &mut self.logits, logit_rows * c.vocab)?;
        if n <= self.tokens {
            return Ok(());
        }
        for (buffer, len) in [
            (&mut self.hidden, n * c.hidden),
            (&mut self.normed, n * c.hidden),
            (&mut self.q, n * c.q_dim()),
            (&mut self.attn, n * c.q_dim()),
            (&mut self.proj, n * c.hidden),
            (&mut self.gate, n * c.ffn),
            (&mut self.up, n * c.ffn),
        ] {
            ensure_len(backend, buffer, len)?;
        }
        self.tokens = n;
        Ok(())
    }
}

impl<'a> TextModel<'a, CpuBackend> {
    /// [`TextModel::load_on`] the CPU.
    pub fn load(file: &'a ModelFile) -> Result<Self, ModelError> {
        Self::load_on(&CPU, file)
    }
}

impl<'a, B: Backend> TextModel<'a, B> {
    pub fn load_on(backend: &'a B, file: &'a ModelFile) -> Result<Self, ModelError> {
        let config = TextConfig::from_file(file)?;
        let embedding = file.tensor_with_dims(
            "token_embd.weight",
            &[config.hidden as u64, config.vocab as u64],
        )?;
        let layers = (0..config.layers)
            .map(|l| DecoderLayer::load(backend, file, &config, l))
            .collect::<Result<Vec<_>, _>>()?;
        let output_norm = backend
            .upload_owned(file.tensor_f32("output_norm.weight", &[config.hidden as u64])?)?;
        let head_name = if config.tied {
            "token_embd.weight"
        } else {
            "output.weight"
        };
        let head = Linear::load(
            backend,
            file,
            head_name,
            None,
            [config.hidden, config.vocab],
            Placement::Shared,
        )?;
        let inv_freq = inv_freqs(config.head_dim, config.rope_theta)?;
        Ok(TextModel {
            backend,
            file,
            config,
            embedding,
            layers,
            output_norm,
            head,
            inv_freq,
        })
    }

    pub fn config(&self) -> &TextConfig {
        &self.config
    }

    pub fn backend(&self) -> &'a B {
        self.backend
    }

    /// Writes the embedding rows of `ids` into `out` (`[ids.len(), hidden]`).
    pub fn embed_tokens(&self, ids: &[u32], out: &mut [f32]) -> Result<(), ModelError> {
        let d = self.config.hidden;
        if out.len() != ids.len() * d {
            return Err(self.file.invalid(format!(
                "embed_tokens: {} ids need {} output values, got {}",
                ids.len(),
                ids.len() * d,
                out.len()
            )));
        }
        for (&id, row) in ids.iter().zip(out.chunks_exact_mut(d)) {
            if id as usize >= self.config.vocab {
                return Err(self.file.invalid(format!(
                    "token id {id} is outside the vocabulary of {}",
                    self.config.vocab
                )));
            }
            crate::quant::dequantize(self.embedding.ty(), self.embedding.row(id as usize), row)
                .map_err(|source| ModelError::TensorData {
                    file: self.file.name().into(),
                    name: "token_embd.weight".into(),
                    cause: source,
                })?;
        }
        Ok(())
    }

    /// Runs `embeddings` (`[n, hidden]`, host) at `positions` (`[t, h, w]` per token) after the
    /// tokens already in `cache`, causally, and appends their keys and values to it.
    ///
    /// `capture`, when given, receives every layer's `input_layernorm` output rows of these tokens
    /// (`capture[l]` gets `n · hidden` values appended; the vector is extended to one entry per
    /// layer). `out` receives the logits that `logits` asks for (`[vocab]` or `[n, vocab]`; left
    /// empty for [`Logits::None`]).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        embeddings: &[f32],
        positions: &[[u32; 3]],
        cache: &mut KvCache<B>,
        scratch: &mut TextScratch<B>,
        mut capture: Option<&mut Vec<Vec<f32>>>,
        logits: Logits,
        out: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let b = self.backend;
        let c = &self.config;
        let n = positions.len();
        let d = c.hidden;
        if embeddings.len() != n * d {
            return Err(self.file.invalid(format!(
                "text forward: {n} positions need {} embedding values, got {}",
                n * d,
                embeddings.len()
            )));
        }
        if cache.n_layers() != c.layers || cache.kv_dim() != c.kv_dim() {
            return Err(self
                .file
                .invalid("text forward: the KV cache was made for another decoder configuration"));
        }
        cache.check_room(n)?;
        out.clear();
        if n == 0 {
            return Ok(());
        }
        let logit_rows = match logits {
            Logits::None => 0,
            Logits::Last => 1,
            Logits::All => n,
        };
        let s = scratch;
        s.reserve(b, c, n, logit_rows)?;
        let past = cache.len();
        let total = past + n;
        let (q_dim, kv_dim) = (c.q_dim(), c.kv_dim());

        match s.rope_host.as_mut() {
            Some(table) => table.set_mrope(positions, &self.inv_freq, c.mrope_sections)?,
            None => {
                s.rope_host = Some(RopeTable::mrope(
                    positions,
                    &self.inv_freq,
                    c.mrope_sections,
                )?)
            }
        }
        let host_rope = s
            .rope_host
            .as_ref()
            .ok_or_else(|| self.file.invalid("text forward: no rotary table"))?;
        match s.rope.as_mut() {
            Some(rope) => b.set_rope_table(rope, host_rope)?,
            None => s.rope = Some(b.rope_table(host_rope)?),
        }
        let rope = s
            .rope
            .as_ref()
            .ok_or_else(|| self.file.invalid("text forward: no rotary table"))?;

        b.write(s.hidden.slice_mut(..n * d), embeddings)?;
        if let Some(capture) = capture.as_deref_mut() {
            capture.resize_with(c.layers, Vec::new);
        }
        let shape = AttentionShape {
            n_q: n,
            n_kv: total,
            n_heads: c.heads,
            n_kv_heads: c.kv_heads,
            head_dim: c.head_dim,
        };
        for (l, layer) in self.layers.iter().enumerate() {
            b.copy(s.hidden.slice(..n * d), s.normed.slice_mut(..n * d))?;
            b.rms_norm(s.normed.slice_mut(..n * d), layer.attn_norm.all(), c.eps)?;
            if let Some(capture) = capture.as_deref_mut() {
                let row = &mut capture[l];
                let at = row.len();
                row.resize(at + n * d, 0.0);
                b.read(s.normed.slice(..n * d), &mut row[at..])?;
            }
            let normed = s.normed.slice(..n * d);
            layer.q.forward(normed, n, s.q.slice_mut(..n * q_dim))?;
            b.rope(s.q.slice_mut(..n * q_dim), c.heads, rope)?;
            let (keys, values) = cache
                .layer_storage_mut(l)
                .ok_or_else(|| self.file.invalid("text forward: KV cache layer missing"))?;
            let new = past * kv_dim..total * kv_dim;
            layer.k.forward(normed, n, keys.slice_mut(new.clone()))?;
            b.rope(keys.slice_mut(new.clone()), c.kv_heads, rope)?;
            layer.v.forward(normed, n, values.slice_mut(new))?;
            b.attention(
                s.q.slice(..n * q_dim),
                keys.slice(..total * kv_dim),
                values.slice(..total * kv_dim),
                shape,
                Mask::Causal { offset: past },
                None,
                s.attn.slice_mut(..n * q_dim),
            )?;
            layer
                .output
                .forward(s.attn.slice(..n * q_dim), n, s.proj.slice_mut(..n * d))?;
            b.add(s.hidden.slice_mut(..n * d), s.proj.slice(..n * d))?;

            b.copy(s.hidden.slice(..n * d), s.normed.slice_mut(..n * d))?;
            b.rms_norm(s.normed.slice_mut(..n * d), layer.ffn_norm.all(), c.eps)?;
            let normed = s.normed.slice(..n * d);
            layer
                .gate
                .forward(normed, n, s.gate.slice_mut(..n * c.ffn))?;
            layer.up.forward(normed, n, s.up.slice_mut(..n * c.ffn))?;
            b.swiglu(s.gate.slice_mut(..n * c.ffn), s.up.slice(..n * c.ffn))?;
            layer
                .down
                .forward(s.gate.slice(..n * c.ffn), n, s.proj.slice_mut(..n * d))?;
            b.add(s.hidden.slice_mut(..n * d), s.proj.slice(..n * d))?;
        }
        cache.advance(n);

        if logit_rows == 0 {
            return Ok(());
        }
        let m = logit_rows;
        let first = n - m;
        b.copy(
            s.hidden.slice(first * d..n * d),
            s.normed.slice_mut(..m * d),
        )?;
        b.rms_norm(s.normed.slice_mut(..m * d), self.output_norm.all(), c.eps)?;
        self.head.forward(
            s.normed.slice(..m * d),
            m,
            s.logits.slice_mut(..m * c.vocab),
        )?;
        out.resize(m * c.vocab, 0.0);
        b.read(s.logits.slice(..m * c.vocab), out)?;
        Ok(())
    }
}
