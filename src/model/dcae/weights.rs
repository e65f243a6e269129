//! Loading the decoder's tensors: per-channel vectors (norms, biases) as backend buffers, and
//! [`Conv`], a convolution with its weights, the one layer every DC-AE block is made of
//! (diffusers' `nn.Linear` over channels is a 1×1 convolution in CHW layout).
//!
//! Shapes are given in PyTorch order and compared with unit dimensions dropped (the GGUF writer
//! keeps or drops the 1s of a 1×1 kernel depending on the tool that wrote it). This module loads;
//! it must not know the decoder's structure.

use crate::backend::{Backend, Conv2d, ScratchSizes, Slice, SliceMut};
use crate::dtype::TensorType;
use crate::model::{ModelError, ModelFile};
use crate::tensor::TensorView;

/// The tensor `name`, checked to have `torch_shape` (unit dimensions ignored).
fn checked_view<'a>(
    file: &'a ModelFile,
    name: &str,
    torch_shape: &[usize],
) -> Result<TensorView<'a>, ModelError> {
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
    Ok(view)
}

/// The f32 values of `name` (any float or quantized type), checked to have `torch_shape`.
pub fn load_f32(
    file: &ModelFile,
    name: &str,
    torch_shape: &[usize],
) -> Result<Vec<f32>, ModelError> {
    let view = checked_view(file, name, torch_shape)?;
    let dims = view.dims().to_vec();
    file.tensor_f32(name, &dims)
}

/// `name` (checked to have `torch_shape`) as a buffer on `backend`.
pub fn load_vector<B: Backend>(
    backend: &B,
    file: &ModelFile,
    name: &str,
    torch_shape: &[usize],
) -> Result<B::Buffer, ModelError> {
    Ok(backend.upload_owned(load_f32(file, name, torch_shape)?)?)
}

/// A 2-D convolution with its weights `[out, in/groups, k, k]` and optional bias.
pub struct Conv<'a, B: Backend> {
    backend: &'a B,
    pub shape: Conv2d,
    weight: B::ConvWeight<'a>,
    /// The stored type of the weight (the backend's working memory depends on it).
    weight_type: TensorType,
    bias: Option<B::Buffer>,
}

impl<'a, B: Backend> Conv<'a, B> {
    /// Loads `{name}.weight` (and `{name}.bias` when `bias`) for `shape`.
    pub fn load(
        backend: &'a B,
        file: &'a ModelFile,
        name: &str,
        shape: Conv2d,
        bias: bool,
    ) -> Result<Self, ModelError> {
        let [kh, kw] = shape.kernel;
        let view = checked_view(
            file,
            &format!("{name}.weight"),
            &[shape.out_channels, shape.in_channels / shape.groups, kh, kw],
        )?;
        let bias = bias
            .then(|| {
                load_vector(
                    backend,
                    file,
                    &format!("{name}.bias"),
                    &[shape.out_channels],
                )
            })
            .transpose()?;
        Ok(Conv {
            backend,
            shape,
            weight_type: view.ty(),
            weight: backend.conv_weight(view, &shape)?,
            bias,
        })
    }

    /// A `k×k` "same" convolution (stride 1, padding k/2) from `in` to `out` channels.
    pub fn same(
        backend: &'a B,
        file: &'a ModelFile,
        name: &str,
        [in_channels, out_channels]: [usize; 2],
        k: usize,
        bias: bool,
    ) -> Result<Self, ModelError> {
        let shape = Conv2d::same(in_channels, out_channels, k);
        Self::load(backend, file, name, shape, bias)
    }

    /// A bias-free `nn.Linear` applied over channels: a 1×1 convolution whose weight is `[out, in]`.
    pub fn linear(
        backend: &'a B,
        file: &'a ModelFile,
        name: &str,
        features: [usize; 2],
    ) -> Result<Self, ModelError> {
        Self::same(backend, file, name, features, 1, false)
    }

    /// `out = conv(input)` for a `[in, h, w]` input; `out` holds `[out, h, w]` (stride 1, "same").
    pub fn forward(
        &self,
        input: Slice<'_, B::Buffer>,
        hw: [usize; 2],
        out: SliceMut<'_, B::Buffer>,
    ) -> Result<(), ModelError> {
        let bias = self.bias.as_ref().map(crate::backend::DeviceBuffer::all);
        self.backend
            .conv2d(&self.shape, &self.weight, bias, input, hw, out)?;
        Ok(())
    }

    /// The backend working memory [`Conv::forward`] grows to on an `hw` input (`None` on overflow).
    pub fn scratch_sizes(&self, hw: [usize; 2]) -> Option<ScratchSizes> {
        self.backend
            .conv2d_scratch(&self.shape, self.weight_type, hw)
    }

    pub fn out_channels(&self) -> usize {
        self.shape.out_channels
    }

    /// Host bytes the backend holds for this weight beyond the file (`None` on overflow).
    pub fn host_bytes(&self) -> Option<u64> {
        self.backend
            .conv_weight_host_bytes(&self.shape, self.weight_type)
    }
}

/// The sum of the convolutions' [`Conv::host_bytes`] (`None` on overflow).
pub fn host_bytes<B: Backend>(convs: &[&Conv<'_, B>]) -> Option<u64> {
    convs
        .iter()
        .try_fold(0u64, |sum, c| sum.checked_add(c.host_bytes()?))
}
