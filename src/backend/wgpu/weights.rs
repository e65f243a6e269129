//! Weights on the device: GGUF blocks repacked into layouts whose every field starts on a 4-byte
//! word (WGSL reads storage as 32-bit words), split into parts no larger than one storage
//! binding, and placed either in their own buffers (shared weights) or at an offset of an expert
//! group's slot.
//!
//! Repacked layouts (what `kernels/wgsl/weights/*.wgsl` decode), for a part of `rows` rows of
//! `nb` blocks:
//! - F32, F16, BF16, Q4_1, Q5_1, Q4_K, Q5_K: the bytes as stored (blocks of 4-byte multiples);
//! - Q8_0, Q4_0, Q5_0: each block's body (its bytes after the f16 scale) for all blocks, then the
//!   f16 scales packed two per word;
//! - Q6_K: each block's first 208 bytes (ql, qh, scales), then the trailing f16 scales packed.
//!
//! Sizes are exact: nothing is dequantized or widened, so a group's slot is its file range plus
//! alignment.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::buffer::RawBuffer;
use super::kernels::WeightFormat;
use crate::backend::BackendError;
use crate::dtype::TensorType;
use crate::tensor::TensorView;

/// Where parts start inside a buffer: wgpu's largest storage-offset alignment.
pub const PART_ALIGNMENT: u64 = 256;

/// How one format's blocks are laid out on the device.
#[derive(Clone, Debug)]
struct Layout {
    /// Weights per block.
    block: usize,
    /// Bytes per block in the file.
    block_bytes: usize,
    /// Bytes of the block kept in the body, and where they start.
    body: std::ops::Range<usize>,
    /// Where the block's f16 scale is, when it moves to the scale region.
    scale_at: Option<usize>,
}

fn layout(format: WeightFormat) -> Layout {
    let ty = tensor_type(format);
    let (block, block_bytes) = (ty.block_size(), ty.block_bytes());
    let whole = |_: ()| Layout {
        block,
        block_bytes,
        body: 0..block_bytes,
        scale_at: None,
    };
    match format {
        WeightFormat::Q8_0 | WeightFormat::Q4_0 | WeightFormat::Q5_0 => Layout {
            block,
            block_bytes,
            body: 2..block_bytes,
            scale_at: Some(0),
        },
        WeightFormat::Q6K => Layout {
            block,
            block_bytes,
            body: 0..208,
            scale_at: Some(208),
        },
        _ => whole(()),
    }
}

pub fn tensor_type(format: WeightFormat) -> TensorType {
    match format {
        WeightFormat::F32 => TensorType::F32,
        WeightFormat::F16 => TensorType::F16,
        WeightFormat::BF16 => TensorType::BF16,
        WeightFormat::Q8_0 => TensorType::Q8_0,
        WeightFormat::Q4_0 => TensorType::Q4_0,
        WeightFormat::Q5_0 => TensorType::Q5_0,
        WeightFormat::Q4_1 => TensorType::Q4_1,
        WeightFormat::Q5_1 => TensorType::Q5_1,
        WeightFormat::Q4K => TensorType::Q4_K,
        WeightFormat::Q5K => TensorType::Q5_K,
        WeightFormat::Q6K => TensorType::Q6_K,
    }
}

/// Bytes and scale-region offset (in words) of `rows` repacked rows of `k` weights.
pub fn part_size(format: WeightFormat, rows: usize, k: usize) -> Option<(u64, u32)> {
    let l = layout(format);
    let blocks = (rows as u64).checked_mul((k / l.block) as u64)?;
    let body = blocks.checked_mul(l.body.len() as u64)?;
    let scales = if l.scale_at.is_some() {
        blocks.div_ceil(2) * 4
    } else {
        0
    };
    let bytes = body.checked_add(scales)?.div_ceil(4) * 4;
    let scale_words = u32::try_from(body.div_ceil(4)).ok()?;
    Some((bytes, scale_words))
}

/// Writes the repacked bytes of `src` (whole rows as stored in the file) into `dst` (exactly
/// `part_size` bytes).
pub fn repack(format: WeightFormat, src: &[u8], dst: &mut [u8]) {
    let l = layout(format);
    dst.fill(0);
    match l.scale_at {
        None => dst[..src.len()].copy_from_slice(src),
        Some(scale_at) => {
            let blocks = src.len() / l.block_bytes;
            let body_len = l.body.len();
            let (body, scales) = dst.split_at_mut(blocks * body_len);
            for (b, block) in src.chunks_exact(l.block_bytes).enumerate() {
                body[b * body_len..(b + 1) * body_len].copy_from_slice(&block[l.body.clone()]);
                let at = (body_len * blocks).div_ceil(4) * 4 - body_len * blocks + 2 * b;
                scales[at..at + 2].copy_from_slice(&block[scale_at..scale_at + 2]);
            }
        }
    }
}

/// Rows `row0 .. row0 + rows` of a weight, repacked into `bytes` bytes.
#[derive(Debug)]
pub struct Part {
    pub row0: usize,
    pub rows: usize,
    pub bytes: u64,
    pub scale_words: u32,
    /// Byte offset in its group's slot (set when the group is staged).
    pub slot_offset: AtomicU64,
}

/// Where a weight's parts live.
#[derive(Debug)]
pub enum Home {
    /// One buffer per part, resident for the weight's life.
    Shared(Vec<Arc<RawBuffer>>),
    /// In expert group `k`'s slot while the group is resident.
    Group(usize),
}

/// A matrix `[k, rows]` of any computable type on the device.
#[derive(Debug)]
pub struct WgpuWeight<'a> {
    pub view: TensorView<'a>,
    pub format: WeightFormat,
    pub rows: usize,
    pub k: usize,
    pub parts: Vec<Part>,
    pub home: Home,
}

/// Splits `rows` rows of `k` weights into parts of at most `limit` bytes.
pub fn plan_parts(
    name: &str,
    format: WeightFormat,
    rows: usize,
    k: usize,
    limit: u64,
) -> Result<Vec<Part>, BackendError> {
    let too_large = |bytes: u64| BackendError::TooLarge {
        what: format!("weight '{name}'"),
        bytes,
        limit,
        limit_name: "storage binding",
    };
    let (row_bytes, _) = part_size(format, 1, k).ok_or_else(|| too_large(u64::MAX))?;
    if row_bytes > limit {
        return Err(too_large(row_bytes));
    }
    // Scales round up to whole words per part: leave room for them.
    let per_part = (((limit - 4) / row_bytes.max(1)) as usize).max(1);
    let mut parts = Vec::new();
    let mut row0 = 0;
    while row0 < rows {
        let n = per_part.min(rows - row0);
        let (bytes, scale_words) = part_size(format, n, k).ok_or_else(|| too_large(u64::MAX))?;
        parts.push(Part {
            row0,
            rows: n,
            bytes,
            scale_words,
            slot_offset: AtomicU64::new(0),
        });
        row0 += n;
    }
    Ok(parts)
}

impl WgpuWeight<'_> {
    /// The file bytes of a part's rows.
    pub fn part_source(&self, part: &Part) -> &[u8] {
        let row = self.view.row_bytes();
        &self.view.bytes()[part.row0 * row..(part.row0 + part.rows) * row]
    }

    /// Lays the parts out one after another from `start` (aligned), recording their offsets;
    /// returns the end.
    pub fn place_in_slot(&self, start: u64) -> u64 {
        let mut at = start;
        for part in &self.parts {
            at = at.div_ceil(PART_ALIGNMENT) * PART_ALIGNMENT;
            part.slot_offset.store(at, Ordering::Relaxed);
            at += part.bytes;
        }
        at
    }

    /// Bytes the parts take in a slot from `start`, without recording anything.
    pub fn slot_end(&self, start: u64) -> u64 {
        self.parts.iter().fold(start, |at, part| {
            at.div_ceil(PART_ALIGNMENT) * PART_ALIGNMENT + part.bytes
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_moves_scales_behind_the_quants() {
        // Two blocks: scale bytes (1, 2) and (3, 4), quants 16 × 10 and 16 × 20.
        let mut src = Vec::new();
        for (d, q) in [([1u8, 2], 10u8), ([3, 4], 20)] {
            src.extend_from_slice(&d);
            src.extend(std::iter::repeat_n(q, 16));
        }
        let (bytes, scale_words) = part_size(WeightFormat::Q4_0, 1, 64).unwrap();
        assert_eq!((bytes, scale_words), (36, 8));
        let mut dst = vec![0u8; bytes as usize];
        repack(WeightFormat::Q4_0, &src, &mut dst);
        assert!(dst[..16].iter().all(|&b| b == 10));
        assert!(dst[16..32].iter().all(|&b| b == 20));
        assert_eq!(&dst[32..36], &[1, 2, 3, 4]);
    }

    #[test]
    fn q6_k_keeps_its_body_and_packs_d() {
        let mut src = vec![7u8; 210];
        src[208] = 0xAB;
        src[209] = 0xCD;
        let (bytes, scale_words) = part_size(WeightFormat::Q6K, 1, 256).unwrap();
        assert_eq!((bytes, scale_words), (212, 52));
        let mut dst = vec![0u8; bytes as usize];
        repack(WeightFormat::Q6K, &src, &mut dst);
        assert!(dst[..208].iter().all(|&b| b == 7));
        assert_eq!(&dst[208..212], &[0xAB, 0xCD, 0, 0]);
    }

    #[test]
    fn parts_respect_the_binding_limit() {
        let parts = plan_parts("w", WeightFormat::F32, 10, 64, 1024).unwrap();
        assert!(parts.iter().all(|p| p.bytes <= 1024));
        assert_eq!(parts.iter().map(|p| p.rows).sum::<usize>(), 10);
        assert!(plan_parts("w", WeightFormat::F32, 1, 1024, 1024).is_err());
    }
}
