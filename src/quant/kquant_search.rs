//! The K-quants' scale searches (`make_qkx2_quants` for Q4_K / Q5_K, `make_qx_quants` with
//! `rmse_type = 1` for Q6_K) run on all sub-blocks of a super-block at once: sub-block `s` is lane
//! `s`, and each lane executes exactly ggml's scalar operations in ggml's order, so the result is
//! bit-identical to the scalar transcription (no reassociation across values, no fused
//! multiply-add, branches turned into per-lane selects). Lanes make the loops vectorize: the
//! searches are most of the time a K-quant conversion takes.
//!
//! This module owns only the searches; the block layouts and the rest of the quantizers are in
//! [`super::kquants`]. It must not reorder any float operation.

#![allow(clippy::needless_range_loop)] // index loops mirror ggml's

use super::lanes::{F32s, I32s};
use crate::dtype::QK_K;

/// Sub-blocks of 32 in a Q4_K / Q5_K super-block.
const QKX2_LANES: usize = 8;
/// Sub-blocks of 16 in a Q6_K super-block.
const QX_LANES: usize = 16;

/// ggml's threshold below which a group counts as all zero (`GROUP_MAX_EPS`).
pub(super) const GROUP_MAX_EPS: f32 = 1e-15;

/// What the `make_qkx2_quants` search finds for each of `L` sub-blocks of 32.
#[derive(Clone, Copy)]
pub(super) struct Qkx2<const L: usize> {
    /// `scale` of each sub-block (`make_qkx2_quants`' return value).
    pub scales: [f32; L],
    /// `-min` of each sub-block (its `the_min`).
    pub mins: [f32; L],
    /// The quants, sub-block by sub-block.
    pub quants: [[u8; 32]; L],
}

impl Qkx2<{ 2 * QKX2_LANES }> {
    /// The first or second super-block's sub-blocks.
    fn half(&self, second: bool) -> Qkx2<QKX2_LANES> {
        let at = if second { QKX2_LANES } else { 0 };
        Qkx2 {
            scales: std::array::from_fn(|s| self.scales[at + s]),
            mins: std::array::from_fn(|s| self.mins[at + s]),
            quants: std::array::from_fn(|s| self.quants[at + s]),
        }
    }
}

/// `make_qkx2_quants(32, nmax, x + 32·j, weights, L + 32·j, &mins[j], Laux, rmin, rdelta, nstep,
/// false)` for the 8 sub-blocks `j` of each super-block of the row `x`, with ggml's weights
/// `sqrt(Σx²/32) + |x|` (`quantize_row_q{4,5}_K_ref`); `each(k, found)` gets super-block `k`'s.
/// Two super-blocks go through the search together where the row has them: twice the
/// independent sums keep the adders busy.
pub(super) fn qkx2_row(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    mut each: impl FnMut(usize, &Qkx2<QKX2_LANES>),
) {
    let mut pairs = x.chunks_exact(2 * QK_K);
    for (p, pair) in pairs.by_ref().enumerate() {
        let found: Qkx2<{ 2 * QKX2_LANES }> = qkx2_dispatch(pair, nmax, rmin, rdelta, nstep);
        each(2 * p, &found.half(false));
        each(2 * p + 1, &found.half(true));
    }
    let rest = pairs.remainder();
    if !rest.is_empty() {
        let found: Qkx2<QKX2_LANES> = qkx2_dispatch(rest, nmax, rmin, rdelta, nstep);
        each(x.len() / QK_K - 1, &found);
    }
}

/// The best compiled [`qkx2_lanes`] for this CPU.
fn qkx2_dispatch<const L: usize>(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> Qkx2<L> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked above; the body is safe code.
        return unsafe { qkx2_avx2(x, nmax, rmin, rdelta, nstep) };
    }
    qkx2_lanes(x, nmax, rmin, rdelta, nstep)
}

/// [`qkx2_lanes`] compiled for AVX2 (8 lanes to a register).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn qkx2_avx2<const L: usize>(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> Qkx2<L> {
    qkx2_lanes(x, nmax, rmin, rdelta, nstep)
}

/// The search on `L` sub-blocks of 32 (`x` holds `32·L` values), sub-block `s` in lane `s`.
#[inline(always)]
fn qkx2_lanes<const L: usize>(x: &[f32], nmax: i32, rmin: f32, rdelta: f32, nstep: i32) -> Qkx2<L> {
    const N: usize = 32;
    assert_eq!(x.len(), N * L, "sub-blocks of 32");
    // Value i of every sub-block side by side.
    let xt: [F32s<L>; N] = std::array::from_fn(|i| F32s(std::array::from_fn(|s| x[N * s + i])));
    let mut sum_x2 = F32s::<L>::splat(0.0);
    for v in xt {
        sum_x2 = sum_x2 + v * v;
    }
    let av_x = (sum_x2 / F32s::<L>::splat(32.0)).sqrt();
    let weights: [F32s<L>; N] = xt.map(|v| av_x + v.abs());

    let (mut min, mut max) = (xt[0], xt[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * xt[0];
    for i in 1..N {
        let v = xt[i];
        min = v.lt(min).select(v, min);
        max = v.gt(max).select(v, max);
        sum_w = sum_w + weights[i];
        sum_x = sum_x + weights[i] * v;
    }
    let zero = F32s::<L>::splat(0.0);
    min = min.gt(zero).select(zero, min);
    // `max == min`: ggml returns at once with zero quants, scale 0 and this min.
    let flat = max.eq(min);
    let flat_min = min;
    let nmax_f = F32s::<L>::splat(nmax as f32);
    let iscale = nmax_f / (max - min);
    let mut scale = F32s::<L>::splat(1.0) / iscale;
    let mut quants = [I32s([0; L]); N];
    let mut best_error = zero;
    for i in 0..N {
        let l = (iscale * (xt[i] - min)).nearest_int().clamp_to(0, nmax);
        quants[i] = l;
        let diff = scale * l.to_f32() + min - xt[i];
        best_error = best_error + weights[i] * (diff * diff);
    }
    if nstep >= 1 {
        let mut trial = quants;
        for is in 0..=nstep {
            let iscale = F32s::<L>::splat(rmin + rdelta * is as f32 + nmax as f32) / (max - min);
            let (mut sum_l, mut sum_l2, mut sum_xl) = (zero, zero, zero);
            for i in 0..N {
                let l = (iscale * (xt[i] - min)).nearest_int().clamp_to(0, nmax);
                trial[i] = l;
                let w = weights[i];
                let lf = l.to_f32();
                sum_l = sum_l + w * lf;
                sum_l2 = sum_l2 + w * lf * lf;
                sum_xl = sum_xl + w * lf * xt[i];
            }
            let det = sum_w * sum_l2 - sum_l * sum_l;
            let fitted_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let fitted_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            let positive = fitted_min.gt(zero);
            let this_min = positive.select(zero, fitted_min);
            let this_scale = positive.select(sum_xl / sum_l2, fitted_scale);
            let mut cur_error = zero;
            for i in 0..N {
                let diff = this_scale * trial[i].to_f32() + this_min - xt[i];
                cur_error = cur_error + weights[i] * (diff * diff);
            }
            let take = det.gt(zero).and(cur_error.lt(best_error));
            best_error = take.select(cur_error, best_error);
            scale = take.select(this_scale, scale);
            min = take.select(this_min, min);
            for i in 0..N {
                quants[i] = take.select_i32(trial[i], quants[i]);
            }
        }
    }

    let mut out = Qkx2 {
        scales: scale.0,
        mins: [0.0; L],
        quants: [[0; N]; L],
    };
    for s in 0..L {
        if flat.get(s) {
            out.scales[s] = 0.0;
            out.mins[s] = -flat_min.0[s];
        } else {
            out.mins[s] = -min.0[s];
            for i in 0..N {
                out.quants[s][i] = quants[i].0[s] as u8;
            }
        }
    }
    out
}

/// `make_qx_quants(16, nmax, x + 16·j, L + 16·j, 1, NULL)` for the 16 sub-blocks `j` of the
/// super-block `x` (`quantize_row_q6_K_ref`): each sub-block's scale, and its quants `L + nmax`.
pub(super) fn qx_rmse1_sub_blocks(
    x: &[f32; 256],
    nmax: i32,
) -> ([f32; QX_LANES], [[i8; 16]; QX_LANES]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked above; the body is safe code.
        return unsafe { qx_rmse1_avx2(x, nmax) };
    }
    qx_rmse1_lanes(x, nmax)
}

/// [`qx_rmse1_lanes`] compiled for AVX2 (16 lanes: two registers per lane array).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn qx_rmse1_avx2(x: &[f32; 256], nmax: i32) -> ([f32; QX_LANES], [[i8; 16]; QX_LANES]) {
    qx_rmse1_lanes(x, nmax)
}

#[inline(always)]
fn qx_rmse1_lanes(x: &[f32; 256], nmax: i32) -> ([f32; QX_LANES], [[i8; 16]; QX_LANES]) {
    const N: usize = 16;
    type V = F32s<QX_LANES>;
    let xt: [V; N] = std::array::from_fn(|i| F32s(std::array::from_fn(|s| x[N * s + i])));
    let zero = V::splat(0.0);
    let (mut max, mut amax) = (zero, zero);
    for v in xt {
        let bigger = v.abs().gt(amax);
        amax = bigger.select(v.abs(), amax);
        max = bigger.select(v, max);
    }
    let mut quants = [I32s([0; QX_LANES]); N];
    let (sumlx, suml2) = qx_pass(&xt, V::splat(-nmax as f32) / max, nmax, &mut quants);
    let mut scale = suml2.ne(zero).select(sumlx / suml2, zero);
    let mut best = scale * sumlx;
    let mut trial = quants;
    for is in (-9..=9).filter(|&is| is != 0) {
        let iscale = V::splat(-(nmax as f32 + 0.1 * is as f32)) / max;
        let (sumlx, suml2) = qx_pass(&xt, iscale, nmax, &mut trial);
        let take = suml2.gt(zero).and((sumlx * sumlx).gt(best * suml2));
        scale = take.select(sumlx / suml2, scale);
        best = take.select(scale * sumlx, best);
        for i in 0..N {
            quants[i] = take.select_i32(trial[i], quants[i]);
        }
    }

    let mut scales = scale.0;
    let mut out = [[0i8; N]; QX_LANES];
    for s in 0..QX_LANES {
        // An all-zero group: ggml returns at once with zero quants and scale 0.
        if amax.0[s] < GROUP_MAX_EPS {
            scales[s] = 0.0;
            continue;
        }
        for i in 0..N {
            out[s][i] = (quants[i].0[s] + nmax) as i8;
        }
    }
    (scales, out)
}

/// One pass of `make_qx_quants` at the scales `iscale`: the quants `l` into `quants`, and the
/// sums `Σ x²·x·l` and `Σ x²·l²`.
#[inline(always)]
fn qx_pass(
    xt: &[F32s<QX_LANES>; 16],
    iscale: F32s<QX_LANES>,
    nmax: i32,
    quants: &mut [I32s<QX_LANES>; 16],
) -> (F32s<QX_LANES>, F32s<QX_LANES>) {
    let zero = F32s::splat(0.0);
    let (mut sumlx, mut suml2) = (zero, zero);
    for (&v, q) in xt.iter().zip(quants.iter_mut()) {
        let l = (iscale * v).nearest_int().clamp_to(-nmax, nmax - 1);
        *q = l;
        let w = v * v;
        let lf = l.to_f32();
        sumlx = sumlx + w * v * lf;
        suml2 = suml2 + w * lf * lf;
    }
    (sumlx, suml2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ggml's scalar searches, transcribed one to one from `ggml-quants.c`: the lanes must give
    /// their results bit for bit (ggml itself checks both, in `tests/ggml_peer_quant.rs`).
    mod scalar {
        use super::super::GROUP_MAX_EPS;
        use crate::quant::round::nearest_int;

        /// `make_qkx2_quants`: finds `scale` and `min` (returned as `-min` in `the_min`) so that
        /// `x ≈ scale·L + min` with `L` in `0..=nmax`, minimising the weighted squared (or absolute, with
        /// `use_mad`) error over `nstep + 1` trial scales around `nmax / (max − min)`. `laux` is scratch.
        #[allow(clippy::too_many_arguments)] // ggml's signature, kept to ease comparison
        pub fn make_qkx2_quants(
            nmax: i32,
            x: &[f32; 32],
            weights: &[f32; 32],
            l_out: &mut [u8; 32],
            the_min: &mut f32,
            laux: &mut [u8; 32],
            rmin: f32,
            rdelta: f32,
            nstep: i32,
            use_mad: bool,
        ) -> f32 {
            let n = x.len();
            let mut min = x[0];
            let mut max = x[0];
            let mut sum_w = weights[0];
            let mut sum_x = sum_w * x[0];
            for i in 1..n {
                if x[i] < min {
                    min = x[i];
                }
                if x[i] > max {
                    max = x[i];
                }
                let w = weights[i];
                sum_w += w;
                sum_x += w * x[i];
            }
            if min > 0.0 {
                min = 0.0;
            }
            if max == min {
                l_out.fill(0);
                *the_min = -min;
                return 0.0;
            }
            let mut iscale = nmax as f32 / (max - min);
            let mut scale = 1.0 / iscale;
            let mut best_error = 0.0f32;
            for i in 0..n {
                let l = nearest_int(iscale * (x[i] - min));
                l_out[i] = l.min(nmax).max(0) as u8;
                let mut diff = scale * l_out[i] as f32 + min - x[i];
                diff = if use_mad { diff.abs() } else { diff * diff };
                best_error += weights[i] * diff;
            }
            if nstep < 1 {
                *the_min = -min;
                return scale;
            }
            for is in 0..=nstep {
                iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
                let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
                for i in 0..n {
                    let l = nearest_int(iscale * (x[i] - min)).min(nmax).max(0);
                    laux[i] = l as u8;
                    let w = weights[i];
                    let lf = l as f32;
                    sum_l += w * lf;
                    sum_l2 += w * lf * lf;
                    sum_xl += w * lf * x[i];
                }
                let det = sum_w * sum_l2 - sum_l * sum_l;
                if det > 0.0 {
                    let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
                    let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
                    if this_min > 0.0 {
                        this_min = 0.0;
                        this_scale = sum_xl / sum_l2;
                    }
                    let mut cur_error = 0.0f32;
                    for i in 0..n {
                        let mut diff = this_scale * laux[i] as f32 + this_min - x[i];
                        diff = if use_mad { diff.abs() } else { diff * diff };
                        cur_error += weights[i] * diff;
                    }
                    if cur_error < best_error {
                        *l_out = *laux;
                        best_error = cur_error;
                        scale = this_scale;
                        min = this_min;
                    }
                }
            }
            *the_min = -min;
            scale
        }

        /// `make_qx_quants` with `qw = NULL` and `rmse_type = 1` (weights `x²`), the only way the
        /// reference K-quantizers here call it: finds `scale` so that `x ≈ scale·(L − nmax)`,
        /// `L` in `0..2·nmax`, trying 18 scales around `−nmax / max`.
        pub fn make_qx_quants_rmse1(nmax: i32, x: &[f32; 16], l_out: &mut [i8; 16]) -> f32 {
            let n = x.len();
            let mut max = 0.0f32;
            let mut amax = 0.0f32;
            for &v in x {
                let ax = v.abs();
                if ax > amax {
                    amax = ax;
                    max = v;
                }
            }
            if amax < GROUP_MAX_EPS {
                l_out.fill(0);
                return 0.0;
            }
            let mut iscale = -nmax as f32 / max;
            let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
            for i in 0..n {
                let l = nearest_int(iscale * x[i]).min(nmax - 1).max(-nmax);
                l_out[i] = (l + nmax) as i8;
                let w = x[i] * x[i];
                let lf = l as f32;
                sumlx += w * x[i] * lf;
                suml2 += w * lf * lf;
            }
            let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
            let mut best = scale * sumlx;
            for is in -9..=9 {
                if is == 0 {
                    continue;
                }
                iscale = -(nmax as f32 + 0.1 * is as f32) / max;
                sumlx = 0.0;
                suml2 = 0.0;
                for i in 0..n {
                    let lf = nearest_int(iscale * x[i]).min(nmax - 1).max(-nmax) as f32;
                    let w = x[i] * x[i];
                    sumlx += w * x[i] * lf;
                    suml2 += w * lf * lf;
                }
                if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
                    for i in 0..n {
                        let l = nearest_int(iscale * x[i]);
                        l_out[i] = (nmax + l.min(nmax - 1).max(-nmax)) as i8;
                    }
                    scale = sumlx / suml2;
                    best = scale * sumlx;
                }
            }
            scale
        }
    }

    /// Deterministic rows with the features the searches branch on: mixed scales, all-positive,
    /// flat, zero, tiny, huge, ties, single spikes and non-finite values.
    fn super_blocks() -> Vec<[f32; 256]> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        let mut blocks = Vec::new();
        for k in 0..400 {
            let scale = 10f32.powi(k % 9 - 4);
            let mut b = [0f32; 256];
            for (i, v) in b.iter_mut().enumerate() {
                let u = uniform() * 2.0 - 1.0;
                *v = match k % 8 {
                    0 => u * scale,
                    1 => u.abs() * scale + 0.5 * scale, // all positive
                    2 => (u * 8.0).round() * 0.5,       // ties
                    3 if i % 32 < 16 => 0.0,            // half-zero sub-blocks
                    4 => u * 10f32.powi((i / 32) as i32 - 4), // sub-block scales differ
                    5 if i % 37 != 0 => 0.0,            // spikes
                    6 => {
                        if i / 32 == 3 {
                            1.25
                        } else {
                            u * scale
                        }
                    } // one flat sub-block
                    _ => u * u * u * scale,             // heavy tails
                };
            }
            blocks.push(b);
        }
        let mut special = [0f32; 256];
        for (i, v) in special.iter_mut().enumerate() {
            *v = [f32::NAN, f32::INFINITY, -0.0, 1e-40, 3e38, -1e-20, 7.0, 0.0][i % 8] * (i as f32);
        }
        blocks.push(special);
        blocks.push([-0.0; 256]);
        blocks.push([1e-30; 256]);
        blocks
    }

    /// The same bits, or both NaN (Rust fixes no NaN payload; ggml's bytes for non-finite rows
    /// are checked against ggml itself in `tests/ggml_peer_quant.rs`).
    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
    }

    #[test]
    fn qkx2_lanes_equal_the_scalar_search() {
        for (nmax, rmin, nstep) in [(15, -1.0, 20), (31, -0.5, 15)] {
            let blocks = super_blocks();
            // One row of all blocks (pairs, then the odd one out), and each block alone.
            let row: Vec<f32> = blocks.concat();
            let mut from_row = Vec::new();
            qkx2_row(&row, nmax, rmin, 0.1, nstep, |k, found| {
                from_row.push((k, *found))
            });
            assert!(blocks.len() % 2 == 1 && from_row.len() == blocks.len());
            for (k, b) in blocks.iter().enumerate() {
                let lanes: Qkx2<8> = qkx2_lanes(b, nmax, rmin, 0.1, nstep);
                assert_eq!(from_row[k].0, k);
                let dispatched = from_row[k].1;
                for j in 0..8 {
                    let x: &[f32; 32] = b[32 * j..32 * (j + 1)].try_into().unwrap();
                    let mut sum_x2 = 0.0f32;
                    for &v in x {
                        sum_x2 += v * v;
                    }
                    let av_x = (sum_x2 / 32.0).sqrt();
                    let weights: [f32; 32] = std::array::from_fn(|i| av_x + x[i].abs());
                    let (mut l, mut laux, mut the_min) = ([0u8; 32], [0u8; 32], 0f32);
                    let scale = scalar::make_qkx2_quants(
                        nmax,
                        x,
                        &weights,
                        &mut l,
                        &mut the_min,
                        &mut laux,
                        rmin,
                        0.1,
                        nstep,
                        false,
                    );
                    for got in [&lanes, &dispatched] {
                        assert!(
                            same_bits(&[got.scales[j], got.mins[j]], &[scale, the_min]),
                            "nmax {nmax}, block {k}, sub-block {j}: scale/min {} {} vs {scale} {the_min}",
                            got.scales[j],
                            got.mins[j]
                        );
                        assert_eq!(got.quants[j], l, "nmax {nmax}, block {k}, sub-block {j}");
                    }
                }
            }
        }
    }

    #[test]
    fn qx_lanes_equal_the_scalar_search() {
        for (k, b) in super_blocks().iter().enumerate() {
            let lanes = qx_rmse1_lanes(b, 32);
            let dispatched = qx_rmse1_sub_blocks(b, 32);
            for j in 0..16 {
                let x: &[f32; 16] = b[16 * j..16 * (j + 1)].try_into().unwrap();
                let mut l = [0i8; 16];
                let scale = scalar::make_qx_quants_rmse1(32, x, &mut l);
                for got in [&lanes, &dispatched] {
                    assert!(
                        same_bits(&[got.0[j]], &[scale]),
                        "block {k}, sub-block {j}: scale {} vs {scale}",
                        got.0[j]
                    );
                    assert_eq!(got.1[j], l, "block {k}, sub-block {j}");
                }
            }
        }
    }
}
