//! Row softmax against an f64 reference, including masked (-inf) entries and huge values.

mod ops_util;

use latte::backend::cpu::ops::{softmax_rows, OpError};
use ops_util::{assert_close, data};

fn reference(row: &[f32]) -> Vec<f64> {
    let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    if m == f64::NEG_INFINITY {
        return vec![0.0; row.len()];
    }
    let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

// Probabilities are in [0, 1]: exp is accurate to an ulp and the normaliser is a sum of ≤ 100 terms,
// so 1e-6 absolute (≈ 8 f32 ulps of 1) plus 1e-5 relative holds with margin.
const ATOL: f64 = 1e-6;
const RTOL: f64 = 1e-5;

#[test]
fn softmax_matches_reference_on_ragged_rows() {
    for len in [1, 7, 33, 100] {
        let mut x = data(len * 3, len as u64, -10.0, 10.0);
        let want: Vec<f64> = x.chunks(len).flat_map(reference).collect();
        softmax_rows(&mut x, len).unwrap();
        assert_close(&x, &want, ATOL, RTOL, "softmax");
        for row in x.chunks(len) {
            let s: f64 = row.iter().map(|&v| v as f64).sum();
            assert!((s - 1.0).abs() < 1e-5);
        }
    }
}

#[test]
fn softmax_is_stable_for_huge_values() {
    // Without the max subtraction e^(1e4) overflows to inf and the row becomes NaN.
    let mut x = vec![1e4f32, 1e4 - 1.0, 1e4 - 2.0, -1e4, 3e38, 3e38];
    let want: Vec<f64> = [&x[..4], &x[4..]]
        .iter()
        .flat_map(|r| reference(r))
        .collect();
    softmax_rows(&mut x[..4], 4).unwrap();
    softmax_rows(&mut x[4..], 2).unwrap();
    assert_close(&x, &want, ATOL, RTOL, "softmax huge");
    assert!((x[4] - 0.5).abs() < 1e-7);
}

#[test]
fn masked_entries_get_zero_and_fully_masked_rows_are_zero() {
    let ninf = f32::NEG_INFINITY;
    let mut x = vec![
        0.5, ninf, 2.0, ninf, ninf, ninf, ninf, ninf, ninf, 1.0, ninf, ninf,
    ];
    let want: Vec<f64> = x.chunks(4).flat_map(reference).collect();
    softmax_rows(&mut x, 4).unwrap();
    assert_close(&x, &want, ATOL, RTOL, "softmax masked");
    assert_eq!(&x[4..8], &[0.0; 4]); // the fully masked row
    assert_eq!(x[9], 1.0); // the only visible entry of its row
}

#[test]
fn softmax_rejects_partial_rows() {
    let mut x = vec![0f32; 10];
    assert!(matches!(
        softmax_rows(&mut x, 3),
        Err(OpError::Param { .. })
    ));
    assert!(matches!(
        softmax_rows(&mut x, 0),
        Err(OpError::Param { .. })
    ));
}
