//! The packed f32 GEMM behind dense convolutions, on every instruction set this CPU runs (the
//! portable kernel forced too), against a plain f64 triple loop.

mod ops_util;

use latte::backend::cpu::isa::Isa;
use latte::backend::cpu::ops::gemm::{gemm, GemmScratch};
use latte::backend::cpu::ops::OpError;
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
    let seed = (m * 1_000_003 + n * 1009 + k) as u64;
    let a = data(m * k, seed, -1.0, 1.0);
    let b = data(k * n, seed + 1, -1.0, 1.0);
    let mut c = vec![f32::NAN; m * n];
    gemm(isa, m, n, k, &a, &b, &mut c, scratch).unwrap();
    // Each output sums k ≤ 600 products of magnitude ≤ 1, accumulated in f32 in blocks of ≤ 256:
    // the rounding error grows like √k·eps·(typical partial sum ~ √k) ≈ k·6e-8 ≤ 4e-5 typically;
    // 1e-4·(1 + k/100) leaves headroom for unlucky orders while a wrong element, tap or edge
    // moves results by ~0.1 or more.
    let atol = 1e-4 * (1.0 + k as f64 / 100.0);
    assert_close(
        &c,
        &reference(m, n, k, &a, &b),
        atol,
        0.0,
        &format!("{isa} m={m} n={n} k={k}"),
    );
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
