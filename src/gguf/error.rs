//! Errors of the GGUF reader and writer.
//!
//! A [`FormatError`] says what is wrong with the bytes: the field (header field, metadata key or
//! tensor name) and the byte offset where the reader found it. [`GgufError`] adds the file path
//! for errors shown to users. [`WriteError`] covers the writer. This module owns no logic.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use super::value::ValueType;

/// Something wrong with the bytes of a GGUF file. `offset` is the absolute byte offset of the
/// field in question (for a count or length: where the count or length is stored).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FormatError {
    #[error("not a GGUF file: magic {found:02x?} at byte 0 (expected \"GGUF\")")]
    BadMagic { found: Vec<u8> },
    #[error("{}", version_message(*version))]
    UnsupportedVersion { version: u32 },
    #[error("big-endian GGUF (version {version} byte-swapped at byte 4) is not supported")]
    BigEndian { version: u32 },
    #[error(
        "{field}: needs {needed} bytes at byte {offset}, only {available} remain (truncated file?)"
    )]
    Truncated {
        field: String,
        offset: u64,
        needed: u64,
        available: u64,
    },
    #[error(
        "{field}: count {count} at byte {offset} cannot fit in the {remaining} bytes that remain"
    )]
    CountTooLarge {
        field: String,
        offset: u64,
        count: u64,
        remaining: u64,
    },
    #[error("{field}: string at byte {offset} is not valid UTF-8")]
    InvalidUtf8 { field: String, offset: u64 },
    #[error("metadata key #{index} at byte {offset} is empty")]
    EmptyKey { index: u64, offset: u64 },
    #[error("metadata '{key}': duplicate key at byte {offset}")]
    DuplicateKey { key: String, offset: u64 },
    #[error("metadata '{key}': unknown value type id {type_id} at byte {offset}")]
    UnknownValueType {
        key: String,
        type_id: u32,
        offset: u64,
    },
    #[error("metadata '{key}': bool byte {value} at byte {offset} is neither 0 nor 1")]
    InvalidBool { key: String, value: u8, offset: u64 },
    #[error("metadata '{key}': arrays nested deeper than {limit} at byte {offset}")]
    NestingTooDeep {
        key: String,
        limit: usize,
        offset: u64,
    },
    #[error("metadata 'general.alignment': type {found} at byte {offset}, must be u32")]
    AlignmentNotU32 { found: ValueType, offset: u64 },
    #[error("metadata 'general.alignment': {value} at byte {offset} is not a power of two")]
    AlignmentNotPowerOfTwo { value: u32, offset: u64 },
    #[error("tensor '{tensor}': {n_dims} dimensions at byte {offset} (at most 4)")]
    TooManyDims {
        tensor: String,
        n_dims: u32,
        offset: u64,
    },
    #[error("tensor '{tensor}': dimension {axis} is 0 at byte {offset}")]
    ZeroDim {
        tensor: String,
        axis: usize,
        offset: u64,
    },
    #[error("tensor '{tensor}': shape {dims:?} at byte {offset} overflows 64-bit sizes")]
    ShapeOverflow {
        tensor: String,
        dims: Vec<u64>,
        offset: u64,
    },
    #[error("tensor '{tensor}': unknown ggml type id {type_id} at byte {offset}")]
    UnknownTensorType {
        tensor: String,
        type_id: u32,
        offset: u64,
    },
    #[error(
        "tensor '{tensor}': row of {row_len} elements is not a multiple of the {ty} block size \
         {block_size} (type at byte {offset})"
    )]
    RowNotBlockMultiple {
        tensor: String,
        ty: crate::dtype::TensorType,
        row_len: u64,
        block_size: usize,
        offset: u64,
    },
    #[error("tensor '{tensor}': duplicate name at byte {offset}")]
    DuplicateTensor { tensor: String, offset: u64 },
    #[error(
        "tensor '{tensor}': data [{start}, +{n_bytes}) lies past the end of the {file_len}-byte file \
         (offset field at byte {offset})"
    )]
    TensorOutOfBounds {
        tensor: String,
        start: u128,
        n_bytes: u64,
        file_len: u64,
        offset: u64,
    },
    #[error(
        "tensor '{tensor}': data offset {start} is not a multiple of the alignment {alignment} \
         (offset field at byte {offset})"
    )]
    TensorMisaligned {
        tensor: String,
        start: u64,
        alignment: u64,
        offset: u64,
    },
    #[error(
        "tensor '{tensor}': data at byte {start} overlaps tensor '{other}' (offset field at byte {offset})"
    )]
    TensorOverlap {
        tensor: String,
        other: String,
        start: u64,
        offset: u64,
    },
}

fn version_message(version: u32) -> String {
    match version {
        1 => "GGUF version 1 at byte 4 (the 2023 format with 32-bit counts) is not supported: \
              re-convert the model with a current converter (versions 2 and 3 are read)"
            .into(),
        v => format!("GGUF version {v} at byte 4 is not supported (versions 2 and 3 are read)"),
    }
}

/// An error opening or parsing a GGUF file. Errors from [`super::GgufFile::open`] carry the path.
#[derive(Debug, Error)]
pub enum GgufError {
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: io::Error },
    #[error("{}: {cause}", path.display())]
    Invalid { path: PathBuf, cause: FormatError },
    /// From [`super::GgufFile::from_bytes`], where there is no path.
    #[error(transparent)]
    Format(#[from] FormatError),
}

impl GgufError {
    /// The format error, if the bytes (rather than the file system) were at fault.
    pub fn format(&self) -> Option<&FormatError> {
        match self {
            GgufError::Invalid { cause: source, .. } | GgufError::Format(source) => Some(source),
            GgufError::Io { .. } => None,
        }
    }
}

/// An error while declaring or writing a GGUF file. Any error aborts the write: the temporary
/// file is removed and later calls return [`WriteError::Aborted`].
#[derive(Debug, Error)]
pub enum WriteError {
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: io::Error },
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    #[error("metadata '{key}': declared twice")]
    DuplicateKey { key: String },
    #[error("metadata '{key}': {reason}")]
    BadMetadata { key: String, reason: String },
    #[error("alignment {0} is not a power of two")]
    BadAlignment(u64),
    #[error("tensor '{tensor}': declared twice")]
    DuplicateTensor { tensor: String },
    #[error("tensor '{tensor}': {reason}")]
    BadTensor { tensor: String, reason: String },
    #[error("tensor '{got}' written where '{expected}' was next (tensors are written in declaration order)")]
    OutOfOrder { expected: String, got: String },
    #[error("tensor '{tensor}': {written} bytes written, {declared} declared")]
    SizeMismatch {
        tensor: String,
        declared: u64,
        written: u64,
    },
    #[error("tensor '{got}': all declared tensors are already written")]
    NoMoreTensors { got: String },
    #[error("the write was aborted by an earlier error; no output file was produced")]
    Aborted,
}

impl WriteError {
    /// The message for an output at `path`: errors that already name their file (I/O, the output's
    /// own checks) as they are, the others after the path.
    pub fn at(&self, path: &std::path::Path) -> String {
        match self {
            WriteError::Io { .. } | WriteError::Output(_) => self.to_string(),
            other => format!("{}: {other}", path.display()),
        }
    }
}
