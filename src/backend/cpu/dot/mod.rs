//! Block dot products: one weight row against up to [`MAX_COLS`] activation rows, per weight type
//! and per instruction set, plus the activation quantizers that feed them.
//!
//! This is ggml's scheme: weights stay in their blocks; activations are converted once per matmul
//! to the weight type's *dot partner* (Q8_0, Q8_1 or Q8_K for quantized weights, the weight's own
//! float format otherwise); each block pair is reduced with integer arithmetic and the per-block
//! scales are applied in f32. A kernel handles several activation columns per call so that each
//! weight block is loaded and unpacked once for all of them (register tiling); where a type has a
//! [`RowsDotFn`], several weight rows per call too, so that each activation block is loaded once
//! for all of them (what decoding, at one column, is bound by). Q4_0, Q8_0, Q4_K and Q6_K repacked
//! eight rows at a time (`packed`) have a [`PackedDotFn`] on x86.
//!
//! The [`Kernels`] table is only handed out for an [`Isa`] the CPU supports, which is what makes
//! calling the `#[target_feature]` functions behind it sound. This module does no threading and
//! no allocation; `matmul` drives it.

use crate::backend::cpu::isa::Isa;
use crate::backend::cpu::packed::PACK_ROWS;
use crate::dtype::TensorType;

/// `$tile::<C>($args)` for C = `$n_cols` (1 ..= [`MAX_COLS`]): one tile per column count.
#[cfg(target_arch = "x86_64")]
macro_rules! for_columns {
    ($n_cols:expr, $($tile:ident)::+ ($($arg:expr),* $(,)?)) => {
        match $n_cols {
            1 => $($tile)::+::<1>($($arg),*),
            2 => $($tile)::+::<2>($($arg),*),
            3 => $($tile)::+::<3>($($arg),*),
            _ => $($tile)::+::<4>($($arg),*),
        }
    };
}

/// Defines the safe [`PackedDotFn`] `$name`: it checks its arguments against packed blocks of
/// `$block` bytes and columns of `$x_block`-byte blocks with `$scale_sets` scale sets, then runs
/// `$body` (over `nb`, `w`, `cols`, `n_cols`, `out`) compiled for AVX2.
#[cfg(target_arch = "x86_64")]
macro_rules! packed_dot_fn {
    ($name:ident, $block:expr, $x_block:expr, $scale_sets:expr,
     |$nb:ident, $w:ident, $cols:ident, $n_cols:ident, $out:ident| $body:expr) => {
        pub(crate) fn $name(group: &[u8], cols: Columns<'_>, n_cols: usize, out: &mut PackedTile) {
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn run(
                $nb: usize,
                $w: *const u8,
                $cols: &Columns<'_>,
                $n_cols: usize,
                $out: &mut PackedTile,
            ) {
                $body
            }
            let nb = check_packed_args(group, $block, $x_block, $scale_sets, &cols, n_cols);
            // SAFETY: only reachable where the module's features were detected
            // (`packed_kernel`); check_packed_args bounds the group, the n_cols columns and
            // their scales.
            unsafe { run(nb, group.as_ptr(), &cols, n_cols, out) }
        }
    };
}

/// Defines the safe [`PackedDotFn`] `$name` over `avx2::packed_columns` for packed blocks of
/// `$block` bytes against Q8_0 columns: `$unpack(p, v)` gives the two byte vectors of weights
/// `4v..4v+4` and `16 + 4v..16 + 4v + 4` of the block at `p` (`v < 4`), lane r for row r, stored
/// with `$offset` added; `$dot` is the byte dot (`acc + Σ₄ u·y` per i32 lane, signed y) of one
/// x86 family.
///
/// `packed_dot!(k_quant $name, $tile, $w_block, $dot)` defines it over the K-quant tile
/// `avx2::$tile`, for 8 file blocks of `$w_block` bytes against Q8_K columns.
#[cfg(target_arch = "x86_64")]
macro_rules! packed_dot {
    ($name:ident, $block:expr, $offset:expr, $unpack:expr, $dot:expr) => {
        packed_dot_fn!($name, $block, 34, 2, |nb, w, cols, n_cols, out| {
            super::avx2::packed_columns(nb, $block, w, cols, n_cols, out, $offset, $unpack, $dot)
        });
    };
    (k_quant $name:ident, $tile:ident, $w_block:expr, $dot:expr) => {
        packed_dot_fn!(
            $name,
            PACK_ROWS * $w_block,
            292,
            0,
            |nb, w, cols, n_cols, out| {
                let (x, xs) = (cols.bytes.as_ptr(), cols.col_bytes);
                for_columns!(n_cols, super::avx2::$tile(nb, w, x, xs, out, $dot))
            }
        );
    };
}

/// Defines the safe [`DotFn`] `$name` over a SIMD module's tiled kernel `$tile::<C>` (C = number
/// of columns, 1 ..= 4), which reads `nb` weight blocks of `$w_block` bytes, C columns of `nb`
/// activation blocks of `$x_block` bytes each `col_bytes` apart, and `$scale_sets · nb ·
/// MAX_COLS` f32 column scales, and writes C results.
macro_rules! tiled_dot {
    // A row kernel `$tile::<R, C>` (see `row_tiled_dot!`) used for one row.
    ($name:ident, rows $tile:ident, $w_block:expr, $x_block:expr, $scale_sets:expr) => {
        fn $name(w_row: &[u8], cols: Columns<'_>, out: &mut [f32]) {
            let nb = check_dot_args(w_row, $w_block, &cols, $x_block, $scale_sets, out.len());
            let (w, x, s) = (w_row.as_ptr(), cols.bytes.as_ptr(), cols.scales.as_ptr());
            let (xs, o) = (cols.col_bytes, out.as_mut_ptr());
            // SAFETY: as below; with one row the kernel writes out[0 .. out.len()].
            unsafe {
                match out.len() {
                    1 => $tile::<1, 1>(nb, w, 0, x, xs, s, o),
                    2 => $tile::<1, 2>(nb, w, 0, x, xs, s, o),
                    3 => $tile::<1, 3>(nb, w, 0, x, xs, s, o),
                    _ => $tile::<1, 4>(nb, w, 0, x, xs, s, o),
                }
            }
        }
    };
    ($name:ident, $tile:ident, $w_block:expr, $x_block:expr, $scale_sets:expr) => {
        fn $name(w_row: &[u8], cols: Columns<'_>, out: &mut [f32]) {
            let nb = check_dot_args(w_row, $w_block, &cols, $x_block, $scale_sets, out.len());
            let (w, x, s) = (w_row.as_ptr(), cols.bytes.as_ptr(), cols.scales.as_ptr());
            let xs = cols.col_bytes;
            // SAFETY: the SIMD module's kernels are only reachable through `Kernels::new`, which
            // checks that the CPU has the module's features; check_dot_args guarantees nb blocks
            // in w_row, out.len() columns of nb blocks in cols and the scales the tile reads, and
            // the tile writes out.len() results.
            unsafe {
                match out.len() {
                    1 => $tile::<1>(nb, w, x, xs, s, out.as_mut_ptr()),
                    2 => $tile::<2>(nb, w, x, xs, s, out.as_mut_ptr()),
                    3 => $tile::<3>(nb, w, x, xs, s, out.as_mut_ptr()),
                    _ => $tile::<4>(nb, w, x, xs, s, out.as_mut_ptr()),
                }
            }
        }
    };
}

/// Defines the safe [`RowsDotFn`] `$name` over a SIMD module's kernel `$tile::<R, C>` (R weight
/// rows `ws` bytes apart × C columns), which otherwise reads what a `tiled_dot!` tile reads and
/// writes `out[r·MAX_COLS + c]`. One activation column shares its loads across four rows; wider
/// tiles take two rows at a time, which keeps their 2·C accumulators in the 16 vector registers.
// x86-64 only so far: the NEON kernels have no row tiles yet.
#[cfg(target_arch = "x86_64")]
macro_rules! row_tiled_dot {
    ($name:ident, $tile:ident, $w_block:expr, $x_block:expr, $scale_sets:expr) => {
        fn $name(rows: WeightRows<'_>, cols: Columns<'_>, n_cols: usize, out: &mut Tile) {
            let (nb, n_rows) =
                check_rows_args(&rows, $w_block, &cols, $x_block, $scale_sets, n_cols);
            let (x, s, xs, ws) = (
                cols.bytes.as_ptr(),
                cols.scales.as_ptr(),
                cols.col_bytes,
                rows.row_bytes,
            );
            let out = out.as_mut_ptr().cast::<f32>();
            let mut r = 0;
            while r < n_rows {
                // SAFETY: as in `tiled_dot!`: the kernels are only reachable on a CPU with the
                // module's features; check_rows_args guarantees n_rows rows of nb blocks, the
                // columns and their scales; row r + R ≤ n_rows ≤ MAX_ROWS of `out` is written.
                r += unsafe {
                    let (w, o) = (rows.bytes.as_ptr().add(r * ws), out.add(r * MAX_COLS));
                    match (n_rows - r, n_cols) {
                        (4, 1) => {
                            $tile::<4, 1>(nb, w, ws, x, xs, s, o);
                            4
                        }
                        (3, 1) => {
                            $tile::<3, 1>(nb, w, ws, x, xs, s, o);
                            3
                        }
                        (2, 1) => {
                            $tile::<2, 1>(nb, w, ws, x, xs, s, o);
                            2
                        }
                        (1, 1) => {
                            $tile::<1, 1>(nb, w, ws, x, xs, s, o);
                            1
                        }
                        (1, 2) => {
                            $tile::<1, 2>(nb, w, ws, x, xs, s, o);
                            1
                        }
                        (_, 2) => {
                            $tile::<2, 2>(nb, w, ws, x, xs, s, o);
                            2
                        }
                        (1, 3) => {
                            $tile::<1, 3>(nb, w, ws, x, xs, s, o);
                            1
                        }
                        (_, 3) => {
                            $tile::<2, 3>(nb, w, ws, x, xs, s, o);
                            2
                        }
                        (1, _) => {
                            $tile::<1, 4>(nb, w, ws, x, xs, s, o);
                            1
                        }
                        _ => {
                            $tile::<2, 4>(nb, w, ws, x, xs, s, o);
                            2
                        }
                    }
                };
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;
pub(crate) mod scalar;

/// Most activation columns one kernel call handles (the register tile width).
pub const MAX_COLS: usize = 4;

/// The type activations are converted to before their dot product with weights of type `ty`
/// (ggml's `vec_dot_type`), or `None` when there is no kernel for `ty`.
pub fn dot_partner(ty: TensorType) -> Option<TensorType> {
    use TensorType::*;
    match ty {
        F32 => Some(F32),
        F16 => Some(F16),
        BF16 => Some(BF16),
        Q4_0 | Q5_0 | Q8_0 => Some(Q8_0),
        Q4_1 | Q5_1 => Some(Q8_1),
        Q4_K | Q5_K | Q6_K => Some(Q8_K),
        _ => None,
    }
}

/// Converts one activation row (`x.len()` = k floats) into the dot partner's bytes (`out.len()` =
/// the partner's row size for k). Callers guarantee both lengths.
pub type QuantizeFn = fn(x: &[f32], out: &mut [u8]);

/// The activation columns of one tile: `out.len()` rows in the dot partner type, `col_bytes`
/// apart in `bytes`, and for the Q8_0 / Q8_1 partners their block scales as f32 (see
/// [`column_scales`]), so that SIMD kernels need not convert them once per weight row.
#[derive(Clone, Copy)]
pub struct Columns<'a> {
    pub bytes: &'a [u8],
    pub col_bytes: usize,
    pub scales: &'a [f32],
}

/// `out[c] = w_row · column c` for `c < out.len()` (1 ..= [`MAX_COLS`]), where column c is
/// `cols.bytes[c * col_bytes..][..col_bytes]`, an activation row in the dot partner type of the
/// same length k as the weight row `w_row`. Lengths are checked (a mismatch panics: it is a bug in
/// the caller, never reachable from user input through `matmul`).
pub type DotFn = fn(w_row: &[u8], cols: Columns<'_>, out: &mut [f32]);

/// Most weight rows one [`RowsDotFn`] call handles.
pub const MAX_ROWS: usize = 4;

/// The results of one row tile: `tile[r][c]` = weight row r · column c.
pub type Tile = [[f32; MAX_COLS]; MAX_ROWS];

/// Up to [`MAX_ROWS`] consecutive weight rows of `row_bytes` each.
#[derive(Clone, Copy)]
pub struct WeightRows<'a> {
    pub bytes: &'a [u8],
    pub row_bytes: usize,
}

/// `out[r][c] = row r · column c` for every row of `rows` (1 ..= [`MAX_ROWS`]) and `c < n_cols`
/// (1 ..= [`MAX_COLS`]): a [`DotFn`] over several weight rows at once, so that each activation
/// block is loaded once for all of them (what decoding, at one column, needs). Lengths are
/// checked as for [`DotFn`].
pub type RowsDotFn = fn(rows: WeightRows<'_>, cols: Columns<'_>, n_cols: usize, out: &mut Tile);

/// The results of one packed row group: `tile[r][c]` = row r of the group · column c.
pub type PackedTile = [[f32; MAX_COLS]; PACK_ROWS];

/// `out[r][c] = row r · column c` for the [`PACK_ROWS`] rows of one row group of a
/// [`PackedWeight`](super::packed::PackedWeight) (`group`: its blocks) and `c < n_cols`
/// (1 ..= [`MAX_COLS`]), against Q8_0 columns. Each output is summed in block order (the block's
/// integer dot is exact), whatever `n_cols`, so results do not depend on the batch.
pub type PackedDotFn = fn(group: &[u8], cols: Columns<'_>, n_cols: usize, out: &mut PackedTile);

/// The packed kernel of `isa` for weights of type `ty`: the x86 families have one for Q4_0, Q8_0,
/// Q4_K and Q6_K; others compute on the file's layout.
pub fn packed_kernel(ty: TensorType, isa: Isa) -> Option<PackedDotFn> {
    if !isa.is_supported() {
        return None;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::packed_kernel(ty),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => avx512::packed_kernel(ty),
        _ => {
            let _ = ty;
            None
        }
    }
}

/// [`check_dot_args`] for a [`PackedDotFn`] over packed blocks of `block` bytes against columns
/// of `x_block`-byte blocks with `scale_sets` column scales; returns the number of blocks per row.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn check_packed_args(
    group: &[u8],
    block: usize,
    x_block: usize,
    scale_sets: usize,
    cols: &Columns<'_>,
    n_cols: usize,
) -> usize {
    let nb = group.len() / block;
    assert!(
        nb > 0
            && group.len() == nb * block
            && cols.col_bytes == nb * x_block
            && (1..=MAX_COLS).contains(&n_cols)
            && cols.bytes.len() >= n_cols * cols.col_bytes
            && cols.scales.len() >= scale_sets * nb * MAX_COLS,
        "packed dot kernel called with inconsistent lengths"
    );
    nb
}

/// How many f32 scale sets [`column_scales`] makes per block for activations of type `partner`:
/// two for Q8_0 and Q8_1, none for the others.
pub fn scale_sets(partner: TensorType) -> usize {
    match partner {
        TensorType::Q8_0 | TensorType::Q8_1 => 2,
        _ => 0,
    }
}

/// Converts the block scales of `n_cols` (≤ [`MAX_COLS`]) activation columns of type `partner`
/// (Q8_0 or Q8_1) to f32 in `out`, block-major: `out[b·MAX_COLS + c]` is d of column c's block b,
/// and `out[(nb + b)·MAX_COLS + c]` is d·Σq (Q8_0, computed here in f32; kernels with unsigned
/// weights subtract their offset with it) or the stored s (Q8_1). Missing columns get 0.
pub fn column_scales(
    partner: TensorType,
    cols: &[u8],
    col_bytes: usize,
    n_cols: usize,
    out: &mut [f32],
) {
    let block = partner.block_bytes();
    let nb = col_bytes / block;
    out[..scale_sets(partner) * nb * MAX_COLS].fill(0.0);
    let f16_at = |b: &[u8], at: usize| half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32();
    for c in 0..n_cols.min(MAX_COLS) {
        let col = &cols[c * col_bytes..][..col_bytes];
        for (b, blk) in col.chunks_exact(block).enumerate() {
            let d = f16_at(blk, 0);
            out[b * MAX_COLS + c] = d;
            out[(nb + b) * MAX_COLS + c] = match partner {
                TensorType::Q8_0 => {
                    d * blk[2..].iter().map(|&q| q as i8 as i32).sum::<i32>() as f32
                }
                _ => f16_at(blk, 2),
            };
        }
    }
}

/// The kernels for one weight type on one instruction set.
#[derive(Clone, Copy)]
pub struct Kernels {
    pub weight: TensorType,
    pub partner: TensorType,
    pub isa: Isa,
    pub quantize: QuantizeFn,
    pub dot: DotFn,
    /// The multi-row form of `dot`, where this instruction set has one for the type.
    pub rows_dot: Option<RowsDotFn>,
}

impl Kernels {
    /// The kernels for weight type `ty` on `isa`; `None` when `ty` has no kernels or the CPU does
    /// not support `isa`. SIMD families fall back to a narrower family per type where they have
    /// no kernel of their own (AVX-512 → AVX2 → scalar).
    pub fn new(ty: TensorType, isa: Isa) -> Option<Kernels> {
        let partner = dot_partner(ty)?;
        if !isa.is_supported() {
            return None;
        }
        let (quantize, dot) = match isa {
            Isa::Scalar => scalar::kernels(ty)?,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::kernels(ty)?,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => avx512::kernels(ty)?,
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => neon::kernels(ty)?,
            #[allow(unreachable_patterns)]
            _ => return None,
        };
        let rows_dot = match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::rows_kernel(ty),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => avx512::rows_kernel(ty),
            _ => None,
        };
        Some(Kernels {
            weight: ty,
            partner,
            isa,
            quantize,
            dot,
            rows_dot,
        })
    }
}

/// Checks what a [`DotFn`] receives against block sizes `w_block` / `x_block` (bytes) and the
/// number of scale sets the kernel reads, and returns the number of blocks in a row. Every SIMD
/// kernel calls this before reading through raw pointers, which keeps their reads in bounds.
#[inline]
pub(crate) fn check_dot_args(
    w_row: &[u8],
    w_block: usize,
    cols: &Columns<'_>,
    x_block: usize,
    scale_sets: usize,
    n_cols: usize,
) -> usize {
    let nb = w_row.len() / w_block;
    assert!(
        w_row.len() == nb * w_block
            && cols.col_bytes == nb * x_block
            && (1..=MAX_COLS).contains(&n_cols)
            && cols.bytes.len() >= n_cols * cols.col_bytes
            && cols.scales.len() >= scale_sets * nb * MAX_COLS,
        "dot kernel called with inconsistent lengths"
    );
    nb
}

/// [`check_dot_args`] for a [`RowsDotFn`]: also checks the rows, and returns the number of
/// blocks in a row and the number of rows.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn check_rows_args(
    rows: &WeightRows<'_>,
    w_block: usize,
    cols: &Columns<'_>,
    x_block: usize,
    scale_sets: usize,
    n_cols: usize,
) -> (usize, usize) {
    let n_rows = rows.bytes.len() / rows.row_bytes.max(1);
    assert!(
        rows.row_bytes > 0
            && rows.bytes.len() == n_rows * rows.row_bytes
            && (1..=MAX_ROWS).contains(&n_rows),
        "row dot kernel called with inconsistent rows"
    );
    let nb = check_dot_args(
        &rows.bytes[..rows.row_bytes],
        w_block,
        cols,
        x_block,
        scale_sets,
        n_cols,
    );
    (nb, n_rows)
}
