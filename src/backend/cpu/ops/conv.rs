//! 2-D convolution on one CHW image (batch 1), PyTorch semantics (`F.conv2d`, cross-correlation):
//! `out[oc, oy, ox] = bias[oc] + Σ_{c, ky, kx} w[oc, c, ky, kx] · x[g·C/G + c, oy·sh + ky − ph, ox·sw + kx − pw]`
//! where `g` is the group of `oc` and `c` runs over the `C/G` input channels of that group;
//! zero padding. Weights are PyTorch's `[out_channels, in_channels / groups, kh, kw]`.
//!
//! Three paths, all exact re-orderings of the same sum:
//! - pointwise (1×1, stride 1, no padding): per group a matrix product over pixels, done as axpys on
//!   pixel tiles so a tile of the input is reused by a block of output channels while it is cached;
//! - depthwise (`groups = in = out`): one small kernel per plane, planes in parallel;
//! - direct (everything else): output rows accumulated from shifted input rows, one axpy per
//!   `(input channel, ky, kx)`; no im2col buffer, so no scratch memory at all.
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

    /// `out_row += Σ_kx w[kx] · in_row[ox·sw + kx − pw]` over the output columns whose input column
    /// is inside the row (the others read zero padding).
    #[inline(always)]
    fn accumulate_row(&self, out_row: &mut [f32], in_row: &[f32], w_row: &[f32]) {
        let [_, sw] = self.conv.stride;
        let pw = self.conv.padding[1];
        let iw = self.in_hw[1];
        let ow = self.out_hw[1];
        for (kx, &wk) in w_row.iter().enumerate() {
            // Valid ox: 0 ≤ ox·sw + kx − pw < iw.
            let first = pw.saturating_sub(kx).div_ceil(sw);
            let Some(last_in) = (iw + pw).checked_sub(kx + 1) else {
                continue;
            };
            let end = (last_in / sw + 1).min(ow);
            if first >= end {
                continue;
            }
            let ix0 = first * sw + kx - pw;
            if sw == 1 {
                kernels::axpy(
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
        let group = oc / self.out_per_group();
        let c0 = group * self.in_per_group();
        for c in 0..self.in_per_group() {
            let plane = &input[(c0 + c) * ih * iw..][..ih * iw];
            let w_oc_c = &weight[(oc * self.in_per_group() + c) * self.kernel_len()..][..kh * kw];
            for ky in 0..kh {
                let Some(iy) = (oy * sh + ky).checked_sub(ph).filter(|&iy| iy < ih) else {
                    continue;
                };
                self.accumulate_row(out_row, &plane[iy * iw..][..iw], &w_oc_c[ky * kw..][..kw]);
            }
        }
    }
}

/// Output channels per parallel task: they share the input rows they read while cached.
const OC_BLOCK: usize = 4;
/// Pixels per tile in the pointwise path.
const PIXEL_TILE: usize = 256;

// Each task's whole loop nest is multiversioned (not just the axpy inside), so the AVX2 choice is
// made once per task instead of once per short row.

fn pointwise(g: &Geometry, input: &[f32], weight: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    let pixels = g.in_hw[0] * g.in_hw[1];
    out.par_chunks_mut(OC_BLOCK * pixels)
        .enumerate()
        .for_each(|(blk, planes)| pointwise_block(g, blk * OC_BLOCK, input, weight, bias, planes));
}

multiversion! {
    /// Output channels `oc0..` (`planes`, whole `[oh·ow]` planes) of a pointwise convolution.
    fn pointwise_block / pointwise_block_portable(
        g: &Geometry,
        oc0: usize,
        input: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        planes: &mut [f32]
    ) {
        let pixels = g.in_hw[0] * g.in_hw[1];
        let cin = g.in_per_group();
        for p0 in (0..pixels).step_by(PIXEL_TILE) {
            let len = PIXEL_TILE.min(pixels - p0);
            for (o, plane) in planes.chunks_exact_mut(pixels).enumerate() {
                let oc = oc0 + o;
                let c0 = oc / g.out_per_group() * cin;
                let tile = &mut plane[p0..p0 + len];
                tile.fill(bias.map_or(0.0, |b| b[oc]));
                for (c, &w) in weight[oc * cin..(oc + 1) * cin].iter().enumerate() {
                    kernels::axpy_portable(w, &input[(c0 + c) * pixels + p0..][..len], tile);
                }
            }
        }
    }
}

fn depthwise(g: &Geometry, input: &[f32], weight: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    let [oh, ow] = g.out_hw;
    out.par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(c, plane)| direct_block(g, c, input, weight, bias, plane));
}

fn direct(g: &Geometry, input: &[f32], weight: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    let [oh, ow] = g.out_hw;
    out.par_chunks_mut(OC_BLOCK * oh * ow)
        .enumerate()
        .for_each(|(blk, planes)| direct_block(g, blk * OC_BLOCK, input, weight, bias, planes));
}

multiversion! {
    /// Output channels `oc0..` (`planes`, whole `[oh·ow]` planes) of a direct convolution.
    fn direct_block / direct_block_portable(
        g: &Geometry,
        oc0: usize,
        input: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        planes: &mut [f32]
    ) {
        let [oh, ow] = g.out_hw;
        for (o, plane) in planes.chunks_exact_mut(oh * ow).enumerate() {
            plane.fill(bias.map_or(0.0, |b| b[oc0 + o]));
        }
        // Row-outer, channel-inner: the input rows of one output row serve the whole block.
        for oy in 0..oh {
            for (o, plane) in planes.chunks_exact_mut(oh * ow).enumerate() {
                g.accumulate_output_row(oc0 + o, oy, input, weight, &mut plane[oy * ow..][..ow]);
            }
        }
    }
}
