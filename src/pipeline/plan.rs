//! The memory plan of a generation, from the file's metadata and tensor table alone: the release
//! policy, the groups sampling visits, and the predicted peak per phase on the host (and, given
//! what only a loaded replica knows, on a device). `latte generate --dry-run` plans with this
//! before loading anything; a [`Generator`](super::generate::Generator) plans with the same
//! [`GenerationPlanner`], so the figures a dry run prints are the ones a real run checks.
//!
//! The DC-AE decoder's working memory depends on its structure, which only its loader knows; the
//! planner loads it on `backend::shape_only`, a backend that keeps tensor shapes and never reads weights
//! (no f32 copy of an f16 decoder: ~925 MB on the full-size model), so the figure is the
//! decoder's own `predicted_working_bytes`, not a second copy of its arithmetic.
//!
//! This module computes sizes; it must not load weights, print or decide what to do when a plan
//! exceeds a budget (the caller does).

use crate::backend::shape_only::SHAPE_ONLY;
use crate::backend::Backend;
use crate::image::{merged_tokens, RgbImage};
use crate::model::dcae::Decoder;
use crate::model::flow::FlowConfig;
use crate::model::text::TextConfig;
use crate::model::vision::VisionConfig;
use crate::model::ModelFile;
use crate::residency::{memory_plan, BufferSizes, FileParts, PhaseMemory, ReleasePolicy};
use crate::schedule::TimestepSchedule;

use super::device_groups::{plan_slots, BudgetError, SlotPlan};
use super::generate::{GenerateError, GenerateOptions};
use super::image_prompt::ImagePromptError;
use super::sampler::SamplerKind;

/// When finished expert groups are released: under a `--mem-budget`, or when the file is larger
/// than the memory free now (it could not stay resident anyway).
pub fn release_policy(file: &ModelFile, budget: Option<u64>) -> ReleasePolicy {
    let file_len = file.gguf().bytes().len() as u64;
    match (budget, crate::process_memory::available_memory()) {
        (Some(_), _) => ReleasePolicy::ReleaseFinished,
        (None, Some(free)) if file_len > free => ReleasePolicy::ReleaseFinished,
        _ => ReleasePolicy::Keep,
    }
}

/// The predicted peak working memory of a run on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// What the process held before loading anything (its code, the runtime, an open device, a
    /// file held in memory): under every phase's figure.
    pub baseline: u64,
    /// Per phase, in the order they run: weights resident and buffers, baseline excluded.
    pub phases: Vec<PhaseMemory>,
}

impl MemoryPlan {
    /// The largest phase, baseline included.
    pub fn peak(&self) -> u64 {
        self.baseline
            + self
                .phases
                .iter()
                .map(PhaseMemory::total)
                .max()
                .unwrap_or(0)
    }
}

/// Device memory per phase, predicted before anything runs (GPU backends; `--dry-run`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevicePlan {
    pub slots: SlotPlan,
    /// Resident while sampling: shared replica tensors, prompt K/V, working buffers.
    pub sampling_fixed: u64,
    /// Per phase: (name, bytes).
    pub phases: Vec<(String, u64)>,
}

/// What only a replica loaded on the device can tell (its weights are repacked there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceFacts {
    /// Device bytes of the shared replica tensors, measured after loading them.
    pub shared_bytes: u64,
    /// Device bytes of the largest expert group (one slot).
    pub slot_bytes: u64,
}

/// Everything a plan needs, read from one file's metadata and tensor table.
pub struct GenerationPlanner<'f, B: Backend> {
    file: &'f ModelFile,
    backend: &'f B,
    text: TextConfig,
    flow: FlowConfig,
    parts: FileParts,
    policy: ReleasePolicy,
    baseline: u64,
    /// The file's bytes are process memory (not a map): they are in the baseline already.
    in_memory: bool,
}

impl<'f, B: Backend> GenerationPlanner<'f, B> {
    /// Reads the configs and the file's parts (no tensor data); `baseline` is the RSS of the
    /// process before loading (see [`MemoryPlan::baseline`]).
    pub fn new(
        backend: &'f B,
        file: &'f ModelFile,
        policy: ReleasePolicy,
        baseline: u64,
    ) -> Result<Self, GenerateError> {
        if !FlowConfig::present(file) {
            return Err(GenerateError::NoGeneration(file.name().into()));
        }
        let flow = FlowConfig::from_file(file)?;
        let text = TextConfig::from_file(file)?;
        let parts = FileParts::of(file).map_err(|cause| GenerateError::Layout {
            file: file.name().into(),
            cause,
        })?;
        // A file held in memory is resident as a whole already (it is in the baseline).
        let in_memory = !file.gguf().is_mapped();
        Ok(GenerationPlanner {
            file,
            backend,
            text,
            flow,
            parts,
            policy,
            baseline,
            in_memory,
        })
    }

    pub fn flow(&self) -> &FlowConfig {
        &self.flow
    }

    pub fn text(&self) -> &TextConfig {
        &self.text
    }

    pub fn parts(&self) -> &FileParts {
        &self.parts
    }

    pub fn policy(&self) -> ReleasePolicy {
        self.policy
    }

    /// The schedule `options` ask for, checked (the step count is bounded here, before anything
    /// sized by it exists).
    pub fn schedule(&self, options: &GenerateOptions) -> Result<TimestepSchedule, GenerateError> {
        if !options.guidance.is_finite() || options.guidance < 0.0 {
            return Err(GenerateError::BadGuidance(options.guidance));
        }
        Ok(TimestepSchedule::new(
            options.steps,
            self.flow.time_shift,
            &self.flow.group_boundaries,
        )?)
    }

    /// How many prompt tokens `image` becomes (the processor's resize; nothing runs), or why the
    /// file cannot take one.
    pub fn image_tokens(&self, image: &RgbImage) -> Result<usize, GenerateError> {
        if !VisionConfig::present(self.file) {
            return Err(GenerateError::NoVisionTower {
                file: self.file.name().into(),
            });
        }
        let config = VisionConfig::from_file(self.file)?.preprocess;
        merged_tokens(image.width, image.height, &config)
            .map_err(|e| ImagePromptError::from(e).into())
    }

    /// The groups sampling visits, in order.
    pub fn groups_in_order(&self, options: &GenerateOptions) -> Result<Vec<usize>, GenerateError> {
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
        Ok(groups)
    }

    /// Bytes of the sampling phase's buffers for prompts of up to `prompt_len` tokens and `batch`
    /// images: both prompts' K/V for every layer, one layer's buffers for the rows of every pass,
    /// the TCRA blocks and the latent-sized vectors (the same on the host and on a device).
    pub fn sampling_buffer_bytes(
        &self,
        options: &GenerateOptions,
        prompt_len: usize,
        batch: usize,
    ) -> u64 {
        let c = &self.flow;
        let (n, p) = (c.image_tokens() as u64, prompt_len as u64);
        let kv = (c.kv_heads * c.head_dim) as u64;
        let passes = guidance_passes(options);
        // The passes run as one batch of rows.
        let rows = passes * n;
        // Each further image of a batch keeps its noise, state, prediction, two velocities and
        // its final latent.
        let per_image = 6 * c.latent_len() as u64;
        4 * (passes * 2 * p * kv * c.layer_count as u64
            + rows * (4 * c.hidden + 3 * c.heads * c.head_dim + 2 * c.ffn_hidden) as u64
            + 2 * rows * kv
            + passes * 2 * (p + n) * kv
            + (2 * passes + 1) * (c.heads as u64) * n * n
            + 8 * c.latent_len() as u64
            + per_image * batch.saturating_sub(1) as u64)
    }

    /// The rest of what sampling keeps on a device: the backend's own memory (the attention scores
    /// of one pass, the rounded activations of the widest product over every pass's rows, its
    /// parameter arena and read-back staging), every layer's timestep gates, the time embedding's
    /// buffers and the two prompts' image RoPE tables.
    fn sampling_device_extra_bytes(&self, options: &GenerateOptions, prompt_len: usize) -> u64 {
        let c = &self.flow;
        let n = c.image_tokens() as u64;
        let rows = guidance_passes(options) * n;
        let scores = (c.heads as u64) * n * (n + prompt_len as u64);
        let widest = rows * (c.ffn_hidden.max(c.hidden).max(c.heads * c.head_dim)) as u64;
        let gates = c.layer_count as u64 * (4 * c.hidden + c.heads) as u64 + c.hidden as u64;
        let time = (c.time_freq_dim + c.hidden) as u64;
        let rope = 2 * n * c.head_dim as u64;
        4 * (scores + widest + gates + time + rope)
            + self.backend.overhead_bytes(4 * c.latent_len() as u64)
    }

    /// The size `[height, width]` of the images this file makes.
    pub fn image_size(&self) -> Result<[usize; 2], GenerateError> {
        Ok(self.decoder_working()?.2)
    }

    /// The decoder's working memory for one latent on the CPU (an upper bound for a device's, whose
    /// linear attention keeps less), the host bytes of its loaded weights beyond the file, and the
    /// size of the image it makes.
    fn decoder_working(&self) -> Result<(u64, u64, [usize; 2]), GenerateError> {
        let s = self.flow.latent_size;
        let decoder = Decoder::load_on(&SHAPE_ONLY, self.file)?;
        Ok((
            decoder.predicted_working_bytes(s, s)?,
            decoder.conv_weight_host_bytes()? + self.decoder_vector_bytes(),
            decoder.output_hw(s, s)?,
        ))
    }

    /// Bytes of the f32 copies the decoder makes of its per-channel vectors (norms, biases).
    fn decoder_vector_bytes(&self) -> u64 {
        self.file
            .gguf()
            .tensor_infos()
            .iter()
            .filter(|t| {
                t.name.starts_with("dcae.") && t.dims.iter().filter(|&&d| d > 1).count() <= 1
            })
            .map(|t| 4 * t.dims.iter().product::<u64>())
            .sum()
    }

    /// Predicted peak working memory per phase on the host for prompts of up to `prompt_len`
    /// tokens and `batch` images.
    pub fn memory_plan(
        &self,
        options: &GenerateOptions,
        prompt_len: usize,
        batch: usize,
    ) -> Result<MemoryPlan, GenerateError> {
        let groups = self.groups_in_order(options)?;
        let tc = &self.text;
        let f = 4u64;
        // Prefill: embeddings, normed rows, q, attention, projections, FFN and the KV cache, for
        // the prompt; the scores are one row per head. The embedding rows of the prompt's tokens
        // are read from the file: at most one page each.
        let p = prompt_len as u64;
        let prefill = f
            * (p * (4 * tc.hidden + 2 * tc.q_dim() + 2 * tc.ffn) as u64
                + 2 * p * (tc.layers * tc.kv_dim()) as u64
                + (tc.heads as u64) * p)
            + p * 4096;
        let on_device = self.backend.device_memory().is_some();
        let c = &self.flow;
        let extra = batch.saturating_sub(1) as u64;
        // On a device, the sampler's buffers are there; the host keeps its latent-sized vectors.
        let sampling = if on_device {
            f * (8 + 6 * extra) * c.latent_len() as u64
        } else {
            self.sampling_buffer_bytes(options, prompt_len, batch)
        };
        let (working, weights, [h, w]) = self.decoder_working()?;
        // Every image of a batch stays in memory (latent and pixels) until the batch ends.
        let kept = f * extra * (c.latent_len() + 3 * h * w) as u64;
        // The CPU decoder holds its weights packed for its kernels (and its vectors as f32) for the
        // decode phase. On a device only the latent and the image are here.
        let decode = if on_device {
            f * (c.latent_len() as u64 + 3 * 16 * c.latent_len() as u64) + kept
        } else {
            working + weights + kept
        };
        let mut phases = memory_plan(
            &self.parts,
            self.policy,
            options.dense,
            &groups,
            BufferSizes {
                prefill,
                sampling,
                decode,
            },
        );
        if self.in_memory {
            phases.iter_mut().for_each(|phase| phase.weights = 0);
        }
        Ok(MemoryPlan {
            baseline: self.baseline,
            phases,
        })
    }

    /// The device slots sampling will use under `options` and the fixed bytes beside them, or why
    /// they do not fit the budget.
    pub fn slot_plan(
        &self,
        options: &GenerateOptions,
        prompt_len: usize,
        facts: DeviceFacts,
    ) -> Result<(SlotPlan, u64), GenerateError> {
        if facts.slot_bytes == 0 {
            let none = SlotPlan {
                slots: 0,
                slot_bytes: 0,
            };
            return Ok((none, 0));
        }
        let fixed = facts.shared_bytes
            + self.sampling_buffer_bytes(options, prompt_len, 1)
            + self.sampling_device_extra_bytes(options, prompt_len);
        let plan = plan_slots(
            self.flow.group_count,
            facts.slot_bytes,
            fixed,
            options.device_budget,
            options.dense,
        )
        .map_err(GenerateError::Budget)?;
        Ok((plan, fixed))
    }

    /// Device bytes of the decode phase: the shared replica tensors (still loaded), the decoder's
    /// weights (as stored, vectors as f32), its working memory and the backend's own.
    fn decode_device_bytes(&self, facts: DeviceFacts) -> Result<u64, GenerateError> {
        let weights: u64 = self
            .file
            .gguf()
            .tensor_infos()
            .iter()
            .filter(|t| t.name.starts_with("dcae."))
            .map(|t| {
                if t.dims.len() == 1 {
                    4 * t.dims[0]
                } else {
                    t.n_bytes
                }
            })
            .sum();
        let (working, _, [h, w]) = self.decoder_working()?;
        let image_bytes = 4 * (3 * h * w) as u64;
        Ok(facts.shared_bytes + weights + working + self.backend.overhead_bytes(image_bytes))
    }

    /// The device-memory plan of a run (`None` on the CPU), checked against the budget.
    pub fn device_plan(
        &self,
        options: &GenerateOptions,
        prompt_len: usize,
        facts: DeviceFacts,
    ) -> Result<Option<DevicePlan>, GenerateError> {
        if self.backend.device_memory().is_none() {
            return Ok(None);
        }
        let (slots, fixed) = self.slot_plan(options, prompt_len, facts)?;
        let sampling = fixed + slots.slots as u64 * slots.slot_bytes;
        let decode = self.decode_device_bytes(facts)?;
        if let Some(budget) = options.device_budget {
            if decode > budget {
                return Err(GenerateError::Budget(BudgetError {
                    what: "the DC-AE decode".into(),
                    needed: decode,
                    available: budget,
                }));
            }
        }
        let mut phases = vec![(
            "prefill (CPU)".to_string(),
            facts.shared_bytes + self.backend.overhead_bytes(0),
        )];
        if options.dense {
            phases.push(("sampling (dense, all groups)".into(), sampling));
        } else {
            for k in self.groups_in_order(options)? {
                phases.push((format!("group {k}"), sampling));
            }
        }
        phases.push(("decode".into(), decode));
        Ok(Some(DevicePlan {
            slots,
            sampling_fixed: fixed,
            phases,
        }))
    }
}

/// The velocity passes of one evaluation: conditional, and unconditional unless guidance is off.
fn guidance_passes(options: &GenerateOptions) -> u64 {
    if options.guidance == 1.0 {
        1
    } else {
        2
    }
}

/// Decoder working memory and dequantized bytes are what the CPU decoder itself predicts.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CPU;

    fn demo() -> ModelFile {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/demo-f16.gguf");
        ModelFile::open(path).unwrap()
    }

    #[test]
    fn shape_only_decoder_predicts_what_the_loaded_one_does() {
        let file = demo();
        let s = FlowConfig::from_file(&file).unwrap().latent_size;
        let shapes = Decoder::load_on(&SHAPE_ONLY, &file).unwrap();
        let loaded = Decoder::load(&file).unwrap();
        assert_eq!(
            shapes.predicted_working_bytes(s, s).unwrap(),
            loaded.predicted_working_bytes(s, s).unwrap()
        );
        assert_eq!(
            shapes.output_hw(s, s).unwrap(),
            loaded.output_hw(s, s).unwrap()
        );
    }

    #[test]
    fn the_plan_includes_the_baseline_and_grows_with_the_batch() {
        let file = demo();
        let planner = GenerationPlanner::new(&CPU, &file, ReleasePolicy::Keep, 1 << 20).unwrap();
        let options = GenerateOptions {
            steps: 8,
            guidance: 2.0,
            seed: 0,
            sampler: SamplerKind::Euler,
            dense: false,
            device_budget: None,
        };
        let one = planner.memory_plan(&options, 16, 1).unwrap();
        let three = planner.memory_plan(&options, 16, 3).unwrap();
        assert_eq!(one.baseline, 1 << 20);
        let largest = one.phases.iter().map(PhaseMemory::total).max().unwrap();
        assert_eq!(one.peak(), (1 << 20) + largest);
        assert!(three.peak() > one.peak());
        let too_many = GenerateOptions {
            steps: 1_000_000_000,
            ..options
        };
        assert!(matches!(
            planner.memory_plan(&too_many, 16, 1),
            Err(GenerateError::Schedule(
                crate::schedule::ScheduleError::TooManySteps(_)
            ))
        ));
    }
}
