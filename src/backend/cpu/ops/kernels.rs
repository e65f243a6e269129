//! Slice kernels every op is built from (dot, axpy, sums, scale), compiled twice: once for the
//! baseline target and once with AVX2+FMA enabled, picked at run time.
//!
//! The bodies are plain Rust shaped for LLVM's vectoriser: fixed-width lane arrays give it
//! independent accumulators, which it may not invent itself because float addition is not
//! associative. On aarch64 NEON is part of the baseline, so the same bodies become NEON code with no
//! dispatch. This module owns no op semantics and must not allocate.
//!
//! Both versions run the same operations in the same order (Rust never contracts `a * b + c` into
//! an FMA), so the dispatched and the portable results are bit-identical; the `*_portable`
//! functions exist so tests can check that.

/// Lanes per accumulator block: four 8-wide AVX registers, or eight 4-wide NEON/SSE registers, so
/// the additions of consecutive iterations do not wait on each other.
const LANES: usize = 32;

/// Defines `$name` (runtime dispatch) and `$portable` (baseline code) from one body.
macro_rules! multiversion {
    ($(#[$meta:meta])* pub fn $name:ident / $portable:ident ($($arg:ident : $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        #[inline]
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
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
        pub fn $portable($($arg: $ty),*) $(-> $ret)? $body
    };
}

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

multiversion! {
    /// `Σ a[i]·b[i]` over the common length.
    pub fn dot / dot_portable(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0f32; LANES];
        let mut ca = a.chunks_exact(LANES);
        let mut cb = b.chunks_exact(LANES);
        for (xa, xb) in (&mut ca).zip(&mut cb) {
            for j in 0..LANES {
                acc[j] += xa[j] * xb[j];
            }
        }
        let mut tail = 0f32;
        for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
            tail += x * y;
        }
        reduce(acc) + tail
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
    fn dot_matches_f64_and_portable_bitwise() {
        for n in LENGTHS {
            let (a, b) = (data(n, 1), data(n, 2));
            let r: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            let m: f64 = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| (x as f64 * y as f64).abs())
                .sum();
            assert!(close(dot(&a, &b), r, m), "n={n}");
            assert_eq!(dot(&a, &b).to_bits(), dot_portable(&a, &b).to_bits());
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

            let m = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&x), m);
        }
    }
}
