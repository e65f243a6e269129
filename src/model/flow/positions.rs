//! Rotary positions of the replica: image tokens placed after the prompt (switch `img_pos`) and the
//! prompt's own M-RoPE positions (0..P with t = h = w for text; an image in the prompt sits on its
//! grid, `model::positions`), as M-RoPE tables.
//!
//! This module owns the image-token position rule; the rotation itself is `backend::cpu::ops::rope`.

use crate::backend::cpu::ops::{inv_freqs, RopeTable};
use crate::model::ModelError;

use super::config::{FlowConfig, ImagePositions};

/// `(t, h, w)` of each image token (row-major over the `grid × grid` patches), starting at `start`,
/// the first position after the prompt.
pub fn image_positions(grid: usize, start: usize, rule: ImagePositions) -> Vec<[u32; 3]> {
    (0..grid * grid)
        .map(|i| {
            let (row, col) = (i / grid, i % grid);
            let p = |x: usize| (start + x) as u32;
            match rule {
                ImagePositions::Mrope2d => [p(0), p(row), p(col)],
                ImagePositions::Rope1d => [p(i); 3],
            }
        })
        .collect()
}

/// The M-RoPE table of the image tokens placed after a prompt whose next free position is `start`
/// (its largest position + 1: the prompt length for text, less when the prompt holds an image).
pub fn image_rope(config: &FlowConfig, start: usize) -> Result<RopeTable, ModelError> {
    let positions = image_positions(config.grid(), start, config.img_pos);
    Ok(RopeTable::mrope(
        &positions,
        &replica_inv_freqs(config)?,
        config.rope_sections,
    )?)
}

/// The M-RoPE table of the prompt's tokens at their `(t, h, w)` positions.
pub fn prompt_rope(config: &FlowConfig, positions: &[[u32; 3]]) -> Result<RopeTable, ModelError> {
    Ok(RopeTable::mrope(
        positions,
        &replica_inv_freqs(config)?,
        config.rope_sections,
    )?)
}

fn replica_inv_freqs(config: &FlowConfig) -> Result<Vec<f32>, ModelError> {
    Ok(inv_freqs(config.head_dim, config.rope_theta)?)
}
