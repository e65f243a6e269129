//! diffusers' `DCUpBlock2d`: doubles the resolution, `in` → `out` channels. "interpolate": nearest
//! ×2 then a 3×3 convolution; "pixel_shuffle": a 3×3 convolution to `4·out` channels then pixel
//! shuffle. With the shortcut (every up-block inside the decoder; not the final `conv_out` variant)
//! the input's channels repeated `4·out/in` times and pixel-shuffled are added.

use super::config::UpsampleType;
use super::scratch::{grow, product, BufferSizes, DecoderScratch};
use super::weights::{host_bytes, Conv};
use crate::backend::{Backend, DeviceBuffer};
use crate::model::{ModelError, ModelFile};

/// diffusers' up-sampling factor.
const FACTOR: usize = 2;

pub struct UpBlock<'a, B: Backend> {
    backend: &'a B,
    in_channels: usize,
    out_channels: usize,
    kind: UpsampleType,
    conv: Conv<'a, B>,
    /// Channel repeats of the shortcut, when there is one.
    shortcut_repeats: Option<usize>,
}

impl<'a, B: Backend> UpBlock<'a, B> {
    /// Host bytes of its convolution weights beyond the file (`None` on overflow).
    pub fn host_weight_bytes(&self) -> Option<u64> {
        host_bytes(&[&self.conv])
    }
    /// Loads `{name}.conv`.
    pub fn load(
        backend: &'a B,
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
            backend,
            file,
            &format!("{name}.conv"),
            [in_channels, conv_out],
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
            backend,
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
    pub fn forward(&self, s: &mut DecoderScratch<B>, hw: [usize; 2]) -> Result<(), ModelError> {
        let bk = self.backend;
        let [h, w] = hw;
        let big = [h * FACTOR, w * FACTOR];
        let input_len = self.in_channels * h * w;
        let output_len = self.out_channels * big[0] * big[1];
        grow(bk, &mut s.b, output_len)?;
        let x = s.x.slice(..input_len);
        match self.kind {
            UpsampleType::Interpolate => {
                let up_len = input_len * FACTOR * FACTOR;
                grow(bk, &mut s.a, up_len)?;
                bk.upsample_nearest(x, self.in_channels, hw, FACTOR, s.a.slice_mut(..up_len))?;
                self.conv
                    .forward(s.a.slice(..up_len), big, s.b.slice_mut(..output_len))?;
            }
            UpsampleType::PixelShuffle => {
                grow(bk, &mut s.a, output_len)?;
                self.conv.forward(x, hw, s.a.slice_mut(..output_len))?;
                bk.pixel_shuffle(
                    s.a.slice(..output_len),
                    self.conv.out_channels(),
                    hw,
                    FACTOR,
                    s.b.slice_mut(..output_len),
                )?;
            }
        }
        if let Some(repeats) = self.shortcut_repeats {
            grow(bk, &mut s.a, output_len)?;
            grow(bk, &mut s.c, output_len)?;
            bk.repeat_channels(
                s.x.slice(..input_len),
                self.in_channels,
                hw,
                repeats,
                s.a.slice_mut(..output_len),
            )?;
            bk.pixel_shuffle(
                s.a.slice(..output_len),
                self.in_channels * repeats,
                hw,
                FACTOR,
                s.c.slice_mut(..output_len),
            )?;
            bk.add(s.b.slice_mut(..output_len), s.c.slice(..output_len))?;
        }
        grow(bk, &mut s.x, output_len)?;
        bk.copy(s.b.slice(..output_len), s.x.slice_mut(..output_len))?;
        Ok(())
    }
}
