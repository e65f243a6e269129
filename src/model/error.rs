//! The error every model loader and model forward pass returns. Each variant names the file and the
//! tensor or metadata key at fault, so a user can tell which part of which file is wrong.

use thiserror::Error;

use super::dcae::DcaeConfigError;
use crate::backend::cpu::matmul::MatmulError;
use crate::backend::{BackendError, OpError};
use crate::gguf::GgufError;
use crate::quant::QuantError;
use crate::tensor::TensorError;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{file}: tensor '{name}' is missing")]
    MissingTensor { file: String, name: String },
    #[error("{file}: tensor '{name}' has shape {got:?} (ggml order), expected {expected:?}")]
    TensorShape {
        file: String,
        name: String,
        expected: Vec<u64>,
        got: Vec<u64>,
    },
    #[error("{file}: tensor '{name}': {cause}")]
    TensorData {
        file: String,
        name: String,
        cause: QuantError,
    },
    #[error("{file}: metadata '{key}' is missing")]
    MissingKey { file: String, key: String },
    #[error("{file}: metadata '{key}' should be {expected}")]
    KeyType {
        file: String,
        key: String,
        expected: &'static str,
    },
    /// A value that parses but makes no sense (zero heads, sections that do not add up, ...).
    #[error("{file}: {what}")]
    Invalid { file: String, what: String },
    /// The DC-AE config JSON (`latte.dcae.config_json`) is malformed or names something unknown.
    #[error("{file}: latte.dcae.config_json: {cause}")]
    DcaeConfig {
        file: String,
        cause: DcaeConfigError,
    },
    /// A sequence does not fit the room left in a preallocated KV cache (prompt longer than the
    /// context, or a generation that ran past it).
    #[error(
        "context full: {needed} tokens do not fit, {capacity} is the context size ({used} in use)"
    )]
    ContextFull {
        needed: usize,
        used: usize,
        capacity: usize,
    },
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

impl From<OpError> for ModelError {
    fn from(e: OpError) -> Self {
        ModelError::Backend(e.into())
    }
}

impl From<MatmulError> for ModelError {
    fn from(e: MatmulError) -> Self {
        ModelError::Backend(e.into())
    }
}
