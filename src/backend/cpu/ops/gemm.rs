//! The f32 matrix product behind every dense convolution: `C = bias + A·B` per group, with `A`
//! `[m, k]` row-major (a conv weight), `B` `[k, n]` supplied panel by panel by a [`PanelSource`]
//! (a plain matrix, or the implicit im2col of `conv`), `C` `[m, n]` row-major (a CHW output).
//!
//! Goto/BLIS structure: `A` is packed once per call into `mr`-row micro-panels per `kc`-deep
//! block; each parallel task owns a tile of `C` (rows × columns of one group), packs its
//! `kc × nc` block of `B` into `nr`-column micro-panels (in a per-thread scratch slot) and runs the
//! register-tile micro-kernel over it: the `B` micro-panel (`kc·nr` floats) stays in L1 while
//! the `mc × kc` block of packed `A` streams from L2.
//!
//! Micro-kernels: AVX2+FMA intrinsics, 6×16 (12 ymm accumulators), used on AVX-512 CPUs too
//! (the crate's minimum Rust predates stable AVX-512 intrinsics, and the AMD EPYC this was tuned
//! on runs 512-bit FMAs at the same per-cycle rate); a portable 8×12 kernel in plain Rust, which
//! is the scalar reference on x86-64 and what LLVM vectorises to NEON on aarch64 (NEON is
//! baseline there, so the loop compiles to 4-wide FMAs with 24 vector accumulators).
//!
//! This module owns the product only: no convolution geometry beyond the `PanelSource` it is
//! given, no activation fused in.

use std::sync::Mutex;

use rayon::prelude::*;

use super::error::{check_len, checked_product, param, OpError};
use super::shared_mut::SharedMut;
use crate::backend::cpu::isa::Isa;

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
        dst[q * kc * nr + p * nr + j..][..len].copy_from_slice(&rest[..len]);
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

/// A register-tile kernel and the blocking that feeds it.
#[derive(Clone, Copy)]
pub struct MicroKernel {
    isa: Isa,
    /// Rows of `C` per tile (output channels).
    mr: usize,
    /// Columns of `C` per tile (pixels).
    nr: usize,
    /// Depth of one packed block: the `B` micro-panel `kc·nr` fits L1 next to an `A` one.
    kc: usize,
    /// `tile[i·nr + j] = Σ_p a[p·mr + i]·b[p·nr + j]` over `kc` (its first argument) steps.
    run: fn(usize, &[f32], &[f32], &mut [f32; MAX_TILE]),
}

/// The largest `mr·nr` of any kernel.
const MAX_TILE: usize = 96;
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
                mr: 6,
                nr: 16,
                kc: 256,
                run: x86::tile_6x16,
            }),
            _ => Some(MicroKernel {
                isa,
                mr: PORTABLE_MR,
                nr: PORTABLE_NR,
                kc: 256,
                run: tile_portable,
            }),
        }
    }

    /// The best kernel of this CPU.
    pub fn detect() -> Self {
        Self::for_isa(Isa::detect())
            .or_else(|| Self::for_isa(Isa::Scalar))
            .expect("the portable kernel runs everywhere")
    }

    pub fn isa(&self) -> Isa {
        self.isa
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
/// `[groups·m, n]` (consecutive groups' rows), `b` from `source`.
pub fn grouped_gemm(
    kernel: MicroKernel,
    shape: GemmShape,
    a: &[f32],
    source: &impl PanelSource,
    bias: Option<&[f32]>,
    c: &mut [f32],
    scratch: &mut GemmScratch,
) -> Result<(), OpError> {
    const OP: &str = "gemm";
    let GemmShape { groups, m, n, k } = shape;
    let rows = checked_product(OP, &[groups, m])?;
    check_len(OP, "a", checked_product(OP, &[rows, k])?, a.len())?;
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
    let block_len = sizes.block;

    pack_a(kernel, shape, a, m_padded, &mut scratch.packed_a);
    if scratch.panels.len() < threads {
        scratch.panels.resize_with(threads, Default::default);
    }
    for slot in &mut scratch.panels {
        let slot = slot.get_mut().unwrap_or_else(|e| e.into_inner());
        if slot.len() < block_len {
            slot.resize(block_len, 0.0);
        }
    }

    let packed_a = &scratch.packed_a;
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
                packed_a: &packed_a[g * m_padded * k..][..m_padded * k],
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
        let packed_a = groups.checked_mul(m_padded)?.checked_mul(k)?;
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

/// Packs `a` as, per group, per `kc` block starting at row-depth `s`, per `mr` panel `i`:
/// `[p][r]` at `g·m_padded·k + s·m_padded + i·mr·kc_len + p·mr + r`, rows past `m` zero.
fn pack_a(
    kernel: MicroKernel,
    shape: GemmShape,
    a: &[f32],
    m_padded: usize,
    packed: &mut Vec<f32>,
) {
    let GemmShape { groups, m, k, .. } = shape;
    let MicroKernel { mr, kc, .. } = kernel;
    let total = groups * m_padded * k;
    if packed.len() < total {
        packed.resize(total, 0.0);
    }
    packed[..total]
        .par_chunks_mut(m_padded * k)
        .enumerate()
        .for_each(|(g, group)| {
            let a = &a[g * m * k..][..m * k];
            group
                .par_chunks_mut(m_padded * kc)
                .enumerate()
                .for_each(|(block, buf)| {
                    let s = block * kc;
                    let kc_len = kc.min(k - s);
                    for (i, panel) in buf.chunks_exact_mut(mr * kc_len).enumerate() {
                        for r in 0..mr {
                            let row = i * mr + r;
                            if row < m {
                                let src = &a[row * k + s..][..kc_len];
                                for (p, &v) in src.iter().enumerate() {
                                    panel[p * mr + r] = v;
                                }
                            } else {
                                for p in 0..kc_len {
                                    panel[p * mr + r] = 0.0;
                                }
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
        for s in (0..self.k).step_by(kc) {
            let kc_len = kc.min(self.k - s);
            let b = &mut block[..panels * kc_len * nr];
            source.pack(self.group, s, kc_len, n0, width, nr, b);
            let a_block = &self.packed_a[s * self.m_padded..][..kc_len * self.m_padded];
            for q in 0..panels {
                let b_panel = &b[q * kc_len * nr..][..kc_len * nr];
                let (j0, cols) = (n0 + q * nr, nr.min(width - q * nr));
                for i0 in (m0..m1).step_by(mr) {
                    let a_panel = &a_block[i0 * kc_len..][..kc_len * mr];
                    run(kc_len, a_panel, b_panel, &mut tile);
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
