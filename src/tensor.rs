//! Typed, zero-copy views of tensor bytes (usually bytes of a memory-mapped GGUF file).
//!
//! A view knows its name, element type and shape; it hands out its bytes as rows, as `f32`s, or as
//! quantization blocks, checking sizes and alignment instead of trusting them. It owns no memory and
//! must not know where the bytes came from.

use bytemuck::Pod;
use thiserror::Error;

use crate::dtype::TensorType;

/// Dimensions in ggml order: `dims[0]` is the innermost (the row length), up to four.
pub const MAX_DIMS: usize = 4;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TensorError {
    #[error("tensor '{name}': {bytes} bytes do not hold {elements} elements of {ty}")]
    SizeMismatch {
        name: String,
        ty: TensorType,
        elements: u64,
        bytes: usize,
    },
    #[error("tensor '{name}': type {actual} where {expected} was asked for")]
    WrongType {
        name: String,
        expected: &'static str,
        actual: TensorType,
    },
    #[error("tensor '{name}': data is not aligned for {what}")]
    Misaligned { name: String, what: &'static str },
    #[error("tensor '{name}': {n_dims} dimensions (at most {MAX_DIMS})")]
    TooManyDims { name: String, n_dims: usize },
}

/// A borrowed tensor: name, type, shape (ggml order) and its raw bytes.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    name: &'a str,
    ty: TensorType,
    dims: [u64; MAX_DIMS],
    n_dims: usize,
    data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// A view of `data` as a tensor of type `ty` with `dims` (ggml order). Checks that the byte
    /// count is exactly what the type and shape need.
    pub fn new(
        name: &'a str,
        ty: TensorType,
        dims: &[u64],
        data: &'a [u8],
    ) -> Result<Self, TensorError> {
        if dims.len() > MAX_DIMS {
            return Err(TensorError::TooManyDims {
                name: name.into(),
                n_dims: dims.len(),
            });
        }
        let mut all = [1u64; MAX_DIMS];
        all[..dims.len()].copy_from_slice(dims);
        let elements = all.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        let expected = elements.and_then(|_| {
            let rows = all[1..]
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))?;
            ty.row_bytes(all[0])?.checked_mul(rows)
        });
        if expected != Some(data.len() as u64) {
            return Err(TensorError::SizeMismatch {
                name: name.into(),
                ty,
                elements: elements.unwrap_or(u64::MAX),
                bytes: data.len(),
            });
        }
        Ok(TensorView {
            name,
            ty,
            dims: all,
            n_dims: dims.len(),
            data,
        })
    }

    pub fn name(&self) -> &'a str {
        self.name
    }

    pub fn ty(&self) -> TensorType {
        self.ty
    }

    /// The dimensions in ggml order (innermost first).
    pub fn dims(&self) -> &[u64] {
        &self.dims[..self.n_dims]
    }

    /// Elements in one row (`dims[0]`).
    pub fn row_len(&self) -> usize {
        self.dims[0] as usize
    }

    /// Number of rows (the product of all dimensions but the first).
    pub fn n_rows(&self) -> usize {
        self.dims[1..].iter().product::<u64>() as usize
    }

    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.data
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.data.len() / self.n_rows().max(1)
    }

    /// The bytes of row `i`. Panics when `i >= n_rows()`, like slice indexing.
    pub fn row(&self, i: usize) -> &'a [u8] {
        let n = self.row_bytes();
        &self.data[i * n..(i + 1) * n]
    }

    /// The data as `f32`s; the type must be F32.
    pub fn as_f32(&self) -> Result<&'a [f32], TensorError> {
        if self.ty != TensorType::F32 {
            return Err(TensorError::WrongType {
                name: self.name.into(),
                expected: "F32",
                actual: self.ty,
            });
        }
        self.cast("f32")
    }

    /// The data as a slice of quantization blocks `B` (from [`crate::quant::blocks`]); the caller
    /// names the type it expects, which must be the view's.
    pub fn blocks<B: Pod>(&self, expected: TensorType) -> Result<&'a [B], TensorError> {
        if self.ty != expected || std::mem::size_of::<B>() != expected.block_bytes() {
            return Err(TensorError::WrongType {
                name: self.name.into(),
                expected: expected.name(),
                actual: self.ty,
            });
        }
        self.cast(std::any::type_name::<B>())
    }

    fn cast<T: Pod>(&self, what: &'static str) -> Result<&'a [T], TensorError> {
        bytemuck::try_cast_slice(self.data).map_err(|_| TensorError::Misaligned {
            name: self.name.into(),
            what,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_checks_size() {
        let data = vec![0u8; 36];
        let v = TensorView::new("w", TensorType::Q4_0, &[64, 1], &data).unwrap();
        assert_eq!(v.n_rows(), 1);
        assert_eq!(v.row_len(), 64);
        assert!(TensorView::new("w", TensorType::Q4_0, &[64, 2], &data).is_err());
        assert!(TensorView::new("w", TensorType::Q4_0, &[33], &data).is_err());
        assert!(TensorView::new("w", TensorType::F32, &[u64::MAX, 2], &data).is_err());
        assert!(TensorView::new("w", TensorType::F32, &[1, 1, 1, 1, 1], &data).is_err());
    }

    #[test]
    fn typed_access() {
        let data: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let bytes: &[u8] = bytemuck::cast_slice(&data);
        let v = TensorView::new("x", TensorType::F32, &[4, 2], bytes).unwrap();
        assert_eq!(v.as_f32().unwrap()[5], 5.0);
        assert_eq!(v.row(1).len(), 16);
        assert!(v
            .blocks::<crate::quant::blocks::BlockQ4_0>(TensorType::Q4_0)
            .is_err());
        // Misaligned bytes are refused, not read.
        let raw = [0u8; 17];
        let v = TensorView::new("y", TensorType::F32, &[4], &raw[1..]).unwrap();
        assert!(matches!(v.as_f32(), Err(TensorError::Misaligned { .. })));
    }
}
