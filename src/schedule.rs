//! `TimestepSchedule`: the sampling times `t_0 = 0 (noise) … t_steps = 1 (data)` and the expert group
//! that owns each time (tools/reference/README.md "Schedule", "Groups").
//!
//! `t_i = 1 − σ'_i`, `σ_i = 1 − i/steps`, `σ' = s·σ / (1 + (s − 1)·σ)` with `s = time_shift` (SD3's
//! shift; s = 1 is uniform), computed in f64 like the reference so a time never lands on the other
//! side of a group boundary. Group k owns `[b_k, b_{k+1})`; t = 1 belongs to the last group.
//! This module owns that arithmetic only; it must not know layers or tensors.

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum ScheduleError {
    #[error("the number of steps must be at least 1")]
    NoSteps,
    #[error("{0} steps: at most {MAX_STEPS} (the schedule and the sampler's bookkeeping grow with the step count)")]
    TooManySteps(usize),
    #[error("time shift {0} must be a positive finite number")]
    BadShift(f64),
    #[error("group boundaries {0:?} must be at least two increasing values from 0 to 1")]
    BadBoundaries(Vec<f64>),
}

/// Steps a schedule may have: far beyond any useful sampling (flow models converge in tens of
/// steps), low enough that nothing sized by the count can exhaust memory.
pub const MAX_STEPS: usize = 10_000;

/// Sampling times and their owning groups.
#[derive(Clone, Debug, PartialEq)]
pub struct TimestepSchedule {
    times: Vec<f64>,
    boundaries: Vec<f64>,
}

impl TimestepSchedule {
    pub fn new(steps: usize, time_shift: f64, boundaries: &[f64]) -> Result<Self, ScheduleError> {
        if steps == 0 {
            return Err(ScheduleError::NoSteps);
        }
        if steps > MAX_STEPS {
            return Err(ScheduleError::TooManySteps(steps));
        }
        if !time_shift.is_finite() || time_shift <= 0.0 {
            return Err(ScheduleError::BadShift(time_shift));
        }
        if boundaries.len() < 2
            || boundaries.first() != Some(&0.0)
            || boundaries.last() != Some(&1.0)
            || boundaries.windows(2).any(|w| w[0] >= w[1] || w[1].is_nan())
        {
            return Err(ScheduleError::BadBoundaries(boundaries.to_vec()));
        }
        let times = (0..=steps)
            .map(|i| {
                let sigma = 1.0 - i as f64 / steps as f64;
                let shifted = time_shift * sigma / (1.0 + (time_shift - 1.0) * sigma);
                1.0 - shifted
            })
            .collect();
        Ok(TimestepSchedule {
            times,
            boundaries: boundaries.to_vec(),
        })
    }

    pub fn steps(&self) -> usize {
        self.times.len() - 1
    }

    /// `t_0 ..= t_steps`.
    pub fn times(&self) -> &[f64] {
        &self.times
    }

    pub fn group_count(&self) -> usize {
        self.boundaries.len() - 1
    }

    /// The group that owns `t`: the k with `b_k ≤ t < b_{k+1}`, the last group for t ≥ 1.
    pub fn group_of(&self, t: f64) -> usize {
        let groups = self.group_count();
        (0..groups)
            .find(|&k| t < self.boundaries[k + 1])
            .unwrap_or(groups - 1)
    }

    /// How many evaluations step `i` makes in each group, in step order: for the memory plan and
    /// the summary (Heun's corrector runs in the group of `t_{i+1}`).
    pub fn step_groups(&self, i: usize, heun: bool) -> (usize, Option<usize>) {
        let first = self.group_of(self.times[i]);
        let corrector = heun.then(|| self.group_of(self.times[i + 1]));
        (first, corrector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_schedule_and_groups() {
        let s = TimestepSchedule::new(4, 1.0, &[0.0, 0.5, 1.0]).unwrap();
        assert_eq!(s.times(), &[0.0, 0.25, 0.5, 0.75, 1.0]);
        let groups: Vec<usize> = s.times().iter().map(|&t| s.group_of(t)).collect();
        assert_eq!(groups, vec![0, 0, 1, 1, 1]);
    }

    #[test]
    fn shift_spends_more_steps_at_high_noise() {
        let s = TimestepSchedule::new(2, 3.0, &[0.0, 1.0]).unwrap();
        // σ = 0.5 → 3·0.5 / (1 + 2·0.5) = 0.75, t = 0.25.
        assert_eq!(s.times(), &[0.0, 0.25, 1.0]);
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert_eq!(
            TimestepSchedule::new(0, 1.0, &[0.0, 1.0]),
            Err(ScheduleError::NoSteps)
        );
        assert!(TimestepSchedule::new(4, -1.0, &[0.0, 1.0]).is_err());
        assert!(TimestepSchedule::new(4, 1.0, &[0.0, 0.7, 0.5, 1.0]).is_err());
        assert!(TimestepSchedule::new(4, 1.0, &[0.1, 1.0]).is_err());
    }
}
