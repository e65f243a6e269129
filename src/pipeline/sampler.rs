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
    /// 0, 1, … over the whole run (Heun makes two per step).
    pub index: usize,
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
}

/// An observer that ignores everything.
pub struct Silent;
impl SamplingObserver for Silent {}

/// Buffers of one run, allocated once.
struct Buffers<B: Backend> {
    x: Vec<f32>,
    x_pred: Vec<f32>,
    v0: Vec<f32>,
    v1: Vec<f32>,
    guidance: GuidanceBuffers,
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
    if noise.len() != len {
        return Err(ModelError::Invalid {
            file: "sampler".into(),
            what: format!("noise of {} values, expected {len}", noise.len()),
        });
    }
    let uncond = uncond.filter(|_| options.guidance != 1.0);
    let mut b = Buffers {
        x: noise.to_vec(),
        x_pred: vec![0.0; len],
        v0: vec![0.0; len],
        v1: vec![0.0; len],
        guidance: GuidanceBuffers {
            v_cond: vec![0.0; len],
            v_uncond: vec![0.0; len],
        },
        conditioning: StepConditioning::default(),
        scratch: ReplicaScratch::default(),
    };
    let times = schedule.times();
    let steps = schedule.steps();
    let heun = options.sampler == SamplerKind::Heun;
    let mut evaluation = 0;
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
        observer.step_begin(&info);
        // The reference multiplies f32 tensors by Python floats: the factors round to f32.
        let dt = (t1 - t0) as f32;
        let Buffers {
            x,
            x_pred,
            v0,
            v1,
            guidance,
            conditioning,
            scratch,
        } = &mut b;
        guided_velocity(
            replica,
            schedule,
            x,
            t0,
            cond,
            uncond,
            options,
            v0,
            guidance,
            conditioning,
            scratch,
            evaluation,
            observer,
        )?;
        evaluation += 1;
        match options.sampler {
            SamplerKind::Euler => x.iter_mut().zip(v0.iter()).for_each(|(x, v)| *x += dt * v),
            SamplerKind::Heun => {
                x_pred
                    .iter_mut()
                    .zip(x.iter().zip(v0.iter()))
                    .for_each(|(p, (x, v))| *p = x + dt * v);
                guided_velocity(
                    replica,
                    schedule,
                    x_pred,
                    t1,
                    cond,
                    uncond,
                    options,
                    v1,
                    guidance,
                    conditioning,
                    scratch,
                    evaluation,
                    observer,
                )?;
                evaluation += 1;
                let half = ((t1 - t0) * 0.5) as f32;
                for ((x, a), b) in x.iter_mut().zip(v0.iter()).zip(v1.iter()) {
                    *x += half * (a + b);
                }
            }
        }
        observer.step_end(&info);
    }
    Ok(b.x)
}

/// `v = v_u + s·(v_c − v_u)` at time `t` into `v` (the conditional velocity when there is no
/// unconditional pass).
#[allow(clippy::too_many_arguments)]
fn guided_velocity<B: Backend>(
    replica: &Replica<'_, B>,
    schedule: &TimestepSchedule,
    x: &[f32],
    t: f64,
    cond: &PromptKv<B>,
    uncond: Option<&PromptKv<B>>,
    options: &SamplingOptions,
    v: &mut [f32],
    buffers: &mut GuidanceBuffers,
    conditioning: &mut StepConditioning<B>,
    scratch: &mut ReplicaScratch<B>,
    index: usize,
    observer: &mut dyn SamplingObserver,
) -> Result<(), ModelError> {
    let config = replica.config();
    let group = schedule.group_of(t);
    let layers = if options.dense {
        0..config.layer_count
    } else {
        config.layers_of(group)
    };
    // The reference embeds t as an f32 tensor.
    replica.condition(t as f32, group, layers, conditioning, scratch)?;
    let traced = observer.wants_layers(index);
    let GuidanceBuffers { v_cond, v_uncond } = buffers;
    run_pass(
        replica,
        x,
        conditioning,
        cond,
        v_cond,
        scratch,
        traced,
        index,
        Pass::Conditional,
        observer,
    )?;
    let v_uncond = match uncond {
        Some(uncond) => {
            run_pass(
                replica,
                x,
                conditioning,
                uncond,
                v_uncond,
                scratch,
                traced,
                index,
                Pass::Unconditional,
                observer,
            )?;
            let s = options.guidance;
            for ((v, c), u) in v.iter_mut().zip(v_cond.iter()).zip(v_uncond.iter()) {
                *v = u + s * (c - u);
            }
            Some(&v_uncond[..])
        }
        None => {
            v.copy_from_slice(v_cond);
            None
        }
    };
    observer.evaluation(&Evaluation {
        index,
        t,
        group,
        v_cond,
        v_uncond,
        v,
    });
    Ok(())
}

/// The two un-guided velocities of one evaluation.
struct GuidanceBuffers {
    v_cond: Vec<f32>,
    v_uncond: Vec<f32>,
}

#[allow(clippy::too_many_arguments)]
fn run_pass<B: Backend>(
    replica: &Replica<'_, B>,
    x: &[f32],
    conditioning: &StepConditioning<B>,
    prompt: &PromptKv<B>,
    out: &mut [f32],
    scratch: &mut ReplicaScratch<B>,
    traced: bool,
    index: usize,
    pass: Pass,
    observer: &mut dyn SamplingObserver,
) -> Result<(), ModelError> {
    if traced {
        let mut report = |trace: LayerTrace<'_>| observer.layer(index, pass, trace);
        replica.velocity(x, conditioning, prompt, out, scratch, Some(&mut report))
    } else {
        replica.velocity(x, conditioning, prompt, out, scratch, None)
    }
}
