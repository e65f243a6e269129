//! Norms against plain f64 references written from the PyTorch definitions.

mod ops_util;

use latte::backend::cpu::ops::{group_norm, layer_norm, rms_norm, rms_norm_channels, OpError};
use ops_util::{assert_close, data};

// Tolerance for all norms: the f32 statistics are sums of at most a few thousand terms with lane
// accumulators (relative error ~ n·eps ≈ 1e-4 worst case, far less in practice), then a few f32
// operations per element. 2e-5 relative to the output scale (|w|·|x − mean|/σ ≤ ~10 here) with a
// 1e-5 absolute floor holds with margin and still catches any wrong formula (wrong eps placement,
// unbiased variance, wrong channel) by orders of magnitude.
const ATOL: f64 = 2e-5;
const RTOL: f64 = 2e-5;

fn rms_reference(x: &[f32], w: &[f32], eps: f64) -> Vec<f64> {
    let d = w.len();
    let mut out = Vec::new();
    for row in x.chunks(d) {
        let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / d as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        out.extend(
            row.iter()
                .zip(w)
                .map(|(&v, &wi)| v as f64 * inv * wi as f64),
        );
    }
    out
}

#[test]
fn rms_norm_matches_reference() {
    // 67 is not a multiple of any SIMD width; 1536 is Qwen2's hidden size.
    for (dim, rows) in [(1, 3), (67, 5), (1536, 2)] {
        let mut x = data(dim * rows, 1, -3.0, 3.0);
        let w = data(dim, 2, 0.5, 1.5);
        let want = rms_reference(&x, &w, 1e-6);
        rms_norm(&mut x, &w, 1e-6).unwrap();
        assert_close(&x, &want, ATOL, RTOL, "rms_norm");
    }
}

#[test]
fn rms_norm_survives_large_and_zero_rows() {
    let dim = 40;
    let mut x = data(dim, 3, -1.0, 1.0);
    x.iter_mut().for_each(|v| *v *= 1e15); // squares ~1e30, still finite in f32
    x.extend(vec![0.0; dim]); // all-zero row: 0/sqrt(eps) = 0
    let w = vec![1.0; dim];
    let want = rms_reference(&x, &w, 1e-6);
    rms_norm(&mut x, &w, 1e-6).unwrap();
    assert_close(&x, &want, ATOL, RTOL, "rms_norm large/zero");
}

#[test]
fn rms_norm_channels_matches_reference() {
    // [C, H, W] = [5, 9, 13]: 117 pixels span two 64-pixel tiles and a ragged tail.
    let (c, h, w) = (5, 9, 13);
    let x = data(c * h * w, 4, -2.0, 2.0);
    let weight = data(c, 5, 0.5, 1.5);
    let bias = data(c, 6, -0.5, 0.5);
    let pixels = h * w;
    let mut want = vec![0f64; x.len()];
    for p in 0..pixels {
        let ms = (0..c)
            .map(|ch| (x[ch * pixels + p] as f64).powi(2))
            .sum::<f64>()
            / c as f64;
        let inv = 1.0 / (ms + 1e-5).sqrt();
        for ch in 0..c {
            want[ch * pixels + p] =
                x[ch * pixels + p] as f64 * inv * weight[ch] as f64 + bias[ch] as f64;
        }
    }
    let mut got = x.clone();
    rms_norm_channels(&mut got, &weight, Some(&bias), 1e-5).unwrap();
    assert_close(&got, &want, ATOL, RTOL, "rms_norm_channels");
    // Without bias: the same minus the bias.
    let mut got = x.clone();
    rms_norm_channels(&mut got, &weight, None, 1e-5).unwrap();
    for p in 0..x.len() {
        want[p] -= bias[p / pixels] as f64;
    }
    assert_close(&got, &want, ATOL, RTOL, "rms_norm_channels no bias");
}

fn layer_reference(
    x: &[f32],
    dim: usize,
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    eps: f64,
) -> Vec<f64> {
    let mut out = Vec::new();
    for row in x.chunks(dim) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dim as f64;
        for (i, &v) in row.iter().enumerate() {
            let n = (v as f64 - mean) / (var + eps).sqrt();
            out.push(n * w.map_or(1.0, |w| w[i] as f64) + b.map_or(0.0, |b| b[i] as f64));
        }
    }
    out
}

#[test]
fn layer_norm_matches_reference_with_and_without_affine() {
    let dim = 75;
    // A large common offset: a one-pass E[x²] − E[x]² would lose everything here.
    let x: Vec<f32> = data(dim * 4, 7, -1.0, 1.0)
        .iter()
        .map(|v| v + 1000.0)
        .collect();
    let w = data(dim, 8, 0.5, 1.5);
    let b = data(dim, 9, -1.0, 1.0);
    for (wo, bo) in [
        (Some(&w[..]), Some(&b[..])),
        (Some(&w[..]), None),
        (None, Some(&b[..])),
        (None, None),
    ] {
        let mut got = x.clone();
        layer_norm(&mut got, dim, wo, bo, 1e-5).unwrap();
        let want = layer_reference(&x, dim, wo, bo, 1e-5);
        // The offset of 1000 costs f32 input resolution (ulp(1000) = 6e-5 of a unit-spread row):
        // the reference sees the same rounded inputs, so only the statistics' error remains.
        assert_close(&got, &want, 1e-3, 1e-3, "layer_norm");
    }
}

#[test]
fn group_norm_matches_reference() {
    let (c, groups, h, w) = (6, 3, 5, 7);
    let x = data(c * h * w, 10, -2.0, 3.0);
    let weight = data(c, 11, 0.5, 1.5);
    let bias = data(c, 12, -1.0, 1.0);
    let pixels = h * w;
    let per = c / groups;
    let mut want = vec![0f64; x.len()];
    for g in 0..groups {
        let range = g * per * pixels..(g + 1) * per * pixels;
        let n = range.len() as f64;
        let mean = x[range.clone()].iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x[range.clone()]
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        for i in range {
            let ch = i / pixels;
            want[i] =
                (x[i] as f64 - mean) / (var + 1e-6).sqrt() * weight[ch] as f64 + bias[ch] as f64;
        }
    }
    let mut got = x.clone();
    group_norm(&mut got, c, groups, Some(&weight), Some(&bias), 1e-6).unwrap();
    assert_close(&got, &want, ATOL, RTOL, "group_norm");
}

#[test]
fn norms_reject_bad_shapes() {
    let mut x = vec![0f32; 10];
    assert!(matches!(
        rms_norm(&mut x, &[1.0; 3], 1e-6),
        Err(OpError::Param { .. })
    ));
    assert!(matches!(
        rms_norm(&mut x, &[], 1e-6),
        Err(OpError::Param { .. })
    ));
    assert!(matches!(
        rms_norm_channels(&mut x, &[1.0; 5], Some(&[0.0; 4]), 1e-6),
        Err(OpError::Len { .. })
    ));
    assert!(matches!(
        layer_norm(&mut x, 3, None, None, 1e-5),
        Err(OpError::Param { .. })
    ));
    assert!(matches!(
        layer_norm(&mut x, 5, Some(&[1.0; 4]), None, 1e-5),
        Err(OpError::Len { .. })
    ));
    assert!(matches!(
        group_norm(&mut x, 5, 2, None, None, 1e-5),
        Err(OpError::Param { .. })
    ));
    assert!(matches!(
        group_norm(&mut x, 4, 2, None, None, 1e-5),
        Err(OpError::Param { .. })
    ));
    assert!(matches!(
        group_norm(&mut x, 5, 0, None, None, 1e-5),
        Err(OpError::Param { .. })
    ));
    assert!(matches!(
        group_norm(&mut x, 5, 5, Some(&[1.0; 2]), None, 1e-5),
        Err(OpError::Len { .. })
    ));
}
