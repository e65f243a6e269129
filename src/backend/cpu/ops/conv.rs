//! 2-D convolution on one CHW image (batch 1), PyTorch semantics (`F.conv2d`, cross-correlation):
//! `out[oc, oy, ox] = bias[oc] + Σ_{c, ky, kx} w[oc, c, ky, kx] · x[g·C/G + c, oy·sh + ky − ph, ox·sw + kx − pw]`
//! where `g` is the group of `oc` and `c` runs over the `C/G` input channels of that group;
//! zero padding. Weights are PyTorch's `[out_channels, in_channels / groups, kh, kw]`.
//!
//! Paths, all exact re-orderings of the same sum, none needing scratch memory (no im2col):
//! - direct, stride 1: a register tile of 4 output channels (1 where channels of a block would
//!   straddle groups) × 16 columns accumulates every tap (input channel, ky, kx) while held in
//!   registers; near the borders it reads a zero-padded stack copy of the input row;
//! - direct, row path (strides > 1, kernels wider than 33): each output row accumulates shifted
//!   input rows, one axpy per tap;
//! - pointwise (1×1, stride 1, no padding): the direct path on the image viewed as one row of
//!   pixels, i.e. a matrix product over pixels;
//! - depthwise (`groups = in = out`): the row path per plane, planes in parallel.
//!
//! This module owns convolution only (no activation or norm fused in).

use rayon::prelude::*;

use super::error::{check_len, checked_product, param, OpError};
use super::kernels::{self, multiversion};

/// The hyper-parameters of a convolution, as `nn.Conv2d` has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub in_channels: usize,
    pub out_channels: usize,
    /// `[kh, kw]`.
    pub kernel: [usize; 2],
    /// `[sh, sw]`.
    pub stride: [usize; 2],
    /// `[ph, pw]`, zeros on each side.
    pub padding: [usize; 2],
    pub groups: usize,
}

impl Conv2d {
    /// A `k×k` convolution, stride 1, padding `k/2` ("same" for odd k), one group.
    pub fn same(in_channels: usize, out_channels: usize, k: usize) -> Self {
        Conv2d {
            in_channels,
            out_channels,
            kernel: [k, k],
            stride: [1, 1],
            padding: [k / 2, k / 2],
            groups: 1,
        }
    }

    /// Elements of the weight tensor: `out · in/groups · kh · kw`.
    pub fn weight_len(&self) -> Result<usize, OpError> {
        self.validate()?;
        checked_product(
            "conv2d",
            &[
                self.out_channels,
                self.in_channels / self.groups,
                self.kernel[0],
                self.kernel[1],
            ],
        )
    }

    /// Output `[oh, ow]` for an input of `[h, w]`.
    pub fn output_hw(&self, hw: [usize; 2]) -> Result<[usize; 2], OpError> {
        self.validate()?;
        let mut out = [0; 2];
        for a in 0..2 {
            let padded = self.padding[a]
                .checked_mul(2)
                .and_then(|p| p.checked_add(hw[a]))
                .ok_or_else(|| param("conv2d", "padding overflows"))?;
            if padded < self.kernel[a] {
                return Err(param(
                    "conv2d",
                    format!(
                        "input {:?} with padding {:?} is smaller than the kernel {:?}",
                        hw, self.padding, self.kernel
                    ),
                ));
            }
            out[a] = (padded - self.kernel[a]) / self.stride[a] + 1;
        }
        Ok(out)
    }

    fn validate(&self) -> Result<(), OpError> {
        let ok = self.groups > 0
            && self.in_channels > 0
            && self.out_channels > 0
            && self.in_channels % self.groups == 0
            && self.out_channels % self.groups == 0
            && self.kernel.iter().all(|&k| k > 0)
            && self.stride.iter().all(|&s| s > 0);
        if ok {
            Ok(())
        } else {
            Err(param("conv2d", format!("invalid parameters {self:?}")))
        }
    }

    fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [0, 0]
    }

    fn is_depthwise(&self) -> bool {
        self.groups == self.in_channels && self.groups == self.out_channels
    }
}

/// Convolves `input` (`[in_channels, h, w]`) into `out` (`[out_channels, oh, ow]`, see
/// [`Conv2d::output_hw`]).
pub fn conv2d(
    conv: &Conv2d,
    input: &[f32],
    hw: [usize; 2],
    weight: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), OpError> {
    const OP: &str = "conv2d";
    let [oh, ow] = conv.output_hw(hw)?;
    check_len(
        OP,
        "input",
        checked_product(OP, &[conv.in_channels, hw[0], hw[1]])?,
        input.len(),
    )?;
    check_len(OP, "weight", conv.weight_len()?, weight.len())?;
    check_len(
        OP,
        "out",
        checked_product(OP, &[conv.out_channels, oh, ow])?,
        out.len(),
    )?;
    if let Some(b) = bias {
        check_len(OP, "bias", conv.out_channels, b.len())?;
    }
    if out.is_empty() {
        return Ok(());
    }
    let geometry = Geometry {
        conv: *conv,
        in_hw: hw,
        out_hw: [oh, ow],
    };
    if conv.is_pointwise() {
        pointwise(&geometry, input, weight, bias, out);
    } else if conv.is_depthwise() {
        depthwise(&geometry, input, weight, bias, out);
    } else {
        direct(&geometry, input, weight, bias, out);
    }
    Ok(())
}

/// A checked convolution: every index computed from it is in bounds.
struct Geometry {
    conv: Conv2d,
    in_hw: [usize; 2],
    out_hw: [usize; 2],
}

impl Geometry {
    fn in_per_group(&self) -> usize {
        self.conv.in_channels / self.conv.groups
    }

    fn out_per_group(&self) -> usize {
        self.conv.out_channels / self.conv.groups
    }

    fn kernel_len(&self) -> usize {
        self.conv.kernel[0] * self.conv.kernel[1]
    }

    /// `out_row[ox] += Σ_kx w[kx] · in_row[ox·sw + kx − pw]` for the `ox` whose input column is inside
    /// the row (the others read zero padding).
    #[inline(always)]
    fn accumulate_row(&self, out_row: &mut [f32], in_row: &[f32], w_row: &[f32]) {
        let [_, sw] = self.conv.stride;
        let pw = self.conv.padding[1];
        let iw = self.in_hw[1];
        for (kx, &wk) in w_row.iter().enumerate() {
            // Valid ox: 0 ≤ ox·sw + kx − pw < iw.
            let first = pw.saturating_sub(kx).div_ceil(sw);
            let Some(last_in) = (iw + pw).checked_sub(kx + 1) else {
                continue;
            };
            let end = (last_in / sw + 1).min(self.out_hw[1]);
            if first >= end {
                continue;
            }
            let ix0 = first * sw + kx - pw;
            if sw == 1 {
                kernels::axpy_portable(
                    wk,
                    &in_row[ix0..ix0 + (end - first)],
                    &mut out_row[first..end],
                );
            } else {
                for (o, ix) in out_row[first..end].iter_mut().zip((ix0..).step_by(sw)) {
                    *o += wk * in_row[ix];
                }
            }
        }
    }

    /// Accumulates output channel `oc`'s row `oy` from all input channels of its group.
    #[inline(always)]
    fn accumulate_output_row(
        &self,
        oc: usize,
        oy: usize,
        input: &[f32],
        weight: &[f32],
        out_row: &mut [f32],
    ) {
        let [kh, kw] = self.conv.kernel;
        let [ih, iw] = self.in_hw;
        let ph = self.conv.padding[0];
        let sh = self.conv.stride[0];
        let c0 = oc / self.out_per_group() * self.in_per_group();
        for c in 0..self.in_per_group() {
            let plane = &input[(c0 + c) * ih * iw..][..ih * iw];
            let w_oc_c = &weight[(oc * self.in_per_group() + c) * self.kernel_len()..][..kh * kw];
            for ky in 0..kh {
                let Some(iy) = (oy * sh + ky).checked_sub(ph).filter(|&iy| iy < ih) else {
                    continue;
                };
                let (in_row, w_row) = (&plane[iy * iw..][..iw], &w_oc_c[ky * kw..][..kw]);
                self.accumulate_row(out_row, in_row, w_row);
            }
        }
    }

    /// The register tile: `acc[o][j] += Σ_taps w[oc0 + o, tap] · x[tap, x0 + j]` for `N` output
    /// channels of one group and `XT` columns of output row `oy` (stride 1, `kw ≤ MAX_KW`). The
    /// accumulators (`4·XT` floats: eight AVX registers) stay in registers across all taps, so a tap
    /// costs one input load and `N` weight broadcasts for `N·XT` multiply-adds. Columns whose taps
    /// leave the input row (padding, or past the row end) read zeros from a small stack copy.
    #[inline(always)]
    fn accumulate_tile<const N: usize>(
        &self,
        oc0: usize,
        oy: usize,
        x0: usize,
        input: &[f32],
        weight: &[f32],
        acc: &mut [[f32; XT]; N],
    ) {
        let [kh, kw] = self.conv.kernel;
        let [ih, iw] = self.in_hw;
        let [ph, pw] = self.conv.padding;
        let cin = self.in_per_group();
        let c0 = oc0 / self.out_per_group() * cin;
        let w_stride = cin * self.kernel_len(); // between consecutive output channels
        let span = XT + kw - 1; // input columns the tile reads, from x0 − pw
        let inside = x0 >= pw && x0 - pw + span <= iw;
        let mut padded = [0f32; XT + MAX_KW - 1];
        for c in 0..cin {
            let plane = &input[(c0 + c) * ih * iw..][..ih * iw];
            for ky in 0..kh {
                let Some(iy) = (oy + ky).checked_sub(ph).filter(|&iy| iy < ih) else {
                    continue;
                };
                let row = &plane[iy * iw..][..iw];
                let window: &[f32] = if inside {
                    &row[x0 - pw..][..span]
                } else {
                    // Window position t reads input column x0 + t − pw when that is in 0..iw.
                    let lo = pw.saturating_sub(x0).min(span);
                    let hi = (iw + pw).saturating_sub(x0).clamp(lo, span);
                    padded[..span].fill(0.0);
                    if lo < hi {
                        let ix = x0 + lo - pw;
                        padded[lo..hi].copy_from_slice(&row[ix..ix + (hi - lo)]);
                    }
                    &padded[..span]
                };
                for kx in 0..kw {
                    let Ok(x) = <&[f32; XT]>::try_from(&window[kx..kx + XT]) else {
                        continue;
                    };
                    let wi = ((oc0 * cin + c) * kh + ky) * kw + kx;
                    let w: [f32; N] = std::array::from_fn(|o| weight[wi + o * w_stride]);
                    for o in 0..N {
                        for j in 0..XT {
                            acc[o][j] += w[o] * x[j];
                        }
                    }
                }
            }
        }
    }

    /// Adds the tile at column `x0` of row `oy` to the `N` channels `oc0..` (`planes`: their
    /// `[oh·ow]` planes), dropping columns past the row end.
    #[inline(always)]
    fn add_tile<const N: usize>(
        &self,
        oc0: usize,
        oy: usize,
        x0: usize,
        input: &[f32],
        weight: &[f32],
        planes: &mut [f32],
    ) {
        let [oh, ow] = self.out_hw;
        let mut acc = [[0f32; XT]; N];
        self.accumulate_tile(oc0, oy, x0, input, weight, &mut acc);
        let len = XT.min(ow - x0);
        for (o, a) in acc.iter().enumerate() {
            let dst = &mut planes[o * oh * ow + oy * ow + x0..][..len];
            dst.iter_mut().zip(a).for_each(|(d, v)| *d += v);
        }
    }
}

/// Output channels per register tile (when they share a group).
const OB: usize = 4;
/// Output columns per register tile.
const XT: usize = 16;
/// Widest kernel the tile handles (its padded window lives on the stack).
const MAX_KW: usize = 33;
/// Output channels per parallel task: they share the input rows they read while cached.
const TASK_CHANNELS: usize = 16;

fn pointwise(g: &Geometry, input: &[f32], weight: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    // A 1×1 convolution is the direct one on a single row of all pixels: the tile path then
    // runs along the whole image.
    let pixels = g.in_hw[0] * g.in_hw[1];
    let flat = Geometry {
        conv: g.conv,
        in_hw: [1, pixels],
        out_hw: [1, pixels],
    };
    direct(&flat, input, weight, bias, out);
}

fn depthwise(g: &Geometry, input: &[f32], weight: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    let [oh, ow] = g.out_hw;
    out.par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(c, plane)| direct_task(g, c, input, weight, bias, plane, false));
}

fn direct(g: &Geometry, input: &[f32], weight: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    let [oh, ow] = g.out_hw;
    out.par_chunks_mut(TASK_CHANNELS * oh * ow)
        .enumerate()
        .for_each(|(t, planes)| {
            direct_task(g, t * TASK_CHANNELS, input, weight, bias, planes, true)
        });
}

// Each task's whole loop nest is multiversioned (not just an axpy inside), so the AVX2 build is
// chosen once per task and the register tile is compiled for 8-wide vectors.
multiversion! {
    /// Output channels `oc0..` (`planes`: whole `[oh·ow]` planes, consecutive channels), with
    /// register tiles where possible if `allow_tiles`. Depthwise convolutions do without: one
    /// channel per tile has too little work per tap to beat row axpys (measured 1.2 vs 1.7 GMAC/s
    /// on a 5×5, 32×32 plane).
    fn direct_task / direct_task_portable(
        g: &Geometry,
        oc0: usize,
        input: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        planes: &mut [f32],
        allow_tiles: bool
    ) {
        let [oh, ow] = g.out_hw;
        let plane_len = oh * ow;
        let n_planes = planes.len() / plane_len;
        for (o, plane) in planes.chunks_exact_mut(plane_len).enumerate() {
            plane.fill(bias.map_or(0.0, |b| b[oc0 + o]));
        }
        let tiles = allow_tiles && g.conv.stride == [1, 1] && g.conv.kernel[1] <= MAX_KW;
        let same_group = |first: usize, n: usize| {
            first / g.out_per_group() == (first + n - 1) / g.out_per_group()
        };
        // Channels innermost: the input window of one tile serves every channel of the task while it
        // is in L1.
        for oy in 0..oh {
            if !tiles {
                for (o, plane) in planes.chunks_exact_mut(plane_len).enumerate() {
                    let row = &mut plane[oy * ow..][..ow];
                    g.accumulate_output_row(oc0 + o, oy, input, weight, row);
                }
                continue;
            }
            for x0 in (0..ow).step_by(XT) {
                let mut o = 0;
                while o < n_planes {
                    let block = &mut planes[o * plane_len..];
                    if o + OB <= n_planes && same_group(oc0 + o, OB) {
                        g.add_tile::<OB>(oc0 + o, oy, x0, input, weight, block);
                        o += OB;
                    } else {
                        g.add_tile::<1>(oc0 + o, oy, x0, input, weight, block);
                        o += 1;
                    }
                }
            }
        }
    }
}
