//! `y = W·x` for every computable weight type: quantize the activations once into a reusable
//! scratch buffer, then sweep tiles of weight rows × activation columns across rayon's threads.
//! Activations and products are token-major (`x` n rows of k, `y` n rows of m: the transformers'
//! layout) or channel-major ([`matmul_channels`]: `x` k rows of n, `y` m rows of n, a `[C, h·w]`
//! image, so a 1×1 convolution), through the same kernels and so with the same bits.
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

/// How `x` and `y` hold their columns (the activation vectors `x_j` and products `y_j`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// `x[j·k + t]` and `y[j·m + i]`: one vector after another.
    Rows,
    /// `x[t·n + j]` and `y[i·n + j]`: one channel after another.
    Channels,
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
    file_layout_product(isa, weight, x, n, y, scratch, Layout::Rows)
}

/// `y = W·X` in channel-major order on `isa`: `x` holds k rows (channels) of n values and `y`
/// receives m rows of n, `y[i·n + j] = Σ_t W[i, t] · x[t·n + j]`: a 1×1 convolution of a
/// `[k, h·w]` image. Each column is quantized as [`matmul_with_isa`] quantizes it, and weights
/// that pack per task go through [`matmul_repacking`]'s kernel, so the bits are those of the
/// token-major product on the transposed input.
pub fn matmul_channels(
    isa: Isa,
    weight: &TensorView,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut MatmulScratch,
) -> Result<(), MatmulError> {
    if packs_per_task(isa, weight) {
        repacking_product(isa, weight, x, n, y, scratch, Layout::Channels)
    } else {
        file_layout_product(isa, weight, x, n, y, scratch, Layout::Channels)
    }
}

/// Whether `weight` can compute through [`matmul_repacking`] on `isa`: a packed kernel for its
/// type, rows in whole groups.
pub fn packs_per_task(isa: Isa, weight: &TensorView<'_>) -> bool {
    packed_kernel(weight.ty(), isa).is_some() && packable_blocks_per_row(weight).is_some()
}

/// Working memory, in bytes, that [`matmul_channels`] grows to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkingBytes {
    /// The quantized columns and their scales, in the caller's [`MatmulScratch`].
    pub activations: usize,
    /// One task's packed weight rows, on each worker thread (weights that pack per task).
    pub packed_rows_per_thread: usize,
}

impl WorkingBytes {
    /// For a `[k, m]` weight of type `ty` and n columns on `isa`, with the rayon pool of the
    /// caller; `None` on overflow or where `ty` has no kernels on `isa`.
    pub fn of(isa: Isa, ty: TensorType, k: usize, m: usize, n: usize) -> Option<WorkingBytes> {
        let kernels = Kernels::new(ty, isa)?;
        let (words, scales) = column_buffers(&kernels, n, k).ok()?;
        let activations = words.checked_mul(8)?.checked_add(scales.checked_mul(4)?)?;
        let row_bytes = usize::try_from(ty.row_bytes(k as u64)?).ok()?;
        let packs = packed_kernel(ty, isa).is_some() && m > 0 && m.is_multiple_of(PACK_ROWS);
        let packed_rows_per_thread = if packs {
            let rows = rows_per_task(m, row_bytes, n)
                .next_multiple_of(PACK_ROWS)
                .min(m);
            rows.checked_mul(row_bytes)?
        } else {
            0
        };
        Some(WorkingBytes {
            activations,
            packed_rows_per_thread,
        })
    }
}

/// The product on the weight in the file's layout, through the row kernels of `isa`.
fn file_layout_product(
    isa: Isa,
    weight: &TensorView,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut MatmulScratch,
    layout: Layout,
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
    let columns = quantized_columns(&kernels, x, n, k, layout, scratch)?;

    let w = weight.bytes();
    let w_row_bytes = w.len() / m;
    let out = DisjointOut::new(y, layout, m, n);
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
                        out.write(i0 + r, c0 + c, *v);
                    }
                }
            }
        }
    });
    columns.restore(y);
    Ok(())
}

/// The activations in the dot partner type and their scales per group of MAX_COLS columns.
struct QuantizedColumns<'s> {
    bytes: &'s [u8],
    scales: &'s [f32],
    col_bytes: usize,
    group_scales: usize,
    /// The columns hold `x·2^-shift` ([`range_shift`]); [`QuantizedColumns::restore`] undoes it.
    shift: i32,
}

impl<'s> QuantizedColumns<'s> {
    /// How many columns there are.
    fn count(&self) -> usize {
        self.bytes.len() / self.col_bytes
    }

    /// Scales the products `y` of these columns back by `2^shift`.
    fn restore(&self, y: &mut [f32]) {
        if self.shift != 0 {
            let scale = power_of_two(self.shift);
            y.iter_mut().for_each(|v| *v *= scale);
        }
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

/// Bytes of one quantized column of k values for `kernels`.
fn column_bytes(kernels: &Kernels, k: usize) -> Result<usize, MatmulError> {
    // k is a whole number of weight blocks (the caller checked it), and partner blocks are never
    // longer than weight blocks, so this is a whole number of partner blocks.
    kernels
        .partner
        .row_bytes(k as u64)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or(MatmulError::ScratchTooLarge { bytes: u128::MAX })
}

/// The 8-byte words and f32 scales that n quantized columns of k values take in a
/// [`MatmulScratch`].
fn column_buffers(kernels: &Kernels, n: usize, k: usize) -> Result<(usize, usize), MatmulError> {
    let col_bytes = column_bytes(kernels, k)?;
    let too_large = MatmulError::ScratchTooLarge {
        bytes: col_bytes as u128 * n as u128,
    };
    let total = col_bytes.checked_mul(n).ok_or(too_large)?;
    let scales = group_scales(kernels, k)
        .checked_mul(n.div_ceil(MAX_COLS))
        .ok_or(MatmulError::ScratchTooLarge { bytes: u128::MAX })?;
    Ok((total.div_ceil(8), scales))
}

/// The f32 scales of one group of MAX_COLS quantized columns of k values.
fn group_scales(kernels: &Kernels, k: usize) -> usize {
    scale_sets(kernels.partner) * (k / kernels.partner.block_size()) * MAX_COLS
}

/// `x` (in `layout`) quantized into `scratch` for `kernels`, with its column scales.
fn quantized_columns<'s>(
    kernels: &Kernels,
    x: &[f32],
    n: usize,
    k: usize,
    layout: Layout,
    scratch: &'s mut MatmulScratch,
) -> Result<QuantizedColumns<'s>, MatmulError> {
    let col_bytes = column_bytes(kernels, k)?;
    let (_, n_scales) = column_buffers(kernels, n, k)?;
    let group_scales = group_scales(kernels, k);
    let (cols, scales) = scratch.buffers(col_bytes * n, n_scales);
    let shift = range_shift(kernels.partner, x);
    let scale = power_of_two(-shift);
    match layout {
        Layout::Rows => quantize_columns(kernels, x, k, scale, cols, col_bytes),
        Layout::Channels => quantize_channel_columns(kernels, x, n, k, scale, cols, col_bytes),
    }
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
        shift,
    })
}

/// The largest |x| whose dot-partner form stays finite, with a margin: Q8_0 and Q8_1 hold each
/// block's scale `d = amax/127` as f16 (Q8_1 also `s = d·Σq`, up to 32·amax), F16 holds the
/// values themselves; f16 ends at 65504. `None` where the partner has f32's range (F32, BF16, and
/// Q8_K with its f32 scale). A DC-AE decoder's activations can pass 10^8.
fn partner_limit(partner: TensorType) -> Option<f32> {
    match partner {
        TensorType::Q8_0 => Some(power_of_two(22)), // d ≤ 2^22/127 ≈ 33026
        TensorType::Q8_1 => Some(power_of_two(10)), // s ≤ 32·2^10 = 32768
        TensorType::F16 => Some(power_of_two(15)),
        _ => None,
    }
}

/// `e` such that `x·2^-e` lies within the partner's range ([`partner_limit`]); 0 when `x` does
/// already (nearly always) or holds infinities or NaN (which no scale cures). The product is
/// linear in `x` and a power of two scales every f32 and f16 exactly (short of subnormals), so
/// `2^e · (W · x·2^-e)` has the bits that `W · x` would have had if f16 had f32's range.
fn range_shift(partner: TensorType, x: &[f32]) -> i32 {
    let Some(limit) = partner_limit(partner) else {
        return 0;
    };
    // Magnitudes ordered as their bit patterns: a max over u32 lanes that vectorises.
    let magnitude = |chunk: &[f32]| chunk.iter().map(|v| v.to_bits() & 0x7fff_ffff).max();
    let bits = if x.len() < 1 << 16 {
        magnitude(x)
    } else {
        x.par_chunks(1 << 14).filter_map(magnitude).max()
    };
    let amax = f32::from_bits(bits.unwrap_or(0));
    if amax <= limit || !amax.is_finite() {
        return 0;
    }
    // amax lies in [2^E, 2^(E+1)) with E its unbiased exponent; limit is 2^L.
    let exponent = |v: f32| (v.to_bits() >> 23) as i32 - 127;
    exponent(amax) + 1 - exponent(limit)
}

/// `2^e` for |e| < 127.
fn power_of_two(e: i32) -> f32 {
    debug_assert!(e.abs() < 127);
    f32::from_bits(((127 + e) as u32) << 23)
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
    let columns = quantized_columns(&kernels, x, n, k, Layout::Rows, scratch)?;
    let out = DisjointOut::new(y, Layout::Rows, m, n);
    let task_rows = rows_per_task(m, packed.held_bytes() / m, n).next_multiple_of(PACK_ROWS);
    let n_tasks = m.div_ceil(task_rows);
    let group_len = packed.group_bytes();
    (0..n_tasks).into_par_iter().for_each(|task| {
        let rows = task * task_rows..((task + 1) * task_rows).min(m);
        let (g0, count) = (rows.start / PACK_ROWS, rows.len() / PACK_ROWS);
        sweep_packed(dot, packed.groups(g0, count), group_len, g0, &columns, &out);
    });
    columns.restore(y);
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
    repacking_product(isa, weight, x, n, y, scratch, Layout::Rows)
}

/// [`matmul_repacking`] in either layout.
fn repacking_product(
    isa: Isa,
    weight: &TensorView,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut MatmulScratch,
    layout: Layout,
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
    let columns = quantized_columns(&kernels, x, n, k, layout, scratch)?;
    let out = DisjointOut::new(y, layout, m, n);
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
            sweep_packed(dot, packed, group_len, g0, &columns, &out);
        });
    });
    columns.restore(y);
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
                    out.write(row0 + r, c0 + c, *v);
                }
            }
        }
    }
}

/// Converts the n activation rows, times `scale`, into the dot partner type, in parallel for big
/// batches.
fn quantize_columns(
    kernels: &Kernels,
    x: &[f32],
    k: usize,
    scale: f32,
    cols: &mut [u8],
    col_bytes: usize,
) {
    let quantize = |xr: &[f32], cr: &mut [u8]| quantize_scaled(kernels, xr, scale, cr);
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

/// One column `x·scale` in the partner type; pieces of [`GATHER_LEN`] values go through the stack
/// where `scale` is not 1 (partner blocks are independent, so the bytes are the whole column's).
fn quantize_scaled(kernels: &Kernels, x: &[f32], scale: f32, out: &mut [u8]) {
    if scale == 1.0 {
        return (kernels.quantize)(x, out);
    }
    let mut piece = [0f32; GATHER_LEN];
    let mut start = 0;
    for chunk in x.chunks(GATHER_LEN) {
        let scaled = &mut piece[..chunk.len()];
        scaled
            .iter_mut()
            .zip(chunk)
            .for_each(|(s, v)| *s = v * scale);
        let bytes = partner_bytes(kernels, chunk.len());
        (kernels.quantize)(scaled, &mut out[start..start + bytes]);
        start += bytes;
    }
}

/// Bytes of `len` values (whole partner blocks) in the partner type.
fn partner_bytes(kernels: &Kernels, len: usize) -> usize {
    kernels.partner.row_bytes(len as u64).unwrap_or(0) as usize
}

/// Values of one column that [`quantize_channel_columns`] gathers at a time: a whole number of
/// every partner block (32, 256).
const GATHER_LEN: usize = 256;

/// Columns that [`quantize_channel_columns`] gathers together: 16 floats are one 64-byte line of
/// each channel.
const GATHER_COLUMNS: usize = 16;

/// [`quantize_columns`] for channel-major `x` (k rows of n): each task gathers the
/// [`GATHER_LEN`]-value pieces of [`GATHER_COLUMNS`] columns on its stack and quantizes them in
/// place in their columns. Partner blocks are independent of each other (their scale, sum and
/// values depend on their own values only), so the bytes are those of whole-column quantization.
fn quantize_channel_columns(
    kernels: &Kernels,
    x: &[f32],
    n: usize,
    k: usize,
    scale: f32,
    cols: &mut [u8],
    col_bytes: usize,
) {
    let quantize = kernels.quantize;
    // Bytes of a whole GATHER_LEN piece (the last piece of a column may be shorter, but still
    // whole partner blocks).
    let piece_bytes = |len: usize| partner_bytes(kernels, len);
    let panel = |(p, panel): (usize, &mut [u8])| {
        let j0 = p * GATHER_COLUMNS;
        let nj = panel.len() / col_bytes;
        let mut gathered = [[0f32; GATHER_LEN]; GATHER_COLUMNS];
        for t0 in (0..k).step_by(GATHER_LEN) {
            let len = (k - t0).min(GATHER_LEN);
            for t in 0..len {
                let channel = &x[(t0 + t) * n + j0..][..nj];
                for (c, v) in channel.iter().enumerate() {
                    gathered[c][t] = v * scale;
                }
            }
            let (start, bytes) = (piece_bytes(t0), piece_bytes(len));
            for (c, column) in panel.chunks_exact_mut(col_bytes).enumerate() {
                quantize(&gathered[c][..len], &mut column[start..start + bytes]);
            }
        }
    };
    let panels = cols.chunks_mut(col_bytes * GATHER_COLUMNS).enumerate();
    if x.len() < 1 << 16 {
        panels.for_each(panel);
    } else {
        cols.par_chunks_mut(col_bytes * GATHER_COLUMNS)
            .enumerate()
            .for_each(panel);
    }
}

/// `y`, written from several threads at indices that no two threads share (each task owns a
/// range of weight rows i, and writes only the products of its own rows).
struct DisjointOut {
    ptr: *mut f32,
    len: usize,
    layout: Layout,
    m: usize,
    n: usize,
}

// SAFETY: the pointer comes from a `&mut [f32]` that outlives every use (the rayon scope ends
// before `matmul_with_isa` returns), and tasks write disjoint indices, so sharing it is race-free.
unsafe impl Sync for DisjointOut {}
unsafe impl Send for DisjointOut {}

impl DisjointOut {
    fn new(y: &mut [f32], layout: Layout, m: usize, n: usize) -> Self {
        DisjointOut {
            ptr: y.as_mut_ptr(),
            len: y.len(),
            layout,
            m,
            n,
        }
    }

    /// `y_j[row] = v`.
    fn write(&self, row: usize, j: usize, v: f32) {
        let i = match self.layout {
            Layout::Rows => j * self.m + row,
            Layout::Channels => row * self.n + j,
        };
        assert!(i < self.len, "output index out of range");
        // SAFETY: in bounds (checked above); no other thread writes index i (see the type doc).
        unsafe { self.ptr.add(i).write(v) }
    }
}
