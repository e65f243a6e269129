//! Reading safetensors files (the Hugging Face weight format) over a read-only memory map.
//!
//! A file is an 8-byte little-endian header length, a JSON header naming every tensor's dtype,
//! shape and byte range within the data section, then the data. This module validates all of it
//! before handing out a byte slice (`header.rs` is the pure parser, fuzzed and tested on hostile
//! input) and converts the float dtypes to f32 (`convert.rs`). It knows nothing of models or GGUF.

mod convert;
mod header;

use std::path::{Path, PathBuf};

use memmap2::Mmap;
use thiserror::Error;

pub use convert::{to_f32, ConvertDtypeError};
pub use header::{parse_header, Dtype, HeaderError, StTensor, MAX_HEADER_BYTES};

/// An error reading a safetensors file, with its path.
#[derive(Debug, Error)]
pub enum SafetensorsError {
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: {cause}", path.display())]
    Invalid { path: PathBuf, cause: HeaderError },
}

/// A validated, memory-mapped safetensors file.
pub struct SafetensorsFile {
    path: PathBuf,
    map: Mmap,
    data_start: usize,
    tensors: Vec<StTensor>,
}

impl SafetensorsFile {
    /// Maps `path` read-only and validates its header against the file size.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SafetensorsError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| SafetensorsError::Io {
            path: path.clone(),
            cause: source,
        };
        let file = crate::input::open_mappable(&path).map_err(io)?;
        // SAFETY: the map is read-only and private to this process; every access below is a
        // bounds-checked slice of it. Another process truncating the file while it is mapped
        // would fault the reader, the usual contract for mapped model files (as in the GGUF reader).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let (data_start, tensors) =
            parse_header(&map).map_err(|source| SafetensorsError::Invalid {
                path: path.clone(),
                cause: source,
            })?;
        Ok(SafetensorsFile {
            path,
            map,
            data_start,
            tensors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensors in header order.
    pub fn tensors(&self) -> &[StTensor] {
        &self.tensors
    }

    pub fn get(&self, name: &str) -> Option<&StTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The bytes of `tensor`, which must come from this file (its range was validated at open).
    pub fn data(&self, tensor: &StTensor) -> &[u8] {
        let start = self.data_start + tensor.data.start;
        let end = self.data_start + tensor.data.end;
        self.map.get(start..end).unwrap_or(&[])
    }

    /// Tells the kernel the pages of `tensor` are no longer needed, so converting a file larger
    /// than RAM does not keep every page it has read resident (the pages are re-read from the
    /// file if touched again).
    pub fn release(&self, tensor: &StTensor) {
        let start = self.data_start + tensor.data.start;
        let len = tensor.data.len();
        if len == 0 || start + len > self.map.len() {
            return;
        }
        // SAFETY: MADV_DONTNEED on a read-only, file-backed private mapping that was never
        // written only drops clean page-cache references: later reads fault the same file bytes
        // back in, so no slice handed out earlier can observe different contents. The range lies
        // inside the map (checked above). Failure is harmless, so it is ignored.
        let _ = unsafe {
            self.map
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len)
        };
    }
}
