//! 2-D convolution on one CHW image (batch 1), PyTorch semantics (`F.conv2d`, cross-correlation):
//! `out[oc, oy, ox] = bias[oc] + Σ_{c, ky, kx} w[oc, c, ky, kx] · x[g·C/G + c, oy·sh + ky − ph, ox·sw + kx − pw]`
//! where `g` is the group of `oc` and `c` runs over the `C/G` input channels of that group;
//! zero padding. Weights are PyTorch's `[out_channels, in_channels / groups, kh, kw]`.
//!
//! Paths, all exact re-orderings of the same sum:
//! - dense (every convolution that is not depthwise): a matrix product per group,
//!   `out[oc, pixel] = bias[oc] + Σ_tap w[oc, tap] · col[tap, pixel]` with `tap = (c, ky, kx)`, on the
//!   packed, register-tiled [`gemm`](super::gemm). `col` is im2col, built implicitly: each GEMM
//!   task packs only the `kc × nc` block of it that it is about to use, straight from the input
//!   (no `C·kh·kw × H·W` buffer); a 1×1 stride-1 unpadded convolution reads the input as `col`
//!   directly;
//! - depthwise (`groups = in = out`): one plane per task, each output row accumulating shifted
//!   input rows (one vectorised axpy per tap); a GEMM of one row per group would waste the tile.
//!
//! This module owns convolution only (no activation or norm fused in).

use std::borrow::Cow;

use rayon::prelude::*;

use super::error::{checked_product, param, OpError};
use super::gemm::{
    self, put_run, put_zeros, GemmScratch, GemmScratchSizes, GemmShape, MatrixPanels, MicroKernel,
    PackedLhs, PanelSource,
};
use super::kernels::{self, multiversion};
use crate::backend::cpu::isa::Isa;
pub use crate::backend::params::Conv2d;
use crate::dtype::TensorType;

/// Buffers [`conv2d_with_scratch`] reuses between calls (packed weights and im2col blocks).
#[derive(Debug, Default)]
pub struct ConvScratch {
    gemm: GemmScratch,
}

impl ConvScratch {
    /// f32 values held now.
    pub fn held_values(&self) -> usize {
        self.gemm.held_values()
    }

    /// What a scratch grows to for `conv` on an `hw` input with a weight stored as `weight_type`,
    /// on this CPU's kernels (nothing for a depthwise convolution); [`GemmScratchSizes::total`]
    /// turns it into values.
    pub fn sizes_for(
        conv: &Conv2d,
        weight_type: TensorType,
        hw: [usize; 2],
    ) -> Result<GemmScratchSizes, OpError> {
        let [oh, ow] = conv.output_hw(hw)?;
        if conv.is_depthwise() {
            return Ok(GemmScratchSizes::default());
        }
        let [groups, m, k] = gemm_dims(conv)?;
        let shape = GemmShape {
            groups,
            m,
            n: checked_product("conv2d", &[oh, ow])?,
            k,
        };
        GemmScratchSizes::of(MicroKernel::detect(weight_type), shape)
            .ok_or_else(|| param("conv2d", format!("{conv:?} on {hw:?} overflows usize")))
    }

    /// [`ConvScratch::sizes_for`] a [`PreparedConv`]: its weights are packed already, so only
    /// the im2col blocks.
    pub fn prepared_sizes_for(
        conv: &Conv2d,
        weight_type: TensorType,
        hw: [usize; 2],
    ) -> Result<GemmScratchSizes, OpError> {
        Ok(GemmScratchSizes {
            packed_a: 0,
            ..Self::sizes_for(conv, weight_type, hw)?
        })
    }
}

/// A convolution's weights made ready once, at load, for this CPU's kernels: a dense kernel packed
/// for the GEMM (as bf16 pairs for the BF16 kernel: half the bytes of f32), a depthwise one kept
/// as f32 (borrowed from the file where it is stored as F32).
pub struct PreparedConv<'a> {
    conv: Conv2d,
    kernel: MicroKernel,
    weights: PreparedWeights<'a>,
}

enum PreparedWeights<'a> {
    Depthwise(Cow<'a, [f32]>),
    Dense(PackedLhs),
}

impl<'a> PreparedConv<'a> {
    /// Prepares `weight` (`[out, in/groups, kh, kw]`) of `conv` for `kernel`.
    pub fn new(
        kernel: MicroKernel,
        conv: &Conv2d,
        weight: Cow<'a, [f32]>,
    ) -> Result<Self, OpError> {
        super::error::check_len("conv2d", "weight", conv.weight_len()?, weight.len())?;
        let weights = if conv.is_depthwise() {
            PreparedWeights::Depthwise(weight)
        } else {
            let [groups, m, k] = gemm_dims(conv)?;
            PreparedWeights::Dense(PackedLhs::new(kernel, groups, m, k, &weight)?)
        };
        Ok(PreparedConv {
            conv: *conv,
            kernel,
            weights,
        })
    }

    /// Bytes a [`PreparedConv::new`] holds beyond the file for `conv` with a weight stored as
    /// `weight_type`, on this CPU's kernels (`None` on overflow).
    pub fn bytes_for(conv: &Conv2d, weight_type: TensorType) -> Option<u64> {
        let len = conv.weight_len().ok()?;
        let values = if conv.is_depthwise() {
            // Borrowed from the mapping when stored as F32, else an f32 copy.
            if weight_type == TensorType::F32 {
                0
            } else {
                len
            }
        } else {
            let [groups, m, k] = gemm_dims(conv).ok()?;
            PackedLhs::words_for(MicroKernel::detect(weight_type), groups, m, k)?
        };
        (values as u64).checked_mul(4)
    }

    /// Bytes held now beyond the file.
    pub fn held_bytes(&self) -> u64 {
        4 * match &self.weights {
            PreparedWeights::Depthwise(Cow::Borrowed(_)) => 0,
            PreparedWeights::Depthwise(Cow::Owned(v)) => v.len() as u64,
            PreparedWeights::Dense(packed) => packed.words() as u64,
        }
    }

    pub fn kernel(&self) -> MicroKernel {
        self.kernel
    }

    /// The convolution these weights were prepared for.
    pub fn conv(&self) -> &Conv2d {
        &self.conv
    }
}

/// `[groups, m, k]` of the matrix product a dense `conv` is.
fn gemm_dims(conv: &Conv2d) -> Result<[usize; 3], OpError> {
    let k = checked_product(
        "conv2d",
        &[
            conv.in_channels / conv.groups,
            conv.kernel[0],
            conv.kernel[1],
        ],
    )?;
    Ok([conv.groups, conv.out_channels / conv.groups, k])
}

/// Convolves `input` (`[in_channels, h, w]`) into `out` (`[out_channels, oh, ow]`, see
/// [`Conv2d::output_hw`]). Allocates its buffers: loops call [`conv2d_with_scratch`].
pub fn conv2d(
    conv: &Conv2d,
    input: &[f32],
    hw: [usize; 2],
    weight: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), OpError> {
    conv2d_with_scratch(
        conv,
        input,
        hw,
        weight,
        bias,
        out,
        &mut ConvScratch::default(),
    )
}

/// [`conv2d`] with caller-owned buffers, on this CPU's best kernels.
pub fn conv2d_with_scratch(
    conv: &Conv2d,
    input: &[f32],
    hw: [usize; 2],
    weight: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    scratch: &mut ConvScratch,
) -> Result<(), OpError> {
    conv2d_with_isa(Isa::detect(), conv, input, hw, weight, bias, out, scratch)
}

/// [`conv2d_with_scratch`] on a chosen instruction set (tests pin [`Isa::Scalar`] and each SIMD
/// family; an `isa` this CPU cannot run is an error).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_with_isa(
    isa: Isa,
    conv: &Conv2d,
    input: &[f32],
    hw: [usize; 2],
    weight: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    scratch: &mut ConvScratch,
) -> Result<(), OpError> {
    let kernel = MicroKernel::for_isa(isa)
        .ok_or_else(|| param("conv2d", format!("this CPU cannot run {isa} kernels")))?;
    conv2d_with_kernel(kernel, conv, input, hw, weight, bias, out, scratch)
}

/// [`conv2d_with_scratch`] on a chosen GEMM kernel (its instruction set also picks the depthwise
/// path, which is f32 whatever the kernel): the backend passes [`MicroKernel::for_weight`] of
/// the stored type.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_with_kernel(
    kernel: MicroKernel,
    conv: &Conv2d,
    input: &[f32],
    hw: [usize; 2],
    weight: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    scratch: &mut ConvScratch,
) -> Result<(), OpError> {
    convolve(
        kernel,
        conv,
        input,
        hw,
        Weights::Rows(weight),
        bias,
        out,
        scratch,
    )
}

/// [`conv2d_with_scratch`] on weights prepared at load ([`PreparedConv`]), on the kernel they
/// were prepared for.
pub fn conv2d_prepared(
    weight: &PreparedConv<'_>,
    input: &[f32],
    hw: [usize; 2],
    bias: Option<&[f32]>,
    out: &mut [f32],
    scratch: &mut ConvScratch,
) -> Result<(), OpError> {
    let weights = match &weight.weights {
        PreparedWeights::Depthwise(values) => Weights::Rows(values),
        PreparedWeights::Dense(packed) => Weights::Packed(packed),
    };
    convolve(
        weight.kernel,
        &weight.conv,
        input,
        hw,
        weights,
        bias,
        out,
        scratch,
    )
}

/// A convolution's weights as a call gets them.
enum Weights<'w> {
    /// `[out, in/groups, kh, kw]` f32.
    Rows(&'w [f32]),
    /// A dense convolution's, packed for the GEMM (their length checked when packed).
    Packed(&'w PackedLhs),
}

#[allow(clippy::too_many_arguments)]
fn convolve(
    kernel: MicroKernel,
    conv: &Conv2d,
    input: &[f32],
    hw: [usize; 2],
    weights: Weights<'_>,
    bias: Option<&[f32]>,
    out: &mut [f32],
    scratch: &mut ConvScratch,
) -> Result<(), OpError> {
    let isa = kernel.isa();
    let weight_len = match weights {
        Weights::Rows(w) => w.len(),
        Weights::Packed(_) => conv.weight_len()?,
    };
    let [oh, ow] = conv.check(
        hw,
        input.len(),
        weight_len,
        out.len(),
        bias.map(<[f32]>::len),
    )?;
    if out.is_empty() {
        return Ok(());
    }
    let geometry = Geometry {
        conv: *conv,
        in_hw: hw,
        out_hw: [oh, ow],
    };
    let shape = GemmShape {
        groups: conv.groups,
        m: geometry.out_per_group(),
        n: oh * ow,
        k: geometry.in_per_group() * geometry.kernel_len(),
    };
    let scratch = &mut scratch.gemm;
    if conv.is_depthwise() {
        let Weights::Rows(weight) = weights else {
            return Err(param("conv2d", "depthwise weights are never packed"));
        };
        if isa == Isa::Scalar {
            depthwise_portable(&geometry, input, weight, bias, out);
        } else {
            depthwise(&geometry, input, weight, bias, out);
        }
        return Ok(());
    }
    if conv.is_pointwise() {
        let source = MatrixPanels {
            data: input,
            k: shape.k,
            n: shape.n,
        };
        weights.multiply(kernel, shape, &source, bias, out, scratch)
    } else {
        let source = Im2col {
            g: &geometry,
            input,
        };
        weights.multiply(kernel, shape, &source, bias, out, scratch)
    }
}

impl Weights<'_> {
    /// The dense convolution's product, packing the weights first unless they are packed.
    fn multiply(
        &self,
        kernel: MicroKernel,
        shape: GemmShape,
        source: &impl PanelSource,
        bias: Option<&[f32]>,
        out: &mut [f32],
        scratch: &mut GemmScratch,
    ) -> Result<(), OpError> {
        match *self {
            Weights::Rows(weight) => {
                gemm::grouped_gemm(kernel, shape, weight, source, bias, out, scratch)
            }
            Weights::Packed(packed) => {
                gemm::grouped_gemm_packed(packed, shape.n, source, bias, out, scratch)
            }
        }
    }
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
}

/// im2col of one group, packed block by block: row `tap = (c, ky, kx)`, column `pixel = (oy, ox)`
/// holds `x[g·C/G + c, oy·sh + ky − ph, ox·sw + kx − pw]`, zero in the padding.
struct Im2col<'a> {
    g: &'a Geometry,
    input: &'a [f32],
}

impl PanelSource for Im2col<'_> {
    fn pack(
        &self,
        group: usize,
        k0: usize,
        kc: usize,
        n0: usize,
        nc: usize,
        nr: usize,
        dst: &mut [f32],
    ) {
        let g = self.g;
        let [kh, kw] = g.conv.kernel;
        let [ih, iw] = g.in_hw;
        let ow = g.out_hw[1];
        let [sh, sw] = g.conv.stride;
        let [ph, pw] = g.conv.padding;
        let c_base = group * g.in_per_group();
        for p in 0..kc {
            let tap = k0 + p;
            let (c, ky, kx) = (tap / (kh * kw), tap / kw % kh, tap % kw);
            let plane = &self.input[(c_base + c) * ih * iw..][..ih * iw];
            // Valid output columns for this kx: pw ≤ ox·sw + kx < iw + pw.
            let first_valid = pw.saturating_sub(kx).div_ceil(sw);
            let end_valid = (iw + pw)
                .checked_sub(kx + 1)
                .map_or(0, |last| last / sw + 1);
            let mut col = 0;
            // One run per output row the block touches.
            while col < nc {
                let pixel = n0 + col;
                let (oy, ox0) = (pixel / ow, pixel % ow);
                let run = (ow - ox0).min(nc - col);
                let Some(iy) = (oy * sh + ky).checked_sub(ph).filter(|&iy| iy < ih) else {
                    put_zeros(dst, kc, nr, p, col, run);
                    col += run;
                    continue;
                };
                let row = &plane[iy * iw..][..iw];
                let first = first_valid.clamp(ox0, ox0 + run);
                let end = end_valid.clamp(first, ox0 + run);
                put_zeros(dst, kc, nr, p, col, first - ox0);
                if sw == 1 {
                    let ix = first + kx - pw;
                    put_run(
                        dst,
                        kc,
                        nr,
                        p,
                        col + first - ox0,
                        &row[ix..ix + (end - first)],
                    );
                } else {
                    for ox in first..end {
                        let at = col + ox - ox0;
                        dst[at / nr * kc * nr + p * nr + at % nr] = row[ox * sw + kx - pw];
                    }
                }
                put_zeros(dst, kc, nr, p, col + end - ox0, ox0 + run - end);
                col += run;
            }
            put_zeros(dst, kc, nr, p, nc, nc.div_ceil(nr) * nr - nc);
        }
    }
}

fn depthwise(g: &Geometry, input: &[f32], weight: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    let [oh, ow] = g.out_hw;
    out.par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(c, plane)| depthwise_plane(g, c, input, weight, bias, plane));
}

/// [`depthwise`] in the baseline build (the scalar reference).
fn depthwise_portable(
    g: &Geometry,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let [oh, ow] = g.out_hw;
    out.par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(c, plane)| depthwise_plane_portable(g, c, input, weight, bias, plane));
}

// The whole plane loop is multiversioned (not just an axpy inside), so the AVX2 build is chosen
// once per plane.
multiversion! {
    /// Output channel `oc` (`plane`: its `[oh·ow]` values) of a depthwise convolution.
    fn depthwise_plane / depthwise_plane_portable(
        g: &Geometry,
        oc: usize,
        input: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        plane: &mut [f32]
    ) {
        let [oh, ow] = g.out_hw;
        plane.fill(bias.map_or(0.0, |b| b[oc]));
        for oy in 0..oh {
            g.accumulate_output_row(oc, oy, input, weight, &mut plane[oy * ow..][..ow]);
        }
    }
}
