//! `Linear`: a weight matrix of any computable type plus an optional f32 bias, `y = W·x + b` over
//! token-major rows. The one way model code applies a projection (QKV, FFN, heads, patch embeddings).
//!
//! This module owns shape checks and where the weight lives; the arithmetic is the backend's.

use crate::backend::{Backend, Placement, Slice, SliceMut};
use crate::tensor::TensorView;

use super::error::ModelError;
use super::file::ModelFile;

/// A projection from `in_features` to `out_features`, weight stored `[out, in]` (torch), i.e. ggml
/// dims `[in, out]`, prepared on backend `B`.
pub struct Linear<'a, B: Backend> {
    backend: &'a B,
    weight: B::Weight<'a>,
    bias: Option<B::Buffer>,
    in_features: usize,
    out_features: usize,
}

impl<'a, B: Backend> Linear<'a, B> {
    /// Loads `weight` (checked to be `[in, out]` in ggml order) and, if `bias` is given, that bias
    /// (checked to hold `out` values).
    pub fn load(
        backend: &'a B,
        file: &'a ModelFile,
        weight: &str,
        bias: Option<&str>,
        [in_features, out_features]: [usize; 2],
        placement: Placement,
    ) -> Result<Self, ModelError> {
        let view = file.tensor_with_dims(weight, &[in_features as u64, out_features as u64])?;
        let bias = bias
            .map(|name| file.tensor_f32(name, &[out_features as u64]))
            .transpose()?
            .map(|b| backend.upload_owned(b))
            .transpose()?;
        Ok(Linear {
            backend,
            weight: backend.weight(view, placement)?,
            bias,
            in_features,
            out_features,
        })
    }

    /// A weight stored with more dimensions (a convolution kernel, e.g. a patch embedding
    /// `[kw, kh, c_in, c_out]`) used as the matrix `[in, out]` over flattened patches: its
    /// element count must be `in · out` and its rows must stay whole blocks of its type.
    pub fn load_flattened(
        backend: &'a B,
        file: &'a ModelFile,
        weight: &str,
        [in_features, out_features]: [usize; 2],
    ) -> Result<Self, ModelError> {
        let view = file.tensor(weight)?;
        let dims = [in_features as u64, out_features as u64];
        if view.n_elements() != dims[0] * dims[1] {
            return Err(ModelError::TensorShape {
                file: file.name().into(),
                name: weight.into(),
                expected: dims.to_vec(),
                got: view.dims().to_vec(),
            });
        }
        let view = TensorView::new(view.name(), view.ty(), &dims, view.bytes())?;
        Ok(Linear {
            backend,
            weight: backend.weight(view, Placement::Shared)?,
            bias: None,
            in_features,
            out_features,
        })
    }

    /// `name.weight` and, when `with_bias`, `name.bias`: the usual GGUF pair.
    pub fn load_pair(
        backend: &'a B,
        file: &'a ModelFile,
        name: &str,
        with_bias: bool,
        features: [usize; 2],
        placement: Placement,
    ) -> Result<Self, ModelError> {
        let bias = with_bias.then(|| format!("{name}.bias"));
        Self::load(
            backend,
            file,
            &format!("{name}.weight"),
            bias.as_deref(),
            features,
            placement,
        )
    }

    pub fn in_features(&self) -> usize {
        self.in_features
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    pub fn weight(&self) -> &B::Weight<'a> {
        &self.weight
    }

    /// `y[n × out] = x[n × in] · Wᵀ + b` for `n` token rows.
    pub fn forward(
        &self,
        x: Slice<'_, B::Buffer>,
        n: usize,
        y: SliceMut<'_, B::Buffer>,
    ) -> Result<(), ModelError> {
        let bias = self
            .bias
            .as_ref()
            .map(|b| crate::backend::DeviceBuffer::all(b));
        Ok(self.backend.matmul(&self.weight, x, n, y, bias)?)
    }
}
