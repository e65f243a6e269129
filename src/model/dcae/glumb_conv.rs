//! diffusers' `GLUMBConv` as the EfficientViT block uses it (expand ratio 4, RMSNorm, residual):
//! a 1×1 convolution to `2·hidden` channels, SiLU, a depthwise 3×3 convolution, the gated product
//! `first half · silu(second half)`, a bias-free 1×1 convolution back, RMSNorm, plus the input.

use super::config::NormType;
use super::norm::ChannelNorm;
use super::scratch::{grow, product, BufferSizes, DecoderScratch};
use super::weights::{host_bytes, Conv};
use crate::backend::{Backend, Conv2d, DeviceBuffer, Unary};
use crate::model::{ModelError, ModelFile};

/// `hidden = int(expand_ratio · channels)` with diffusers' expand ratio 4.
const EXPAND: usize = 4;

pub struct GluMbConv<'a, B: Backend> {
    backend: &'a B,
    channels: usize,
    hidden: usize,
    conv_inverted: Conv<'a, B>,
    conv_depth: Conv<'a, B>,
    conv_point: Conv<'a, B>,
    norm: ChannelNorm<'a, B>,
}

impl<'a, B: Backend> GluMbConv<'a, B> {
    /// Host bytes of its convolution weights beyond the file (`None` on overflow).
    pub fn host_weight_bytes(&self) -> Option<u64> {
        host_bytes(&[&self.conv_inverted, &self.conv_depth, &self.conv_point])
    }
    /// Loads `{name}.conv_inverted`, `{name}.conv_depth`, `{name}.conv_point`, `{name}.norm`.
    pub fn load(
        backend: &'a B,
        file: &'a ModelFile,
        name: &str,
        channels: usize,
    ) -> Result<Self, ModelError> {
        let hidden = EXPAND * channels;
        let wide = 2 * hidden;
        Ok(GluMbConv {
            backend,
            channels,
            hidden,
            conv_inverted: Conv::same(
                backend,
                file,
                &format!("{name}.conv_inverted"),
                [channels, wide],
                1,
                true,
            )?,
            conv_depth: Conv::load(
                backend,
                file,
                &format!("{name}.conv_depth"),
                Conv2d {
                    groups: wide,
                    ..Conv2d::same(wide, wide, 3)
                },
                true,
            )?,
            conv_point: Conv::same(
                backend,
                file,
                &format!("{name}.conv_point"),
                [hidden, channels],
                1,
                false,
            )?,
            norm: ChannelNorm::load(
                backend,
                file,
                &format!("{name}.norm"),
                NormType::RmsNorm,
                channels,
            )?,
        })
    }

    pub fn sizes(&self, hw: [usize; 2]) -> Option<BufferSizes> {
        let p = product(hw.as_slice())?;
        let wide = product(&[2, self.hidden, p])?;
        let narrow = product(&[self.channels, p])?;
        Some(BufferSizes {
            x: narrow,
            a: wide,
            b: wide,
            c: narrow,
            attention: 0,
            conv: self
                .conv_inverted
                .scratch_sizes(hw)?
                .max(self.conv_depth.scratch_sizes(hw)?)
                .max(self.conv_point.scratch_sizes(hw)?),
        })
    }

    /// `s.x` (`[channels, h, w]`) through the block and its residual, in place.
    pub fn forward(&self, s: &mut DecoderScratch<B>, hw: [usize; 2]) -> Result<(), ModelError> {
        let bk = self.backend;
        let p = hw[0] * hw[1];
        let (x, half, wide) = (..self.channels * p, self.hidden * p, 2 * self.hidden * p);
        grow(bk, &mut s.a, wide)?;
        grow(bk, &mut s.b, wide)?;
        grow(bk, &mut s.c, self.channels * p)?;
        self.conv_inverted
            .forward(s.x.slice(x), hw, s.a.slice_mut(..wide))?;
        bk.unary(s.a.slice_mut(..wide), Unary::Silu)?;
        self.conv_depth
            .forward(s.a.slice(..wide), hw, s.b.slice_mut(..wide))?;
        // gate ← silu(gate) · value: the gated product lands in the second half, computed into the
        // free first half of `a` (the op's output and input must be distinct buffers).
        bk.copy(s.b.slice(half..wide), s.a.slice_mut(..half))?;
        bk.swiglu(s.a.slice_mut(..half), s.b.slice(..half))?;
        self.conv_point
            .forward(s.a.slice(..half), hw, s.c.slice_mut(x))?;
        self.norm.apply(s.c.slice_mut(x))?;
        bk.add(s.x.slice_mut(x), s.c.slice(x))?;
        Ok(())
    }
}
