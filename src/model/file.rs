//! `ModelFile`: one GGUF model (mapped from disk, or embedded in the binary) with the lookups every
//! model loader needs: tensors by name with their expected shape, f32 copies of small tensors, and
//! typed metadata whose errors name the file and the key.
//!
//! This module owns lookups and their error messages; it must not know any model's names or math.

use std::path::Path;

use crate::gguf::{GgufFile, MetadataArray, MetadataValue};
use crate::tensor::TensorView;

use super::error::ModelError;

/// A validated GGUF file and the name errors use for it (its path, or `<embedded demo>`).
pub struct ModelFile {
    name: String,
    gguf: GgufFile,
}

impl ModelFile {
    /// Maps `path` read-only and validates its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let path = path.as_ref();
        Ok(ModelFile {
            name: path.display().to_string(),
            gguf: GgufFile::open(path)?,
        })
    }

    /// A file held in memory (the demo model embedded in the binary, tests); `name` labels errors.
    pub fn from_bytes(name: impl Into<String>, bytes: Vec<u8>) -> Result<Self, ModelError> {
        Ok(ModelFile {
            name: name.into(),
            gguf: GgufFile::from_bytes(bytes)?,
        })
    }

    /// The header of a file being planned (`latte convert`): every lookup of metadata and tensor
    /// shapes works, tensor data is absent (see [`GgufFile::from_header`]).
    pub fn from_header(name: impl Into<String>, header: Vec<u8>) -> Result<Self, ModelError> {
        Ok(ModelFile {
            name: name.into(),
            gguf: GgufFile::from_header(header)?,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn gguf(&self) -> &GgufFile {
        &self.gguf
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.gguf.tensor_info(name).is_some()
    }

    /// The shape of tensor `name` (ggml order): all a config needs, and all a planned file has.
    pub fn tensor_dims(&self, name: &str) -> Result<&[u64], ModelError> {
        self.gguf
            .tensor_info(name)
            .map(|info| info.dims.as_slice())
            .ok_or_else(|| ModelError::MissingTensor {
                file: self.name.clone(),
                name: name.into(),
            })
    }

    /// The tensor `name`, whatever its type and shape.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, ModelError> {
        match self.gguf.tensor(name) {
            Some(view) => Ok(view),
            None if self.has_tensor(name) => {
                Err(self.invalid(format!("tensor '{name}' has no data (a planned file)")))
            }
            None => Err(ModelError::MissingTensor {
                file: self.name.clone(),
                name: name.into(),
            }),
        }
    }

    /// The tensor `name`, checked to have `dims` (ggml order, innermost first; trailing 1s ignored).
    pub fn tensor_with_dims(&self, name: &str, dims: &[u64]) -> Result<TensorView<'_>, ModelError> {
        let view = self.tensor(name)?;
        let trim = |d: &[u64]| {
            let keep = d.iter().rposition(|&x| x != 1).map_or(0, |i| i + 1);
            d[..keep].to_vec()
        };
        if trim(view.dims()) != trim(dims) {
            return Err(ModelError::TensorShape {
                file: self.name.clone(),
                name: name.into(),
                expected: dims.to_vec(),
                got: view.dims().to_vec(),
            });
        }
        Ok(view)
    }

    /// An f32 copy of `name` (any float or quantized type), checked to have `dims`. For the small
    /// tensors (norms, biases, embeddings rows) that the math reads as plain floats.
    pub fn tensor_f32(&self, name: &str, dims: &[u64]) -> Result<Vec<f32>, ModelError> {
        let view = self.tensor_with_dims(name, dims)?;
        let mut out = vec![0f32; view.n_elements() as usize];
        crate::quant::dequantize(view.ty(), view.bytes(), &mut out).map_err(|source| {
            ModelError::TensorData {
                file: self.name.clone(),
                name: name.into(),
                cause: source,
            }
        })?;
        Ok(out)
    }

    /// The metadata value `key`, if present.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.gguf.get(key)
    }

    fn required(&self, key: &str) -> Result<&MetadataValue, ModelError> {
        self.get(key).ok_or_else(|| ModelError::MissingKey {
            file: self.name.clone(),
            key: key.into(),
        })
    }

    fn wrong_type(&self, key: &str, expected: &'static str) -> ModelError {
        ModelError::KeyType {
            file: self.name.clone(),
            key: key.into(),
            expected,
        }
    }

    /// An integer key that fits `usize` (any integer width).
    pub fn usize(&self, key: &str) -> Result<usize, ModelError> {
        let value = self.required(key)?;
        value
            .as_i64()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| self.wrong_type(key, "a non-negative integer"))
    }

    /// A float key (f32 or f64 stored).
    pub fn f64(&self, key: &str) -> Result<f64, ModelError> {
        let value = self.required(key)?;
        value
            .as_f64()
            .filter(|v| v.is_finite())
            .ok_or_else(|| self.wrong_type(key, "a finite number"))
    }

    pub fn f32(&self, key: &str) -> Result<f32, ModelError> {
        Ok(self.f64(key)? as f32)
    }

    pub fn bool(&self, key: &str) -> Result<bool, ModelError> {
        let value = self.required(key)?;
        value
            .as_bool()
            .ok_or_else(|| self.wrong_type(key, "a boolean"))
    }

    pub fn str(&self, key: &str) -> Result<&str, ModelError> {
        let value = self.required(key)?;
        value
            .as_str()
            .ok_or_else(|| self.wrong_type(key, "a string"))
    }

    fn array(&self, key: &str) -> Result<&MetadataArray, ModelError> {
        let value = self.required(key)?;
        value
            .as_array()
            .ok_or_else(|| self.wrong_type(key, "an array"))
    }

    /// An array of integers of any width.
    pub fn i64_array(&self, key: &str) -> Result<Vec<i64>, ModelError> {
        self.array(key)?
            .to_i64_vec()
            .ok_or_else(|| self.wrong_type(key, "an array of integers"))
    }

    /// An array of finite floats (f32 or f64 stored).
    pub fn f64_array(&self, key: &str) -> Result<Vec<f64>, ModelError> {
        let array = self.array(key)?;
        let values: Option<Vec<f64>> = match array {
            MetadataArray::F32(v) => Some(v.iter().map(|&x| x as f64).collect()),
            MetadataArray::F64(v) => Some(v.clone()),
            _ => None,
        };
        values
            .filter(|v| v.iter().all(|x| x.is_finite()))
            .ok_or_else(|| self.wrong_type(key, "an array of finite numbers"))
    }

    pub fn str_array(&self, key: &str) -> Result<&[String], ModelError> {
        self.array(key)?
            .as_strs()
            .ok_or_else(|| self.wrong_type(key, "an array of strings"))
    }

    /// An error about this file that is not a missing or mistyped key (a shape that does not add up).
    pub fn invalid(&self, what: impl Into<String>) -> ModelError {
        ModelError::Invalid {
            file: self.name.clone(),
            what: what.into(),
        }
    }
}
