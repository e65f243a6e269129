//! Loading the decoder's tensors as f32: borrowed straight from the mapped file when stored as F32,
//! dequantized into an owned copy otherwise. And [`Conv`], a convolution with its weights, the one
//! layer every DC-AE block is made of (diffusers' `nn.Linear` over channels is a 1×1 convolution in
//! CHW layout).
//!
//! Shapes are given in PyTorch order and compared with unit dimensions dropped (the GGUF writer
//! keeps or drops the 1s of a 1×1 kernel depending on the tool that wrote it). This module loads;
//! it must not know the decoder's structure.

use std::borrow::Cow;

use crate::backend::cpu::ops::gemm::GemmScratchSizes;
use crate::backend::cpu::ops::{conv2d_with_scratch, Conv2d, ConvScratch};
use crate::model::{ModelError, ModelFile};

/// The f32 values of `name`, checked to have `torch_shape` (unit dimensions ignored).
pub fn load_f32<'a>(
    file: &'a ModelFile,
    name: &str,
    torch_shape: &[usize],
) -> Result<Cow<'a, [f32]>, ModelError> {
    let view = file.tensor(name)?;
    let squeeze =
        |dims: &mut dyn Iterator<Item = u64>| -> Vec<u64> { dims.filter(|&d| d != 1).collect() };
    let want = squeeze(&mut torch_shape.iter().map(|&d| d as u64));
    let got = squeeze(&mut view.dims().iter().rev().copied());
    if want != got {
        return Err(ModelError::TensorShape {
            file: file.name().into(),
            name: name.into(),
            expected: torch_shape.iter().rev().map(|&d| d as u64).collect(),
            got: view.dims().to_vec(),
        });
    }
    if let Ok(values) = view.as_f32() {
        return Ok(Cow::Borrowed(values));
    }
    // Not F32 (or, in a hand-made file, misaligned): an owned copy, any float or quantized type.
    let dims = view.dims().to_vec();
    Ok(Cow::Owned(file.tensor_f32(name, &dims)?))
}

/// A 2-D convolution with its weights `[out, in/groups, k, k]` and optional bias.
pub struct Conv<'a> {
    pub shape: Conv2d,
    weight: Cow<'a, [f32]>,
    bias: Option<Cow<'a, [f32]>>,
}

impl<'a> Conv<'a> {
    /// Loads `{name}.weight` (and `{name}.bias` when `bias`) for `shape`.
    pub fn load(
        file: &'a ModelFile,
        name: &str,
        shape: Conv2d,
        bias: bool,
    ) -> Result<Self, ModelError> {
        let [kh, kw] = shape.kernel;
        let weight = load_f32(
            file,
            &format!("{name}.weight"),
            &[shape.out_channels, shape.in_channels / shape.groups, kh, kw],
        )?;
        let bias = bias
            .then(|| load_f32(file, &format!("{name}.bias"), &[shape.out_channels]))
            .transpose()?;
        Ok(Conv {
            shape,
            weight,
            bias,
        })
    }

    /// A `k×k` "same" convolution (stride 1, padding k/2) from `in` to `out` channels.
    pub fn same(
        file: &'a ModelFile,
        name: &str,
        in_channels: usize,
        out_channels: usize,
        k: usize,
        bias: bool,
    ) -> Result<Self, ModelError> {
        Self::load(file, name, Conv2d::same(in_channels, out_channels, k), bias)
    }

    /// A bias-free `nn.Linear` applied over channels: a 1×1 convolution whose weight is `[out, in]`.
    pub fn linear(
        file: &'a ModelFile,
        name: &str,
        in_features: usize,
        out_features: usize,
    ) -> Result<Self, ModelError> {
        Self::same(file, name, in_features, out_features, 1, false)
    }

    /// `out = conv(input)` for a `[in, h, w]` input; `out` holds `[out, h, w]` (stride 1, "same").
    pub fn forward(
        &self,
        input: &[f32],
        hw: [usize; 2],
        out: &mut [f32],
        scratch: &mut ConvScratch,
    ) -> Result<(), ModelError> {
        conv2d_with_scratch(
            &self.shape,
            input,
            hw,
            &self.weight,
            self.bias.as_deref(),
            out,
            scratch,
        )?;
        Ok(())
    }

    /// The packing buffers [`Conv::forward`] grows its scratch to on an `hw` input (`None` on
    /// overflow).
    pub fn scratch_sizes(&self, hw: [usize; 2]) -> Option<GemmScratchSizes> {
        ConvScratch::sizes_for(&self.shape, hw).ok()
    }

    pub fn out_channels(&self) -> usize {
        self.shape.out_channels
    }
}
