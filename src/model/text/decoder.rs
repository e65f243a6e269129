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

use crate::backend::cpu::matmul::MatmulScratch;
use crate::backend::cpu::ops::attention::{attention, AttentionScratch, AttentionShape, Mask};
use crate::backend::cpu::ops::rope::{inv_freqs, rope_neox, RopeTable};
use crate::backend::cpu::ops::{rms_norm, swiglu};
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

struct DecoderLayer<'a> {
    attn_norm: Vec<f32>,
    q: Linear<'a>,
    k: Linear<'a>,
    v: Linear<'a>,
    output: Linear<'a>,
    ffn_norm: Vec<f32>,
    gate: Linear<'a>,
    up: Linear<'a>,
    down: Linear<'a>,
}

impl<'a> DecoderLayer<'a> {
    fn load(file: &'a ModelFile, c: &TextConfig, l: usize) -> Result<Self, ModelError> {
        let name = |part: &str| format!("blk.{l}.{part}");
        let d = c.hidden as u64;
        Ok(DecoderLayer {
            attn_norm: file.tensor_f32(&name("attn_norm.weight"), &[d])?,
            q: Linear::load_pair(file, &name("attn_q"), true, c.hidden, c.q_dim())?,
            k: Linear::load_pair(file, &name("attn_k"), true, c.hidden, c.kv_dim())?,
            v: Linear::load_pair(file, &name("attn_v"), true, c.hidden, c.kv_dim())?,
            output: Linear::load_pair(file, &name("attn_output"), false, c.q_dim(), c.hidden)?,
            ffn_norm: file.tensor_f32(&name("ffn_norm.weight"), &[d])?,
            gate: Linear::load_pair(file, &name("ffn_gate"), false, c.hidden, c.ffn)?,
            up: Linear::load_pair(file, &name("ffn_up"), false, c.hidden, c.ffn)?,
            down: Linear::load_pair(file, &name("ffn_down"), false, c.ffn, c.hidden)?,
        })
    }
}

/// The decoder's weights, borrowed from the mapped file (norms and biases copied as f32).
pub struct TextModel<'a> {
    file: &'a ModelFile,
    config: TextConfig,
    embedding: TensorView<'a>,
    layers: Vec<DecoderLayer<'a>>,
    output_norm: Vec<f32>,
    head: Linear<'a>,
    inv_freq: Vec<f32>,
}

/// Working memory of a forward pass. It grows to the largest number of new tokens it has seen and
/// is then reused, so decoding one token after another allocates nothing.
#[derive(Default)]
pub struct TextScratch {
    tokens: usize,
    hidden: Vec<f32>,
    normed: Vec<f32>,
    q: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    rope: Option<RopeTable>,
    matmul: MatmulScratch,
    attention: AttentionScratch,
}

impl TextScratch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Scratch already sized for `tokens` new tokens per call with a cache of `context` tokens.
    pub fn with_capacity(config: &TextConfig, tokens: usize, context: usize) -> Self {
        let mut s = Self::default();
        s.reserve(config, tokens);
        // Warm the attention scratch for the longest key range (it sizes by n_q and n_kv).
        let shape = AttentionShape {
            n_q: tokens,
            n_kv: context,
            n_heads: config.heads,
            n_kv_heads: config.kv_heads,
            head_dim: config.head_dim,
        };
        if let Ok(a) = AttentionScratch::for_shape(&shape) {
            s.attention = a;
        }
        s
    }

    fn reserve(&mut self, c: &TextConfig, n: usize) {
        if n <= self.tokens {
            return;
        }
        let grow = |v: &mut Vec<f32>, len: usize| v.resize(len, 0.0);
        grow(&mut self.hidden, n * c.hidden);
        grow(&mut self.normed, n * c.hidden);
        grow(&mut self.q, n * c.q_dim());
        grow(&mut self.attn, n * c.q_dim());
        grow(&mut self.proj, n * c.hidden);
        grow(&mut self.gate, n * c.ffn);
        grow(&mut self.up, n * c.ffn);
        self.tokens = n;
    }
}

impl<'a> TextModel<'a> {
    pub fn load(file: &'a ModelFile) -> Result<Self, ModelError> {
        let config = TextConfig::from_file(file)?;
        let embedding = file.tensor_with_dims(
            "token_embd.weight",
            &[config.hidden as u64, config.vocab as u64],
        )?;
        let layers = (0..config.layers)
            .map(|l| DecoderLayer::load(file, &config, l))
            .collect::<Result<Vec<_>, _>>()?;
        let output_norm = file.tensor_f32("output_norm.weight", &[config.hidden as u64])?;
        let head_name = if config.tied {
            "token_embd.weight"
        } else {
            "output.weight"
        };
        let head = Linear::load(file, head_name, None, config.hidden, config.vocab)?;
        let inv_freq = inv_freqs(config.head_dim, config.rope_theta)?;
        Ok(TextModel {
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
                    source,
                })?;
        }
        Ok(())
    }

    /// Runs `embeddings` (`[n, hidden]`) at `positions` (`[t, h, w]` per token) after the tokens
    /// already in `cache`, causally, and appends their keys and values to it.
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
        cache: &mut KvCache,
        scratch: &mut TextScratch,
        mut capture: Option<&mut Vec<Vec<f32>>>,
        logits: Logits,
        out: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
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
        scratch.reserve(c, n);
        let past = cache.len();
        let total = past + n;
        let (q_dim, kv_dim) = (c.q_dim(), c.kv_dim());

        match scratch.rope.as_mut() {
            Some(table) => table.set_mrope(positions, &self.inv_freq, c.mrope_sections)?,
            None => {
                scratch.rope = Some(RopeTable::mrope(
                    positions,
                    &self.inv_freq,
                    c.mrope_sections,
                )?)
            }
        }
        let rope = scratch
            .rope
            .as_ref()
            .ok_or_else(|| self.file.invalid("text forward: no rotary table"))?;

        let hidden = &mut scratch.hidden[..n * d];
        hidden.copy_from_slice(embeddings);
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
            let normed = &mut scratch.normed[..n * d];
            normed.copy_from_slice(hidden);
            rms_norm(normed, &layer.attn_norm, c.eps)?;
            if let Some(capture) = capture.as_deref_mut() {
                capture[l].extend_from_slice(normed);
            }
            let q = &mut scratch.q[..n * q_dim];
            layer.q.forward(normed, n, q, &mut scratch.matmul)?;
            rope_neox(q, c.heads, rope)?;
            let (keys, values) = cache
                .layer_storage_mut(l)
                .ok_or_else(|| self.file.invalid("text forward: KV cache layer missing"))?;
            let new_keys = &mut keys[past * kv_dim..total * kv_dim];
            layer.k.forward(normed, n, new_keys, &mut scratch.matmul)?;
            rope_neox(new_keys, c.kv_heads, rope)?;
            let new_values = &mut values[past * kv_dim..total * kv_dim];
            layer
                .v
                .forward(normed, n, new_values, &mut scratch.matmul)?;
            let attn = &mut scratch.attn[..n * q_dim];
            attention(
                q,
                &keys[..total * kv_dim],
                &values[..total * kv_dim],
                shape,
                None,
                Mask::Causal { offset: past },
                None,
                attn,
                &mut scratch.attention,
            )?;
            let proj = &mut scratch.proj[..n * d];
            layer.output.forward(attn, n, proj, &mut scratch.matmul)?;
            add_assign(hidden, proj);

            normed.copy_from_slice(hidden);
            rms_norm(normed, &layer.ffn_norm, c.eps)?;
            let gate = &mut scratch.gate[..n * c.ffn];
            let up = &mut scratch.up[..n * c.ffn];
            layer.gate.forward(normed, n, gate, &mut scratch.matmul)?;
            layer.up.forward(normed, n, up, &mut scratch.matmul)?;
            swiglu(gate, up)?;
            layer.down.forward(gate, n, proj, &mut scratch.matmul)?;
            add_assign(hidden, proj);
        }
        cache.advance(n);

        let rows = match logits {
            Logits::None => return Ok(()),
            Logits::Last => (n - 1)..n,
            Logits::All => 0..n,
        };
        let m = rows.len();
        let normed = &mut scratch.normed[..m * d];
        normed.copy_from_slice(&hidden[rows.start * d..rows.end * d]);
        rms_norm(normed, &self.output_norm, c.eps)?;
        out.resize(m * c.vocab, 0.0);
        self.head.forward(normed, m, out, &mut scratch.matmul)?;
        Ok(())
    }
}

fn add_assign(acc: &mut [f32], x: &[f32]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}
