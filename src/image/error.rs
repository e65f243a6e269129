//! The one error type of image input: decoding and preprocessing.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ImageInputError {
    // The I/O error is part of the message, not a `source`: error chains would print it twice.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{what}: cannot decode the image: {reason}")]
    Decode { what: String, reason: String },
    #[error("{what}: the image is {width}×{height} = {pixels} pixels, over the limit of {limit}")]
    TooLarge {
        what: String,
        width: u64,
        height: u64,
        pixels: u64,
        limit: u64,
    },
    #[error("image of {width}×{height} pixels: {reason}")]
    Geometry {
        width: usize,
        height: usize,
        reason: String,
    },
    #[error("image buffer holds {got} bytes, a {width}×{height} RGB image needs {expected}")]
    BufferSize {
        width: usize,
        height: usize,
        expected: usize,
        got: usize,
    },
    #[error("image preprocessing settings: {0}")]
    Config(String),
}
