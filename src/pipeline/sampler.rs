//! Flow sampling with layerwise timestep experts (MODEL.md §3, §6; tools/reference/README.md
//! "Euler", "Heun", "Guidance"): integrate `dx/dt = v` from t = 0 (noise) to t = 1, running only the
//! layers of the group that owns each evaluation time (or all layers with `dense`), with
//! classifier-free guidance `v = v_u + s·(v_c − v_u)` (s = 1 skips the unconditional pass).
//!
//! This module owns the update rules and the order of evaluations; it must not load files, run the
//! VLM or manage memory (its observer hears about each step so the caller can).

use crate::backend::Backend;
use crate::model::flow::{LayerTrace, PromptKv, Replica, ReplicaScratch, StepConditioning};
use crate::model::ModelError;
use crate::schedule::TimestepSchedule;

/// The integration rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SamplerKind {
    /// `x ← x + dt·v(x, t_i)`.
    Euler,
    /// `x' = x + dt·v(x, t_i)`, `x ← x + dt·(v(x, t_i) + v(x', t_{i+1}))/2`, every step.
    Heun,
}

/// How to sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingOptions {
    pub sampler: SamplerKind,
    /// Guidance scale s; 1 runs the conditional pass only.
    pub guidance: f32,
    /// Run all layers every step (the standard cost) instead of the owning group's.
    pub dense: bool,
}

/// One step, announced before it runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepInfo {
    pub index: usize,
    pub steps: usize,
    pub t0: f64,
    pub t1: f64,
    /// Group of the first evaluation (the one owning t0).
    pub group: usize,
    /// Group of Heun's corrector (the one owning t1).
    pub corrector_group: Option<usize>,
    /// Group of the next step's first evaluation, if any.
    pub next_group: Option<usize>,
}

/// Which prompt a pass used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Conditional,
    Unconditional,
}

/// One velocity evaluation, reported after it ran.
pub struct Evaluation<'e> {
    /// 0, 1, … over the whole run (Heun makes two per step), the same for every image of a batch.
    pub index: usize,
    /// Which image of the batch (0 for a single image), and how many the batch has.
    pub image: usize,
    pub images: usize,
    pub t: f64,
    pub group: usize,
    pub v_cond: &'e [f32],
    pub v_uncond: Option<&'e [f32]>,
    /// The guided velocity.
    pub v: &'e [f32],
}

/// Hears about the run: progress, residency and parity checks hook in here. Every method has a
/// do-nothing default.
pub trait SamplingObserver {
    fn step_begin(&mut self, _step: &StepInfo) {}
    fn step_end(&mut self, _step: &StepInfo) {}
    fn evaluation(&mut self, _evaluation: &Evaluation<'_>) {}
    /// Whether to report per-layer outputs of this evaluation's passes (costs a callback per layer).
    fn wants_layers(&self, _evaluation: usize) -> bool {
        false
    }
    fn layer(&mut self, _evaluation: usize, _pass: Pass, _trace: LayerTrace<'_>) {}
    /// Asked before each step: true stops sampling there, and the latents returned are unfinished.
    fn cancelled(&self) -> bool {
        false
    }
}

/// An observer that ignores everything.
pub struct Silent;
impl SamplingObserver for Silent {}

/// The latent-sized vectors of one image of a batch.
struct LatentBuffers {
    x: Vec<f32>,
    x_pred: Vec<f32>,
    v0: Vec<f32>,
    v1: Vec<f32>,
}

/// Buffers of one run, allocated once: one set per image, the rest shared.
struct Buffers<B: Backend> {
    latents: Vec<LatentBuffers>,
    /// The un-guided velocities of one evaluation: conditional, then unconditional if it runs.
    guidance: Vec<f32>,
    conditioning: StepConditioning<B>,
    scratch: ReplicaScratch<B>,
}

/// Integrates from `noise` (`[C, S, S]`) over `schedule`; returns the final latent.
pub fn sample<B: Backend>(
    replica: &Replica<'_, B>,
    schedule: &TimestepSchedule,
    noise: &[f32],
    cond: &PromptKv<B>,
    uncond: Option<&PromptKv<B>>,
    options: &SamplingOptions,
    observer: &mut dyn SamplingObserver,
) -> Result<Vec<f32>, ModelError> {
    let mut latents = sample_batch(replica, schedule, &[noise], cond, uncond, options, observer)?;
    Ok(latents.pop().unwrap_or_default())
}

/// Integrates every latent of `noises` over `schedule` with the same prompts, step by step: each
/// step's group (and its time conditioning) serves the whole batch, so a batch visits each group
/// once per step however many images it makes. Every image follows exactly the arithmetic of
/// [`sample`] on its own noise. Returns the final latents in order.
pub fn sample_batch<B: Backend>(
    replica: &Replica<'_, B>,
    schedule: &TimestepSchedule,
    noises: &[&[f32]],
    cond: &PromptKv<B>,
    uncond: Option<&PromptKv<B>>,
    options: &SamplingOptions,
    observer: &mut dyn SamplingObserver,
) -> Result<Vec<Vec<f32>>, ModelError> {
    let config = replica.config();
    if schedule.group_count() != config.group_count {
        return Err(ModelError::Invalid {
            file: "sampler".into(),
            what: format!(
                "schedule has {} groups, the replica {}",
                schedule.group_count(),
                config.group_count
            ),
        });
    }
    let len = config.latent_len();
    if let Some(noise) = noises.iter().find(|n| n.len() != len) {
        return Err(ModelError::Invalid {
            file: "sampler".into(),
            what: format!("noise of {} values, expected {len}", noise.len()),
        });
    }
    let uncond = uncond.filter(|_| options.guidance != 1.0);
    let mut b = Buffers {
        latents: noises
            .iter()
            .map(|noise| LatentBuffers {
                x: noise.to_vec(),
                x_pred: vec![0.0; len],
                v0: vec![0.0; len],
                v1: vec![0.0; len],
            })
            .collect(),
        guidance: vec![0.0; if uncond.is_some() { 2 * len } else { len }],
        conditioning: StepConditioning::default(),
        scratch: ReplicaScratch::default(),
    };
    let times = schedule.times();
    let steps = schedule.steps();
    let heun = options.sampler == SamplerKind::Heun;
    let mut evaluation = 0;
    let Buffers {
        latents,
        guidance,
        conditioning,
        scratch,
    } = &mut b;
    let mut run = Evaluator {
        replica,
        schedule,
        cond,
        uncond,
        options,
        images: noises.len(),
        guidance,
        conditioning,
        scratch,
    };
    for i in 0..steps {
        let (t0, t1) = (times[i], times[i + 1]);
        let (group, corrector_group) = schedule.step_groups(i, heun);
        let info = StepInfo {
            index: i,
            steps,
            t0,
            t1,
            group,
            corrector_group,
            next_group: (i + 1 < steps).then(|| schedule.group_of(times[i + 1])),
        };
        if observer.cancelled() {
            break;
        }
        observer.step_begin(&info);
        // The reference multiplies f32 tensors by Python floats: the factors round to f32.
        let dt = (t1 - t0) as f32;
        run.condition(t0)?;
        for (image, l) in latents.iter_mut().enumerate() {
            run.guided_velocity(&l.x, t0, &mut l.v0, evaluation, image, observer)?;
            if options.sampler == SamplerKind::Euler {
                l.x.iter_mut()
                    .zip(l.v0.iter())
                    .for_each(|(x, v)| *x += dt * v);
            } else {
                l.x_pred
                    .iter_mut()
                    .zip(l.x.iter().zip(l.v0.iter()))
                    .for_each(|(p, (x, v))| *p = x + dt * v);
            }
        }
        evaluation += 1;
        if options.sampler == SamplerKind::Heun {
            run.condition(t1)?;
            let half = ((t1 - t0) * 0.5) as f32;
            for (image, l) in latents.iter_mut().enumerate() {
                run.guided_velocity(&l.x_pred, t1, &mut l.v1, evaluation, image, observer)?;
                for ((x, a), b) in l.x.iter_mut().zip(l.v0.iter()).zip(l.v1.iter()) {
                    *x += half * (a + b);
                }
            }
            evaluation += 1;
        }
        observer.step_end(&info);
    }
    Ok(b.latents.into_iter().map(|l| l.x).collect())
}

/// What every velocity evaluation of a run shares.
struct Evaluator<'r, 'a, B: Backend> {
    replica: &'r Replica<'a, B>,
    schedule: &'r TimestepSchedule,
    cond: &'r PromptKv<B>,
    uncond: Option<&'r PromptKv<B>>,
    options: &'r SamplingOptions,
    images: usize,
    guidance: &'r mut [f32],
    conditioning: &'r mut StepConditioning<B>,
    scratch: &'r mut ReplicaScratch<B>,
}

impl<B: Backend> Evaluator<'_, '_, B> {
    /// The time conditioning of evaluations at `t` (the same for every image).
    fn condition(&mut self, t: f64) -> Result<(), ModelError> {
        let config = self.replica.config();
        let group = self.schedule.group_of(t);
        let layers = if self.options.dense {
            0..config.layer_count
        } else {
            config.layers_of(group)
        };
        // The reference embeds t as an f32 tensor.
        self.replica
            .condition(t as f32, group, layers, self.conditioning, self.scratch)
    }

    /// `v = v_u + s·(v_c − v_u)` at time `t` into `v` (the conditional velocity when there is no
    /// unconditional pass), under the conditioning of the last [`condition`](Self::condition).
    /// Layer traces are offered for the first image of a batch.
    fn guided_velocity(
        &mut self,
        x: &[f32],
        t: f64,
        v: &mut [f32],
        index: usize,
        image: usize,
        observer: &mut dyn SamplingObserver,
    ) -> Result<(), ModelError> {
        let traced = image == 0 && observer.wants_layers(index);
        let prompts: &[&PromptKv<B>] = match self.uncond {
            Some(uncond) => &[self.cond, uncond],
            None => &[self.cond],
        };
        let mut report = |trace: LayerTrace<'_>| {
            let pass = if trace.pass == 0 {
                Pass::Conditional
            } else {
                Pass::Unconditional
            };
            observer.layer(index, pass, trace)
        };
        self.replica.velocity(
            x,
            self.conditioning,
            prompts,
            self.guidance,
            self.scratch,
            traced.then_some(&mut report as &mut dyn FnMut(LayerTrace<'_>)),
        )?;
        let (v_cond, v_uncond) = self.guidance.split_at(v.len());
        let v_uncond = match self.uncond {
            Some(_) => {
                let s = self.options.guidance;
                for ((v, c), u) in v.iter_mut().zip(v_cond).zip(v_uncond) {
                    *v = u + s * (c - u);
                }
                Some(v_uncond)
            }
            None => {
                v.copy_from_slice(v_cond);
                None
            }
        };
        observer.evaluation(&Evaluation {
            index,
            image,
            images: self.images,
            t,
            group: self.schedule.group_of(t),
            v_cond,
            v_uncond,
            v,
        });
        Ok(())
    }
}
