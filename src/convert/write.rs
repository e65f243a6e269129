//! Writing a planned GGUF tensor by tensor: each tensor's f32 values are pulled in bounded chunks
//! of rows from a [`TensorFiller`] (a memory-mapped checkpoint, or random numbers for a synthetic
//! model), converted to the planned type by `crate::quant` and appended through the streaming
//! [`GgufWriter`]. Memory stays near two chunk buffers whatever the model size; a failure leaves no
//! output file. Expert groups start on 16 KiB boundaries.

use std::path::Path;

use rayon::prelude::*;

use super::error::ConvertError;
use super::quantize::TensorPlan;
use crate::gguf::{GgufBuilder, MetadataValue, WriteError};
use crate::model::expert_groups::GROUP_ALIGNMENT;
use crate::quant;

/// f32 elements converted per chunk (16 MiB), as `latte quantize` does.
pub const CHUNK_ELEMENTS: usize = 4 << 20;

/// ggml's current quantization format version (`GGML_QNT_VERSION`).
const QUANTIZATION_VERSION: u32 = 2;

/// One tensor of the output, in file order.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputTensor {
    /// Name, source and target types (target after fallback).
    pub plan: TensorPlan,
    /// ggml order (innermost first).
    pub dims: Vec<u64>,
    pub group: Option<usize>,
    /// Starts its expert group: laid out on a 16 KiB boundary.
    pub starts_group: bool,
}

impl OutputTensor {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Bytes in the file (without alignment padding).
    pub fn n_bytes(&self) -> u64 {
        let rows: u64 = self.dims[1..].iter().product();
        self.plan
            .target
            .row_bytes(self.dims[0])
            .map_or(0, |row| row * rows)
    }
}

/// Where tensor values come from.
pub trait TensorFiller: Sync {
    /// Writes elements `first..first + out.len()` of tensor `index` (row-major over the output
    /// shape) into `out`.
    fn fill(&self, index: usize, first: u64, out: &mut [f32]) -> Result<(), ConvertError>;

    /// Tensor `index` is written: its source pages may be released.
    fn done(&self, _index: usize) {}
}

/// Progress after each chunk.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    pub tensors_done: usize,
    pub tensors_total: usize,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// `general.file_type` and `general.quantization_version`, appended last exactly as
/// `latte quantize` appends them (so the two tools write identical files from identical inputs).
pub fn file_type_metadata(
    file_type: u32,
    tensors: &[OutputTensor],
) -> Vec<(String, MetadataValue)> {
    let mut out = vec![(
        "general.file_type".to_string(),
        MetadataValue::U32(file_type),
    )];
    if tensors.iter().any(|t| t.plan.target.is_quantized()) {
        out.push((
            "general.quantization_version".into(),
            MetadataValue::U32(QUANTIZATION_VERSION),
        ));
    }
    out
}

/// The file's layout: the metadata, then the tensors in order, each expert group's first tensor
/// on a 16 KiB boundary.
pub fn builder(
    metadata: &[(String, MetadataValue)],
    tensors: &[OutputTensor],
) -> Result<GgufBuilder, WriteError> {
    let mut builder = GgufBuilder::new();
    for (key, value) in metadata {
        builder.push_metadata(key.clone(), value.clone())?;
    }
    for t in tensors {
        if t.starts_group {
            builder.push_tensor_on_boundary(
                &t.plan.name,
                t.plan.target,
                &t.dims,
                GROUP_ALIGNMENT,
            )?
        } else {
            builder.push_tensor(&t.plan.name, t.plan.target, &t.dims)?
        }
    }
    Ok(builder)
}

/// Writes the file; returns its size.
pub fn write_gguf(
    path: &Path,
    metadata: &[(String, MetadataValue)],
    tensors: &[OutputTensor],
    filler: &dyn TensorFiller,
    progress: &mut dyn FnMut(Progress),
) -> Result<u64, ConvertError> {
    let write_error = |source| ConvertError::Write {
        path: path.to_path_buf(),
        cause: source,
    };
    let mut out = builder(metadata, tensors)
        .and_then(|b| b.create(path))
        .map_err(write_error)?;
    let mut state = Progress {
        tensors_total: tensors.len(),
        bytes_total: tensors.iter().map(OutputTensor::n_bytes).sum(),
        ..Progress::default()
    };
    let mut values = Vec::new();
    let mut converted = Vec::new();
    for (index, t) in tensors.iter().enumerate() {
        let row_len = t.dims[0] as usize;
        let out_row_bytes = t.plan.target.row_bytes(row_len as u64).ok_or_else(|| {
            write_error(WriteError::BadTensor {
                tensor: t.plan.name.clone(),
                reason: "row does not fit the type's block".into(),
            })
        })? as usize;
        let rows_total = (t.n_elements() / row_len as u64) as usize;
        let rows_per_chunk = (CHUNK_ELEMENTS / row_len.max(1)).max(1);
        let mut row = 0;
        while row < rows_total {
            let n_rows = rows_per_chunk.min(rows_total - row);
            values.resize(n_rows * row_len, 0.0f32);
            filler.fill(index, (row * row_len) as u64, &mut values)?;
            converted.resize(n_rows * out_row_bytes, 0u8);
            converted
                .par_chunks_mut(out_row_bytes)
                .zip(values.par_chunks(row_len))
                .try_for_each(|(dst, src)| quant::quantize(t.plan.target, src, dst))
                .map_err(|source| ConvertError::Quant {
                    tensor: t.plan.name.clone(),
                    cause: source,
                })?;
            out.write_tensor_chunk(&t.plan.name, &converted)
                .map_err(write_error)?;
            row += n_rows;
            state.bytes_done += converted.len() as u64;
            progress(state);
        }
        filler.done(index);
        state.tensors_done += 1;
        progress(state);
    }
    out.finish().map_err(write_error)
}
