//! The timestep embedding `e = linear_2(SiLU(linear_1(sinusoidal(t))))` (DiT), with
//! `sinusoidal(t) = cat(cos(1000t·f), sin(1000t·f))`, `f_i = exp(−ln(10000)·i/(Ft/2))`.
//!
//! This module owns that formula and its two projections; it must not know which group uses it.

use crate::backend::{Backend, DeviceBuffer, Placement, SliceMut, Unary};
use crate::model::{Linear, ModelError, ModelFile};

/// The two projections of one time embedding (`{prefix}time_embd_1`, `{prefix}time_embd_2`).
pub struct TimeEmbedding<'a, B: Backend> {
    backend: &'a B,
    freq_dim: usize,
    linear_1: Linear<'a, B>,
    linear_2: Linear<'a, B>,
}

/// The host and device buffers of one evaluation.
pub struct TimeScratch<B: Backend> {
    host: Vec<f32>,
    features: B::Buffer,
    inner: B::Buffer,
}

impl<B: Backend> Default for TimeScratch<B> {
    fn default() -> Self {
        TimeScratch {
            host: Vec::new(),
            features: Default::default(),
            inner: Default::default(),
        }
    }
}

impl<'a, B: Backend> TimeEmbedding<'a, B> {
    pub fn load(
        backend: &'a B,
        file: &'a ModelFile,
        prefix: &str,
        freq_dim: usize,
        hidden: usize,
        placement: Placement,
    ) -> Result<Self, ModelError> {
        let linear = |name: &str, features: [usize; 2]| {
            Linear::load_pair(
                backend,
                file,
                &format!("{prefix}{name}"),
                true,
                features,
                placement,
            )
        };
        Ok(TimeEmbedding {
            backend,
            freq_dim,
            linear_1: linear("time_embd_1", [freq_dim, hidden])?,
            linear_2: linear("time_embd_2", [hidden, hidden])?,
        })
    }

    pub fn weights(&self) -> impl Iterator<Item = &B::Weight<'a>> {
        [self.linear_1.weight(), self.linear_2.weight()].into_iter()
    }

    /// Writes `e` (hidden values) for timestep `t`.
    pub fn forward(
        &self,
        t: f32,
        e: SliceMut<'_, B::Buffer>,
        scratch: &mut TimeScratch<B>,
    ) -> Result<(), ModelError> {
        let b = self.backend;
        let hidden = self.linear_1.out_features();
        scratch.host.resize(self.freq_dim, 0.0);
        sinusoidal(t, &mut scratch.host);
        crate::backend::ensure_len(b, &mut scratch.features, self.freq_dim)?;
        crate::backend::ensure_len(b, &mut scratch.inner, hidden)?;
        b.write(scratch.features.slice_mut(..self.freq_dim), &scratch.host)?;
        self.linear_1.forward(
            scratch.features.slice(..self.freq_dim),
            1,
            scratch.inner.slice_mut(..hidden),
        )?;
        b.unary(scratch.inner.slice_mut(..hidden), Unary::Silu)?;
        self.linear_2.forward(scratch.inner.slice(..hidden), 1, e)
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
