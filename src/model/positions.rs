//! Qwen2-VL's M-RoPE positions of a prompt, exactly as transformers' `get_rope_index`: text tokens
//! count up with `t = h = w`; the tokens of an image sit on its merged grid at
//! `(start + frame, start + row, start + col)`; whatever follows an image continues at one past
//! the largest position used so far (`start + max(grid_h, grid_w)/merge` for a single frame).
//!
//! This module owns that rule; it must not know token texts or run any model.

use crate::model::ModelError;

/// An image's grid in merged tokens: `[frames, rows, cols]` (`grid_t`, `grid_h / merge`,
/// `grid_w / merge`).
pub type MergedGrid = [usize; 3];

/// Positions of `ids`, whose runs of `image_token_id` are the images of `grids` in order (each
/// image `frames · rows · cols` tokens). Returns the positions and the next free position (where
/// decoding continues).
pub fn rope_positions(
    ids: &[u32],
    image_token_id: u32,
    grids: &[MergedGrid],
) -> Result<(Vec<[u32; 3]>, u32), ModelError> {
    let bad = |what: String| ModelError::Invalid {
        file: "prompt".into(),
        what,
    };
    let mut positions = Vec::with_capacity(ids.len());
    let mut next: u64 = 0;
    let mut images = grids.iter();
    let mut i = 0;
    let to_u32 = |p: u64| u32::try_from(p).map_err(|_| bad(format!("position {p} overflows")));
    while i < ids.len() {
        if ids[i] != image_token_id {
            let p = to_u32(next)?;
            positions.push([p, p, p]);
            next += 1;
            i += 1;
            continue;
        }
        let &[frames, rows, cols] = images.next().ok_or_else(|| {
            bad(format!(
                "more image tokens than the {} image grids",
                grids.len()
            ))
        })?;
        let count = frames
            .checked_mul(rows)
            .and_then(|x| x.checked_mul(cols))
            .ok_or_else(|| bad("image grid overflows".into()))?;
        if count == 0
            || ids.len() - i < count
            || ids[i..i + count].iter().any(|&t| t != image_token_id)
        {
            return Err(bad(format!(
                "an image of grid {frames}×{rows}×{cols} needs {count} consecutive image tokens at token {i}"
            )));
        }
        for f in 0..frames {
            for r in 0..rows {
                for c in 0..cols {
                    positions.push([
                        to_u32(next + f as u64)?,
                        to_u32(next + r as u64)?,
                        to_u32(next + c as u64)?,
                    ]);
                }
            }
        }
        next += frames.max(rows).max(cols) as u64;
        i += count;
    }
    if images.next().is_some() {
        return Err(bad(format!(
            "{} image grids but fewer images in the prompt",
            grids.len()
        )));
    }
    Ok((positions, to_u32(next)?))
}
