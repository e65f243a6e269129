//! Numerically stable softmax over rows, in place.
//!
//! `softmax(x)_i = e^(x_i − m) / Σ_j e^(x_j − m)` with `m = max(x)`: subtracting the maximum keeps
//! every exponent ≤ 0, so nothing overflows however large the inputs. `-inf` entries (masked) get
//! probability 0. A row that is entirely `-inf` has no defined softmax (PyTorch returns NaN); here it
//! becomes all zeros, so a fully masked row contributes nothing instead of poisoning a sum.

use rayon::prelude::*;

use super::error::{param, OpError};
use super::kernels;

/// Softmax of one row in place; returns the normaliser `Σ e^(x − max)` (0 for a fully masked row).
pub fn softmax_row(row: &mut [f32]) -> f32 {
    let m = kernels::max(row);
    if m == f32::NEG_INFINITY {
        row.fill(0.0);
        return 0.0;
    }
    let mut total = 0f32;
    for v in row.iter_mut() {
        *v = (*v - m).exp();
        total += *v;
    }
    let inv = 1.0 / total;
    row.iter_mut().for_each(|v| *v *= inv);
    total
}

/// Softmax of each row of `x` (`n_rows × row_len`), in place; rows run in parallel.
pub fn softmax_rows(x: &mut [f32], row_len: usize) -> Result<(), OpError> {
    if row_len == 0 || !x.len().is_multiple_of(row_len) {
        return Err(param(
            "softmax_rows",
            format!("{} elements are not whole rows of {row_len}", x.len()),
        ));
    }
    let rows_per_task = (4096 / row_len).max(1);
    x.par_chunks_mut(row_len * rows_per_task).for_each(|rows| {
        for row in rows.chunks_exact_mut(row_len) {
            softmax_row(row);
        }
    });
    Ok(())
}
