//! The model behind the server: loaded once, shared by every request, and driven synchronously on
//! blocking threads. It answers chat turns (`Describer`) and makes images (`Generator`), polling
//! each request's [`Cancel`] between tokens and between steps.
//!
//! Concurrency: on the CPU, chat turns run side by side (each has its own KV cache and scratch;
//! the weights are read-only); image generation runs one at a time, because it moves expert groups
//! in and out of memory. On a GPU every request takes the device in turn.

use std::ops::ControlFlow;
use std::sync::{Mutex, MutexGuard};

use crate::backend::Backend;
use crate::image::{ImageInputError, RgbImage};
use crate::model::flow::FlowConfig;
use crate::model::ModelFile;
use crate::pipeline::generate::{GenerateError, GenerateOptions, Generator, Progress};
use crate::pipeline::parameters::ImageParameters;
use crate::pipeline::plan::release_policy;
use crate::pipeline::{DescribeError, DescribeRequest, Describer, SamplerKind, StepInfo};
use crate::sampling::SamplingParams;
use crate::tokenizer::{ChatMessage, Tokenizer};

use super::admission::Cancel;
use super::error::ApiError;
use super::stop::StopScanner;

/// Why a request's work ended without a result.
#[derive(Debug)]
pub enum JobError {
    /// The request's answer: a status and a message.
    Api(ApiError),
    /// Its client left or its deadline passed.
    Cancelled,
}

impl From<ApiError> for JobError {
    fn from(e: ApiError) -> Self {
        JobError::Api(e)
    }
}

/// One chat turn to answer.
pub struct ChatJob {
    pub messages: Vec<ChatMessage>,
    pub image: Option<RgbImage>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
}

/// How an answer ended, as OpenAI's `finish_reason` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model's stop token, or a stop string.
    Stop,
    /// `max_tokens` or the end of the context.
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// A finished answer.
pub struct ChatOutcome {
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub finish: Finish,
}

/// One image request.
pub struct ImageJob {
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub n: usize,
    pub seed: Option<u64>,
    pub steps: Option<usize>,
    pub cfg_scale: Option<f32>,
    pub sampler: SamplerKind,
}

/// A made image: its PNG (with the generation parameters) and seed.
pub struct MadeImage {
    pub png: Vec<u8>,
    pub seed: u64,
}

/// Everything the server computes with.
pub struct Engine<B: Backend + 'static> {
    /// The id clients name the model by (`/v1/models`).
    id: String,
    /// What generated PNGs record as their model (as `latte generate` does).
    label: String,
    /// Its tokenizer also reads the prompts of image generation.
    describer: Describer<'static, B>,
    generator: Option<Generator<'static, B>>,
    image_size: Option<[usize; 2]>,
    /// Held by image generation, and on a GPU by every request.
    exclusive: Mutex<()>,
    on_device: bool,
}

impl<B: Backend + Sync + 'static> Engine<B> {
    /// Loads the understanding side of `file` and, when it has one, the generation side.
    pub fn load(
        backend: &'static B,
        file: &'static ModelFile,
        id: String,
        label: String,
    ) -> Result<Self, EngineLoadError> {
        let describer = Describer::load_on(backend, file)?;
        let generator = if FlowConfig::present(file) {
            Some(Generator::load_on(
                backend,
                file,
                release_policy(file, None),
            )?)
        } else {
            None
        };
        let image_size = match &generator {
            Some(g) => Some(g.planner().image_size()?),
            None => None,
        };
        Ok(Engine {
            id,
            label,
            describer,
            generator,
            image_size,
            exclusive: Mutex::new(()),
            on_device: backend.device_memory().is_some(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `[height, width]` of the images the model makes, if it makes any.
    pub fn image_size(&self) -> Option<[usize; 2]> {
        self.image_size
    }

    /// The model's context length in tokens.
    pub fn context_length(&self) -> usize {
        self.describer.text_model().config().context_length
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        self.describer.tokenizer()
    }

    fn exclusive(&self) -> MutexGuard<'_, ()> {
        // A panic in another request poisons nothing this lock guards (it holds no data).
        self.exclusive.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers `job`, handing each piece of text to `on_text` as it is decoded (stop strings held
    /// back and cut); `on_text` returning `Break` ends the answer there.
    pub fn chat(
        &self,
        job: ChatJob,
        cancel: &Cancel,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<ChatOutcome, JobError> {
        let _turn = self.on_device.then(|| self.exclusive());
        if cancel.is_cancelled() {
            return Err(JobError::Cancelled);
        }
        let ChatJob {
            messages,
            image,
            max_tokens,
            sampling,
            stop,
        } = job;
        let request = DescribeRequest {
            image: image.as_ref(),
            messages,
            max_tokens,
            sampling,
        };
        let mut scanner = StopScanner::new(stop);
        let mut stopped_by_string = false;
        let mut receiver_gone = false;
        let stats = self
            .describer
            .describe(&request, &mut |_, piece| {
                if cancel.is_cancelled() {
                    return ControlFlow::Break(());
                }
                let (text, stopped) = scanner.push(piece);
                if !text.is_empty() && on_text(text).is_break() {
                    receiver_gone = true;
                    return ControlFlow::Break(());
                }
                if stopped {
                    stopped_by_string = true;
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            })
            .map_err(describe_error)?;
        if receiver_gone || cancel.is_cancelled() {
            return Err(JobError::Cancelled);
        }
        if !stopped_by_string {
            let rest = scanner.finish();
            if !rest.is_empty() {
                let _ = on_text(rest);
            }
        }
        Ok(ChatOutcome {
            text: scanner.text().to_string(),
            prompt_tokens: stats.prompt_tokens,
            completion_tokens: stats.generated_tokens,
            finish: if stats.stopped || stopped_by_string {
                Finish::Stop
            } else {
                Finish::Length
            },
        })
    }

    /// Makes `job.n` images (seeds s, s+1, …), reporting each step to `on_step(done, total)`.
    pub fn images(
        &self,
        job: &ImageJob,
        cancel: &Cancel,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<MadeImage>, JobError> {
        let tokenizer = self.describer.tokenizer();
        let Some(generator) = &self.generator else {
            return Err(ApiError::bad_field(
                "model",
                format!("{}: this model does not generate images", self.id),
            )
            .into());
        };
        let config = generator.planner().flow();
        let options = GenerateOptions {
            steps: job.steps.unwrap_or(config.num_steps),
            guidance: job.cfg_scale.unwrap_or(config.guidance_scale),
            seed: 0,
            sampler: job.sampler,
            dense: false,
            device_budget: None,
        };
        generator
            .schedule(&options)
            .map_err(|e| ApiError::bad_field("steps", e.to_string()))?;
        let first = job.seed.unwrap_or_else(crate::rng::random_seed);
        let seeds: Vec<u64> = (0..job.n as u64)
            .map(|k| first.checked_add(k))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                ApiError::bad_field(
                    "seed",
                    format!(
                        "seed {first} with n = {}: the seeds pass {}",
                        job.n,
                        u64::MAX
                    ),
                )
            })?;
        let encode = |text: &str| {
            tokenizer
                .encode(&config.prompt_text(text), true)
                .map_err(|e| ApiError::bad_field("prompt", e.to_string()))
        };
        let cond = encode(&job.prompt)?;
        let uncond = encode(job.negative_prompt.as_deref().unwrap_or(""))?;
        let context = self.context_length();
        if cond.len().max(uncond.len()) >= context {
            return Err(ApiError::bad_field(
                "prompt",
                format!(
                    "the prompt is {} tokens, over the context of {context}",
                    cond.len().max(uncond.len())
                ),
            )
            .into());
        }

        let _turn = self.exclusive();
        if cancel.is_cancelled() {
            return Err(JobError::Cancelled);
        }
        let mut progress = StepProgress {
            cancel,
            on_step,
            done: 0,
            total: options.steps,
        };
        let batch = generator
            .generate_batch(&cond, None, &uncond, &options, &seeds, &mut progress)
            .map_err(|e| match e {
                GenerateError::Cancelled => JobError::Cancelled,
                GenerateError::BadGuidance(_) => {
                    ApiError::bad_field("cfg_scale", e.to_string()).into()
                }
                GenerateError::NonFinite { .. } => {
                    ApiError::bad_field("cfg_scale", e.to_string()).into()
                }
                other => ApiError::internal(other).into(),
            })?;
        batch
            .images
            .iter()
            .map(|one| {
                let parameters = ImageParameters {
                    prompt: &job.prompt,
                    negative_prompt: job.negative_prompt.as_deref(),
                    seed: one.seed,
                    options: &options,
                    model: &self.label,
                    image: None,
                };
                let png = parameters
                    .encode_png(&one.image, batch.height, batch.width)
                    .map_err(ApiError::internal)?;
                Ok(MadeImage {
                    png,
                    seed: one.seed,
                })
            })
            .collect()
    }
}

/// The errors of a chat turn, as the client should see them.
fn describe_error(e: DescribeError) -> JobError {
    let api = match &e {
        DescribeError::PromptTooLong { .. }
        | DescribeError::NoVisionTower { .. }
        | DescribeError::ImageParts { .. }
        | DescribeError::NoMessages => ApiError::bad_field("messages", e.to_string()),
        DescribeError::Image(ImageInputError::TooLarge { .. }) => {
            ApiError::too_large(e.to_string())
        }
        DescribeError::Image(_) => ApiError::bad_field("messages", e.to_string()),
        DescribeError::Sampling(_) => ApiError::bad_request(e.to_string()),
        DescribeError::Tokenizer(_) => ApiError::bad_field("messages", e.to_string()),
        DescribeError::Model(_) | DescribeError::ImagePlaceholders { .. } => ApiError::internal(e),
    };
    JobError::Api(api)
}

/// Steps to the caller, cancellation from the request.
struct StepProgress<'a> {
    cancel: &'a Cancel,
    on_step: &'a mut dyn FnMut(usize, usize),
    done: usize,
    total: usize,
}

impl Progress for StepProgress<'_> {
    fn step(&mut self, _step: &StepInfo, _seconds: f64) {
        self.done += 1;
        (self.on_step)(self.done, self.total);
    }

    fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// Loading the model for serving failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineLoadError {
    // Boxed: load errors are rare and large.
    #[error(transparent)]
    Describe(Box<DescribeError>),
    #[error(transparent)]
    Generate(Box<GenerateError>),
    #[error(transparent)]
    Tokenizer(Box<crate::tokenizer::TokenizerError>),
}

impl From<DescribeError> for EngineLoadError {
    fn from(e: DescribeError) -> Self {
        EngineLoadError::Describe(Box::new(e))
    }
}

impl From<GenerateError> for EngineLoadError {
    fn from(e: GenerateError) -> Self {
        EngineLoadError::Generate(Box::new(e))
    }
}

impl From<crate::tokenizer::TokenizerError> for EngineLoadError {
    fn from(e: crate::tokenizer::TokenizerError) -> Self {
        EngineLoadError::Tokenizer(Box::new(e))
    }
}
