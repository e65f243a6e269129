//! A dense 1×1 convolution whose kernel is stored quantized (the matrix `[in, out]` that latte
//! convert writes, ggml order): it is the quantized matrix product `out[C_out, h·w] =
//! W · input[C_in, h·w]`, so it runs on the int8 dot kernels of `matmul` (activations quantized to
//! the weight type's partner, as every quantized matmul does) straight from the file's bytes,
//! where the GEMM of `ops::conv` would hold an f32 copy of the kernel and multiply in f32.
//!
//! This module owns only that choice and its shapes; the arithmetic is `matmul`'s.

use super::isa::Isa;
use super::matmul::{matmul_channels, MatmulScratch, WorkingBytes};
use crate::backend::op_error::{checked_product, param, OpError};
use crate::backend::{BackendError, Conv2d, ScratchSizes};
use crate::dtype::TensorType;
use crate::tensor::TensorView;

/// A dense 1×1 convolution on a quantized kernel, borrowed from the file.
pub struct PointwiseConv<'a> {
    conv: Conv2d,
    weight: TensorView<'a>,
}

/// Whether a convolution of shape `conv` with a kernel stored as `ty` computes as a
/// [`PointwiseConv`] on `isa` (given the `[in, out]` layout: see [`PointwiseConv::new`]).
pub fn applies(conv: &Conv2d, ty: TensorType, isa: Isa) -> bool {
    conv.kernel == [1, 1]
        && conv.stride == [1, 1]
        && conv.padding == [0, 0]
        && conv.groups == 1
        && ty.is_quantized()
        && super::dot::Kernels::new(ty, isa).is_some()
}

impl<'a> PointwiseConv<'a> {
    /// `weight` as the kernel of `conv`, when [`applies`] and its rows are the `out_channels`
    /// rows of `in_channels` values; `None` otherwise (the caller takes the GEMM path).
    pub fn new(weight: TensorView<'a>, conv: &Conv2d, isa: Isa) -> Option<Self> {
        let rows_match = weight.row_len() == conv.in_channels
            && weight.n_rows() == conv.out_channels
            && weight.dims().iter().skip(2).all(|&d| d == 1);
        (applies(conv, weight.ty(), isa) && rows_match).then_some(PointwiseConv {
            conv: *conv,
            weight,
        })
    }

    pub fn conv(&self) -> &Conv2d {
        &self.conv
    }

    /// `out = bias + W · input` on one `[C_in, h, w]` image into `[C_out, h, w]`.
    pub fn forward(
        &self,
        isa: Isa,
        input: &[f32],
        hw: [usize; 2],
        bias: Option<&[f32]>,
        out: &mut [f32],
        scratch: &mut MatmulScratch,
    ) -> Result<(), BackendError> {
        let conv = &self.conv;
        conv.check(
            hw,
            input.len(),
            self.weight.n_elements() as usize,
            out.len(),
            bias.map(<[f32]>::len),
        )?;
        let pixels = hw[0] * hw[1];
        matmul_channels(isa, &self.weight, input, pixels, out, scratch)?;
        if let Some(bias) = bias {
            for (plane, b) in out.chunks_exact_mut(pixels.max(1)).zip(bias) {
                plane.iter_mut().for_each(|v| *v += b);
            }
        }
        Ok(())
    }

    /// The working memory [`PointwiseConv::forward`] grows to for `conv` with a kernel stored as
    /// `ty` on an `hw` input: the quantized columns once (in 4-byte values, as
    /// `CpuBackend::held_scratch_values` counts them) and one task's packed rows per thread.
    pub fn scratch_sizes(
        conv: &Conv2d,
        ty: TensorType,
        isa: Isa,
        hw: [usize; 2],
    ) -> Result<ScratchSizes, OpError> {
        let pixels = checked_product("conv2d", &hw)?;
        let bytes = WorkingBytes::of(isa, ty, conv.in_channels, conv.out_channels, pixels)
            .ok_or_else(|| param("conv2d", format!("{conv:?} on {hw:?} overflows usize")))?;
        Ok(ScratchSizes {
            shared: bytes.activations.div_ceil(4),
            per_thread: bytes.packed_rows_per_thread.div_ceil(4),
        })
    }
}
