//! Q4_0 weights repacked eight rows at a time ([`PackedQ4_0`]), the layout of the x86 kernels
//! `dot::packed_q4_0_kernel` runs: for each group of 8 rows and each block, the 8 row scales side
//! by side, then the 8 rows' nibbles interleaved 4 bytes at a time. One 32-byte load then holds 4
//! weights of every row, so a single broadcast activation word feeds 8 rows' dot products, and
//! the 8 scales convert and multiply as one vector, once per block: fewer instructions per weight
//! than the row-major kernels, which run from L3 at only 14 GB/s (docs/BENCHMARKS.md: the packed
//! kernels take 2.0–3.7× less time). The idea is ggml's CPU_REPACK; this layout and its kernels
//! are ours.
//!
//! This module owns the layout and the packing; it must not compute products (`matmul` and
//! `dot` do). The copy lives in anonymous memory; the file's pages it was made from are handed
//! back to the kernel.

use crate::dtype::TensorType;
use crate::tensor::TensorView;

/// Weight rows per packed group.
pub const PACK_ROWS: usize = 8;

/// Bytes of a Q4_0 block: an f16 scale and 16 bytes of nibbles.
const Q4_0_BLOCK: usize = 18;

/// Bytes of one packed block of 8 rows: 8 scales, then 4 × 32 bytes of interleaved nibbles.
pub const PACKED_BLOCK: usize = PACK_ROWS * Q4_0_BLOCK;

/// A Q4_0 matrix whose row count is a multiple of [`PACK_ROWS`], repacked: row group `g`, block
/// `b` starts at byte `(g·nb + b)·PACKED_BLOCK`; there, bytes `2r..2r+2` are row r's scale and
/// bytes `16 + 32v + 4r + i` are byte `4v + i` of row r's nibbles (`v < 4`, `i < 4`), so the low
/// nibbles of vector v are weights `4v..4v+4` of each row and the high nibbles weights
/// `16 + 4v..16 + 4v + 4`.
pub struct PackedQ4_0 {
    bytes: memmap2::MmapMut,
    rows: usize,
    blocks_per_row: usize,
}

impl PackedQ4_0 {
    /// The repacked copy of `view`, or `None` when it is not a Q4_0 matrix of a whole number of
    /// row groups, or the copy does not fit in memory (the caller then computes on the file's
    /// layout).
    pub fn pack(view: &TensorView<'_>) -> Option<PackedQ4_0> {
        if view.ty() != TensorType::Q4_0 || view.dims().iter().skip(2).any(|&d| d != 1) {
            return None;
        }
        let (k, rows) = (view.row_len(), view.n_rows());
        let src = view.bytes();
        if rows == 0 || rows % PACK_ROWS != 0 || k % 32 != 0 {
            return None;
        }
        let blocks_per_row = k / 32;
        let row_bytes = blocks_per_row * Q4_0_BLOCK;
        if src.len() != rows * row_bytes {
            return None;
        }
        let mut bytes = memmap2::MmapMut::map_anon(src.len()).ok()?;
        #[cfg(target_os = "linux")]
        {
            // Huge pages where the kernel grants them (a hint: failure changes nothing).
            let _ = bytes.advise(memmap2::Advice::HugePage);
        }
        for (g, group) in bytes
            .chunks_exact_mut(blocks_per_row * PACKED_BLOCK)
            .enumerate()
        {
            let rows_of_group = &src[g * PACK_ROWS * row_bytes..][..PACK_ROWS * row_bytes];
            for (b, out) in group.chunks_exact_mut(PACKED_BLOCK).enumerate() {
                for r in 0..PACK_ROWS {
                    let block = &rows_of_group[r * row_bytes + b * Q4_0_BLOCK..][..Q4_0_BLOCK];
                    out[2 * r..2 * r + 2].copy_from_slice(&block[..2]);
                    for v in 0..4 {
                        out[16 + 32 * v + 4 * r..][..4].copy_from_slice(&block[2 + 4 * v..][..4]);
                    }
                }
            }
        }
        release_pages(src);
        Some(PackedQ4_0 {
            bytes,
            rows,
            blocks_per_row,
        })
    }

    /// The packed bytes of row group `g` (all its blocks).
    pub fn group(&self, g: usize) -> &[u8] {
        let len = self.blocks_per_row * PACKED_BLOCK;
        &self.bytes[g * len..][..len]
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Weights per row.
    pub fn row_len(&self) -> usize {
        self.blocks_per_row * 32
    }

    /// Bytes the copy holds (as many as the file's tensor).
    pub fn held_bytes(&self) -> usize {
        self.bytes.len()
    }
}

/// Asks the kernel to reclaim the whole pages of `bytes` now that the copy is made, so that the
/// file's pages and the copy are not both resident. `MADV_PAGEOUT` keeps contents (file pages are
/// read again if touched, anonymous ones go to swap or stay), so this is safe on any memory the
/// view may come from; older kernels refuse it, which changes nothing.
fn release_pages(bytes: &[u8]) {
    #[cfg(target_os = "linux")]
    {
        // Where pages are larger (some aarch64 kernels), the kernel refuses 4 KiB alignment and
        // both copies stay resident: correct, only larger.
        let page = 4096;
        let start = (bytes.as_ptr() as usize).next_multiple_of(page);
        let end = (bytes.as_ptr() as usize + bytes.len()) / page * page;
        if end > start {
            // SAFETY: the range lies inside `bytes` (whole pages only), and MADV_PAGEOUT never
            // changes what the memory reads as; its result is only a hint, so it is ignored.
            let _ = unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT)
            };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q4_0_rows(rows: usize, blocks: usize) -> Vec<u8> {
        (0..rows * blocks * Q4_0_BLOCK)
            .map(|i| (i * 7 + i / 5) as u8)
            .collect()
    }

    #[test]
    fn every_byte_lands_where_the_layout_says() {
        let (rows, blocks) = (16, 3);
        let src = q4_0_rows(rows, blocks);
        let dims = [blocks as u64 * 32, rows as u64];
        let view = TensorView::new("w", TensorType::Q4_0, &dims, &src).unwrap();
        let packed = PackedQ4_0::pack(&view).unwrap();
        assert_eq!(packed.held_bytes(), src.len());
        assert_eq!((packed.rows(), packed.row_len()), (rows, blocks * 32));
        for row in 0..rows {
            let (g, r) = (row / PACK_ROWS, row % PACK_ROWS);
            for b in 0..blocks {
                let block = &src[(row * blocks + b) * Q4_0_BLOCK..][..Q4_0_BLOCK];
                let out = &packed.group(g)[b * PACKED_BLOCK..][..PACKED_BLOCK];
                assert_eq!(&out[2 * r..2 * r + 2], &block[..2]);
                for j in 0..16 {
                    let (v, i) = (j / 4, j % 4);
                    assert_eq!(
                        out[16 + 32 * v + 4 * r + i],
                        block[2 + j],
                        "row {row} b {b} j {j}"
                    );
                }
            }
        }
    }

    #[test]
    fn only_whole_row_groups_of_q4_0_are_packed() {
        let src = q4_0_rows(12, 1);
        let view = TensorView::new("w", TensorType::Q4_0, &[32, 12], &src).unwrap();
        assert!(PackedQ4_0::pack(&view).is_none());
        let src = vec![0u8; 8 * 34];
        let view = TensorView::new("w", TensorType::Q8_0, &[32, 8], &src).unwrap();
        assert!(PackedQ4_0::pack(&view).is_none());
    }
}
