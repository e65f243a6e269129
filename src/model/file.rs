//! `ModelFile`: one GGUF model (mapped from disk, or embedded in the binary) with the lookups every
//! model loader needs: tensors by name with their expected shape, f32 copies of small tensors, and
//! typed metadata whose errors name the file and the key. A model may come in two files, as
//! llama.cpp's multimodal models do (a text model and its `mmproj-*.gguf` vision projector):
//! [`ModelFile::with_projector`] joins them, and every lookup the first file cannot answer goes to the
//! projector.
//!
//! This module owns lookups and their error messages; it must not know any model's names or math
//! (which projector fits which text model is `model::projector`'s question).

use std::path::Path;

use crate::gguf::{GgufFile, MetadataArray, MetadataValue};
use crate::tensor::TensorView;

use super::error::ModelError;

/// A validated GGUF file and the name errors use for it (its path, or `<embedded demo>`).
pub struct ModelFile {
    name: String,
    gguf: GgufFile,
    /// The second file of a two-file model, consulted for what this one lacks.
    projector: Option<Box<ModelFile>>,
}

impl ModelFile {
    /// Maps `path` read-only and validates its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let path = path.as_ref();
        Ok(ModelFile {
            name: path.display().to_string(),
            gguf: GgufFile::open(path)?,
            projector: None,
        })
    }

    /// A file held in memory (the demo model embedded in the binary, tests); `name` labels errors.
    pub fn from_bytes(name: impl Into<String>, bytes: Vec<u8>) -> Result<Self, ModelError> {
        Ok(ModelFile {
            name: name.into(),
            gguf: GgufFile::from_bytes(bytes)?,
            projector: None,
        })
    }

    /// The header of a file being planned (`latte convert`): every lookup of metadata and tensor
    /// shapes works, tensor data is absent (see [`GgufFile::from_header`]).
    pub fn from_header(name: impl Into<String>, header: Vec<u8>) -> Result<Self, ModelError> {
        Ok(ModelFile {
            name: name.into(),
            gguf: GgufFile::from_header(header)?,
            projector: None,
        })
    }

    /// This file completed by `projector`: tensors and keys this file lacks are looked up there.
    /// Refused when the two share a tensor name (which one would a loader mean?) or the projector
    /// is itself a pair.
    pub fn with_projector(mut self, projector: ModelFile) -> Result<Self, ModelError> {
        if projector.projector.is_some() {
            return Err(projector.invalid("a projector cannot have a projector of its own"));
        }
        if let Some(shared) = projector
            .gguf
            .tensor_infos()
            .iter()
            .find(|info| self.gguf.tensor_info(&info.name).is_some())
        {
            return Err(ModelError::Invalid {
                file: format!("{} and {}", self.name, projector.name),
                what: format!(
                    "both files hold tensor '{}': the second should be the first's projector only",
                    shared.name
                ),
            });
        }
        self.projector = Some(Box::new(projector));
        Ok(self)
    }

    /// The name errors use: the path, or both paths for a two-file model.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The first file's own GGUF (what residency advice and memory plans are about).
    pub fn gguf(&self) -> &GgufFile {
        &self.gguf
    }

    /// The projector joined by [`ModelFile::with_projector`], if any.
    pub fn projector(&self) -> Option<&ModelFile> {
        self.projector.as_deref()
    }

    /// The file that holds tensor `name`: this one, else the projector.
    fn tensor_owner(&self, name: &str) -> Option<&ModelFile> {
        if self.gguf.tensor_info(name).is_some() {
            return Some(self);
        }
        self.projector
            .as_deref()
            .filter(|p| p.gguf.tensor_info(name).is_some())
    }

    /// The file that holds metadata `key`: this one, else the projector.
    fn key_owner(&self, key: &str) -> Option<&ModelFile> {
        if self.gguf.get(key).is_some() {
            return Some(self);
        }
        self.projector
            .as_deref()
            .filter(|p| p.gguf.get(key).is_some())
    }

    /// The names errors about something absent use: every file that was searched.
    fn searched(&self) -> String {
        match &self.projector {
            Some(p) => format!("{} (with {})", self.name, p.name),
            None => self.name.clone(),
        }
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.tensor_owner(name).is_some()
    }

    /// The shape of tensor `name` (ggml order): all a config needs, and all a planned file has.
    pub fn tensor_dims(&self, name: &str) -> Result<&[u64], ModelError> {
        self.tensor_owner(name)
            .and_then(|owner| owner.gguf.tensor_info(name))
            .map(|info| info.dims.as_slice())
            .ok_or_else(|| ModelError::MissingTensor {
                file: self.searched(),
                name: name.into(),
            })
    }

    /// The tensor `name`, whatever its type and shape.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, ModelError> {
        let Some(owner) = self.tensor_owner(name) else {
            return Err(ModelError::MissingTensor {
                file: self.searched(),
                name: name.into(),
            });
        };
        owner
            .gguf
            .tensor(name)
            .ok_or_else(|| owner.invalid(format!("tensor '{name}' has no data (a planned file)")))
    }

    /// The tensor `name`, checked to have `dims` (ggml order, innermost first; trailing 1s ignored).
    pub fn tensor_with_dims(&self, name: &str, dims: &[u64]) -> Result<TensorView<'_>, ModelError> {
        let view = self.tensor(name)?;
        let file = self
            .tensor_owner(name)
            .map_or(&self.name, |owner| &owner.name);
        let trim = |d: &[u64]| {
            let keep = d.iter().rposition(|&x| x != 1).map_or(0, |i| i + 1);
            d[..keep].to_vec()
        };
        if trim(view.dims()) != trim(dims) {
            return Err(ModelError::TensorShape {
                file: file.clone(),
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
                file: self
                    .tensor_owner(name)
                    .map_or(&self.name, |o| &o.name)
                    .clone(),
                name: name.into(),
                cause: source,
            }
        })?;
        Ok(out)
    }

    /// The metadata value `key`, if present.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.key_owner(key).and_then(|owner| owner.gguf.get(key))
    }

    fn required(&self, key: &str) -> Result<&MetadataValue, ModelError> {
        self.get(key).ok_or_else(|| ModelError::MissingKey {
            file: self.searched(),
            key: key.into(),
        })
    }

    fn wrong_type(&self, key: &str, expected: &'static str) -> ModelError {
        ModelError::KeyType {
            file: self.key_owner(key).map_or(&self.name, |o| &o.name).clone(),
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
            file: self.searched(),
            what: what.into(),
        }
    }
}
