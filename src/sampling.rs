//! Choosing the next token from logits: repetition penalty, then top-k, then top-p (nucleus),
//! then temperature, then one draw from the softmax with `rng::SplitMix64` (llama.cpp's order;
//! the penalty as HF and llama.cpp define it). Temperature 0 is greedy: the first maximum after
//! the penalty. Owns the sampling state (RNG, candidate buffers, allocated once); must not know
//! about tokenizers or models.

use thiserror::Error;

use crate::rng::SplitMix64;

#[derive(Debug, Error, PartialEq)]
pub enum SamplingError {
    #[error("temperature {0} is not a finite number ≥ 0")]
    Temperature(f32),
    #[error("top-p {0} is not in (0, 1]")]
    TopP(f32),
    #[error("repetition penalty {0} is not a finite number > 0")]
    RepetitionPenalty(f32),
    #[error("the vocabulary is empty")]
    EmptyVocabulary,
    #[error("{got} logits for a vocabulary of {expected}")]
    LogitCount { expected: usize, got: usize },
    #[error("every logit is NaN or -inf: there is nothing to sample")]
    NoCandidates,
}

/// How to pick tokens. `top_k == 0` and `top_p == 1` turn those filters off, a penalty of 1 the
/// repetition penalty.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// 0 is greedy.
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl SamplingParams {
    /// Always the most likely token.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }

    pub fn validate(&self) -> Result<(), SamplingError> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(SamplingError::Temperature(self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplingError::TopP(self.top_p));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(SamplingError::RepetitionPenalty(self.repetition_penalty));
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

impl Default for SamplingParams {
    /// llama.cpp's defaults (temperature 0.8, top-k 40, top-p 0.95, no penalty).
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

/// One candidate token: its id and (penalized, later scaled) logit, then its probability.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    id: u32,
    logit: f32,
    probability: f64,
}

/// A sampler for one generation: deterministic for a seed, allocation-free per token.
pub struct TokenSampler {
    params: SamplingParams,
    vocab: usize,
    rng: SplitMix64,
    candidates: Vec<Candidate>,
    /// Marks history tokens already penalized in this step (so each distinct token is penalized once).
    penalized: Vec<bool>,
}

impl TokenSampler {
    pub fn new(params: SamplingParams, vocab: usize) -> Result<Self, SamplingError> {
        params.validate()?;
        if vocab == 0 || u32::try_from(vocab).is_err() {
            return Err(SamplingError::EmptyVocabulary);
        }
        Ok(TokenSampler {
            params,
            vocab,
            rng: SplitMix64::new(params.seed),
            candidates: Vec::with_capacity(vocab),
            penalized: vec![false; vocab],
        })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The next token for `logits` (one per vocabulary entry; modified in place by the penalty),
    /// given the tokens so far (`history`; ids outside the vocabulary are ignored).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> Result<u32, SamplingError> {
        if logits.len() != self.vocab {
            return Err(SamplingError::LogitCount {
                expected: self.vocab,
                got: logits.len(),
            });
        }
        self.apply_repetition_penalty(logits, history);
        if self.params.is_greedy() {
            return greedy(logits).ok_or(SamplingError::NoCandidates);
        }

        // Candidates: every token with a usable logit (NaN and -inf can never be drawn).
        self.candidates.clear();
        self.candidates.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| !l.is_nan() && **l != f32::NEG_INFINITY)
                .map(|(id, &logit)| Candidate {
                    id: id as u32,
                    logit,
                    probability: 0.0,
                }),
        );
        if self.candidates.is_empty() {
            return Err(SamplingError::NoCandidates);
        }
        // Highest logit first, lower id first on ties: a total order, so the result is
        // deterministic whatever the sort algorithm.
        let order =
            |a: &Candidate, b: &Candidate| b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id));
        let top_k = self.params.top_k;
        if top_k > 0 && top_k < self.candidates.len() {
            self.candidates.select_nth_unstable_by(top_k - 1, order);
            self.candidates.truncate(top_k);
        }
        if self.params.top_p < 1.0 {
            // The nucleus is usually a few dozen tokens of a 150k vocabulary: sort only the top
            // `m`, growing `m` until the sorted prefix holds enough mass, instead of sorting
            // everything. The top `m` under a total order is one set, so this keeps exactly the
            // prefix a full sort would.
            softmax(&mut self.candidates, 1.0);
            let n = self.candidates.len();
            let mut m = n.min(64);
            let keep = loop {
                if m < n {
                    self.candidates.select_nth_unstable_by(m - 1, order);
                }
                self.candidates[..m].sort_unstable_by(order);
                let mut mass = 0.0;
                let reached = self.candidates[..m].iter().position(|c| {
                    mass += c.probability;
                    mass >= self.params.top_p as f64
                });
                match reached {
                    Some(i) => break i + 1,
                    None if m == n => break n,
                    None => m = n.min(m * 8),
                }
            };
            self.candidates.truncate(keep);
        }
        softmax(&mut self.candidates, self.params.temperature);
        Ok(self.draw())
    }

    /// HF / llama.cpp: each distinct history token's logit is divided by the penalty when
    /// positive and multiplied by it otherwise.
    fn apply_repetition_penalty(&mut self, logits: &mut [f32], history: &[u32]) {
        let penalty = self.params.repetition_penalty;
        if penalty == 1.0 {
            return;
        }
        for &id in history {
            let i = id as usize;
            if i < self.vocab && !self.penalized[i] {
                self.penalized[i] = true;
                let l = &mut logits[i];
                *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
            }
        }
        for &id in history {
            if let Some(p) = self.penalized.get_mut(id as usize) {
                *p = false;
            }
        }
    }

    /// One draw from the candidates' probabilities (which sum to 1).
    fn draw(&mut self) -> u32 {
        let r = self.rng.next_f64();
        let mut mass = 0.0;
        for c in &self.candidates {
            mass += c.probability;
            if r < mass {
                return c.id;
            }
        }
        // Rounding left the total a hair below r: the last candidate takes the remainder.
        self.candidates.last().map_or(0, |c| c.id)
    }
}

/// The first index of the largest logit (NaN never wins); `None` if there is none.
fn greedy(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        if l.is_nan() || l == f32::NEG_INFINITY {
            continue;
        }
        if best.is_none_or(|(_, b)| l > b) {
            best = Some((i, l));
        }
    }
    best.map(|(i, _)| i as u32)
}

/// Fills each candidate's probability with softmax(logit / temperature), in f64. Infinite scaled
/// logits (a +inf logit, or a tiny temperature) share all the mass.
fn softmax(candidates: &mut [Candidate], temperature: f32) {
    let t = temperature as f64;
    let max = candidates
        .iter()
        .map(|c| c.logit as f64 / t)
        .fold(f64::NEG_INFINITY, f64::max);
    let mut total = 0.0;
    for c in candidates.iter_mut() {
        let scaled = c.logit as f64 / t;
        c.probability = if max == f64::INFINITY {
            f64::from(u8::from(scaled == f64::INFINITY))
        } else {
            (scaled - max).exp()
        };
        total += c.probability;
    }
    for c in candidates.iter_mut() {
        c.probability /= total;
    }
}
