//! `Linear`: a weight matrix of any computable type plus an optional f32 bias, `y = W·x + b` over
//! token-major rows. The one way model code applies a projection (QKV, FFN, heads, patch embeddings).
//!
//! This module owns shape checks and the bias add; the arithmetic is `backend::cpu::matmul`'s.

use crate::backend::cpu::matmul::{matmul, MatmulScratch};
use crate::tensor::TensorView;

use super::error::ModelError;
use super::file::ModelFile;

/// A projection from `in_features` to `out_features`, weight stored `[out, in]` (torch), i.e. ggml
/// dims `[in, out]`.
pub struct Linear<'a> {
    weight: TensorView<'a>,
    bias: Option<Vec<f32>>,
    in_features: usize,
    out_features: usize,
}

impl<'a> Linear<'a> {
    /// Loads `weight` (checked to be `[in, out]` in ggml order) and, if `bias` is given, that bias
    /// (checked to hold `out` values).
    pub fn load(
        file: &'a ModelFile,
        weight: &str,
        bias: Option<&str>,
        in_features: usize,
        out_features: usize,
    ) -> Result<Self, ModelError> {
        let weight = file.tensor_with_dims(weight, &[in_features as u64, out_features as u64])?;
        let bias = bias
            .map(|name| file.tensor_f32(name, &[out_features as u64]))
            .transpose()?;
        Ok(Linear {
            weight,
            bias,
            in_features,
            out_features,
        })
    }

    /// A weight stored with more dimensions (a convolution kernel, e.g. a patch embedding
    /// `[kw, kh, c_in, c_out]`) used as the matrix `[in, out]` over flattened patches: its
    /// element count must be `in · out` and its rows must stay whole blocks of its type.
    pub fn load_flattened(
        file: &'a ModelFile,
        weight: &str,
        in_features: usize,
        out_features: usize,
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
        Ok(Linear {
            weight: TensorView::new(view.name(), view.ty(), &dims, view.bytes())?,
            bias: None,
            in_features,
            out_features,
        })
    }

    /// `name.weight` and, when `with_bias`, `name.bias`: the usual GGUF pair.
    pub fn load_pair(
        file: &'a ModelFile,
        name: &str,
        with_bias: bool,
        in_features: usize,
        out_features: usize,
    ) -> Result<Self, ModelError> {
        let bias = with_bias.then(|| format!("{name}.bias"));
        Self::load(
            file,
            &format!("{name}.weight"),
            bias.as_deref(),
            in_features,
            out_features,
        )
    }

    pub fn in_features(&self) -> usize {
        self.in_features
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    pub fn weight(&self) -> &TensorView<'a> {
        &self.weight
    }

    /// `y[n × out] = x[n × in] · Wᵀ + b` for `n` token rows.
    pub fn forward(
        &self,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        scratch: &mut MatmulScratch,
    ) -> Result<(), ModelError> {
        matmul(&self.weight, x, n, y, scratch)?;
        if let Some(bias) = &self.bias {
            for row in y.chunks_exact_mut(self.out_features) {
                for (value, b) in row.iter_mut().zip(bias) {
                    *value += b;
                }
            }
        }
        Ok(())
    }
}
