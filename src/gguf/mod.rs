//! GGUF v2/v3 files: a validating reader over a memory map, and a writer that aligns tensors and
//! never leaves a half-written file.
//!
//! Layout (little-endian): magic `GGUF`, version (u32), tensor count (u64), metadata count (u64),
//! the metadata (key string, value type, value), the tensor infos (name, n_dims, dims in ggml
//! order, ggml type id, offset relative to the data section), padding to `general.alignment`,
//! then the tensor data, each tensor at an aligned offset.
//!
//! - [`GgufFile`] ([`reader`]) validates everything before use and hands out zero-copy
//!   [`crate::tensor::TensorView`]s.
//! - [`GgufBuilder`] / [`GgufWriter`] ([`writer`]) stream a file to disk.
//! - [`MetadataValue`] ([`value`]) is a metadata value; errors are in [`error`].
//!
//! This module knows the container only: it must not interpret model metadata or tensor contents.

mod cursor;
pub mod error;
pub mod reader;
pub mod value;
pub mod writer;

pub use error::{FormatError, GgufError, WriteError};
pub use reader::{GgufFile, PageAdvice, TensorInfo};
pub use value::{MetadataArray, MetadataValue, ValueType};
pub use writer::{is_padding_tensor, GgufBuilder, GgufWriter, PADDING_PREFIX};

/// The first four bytes of every GGUF file.
pub const MAGIC: [u8; 4] = *b"GGUF";

/// The metadata key that sets the data alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// How deeply arrays may nest (an array of arrays is depth 2). gguf-py writes nested arrays,
/// llama.cpp none; the limit keeps a hostile file from recursing deeply.
pub const MAX_ARRAY_DEPTH: usize = 8;
