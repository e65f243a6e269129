//! The packed f32 GEMM behind dense convolutions, on every instruction set this CPU runs (the
//! portable kernel forced too), against a plain f64 triple loop.

mod ops_util;

use latte::backend::cpu::isa::Isa;
use latte::backend::cpu::ops::gemm::{gemm, gemm_on, Arithmetic, GemmScratch, MicroKernel};
use latte::backend::cpu::ops::OpError;
use latte::dtype::TensorType;
use ops_util::{assert_close, data};

fn reference(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
    let mut c = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k)
                .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                .sum();
        }
    }
    c
}

fn check(isa: Isa, m: usize, n: usize, k: usize, scratch: &mut GemmScratch) {
    check_kernel(MicroKernel::for_isa(isa).unwrap(), m, n, k, scratch);
    // The public entry point on the same instruction set gives the same result.
    let (a, b) = operands(m, n, k);
    let mut c = vec![f32::NAN; m * n];
    gemm(isa, m, n, k, &a, &b, &mut c, scratch).unwrap();
    let mut again = vec![f32::NAN; m * n];
    gemm_on(
        MicroKernel::for_isa(isa).unwrap(),
        m,
        n,
        k,
        &a,
        &b,
        &mut again,
        scratch,
    )
    .unwrap();
    assert_eq!(c, again);
}

/// Random `a` `[m, k]` and `b` `[k, n]` in [−1, 1], seeded by the shape.
fn operands(m: usize, n: usize, k: usize) -> (Vec<f32>, Vec<f32>) {
    let seed = (m * 1_000_003 + n * 1009 + k) as u64;
    (
        data(m * k, seed, -1.0, 1.0),
        data(k * n, seed + 1, -1.0, 1.0),
    )
}

/// `x` as the BF16 kernel reads it: rounded to bf16, nearest even (the `half` crate's rounding).
fn bf16_rounded(x: &[f32]) -> Vec<f32> {
    x.iter()
        .map(|&v| half::bf16::from_f32(v).to_f32())
        .collect()
}

/// `kernel` against a plain f64 triple loop (on the bf16-rounded operands for the BF16 kernel).
///
/// Each output sums k ≤ 600 products of magnitude ≤ 1, accumulated in f32 in blocks of ≤ 256:
/// the rounding error grows like √k·eps·(typical partial sum ~ √k) ≈ k·6e-8 ≤ 4e-5 typically;
/// 1e-4·(1 + k/100) leaves headroom for unlucky orders while a wrong element, tap or edge moves
/// results by ~0.1 or more. Products of bf16 values are exact in f32, so the same bound holds for
/// the BF16 kernel; one that skipped the rounding of either operand would be off by ~2⁻⁹
/// relative per product, ~1e-2 here.
fn check_kernel(kernel: MicroKernel, m: usize, n: usize, k: usize, scratch: &mut GemmScratch) {
    let (a, b) = operands(m, n, k);
    let mut c = vec![f32::NAN; m * n];
    gemm_on(kernel, m, n, k, &a, &b, &mut c, scratch).unwrap();
    let want = match kernel.arithmetic() {
        Arithmetic::F32 => reference(m, n, k, &a, &b),
        Arithmetic::Bf16 => reference(m, n, k, &bf16_rounded(&a), &bf16_rounded(&b)),
    };
    let atol = 1e-4 * (1.0 + k as f64 / 100.0);
    let what = format!(
        "{} {:?} m={m} n={n} k={k}",
        kernel.isa(),
        kernel.arithmetic()
    );
    assert_close(&c, &want, atol, 0.0, &what);
}

/// Every instruction set with BF16 dot products here (AVX-512 BF16); on other CPUs BF16 weights
/// take the f32 kernels, which the tests above cover.
fn bf16_kernels() -> Vec<MicroKernel> {
    Isa::supported().filter_map(MicroKernel::bf16_for).collect()
}

#[test]
fn bf16_kernel_is_chosen_exactly_where_the_cpu_has_it() {
    for isa in Isa::supported() {
        let kernel = MicroKernel::for_weight(isa, TensorType::BF16).unwrap();
        let want = if isa.has_bf16_dot() {
            Arithmetic::Bf16
        } else {
            Arithmetic::F32
        };
        assert_eq!(kernel.arithmetic(), want, "{isa}");
        for ty in [TensorType::F32, TensorType::F16, TensorType::Q4_0] {
            let kernel = MicroKernel::for_weight(isa, ty).unwrap();
            assert_eq!(kernel.arithmetic(), Arithmetic::F32, "{isa} {ty:?}");
        }
    }
    #[cfg(target_arch = "x86_64")]
    if Isa::Avx512.is_supported() && std::arch::is_x86_feature_detected!("avx512bf16") {
        assert_eq!(bf16_kernels().len(), 1);
    }
}

#[test]
fn bf16_kernel_odd_sizes_blocks_and_tasks() {
    for kernel in bf16_kernels() {
        let mut scratch = GemmScratch::default();
        // Non-multiples of the 8×48 tile, of the 256-deep block, odd depths (a half-filled last
        // pair), several blocks, tasks and a ragged remainder; then small calls reusing the
        // scratch.
        for &m in &[1, 7, 17, 130] {
            for &n in &[1, 17, 63, 130] {
                for &k in &[1, 2, 17, 130] {
                    check_kernel(kernel, m, n, k, &mut scratch);
                }
            }
        }
        check_kernel(kernel, 13, 9, 601, &mut scratch);
        check_kernel(kernel, 11, 800, 40, &mut scratch);
        check_kernel(kernel, 400, 5, 31, &mut scratch);
        check_kernel(kernel, 2, 3, 3, &mut scratch);
    }
}

#[test]
fn odd_sizes_on_every_isa() {
    // Non-multiples of every tile (6×16, 8×12), of the 256-deep blocks and of the 384-column task.
    let sizes = [1, 7, 17, 63, 130];
    for isa in Isa::supported() {
        let mut scratch = GemmScratch::default();
        for &m in &sizes {
            for &n in &sizes {
                for &k in &[1, 17, 130] {
                    check(isa, m, n, k, &mut scratch);
                }
            }
        }
    }
}

#[test]
fn several_blocks_and_tasks() {
    for isa in Isa::supported() {
        let mut scratch = GemmScratch::default();
        // Deeper than one packed block (256), wider than one task (384 columns), taller than one
        // task (384 rows), each with a ragged remainder; then a small call reusing the scratch.
        check(isa, 13, 9, 600, &mut scratch);
        check(isa, 11, 800, 40, &mut scratch);
        check(isa, 400, 5, 30, &mut scratch);
        check(isa, 2, 3, 4, &mut scratch);
    }
}

#[test]
fn empty_and_bad_shapes() {
    let mut scratch = GemmScratch::default();
    let isa = Isa::Scalar;
    // k = 0: the product is all zeros.
    let mut c = vec![f32::NAN; 6];
    gemm(isa, 2, 3, 0, &[], &[], &mut c, &mut scratch).unwrap();
    assert!(c.iter().all(|&v| v == 0.0));
    gemm(isa, 0, 3, 2, &[], &[0.0; 6], &mut [], &mut scratch).unwrap();
    let (a, b) = (vec![1f32; 6], vec![1f32; 6]);
    let mut c = vec![0f32; 4];
    assert!(matches!(
        gemm(isa, 2, 2, 3, &a[1..], &b, &mut c, &mut scratch),
        Err(OpError::Len { .. })
    ));
    assert!(matches!(
        gemm(isa, 2, 2, 3, &a, &b[1..], &mut c, &mut scratch),
        Err(OpError::Len { .. })
    ));
    assert!(matches!(
        gemm(isa, 2, 2, 3, &a, &b, &mut c[1..], &mut scratch),
        Err(OpError::Len { .. })
    ));
    gemm(isa, 2, 2, 3, &a, &b, &mut c, &mut scratch).unwrap();
    assert_eq!(c, [3.0; 4]);
    // A family this CPU cannot run is an error, not a crash.
    if let Some(missing) = Isa::ALL.into_iter().find(|isa| !isa.is_supported()) {
        assert!(matches!(
            gemm(missing, 2, 2, 3, &a, &b, &mut c, &mut scratch),
            Err(OpError::Param { .. })
        ));
    }
}
