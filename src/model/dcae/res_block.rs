//! diffusers' DC-AE `ResBlock`: `x + norm(conv2(act(conv1(x))))`, both convolutions 3×3 and
//! channel-preserving, `conv1` with a bias and `conv2` without.

use super::config::{Activation, NormType};
use super::norm::ChannelNorm;
use super::scratch::{grow, product, BufferSizes, DecoderScratch};
use super::weights::{host_bytes, Conv};
use crate::backend::{Backend, DeviceBuffer};
use crate::model::{ModelError, ModelFile};

pub struct ResBlock<'a, B: Backend> {
    backend: &'a B,
    channels: usize,
    conv1: Conv<'a, B>,
    activation: Activation,
    conv2: Conv<'a, B>,
    norm: ChannelNorm<'a, B>,
}

impl<'a, B: Backend> ResBlock<'a, B> {
    /// Host bytes of its convolution weights beyond the file (`None` on overflow).
    pub fn host_weight_bytes(&self) -> Option<u64> {
        host_bytes(&[&self.conv1, &self.conv2])
    }
    /// Loads `{name}.conv1`, `{name}.conv2` and `{name}.norm` for `channels` channels.
    pub fn load(
        backend: &'a B,
        file: &'a ModelFile,
        name: &str,
        channels: usize,
        norm: NormType,
        activation: Activation,
    ) -> Result<Self, ModelError> {
        let conv = |part: &str, bias: bool| {
            Conv::same(
                backend,
                file,
                &format!("{name}.{part}"),
                [channels; 2],
                3,
                bias,
            )
        };
        Ok(ResBlock {
            backend,
            channels,
            conv1: conv("conv1", true)?,
            activation,
            conv2: conv("conv2", false)?,
            norm: ChannelNorm::load(backend, file, &format!("{name}.norm"), norm, channels)?,
        })
    }

    pub fn sizes(&self, hw: [usize; 2]) -> Option<BufferSizes> {
        let n = product(&[self.channels, hw[0], hw[1]])?;
        Some(BufferSizes {
            x: n,
            a: n,
            b: n,
            conv: self
                .conv1
                .scratch_sizes(hw)?
                .max(self.conv2.scratch_sizes(hw)?),
            ..BufferSizes::default()
        })
    }

    /// `s.x` (`[channels, h, w]`) through the block, in place.
    pub fn forward(&self, s: &mut DecoderScratch<B>, hw: [usize; 2]) -> Result<(), ModelError> {
        let bk = self.backend;
        let n = self.channels * hw[0] * hw[1];
        grow(bk, &mut s.a, n)?;
        grow(bk, &mut s.b, n)?;
        self.conv1.forward(s.x.slice(..n), hw, s.a.slice_mut(..n))?;
        if let Some(f) = self.activation.unary() {
            bk.unary(s.a.slice_mut(..n), f)?;
        }
        self.conv2.forward(s.a.slice(..n), hw, s.b.slice_mut(..n))?;
        self.norm.apply(s.b.slice_mut(..n))?;
        bk.add(s.x.slice_mut(..n), s.b.slice(..n))?;
        Ok(())
    }
}
