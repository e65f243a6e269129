//! The f32 matrix product behind every dense convolution: `C = bias + A·B` per group, with `A`
//! `[m, k]` row-major (a conv weight), `B` `[k, n]` supplied panel by panel by a [`PanelSource`]
//! (a plain matrix, or the implicit im2col of `conv`), `C` `[m, n]` row-major (a CHW output).
//!
//! Goto/BLIS structure: `A` is packed into `mr`-row micro-panels per `kc`-deep block, once per
//! call by [`grouped_gemm`] or once for all calls as a [`PackedLhs`] (a convolution weight packed
//! at load, [`grouped_gemm_packed`]); each parallel task owns a tile of `C` (rows × columns of one group), packs its
//! `kc × nc` block of `B` into `nr`-column micro-panels (in a per-thread scratch slot) and runs the
//! register-tile micro-kernel over it: the `B` micro-panel (`kc·nr` floats) stays in L1 while
//! the `mc × kc` block of packed `A` streams from L2.
//!
//! Micro-kernels ([`Arithmetic::F32`]): AVX2+FMA intrinsics, 6×16 (12 ymm accumulators), used on
//! AVX-512 CPUs too (the AMD EPYC this was tuned on runs 512-bit FMAs at the same per-cycle
//! rate); a portable 8×12 kernel in plain Rust, which is the scalar reference on x86-64 and what
//! LLVM vectorises to NEON on aarch64 (NEON is baseline there, so the loop compiles to 4-wide
//! FMAs with 24 vector accumulators).
//!
//! [`Arithmetic::Bf16`] (BF16 weights, on CPUs with AVX-512 BF16): both operands are rounded to
//! bf16 (nearest even) as they are packed, two depth steps per 32-bit word, and an 8×48 kernel
//! (24 zmm accumulators) runs `vdpbf16ps`, two products per lane per instruction, twice the f32
//! FMA's work. Products of bf16 values are exact in f32; sums are f32. A BF16 weight loses
//! nothing in the rounding; the activations lose their low 16 bits, as in PyTorch's BF16 path.
//!
//! This module owns the product only: no convolution geometry beyond the `PanelSource` it is
//! given, no activation fused in.

use std::sync::Mutex;

use rayon::prelude::*;

use super::error::{check_len, checked_product, param, OpError};
use super::shared_mut::SharedMut;
use crate::backend::cpu::isa::Isa;
use crate::dtype::TensorType;

/// Supplies blocks of the `[k, n]` right-hand matrix of each group, already in micro-panel
/// layout.
pub trait PanelSource: Sync {
    /// Writes rows `k0..k0 + kc` and columns `n0..n0 + nc` of group `group`'s `B` as
    /// `ceil(nc / nr)` panels: value (row `k0 + p`, column `n0 + q·nr + j`) at
    /// `dst[q·kc·nr + p·nr + j]`; columns at or past the matrix's `n` must be written as 0.
    /// `dst` holds exactly `ceil(nc / nr)·kc·nr` values.
    #[allow(clippy::too_many_arguments)]
    fn pack(
        &self,
        group: usize,
        k0: usize,
        kc: usize,
        n0: usize,
        nc: usize,
        nr: usize,
        dst: &mut [f32],
    );
}

/// A plain row-major `[k, n]` matrix per group (group `g` at offset `g·k·n`), e.g. the CHW input
/// of a 1×1 convolution.
pub struct MatrixPanels<'a> {
    pub data: &'a [f32],
    pub k: usize,
    pub n: usize,
}

impl PanelSource for MatrixPanels<'_> {
    fn pack(
        &self,
        group: usize,
        k0: usize,
        kc: usize,
        n0: usize,
        nc: usize,
        nr: usize,
        dst: &mut [f32],
    ) {
        let matrix = &self.data[group * self.k * self.n..][..self.k * self.n];
        for p in 0..kc {
            let row = &matrix[(k0 + p) * self.n..][..self.n];
            write_row(dst, kc, nr, p, nc, n0, self.n, row);
        }
    }
}

/// Writes row `p` of a packed block from `row` (a full matrix row, `n` values): block columns
/// `0..nc` are matrix columns `n0..n0 + nc`, zero past `n`.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn write_row(
    dst: &mut [f32],
    kc: usize,
    nr: usize,
    p: usize,
    nc: usize,
    n0: usize,
    n: usize,
    row: &[f32],
) {
    let valid = n.saturating_sub(n0).min(nc);
    put_run(dst, kc, nr, p, 0, &row[n0..n0 + valid]);
    put_zeros(dst, kc, nr, p, valid, nc.div_ceil(nr) * nr - valid);
}

/// Copies `values` into row `p` of a packed block starting at block column `col`, splitting the
/// run where it crosses micro-panels.
#[inline]
pub(crate) fn put_run(dst: &mut [f32], kc: usize, nr: usize, p: usize, col: usize, values: &[f32]) {
    let mut col = col;
    let mut rest = values;
    while !rest.is_empty() {
        let (q, j) = (col / nr, col % nr);
        let len = (nr - j).min(rest.len());
        let to = &mut dst[q * kc * nr + p * nr + j..][..len];
        // Whole micro-panel rows are the common case: copied as fixed-size arrays they compile to
        // a few vector moves instead of a `memmove` call per 12, 16 or 48 values.
        if let Ok(to) = <&mut [f32; 48]>::try_from(&mut *to) {
            to.copy_from_slice(&rest[..48]);
        } else if let Ok(to) = <&mut [f32; 16]>::try_from(&mut *to) {
            to.copy_from_slice(&rest[..16]);
        } else if let Ok(to) = <&mut [f32; 12]>::try_from(&mut *to) {
            to.copy_from_slice(&rest[..12]);
        } else {
            to.copy_from_slice(&rest[..len]);
        }
        rest = &rest[len..];
        col += len;
    }
}

/// Writes `count` zeros into row `p` of a packed block from block column `col` on.
#[inline]
pub(crate) fn put_zeros(dst: &mut [f32], kc: usize, nr: usize, p: usize, col: usize, count: usize) {
    let (mut col, end) = (col, col + count);
    while col < end {
        let (q, j) = (col / nr, col % nr);
        let len = (nr - j).min(end - col);
        dst[q * kc * nr + p * nr + j..][..len].fill(0.0);
        col += len;
    }
}

/// What a micro-kernel multiplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arithmetic {
    /// f32 products and sums.
    F32,
    /// Operands rounded to bf16 as they are packed (two depth steps per 32-bit word), f32 sums.
    Bf16,
}

/// A register-tile kernel and the blocking that feeds it.
#[derive(Clone, Copy)]
pub struct MicroKernel {
    isa: Isa,
    arithmetic: Arithmetic,
    /// Rows of `C` per tile (output channels).
    mr: usize,
    /// Columns of `C` per tile (pixels).
    nr: usize,
    /// Depth of one packed block: the `B` micro-panel `kc·nr` fits L1 next to an `A` one.
    kc: usize,
    /// `tile[i·nr + j] = Σ_p a[p·mr + i]·b[p·nr + j]` over its first argument's count of packed
    /// words ([`MicroKernel::words`] of the depth; for bf16 each word holds two depth steps).
    run: fn(usize, &[f32], &[f32], &mut [f32; MAX_TILE]),
}

/// The largest `mr·nr` of any kernel.
const MAX_TILE: usize = 8 * 48;
/// Columns of `C` per task (a multiple of every `nr`): the packed `B` block, `kc × NC`, stays in L2.
const NC: usize = 384;
/// Most rows of `C` per task: the packed `A` block, `MC_MAX × kc`, stays in L2.
const MC_MAX: usize = 384;

impl MicroKernel {
    /// The kernel for `isa`, or `None` where this CPU cannot run it.
    pub fn for_isa(isa: Isa) -> Option<Self> {
        if !isa.is_supported() {
            return None;
        }
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => Some(MicroKernel {
                isa,
                arithmetic: Arithmetic::F32,
                mr: 6,
                nr: 16,
                kc: MAX_KC,
                run: x86::tile_6x16,
            }),
            _ => Some(MicroKernel {
                isa,
                arithmetic: Arithmetic::F32,
                mr: PORTABLE_MR,
                nr: PORTABLE_NR,
                kc: MAX_KC,
                run: tile_portable,
            }),
        }
    }

    /// The BF16 kernel of `isa`, or `None` where `isa` has no BF16 dot products on this CPU
    /// ([`Isa::has_bf16_dot`]).
    pub fn bf16_for(isa: Isa) -> Option<Self> {
        if !isa.has_bf16_dot() {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        return Some(MicroKernel {
            isa,
            arithmetic: Arithmetic::Bf16,
            mr: 8,
            nr: 48,
            kc: MAX_KC,
            run: x86::tile_8x48_bf16,
        });
        #[cfg(not(target_arch = "x86_64"))]
        None
    }

    /// The kernel for a weight stored as `ty` on `isa`: the weight type's own arithmetic where
    /// the CPU has it (BF16 weights: [`MicroKernel::bf16_for`], as a BF16 matmul weight takes
    /// BF16 activations), f32 otherwise.
    pub fn for_weight(isa: Isa, ty: TensorType) -> Option<Self> {
        let bf16 = (ty == TensorType::BF16)
            .then(|| Self::bf16_for(isa))
            .flatten();
        bf16.or_else(|| Self::for_isa(isa))
    }

    /// The best kernel of this CPU for a weight stored as `ty`.
    pub fn detect(ty: TensorType) -> Self {
        Self::for_weight(Isa::detect(), ty)
            .or_else(|| Self::for_isa(Isa::Scalar))
            .expect("the portable kernel runs everywhere")
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    pub fn arithmetic(&self) -> Arithmetic {
        self.arithmetic
    }

    /// Packed 32-bit words that `depth` depth steps take in a panel row.
    fn words(&self, depth: usize) -> usize {
        match self.arithmetic {
            Arithmetic::F32 => depth,
            Arithmetic::Bf16 => depth.div_ceil(2),
        }
    }

    /// Packed words of a whole depth `k` cut into `kc` blocks.
    fn words_total(&self, k: usize) -> Option<usize> {
        (k / self.kc)
            .checked_mul(self.words(self.kc))?
            .checked_add(self.words(k % self.kc))
    }
}

/// `x` rounded to bf16, nearest even (NaN stays NaN), as the bits `vdpbf16ps` reads.
#[inline]
fn bf16_bits(x: f32) -> u32 {
    u32::from(half::bf16::from_f32(x).to_bits())
}

/// One packed word: two depth steps rounded to bf16, the earlier in the low half.
#[inline]
fn bf16_pair(even: f32, odd: f32) -> f32 {
    f32::from_bits(bf16_bits(even) | bf16_bits(odd) << 16)
}

/// The deepest block of any kernel.
const MAX_KC: usize = 256;

/// `words[p]` = the bf16 pair of `row[2p]`, `row[2p + 1]` (0 past the end): a row as bf16
/// values, two per word.
fn bf16_row(row: &[f32], words: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    let done = x86::bf16_row(row, words);
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for (p, word) in words.iter_mut().enumerate().skip(done) {
        let odd = row.get(2 * p + 1).copied().unwrap_or(0.0);
        *word = bf16_pair(row[2 * p], odd);
    }
}

/// Rewrites a packed f32 block (`panels` panels of `depth × nr` values) in place as bf16 pairs:
/// panel `q`'s word `(pp, j)` (depth steps `2pp`, `2pp + 1` of column `j`) at
/// `q·words·nr + pp·nr + j`. Every word lands at or before the values it is made from, and a
/// pair's two rows are read before its words are written, so one forward pass suffices.
fn pack_pairs_in_place(block: &mut [f32], panels: usize, depth: usize, nr: usize) {
    let words = depth.div_ceil(2);
    let mut pair = [0f32; MAX_TILE];
    for q in 0..panels {
        for pp in 0..words {
            let even = q * depth * nr + 2 * pp * nr;
            let odd = (2 * pp + 1 < depth).then_some(even + nr);
            let to = (q * words + pp) * nr;
            #[cfg(target_arch = "x86_64")]
            if x86::pair_rows_bf16(block, nr, even, odd, to) {
                continue;
            }
            for j in 0..nr {
                let odd = odd.map_or(0.0, |odd| block[odd + j]);
                pair[j] = bf16_pair(block[even + j], odd);
            }
            block[to..][..nr].copy_from_slice(&pair[..nr]);
        }
    }
}

const PORTABLE_MR: usize = 8;
const PORTABLE_NR: usize = 12;

/// The portable kernel: 8×12 accumulators the compiler keeps in vector registers (NEON: 24 q
/// registers).
fn tile_portable(kc: usize, a: &[f32], b: &[f32], tile: &mut [f32; MAX_TILE]) {
    let mut acc = [[0f32; PORTABLE_NR]; PORTABLE_MR];
    for (a, b) in a
        .chunks_exact(PORTABLE_MR)
        .zip(b.chunks_exact(PORTABLE_NR))
        .take(kc)
    {
        for i in 0..PORTABLE_MR {
            for j in 0..PORTABLE_NR {
                acc[i][j] += a[i] * b[j];
            }
        }
    }
    for (dst, row) in tile.chunks_exact_mut(PORTABLE_NR).zip(&acc) {
        dst.copy_from_slice(row);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::MAX_TILE;

    /// Converts the leading multiple of 32 values of `row` into `words` (16 words per 32 values,
    /// as `super::bf16_row` defines them) where AVX-512 BF16 is present; returns the words done.
    pub(super) fn bf16_row(row: &[f32], words: &mut [f32]) -> usize {
        if !std::arch::is_x86_feature_detected!("avx512bf16") {
            return 0;
        }
        let chunks = (row.len() / 32).min(words.len() / 16);
        // SAFETY: the feature was just detected; chunk `c` reads `row[32c..32c + 32]` and writes
        // `words[16c..16c + 16]`, inside both slices for `c < chunks`.
        unsafe {
            bf16_row_avx512(row.as_ptr(), words.as_mut_ptr(), chunks);
        }
        chunks * 16
    }

    /// # Safety
    /// AVX-512 F and BF16 must be available; `row` must hold `32·chunks` values and `words`
    /// `16·chunks`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn bf16_row_avx512(row: *const f32, words: *mut f32, chunks: usize) {
        // SAFETY: the caller's bounds; `cvtne2ps_pbh(hi, lo)` puts `lo`'s 16 values (rounded to
        // nearest even) in the low 16 lanes, `hi`'s above: the 32 values in order.
        unsafe {
            for c in 0..chunks {
                let lo = _mm512_loadu_ps(row.add(32 * c));
                let hi = _mm512_loadu_ps(row.add(32 * c + 16));
                let both: __m512 = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_ps(words.add(16 * c), both);
            }
        }
    }

    /// Columns [`pair_rows_bf16`] converts: the BF16 tile's width.
    const PAIR_COLUMNS: usize = 48;

    /// Where AVX-512 BF16 is present and `nr` is 48 (the BF16 tile's width), writes words
    /// `block[to..to + 48]` = bf16 pairs of rows `block[even..even + 48]` and
    /// `block[odd..odd + 48]` (zeros when `None`), the even row in each word's low half, all read
    /// before anything is written (`to` may equal `even`), and returns true; else does nothing.
    pub(super) fn pair_rows_bf16(
        block: &mut [f32],
        nr: usize,
        even: usize,
        odd: Option<usize>,
        to: usize,
    ) -> bool {
        if nr != PAIR_COLUMNS || !std::arch::is_x86_feature_detected!("avx512bf16") {
            return false;
        }
        let end = |at: usize| at.checked_add(PAIR_COLUMNS).expect("in bounds");
        assert!(end(even) <= block.len() && end(to) <= block.len());
        assert!(odd.is_none_or(|odd| end(odd) <= block.len()));
        // SAFETY: the features were just detected; every offset was checked to leave 48 values
        // inside `block`.
        unsafe { pair_rows_avx512_bf16(block.as_mut_ptr(), even, odd, to) };
        true
    }

    /// # Safety
    /// AVX-512 F, BW and BF16 must be available; `block` must hold 48 values at `even`, `to` and
    /// `odd` (when given).
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pair_rows_avx512_bf16(block: *mut f32, even: usize, odd: Option<usize>, to: usize) {
        // bf16 lane 2j takes lane j (the even row's column j), lane 2j + 1 lane 16 + j (the odd
        // row's).
        const INTERLEAVE: [u16; 32] = {
            let mut idx = [0u16; 32];
            let mut j = 0;
            while j < 16 {
                idx[2 * j] = j as u16;
                idx[2 * j + 1] = 16 + j as u16;
                j += 1;
            }
            idx
        };
        // SAFETY: reads `block[even..even + 48]`, `block[odd..odd + 48]` and writes
        // `block[to..to + 48]`, all inside `block` (the caller's contract); every read happens
        // before the first write. `cvtne2ps_pbh` rounds to nearest even.
        unsafe {
            let idx = _mm512_loadu_si512(INTERLEAVE.as_ptr().cast());
            let mut words = [_mm512_setzero_si512(); 3];
            for (h, word) in words.iter_mut().enumerate() {
                let e = _mm512_loadu_ps(block.add(even + 16 * h));
                let o = match odd {
                    Some(odd) => _mm512_loadu_ps(block.add(odd + 16 * h)),
                    None => _mm512_setzero_ps(),
                };
                let halves: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(o, e));
                *word = _mm512_permutexvar_epi16(idx, halves);
            }
            for (h, word) in words.iter().enumerate() {
                _mm512_storeu_si512(block.add(to + 16 * h).cast(), *word);
            }
        }
    }

    /// The 8×48 AVX-512 BF16 tile (checked wrapper): `words` packed bf16 pairs deep.
    pub(super) fn tile_8x48_bf16(words: usize, a: &[f32], b: &[f32], tile: &mut [f32; MAX_TILE]) {
        assert!(a.len() >= words * 8 && b.len() >= words * 48);
        // SAFETY: `MicroKernel::bf16_for` hands this kernel out only where AVX-512 F/BW and BF16
        // were detected; the lengths were just checked.
        unsafe { tile_8x48_avx512_bf16(words, a.as_ptr(), b.as_ptr(), tile) }
    }

    /// # Safety
    /// AVX-512 F, BW and BF16 must be available; `a` must hold `8·words` words and `b` `48·words`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn tile_8x48_avx512_bf16(
        words: usize,
        a: *const f32,
        b: *const f32,
        tile: &mut [f32; MAX_TILE],
    ) {
        // SAFETY: every load reads inside `a[..8·words]` / `b[..48·words]` (p < words); the
        // stores write `tile[..384]`; unaligned loads and stores need no alignment. The
        // transmutes reinterpret 512 bits as 32 bf16 values, which any bit pattern is.
        unsafe {
            let mut c = [[_mm512_setzero_ps(); 3]; 8];
            for p in 0..words {
                let bp = b.add(p * 48);
                let b0: __m512bh = std::mem::transmute(_mm512_loadu_ps(bp));
                let b1: __m512bh = std::mem::transmute(_mm512_loadu_ps(bp.add(16)));
                let b2: __m512bh = std::mem::transmute(_mm512_loadu_ps(bp.add(32)));
                let ap = a.add(p * 8).cast::<i32>();
                for (i, row) in c.iter_mut().enumerate() {
                    let ai: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(ap.add(i).read_unaligned()));
                    row[0] = _mm512_dpbf16_ps(row[0], ai, b0);
                    row[1] = _mm512_dpbf16_ps(row[1], ai, b1);
                    row[2] = _mm512_dpbf16_ps(row[2], ai, b2);
                }
            }
            let out = tile.as_mut_ptr();
            for (i, row) in c.iter().enumerate() {
                for (h, &v) in row.iter().enumerate() {
                    _mm512_storeu_ps(out.add(i * 48 + h * 16), v);
                }
            }
        }
    }

    /// The 6×16 AVX2 tile (checked wrapper).
    pub(super) fn tile_6x16(kc: usize, a: &[f32], b: &[f32], tile: &mut [f32; MAX_TILE]) {
        assert!(a.len() >= kc * 6 && b.len() >= kc * 16);
        // SAFETY: `MicroKernel::for_isa` hands this kernel out only where AVX2 and FMA were
        // detected; the lengths were just checked.
        unsafe { tile_6x16_avx2(kc, a.as_ptr(), b.as_ptr(), tile) }
    }

    /// # Safety
    /// AVX2 and FMA must be available; `a` must hold `6·kc` floats and `b` `16·kc`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_6x16_avx2(kc: usize, a: *const f32, b: *const f32, tile: &mut [f32; MAX_TILE]) {
        // SAFETY: every load reads inside `a[..6·kc]` / `b[..16·kc]` (p < kc); the stores write
        // `tile[..96]`; unaligned loads and stores need no alignment.
        unsafe {
            let mut c = [[_mm256_setzero_ps(); 2]; 6];
            for p in 0..kc {
                let b0 = _mm256_loadu_ps(b.add(p * 16));
                let b1 = _mm256_loadu_ps(b.add(p * 16 + 8));
                let ap = a.add(p * 6);
                for (i, row) in c.iter_mut().enumerate() {
                    let ai = _mm256_broadcast_ss(&*ap.add(i));
                    row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
                    row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
                }
            }
            let out = tile.as_mut_ptr();
            for (i, row) in c.iter().enumerate() {
                _mm256_storeu_ps(out.add(i * 16), row[0]);
                _mm256_storeu_ps(out.add(i * 16 + 8), row[1]);
            }
        }
    }
}

/// Buffers the product reuses between calls: packed `A`, and one packed-`B` block per thread.
#[derive(Debug, Default)]
pub struct GemmScratch {
    packed_a: Vec<f32>,
    panels: Vec<Mutex<Vec<f32>>>,
}

impl GemmScratch {
    /// f32 values held now.
    pub fn held_values(&self) -> usize {
        self.packed_a.len()
            + self
                .panels
                .iter()
                .map(|p| p.lock().map_or(0, |v| v.len()))
                .sum::<usize>()
    }
}

/// Sizes of a grouped product: each of `groups` groups multiplies `[m, k]` by `[k, n]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmShape {
    pub groups: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

/// `c = a·b` for row-major `a` `[m, k]`, `b` `[k, n]`, `c` `[m, n]`, on the kernel of `isa`
/// (tests pin each one).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    scratch: &mut GemmScratch,
) -> Result<(), OpError> {
    let kernel = MicroKernel::for_isa(isa)
        .ok_or_else(|| param("gemm", format!("this CPU cannot run {isa} kernels")))?;
    gemm_on(kernel, m, n, k, a, b, c, scratch)
}

/// [`gemm`] on a chosen kernel (tests pin the BF16 one).
#[allow(clippy::too_many_arguments)]
pub fn gemm_on(
    kernel: MicroKernel,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    scratch: &mut GemmScratch,
) -> Result<(), OpError> {
    check_len("gemm", "b", checked_product("gemm", &[k, n])?, b.len())?;
    let shape = GemmShape { groups: 1, m, n, k };
    grouped_gemm(
        kernel,
        shape,
        a,
        &MatrixPanels { data: b, k, n },
        None,
        c,
        scratch,
    )
}

/// `c[g] = bias[g] + a[g]·b[g]` for every group: `a` `[groups·m, k]`, `bias` `[groups·m]`, `c`
/// `[groups·m, n]` (consecutive groups' rows), `b` from `source`. Packs `a` into `scratch` first;
/// a weight used many times is packed once instead ([`PackedLhs`], [`grouped_gemm_packed`]).
pub fn grouped_gemm(
    kernel: MicroKernel,
    shape: GemmShape,
    a: &[f32],
    source: &impl PanelSource,
    bias: Option<&[f32]>,
    c: &mut [f32],
    scratch: &mut GemmScratch,
) -> Result<(), OpError> {
    let layout = LhsLayout::new(kernel, shape)?;
    check_len(
        OP,
        "a",
        checked_product(OP, &[shape.groups, shape.m, shape.k])?,
        a.len(),
    )?;
    let mut packed_a = std::mem::take(&mut scratch.packed_a);
    if packed_a.len() < layout.words {
        packed_a.resize(layout.words, 0.0);
    }
    pack_a(
        kernel,
        shape,
        a,
        layout.m_padded,
        &mut packed_a[..layout.words],
    );
    let result = multiply(
        kernel,
        shape,
        &packed_a[..layout.words],
        source,
        bias,
        c,
        scratch,
    );
    scratch.packed_a = packed_a;
    result
}

/// [`grouped_gemm`] on a left operand packed beforehand: `n` columns, groups, rows and depth
/// from `a`.
pub fn grouped_gemm_packed(
    a: &PackedLhs,
    n: usize,
    source: &impl PanelSource,
    bias: Option<&[f32]>,
    c: &mut [f32],
    scratch: &mut GemmScratch,
) -> Result<(), OpError> {
    let shape = GemmShape { n, ..a.shape };
    multiply(a.kernel, shape, &a.words, source, bias, c, scratch)
}

const OP: &str = "gemm";

/// Where packed `A` words go: rows padded to whole `mr` panels, `words` in all.
struct LhsLayout {
    m_padded: usize,
    words: usize,
}

impl LhsLayout {
    fn new(kernel: MicroKernel, shape: GemmShape) -> Result<Self, OpError> {
        let overflow = || param(OP, format!("{shape:?} overflows usize"));
        let m_padded = shape
            .m
            .div_ceil(kernel.mr)
            .checked_mul(kernel.mr)
            .ok_or_else(overflow)?;
        let words = kernel
            .words_total(shape.k)
            .and_then(|w| w.checked_mul(m_padded)?.checked_mul(shape.groups))
            .filter(|w| w.checked_mul(4).is_some())
            .ok_or_else(overflow)?;
        Ok(LhsLayout { m_padded, words })
    }
}

/// The left operand `A` (`[groups·m, k]`, e.g. a convolution weight) packed once for one
/// kernel, so that products with it skip [`grouped_gemm`]'s packing: weights are packed at load
/// and, for the BF16 kernel, held as bf16 pairs (half the bytes of f32).
pub struct PackedLhs {
    kernel: MicroKernel,
    /// `n` is unused (0): each product gives its own.
    shape: GemmShape,
    words: Vec<f32>,
}

impl PackedLhs {
    /// Packs row-major `a` (`groups·m` rows of `k`) for `kernel`.
    pub fn new(
        kernel: MicroKernel,
        groups: usize,
        m: usize,
        k: usize,
        a: &[f32],
    ) -> Result<Self, OpError> {
        let shape = GemmShape { groups, m, n: 0, k };
        let layout = LhsLayout::new(kernel, shape)?;
        check_len(OP, "a", checked_product(OP, &[groups, m, k])?, a.len())?;
        let mut words = Vec::new();
        words.try_reserve_exact(layout.words).map_err(|_| {
            param(
                OP,
                format!("cannot allocate {} packed weight words", layout.words),
            )
        })?;
        words.resize(layout.words, 0.0);
        pack_a(kernel, shape, a, layout.m_padded, &mut words);
        Ok(PackedLhs {
            kernel,
            shape,
            words,
        })
    }

    /// The f32-sized words a [`PackedLhs::new`] of this size holds (`None` on overflow).
    pub fn words_for(kernel: MicroKernel, groups: usize, m: usize, k: usize) -> Option<usize> {
        LhsLayout::new(kernel, GemmShape { groups, m, n: 0, k })
            .ok()
            .map(|l| l.words)
    }

    /// The 32-bit words held.
    pub fn words(&self) -> usize {
        self.words.len()
    }

    pub fn kernel(&self) -> MicroKernel {
        self.kernel
    }
}

/// The product on packed `A` (`packed_a`, laid out as [`pack_a`] writes it for `kernel`).
fn multiply(
    kernel: MicroKernel,
    shape: GemmShape,
    packed_a: &[f32],
    source: &impl PanelSource,
    bias: Option<&[f32]>,
    c: &mut [f32],
    scratch: &mut GemmScratch,
) -> Result<(), OpError> {
    let GemmShape { groups, m, n, k } = shape;
    let rows = checked_product(OP, &[groups, m])?;
    check_len(OP, "c", checked_product(OP, &[rows, n])?, c.len())?;
    if let Some(b) = bias {
        check_len(OP, "bias", rows, b.len())?;
    }
    if c.is_empty() {
        return Ok(());
    }
    if k == 0 {
        for (row, out) in c.chunks_exact_mut(n).enumerate() {
            out.fill(bias.map_or(0.0, |b| b[row]));
        }
        return Ok(());
    }
    let threads = rayon::current_num_threads().max(1);
    let plan = Plan::new(kernel, shape, threads)
        .ok_or_else(|| param(OP, format!("{shape:?} overflows usize")))?;
    let Plan {
        m_padded,
        mc,
        nc,
        m_tiles,
        n_tiles,
        sizes,
    } = plan;
    check_len(OP, "packed a", sizes.packed_a, packed_a.len())?;
    let block_len = sizes.block;
    let group_words = sizes.packed_a / groups;

    if scratch.panels.len() < threads {
        scratch.panels.resize_with(threads, Default::default);
    }
    for slot in &mut scratch.panels {
        let slot = slot.get_mut().unwrap_or_else(|e| e.into_inner());
        if slot.len() < block_len {
            slot.resize(block_len, 0.0);
        }
    }

    let panels = &scratch.panels;
    let c_shared = SharedMut::new(c);
    (0..groups * m_tiles * n_tiles)
        .into_par_iter()
        .for_each(|t| {
            let (g, rest) = (t / (m_tiles * n_tiles), t % (m_tiles * n_tiles));
            let (mi, ni) = (rest / n_tiles, rest % n_tiles);
            let (m0, n0) = (mi * mc, ni * nc);
            let (m1, n1) = ((m0 + mc).min(m), (n0 + nc).min(n));
            let slot = rayon::current_thread_index().unwrap_or(0) % panels.len();
            let mut block = panels[slot].lock().unwrap_or_else(|e| e.into_inner());
            let task = Task {
                kernel,
                k,
                n,
                m_padded,
                group: g,
                rows: [m0, m1],
                cols: [n0, n1],
                packed_a: &packed_a[g * group_words..][..group_words],
                bias: bias.map(|b| &b[g * m..][..m]),
            };
            // Task `t` writes only rows g·m + m0..m1, columns n0..n1 of `c`: tasks cover disjoint
            // (group, row tile, column tile) triples, which `Task::run`'s unsafe slices rely on.
            task.run(source, &mut block[..block_len], &c_shared, g * m);
        });
    Ok(())
}

/// Values a [`GemmScratch`] grows to: packed `A`, and one `B` block per thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GemmScratchSizes {
    pub packed_a: usize,
    pub block: usize,
}

impl GemmScratchSizes {
    /// Sizes for a product of `shape` on `kernel` (`None` when they overflow `usize`).
    pub fn of(kernel: MicroKernel, shape: GemmShape) -> Option<Self> {
        Plan::new(kernel, shape, 1).map(|p| p.sizes)
    }

    /// The element-wise maximum: sized for both products.
    pub fn max(self, o: Self) -> Self {
        GemmScratchSizes {
            packed_a: self.packed_a.max(o.packed_a),
            block: self.block.max(o.block),
        }
    }

    /// Values held with `threads` threads, `None` on overflow.
    pub fn total(self, threads: usize) -> Option<usize> {
        self.block.checked_mul(threads)?.checked_add(self.packed_a)
    }
}

/// How one product is cut into tasks.
struct Plan {
    m_padded: usize,
    mc: usize,
    nc: usize,
    m_tiles: usize,
    n_tiles: usize,
    sizes: GemmScratchSizes,
}

impl Plan {
    fn new(kernel: MicroKernel, shape: GemmShape, threads: usize) -> Option<Self> {
        let GemmShape { groups, m, n, k } = shape;
        let MicroKernel { mr, nr, kc, .. } = kernel;
        let m_padded = m.div_ceil(mr).checked_mul(mr)?;
        let packed_a = groups
            .checked_mul(m_padded)?
            .checked_mul(kernel.words_total(k)?)?;
        packed_a.checked_mul(4)?;
        let nc = NC.min(n.div_ceil(nr).checked_mul(nr)?);
        let n_tiles = n.div_ceil(nc.max(1));
        // Whole-M tiles unless there are too few pixel tiles to keep every thread busy: each task
        // repacks its B block, so fewer, taller tiles pack less.
        let mut m_tiles = m.div_ceil(MC_MAX / mr * mr);
        let tasks = groups.saturating_mul(n_tiles).saturating_mul(m_tiles);
        if tasks < 4 * threads {
            let wanted = (4 * threads).div_ceil(groups.saturating_mul(n_tiles).max(1));
            m_tiles = m_tiles.max(wanted).min(m.div_ceil(mr));
        }
        let mc = m.div_ceil(m_tiles.max(1)).div_ceil(mr) * mr;
        let m_tiles = m.div_ceil(mc.max(1));
        let block = kc.min(k).checked_mul(nc)?;
        Some(Plan {
            m_padded,
            mc,
            nc,
            m_tiles,
            n_tiles,
            sizes: GemmScratchSizes { packed_a, block },
        })
    }
}

/// Packs `a` as, per group, per `kc` block `b` (`kc_len` deep, `w = words(kc_len)` words), per
/// `mr` panel `i`: word `[p][r]` at `g·m_padded·words_total(k) + b·m_padded·words(kc) + i·mr·w +
/// p·mr + r` (f32: value `a[row][b·kc + p]`; bf16: the pair of depth steps `2p`, `2p + 1`), rows
/// past `m` zero.
fn pack_a(kernel: MicroKernel, shape: GemmShape, a: &[f32], m_padded: usize, packed: &mut [f32]) {
    let GemmShape { m, k, .. } = shape;
    let MicroKernel { mr, kc, .. } = kernel;
    let group_words = m_padded * kernel.words_total(k).expect("checked by LhsLayout::new");
    if group_words == 0 {
        return;
    }
    packed
        .par_chunks_mut(group_words)
        .enumerate()
        .for_each(|(g, group)| {
            let a = &a[g * m * k..][..m * k];
            group
                .par_chunks_mut(m_padded * kernel.words(kc))
                .enumerate()
                .for_each(|(block, buf)| {
                    let s = block * kc;
                    let kc_len = kc.min(k - s);
                    let words = kernel.words(kc_len);
                    let mut pairs = [0f32; MAX_KC / 2];
                    for (i, panel) in buf.chunks_exact_mut(mr * words).enumerate() {
                        for r in 0..mr {
                            let row = i * mr + r;
                            let src = match (row < m, kernel.arithmetic) {
                                (false, _) => None,
                                (true, Arithmetic::F32) => Some(&a[row * k + s..][..kc_len]),
                                (true, Arithmetic::Bf16) => {
                                    bf16_row(&a[row * k + s..][..kc_len], &mut pairs[..words]);
                                    Some(&pairs[..words])
                                }
                            };
                            for p in 0..words {
                                panel[p * mr + r] = src.map_or(0.0, |src| src[p]);
                            }
                        }
                    }
                });
        });
}

/// One tile of `C`: rows `rows` of group `group`, columns `cols`.
struct Task<'a> {
    kernel: MicroKernel,
    k: usize,
    n: usize,
    m_padded: usize,
    group: usize,
    rows: [usize; 2],
    cols: [usize; 2],
    /// This group's packed `A`.
    packed_a: &'a [f32],
    bias: Option<&'a [f32]>,
}

impl Task<'_> {
    /// Computes the tile into `c` (group rows start at row `row0`).
    ///
    /// The caller guarantees no other task touches this tile's elements meanwhile.
    fn run(&self, source: &impl PanelSource, block: &mut [f32], c: &SharedMut, row0: usize) {
        let MicroKernel {
            mr, nr, kc, run, ..
        } = self.kernel;
        let ([m0, m1], [n0, n1]) = (self.rows, self.cols);
        let width = n1 - n0;
        for r in m0..m1 {
            // SAFETY: this task's tile, disjoint from every other task's (see `grouped_gemm`).
            let out = unsafe { c.slice((row0 + r) * self.n + n0, width) };
            out.fill(self.bias.map_or(0.0, |b| b[r]));
        }
        let mut tile = [0f32; MAX_TILE];
        let panels = width.div_ceil(nr);
        let block_words = self.kernel.words(kc) * self.m_padded;
        for (index, s) in (0..self.k).step_by(kc).enumerate() {
            let kc_len = kc.min(self.k - s);
            let words = self.kernel.words(kc_len);
            let b = &mut block[..panels * kc_len * nr];
            source.pack(self.group, s, kc_len, n0, width, nr, b);
            if self.kernel.arithmetic == Arithmetic::Bf16 {
                pack_pairs_in_place(b, panels, kc_len, nr);
            }
            let a_block = &self.packed_a[index * block_words..][..words * self.m_padded];
            for q in 0..panels {
                let b_panel = &b[q * words * nr..][..words * nr];
                let (j0, cols) = (n0 + q * nr, nr.min(width - q * nr));
                for i0 in (m0..m1).step_by(mr) {
                    let a_panel = &a_block[i0 * words..][..words * mr];
                    run(words, a_panel, b_panel, &mut tile);
                    for (r, values) in tile.chunks_exact(nr).take(mr.min(m1 - i0)).enumerate() {
                        // SAFETY: inside this task's tile (rows i0 + r < m1, columns j0.. < n1).
                        let out = unsafe { c.slice((row0 + i0 + r) * self.n + j0, cols) };
                        out.iter_mut().zip(values).for_each(|(o, v)| *o += v);
                    }
                }
            }
        }
    }
}
