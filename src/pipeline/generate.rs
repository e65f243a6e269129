//! `Generator`: prompt ids (and optionally an image the VLM sees in the prompt) → image, the whole
//! of `latte generate` below the CLI. Phases: prefill (the prompt image through the vision tower;
//! the conditional and, under guidance, the empty prompt through the frozen VLM, once),
//! sampling (layerwise: one expert group at a time, with the residency advice of `residency`),
//! decode (DC-AE, clamp). Each phase is timed and its peak RSS read, for the summary.
//!
//! This module owns the order of phases and their bookkeeping; it must not parse arguments, print
//! or write files (the CLI does), nor tokenize (the caller passes ids).

use std::time::Instant;

use crate::image::{merged_tokens, RgbImage};
use crate::model::dcae::{Decoder, DecoderScratch};
use crate::model::flow::{PromptKv, Replica};
use crate::model::text::{TextModel, TextScratch};
use crate::model::vision::{VisionConfig, VisionModel};
use crate::model::{ModelError, ModelFile};
use crate::process_memory;
use crate::residency::{memory_plan, BufferSizes, PhaseMemory, ReleasePolicy, Residency};
use crate::schedule::{ScheduleError, TimestepSchedule};

use super::image_prompt::{expand_image_pad, ImagePromptError, PromptImage};
use super::prompt_context::prefill;
use super::sampler::{sample, SamplerKind, SamplingObserver, SamplingOptions, StepInfo};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum GenerateError {
    #[error("{0}: the file has no generation pathway (no latte.flow.* metadata)")]
    NoGeneration(String),
    #[error("guidance scale {0} must be a finite number ≥ 0")]
    BadGuidance(f32),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{file}: this model has no vision tower, so its prompts cannot hold an image")]
    NoVisionTower { file: String },
    // Boxed: image errors are large and rare; every GenerateError result would carry their size.
    #[error("the prompt image: {0}")]
    ImagePrompt(Box<ImagePromptError>),
    #[error("{file}: {source}")]
    Layout {
        file: String,
        #[source]
        source: crate::model::expert_groups::GroupLayoutError,
    },
}

impl From<ImagePromptError> for GenerateError {
    fn from(e: ImagePromptError) -> Self {
        GenerateError::ImagePrompt(Box::new(e))
    }
}

/// How to generate one image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GenerateOptions {
    pub steps: usize,
    pub guidance: f32,
    pub seed: u64,
    pub sampler: SamplerKind,
    pub dense: bool,
}

/// One timed phase of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseReport {
    /// `prefill`, `group K` (or `dense`), `decode`.
    pub name: String,
    pub seconds: f64,
    /// Sampling steps attributed to this phase (0 for prefill and decode).
    pub steps: usize,
    /// Peak resident memory during the phase, where the OS tells.
    pub peak_rss: Option<u64>,
}

/// The result of [`Generator::generate`].
pub struct Generated {
    /// `[3, H, W]` in `[−1, 1]`.
    pub image: Vec<f32>,
    pub height: usize,
    pub width: usize,
    /// The final latent `[C, S, S]` (before the decoder's scaling).
    pub latent: Vec<f32>,
    pub phases: Vec<PhaseReport>,
}

/// Hears about progress (the CLI's progress bar).
pub trait Progress {
    fn phase(&mut self, _name: &str) {}
    /// After each sampling step: the step, and the seconds it took.
    fn step(&mut self, _step: &StepInfo, _seconds: f64) {}
}

/// No progress reports.
pub struct Quiet;
impl Progress for Quiet {}

/// Every model a generation needs, loaded from one file.
pub struct Generator<'f> {
    file: &'f ModelFile,
    text: TextModel<'f>,
    replica: Replica<'f>,
    residency: Residency<'f>,
}

impl<'f> Generator<'f> {
    /// Loads the text decoder and the replica (the DC-AE decoder is loaded for the decode phase
    /// only: its f32 copies of f16 weights would otherwise sit in memory while sampling); then
    /// releases the pages loading touched in the expert groups, so sampling starts with none.
    pub fn load(file: &'f ModelFile, policy: ReleasePolicy) -> Result<Self, GenerateError> {
        if !crate::model::flow::FlowConfig::present(file) {
            return Err(GenerateError::NoGeneration(file.name().into()));
        }
        let replica = Replica::load(file)?;
        let text = TextModel::load(file)?;
        // Fail now, not after sampling, when the decoder is missing or malformed.
        drop(Decoder::load(file)?);
        let residency = Residency::new(file, policy).map_err(|source| GenerateError::Layout {
            file: file.name().into(),
            source,
        })?;
        residency.release_all_groups();
        residency.release_decoder();
        Ok(Generator {
            file,
            text,
            replica,
            residency,
        })
    }

    pub fn file(&self) -> &ModelFile {
        self.file
    }

    pub fn replica(&self) -> &Replica<'f> {
        &self.replica
    }

    pub fn text(&self) -> &TextModel<'f> {
        &self.text
    }

    pub fn residency(&self) -> &Residency<'f> {
        &self.residency
    }

    /// The vision tower's embeddings of a prompt image (the tower is loaded for this only: text
    /// prompts never touch it).
    pub fn encode_image(&self, image: &RgbImage) -> Result<PromptImage, GenerateError> {
        let tower = VisionModel::load(self.vision_file()?)?;
        Ok(PromptImage::encode(&tower, image)?)
    }

    /// How many prompt tokens `image` becomes (the processor's resize; nothing runs).
    pub fn image_tokens(&self, image: &RgbImage) -> Result<usize, GenerateError> {
        let config = VisionConfig::from_file(self.vision_file()?)?.preprocess;
        merged_tokens(image.width, image.height, &config)
            .map_err(|e| ImagePromptError::from(e).into())
    }

    fn vision_file(&self) -> Result<&'f ModelFile, GenerateError> {
        if VisionConfig::present(self.file) {
            Ok(self.file)
        } else {
            Err(GenerateError::NoVisionTower {
                file: self.file.name().into(),
            })
        }
    }

    /// The schedule `options` ask for, checked.
    pub fn schedule(&self, options: &GenerateOptions) -> Result<TimestepSchedule, GenerateError> {
        if !options.guidance.is_finite() || options.guidance < 0.0 {
            return Err(GenerateError::BadGuidance(options.guidance));
        }
        let c = self.replica.config();
        Ok(TimestepSchedule::new(
            options.steps,
            c.time_shift,
            &c.group_boundaries,
        )?)
    }

    /// Predicted peak working memory per phase for prompts of up to `prompt_len` tokens.
    pub fn memory_plan(
        &self,
        options: &GenerateOptions,
        prompt_len: usize,
    ) -> Result<Vec<PhaseMemory>, GenerateError> {
        let schedule = self.schedule(options)?;
        let mut groups: Vec<usize> = Vec::new();
        for i in 0..schedule.steps() {
            let (g, corrector) = schedule.step_groups(i, options.sampler == SamplerKind::Heun);
            for k in std::iter::once(g).chain(corrector) {
                if groups.last() != Some(&k) {
                    groups.push(k);
                }
            }
        }
        let c = self.replica.config();
        let tc = self.text.config();
        let n = c.image_tokens();
        let f = 4u64;
        // Prefill: embeddings, normed rows, q, attention, projections, FFN and the KV cache, for
        // the prompt; the scores are one row per head.
        let p = prompt_len as u64;
        // The embedding rows of the prompt's tokens are read from the file: at most one page each.
        let prefill = f
            * (p * (4 * tc.hidden + 2 * tc.q_dim() + 2 * tc.ffn) as u64
                + 2 * p * (tc.layers * tc.kv_dim()) as u64
                + (tc.heads as u64) * p)
            + p * 4096;
        // Sampling: the two prompts' K/V for every layer, one layer's buffers, the TCRA blocks and
        // the latent-sized vectors of the sampler.
        let kv = (c.kv_heads * c.head_dim) as u64;
        let passes = if options.guidance == 1.0 { 1 } else { 2 };
        let sampling = f
            * (passes * 2 * p * kv * c.layer_count as u64
                + (n as u64) * (4 * c.hidden + 3 * c.heads * c.head_dim + 2 * c.ffn_hidden) as u64
                + 2 * (p + n as u64) * kv
                + 3 * (c.heads * n * n) as u64
                + 8 * c.latent_len() as u64);
        // The decoder computes on f32 weights: tensors stored in another type are dequantized
        // into memory for the decode phase.
        let dequantized: u64 = self
            .file
            .gguf()
            .tensor_infos()
            .iter()
            .filter(|t| t.name.starts_with("dcae.") && t.ty != crate::dtype::TensorType::F32)
            .map(|t| 4 * t.dims.iter().product::<u64>())
            .sum();
        let decode = Decoder::load(self.file)?
            .predicted_working_bytes(c.latent_size, c.latent_size)?
            + dequantized;
        Ok(memory_plan(
            self.residency.parts(),
            self.residency.policy(),
            options.dense,
            &groups,
            BufferSizes {
                prefill,
                sampling,
                decode,
            },
        ))
    }

    /// Generates one image from the conditional prompt's ids and the unconditional (empty)
    /// prompt's ids.
    pub fn generate(
        &self,
        cond_ids: &[u32],
        uncond_ids: &[u32],
        options: &GenerateOptions,
        progress: &mut dyn Progress,
    ) -> Result<Generated, GenerateError> {
        self.generate_with_image(cond_ids, None, uncond_ids, options, progress)
    }

    /// As [`generate`](Self::generate), with `image` in the conditional prompt: `cond_ids` then hold
    /// the template's one `<|image_pad|>` where the image goes (expanded here to one pad per image
    /// token). The unconditional prompt stays image-free (tools/reference/README.md, "Prompt").
    pub fn generate_with_image(
        &self,
        cond_ids: &[u32],
        image: Option<&RgbImage>,
        uncond_ids: &[u32],
        options: &GenerateOptions,
        progress: &mut dyn Progress,
    ) -> Result<Generated, GenerateError> {
        let schedule = self.schedule(options)?;
        let c = self.replica.config();
        let mut phases = Vec::new();

        // Prefill.
        progress.phase("prefill");
        let mut clock = PhaseClock::start();
        let image = image.map(|image| self.encode_image(image)).transpose()?;
        let cond_ids = match &image {
            Some(image) => expand_image_pad(cond_ids, image.token_id, image.tokens())?,
            None => cond_ids.to_vec(),
        };
        let mut scratch = TextScratch::new();
        let cond = prefill(
            &self.text,
            &self.replica,
            &cond_ids,
            image.as_ref(),
            &mut scratch,
        )?;
        drop(image);
        let uncond: Option<PromptKv> = if options.guidance != 1.0 {
            Some(prefill(
                &self.text,
                &self.replica,
                uncond_ids,
                None,
                &mut scratch,
            )?)
        } else {
            None
        };
        drop(scratch);
        phases.push(clock.finish("prefill", 0));
        self.residency.release_vlm();

        // Sampling.
        progress.phase("sampling");
        self.residency.prefetch_shared();
        if options.dense {
            (0..c.group_count).for_each(|k| self.residency.prefetch_group(k));
        } else {
            self.residency.prefetch_group(schedule.group_of(0.0));
        }
        let mut noise = vec![0.0; c.latent_len()];
        crate::rng::fill_normal(options.seed, &mut noise);
        let mut observer = SamplingPhases {
            residency: &self.residency,
            progress,
            dense: options.dense,
            phases: Vec::new(),
            current: None,
            clock: PhaseClock::start(),
            step_started: Instant::now(),
        };
        let latent = sample(
            &self.replica,
            &schedule,
            &noise,
            &cond,
            uncond.as_ref(),
            &SamplingOptions {
                sampler: options.sampler,
                guidance: options.guidance,
                dense: options.dense,
            },
            &mut observer,
        )?;
        observer.close();
        phases.extend(observer.phases);
        drop((cond, uncond));

        // Decode.
        self.residency.release_generation();
        let progress = observer.progress;
        progress.phase("decode");
        let mut clock = PhaseClock::start();
        let decoder = Decoder::load(self.file)?;
        let mut scratch = DecoderScratch::default();
        let image =
            decoder.decode_flow_latent(&latent, c.latent_size, c.latent_size, &mut scratch)?;
        let [height, width] = decoder.output_hw(c.latent_size, c.latent_size)?;
        phases.push(clock.finish("decode", 0));
        Ok(Generated {
            image,
            height,
            width,
            latent,
            phases,
        })
    }
}

/// Wall time and peak RSS of one phase.
struct PhaseClock {
    started: Instant,
}

impl PhaseClock {
    fn start() -> Self {
        process_memory::reset_peak_rss();
        PhaseClock {
            started: Instant::now(),
        }
    }

    fn finish(&mut self, name: &str, steps: usize) -> PhaseReport {
        PhaseReport {
            name: name.into(),
            seconds: self.started.elapsed().as_secs_f64(),
            steps,
            peak_rss: process_memory::peak_rss(),
        }
    }
}

/// The sampler's observer: one phase per expert group, residency advice at group changes.
struct SamplingPhases<'r, 'f, 'p> {
    residency: &'r Residency<'f>,
    progress: &'p mut dyn Progress,
    dense: bool,
    phases: Vec<PhaseReport>,
    /// (phase name, steps so far) of the open phase.
    current: Option<(String, usize)>,
    clock: PhaseClock,
    step_started: Instant,
}

impl SamplingPhases<'_, '_, '_> {
    fn close(&mut self) {
        if let Some((name, steps)) = self.current.take() {
            self.phases.push(self.clock.finish(&name, steps));
        }
    }
}

impl SamplingObserver for SamplingPhases<'_, '_, '_> {
    fn step_begin(&mut self, step: &StepInfo) {
        let name = if self.dense {
            "sampling (dense)".to_string()
        } else {
            format!("group {}", step.group)
        };
        if self.current.as_ref().map(|(n, _)| n) != Some(&name) {
            self.close();
            self.clock = PhaseClock::start();
            self.current = Some((name, 0));
        }
        // The current group's last step: read the next group ahead.
        if !self.dense {
            let next = step.next_group.or(step.corrector_group);
            if let Some(next) = next.filter(|&n| n != step.group) {
                self.residency.prefetch_group(next);
            }
        }
        self.step_started = Instant::now();
    }

    fn step_end(&mut self, step: &StepInfo) {
        if let Some((_, steps)) = self.current.as_mut() {
            *steps += 1;
        }
        self.progress
            .step(step, self.step_started.elapsed().as_secs_f64());
        if !self.dense && step.next_group != Some(step.group) {
            // Sampling has left this group for good (times only increase).
            self.residency.finish_group(step.group);
            if let Some(corrector) = step.corrector_group.filter(|&g| g != step.group) {
                if step.next_group != Some(corrector) {
                    self.residency.finish_group(corrector);
                }
            }
        }
    }
}
