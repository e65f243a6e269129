//! Turning files into latte's GGUF: checkpoints (`latte convert`: a Qwen2-VL or LaTtE-Flow
//! directory, llama.cpp's text + mmproj pair (`pair`), or a synthetic full-size model) and
//! re-quantizing a GGUF (`latte quantize`).
//!
//! Reading configs (`config`, `json`), finding tensors (`source`), naming them (`names`),
//! describing the tokenizer and the model (`tokenizer`, `metadata`), planning (`checkpoint`,
//! `synthetic`, `summary`), checking the plan with the engine's own loaders (`validate`) and
//! streaming the output (`write`) are separate steps. Type choice and fallbacks are
//! `quantize`'s, block formats `crate::quant`'s, the file layout `crate::gguf`'s.

pub mod checkpoint;
pub mod config;
pub mod error;
mod json;
pub mod metadata;
pub mod names;
pub mod pair;
pub mod preset;
pub mod quantize;
pub mod source;
pub mod summary;
pub mod synthetic;
pub mod text_only;
pub mod tokenizer;
pub mod validate;
pub mod write;

pub use checkpoint::{Checkpoint, ModelKind};
pub use error::ConvertError;
pub use write::{OutputTensor, Progress};
