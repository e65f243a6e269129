//! Resolution changes of CHW images without arithmetic: nearest-neighbour upsampling by an integer
//! factor, and PyTorch's pixel shuffle / unshuffle (space ↔ channel moves).
//!
//! Channel ordering is `torch.nn.functional.pixel_shuffle`'s: input channel `c·r² + i·r + j` becomes
//! the sub-pixel `(i, j)` (row offset i, column offset j) of output channel `c`:
//! `shuffle[c, y·r + i, x·r + j] = x[c·r² + i·r + j, y, x]`; `pixel_unshuffle` is its inverse.
//! Nearest upsampling: `out[c, y, x] = in[c, y / r, x / r]` (`F.interpolate(mode="nearest")` with an
//! integer scale factor). Channel repeat: `out[c·r + k] = in[c]` (`repeat_interleave(r, dim=1)`,
//! DC-AE's up-block and decoder-input shortcuts).
//!
//! This module only moves values; it must not interpolate.

use rayon::prelude::*;

use super::error::{check_len, checked_product, param, OpError};
use crate::backend::params::Resample;

fn check_factor(op: &'static str, r: usize) -> Result<(), OpError> {
    if r == 0 {
        Err(param(op, "factor must be positive"))
    } else {
        Ok(())
    }
}

/// Nearest-neighbour upsampling by `r`: `[c, h, w] → [c, h·r, w·r]`.
pub fn upsample_nearest(
    input: &[f32],
    channels: usize,
    hw: [usize; 2],
    r: usize,
    out: &mut [f32],
) -> Result<(), OpError> {
    Resample::UpsampleNearest.check(channels, hw, r, input.len(), out.len())?;
    let [h, w] = hw;
    if out.is_empty() {
        return Ok(());
    }
    let ow = w * r;
    out.par_chunks_mut(h * r * ow)
        .zip(input.par_chunks(h * w))
        .for_each(|(o, plane)| {
            for (y, src) in plane.chunks_exact(w).enumerate() {
                let first = &mut o[y * r * ow..][..ow];
                for (x, &v) in src.iter().enumerate() {
                    first[x * r..(x + 1) * r].fill(v);
                }
                // The other r − 1 output rows repeat the first.
                let (done, rest) = o[y * r * ow..(y + 1) * r * ow].split_at_mut(ow);
                for row in rest.chunks_exact_mut(ow) {
                    row.copy_from_slice(done);
                }
            }
        });
    Ok(())
}

/// Pixel shuffle: `[c·r², h, w] → [c, h·r, w·r]`; `in_channels = c·r²`.
pub fn pixel_shuffle(
    input: &[f32],
    in_channels: usize,
    hw: [usize; 2],
    r: usize,
    out: &mut [f32],
) -> Result<(), OpError> {
    Resample::PixelShuffle.check(in_channels, hw, r, input.len(), out.len())?;
    let [h, w] = hw;
    let rr = r * r;
    if out.is_empty() {
        return Ok(());
    }
    let ow = w * r;
    // Output channel c is built from input channels c·r² .. (c+1)·r².
    out.par_chunks_mut(rr * h * w)
        .zip(input.par_chunks(rr * h * w))
        .for_each(|(o, src)| {
            for (sub, plane) in src.chunks_exact(h * w).enumerate() {
                let (i, j) = (sub / r, sub % r);
                for (y, row) in plane.chunks_exact(w).enumerate() {
                    let dst = &mut o[(y * r + i) * ow..][..ow];
                    for (x, &v) in row.iter().enumerate() {
                        dst[x * r + j] = v;
                    }
                }
            }
        });
    Ok(())
}

/// Pixel unshuffle: `[c, h, w] → [c·r², h/r, w/r]`; `h` and `w` must be multiples of `r`.
pub fn pixel_unshuffle(
    input: &[f32],
    channels: usize,
    hw: [usize; 2],
    r: usize,
    out: &mut [f32],
) -> Result<(), OpError> {
    const OP: &str = "pixel_unshuffle";
    check_factor(OP, r)?;
    let [h, w] = hw;
    if h % r != 0 || w % r != 0 {
        return Err(param(OP, format!("{h}×{w} is not divisible by {r}")));
    }
    check_len(
        OP,
        "input",
        checked_product(OP, &[channels, h, w])?,
        input.len(),
    )?;
    check_len(OP, "out", input.len(), out.len())?;
    if out.is_empty() {
        return Ok(());
    }
    let (oh, ow) = (h / r, w / r);
    out.par_chunks_mut(h * w)
        .zip(input.par_chunks(h * w))
        .for_each(|(o, plane)| {
            for (sub, dst) in o.chunks_exact_mut(oh * ow).enumerate() {
                let (i, j) = (sub / r, sub % r);
                for (y, row) in dst.chunks_exact_mut(ow).enumerate() {
                    let src = &plane[(y * r + i) * w..][..w];
                    for (x, v) in row.iter_mut().enumerate() {
                        *v = src[x * r + j];
                    }
                }
            }
        });
    Ok(())
}

/// Repeats each channel plane `r` times, copies adjacent: `[c, h, w] → [c·r, h, w]` with
/// `out[c·r + k] = in[c]` (`torch.repeat_interleave(x, r, dim=1)`).
pub fn repeat_channels(
    input: &[f32],
    channels: usize,
    hw: [usize; 2],
    r: usize,
    out: &mut [f32],
) -> Result<(), OpError> {
    Resample::RepeatChannels.check(channels, hw, r, input.len(), out.len())?;
    let plane = hw[0] * hw[1];
    if out.is_empty() {
        return Ok(());
    }
    out.par_chunks_mut(r * plane)
        .zip(input.par_chunks(plane))
        .for_each(|(o, src)| {
            o.chunks_exact_mut(plane)
                .for_each(|dst| dst.copy_from_slice(src))
        });
    Ok(())
}
