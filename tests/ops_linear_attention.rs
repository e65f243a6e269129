//! ReLU linear attention against diffusers' formulation written literally in f64: pad V with a
//! row of ones, `(V_pad Kᵀ) Q`, divide by the last row plus eps.

mod ops_util;

use latte::backend::cpu::ops::{relu_linear_attention, OpError};
use ops_util::{assert_close, data};

fn reference(qkv: &[f32], heads: usize, d: usize, n: usize, eps: f64) -> Vec<f64> {
    let mut out = Vec::new();
    for h in 0..heads {
        let at = |part: usize, c: usize, p: usize| qkv[((h * 3 + part) * d + c) * n + p] as f64;
        let q = |c: usize, p: usize| at(0, c, p).max(0.0);
        let k = |c: usize, p: usize| at(1, c, p).max(0.0);
        // V padded with a row of ones: (d+1) × n.
        let v_pad = |c: usize, p: usize| if c == d { 1.0 } else { at(2, c, p) };
        // scores = V_pad · Kᵀ: (d+1) × d.
        let scores: Vec<Vec<f64>> = (0..=d)
            .map(|i| {
                (0..d)
                    .map(|j| (0..n).map(|p| v_pad(i, p) * k(j, p)).sum())
                    .collect()
            })
            .collect();
        // hs = scores · Q: (d+1) × n.
        let hs: Vec<Vec<f64>> = (0..=d)
            .map(|i| {
                (0..n)
                    .map(|p| (0..d).map(|j| scores[i][j] * q(j, p)).sum())
                    .collect()
            })
            .collect();
        for row in &hs[..d] {
            out.extend(row.iter().zip(&hs[d]).map(|(x, den)| x / (den + eps)));
        }
    }
    out
}

#[test]
fn matches_diffusers_formulation() {
    let mut scratch = Vec::new();
    // n = 37 pixels (not a SIMD multiple), two heads of d = 5; then a larger call reusing scratch.
    for (heads, d, n, seed) in [(2, 5, 37, 1), (3, 8, 64, 2), (1, 4, 3, 3)] {
        // Values in [-1, 2): ReLU zeroes about a third of q and k, but every divisor stays well
        // above 0 (most keys and queries are positive).
        let qkv = data(heads * 3 * d * n, seed, -1.0, 2.0);
        let mut out = vec![f32::NAN; heads * d * n];
        relu_linear_attention(&qkv, heads, d, n, 1e-15, &mut out, &mut scratch).unwrap();
        // Each output is a ratio of two sums of d·n non-negative-weighted terms computed in f32;
        // both have relative error ≲ (d + n)·eps ≈ 1e-5, so 1e-4 relative (plus 1e-5 absolute for
        // outputs near 0, whose numerators mix signs through V) holds with margin.
        assert_close(
            &out,
            &reference(&qkv, heads, d, n, 1e-15),
            1e-5,
            1e-4,
            "linear attention",
        );
    }
}

#[test]
fn rejects_bad_shapes() {
    let mut scratch = Vec::new();
    let qkv = vec![0f32; 2 * 3 * 4 * 5];
    let mut out = vec![0f32; 2 * 4 * 5];
    assert!(relu_linear_attention(&qkv, 2, 4, 5, 1e-15, &mut out, &mut scratch).is_ok());
    assert!(matches!(
        relu_linear_attention(&qkv[1..], 2, 4, 5, 1e-15, &mut out, &mut scratch),
        Err(OpError::Len { .. })
    ));
    assert!(matches!(
        relu_linear_attention(&qkv, 2, 4, 5, 1e-15, &mut out[1..], &mut scratch),
        Err(OpError::Len { .. })
    ));
    assert!(matches!(
        relu_linear_attention(&qkv, 0, 4, 5, 1e-15, &mut out, &mut scratch),
        Err(OpError::Param { .. })
    ));
}
