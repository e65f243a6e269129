//! The timestep embedding `e = linear_2(SiLU(linear_1(sinusoidal(t))))` (DiT), with
//! `sinusoidal(t) = cat(cos(1000t·f), sin(1000t·f))`, `f_i = exp(−ln(10000)·i/(Ft/2))`.
//!
//! This module owns that formula and its two projections; it must not know which group uses it.

use crate::backend::cpu::matmul::MatmulScratch;
use crate::backend::cpu::ops::silu;
use crate::model::{Linear, ModelError, ModelFile};

/// The two projections of one time embedding (`{prefix}time_embd_1`, `{prefix}time_embd_2`).
pub struct TimeEmbedding<'a> {
    freq_dim: usize,
    linear_1: Linear<'a>,
    linear_2: Linear<'a>,
}

impl<'a> TimeEmbedding<'a> {
    pub fn load(
        file: &'a ModelFile,
        prefix: &str,
        freq_dim: usize,
        hidden: usize,
    ) -> Result<Self, ModelError> {
        Ok(TimeEmbedding {
            freq_dim,
            linear_1: Linear::load_pair(
                file,
                &format!("{prefix}time_embd_1"),
                true,
                freq_dim,
                hidden,
            )?,
            linear_2: Linear::load_pair(
                file,
                &format!("{prefix}time_embd_2"),
                true,
                hidden,
                hidden,
            )?,
        })
    }

    /// Writes `e` (hidden values) for timestep `t`; `features` (freq_dim) and `inner` (hidden) are
    /// the caller's scratch.
    pub fn forward(
        &self,
        t: f32,
        features: &mut [f32],
        inner: &mut [f32],
        e: &mut [f32],
        scratch: &mut MatmulScratch,
    ) -> Result<(), ModelError> {
        sinusoidal(t, &mut features[..self.freq_dim]);
        self.linear_1
            .forward(&features[..self.freq_dim], 1, inner, scratch)?;
        silu(inner);
        self.linear_2.forward(inner, 1, e, scratch)
    }
}

/// `out = cat(cos(a), sin(a))`, `a_i = (1000·t)·f_i`, in f32 as the reference computes it (the
/// frequencies and the angle product are f32 there; cos/sin are taken in f64 and rounded, which is
/// at least as accurate as torch's f32 kernels).
pub fn sinusoidal(t: f32, out: &mut [f32]) {
    let half = out.len() / 2;
    let scaled = t * 1000.0;
    let (cos, sin) = out.split_at_mut(half);
    for i in 0..half {
        let freq = (-(10000f32.ln()) * i as f32 / half as f32).exp();
        let angle = (scaled * freq) as f64;
        cos[i] = angle.cos() as f32;
        sin[i] = angle.sin() as f32;
    }
}
