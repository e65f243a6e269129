//! Text-decoder benchmarks, as llama-bench defines them: `ppN` processes N prompt tokens in one
//! batch from an empty cache; `tgN` decodes N tokens one at a time from an empty cache. Token ids are
//! fixed pseudo-random ids (the values do not change the work), identical for every engine compared.

use std::time::Instant;

use crate::backend::Backend;
use crate::model::text::{KvCache, Logits, TextModel, TextScratch};
use crate::model::ModelError;
use crate::rng::SplitMix64;

/// `n` token ids in `[0, vocab)` from a fixed seed.
pub fn benchmark_tokens(n: usize, vocab: usize) -> Vec<u32> {
    let mut rng = SplitMix64::new(0x006c_6174_7465);
    (0..n)
        .map(|_| (rng.next_u64() % vocab.max(1) as u64) as u32)
        .collect()
}

/// A text model with its cache and scratch sized for the longest test, reused by every repetition.
pub struct TextBench<'m, 'a, B: Backend> {
    model: &'m TextModel<'a, B>,
    cache: KvCache<B>,
    scratch: TextScratch<B>,
    embeddings: Vec<f32>,
    positions: Vec<[u32; 3]>,
    logits: Vec<f32>,
}

impl<'m, 'a, B: Backend> TextBench<'m, 'a, B> {
    /// Refuses more tokens than the model's trained context (llama-bench needs `n_ctx ≥ N` too).
    pub fn new(model: &'m TextModel<'a, B>, max_tokens: usize) -> Result<Self, ModelError> {
        let config = model.config();
        if max_tokens > config.context_length {
            return Err(ModelError::ContextFull {
                needed: max_tokens,
                used: 0,
                capacity: config.context_length,
            });
        }
        let backend = model.backend();
        Ok(TextBench {
            model,
            cache: KvCache::try_new_on(backend, config, max_tokens)?,
            scratch: TextScratch::with_capacity_on(backend, config, max_tokens, max_tokens)?,
            embeddings: vec![0.0; max_tokens * config.hidden],
            positions: Vec::with_capacity(max_tokens),
            logits: Vec::new(),
        })
    }

    fn run(&mut self, tokens: &[u32], start: usize) -> Result<(), ModelError> {
        let d = self.model.config().hidden;
        let embeddings = &mut self.embeddings[..tokens.len() * d];
        self.model.embed_tokens(tokens, embeddings)?;
        self.positions.clear();
        self.positions
            .extend((start..start + tokens.len()).map(|p| [p as u32; 3]));
        self.model.forward(
            embeddings,
            &self.positions,
            &mut self.cache,
            &mut self.scratch,
            None,
            Logits::Last,
            &mut self.logits,
        )
    }

    /// Seconds to process `tokens` as one prompt from an empty cache.
    pub fn prompt_seconds(&mut self, tokens: &[u32]) -> Result<f64, ModelError> {
        self.cache.clear();
        let start = Instant::now();
        self.run(tokens, 0)?;
        Ok(start.elapsed().as_secs_f64())
    }

    /// Seconds to decode `tokens` one at a time from an empty cache.
    pub fn generate_seconds(&mut self, tokens: &[u32]) -> Result<f64, ModelError> {
        self.cache.clear();
        let start = Instant::now();
        for (i, token) in tokens.iter().enumerate() {
            self.run(std::slice::from_ref(token), i)?;
        }
        Ok(start.elapsed().as_secs_f64())
    }

    /// The logits of the last call (parity checks against a peer).
    pub fn last_logits(&self) -> &[f32] {
        &self.logits
    }
}
