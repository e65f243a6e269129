//! `Generator`: prompt ids (and optionally an image the VLM sees in the prompt) → image, the whole
//! of `latte generate` below the CLI. Phases: prefill (the prompt image through the vision tower;
//! the conditional and, under guidance, the empty prompt through the frozen VLM, once),
//! sampling (layerwise: one expert group at a time, with the residency advice of `residency`),
//! decode (DC-AE, clamp). Each phase is timed and its peak RSS read, for the summary.
//!
//! The VLM prefill runs on the CPU (the frozen VLM is read once per prompt from the mapped file);
//! the replica and the decoder run on the generator's backend. On a GPU backend the expert groups
//! move through device slots (`device_groups`), the prompt K/V are uploaded once, and the decoder
//! is uploaded only after the groups are released, so device memory holds one phase at a time.
//!
//! This module owns the order of phases and their bookkeeping; it must not parse arguments, print
//! or write files (the CLI does), nor tokenize (the caller passes ids).

use std::time::Instant;

use crate::backend::cpu::{CpuBackend, CPU, CPU_MAPPED};
use crate::backend::Backend;
use crate::image::RgbImage;
use crate::model::dcae::{Decoder, DecoderScratch};
use crate::model::flow::{PromptKv, Replica};
use crate::model::text::{TextModel, TextScratch};
use crate::model::vision::{VisionConfig, VisionModel};
use crate::model::{ModelError, ModelFile};
use crate::process_memory;
use crate::residency::{ReleasePolicy, Residency};
use crate::schedule::{ScheduleError, TimestepSchedule};

use super::device_groups::{BudgetError, DeviceGroups, SlotPlan};
use super::image_prompt::{expand_image_pad, ImagePromptError, PromptImage};
pub use super::plan::{DeviceFacts, DevicePlan, GenerationPlanner, MemoryPlan};
use super::prompt_context::prefill;
use super::sampler::{sample_batch, SamplerKind, SamplingObserver, SamplingOptions, StepInfo};

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
    #[error("{file}: {cause}")]
    Layout {
        file: String,
        cause: crate::model::expert_groups::GroupLayoutError,
    },
    #[error("{0}")]
    Budget(BudgetError),
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    #[error("the {what} of seed {seed} holds {value} at index {index}; no image is written (a guidance scale of {guidance} may be too large)")]
    NonFinite {
        what: &'static str,
        index: usize,
        value: f32,
        seed: u64,
        guidance: f32,
    },
    #[error("a batch makes 1 to {MAX_BATCH} images, not {0}")]
    BatchSize(usize),
    #[error("the batch produced no image")]
    EmptyBatch,
    #[error("cancelled")]
    Cancelled,
}

/// Images one [`Generator::generate_batch`] makes at most (each keeps a latent and an image in
/// memory until the batch ends).
pub const MAX_BATCH: usize = 64;

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
    /// Device memory the run may use (`--vram-budget`); `None`: as much as it needs.
    pub device_budget: Option<u64>,
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
    /// Peak device memory the backend allocated during the phase (GPU backends).
    pub device_peak: Option<u64>,
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
    /// Expert groups copied to the device (0 on the CPU).
    pub group_uploads: usize,
}

/// One image of a [`GeneratedBatch`].
pub struct GeneratedImage {
    pub seed: u64,
    /// `[3, H, W]` in `[−1, 1]`, every value finite.
    pub image: Vec<f32>,
    /// The final latent `[C, S, S]` (before the decoder's scaling).
    pub latent: Vec<f32>,
}

/// The result of [`Generator::generate_batch`]: the images in the order of their seeds.
pub struct GeneratedBatch {
    pub images: Vec<GeneratedImage>,
    pub height: usize,
    pub width: usize,
    pub phases: Vec<PhaseReport>,
    /// Expert groups copied to the device (0 on the CPU).
    pub group_uploads: usize,
}

/// Hears about progress (the CLI's progress bar).
pub trait Progress {
    fn phase(&mut self, _name: &str) {}
    /// After each sampling step: the step, and the seconds it took.
    fn step(&mut self, _step: &StepInfo, _seconds: f64) {}
    /// Asked between steps and phases: true ends the run with [`GenerateError::Cancelled`] (a
    /// client gone, a deadline passed).
    fn cancelled(&self) -> bool {
        false
    }
}

/// No progress reports.
pub struct Quiet;
impl Progress for Quiet {}

/// Every model a generation needs, loaded from one file.
pub struct Generator<'f, B: Backend = CpuBackend> {
    file: &'f ModelFile,
    backend: &'f B,
    text: TextModel<'f>,
    /// The replica on the CPU, for binding prompt K/V during the prefill (`ctx_kv = replica`
    /// projects the VLM's normed inputs with its layers' k/v).
    context_replica: Replica<'f>,
    replica: Replica<'f, B>,
    residency: Residency<'f>,
    /// Device bytes of the shared replica tensors (measured after loading them).
    shared_device_bytes: u64,
    planner: GenerationPlanner<'f, B>,
}

impl<'f> Generator<'f> {
    /// [`Generator::load_on`] the CPU.
    pub fn load(file: &'f ModelFile, policy: ReleasePolicy) -> Result<Self, GenerateError> {
        Self::load_on(&CPU, file, policy)
    }
}

impl<'f, B: Backend> Generator<'f, B> {
    /// Loads the text decoder and the replica on the CPU, and the replica on `backend` (the DC-AE
    /// decoder is loaded for the decode phase only: on the CPU its f32 copies of f16 weights, on
    /// a GPU its device buffers, would otherwise sit in memory while sampling); then releases the
    /// pages loading touched in the expert groups, so sampling starts with none.
    pub fn load_on(
        backend: &'f B,
        file: &'f ModelFile,
        policy: ReleasePolicy,
    ) -> Result<Self, GenerateError> {
        // What the process holds before loading: the baseline of every phase's predicted peak.
        let baseline = process_memory::current_rss().unwrap_or(0);
        let planner = GenerationPlanner::new(backend, file, policy, baseline)?;
        // The text model and the context replica compute on the file's layout: their pages are
        // released after the prompt phase, which a repacked copy would keep in memory.
        let context_replica = Replica::load_on(&CPU_MAPPED, file)?;
        let (replica, shared_device_bytes) = load_replica_measured(backend, file)?;
        let text = TextModel::load_on(&CPU_MAPPED, file)?;
        // Fail now, not after sampling, when the decoder is missing or malformed or the parts
        // do not fit together: its shapes only (no dequantized copy of its weights).
        let decoder = Decoder::load_on(&crate::backend::shape_only::SHAPE_ONLY, file)?;
        crate::model::check::check_generation(
            file,
            text.config(),
            replica.config(),
            decoder.config(),
        )?;
        drop(decoder);
        let residency = Residency::new(file, policy).map_err(|source| GenerateError::Layout {
            file: file.name().into(),
            cause: source,
        })?;
        residency.release_all_groups();
        residency.release_decoder();
        Ok(Generator {
            file,
            backend,
            text,
            context_replica,
            replica,
            residency,
            shared_device_bytes,
            planner,
        })
    }

    pub fn file(&self) -> &ModelFile {
        self.file
    }

    pub fn backend(&self) -> &'f B {
        self.backend
    }

    pub fn replica(&self) -> &Replica<'f, B> {
        &self.replica
    }

    /// The replica on the CPU (what prompt K/V are bound with).
    pub fn context_replica(&self) -> &Replica<'f> {
        &self.context_replica
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
        self.planner.image_tokens(image)
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

    /// The planner of this generator's runs (the same one `--dry-run` uses before loading).
    pub fn planner(&self) -> &GenerationPlanner<'f, B> {
        &self.planner
    }

    /// The schedule `options` ask for, checked.
    pub fn schedule(&self, options: &GenerateOptions) -> Result<TimestepSchedule, GenerateError> {
        self.planner.schedule(options)
    }

    fn device_facts(&self) -> DeviceFacts {
        device_facts(self.backend, &self.replica, self.shared_device_bytes)
    }

    /// The device slots sampling will use under `options` (0 on the CPU), or why they do not fit
    /// the budget.
    pub fn slot_plan(
        &self,
        options: &GenerateOptions,
        prompt_len: usize,
    ) -> Result<(SlotPlan, u64), GenerateError> {
        self.planner
            .slot_plan(options, prompt_len, self.device_facts())
    }

    /// The device-memory plan of a run (`None` on the CPU), checked against the budget.
    pub fn device_plan(
        &self,
        options: &GenerateOptions,
        prompt_len: usize,
    ) -> Result<Option<DevicePlan>, GenerateError> {
        self.planner
            .device_plan(options, prompt_len, self.device_facts())
    }

    /// Predicted peak working memory per phase for prompts of up to `prompt_len` tokens and
    /// `batch` images (the process's RSS before loading included).
    pub fn memory_plan(
        &self,
        options: &GenerateOptions,
        prompt_len: usize,
        batch: usize,
    ) -> Result<MemoryPlan, GenerateError> {
        self.planner.memory_plan(options, prompt_len, batch)
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
        let mut batch = self.generate_batch(
            cond_ids,
            image,
            uncond_ids,
            options,
            &[options.seed],
            progress,
        )?;
        let one = batch.images.pop().ok_or(GenerateError::EmptyBatch)?;
        Ok(Generated {
            image: one.image,
            height: batch.height,
            width: batch.width,
            latent: one.latent,
            phases: batch.phases,
            group_uploads: batch.group_uploads,
        })
    }

    /// One image per seed of `seeds` (`options.seed` is not used), with one prefill of the
    /// prompts and the batch sampled step by step together (each step's expert group serves every
    /// image; see [`sample_batch`]). Image k is what [`generate_with_image`](Self::generate_with_image)
    /// makes with seed `seeds[k]`. A latent or image that is not finite ends the run with
    /// [`GenerateError::NonFinite`].
    pub fn generate_batch(
        &self,
        cond_ids: &[u32],
        image: Option<&RgbImage>,
        uncond_ids: &[u32],
        options: &GenerateOptions,
        seeds: &[u64],
        progress: &mut dyn Progress,
    ) -> Result<GeneratedBatch, GenerateError> {
        if seeds.is_empty() || seeds.len() > MAX_BATCH {
            return Err(GenerateError::BatchSize(seeds.len()));
        }
        let schedule = self.schedule(options)?;
        let c = self.replica.config();
        let mut phases = Vec::new();

        // Prefill, on the CPU (the device keeps only what this run allocates).
        progress.phase("prefill");
        self.backend.release_scratch();
        let mut clock = PhaseClock::start(self.backend);
        let image = image.map(|image| self.encode_image(image)).transpose()?;
        let cond_ids = match &image {
            Some(image) => expand_image_pad(cond_ids, image.token_id, image.tokens())?,
            None => cond_ids.to_vec(),
        };
        // The device plan is checked before any sampling work (a budget too small fails here).
        let prompt_len = cond_ids.len().max(uncond_ids.len());
        let (slots, _) = self.slot_plan(options, prompt_len)?;
        if let Some(plan) = self.device_plan(options, prompt_len)? {
            debug_assert_eq!(plan.slots, slots);
        }
        let mut scratch = TextScratch::new();
        let cond = prefill(
            &self.text,
            &self.context_replica,
            &cond_ids,
            image.as_ref(),
            &mut scratch,
        )?;
        drop(image);
        let uncond: Option<PromptKv> = if options.guidance != 1.0 {
            Some(prefill(
                &self.text,
                &self.context_replica,
                uncond_ids,
                None,
                &mut scratch,
            )?)
        } else {
            None
        };
        drop(scratch);
        CpuBackend::release_scratch();
        phases.push(clock.finish("prefill", 0));
        self.residency.release_vlm();

        // Sampling.
        progress.phase("sampling");
        self.backend.release_scratch();
        let cond = cond.to_backend(self.backend, c)?;
        let uncond = uncond.map(|u| u.to_backend(self.backend, c)).transpose()?;
        self.backend
            .reserve_group_slots(slots.slots, slots.slot_bytes)?;
        self.residency.prefetch_shared();
        if options.dense {
            (0..c.group_count).for_each(|k| self.residency.prefetch_group(k));
        } else {
            self.residency.prefetch_group(schedule.group_of(0.0));
        }
        let noises: Vec<Vec<f32>> = seeds
            .iter()
            .map(|&seed| {
                let mut noise = vec![0.0; c.latent_len()];
                crate::rng::fill_normal(seed, &mut noise);
                noise
            })
            .collect();
        let noises: Vec<&[f32]> = noises.iter().map(Vec::as_slice).collect();
        let (latents, sampling_phases, group_uploads, progress) = std::thread::scope(|scope| {
            let mut devices = DeviceGroups::new(scope, &self.replica, slots);
            let mut observer = SamplingPhases {
                residency: &self.residency,
                devices: &mut devices,
                backend: self.backend,
                progress,
                dense: options.dense,
                phases: Vec::new(),
                current: None,
                clock: PhaseClock::start(self.backend),
                step_started: Instant::now(),
                step: None,
                failure: None,
            };
            if options.dense {
                observer.devices.ensure_all()?;
                if slots.slots > 0 {
                    (0..c.group_count).for_each(|k| self.residency.release_uploaded_group(k));
                }
            }
            let latents = sample_batch(
                &self.replica,
                &schedule,
                &noises,
                &cond,
                uncond.as_ref(),
                &SamplingOptions {
                    sampler: options.sampler,
                    guidance: options.guidance,
                    dense: options.dense,
                },
                &mut observer,
            );
            if let Some(e) = observer.failure.take() {
                return Err(GenerateError::Backend(e));
            }
            let latents = latents?;
            self.backend.synchronize()?;
            observer.close();
            let (phases, progress) = (std::mem::take(&mut observer.phases), observer.progress);
            devices.close()?;
            Ok::<_, GenerateError>((latents, phases, devices.uploads, progress))
        })?;
        phases.extend(sampling_phases);
        if progress.cancelled() {
            return Err(GenerateError::Cancelled);
        }
        drop((cond, uncond));
        for (latent, &seed) in latents.iter().zip(seeds) {
            check_finite("latent", latent, seed, options)?;
        }

        // Decode: the groups (and the sampler's working memory) leave the device before the
        // decoder arrives.
        self.backend.release_group_slots();
        self.backend.release_scratch();
        self.residency.release_generation();
        if progress.cancelled() {
            return Err(GenerateError::Cancelled);
        }
        progress.phase("decode");
        let mut clock = PhaseClock::start(self.backend);
        let decoder = Decoder::load_on(self.backend, self.file)?;
        let mut scratch = DecoderScratch::default();
        let mut images = Vec::with_capacity(latents.len());
        for (latent, &seed) in latents.into_iter().zip(seeds) {
            let image =
                decoder.decode_flow_latent(&latent, c.latent_size, c.latent_size, &mut scratch)?;
            check_finite("decoded image", &image, seed, options)?;
            images.push(GeneratedImage {
                seed,
                image,
                latent,
            });
        }
        let [height, width] = decoder.output_hw(c.latent_size, c.latent_size)?;
        drop((decoder, scratch));
        CpuBackend::release_scratch();
        self.backend.release_scratch();
        phases.push(clock.finish("decode", 0));
        Ok(GeneratedBatch {
            images,
            height,
            width,
            phases,
            group_uploads,
        })
    }
}

/// The replica on `backend`, and the device bytes its shared tensors took (0 on the CPU).
fn load_replica_measured<'f, B: Backend>(
    backend: &'f B,
    file: &'f ModelFile,
) -> Result<(Replica<'f, B>, u64), GenerateError> {
    let before = backend.device_memory().map_or(0, |m| m.allocated);
    let replica = Replica::load_on(backend, file)?;
    let shared = backend
        .device_memory()
        .map_or(0, |m| m.allocated.saturating_sub(before));
    Ok((replica, shared))
}

/// What the device plan needs of a replica loaded on `backend`: its shared bytes and its largest
/// group as the backend packs it.
fn device_facts<B: Backend>(
    backend: &B,
    replica: &Replica<'_, B>,
    shared_bytes: u64,
) -> DeviceFacts {
    DeviceFacts {
        shared_bytes,
        slot_bytes: (0..replica.config().group_count)
            .map(|k| backend.group_bytes(&replica.group_weights(k)))
            .max()
            .unwrap_or(0),
    }
}

/// [`DeviceFacts`] for a dry run on a device: loads only the replica there (its shared tensors
/// are uploaded and measured, its groups prepared and sized), none of the other models. On the
/// CPU nothing is loaded (the facts are zero: no device plan).
pub fn measure_device_facts<'f, B: Backend>(
    backend: &'f B,
    file: &'f ModelFile,
) -> Result<DeviceFacts, GenerateError> {
    if backend.device_memory().is_none() {
        return Ok(DeviceFacts {
            shared_bytes: 0,
            slot_bytes: 0,
        });
    }
    let (replica, shared) = load_replica_measured(backend, file)?;
    Ok(device_facts(backend, &replica, shared))
}

/// NaN or infinity anywhere in `values` (a guidance scale so large that the velocity overflows,
/// or a broken file) is an error: an image made of clamped non-numbers would look like a result.
fn check_finite(
    what: &'static str,
    values: &[f32],
    seed: u64,
    options: &GenerateOptions,
) -> Result<(), GenerateError> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(GenerateError::NonFinite {
            what,
            index,
            value: values[index],
            seed,
            guidance: options.guidance,
        }),
    }
}

/// Wall time, peak RSS and peak device memory of one phase.
struct PhaseClock<'b, B: Backend> {
    backend: &'b B,
    started: Instant,
}

impl<'b, B: Backend> PhaseClock<'b, B> {
    fn start(backend: &'b B) -> Self {
        process_memory::reset_peak_rss();
        backend.reset_peak_memory();
        PhaseClock {
            backend,
            started: Instant::now(),
        }
    }

    fn finish(&mut self, name: &str, steps: usize) -> PhaseReport {
        PhaseReport {
            name: name.into(),
            seconds: self.started.elapsed().as_secs_f64(),
            steps,
            peak_rss: process_memory::peak_rss(),
            device_peak: self.backend.device_memory().map(|m| m.peak),
        }
    }
}

/// The sampler's observer: one phase per expert group, page advice and device residency at group
/// changes.
struct SamplingPhases<'r, 's, 'env, 'f, 'p, B: Backend> {
    residency: &'r Residency<'f>,
    devices: &'r mut DeviceGroups<'s, 'env, 'f, B>,
    backend: &'f B,
    progress: &'p mut dyn Progress,
    dense: bool,
    phases: Vec<PhaseReport>,
    /// (phase name, steps so far) of the open phase.
    current: Option<(String, usize)>,
    clock: PhaseClock<'f, B>,
    step_started: Instant,
    /// The step being sampled.
    step: Option<StepInfo>,
    /// A device failure during a step (the observer cannot return errors; sampling stops at the
    /// next evaluation, which finds the group missing, and this is the cause reported).
    failure: Option<crate::backend::BackendError>,
}

impl<B: Backend> SamplingPhases<'_, '_, '_, '_, '_, B> {
    fn close(&mut self) {
        if let Some((name, steps)) = self.current.take() {
            self.phases.push(self.clock.finish(&name, steps));
        }
    }

    fn record(&mut self, result: Result<(), crate::backend::BackendError>) {
        if let Err(e) = result {
            self.failure.get_or_insert(e);
        }
    }

    /// Makes `group` resident on the device; once copied there, its file pages leave the host.
    fn ensure(&mut self, group: usize) {
        let uploads = self.devices.uploads;
        let result = self.devices.ensure(group);
        self.record(result);
        if self.devices.uploads > uploads {
            self.residency.release_uploaded_group(group);
        }
    }
}

impl<B: Backend> SamplingObserver for SamplingPhases<'_, '_, '_, '_, '_, B> {
    fn step_begin(&mut self, step: &StepInfo) {
        let name = if self.dense {
            "sampling (dense)".to_string()
        } else {
            format!("group {}", step.group)
        };
        if self.current.as_ref().map(|(n, _)| n) != Some(&name) {
            self.close();
            self.clock = PhaseClock::start(self.backend);
            self.current = Some((name, 0));
        }
        if !self.dense {
            // The group of this step's first evaluation must be on the device (Heun's corrector
            // is made resident after the first evaluation, in `evaluation`).
            self.ensure(step.group);
            let next = step.next_group.or(step.corrector_group);
            if let Some(next) = next.filter(|&n| n != step.group) {
                // The current group's last step: read the next group ahead.
                self.residency.prefetch_group(next);
            }
            // Stage the group after this one on a host thread while this one computes.
            self.devices.prefetch(step.group + 1);
        }
        self.step = Some(*step);
        self.step_started = Instant::now();
    }

    fn evaluation(&mut self, evaluation: &crate::pipeline::sampler::Evaluation<'_>) {
        let Some(step) = self.step else { return };
        // After the last image's first evaluation: the batch is done with the step's group.
        if self.dense || evaluation.group != step.group || evaluation.image + 1 < evaluation.images
        {
            return;
        }
        if let Some(corrector) = step.corrector_group.filter(|&c| c != step.group) {
            self.ensure(corrector);
        }
    }

    fn cancelled(&self) -> bool {
        self.progress.cancelled()
    }

    fn step_end(&mut self, step: &StepInfo) {
        if let Some((_, steps)) = self.current.as_mut() {
            *steps += 1;
        }
        // Step times are the device's: wait for the step's work.
        let synced = self.backend.synchronize();
        self.record(synced);
        self.progress
            .step(step, self.step_started.elapsed().as_secs_f64());
        if !self.dense && step.next_group != Some(step.group) {
            // Sampling has left this group for good (times only increase).
            self.residency.finish_group(step.group);
            self.devices.finish(step.group);
            if let Some(corrector) = step.corrector_group.filter(|&g| g != step.group) {
                if step.next_group != Some(corrector) {
                    self.residency.finish_group(corrector);
                    self.devices.finish(corrector);
                }
            }
            if let Some(next) = step.next_group {
                self.ensure(next);
            }
        }
    }
}
