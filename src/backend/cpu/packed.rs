//! Q4_0, Q8_0, Q4_K and Q6_K weights repacked eight rows at a time ([`PackedWeight`]), the layout
//! of the x86 kernels `dot::packed_kernel` hands out: for each group of 8 rows and each block, the
//! 8 rows' f16 scales side by side (Q4_K: its d, then its dmin), then the rest of the 8 rows'
//! blocks interleaved 4 bytes at a time. One 32-byte load then holds 4 bytes of every row, so a
//! single broadcast activation word feeds 8 rows' dot products, and the 8 scales convert and
//! multiply as one vector, once per block: fewer instructions per weight than the row-major
//! kernels, which run from L3 at only 14 GB/s (docs/BENCHMARKS.md: the packed kernels take
//! 2.0–3.7× less time). A packed copy holds exactly the file's bytes, only moved. The idea is
//! ggml's CPU_REPACK; this layout and its kernels are ours.
//!
//! This module owns the layout and the packing; it must not compute products (`matmul` and
//! `dot` do). A copy made at load lives in anonymous memory; the file's pages it was made from
//! are handed back to the kernel. [`pack_rows`] also packs a few rows at a time into a caller's
//! buffer (`matmul::matmul_repacking`, for weights that stay views of the file).

use std::ops::Range;

use crate::backend::cpu::prefetch::prefetch_ahead;
use crate::dtype::TensorType;
use crate::tensor::TensorView;

/// Weight rows per packed group.
pub const PACK_ROWS: usize = 8;

/// The types with a packed layout: blocks of f16 scales and a whole number of 4-byte words (Q4_0:
/// d, 16 bytes of nibbles; Q8_0: d, 32 signed bytes; Q4_K: d, dmin, 12 bytes of six-bit scales
/// and mins, 128 bytes of nibbles; Q6_K: 128 bytes of low nibbles, 64 of high bit pairs, 16 i8
/// scales, then d).
pub fn is_packable_type(ty: TensorType) -> bool {
    block_fields(ty).is_some()
}

/// Where a block of `ty` keeps its f16 scales (byte offsets) and its 4-byte words (byte ranges,
/// in the order they are packed), for the packable types.
// Most types have one range of words: a one-element list of ranges is what is meant.
#[allow(clippy::single_range_in_vec_init)]
fn block_fields(ty: TensorType) -> Option<(&'static [usize], &'static [Range<usize>])> {
    match ty {
        TensorType::Q4_0 => Some((&[0], &[2..18])),
        TensorType::Q8_0 => Some((&[0], &[2..34])),
        TensorType::Q4_K => Some((&[0, 2], &[4..144])),
        // In the order the kernel reads them, so that it streams through each block: the scales,
        // then per 32 weights of each half (n, h) the low nibbles of weights 128n + 16h.. and
        // 128n + 32 + 16h.., then their high bits.
        TensorType::Q6_K => Some((
            &[208],
            &[
                192..208,
                0..16,
                32..48,
                128..144,
                16..32,
                48..64,
                144..160,
                64..80,
                96..112,
                160..176,
                80..96,
                112..128,
                176..192,
            ],
        )),
        _ => None,
    }
}

/// Bytes of one packed block of 8 rows of `ty` (8 of its blocks: 8 scales, then the quants).
pub fn packed_block_bytes(ty: TensorType) -> usize {
    PACK_ROWS * ty.block_bytes()
}

/// A packable matrix whose row count is a multiple of [`PACK_ROWS`], repacked: row group `g`,
/// block `b` starts at byte `(g·nb + b)·packed_block_bytes(ty)`; there, with h f16 scales per
/// block (1, or 2 for Q4_K), bytes `16f + 2r..16f + 2r + 2` are row r's scale f (`f < h`), and
/// bytes `16h + 32v + 4r + i` are byte `4v + i` of the words of row r's block (`i < 4`).
/// - Q4_0 (`v < 4`): the low nibbles of vector v are weights `4v..4v+4`, the high ones weights
///   `16 + 4v..16 + 4v + 4`.
/// - Q8_0 (`v < 8`): vector v holds weights `4v..4v+4`.
/// - Q4_K (`v < 35`): vectors 0..3 hold the 12 bytes of 6-bit scales and mins; vector 3 + 8j + u
///   holds weights `64j + 4u..+4` (low nibbles) and `64j + 32 + 4u..+4` (high nibbles).
/// - Q6_K (`v < 52`): vectors 0..4 hold the 16 i8 scales; then for each 32 weights (n, h) of
///   each half n, 12 vectors at `4 + 12(2n + h)`: 4 of ql bytes `64n + 16h..`, 4 of ql bytes
///   `64n + 32 + 16h..`, 4 of qh bytes `32n + 16h..` (`block_fields` has the byte ranges).
pub struct PackedWeight {
    bytes: memmap2::MmapMut,
    ty: TensorType,
    rows: usize,
    blocks_per_row: usize,
}

impl PackedWeight {
    /// The repacked copy of `view`, or `None` when it is not a packable matrix of a whole number
    /// of row groups, or the copy does not fit in memory (the caller then computes on the file's
    /// layout).
    pub fn pack(view: &TensorView<'_>) -> Option<PackedWeight> {
        let blocks_per_row = packable_blocks_per_row(view)?;
        let src = view.bytes();
        let mut bytes = memmap2::MmapMut::map_anon(src.len()).ok()?;
        #[cfg(target_os = "linux")]
        {
            // Huge pages where the kernel grants them (a hint: failure changes nothing).
            let _ = bytes.advise(memmap2::Advice::HugePage);
        }
        pack_rows(view.ty(), src, blocks_per_row, &mut bytes);
        release_pages(src);
        Some(PackedWeight {
            ty: view.ty(),
            rows: view.n_rows(),
            bytes,
            blocks_per_row,
        })
    }

    /// The packed bytes of `count` row groups from `first`.
    pub fn groups(&self, first: usize, count: usize) -> &[u8] {
        let len = self.group_bytes();
        &self.bytes[first * len..][..count * len]
    }

    /// Bytes of one row group.
    pub fn group_bytes(&self) -> usize {
        self.blocks_per_row * packed_block_bytes(self.ty)
    }

    pub fn ty(&self) -> TensorType {
        self.ty
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Weights per row.
    pub fn row_len(&self) -> usize {
        self.blocks_per_row * self.ty.block_size()
    }

    /// Bytes the copy holds (as many as the file's tensor).
    pub fn held_bytes(&self) -> usize {
        self.bytes.len()
    }
}

/// Blocks per row of `view` when it is a packable matrix of whole row groups (what [`pack_rows`]
/// takes), else `None`.
pub fn packable_blocks_per_row(view: &TensorView<'_>) -> Option<usize> {
    if !is_packable_type(view.ty()) || view.dims().iter().skip(2).any(|&d| d != 1) {
        return None;
    }
    let (k, rows) = (view.row_len(), view.n_rows());
    let block = view.ty().block_size();
    if rows == 0 || rows % PACK_ROWS != 0 || k % block != 0 {
        return None;
    }
    let blocks_per_row = k / block;
    (view.bytes().len() == rows * blocks_per_row * view.ty().block_bytes())
        .then_some(blocks_per_row)
}

/// Packs whole row groups of `ty` rows (`src`, `blocks_per_row` blocks each, in the file's
/// layout) into `out`, in the layout of [`PackedWeight`].
///
/// # Panics
/// When `ty` has no packed layout, `src` is not whole row groups or `out` is not as long as `src`
/// (callers size both).
pub fn pack_rows(ty: TensorType, src: &[u8], blocks_per_row: usize, out: &mut [u8]) {
    let Some((scales, words)) = block_fields(ty) else {
        panic!("pack_rows: {ty} has no packed layout");
    };
    let block_bytes = ty.block_bytes();
    let packed_block = packed_block_bytes(ty);
    let row_bytes = blocks_per_row * block_bytes;
    let group_bytes = PACK_ROWS * row_bytes;
    assert!(
        group_bytes > 0 && src.len().is_multiple_of(group_bytes) && out.len() == src.len(),
        "pack_rows: {} source bytes are not whole row groups of {group_bytes}, or the output \
         ({} bytes) differs",
        src.len(),
        out.len()
    );

    // Once per cache line of source (4 Q4_0 blocks, 2 Q8_0 blocks, every K-quant block).
    let prefetch_every = (72 / block_bytes).max(1);
    for (rows_of_group, group) in src
        .chunks_exact(group_bytes)
        .zip(out.chunks_exact_mut(group_bytes))
    {
        // Row by row, so that the source (the file's pages, usually not cached) is read as one
        // sequential stream, which the hardware prefetchers follow; the scattered writes land
        // in the caller's buffer, which is small or about to be written anyway.
        for (r, row) in rows_of_group.chunks_exact(row_bytes).enumerate() {
            for (b, (block, out)) in row
                .chunks_exact(block_bytes)
                .zip(group.chunks_exact_mut(packed_block))
                .enumerate()
            {
                if b % prefetch_every == 0 {
                    prefetch_ahead(block.as_ptr());
                }
                for (f, &at) in scales.iter().enumerate() {
                    out[16 * f + 2 * r..][..2].copy_from_slice(&block[at..][..2]);
                }
                let packed_words = &mut out[16 * scales.len()..];
                let block_words = words
                    .iter()
                    .flat_map(|range| block[range.clone()].chunks_exact(4));
                for (v, word) in block_words.enumerate() {
                    packed_words[32 * v + 4 * r..][..4].copy_from_slice(word);
                }
            }
        }
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

    fn block_rows(ty: TensorType, rows: usize, blocks: usize) -> Vec<u8> {
        (0..rows * blocks * ty.block_bytes())
            .map(|i| (i * 7 + i / 5) as u8)
            .collect()
    }

    #[test]
    fn every_byte_lands_where_the_layout_says() {
        let (rows, blocks) = (16, 3);
        for ty in [
            TensorType::Q4_0,
            TensorType::Q8_0,
            TensorType::Q4_K,
            TensorType::Q6_K,
        ] {
            let (scales, words) = block_fields(ty).unwrap();
            // Byte j of the packed words is this byte of the block.
            let word_bytes: Vec<usize> = words.iter().flat_map(|r| r.clone()).collect();
            let mut covered = word_bytes.clone();
            covered.extend(scales.iter().flat_map(|&at| [at, at + 1]));
            covered.sort_unstable();
            assert_eq!(covered, (0..ty.block_bytes()).collect::<Vec<_>>(), "{ty}");
            let (block_bytes, packed_block) = (ty.block_bytes(), packed_block_bytes(ty));
            let src = block_rows(ty, rows, blocks);
            let dims = [(blocks * ty.block_size()) as u64, rows as u64];
            let view = TensorView::new("w", ty, &dims, &src).unwrap();
            let packed = PackedWeight::pack(&view).unwrap();
            assert_eq!(packed.held_bytes(), src.len());
            assert_eq!(
                (packed.rows(), packed.row_len()),
                (rows, blocks * ty.block_size())
            );
            assert_eq!(packed.group_bytes(), blocks * packed_block);
            for row in 0..rows {
                let (g, r) = (row / PACK_ROWS, row % PACK_ROWS);
                for b in 0..blocks {
                    let block = &src[(row * blocks + b) * block_bytes..][..block_bytes];
                    let out = &packed.groups(g, 1)[b * packed_block..][..packed_block];
                    for (f, &at) in scales.iter().enumerate() {
                        assert_eq!(&out[16 * f + 2 * r..][..2], &block[at..][..2]);
                    }
                    for j in 0..block_bytes - 2 * scales.len() {
                        let (v, i) = (j / 4, j % 4);
                        assert_eq!(
                            out[16 * scales.len() + 32 * v + 4 * r + i],
                            block[word_bytes[j]],
                            "{ty} row {row} b {b} j {j}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn only_whole_row_groups_of_packable_types_are_packed() {
        for ty in [
            TensorType::Q4_0,
            TensorType::Q8_0,
            TensorType::Q4_K,
            TensorType::Q6_K,
        ] {
            let src = block_rows(ty, 12, 1);
            let dims = [ty.block_size() as u64, 12];
            let view = TensorView::new("w", ty, &dims, &src).unwrap();
            assert!(PackedWeight::pack(&view).is_none(), "{ty}");
        }
        let src = vec![0u8; 8 * 20];
        let view = TensorView::new("w", TensorType::Q4_1, &[32, 8], &src).unwrap();
        assert!(PackedWeight::pack(&view).is_none());
    }
}
