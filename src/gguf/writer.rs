//! The streaming GGUF writer (version 3, little-endian).
//!
//! Two steps: a [`GgufBuilder`] collects metadata and tensor declarations (name, type, shape,
//! optionally a start boundary) and fixes the layout; [`GgufBuilder::create`] opens the output
//! (an [`OutputFile`]: a temporary file renamed into place, a device or FIFO written directly, or
//! stdout), writes the header and returns a [`GgufWriter`] that takes each tensor's bytes in
//! declaration order, whole or in chunks, checking sizes against the declaration, so a multi-GB
//! file never has to be held in memory. [`GgufWriter::finish`] pads and completes the output. On
//! any error, or if the writer is dropped before `finish`, the temporary file is removed: no
//! partial output ever remains.
//!
//! The writer must not quantize or otherwise look into tensor bytes.
//!
//! **Start boundaries and llama.cpp.** A tensor declared with a boundary (e.g. 16 KiB, so that an
//! expert group is one page-aligned byte range) starts at an absolute file offset that is a
//! multiple of it. llama.cpp's `gguf.cpp` (as vendored in llama-cpp-sys-2 0.1.161) demands that
//! each tensor start exactly where the previous one's padded data ends, so a plain gap would make
//! the file unreadable there. The builder therefore fills every such gap with an explicit padding
//! tensor: `latte.pad.N` (N counts from 0), type I8, one dimension equal to the gap in bytes
//! (always at least one alignment unit, a whole extra boundary when the gap would otherwise be
//! empty, so the header layout does not depend on where tensors land), all zeros. The writer
//! writes padding tensors itself; callers never see them in [`GgufWriter::planned`]. Readers that
//! know the convention skip tensors named [`PADDING_PREFIX`]`*`; to everyone else they are
//! ordinary tensors.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::error::WriteError;
use super::reader::{align_up, TensorInfo};
use super::value::{MetadataArray, MetadataValue, ValueType};
use super::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_ARRAY_DEPTH};
use crate::dtype::TensorType;
use crate::output::{Content, OutputFile};
use crate::tensor::MAX_DIMS;

/// The version written.
pub const WRITE_VERSION: u32 = 3;

/// llama.cpp refuses tensor names of `GGML_MAX_NAME` (64) bytes or more.
pub const MAX_TENSOR_NAME_BYTES: usize = 63;

/// Names of the padding tensors that fill the gap before a boundary (see the module docs).
pub const PADDING_PREFIX: &str = "latte.pad.";

/// Whether `name` is one of the writer's gap-filling padding tensors.
pub fn is_padding_tensor(name: &str) -> bool {
    name.starts_with(PADDING_PREFIX)
}

struct TensorDecl {
    name: String,
    ty: TensorType,
    dims: Vec<u64>,
    n_bytes: u64,
    boundary: Option<u64>,
    /// A gap filler written by the writer itself; its size is fixed by the layout.
    padding: bool,
}

/// Metadata and tensor declarations of a file to be written.
pub struct GgufBuilder {
    alignment: u32,
    metadata: Vec<(String, MetadataValue)>,
    keys: HashSet<String>,
    tensors: Vec<TensorDecl>,
    names: HashSet<String>,
}

impl Default for GgufBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufBuilder {
    pub fn new() -> Self {
        GgufBuilder {
            alignment: DEFAULT_ALIGNMENT as u32,
            metadata: Vec::new(),
            keys: HashSet::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
        }
    }

    /// Sets `general.alignment` (a power of two; 32 when never set, and then not written).
    pub fn set_alignment(&mut self, alignment: u32) -> Result<(), WriteError> {
        if !alignment.is_power_of_two() {
            return Err(WriteError::BadAlignment(alignment.into()));
        }
        self.alignment = alignment;
        Ok(())
    }

    /// Adds a metadata entry (written in the order added). `general.alignment` is refused here:
    /// it decides the layout, so it is set with [`GgufBuilder::set_alignment`].
    pub fn push_metadata(
        &mut self,
        key: impl Into<String>,
        value: impl Into<MetadataValue>,
    ) -> Result<(), WriteError> {
        let key = key.into();
        let value = value.into();
        let bad = |reason: &str| WriteError::BadMetadata {
            key: key.clone(),
            reason: reason.into(),
        };
        if key.is_empty() {
            return Err(bad("empty key"));
        }
        if key == ALIGNMENT_KEY {
            return Err(bad("set the alignment with GgufBuilder::set_alignment"));
        }
        if let MetadataValue::Array(a) = &value {
            if array_depth(a) > MAX_ARRAY_DEPTH {
                return Err(bad("arrays nested too deep for readers"));
            }
        }
        if !self.keys.insert(key.clone()) {
            return Err(WriteError::DuplicateKey { key });
        }
        self.metadata.push((key, value));
        Ok(())
    }

    /// Declares a tensor of type `ty` and shape `dims` (ggml order, innermost first, 1 to 4
    /// non-zero entries). Tensors are laid out and must be written in declaration order.
    pub fn push_tensor(
        &mut self,
        name: impl Into<String>,
        ty: TensorType,
        dims: &[u64],
    ) -> Result<(), WriteError> {
        self.declare(name.into(), ty, dims, None)
    }

    /// Like [`GgufBuilder::push_tensor`], and the tensor's data starts at an absolute file offset
    /// that is a multiple of `boundary` (a power of two, e.g. 16384 for page-aligned groups).
    /// See the module documentation for what gaps mean to llama.cpp.
    pub fn push_tensor_on_boundary(
        &mut self,
        name: impl Into<String>,
        ty: TensorType,
        dims: &[u64],
        boundary: u64,
    ) -> Result<(), WriteError> {
        let name = name.into();
        if !boundary.is_power_of_two() {
            return Err(WriteError::BadTensor {
                tensor: name,
                reason: format!("boundary {boundary} is not a power of two"),
            });
        }
        self.declare(name, ty, dims, Some(boundary))
    }

    fn declare(
        &mut self,
        name: String,
        ty: TensorType,
        dims: &[u64],
        boundary: Option<u64>,
    ) -> Result<(), WriteError> {
        let bad = |reason: String| WriteError::BadTensor {
            tensor: name.clone(),
            reason,
        };
        if name.is_empty() || name.len() > MAX_TENSOR_NAME_BYTES {
            return Err(bad(format!(
                "name must be 1 to {MAX_TENSOR_NAME_BYTES} bytes (llama.cpp's limit)"
            )));
        }
        if dims.is_empty() || dims.len() > MAX_DIMS || dims.contains(&0) {
            return Err(bad(format!(
                "shape {dims:?} must have 1 to {MAX_DIMS} non-zero dimensions"
            )));
        }
        let rows = dims[1..]
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d));
        let n_bytes = ty
            .row_bytes(dims[0])
            .zip(rows)
            .and_then(|(row, rows)| row.checked_mul(rows))
            .ok_or_else(|| {
                bad(format!(
                    "shape {dims:?} is not whole {ty} blocks of {} or overflows",
                    ty.block_size()
                ))
            })?;
        if is_padding_tensor(&name) {
            return Err(bad(format!(
                "names starting with '{PADDING_PREFIX}' are reserved for the writer's gap padding"
            )));
        }
        if self.names.contains(&name) {
            return Err(WriteError::DuplicateTensor { tensor: name });
        }
        self.names.insert(name.clone());
        if boundary.is_some() {
            let n_pads = self.tensors.iter().filter(|t| t.padding).count();
            self.tensors.push(TensorDecl {
                name: format!("{PADDING_PREFIX}{n_pads}"),
                ty: TensorType::I8,
                // Placeholder: the layout sets the real length (the header size does not depend on it).
                dims: vec![1],
                n_bytes: 1,
                boundary: None,
                padding: true,
            });
        }
        self.tensors.push(TensorDecl {
            name,
            ty,
            dims: dims.to_vec(),
            n_bytes,
            boundary,
            padding: false,
        });
        Ok(())
    }

    /// The header bytes and the planned tensors (absolute offsets), padding tensors included.
    fn layout(&self) -> Result<(Vec<u8>, Vec<TensorInfo>), WriteError> {
        let alignment = u64::from(self.alignment);
        // Offsets do not change the header's length, so measure it with all offsets still 0.
        let mut plan: Vec<TensorInfo> = self
            .tensors
            .iter()
            .map(|t| TensorInfo {
                name: t.name.clone(),
                ty: t.ty,
                dims: t.dims.clone(),
                offset: 0,
                n_bytes: t.n_bytes,
            })
            .collect();
        let header_len = self.header_bytes(&plan, 0).len() as u64;
        let overflow = |name: &str| WriteError::BadTensor {
            tensor: name.into(),
            reason: "file offsets overflow 64 bits".into(),
        };
        let data_offset = align_up(header_len, alignment).ok_or_else(|| overflow("header"))?;
        let mut cursor = data_offset;
        for (i, info) in plan.iter_mut().enumerate() {
            let start = align_up(cursor, alignment).ok_or_else(|| overflow(&info.name))?;
            if self.tensors[i].padding {
                // The next tensor is the one on a boundary: fill up to its first boundary after
                // `start` (never an empty gap, see the module docs).
                let next = &self.tensors[i + 1];
                let step = next.boundary.map_or(alignment, |b| b.max(alignment));
                let target = start
                    .checked_add(1)
                    .and_then(|s| align_up(s, step))
                    .ok_or_else(|| overflow(&next.name))?;
                info.dims = vec![target - start];
                info.n_bytes = target - start;
            }
            info.offset = start;
            cursor = start
                .checked_add(info.n_bytes)
                .ok_or_else(|| overflow(&info.name))?;
        }
        align_up(cursor, alignment).ok_or_else(|| overflow("file end"))?;
        let header = self.header_bytes(&plan, data_offset);
        debug_assert_eq!(header.len() as u64, header_len);
        Ok((header, plan))
    }

    fn header_bytes(&self, plan: &[TensorInfo], data_offset: u64) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&WRITE_VERSION.to_le_bytes());
        let write_alignment = u64::from(self.alignment) != DEFAULT_ALIGNMENT;
        let n_kv = self.metadata.len() + usize::from(write_alignment);
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(n_kv as u64).to_le_bytes());
        if write_alignment {
            put_string(&mut out, ALIGNMENT_KEY);
            put_value_with_type(&mut out, &MetadataValue::U32(self.alignment));
        }
        for (key, value) in &self.metadata {
            put_string(&mut out, key);
            put_value_with_type(&mut out, value);
        }
        for t in plan {
            put_string(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&(t.offset - data_offset).to_le_bytes());
        }
        out
    }

    /// The header this builder would write (metadata and tensor infos, padded to the alignment),
    /// for reading a planned file before any tensor exists ([`GgufFile::from_header`](super::GgufFile::from_header)).
    pub fn header(&self) -> Result<Vec<u8>, WriteError> {
        Ok(self.layout()?.0)
    }

    /// Opens the output at `path` (see [`OutputFile`]), writes the header and returns the writer
    /// for the tensor data.
    pub fn create(self, path: impl AsRef<Path>) -> Result<GgufWriter, WriteError> {
        let (header, file_plan) = self.layout()?;
        let plan = file_plan
            .iter()
            .filter(|t| !is_padding_tensor(&t.name))
            .cloned()
            .collect();
        let path = path.as_ref().to_path_buf();
        let out = OutputFile::create(&path, Content::Binary("GGUF"))?;
        let mut w = GgufWriter {
            out: Some(out),
            path,
            alignment: u64::from(self.alignment),
            plan,
            file_plan,
            next: 0,
            written: 0,
            pos: 0,
        };
        w.guard(|w| w.put(&header))?;
        Ok(w)
    }
}

fn array_depth(a: &MetadataArray) -> usize {
    1 + a
        .as_arrays()
        .map_or(0, |inner| inner.iter().map(array_depth).max().unwrap_or(0))
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value_with_type(out: &mut Vec<u8>, v: &MetadataValue) {
    out.extend_from_slice(&v.value_type().id().to_le_bytes());
    match v {
        MetadataValue::U8(x) => out.push(*x),
        MetadataValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::Bool(x) => out.push(u8::from(*x)),
        MetadataValue::String(s) => put_string(out, s),
        MetadataValue::Array(a) => put_array(out, a),
        MetadataValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

/// An array value: element type, count, then the elements without their types.
fn put_array(out: &mut Vec<u8>, a: &MetadataArray) {
    fn each<T: Copy, const N: usize>(out: &mut Vec<u8>, v: &[T], f: fn(T) -> [u8; N]) {
        out.extend_from_slice(&(v.len() as u64).to_le_bytes());
        for &x in v {
            out.extend_from_slice(&f(x));
        }
    }
    let ty: ValueType = a.elem_type();
    out.extend_from_slice(&ty.id().to_le_bytes());
    match a {
        MetadataArray::U8(v) => each(out, v, u8::to_le_bytes),
        MetadataArray::I8(v) => each(out, v, i8::to_le_bytes),
        MetadataArray::U16(v) => each(out, v, u16::to_le_bytes),
        MetadataArray::I16(v) => each(out, v, i16::to_le_bytes),
        MetadataArray::U32(v) => each(out, v, u32::to_le_bytes),
        MetadataArray::I32(v) => each(out, v, i32::to_le_bytes),
        MetadataArray::F32(v) => each(out, v, f32::to_le_bytes),
        MetadataArray::Bool(v) => each(out, v, |b| [u8::from(b)]),
        MetadataArray::U64(v) => each(out, v, u64::to_le_bytes),
        MetadataArray::I64(v) => each(out, v, i64::to_le_bytes),
        MetadataArray::F64(v) => each(out, v, f64::to_le_bytes),
        MetadataArray::String(v) => {
            out.extend_from_slice(&(v.len() as u64).to_le_bytes());
            for s in v {
                put_string(out, s);
            }
        }
        MetadataArray::Array(v) => {
            out.extend_from_slice(&(v.len() as u64).to_le_bytes());
            for inner in v {
                put_array(out, inner);
            }
        }
    }
}

/// Takes tensor bytes in declaration order; see the module documentation.
pub struct GgufWriter {
    /// `None` once aborted (a temporary file is then already removed).
    out: Option<OutputFile>,
    path: PathBuf,
    alignment: u64,
    /// The caller's tensors, in order.
    plan: Vec<TensorInfo>,
    /// Every tensor of the file, padding included.
    file_plan: Vec<TensorInfo>,
    /// Index of the tensor being written (or next to be).
    next: usize,
    /// Bytes of `plan[next]` written so far.
    written: u64,
    /// Bytes written to the file so far.
    pos: u64,
}

impl std::fmt::Debug for GgufWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufWriter")
            .field("path", &self.path)
            .field("aborted", &self.out.is_none())
            .field("next_tensor", &self.next)
            .field("n_tensors", &self.plan.len())
            .field("bytes_written", &self.pos)
            .finish()
    }
}

impl GgufWriter {
    /// Where each declared tensor will be: absolute offsets and byte sizes, in declaration order
    /// (without the padding tensors, which the writer writes itself).
    pub fn planned(&self) -> &[TensorInfo] {
        &self.plan
    }

    /// Every tensor of the file as its header lists them, padding tensors included.
    pub fn file_tensors(&self) -> &[TensorInfo] {
        &self.file_plan
    }

    /// Writes the whole data of tensor `name`, which must be the next declared one, with exactly
    /// its declared byte size.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<(), WriteError> {
        self.guard(|w| {
            w.check_next(name)?;
            let declared = w.plan[w.next].n_bytes;
            if w.written != 0 || data.len() as u64 != declared {
                return Err(WriteError::SizeMismatch {
                    tensor: name.into(),
                    declared,
                    written: w.written + data.len() as u64,
                });
            }
            w.append(data)
        })
    }

    /// Appends `chunk` to tensor `name`: the one in progress, or the next declared one when the
    /// previous is complete. The total may not exceed the declared size.
    pub fn write_tensor_chunk(&mut self, name: &str, chunk: &[u8]) -> Result<(), WriteError> {
        self.guard(|w| {
            w.check_next(name)?;
            let declared = w.plan[w.next].n_bytes;
            let total = w.written + chunk.len() as u64;
            if total > declared {
                return Err(WriteError::SizeMismatch {
                    tensor: name.into(),
                    declared,
                    written: total,
                });
            }
            w.append(chunk)
        })
    }

    /// Pads the file and completes the output (a temporary file is synced and renamed into
    /// place). Every declared tensor must have been written in full.
    /// Completes the file and returns its size in bytes (also for a stream, which has no
    /// metadata to ask).
    pub fn finish(mut self) -> Result<u64, WriteError> {
        self.guard(|w| {
            if let Some(t) = w.plan.get(w.next) {
                return Err(WriteError::SizeMismatch {
                    tensor: t.name.clone(),
                    declared: t.n_bytes,
                    written: w.written,
                });
            }
            // The reader starts the data section at the aligned end of the header, so pad even
            // when there are no tensors; and pad the last tensor like ggml does.
            let end = align_up(w.pos, w.alignment).unwrap_or(w.pos);
            w.zeros(end - w.pos)?;
            let out = w.out.take().ok_or(WriteError::Aborted)?;
            out.finish()?;
            Ok(end)
        })
    }

    fn check_next(&self, name: &str) -> Result<(), WriteError> {
        let Some(t) = self.plan.get(self.next) else {
            return Err(WriteError::NoMoreTensors { got: name.into() });
        };
        if t.name == name {
            return Ok(());
        }
        Err(if self.written != 0 {
            WriteError::SizeMismatch {
                tensor: t.name.clone(),
                declared: t.n_bytes,
                written: self.written,
            }
        } else {
            WriteError::OutOfOrder {
                expected: t.name.clone(),
                got: name.into(),
            }
        })
    }

    /// Appends bytes to `plan[next]` (already checked to fit), padding up to its start first.
    fn append(&mut self, data: &[u8]) -> Result<(), WriteError> {
        let t = &self.plan[self.next];
        let (start, n_bytes) = (t.offset, t.n_bytes);
        if self.written == 0 {
            // Alignment padding and any padding tensor before `start` are zeros.
            self.zeros(start - self.pos)?;
        }
        self.put(data)?;
        self.written += data.len() as u64;
        if self.written == n_bytes {
            self.next += 1;
            self.written = 0;
        }
        Ok(())
    }

    fn zeros(&mut self, mut n: u64) -> Result<(), WriteError> {
        const ZEROS: [u8; 4096] = [0; 4096];
        while n > 0 {
            let k = n.min(ZEROS.len() as u64) as usize;
            self.put(&ZEROS[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    fn put(&mut self, data: &[u8]) -> Result<(), WriteError> {
        let out = self.out.as_mut().ok_or(WriteError::Aborted)?;
        out.write_all_bytes(data)?;
        self.pos += data.len() as u64;
        Ok(())
    }

    /// Runs `f`; on error, drops (and so removes) the temporary file so that nothing partial
    /// remains, and every later call fails with [`WriteError::Aborted`].
    fn guard<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, WriteError>,
    ) -> Result<T, WriteError> {
        if self.out.is_none() {
            return Err(WriteError::Aborted);
        }
        let result = f(self);
        if result.is_err() {
            self.out = None;
        }
        result
    }
}
