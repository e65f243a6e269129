//! Image understanding, as transformers' Qwen2-VL answers a chat turn:
//! 1. the chat template renders the conversation (one user message `[image, text]` or the text
//!    alone, or earlier turns before it) with the generation prompt; the text is tokenized with special tokens parsed and the template's single
//!    `<|image_pad|>` expanded to one pad per merged image patch;
//! 2. the image goes through the processor (`image::preprocess`) and the vision tower; its
//!    embeddings replace the pads' token embeddings;
//! 3. one batched prefill over the prompt at its M-RoPE positions (`model::positions`), then one
//!    token per step through the KV cache, sampled by `TokenSampler`, until `<|im_end|>` / the end
//!    of sequence token, `max_tokens`, or the end of the context.
//!
//! Decoding allocates nothing per token: the KV cache is sized for prompt + answer before
//! prefill, and the scratch, logits, history and text buffers are reused. Each token's text goes
//! to a callback as soon as it is complete UTF-8; the callback may end the answer there (a stop
//! string found, a client gone).
//!
//! This module owns the prompt and the loop; it must not parse arguments or print.

use std::ops::ControlFlow;
use std::time::Instant;

use thiserror::Error;

use crate::backend::cpu::{CpuBackend, CPU};
use crate::backend::Backend;
use crate::image::{ImageInputError, RgbImage};
use crate::model::text::{KvCache, Logits, TextModel, TextScratch};
use crate::model::vision::{VisionConfig, VisionModel};
use crate::model::{ModelError, ModelFile};
use crate::sampling::{SamplingError, SamplingParams, TokenSampler};
use crate::tokenizer::{ChatMessage, ChatTemplate, ContentPart, Tokenizer, TokenizerError};

use super::image_prompt::{embed_prompt, expand_image_pad, ImagePromptError, PromptImage};

#[derive(Debug, Error)]
pub enum DescribeError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Image(#[from] ImageInputError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    #[error("{file}: this model has no vision tower, so it cannot take an image")]
    NoVisionTower { file: String },
    #[error("the prompt is {tokens} tokens, but the context holds {context} (leave room for the answer)")]
    PromptTooLong { tokens: usize, context: usize },
    #[error("the chat template wrote {found} image placeholders for 1 image")]
    ImagePlaceholders { found: usize },
    #[error("the messages hold {parts} image parts for {images} image(s)")]
    ImageParts { parts: usize, images: usize },
    #[error("there are no messages to answer")]
    NoMessages,
}

impl From<ImagePromptError> for DescribeError {
    fn from(e: ImagePromptError) -> Self {
        match e {
            ImagePromptError::Image(e) => DescribeError::Image(e),
            ImagePromptError::Model(e) => DescribeError::Model(e),
            ImagePromptError::Placeholders { found } => DescribeError::ImagePlaceholders { found },
        }
    }
}

/// One answer to give: the conversation so far, and the image its one `ContentPart::Image`
/// stands for.
#[derive(Clone, Debug)]
pub struct DescribeRequest<'i> {
    pub image: Option<&'i RgbImage>,
    /// The turns, the last one the user's; they hold one `ContentPart::Image` when `image` is
    /// given, none otherwise.
    pub messages: Vec<ChatMessage>,
    /// Answer tokens at most (the stop token not counted).
    pub max_tokens: usize,
    pub sampling: SamplingParams,
}

impl<'i> DescribeRequest<'i> {
    /// One user turn: `[image, prompt]`, or the prompt alone.
    pub fn question(
        image: Option<&'i RgbImage>,
        prompt: &str,
        max_tokens: usize,
        sampling: SamplingParams,
    ) -> Self {
        DescribeRequest {
            image,
            messages: vec![question(prompt, image.is_some())],
            max_tokens,
            sampling,
        }
    }
}

/// A user turn: `[image, prompt]` or the prompt alone.
fn question(prompt: &str, with_image: bool) -> ChatMessage {
    if with_image {
        ChatMessage::parts(
            "user",
            vec![ContentPart::Image, ContentPart::Text(prompt.into())],
        )
    } else {
        ChatMessage::text("user", prompt)
    }
}

/// Sizes and times of one answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DescribeStats {
    pub prompt_tokens: usize,
    pub image_tokens: usize,
    pub generated_tokens: usize,
    /// Single-token forward passes through the cache (the first answer token comes from the
    /// prefill's logits, so this is about one less than `generated_tokens`).
    pub decode_steps: usize,
    /// Preprocessing and the vision tower.
    pub vision_seconds: f64,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    /// Stopped by the stop token (not by `max_tokens` or the context).
    pub stopped: bool,
}

impl DescribeStats {
    pub fn prompt_tokens_per_second(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_seconds.max(1e-9)
    }

    /// Decode speed: single-token steps per second (`None` before any step).
    pub fn decode_tokens_per_second(&self) -> Option<f64> {
        (self.decode_steps > 0).then(|| self.decode_steps as f64 / self.decode_seconds.max(1e-9))
    }
}

/// A model ready to answer: decoder, optional vision tower, tokenizer and chat template, on
/// backend `B`.
pub struct Describer<'a, B: Backend = CpuBackend> {
    file: &'a ModelFile,
    backend: &'a B,
    text: TextModel<'a, B>,
    vision: Option<VisionModel<'a, B>>,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    stop_ids: Vec<u32>,
}

impl<'a> Describer<'a> {
    /// [`Describer::load_on`] the CPU.
    pub fn load(file: &'a ModelFile) -> Result<Self, DescribeError> {
        Self::load_on(&CPU, file)
    }
}

impl<'a, B: Backend> Describer<'a, B> {
    pub fn load_on(backend: &'a B, file: &'a ModelFile) -> Result<Self, DescribeError> {
        let text = TextModel::load_on(backend, file)?;
        let vision = if VisionConfig::present(file) {
            Some(VisionModel::load_on(backend, file)?)
        } else {
            None
        };
        let tokenizer = Tokenizer::from_model_file(file)?;
        let template = ChatTemplate::from_model_file(file)?;
        let mut stop_ids: Vec<u32> = [tokenizer.token_to_id("<|im_end|>"), tokenizer.eos_id()]
            .into_iter()
            .flatten()
            .collect();
        stop_ids.dedup();
        Ok(Describer {
            file,
            backend,
            text,
            vision,
            tokenizer,
            template,
            stop_ids,
        })
    }

    pub fn text_model(&self) -> &TextModel<'a, B> {
        &self.text
    }

    pub fn vision_model(&self) -> Option<&VisionModel<'a, B>> {
        self.vision.as_ref()
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The prompt's token ids: the chat template with one user turn (`[image, text]` when
    /// `image_tokens` is given, else the text) and the generation prompt, tokenized with special
    /// tokens parsed, the image placeholder expanded to `image_tokens` pads.
    pub fn prompt_ids(
        &self,
        prompt: &str,
        image_tokens: Option<usize>,
    ) -> Result<Vec<u32>, DescribeError> {
        self.conversation_ids(&[question(prompt, image_tokens.is_some())], image_tokens)
    }

    /// As [`prompt_ids`](Self::prompt_ids) for a whole conversation, whose messages hold one
    /// `ContentPart::Image` when `image_tokens` is given.
    pub fn conversation_ids(
        &self,
        messages: &[ChatMessage],
        image_tokens: Option<usize>,
    ) -> Result<Vec<u32>, DescribeError> {
        if messages.is_empty() {
            return Err(DescribeError::NoMessages);
        }
        let parts = messages.iter().map(ChatMessage::image_parts).sum();
        let images = usize::from(image_tokens.is_some());
        if parts != images {
            return Err(DescribeError::ImageParts { parts, images });
        }
        let text = self.template.render(messages, true)?;
        let template_ids = self.tokenizer.encode(&text, true)?;
        let Some(copies) = image_tokens else {
            return Ok(template_ids);
        };
        let image_token = match &self.vision {
            Some(v) => v.config().image_token_id,
            None => {
                return Err(DescribeError::NoVisionTower {
                    file: self.file.name().into(),
                })
            }
        };
        Ok(expand_image_pad(&template_ids, image_token, copies)?)
    }

    /// Answers `request`. Each answer token goes to `on_token` with its text (complete UTF-8,
    /// possibly empty while a character is unfinished; a last call with id `u32::MAX` flushes an
    /// unfinished character at the end). `on_token` returning `Break` ends the answer there.
    pub fn describe(
        &self,
        request: &DescribeRequest<'_>,
        on_token: &mut dyn FnMut(u32, &str) -> ControlFlow<()>,
    ) -> Result<DescribeStats, DescribeError> {
        let mut stats = DescribeStats::default();
        let config = self.text.config();
        let d = config.hidden;
        let mut sampler = TokenSampler::new(request.sampling, config.vocab)?;

        // Vision first: the number of image tokens shapes the prompt.
        let started = Instant::now();
        let image = match (request.image, &self.vision) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(DescribeError::NoVisionTower {
                    file: self.file.name().into(),
                })
            }
            (Some(image), Some(tower)) => Some(PromptImage::encode(tower, image)?),
        };
        stats.vision_seconds = started.elapsed().as_secs_f64();

        let image_tokens = image.as_ref().map(PromptImage::tokens);
        let ids = self.conversation_ids(&request.messages, image_tokens)?;
        stats.image_tokens = image_tokens.unwrap_or(0);
        stats.prompt_tokens = ids.len();
        let context = config.context_length;
        if ids.len() >= context {
            return Err(DescribeError::PromptTooLong {
                tokens: ids.len(),
                context,
            });
        }

        let started = Instant::now();
        let mut embeddings = vec![0f32; ids.len() * d];
        let (positions, next_position) =
            embed_prompt(&self.text, &ids, image.as_ref(), &mut embeddings)?;
        // Room for the whole answer, within the context; nothing grows while decoding.
        let capacity = ids.len().saturating_add(request.max_tokens).min(context);
        let mut cache = KvCache::try_new_on(self.backend, config, capacity)?;
        let mut scratch = TextScratch::with_capacity_on(self.backend, config, ids.len(), capacity)?;
        let mut logits = Vec::with_capacity(config.vocab);
        self.text.forward(
            &embeddings,
            &positions,
            &mut cache,
            &mut scratch,
            None,
            Logits::Last,
            &mut logits,
        )?;
        stats.prefill_seconds = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let mut history = Vec::with_capacity(capacity + 1);
        history.extend_from_slice(&ids);
        let mut decoder = self.tokenizer.stream_decoder(false);
        let mut row = vec![0f32; d];
        let mut position = next_position;
        while stats.generated_tokens < request.max_tokens {
            let token = sampler.sample(&mut logits, &history)?;
            if self.stop_ids.contains(&token) {
                stats.stopped = true;
                break;
            }
            history.push(token);
            stats.generated_tokens += 1;
            if on_token(token, decoder.push(token)).is_break() {
                stats.decode_seconds = started.elapsed().as_secs_f64();
                return Ok(stats);
            }
            if stats.generated_tokens == request.max_tokens || cache.len() == cache.capacity() {
                break;
            }
            self.text.embed_tokens(&[token], &mut row)?;
            self.text.forward(
                &row,
                &[[position; 3]],
                &mut cache,
                &mut scratch,
                None,
                Logits::Last,
                &mut logits,
            )?;
            position += 1;
            stats.decode_steps += 1;
        }
        let rest = decoder.finish();
        if !rest.is_empty() {
            // Bytes of an unfinished character at the end: no token of their own.
            let _ = on_token(u32::MAX, rest);
        }
        stats.decode_seconds = started.elapsed().as_secs_f64();
        Ok(stats)
    }
}
