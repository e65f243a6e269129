//! `y = W·x` for every computable weight type: quantize the activations once into a reusable
//! scratch buffer, then sweep tiles of weight rows × activation columns across rayon's threads.
//!
//! This module owns the shape checks, the activation scratch and the loop order; the arithmetic
//! lives in `dot`. It must not allocate per call once the scratch has grown to the largest shape
//! it sees.

use std::cell::RefCell;

use rayon::prelude::*;
use thiserror::Error;

use crate::backend::cpu::dot::{
    column_scales, packed_kernel, scale_sets, Columns, Kernels, PackedDotFn, PackedTile, Tile,
    WeightRows, MAX_COLS, MAX_ROWS,
};
use crate::backend::cpu::isa::Isa;
use crate::backend::cpu::packed::{
    pack_rows, packable_blocks_per_row, packed_block_bytes, PackedWeight, PACK_ROWS,
};
use crate::dtype::TensorType;
use crate::tensor::TensorView;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MatmulError {
    #[error("matmul: weight '{name}' has type {ty}, which has no CPU kernel")]
    UnsupportedType { name: String, ty: TensorType },
    #[error("matmul: instruction set {isa} is not supported by this CPU")]
    UnsupportedIsa { isa: Isa },
    #[error("matmul: weight '{name}' must be 2-D [k, m] (ggml order), got dims {dims:?}")]
    NotAMatrix { name: String, dims: Vec<u64> },
    #[error("matmul: x has {got} values, expected n·k = {n}·{k}")]
    XShape { got: usize, n: usize, k: usize },
    #[error("matmul: y has {got} values, expected n·m = {n}·{m}")]
    YShape { got: usize, n: usize, m: usize },
    #[error(
        "matmul: weight '{name}' ({ty}, dims {dims:?}) is not Q4_0, Q8_0, Q4_K or Q6_K rows in \
         groups of 8"
    )]
    NotPackable {
        name: String,
        ty: TensorType,
        dims: Vec<u64>,
    },
    #[error("matmul: activation buffer of {bytes} bytes does not fit in memory")]
    ScratchTooLarge { bytes: u128 },
}

/// Caller-owned storage for the quantized activations of one matmul. It grows to the largest
/// `n × k` it has seen and is then reused, so steady-state calls allocate nothing.
#[derive(Default)]
pub struct MatmulScratch {
    // u64 words so every partner block (at most 4-byte aligned) sits aligned in it.
    words: Vec<u64>,
    // The Q8_0 / Q8_1 block scales as f32, per group of MAX_COLS columns (`dot::column_scales`).
    scales: Vec<f32>,
}

impl MatmulScratch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes currently reserved.
    pub fn capacity_bytes(&self) -> usize {
        self.words.len() * 8 + self.scales.len() * 4
    }

    /// `len` bytes for the quantized columns and `n_scales` floats for their scales.
    fn buffers(&mut self, len: usize, n_scales: usize) -> (&mut [u8], &mut [f32]) {
        let words = len.div_ceil(8);
        if self.words.len() < words {
            self.words.resize(words, 0);
        }
        if self.scales.len() < n_scales {
            self.scales.resize(n_scales, 0.0);
        }
        (
            &mut bytemuck::cast_slice_mut(&mut self.words)[..len],
            &mut self.scales[..n_scales],
        )
    }
}

/// Fewest weight rows handed to one rayon task.
const MIN_ROWS_PER_TASK: usize = 16;

/// Weight bytes × activation columns one task should cover: 16-row tasks at one column are a few
/// µs of work each, and going to ≥ 64 KiB took a 1536 × 8960 Q8_0 product from 0.296 to 0.247 ms.
const TASK_WORK: usize = 1 << 16;

/// Rows per task: at least [`MIN_ROWS_PER_TASK`] and [`TASK_WORK`], a multiple of the row tile,
/// and at most an eighth of each thread's share of the m rows, so that threads stay balanced.
fn rows_per_task(m: usize, row_bytes: usize, n: usize) -> usize {
    let balanced = m / (rayon::current_num_threads() * 8);
    let wanted = TASK_WORK / row_bytes.saturating_mul(n).max(1);
    let rows = wanted.min(balanced).max(MIN_ROWS_PER_TASK);
    rows.next_multiple_of(MAX_ROWS)
}

/// `y = W·x` with the best instruction set of this CPU.
///
/// `weight` has ggml dims `[k, m]`: m rows of k values. `x` holds `n` activation rows of k values,
/// row-major; `y` receives n rows of m values: `y[j·m + i] = W_i · x_j`.
pub fn matmul(
    weight: &TensorView,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut MatmulScratch,
) -> Result<(), MatmulError> {
    matmul_with_isa(Isa::detect(), weight, x, n, y, scratch)
}

/// [`matmul`] on a chosen instruction set (tests pin [`Isa::Scalar`] or each SIMD family).
pub fn matmul_with_isa(
    isa: Isa,
    weight: &TensorView,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut MatmulScratch,
) -> Result<(), MatmulError> {
    let ty = weight.ty();
    let dims = weight.dims();
    if dims.len() > 2 && dims[2..].iter().any(|&d| d != 1) || dims.is_empty() {
        return Err(MatmulError::NotAMatrix {
            name: weight.name().into(),
            dims: dims.to_vec(),
        });
    }
    let (k, m) = (weight.row_len(), weight.n_rows());
    if !isa.is_supported() {
        return Err(MatmulError::UnsupportedIsa { isa });
    }
    let kernels = Kernels::new(ty, isa).ok_or_else(|| MatmulError::UnsupportedType {
        name: weight.name().into(),
        ty,
    })?;
    check_shapes(x, y, n, k, m)?;
    if n == 0 || m == 0 {
        return Ok(());
    }
    if k == 0 {
        y.fill(0.0);
        return Ok(());
    }
    let columns = quantized_columns(&kernels, x, n, k, scratch)?;

    let w = weight.bytes();
    let w_row_bytes = w.len() / m;
    let out = DisjointOut::new(y);
    let task_rows = rows_per_task(m, w_row_bytes, n);
    let n_tasks = m.div_ceil(task_rows);
    let row_step = if kernels.rows_dot.is_some() {
        MAX_ROWS
    } else {
        1
    };
    (0..n_tasks).into_par_iter().for_each(|task| {
        let r0 = task * task_rows;
        let r1 = (r0 + task_rows).min(m);
        let mut tile: Tile = [[0.0; MAX_COLS]; MAX_ROWS];
        // Column groups outside, rows inside: the group's activations stay in L1 while the task's
        // weight rows (about TASK_WORK bytes) stay in L2 across groups.
        for c0 in (0..n).step_by(MAX_COLS) {
            let nc = (n - c0).min(MAX_COLS);
            let group = columns.group(c0, nc);
            for i0 in (r0..r1).step_by(row_step) {
                let nr = (r1 - i0).min(row_step);
                let rows = &w[i0 * w_row_bytes..(i0 + nr) * w_row_bytes];
                match kernels.rows_dot {
                    Some(rows_dot) => {
                        let rows = WeightRows {
                            bytes: rows,
                            row_bytes: w_row_bytes,
                        };
                        rows_dot(rows, group, nc, &mut tile);
                    }
                    None => (kernels.dot)(rows, group, &mut tile[0][..nc]),
                }
                for (r, results) in tile[..nr].iter().enumerate() {
                    for (c, v) in results[..nc].iter().enumerate() {
                        out.write((c0 + c) * m + i0 + r, *v);
                    }
                }
            }
        }
    });
    Ok(())
}

/// The activations in the dot partner type and their scales per group of MAX_COLS columns.
struct QuantizedColumns<'s> {
    bytes: &'s [u8],
    scales: &'s [f32],
    col_bytes: usize,
    group_scales: usize,
}

impl<'s> QuantizedColumns<'s> {
    /// How many columns there are.
    fn count(&self) -> usize {
        self.bytes.len() / self.col_bytes
    }

    /// The `nc` columns from `c0` (a multiple of MAX_COLS), as a kernel takes them.
    fn group(&self, c0: usize, nc: usize) -> Columns<'s> {
        Columns {
            bytes: &self.bytes[c0 * self.col_bytes..(c0 + nc) * self.col_bytes],
            col_bytes: self.col_bytes,
            scales: &self.scales[c0 / MAX_COLS * self.group_scales..][..self.group_scales],
        }
    }
}

/// `x` quantized into `scratch` for `kernels`, with its column scales.
fn quantized_columns<'s>(
    kernels: &Kernels,
    x: &[f32],
    n: usize,
    k: usize,
    scratch: &'s mut MatmulScratch,
) -> Result<QuantizedColumns<'s>, MatmulError> {
    // k is a whole number of weight blocks (the caller checked it), and partner blocks are never
    // longer than weight blocks, so this is a whole number of partner blocks.
    let col_bytes = kernels
        .partner
        .row_bytes(k as u64)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or(MatmulError::ScratchTooLarge { bytes: u128::MAX })?;
    let total = col_bytes
        .checked_mul(n)
        .ok_or(MatmulError::ScratchTooLarge {
            bytes: col_bytes as u128 * n as u128,
        })?;
    let nb = k / kernels.partner.block_size();
    let group_scales = scale_sets(kernels.partner) * nb * MAX_COLS;
    let n_groups = n.div_ceil(MAX_COLS);
    let (cols, scales) = scratch.buffers(total, group_scales * n_groups);
    quantize_columns(kernels, x, k, cols, col_bytes);
    if group_scales > 0 {
        for (g, out) in scales.chunks_exact_mut(group_scales).enumerate() {
            let c0 = g * MAX_COLS;
            let nc = (n - c0).min(MAX_COLS);
            column_scales(kernels.partner, &cols[c0 * col_bytes..], col_bytes, nc, out);
        }
    }
    Ok(QuantizedColumns {
        bytes: cols,
        scales,
        col_bytes,
        group_scales,
    })
}

/// `x` holds n rows of k values and `y` room for n rows of m.
fn check_shapes(x: &[f32], y: &[f32], n: usize, k: usize, m: usize) -> Result<(), MatmulError> {
    if n.checked_mul(k) != Some(x.len()) {
        return Err(MatmulError::XShape { got: x.len(), n, k });
    }
    if n.checked_mul(m) != Some(y.len()) {
        return Err(MatmulError::YShape { got: y.len(), n, m });
    }
    Ok(())
}

/// [`matmul_with_isa`] on a repacked weight (`packed`), with the packed kernel of `isa`
/// (`UnsupportedIsa` where it has none: the x86 families have one).
pub fn matmul_packed(
    isa: Isa,
    packed: &PackedWeight,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut MatmulScratch,
) -> Result<(), MatmulError> {
    let (dot, kernels) = packed_kernels(packed.ty(), isa)?;
    let (k, m) = (packed.row_len(), packed.rows());
    check_shapes(x, y, n, k, m)?;
    if n == 0 {
        return Ok(());
    }
    let columns = quantized_columns(&kernels, x, n, k, scratch)?;
    let out = DisjointOut::new(y);
    let task_rows = rows_per_task(m, packed.held_bytes() / m, n).next_multiple_of(PACK_ROWS);
    let n_tasks = m.div_ceil(task_rows);
    let group_len = packed.group_bytes();
    (0..n_tasks).into_par_iter().for_each(|task| {
        let rows = task * task_rows..((task + 1) * task_rows).min(m);
        let (g0, count) = (rows.start / PACK_ROWS, rows.len() / PACK_ROWS);
        sweep_packed(
            dot,
            packed.groups(g0, count),
            group_len,
            g0,
            &columns,
            m,
            &out,
        );
    });
    Ok(())
}

thread_local! {
    /// The rows of one [`matmul_repacking`] task, packed, per thread: at most one task's rows
    /// (about [`TASK_WORK`] bytes, or [`MIN_ROWS_PER_TASK`] rows), reused so that steady-state
    /// calls allocate nothing. The packing runs no rayon work, so a task never re-enters it.
    static PACK_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// [`matmul_with_isa`] on a Q4_0, Q8_0, Q4_K or Q6_K weight in the file's layout (rows in whole
/// [`PACK_ROWS`] groups), through the packed kernel of `isa`: each task packs its own rows into a
/// buffer of its thread (they stay in L2) and runs every column group over them. No copy outlives
/// the call, so the weight stays a view of the file; at 64–128 columns the packing is a small part
/// of the work and the packed kernel takes half the time of the file-layout one
/// (docs/BENCHMARKS.md). The results are the packed kernel's: the same as [`matmul_packed`] on the
/// repacked weight, bit for bit, whatever the batch.
pub fn matmul_repacking(
    isa: Isa,
    weight: &TensorView,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut MatmulScratch,
) -> Result<(), MatmulError> {
    let blocks_per_row =
        packable_blocks_per_row(weight).ok_or_else(|| MatmulError::NotPackable {
            name: weight.name().into(),
            ty: weight.ty(),
            dims: weight.dims().to_vec(),
        })?;
    let (dot, kernels) = packed_kernels(weight.ty(), isa)?;
    let (k, m) = (weight.row_len(), weight.n_rows());
    check_shapes(x, y, n, k, m)?;
    if n == 0 {
        return Ok(());
    }
    let columns = quantized_columns(&kernels, x, n, k, scratch)?;
    let out = DisjointOut::new(y);
    let group_len = blocks_per_row * packed_block_bytes(weight.ty());
    let (w, row_bytes) = (weight.bytes(), weight.bytes().len() / m);
    let task_rows = rows_per_task(m, row_bytes, n).next_multiple_of(PACK_ROWS);
    let n_tasks = m.div_ceil(task_rows);
    (0..n_tasks).into_par_iter().for_each(|task| {
        let rows = task * task_rows..((task + 1) * task_rows).min(m);
        let src = &w[rows.start * row_bytes..rows.end * row_bytes];
        PACK_BUFFER.with_borrow_mut(|buffer| {
            if buffer.len() < src.len() {
                buffer.resize(src.len(), 0);
            }
            let packed = &mut buffer[..src.len()];
            pack_rows(weight.ty(), src, blocks_per_row, packed);
            let g0 = rows.start / PACK_ROWS;
            sweep_packed(dot, packed, group_len, g0, &columns, m, &out);
        });
    });
    Ok(())
}

/// The packed dot of `isa` for `ty` and the kernels that quantize its columns.
fn packed_kernels(ty: TensorType, isa: Isa) -> Result<(PackedDotFn, Kernels), MatmulError> {
    let unsupported = || MatmulError::UnsupportedIsa { isa };
    let dot = packed_kernel(ty, isa).ok_or_else(unsupported)?;
    let kernels = Kernels::new(ty, isa).ok_or_else(unsupported)?;
    Ok((dot, kernels))
}

/// Every column group against the consecutive packed row groups in `groups` (`group_len` bytes
/// each), the first of which is row group `g0` of the m-row output. Column groups outside, row
/// groups inside: a group's activations stay in L1 while the task's weights stay in L2.
fn sweep_packed(
    dot: PackedDotFn,
    groups: &[u8],
    group_len: usize,
    g0: usize,
    columns: &QuantizedColumns<'_>,
    m: usize,
    out: &DisjointOut,
) {
    let n = columns.count();
    let mut tile: PackedTile = [[0.0; MAX_COLS]; PACK_ROWS];
    for c0 in (0..n).step_by(MAX_COLS) {
        let nc = (n - c0).min(MAX_COLS);
        let cols = columns.group(c0, nc);
        for (i, group) in groups.chunks_exact(group_len).enumerate() {
            dot(group, cols, nc, &mut tile);
            let row0 = (g0 + i) * PACK_ROWS;
            for (r, results) in tile.iter().enumerate() {
                for (c, v) in results[..nc].iter().enumerate() {
                    out.write((c0 + c) * m + row0 + r, *v);
                }
            }
        }
    }
}

/// Converts the n activation rows into the dot partner type, in parallel for big batches.
fn quantize_columns(kernels: &Kernels, x: &[f32], k: usize, cols: &mut [u8], col_bytes: usize) {
    let quantize = kernels.quantize;
    // Below ~64K values the rayon hand-off costs more than it saves.
    if x.len() < 1 << 16 {
        for (xr, cr) in x.chunks_exact(k).zip(cols.chunks_exact_mut(col_bytes)) {
            quantize(xr, cr);
        }
    } else {
        x.par_chunks_exact(k)
            .zip(cols.par_chunks_exact_mut(col_bytes))
            .for_each(|(xr, cr)| quantize(xr, cr));
    }
}

/// `y`, written from several threads at indices that no two threads share (each task owns a
/// range of output rows i, and writes only `y[j·m + i]` for its own i).
struct DisjointOut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: the pointer comes from a `&mut [f32]` that outlives every use (the rayon scope ends
// before `matmul_with_isa` returns), and tasks write disjoint indices, so sharing it is race-free.
unsafe impl Sync for DisjointOut {}
unsafe impl Send for DisjointOut {}

impl DisjointOut {
    fn new(y: &mut [f32]) -> Self {
        DisjointOut {
            ptr: y.as_mut_ptr(),
            len: y.len(),
        }
    }

    fn write(&self, i: usize, v: f32) {
        assert!(i < self.len, "output index out of range");
        // SAFETY: in bounds (checked above); no other thread writes index i (see the type doc).
        unsafe { self.ptr.add(i).write(v) }
    }
}
