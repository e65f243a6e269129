//! diffusers' DC-AE `ResBlock`: `x + norm(conv2(act(conv1(x))))`, both convolutions 3×3 and
//! channel-preserving, `conv1` with a bias and `conv2` without.

use super::config::{Activation, NormType};
use super::norm::ChannelNorm;
use super::scratch::{add_assign, grow, product, BufferSizes, DecoderScratch};
use super::weights::Conv;
use crate::model::{ModelError, ModelFile};

pub struct ResBlock<'a> {
    channels: usize,
    conv1: Conv<'a>,
    activation: Activation,
    conv2: Conv<'a>,
    norm: ChannelNorm<'a>,
}

impl<'a> ResBlock<'a> {
    /// Loads `{name}.conv1`, `{name}.conv2` and `{name}.norm` for `channels` channels.
    pub fn load(
        file: &'a ModelFile,
        name: &str,
        channels: usize,
        norm: NormType,
        activation: Activation,
    ) -> Result<Self, ModelError> {
        Ok(ResBlock {
            channels,
            conv1: Conv::same(file, &format!("{name}.conv1"), channels, channels, 3, true)?,
            activation,
            conv2: Conv::same(file, &format!("{name}.conv2"), channels, channels, 3, false)?,
            norm: ChannelNorm::load(file, &format!("{name}.norm"), norm, channels)?,
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
    pub fn forward(&self, s: &mut DecoderScratch, hw: [usize; 2]) -> Result<(), ModelError> {
        let n = self.channels * hw[0] * hw[1];
        let x = &mut s.x[..n];
        let a = grow(&mut s.a, n);
        self.conv1.forward(x, hw, a, &mut s.conv)?;
        self.activation.apply(a);
        let b = grow(&mut s.b, n);
        self.conv2.forward(a, hw, b, &mut s.conv)?;
        self.norm.apply(b)?;
        add_assign(x, b);
        Ok(())
    }
}
