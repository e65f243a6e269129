//! Slice kernels every op is built from (dot, axpy, sums, scale). This module owns no op semantics
//! and must not allocate.
//!
//! - `dot`, the attention hot loop, has AVX2+FMA (runtime-detected) and NEON intrinsics, tested
//!   against [`dot_scalar`] and an f64 reference.
//! - The rest are plain Rust compiled twice by `multiversion!`: for the baseline target and with
//!   AVX2+FMA enabled, picked at run time (on aarch64 NEON is baseline: one build). Element-wise
//!   loops vectorise fully this way; the sums use fixed lane arrays so LLVM may keep independent
//!   partial sums (float addition is not associative, so it will not invent them). Both builds run
//!   the same operations in the same order (Rust never contracts `a * b + c` into an FMA), so their
//!   results are bit-identical; the `*_portable` functions exist so tests can check that.

/// Lanes per accumulator block: four 8-wide AVX registers, or eight 4-wide NEON/SSE registers, so
/// the additions of consecutive iterations do not wait on each other.
const LANES: usize = 32;

/// Defines `$name` (runtime dispatch) and `$portable` (baseline code) from one body.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident / $portable:ident ($($arg:ident : $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        #[inline]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $portable($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU was just checked to support every feature `avx2` is compiled
                    // with; the body itself is safe Rust.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $portable($($arg),*)
        }

        $(#[$meta])*
        /// (Baseline-target build, no dispatch.)
        #[inline(always)]
        $vis fn $portable($($arg: $ty),*) $(-> $ret)? $body
    };
}

pub(crate) use multiversion;

/// Adds the lanes of an accumulator block pairwise (tree order, for accuracy and speed).
#[inline(always)]
fn reduce(mut acc: [f32; LANES]) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for j in 0..width {
            acc[j] += acc[j + width];
        }
        width /= 2;
    }
    acc[0]
}

/// `Σ a[i]·b[i]` over the common length: AVX2+FMA or NEON intrinsics where available, else
/// [`dot_scalar`].
///
/// The one kernel with hand-written intrinsics: measured, LLVM turned every lane-array formulation
/// of this reduction into 2-wide code (`vmovsd` loads), while axpy-shaped loops vectorise fully.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: AVX2 and FMA were just detected; `a` and `b` have the same length.
        return unsafe { x86::dot(a, b) };
    }
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    {
        // SAFETY: NEON is enabled for this target; `a` and `b` have the same length.
        return unsafe { neon::dot(a, b) };
    }
    #[allow(unreachable_code)]
    dot_scalar(a, b)
}

/// The portable reference for [`dot`]: eight independent partial sums, then their total.
pub fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [0f32; 8];
    let mut ca = a[..n].chunks_exact(8);
    let mut cb = b[..n].chunks_exact(8);
    for (xa, xb) in (&mut ca).zip(&mut cb) {
        for j in 0..8 {
            acc[j] += xa[j] * xb[j];
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX2 and FMA, and `a.len() == b.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        debug_assert_eq!(a.len(), b.len());
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        // SAFETY: every load reads 8 floats at offset i with i + 8 <= n (loop bounds below), inside
        // both slices; unaligned loads (`loadu`) need no alignment.
        unsafe {
            // Four accumulators hide the FMA latency (4 cycles) behind independent chains.
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                for (k, a_k) in acc.iter_mut().enumerate() {
                    let x = _mm256_loadu_ps(pa.add(i + 8 * k));
                    let y = _mm256_loadu_ps(pb.add(i + 8 * k));
                    *a_k = _mm256_fmadd_ps(x, y, *a_k);
                }
                i += 32;
            }
            while i + 8 <= n {
                acc[0] = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i)),
                    _mm256_loadu_ps(pb.add(i)),
                    acc[0],
                );
                i += 8;
            }
            let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            // Horizontal sum of 8 lanes: 256 → 128 → 64 → 32 bits.
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            let mut total = _mm_cvtss_f32(s);
            for j in i..n {
                total += a[j] * b[j];
            }
            total
        }
    }
}

#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
mod neon {
    use std::arch::aarch64::*;

    /// # Safety
    /// `a.len() == b.len()` (NEON itself is part of the target).
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        debug_assert_eq!(a.len(), b.len());
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        // SAFETY: every load reads 4 floats at offset i with i + 4 <= n (loop bounds below), inside
        // both slices; `vld1q_f32` has no alignment requirement beyond f32's.
        unsafe {
            let mut acc = [vdupq_n_f32(0.0); 4];
            let mut i = 0;
            while i + 16 <= n {
                for (k, a_k) in acc.iter_mut().enumerate() {
                    let x = vld1q_f32(pa.add(i + 4 * k));
                    let y = vld1q_f32(pb.add(i + 4 * k));
                    *a_k = vfmaq_f32(*a_k, x, y);
                }
                i += 16;
            }
            while i + 4 <= n {
                acc[0] = vfmaq_f32(acc[0], vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i)));
                i += 4;
            }
            let v = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
            let mut total = vaddvq_f32(v);
            for j in i..n {
                total += a[j] * b[j];
            }
            total
        }
    }
}

multiversion! {
    /// `y[i] += alpha·x[i]` over the common length.
    pub fn axpy / axpy_portable(alpha: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        for (yi, xi) in y[..n].iter_mut().zip(&x[..n]) {
            *yi += alpha * xi;
        }
    }
}

multiversion! {
    /// `Σ x[i]`.
    pub fn sum / sum_portable(x: &[f32]) -> f32 {
        let mut acc = [0f32; LANES];
        let mut c = x.chunks_exact(LANES);
        for xs in &mut c {
            for j in 0..LANES {
                acc[j] += xs[j];
            }
        }
        reduce(acc) + c.remainder().iter().sum::<f32>()
    }
}

multiversion! {
    /// `Σ (x[i] − center)²`; with `center = 0` the plain sum of squares.
    pub fn sum_sq_centered / sum_sq_centered_portable(x: &[f32], center: f32) -> f32 {
        let mut acc = [0f32; LANES];
        let mut c = x.chunks_exact(LANES);
        for xs in &mut c {
            for j in 0..LANES {
                let d = xs[j] - center;
                acc[j] += d * d;
            }
        }
        let tail: f32 = c.remainder().iter().map(|&v| (v - center) * (v - center)).sum();
        reduce(acc) + tail
    }
}

multiversion! {
    /// `x[i] = (x[i] − shift)·mul` (a norm's centring and scaling).
    pub fn shift_scale / shift_scale_portable(x: &mut [f32], shift: f32, mul: f32) {
        for v in x.iter_mut() {
            *v = (*v - shift) * mul;
        }
    }
}

multiversion! {
    /// `x[i] = x[i]·w[i] + b[i]` over the common length (a norm's affine part).
    pub fn mul_add_elementwise / mul_add_elementwise_portable(x: &mut [f32], w: &[f32], b: &[f32]) {
        let n = x.len().min(w.len()).min(b.len());
        for ((v, wi), bi) in x[..n].iter_mut().zip(&w[..n]).zip(&b[..n]) {
            *v = *v * wi + bi;
        }
    }
}

multiversion! {
    /// `x[i] *= w[i]` over the common length.
    pub fn mul_elementwise / mul_elementwise_portable(x: &mut [f32], w: &[f32]) {
        let n = x.len().min(w.len());
        for (v, wi) in x[..n].iter_mut().zip(&w[..n]) {
            *v *= wi;
        }
    }
}

multiversion! {
    /// `acc[i] += x[i]` over the common length (a residual connection).
    pub fn add_elementwise / add_elementwise_portable(acc: &mut [f32], x: &[f32]) {
        let n = acc.len().min(x.len());
        for (a, xi) in acc[..n].iter_mut().zip(&x[..n]) {
            *a += xi;
        }
    }
}

multiversion! {
    /// `acc[i] += g[i]·d[i]` over the common length (a gated residual).
    pub fn add_product / add_product_portable(acc: &mut [f32], g: &[f32], d: &[f32]) {
        let n = acc.len().min(g.len()).min(d.len());
        for ((a, gi), di) in acc[..n].iter_mut().zip(&g[..n]).zip(&d[..n]) {
            *a += gi * di;
        }
    }
}

/// The largest element (`-inf` for an empty slice; NaNs are skipped).
#[inline]
pub fn max(x: &[f32]) -> f32 {
    x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        // A small LCG: deterministic, values in [-1, 1).
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    // Lengths around the lane width exercise the tail handling.
    const LENGTHS: [usize; 9] = [0, 1, 7, 31, 32, 33, 64, 100, 257];

    // f32 sums of n terms of size <= 1 have error <= n·eps·Σ|terms|; 1e-5 relative to Σ|terms|
    // covers n up to 257 with margin.
    fn close(a: f32, reference: f64, magnitude: f64) -> bool {
        (a as f64 - reference).abs() <= 1e-5 * magnitude.max(1.0)
    }

    #[test]
    fn dot_matches_f64() {
        for n in LENGTHS {
            let (a, b) = (data(n, 1), data(n, 2));
            let r: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            let m: f64 = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| (x as f64 * y as f64).abs())
                .sum();
            assert!(close(dot(&a, &b), r, m), "n={n}");
            assert!(close(dot_scalar(&a, &b), r, m), "n={n}");
            // Different lengths: the common prefix.
            assert!(close(
                dot(&a, &b[..n / 2]),
                a[..n / 2]
                    .iter()
                    .zip(&b)
                    .map(|(&x, &y)| x as f64 * y as f64)
                    .sum(),
                m
            ));
        }
    }

    #[test]
    fn sums_match_f64() {
        for n in LENGTHS {
            let x = data(n, 3);
            let r: f64 = x.iter().map(|&v| v as f64).sum();
            let m: f64 = x.iter().map(|&v| (v as f64).abs()).sum();
            assert!(close(sum(&x), r, m));
            assert_eq!(sum(&x).to_bits(), sum_portable(&x).to_bits());
            let c = 0.25f32;
            let r2: f64 = x.iter().map(|&v| (v as f64 - 0.25).powi(2)).sum();
            assert!(close(sum_sq_centered(&x, c), r2, r2));
            assert_eq!(
                sum_sq_centered(&x, c).to_bits(),
                sum_sq_centered_portable(&x, c).to_bits()
            );
        }
    }

    #[test]
    fn elementwise_kernels_match_plain_loops() {
        for n in LENGTHS {
            let (x, w, b) = (data(n, 4), data(n, 5), data(n, 6));
            let mut y = data(n, 7);
            let expect: Vec<f32> = y.iter().zip(&x).map(|(&yi, &xi)| yi + 0.5 * xi).collect();
            axpy(0.5, &x, &mut y);
            assert_eq!(y, expect);

            let mut z = x.clone();
            shift_scale(&mut z, 0.1, 3.0);
            let expect: Vec<f32> = x.iter().map(|&v| (v - 0.1) * 3.0).collect();
            assert_eq!(z, expect);

            let mut z = x.clone();
            mul_add_elementwise(&mut z, &w, &b);
            let expect: Vec<f32> = (0..n).map(|i| x[i] * w[i] + b[i]).collect();
            assert_eq!(z, expect);

            let mut z = x.clone();
            mul_elementwise(&mut z, &w);
            let expect: Vec<f32> = (0..n).map(|i| x[i] * w[i]).collect();
            assert_eq!(z, expect);

            let mut z = x.clone();
            add_elementwise(&mut z, &w);
            let expect: Vec<f32> = (0..n).map(|i| x[i] + w[i]).collect();
            assert_eq!(z, expect);

            let mut z = x.clone();
            add_product(&mut z, &w, &b);
            let expect: Vec<f32> = (0..n).map(|i| x[i] + w[i] * b[i]).collect();
            assert_eq!(z, expect);

            let m = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&x), m);
        }
    }
}
