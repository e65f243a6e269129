//! What can go wrong converting a checkpoint. Every variant names the file (and the tensor or key)
//! so a user can find the problem; none carries logic.

use std::path::PathBuf;

use thiserror::Error;

use super::quantize::QuantizeError;
use crate::gguf::WriteError;
use crate::quant::QuantError;
use crate::safetensors::{Dtype, SafetensorsError};

#[derive(Debug, Error)]
pub enum ConvertError {
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: malformed JSON: {cause}", path.display())]
    Json {
        path: PathBuf,
        cause: serde_json::Error,
    },
    #[error("{}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    #[error(transparent)]
    Safetensors(#[from] SafetensorsError),
    #[error("{}: tensor '{tensor}' is said to be in shard '{}', which does not exist", index.display(), shard.display())]
    MissingShard {
        index: PathBuf,
        tensor: String,
        shard: PathBuf,
    },
    #[error("{}: tensor '{tensor}' is in more than one shard", file.display())]
    DuplicateTensor { file: PathBuf, tensor: String },
    #[error("{}: missing tensor '{tensor}'", file.display())]
    MissingTensor { file: PathBuf, tensor: String },
    #[error("{}: unexpected tensor '{tensor}' (not part of a {model} checkpoint)", file.display())]
    UnexpectedTensor {
        file: PathBuf,
        tensor: String,
        model: &'static str,
    },
    #[error("{}: tensor '{tensor}' has shape {found:?}, but the config says {expected:?}", file.display())]
    ShapeMismatch {
        file: PathBuf,
        tensor: String,
        found: Vec<u64>,
        expected: Vec<u64>,
    },
    #[error("{}: tensor '{tensor}' has shape {shape:?}; GGUF holds 1 to 4 non-zero dimensions", file.display())]
    BadRank {
        file: PathBuf,
        tensor: String,
        shape: Vec<u64>,
    },
    #[error("{}: tensor '{tensor}' has dtype {dtype:?}; latte converts F32, F16 and BF16", file.display())]
    UnsupportedDtype {
        file: PathBuf,
        tensor: String,
        dtype: Dtype,
    },
    #[error("{}: tensor '{tensor}' becomes '{name}', longer than llama.cpp's 63-byte limit", file.display())]
    NameTooLong {
        file: PathBuf,
        tensor: String,
        name: String,
    },
    #[error("{}: neither a Qwen2-VL nor a LaTtE-Flow checkpoint directory (no config.json)", .0.display())]
    NotACheckpoint(PathBuf),
    #[error("{}: would replace a file of the checkpoint being converted", .0.display())]
    OutputInInput(PathBuf),
    #[error("{}", cause.at(path))]
    Write { path: PathBuf, cause: WriteError },
    #[error("tensor '{tensor}': {cause}")]
    Quant { tensor: String, cause: QuantError },
    #[error(transparent)]
    Options(#[from] QuantizeError),
    /// The planned file breaks a rule of the engine's loaders; `cause` names the key or tensor
    /// (as the GGUF will call it) and usually the checkpoint file it came from.
    #[error(
        "{cause} (from {from}; the engine's loaders would refuse the file, so nothing was written)"
    )]
    Refused {
        origin: PathBuf,
        from: &'static str,
        cause: String,
    },
    #[error("unknown synthetic model '{0}' (known: latte-flow-2b, latte-flow-tiny)")]
    UnknownSynthetic(String),
}
