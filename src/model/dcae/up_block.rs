//! diffusers' `DCUpBlock2d`: doubles the resolution, `in` → `out` channels. "interpolate": nearest
//! ×2 then a 3×3 convolution; "pixel_shuffle": a 3×3 convolution to `4·out` channels then pixel
//! shuffle. With the shortcut (every up-block inside the decoder; not the final `conv_out` variant)
//! the input's channels repeated `4·out/in` times and pixel-shuffled are added.

use super::config::UpsampleType;
use super::scratch::{add_assign, grow, product, BufferSizes, DecoderScratch};
use super::weights::Conv;
use crate::backend::cpu::ops::{pixel_shuffle, repeat_channels, upsample_nearest};
use crate::model::{ModelError, ModelFile};

/// diffusers' up-sampling factor.
const FACTOR: usize = 2;

pub struct UpBlock<'a> {
    in_channels: usize,
    out_channels: usize,
    kind: UpsampleType,
    conv: Conv<'a>,
    /// Channel repeats of the shortcut, when there is one.
    shortcut_repeats: Option<usize>,
}

impl<'a> UpBlock<'a> {
    /// Loads `{name}.conv`.
    pub fn load(
        file: &'a ModelFile,
        name: &str,
        in_channels: usize,
        out_channels: usize,
        kind: UpsampleType,
        shortcut: bool,
    ) -> Result<Self, ModelError> {
        let conv_out = match kind {
            UpsampleType::Interpolate => out_channels,
            UpsampleType::PixelShuffle => out_channels * FACTOR * FACTOR,
        };
        let conv = Conv::same(
            file,
            &format!("{name}.conv"),
            in_channels,
            conv_out,
            3,
            true,
        )?;
        let shortcut_repeats = if shortcut {
            // repeat_interleave then pixel_shuffle must land on exactly `out` channels.
            let repeats = out_channels * FACTOR * FACTOR / in_channels;
            if repeats == 0 || in_channels * repeats != out_channels * FACTOR * FACTOR {
                return Err(file.invalid(format!(
                    "{name}: the up-sampling shortcut cannot map {in_channels} channels onto \
                     {out_channels} (4·out must be a multiple of in)"
                )));
            }
            Some(repeats)
        } else {
            None
        };
        Ok(UpBlock {
            in_channels,
            out_channels,
            kind,
            conv,
            shortcut_repeats,
        })
    }

    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    pub fn sizes(&self, hw: [usize; 2]) -> Option<BufferSizes> {
        let p = product(hw.as_slice())?;
        let input = product(&[self.in_channels, p])?;
        let output = product(&[self.out_channels, FACTOR * FACTOR, p])?;
        let (a, conv) = match self.kind {
            UpsampleType::Interpolate => (
                product(&[input, FACTOR * FACTOR])?,
                self.conv
                    .scratch_sizes([hw[0].checked_mul(FACTOR)?, hw[1].checked_mul(FACTOR)?])?,
            ),
            UpsampleType::PixelShuffle => (output, self.conv.scratch_sizes(hw)?),
        };
        let shortcut = self.shortcut_repeats.is_some();
        Some(BufferSizes {
            x: input.max(output),
            a: if shortcut { a.max(output) } else { a },
            b: output,
            c: if shortcut { output } else { 0 },
            attention: 0,
            conv,
        })
    }

    /// `s.x` from `[in, h, w]` to `[out, 2h, 2w]`.
    pub fn forward(&self, s: &mut DecoderScratch, hw: [usize; 2]) -> Result<(), ModelError> {
        let [h, w] = hw;
        let big = [h * FACTOR, w * FACTOR];
        let input_len = self.in_channels * h * w;
        let output_len = self.out_channels * big[0] * big[1];
        let x = &s.x[..input_len];
        let b = grow(&mut s.b, output_len);
        match self.kind {
            UpsampleType::Interpolate => {
                let a = grow(&mut s.a, input_len * FACTOR * FACTOR);
                upsample_nearest(x, self.in_channels, hw, FACTOR, a)?;
                self.conv.forward(a, big, b, &mut s.conv)?;
            }
            UpsampleType::PixelShuffle => {
                let a = grow(&mut s.a, output_len);
                self.conv.forward(x, hw, a, &mut s.conv)?;
                pixel_shuffle(a, self.conv.out_channels(), hw, FACTOR, b)?;
            }
        }
        if let Some(repeats) = self.shortcut_repeats {
            let a = grow(&mut s.a, output_len);
            repeat_channels(x, self.in_channels, hw, repeats, a)?;
            let c = grow(&mut s.c, output_len);
            pixel_shuffle(a, self.in_channels * repeats, hw, FACTOR, c)?;
            add_assign(b, c);
        }
        grow(&mut s.x, output_len).copy_from_slice(b);
        Ok(())
    }
}
