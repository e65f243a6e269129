//! diffusers' `GLUMBConv` as the EfficientViT block uses it (expand ratio 4, RMSNorm, residual):
//! a 1×1 convolution to `2·hidden` channels, SiLU, a depthwise 3×3 convolution, the gated product
//! `first half · silu(second half)`, a bias-free 1×1 convolution back, RMSNorm, plus the input.

use rayon::prelude::*;

use super::config::NormType;
use super::norm::ChannelNorm;
use super::scratch::{add_assign, grow, product, BufferSizes, DecoderScratch};
use super::weights::Conv;
use crate::backend::cpu::ops::{silu, Conv2d};
use crate::model::{ModelError, ModelFile};

/// `hidden = int(expand_ratio · channels)` with diffusers' expand ratio 4.
const EXPAND: usize = 4;

pub struct GluMbConv<'a> {
    channels: usize,
    hidden: usize,
    conv_inverted: Conv<'a>,
    conv_depth: Conv<'a>,
    conv_point: Conv<'a>,
    norm: ChannelNorm<'a>,
}

impl<'a> GluMbConv<'a> {
    /// Loads `{name}.conv_inverted`, `{name}.conv_depth`, `{name}.conv_point`, `{name}.norm`.
    pub fn load(file: &'a ModelFile, name: &str, channels: usize) -> Result<Self, ModelError> {
        let hidden = EXPAND * channels;
        let wide = 2 * hidden;
        Ok(GluMbConv {
            channels,
            hidden,
            conv_inverted: Conv::same(
                file,
                &format!("{name}.conv_inverted"),
                channels,
                wide,
                1,
                true,
            )?,
            conv_depth: Conv::load(
                file,
                &format!("{name}.conv_depth"),
                Conv2d {
                    groups: wide,
                    ..Conv2d::same(wide, wide, 3)
                },
                true,
            )?,
            conv_point: Conv::same(
                file,
                &format!("{name}.conv_point"),
                hidden,
                channels,
                1,
                false,
            )?,
            norm: ChannelNorm::load(file, &format!("{name}.norm"), NormType::RmsNorm, channels)?,
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
    pub fn forward(&self, s: &mut DecoderScratch, hw: [usize; 2]) -> Result<(), ModelError> {
        let p = hw[0] * hw[1];
        let x = &mut s.x[..self.channels * p];
        let a = grow(&mut s.a, 2 * self.hidden * p);
        self.conv_inverted.forward(x, hw, a, &mut s.conv)?;
        a.par_chunks_mut(p.max(1)).for_each(silu);
        let b = grow(&mut s.b, 2 * self.hidden * p);
        self.conv_depth.forward(a, hw, b, &mut s.conv)?;
        let (value, gate) = b.split_at_mut(self.hidden * p);
        // gate ← value · silu(gate): the product lands in the second half.
        gate.par_chunks_mut(p.max(1))
            .zip(value.par_chunks(p.max(1)))
            .for_each(|(g, v)| {
                silu(g);
                g.iter_mut().zip(v).for_each(|(g, v)| *g *= v);
            });
        let c = grow(&mut s.c, self.channels * p);
        self.conv_point.forward(gate, hw, c, &mut s.conv)?;
        self.norm.apply(c)?;
        add_assign(x, c);
        Ok(())
    }
}
