//! Normalisations, in place: RMSNorm over rows (tokens) and over channels per pixel (CHW images),
//! LayerNorm over rows, GroupNorm over CHW images.
//!
//! Semantics follow PyTorch / transformers / diffusers, computed in f32:
//! - `rms_norm`: `x / sqrt(mean(x²) + eps) · w` (Qwen2RMSNorm).
//! - `rms_norm_channels`: the same per pixel across the C channels of a `[C, H, W]` image, then
//!   `· w[c] (+ b[c])` (diffusers' `RMSNorm` applied channels-last, as DC-AE does).
//! - `layer_norm`: `(x − mean) / sqrt(var + eps) (· w) (+ b)`, biased variance (`F.layer_norm`).
//! - `group_norm`: LayerNorm statistics over each group of `C/G` channels × all pixels, then a
//!   per-channel affine (`F.group_norm`).
//!
//! Mean and variance are two passes (mean first, then squared deviations), which stays accurate when
//! the mean is large next to the spread. Rows are independent and are spread over rayon threads.
//! This module must not allocate.

use rayon::prelude::*;

use super::error::{check_len, checked_product, param, OpError};
use super::kernels::{self, multiversion};
use super::shared_mut::SharedMut;

/// Rows below this many elements are not worth a rayon task each.
const PAR_MIN_ELEMENTS: usize = 1 << 14;

/// RMSNorm of each row of `x` (`n_rows × weight.len()`), in place.
pub fn rms_norm(x: &mut [f32], weight: &[f32], eps: f32) -> Result<(), OpError> {
    let dim = weight.len();
    if dim == 0 || !x.len().is_multiple_of(dim) {
        return Err(param(
            "rms_norm",
            format!("{} elements are not whole rows of {dim}", x.len()),
        ));
    }
    let rows_per_task = (PAR_MIN_ELEMENTS / dim).max(1);
    x.par_chunks_mut(dim * rows_per_task).for_each(|rows| {
        for row in rows.chunks_exact_mut(dim) {
            let mean_sq = kernels::sum_sq_centered(row, 0.0) / dim as f32;
            kernels::shift_scale(row, 0.0, 1.0 / (mean_sq + eps).sqrt());
            kernels::mul_elementwise(row, weight);
        }
    });
    Ok(())
}

/// RMSNorm across the channels of each pixel of a `[C, H, W]` image (`C = weight.len()`), then a
/// per-channel scale and optional bias.
pub fn rms_norm_channels(
    x: &mut [f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    eps: f32,
) -> Result<(), OpError> {
    const OP: &str = "rms_norm_channels";
    let channels = weight.len();
    if channels == 0 || !x.len().is_multiple_of(channels) {
        return Err(param(
            OP,
            format!("{} elements are not {channels} channel planes", x.len()),
        ));
    }
    if let Some(b) = bias {
        check_len(OP, "bias", channels, b.len())?;
    }
    let pixels = x.len() / channels;
    let n_tiles = pixels.div_ceil(CHANNEL_TILE);
    let x_addr = SharedMut::new(x);
    (0..n_tiles).into_par_iter().for_each(|t| {
        let p0 = t * CHANNEL_TILE;
        let len = CHANNEL_TILE.min(pixels - p0);
        channel_tile(&x_addr, pixels, p0, len, weight, bias, eps);
    });
    Ok(())
}

/// Pixels per task of [`rms_norm_channels`]: channels are `pixels` apart, so a task works on a
/// pixel tile at a time, accumulating sums of squares channel by channel with contiguous loads.
const CHANNEL_TILE: usize = 64;

multiversion! {
    /// Pixels `p0..p0 + len` (`len ≤ CHANNEL_TILE`) of every plane of [`rms_norm_channels`]'s
    /// image (`x`: `weight.len()` planes of `pixels`), normalised in place. Tiles are disjoint.
    fn channel_tile / channel_tile_portable(
        x: &SharedMut<'_>,
        pixels: usize,
        p0: usize,
        len: usize,
        weight: &[f32],
        bias: Option<&[f32]>,
        eps: f32
    ) {
        let channels = weight.len();
        let mut inv = [0f32; CHANNEL_TILE];
        for c in 0..channels {
            // SAFETY: this tile touches only pixels p0..p0+len of every plane; tiles are disjoint,
            // and the range is inside `x` because p0 + len <= pixels and c < channels.
            let plane = unsafe { x.slice(c * pixels + p0, len) };
            for (acc, &v) in inv.iter_mut().zip(plane.iter()) {
                *acc += v * v;
            }
        }
        for acc in inv[..len].iter_mut() {
            *acc = 1.0 / (*acc / channels as f32 + eps).sqrt();
        }
        for c in 0..channels {
            // SAFETY: as above, a disjoint in-bounds sub-slice owned by this tile.
            let plane = unsafe { x.slice(c * pixels + p0, len) };
            let (w, b) = (weight[c], bias.map_or(0.0, |b| b[c]));
            for (v, &s) in plane.iter_mut().zip(inv.iter()) {
                *v = *v * s * w + b;
            }
        }
    }
}

/// LayerNorm of each row of `x` (`n_rows × dim`), in place, with optional weight and bias of `dim`.
pub fn layer_norm(
    x: &mut [f32],
    dim: usize,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    eps: f32,
) -> Result<(), OpError> {
    const OP: &str = "layer_norm";
    if dim == 0 || !x.len().is_multiple_of(dim) {
        return Err(param(
            OP,
            format!("{} elements are not whole rows of {dim}", x.len()),
        ));
    }
    if let Some(w) = weight {
        check_len(OP, "weight", dim, w.len())?;
    }
    if let Some(b) = bias {
        check_len(OP, "bias", dim, b.len())?;
    }
    let rows_per_task = (PAR_MIN_ELEMENTS / dim).max(1);
    x.par_chunks_mut(dim * rows_per_task).for_each(|rows| {
        for row in rows.chunks_exact_mut(dim) {
            normalize(row, eps);
            affine(row, weight, bias);
        }
    });
    Ok(())
}

/// GroupNorm of a `[channels, H, W]` image (`x.len() = channels · pixels`) with `groups` groups of
/// consecutive channels, in place, with optional per-channel weight and bias.
pub fn group_norm(
    x: &mut [f32],
    channels: usize,
    groups: usize,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    eps: f32,
) -> Result<(), OpError> {
    const OP: &str = "group_norm";
    if channels == 0 || groups == 0 || !channels.is_multiple_of(groups) {
        return Err(param(
            OP,
            format!("{channels} channels do not split into {groups} groups"),
        ));
    }
    if !x.len().is_multiple_of(channels) {
        return Err(param(
            OP,
            format!("{} elements are not {channels} channel planes", x.len()),
        ));
    }
    for (what, v) in [("weight", weight), ("bias", bias)] {
        if let Some(v) = v {
            check_len(OP, what, channels, v.len())?;
        }
    }
    let pixels = x.len() / channels;
    let per_group = channels / groups;
    checked_product(OP, &[per_group, pixels])?;
    if pixels == 0 {
        return Ok(());
    }
    x.par_chunks_mut(per_group * pixels)
        .enumerate()
        .for_each(|(g, group)| {
            let n = group.len() as f32;
            let mean = kernels::sum(group) / n;
            let var = kernels::sum_sq_centered(group, mean) / n;
            let inv = 1.0 / (var + eps).sqrt();
            for (i, plane) in group.chunks_exact_mut(pixels).enumerate() {
                let c = g * per_group + i;
                let w = weight.map_or(1.0, |w| w[c]);
                let b = bias.map_or(0.0, |b| b[c]);
                // (v − mean)·inv·w + b as one shift and one scale, then the bias.
                kernels::shift_scale(plane, mean, inv * w);
                if b != 0.0 {
                    plane.iter_mut().for_each(|v| *v += b);
                }
            }
        });
    Ok(())
}

/// `row = (row − mean) / sqrt(var + eps)` with the biased variance.
fn normalize(row: &mut [f32], eps: f32) {
    let n = row.len() as f32;
    let mean = kernels::sum(row) / n;
    let var = kernels::sum_sq_centered(row, mean) / n;
    kernels::shift_scale(row, mean, 1.0 / (var + eps).sqrt());
}

/// `row = row · w + b` with either part optional.
fn affine(row: &mut [f32], weight: Option<&[f32]>, bias: Option<&[f32]>) {
    match (weight, bias) {
        (Some(w), Some(b)) => kernels::mul_add_elementwise(row, w, b),
        (Some(w), None) => kernels::mul_elementwise(row, w),
        (None, Some(b)) => row.iter_mut().zip(b).for_each(|(v, bi)| *v += bi),
        (None, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runtime-dispatched tile (AVX2 where the CPU has it) equals the baseline build bit for
    /// bit, on a full tile and a ragged one.
    #[test]
    fn dispatched_channel_tile_equals_the_portable_one() {
        let (channels, pixels) = (5, CHANNEL_TILE + 7);
        let x: Vec<f32> = (0..channels * pixels)
            .map(|i| (i as f32 * 0.37).sin() * 3.0)
            .collect();
        let weight: Vec<f32> = (0..channels).map(|c| 0.5 + c as f32 * 0.25).collect();
        let bias: Vec<f32> = (0..channels).map(|c| c as f32 * -0.1).collect();
        let (mut a, mut b) = (x.clone(), x);
        for (p0, len) in [(0, CHANNEL_TILE), (CHANNEL_TILE, 7)] {
            channel_tile(
                &SharedMut::new(&mut a),
                pixels,
                p0,
                len,
                &weight,
                Some(&bias),
                1e-6,
            );
            let shared = SharedMut::new(&mut b);
            channel_tile_portable(&shared, pixels, p0, len, &weight, Some(&bias), 1e-6);
        }
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&b));
    }
}
