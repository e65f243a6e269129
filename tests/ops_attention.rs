//! Attention against a plain f64 reference that follows the definitions one score at a time:
//! GQA head mapping, causal offset, scale override, TCRA pre/post-softmax block bias and readout.

mod ops_util;

use latte::backend::cpu::ops::{
    attention, AttentionScratch, AttentionShape, BiasMode, BlockBias, Mask, OpError,
};
use ops_util::{assert_close, data};

struct Case {
    shape: AttentionShape,
    scale: Option<f32>,
    mask: Mask,
    /// `(mode, col0, n_cols, with_add)`.
    block: Option<(BiasMode, usize, usize, bool)>,
    /// Multiplies q so scores get large.
    q_gain: f32,
}

/// Returns `(out [n_q, H, d], readout [H, n_q, n_cols])`.
fn reference(c: &Case, q: &[f32], k: &[f32], v: &[f32], add: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let AttentionShape {
        n_q,
        n_kv,
        n_heads,
        n_kv_heads,
        head_dim: d,
    } = c.shape;
    let scale = c.scale.map_or(1.0 / (d as f64).sqrt(), |s| s as f64);
    let n_cols = c.block.map_or(0, |b| b.2);
    let mut out = vec![0f64; n_q * n_heads * d];
    let mut readout = vec![0f64; n_heads * n_q * n_cols];
    for h in 0..n_heads {
        let g = h / (n_heads / n_kv_heads); // repeat_kv: heads [g·r, (g+1)·r) share KV head g
        for i in 0..n_q {
            let visible = |j: usize| match c.mask {
                Mask::None => true,
                Mask::Causal { offset } => j <= i + offset,
            };
            let mut s: Vec<f64> = (0..n_kv)
                .map(|j| {
                    if !visible(j) {
                        return f64::NEG_INFINITY;
                    }
                    (0..d)
                        .map(|t| {
                            q[(i * n_heads + h) * d + t] as f64
                                * k[(j * n_kv_heads + g) * d + t] as f64
                        })
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let bias_at = |cc: usize| add[(h * n_q + i) * n_cols + cc] as f64;
            if let Some((BiasMode::PreSoftmax, col0, n, with_add)) = c.block {
                for cc in 0..n {
                    if visible(col0 + cc) {
                        if with_add {
                            s[col0 + cc] += bias_at(cc);
                        }
                        readout[(h * n_q + i) * n_cols + cc] = s[col0 + cc];
                    }
                }
            }
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let mut p: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = p.iter().sum();
            p.iter_mut().for_each(|x| *x /= z);
            if let Some((BiasMode::PostSoftmax, col0, n, with_add)) = c.block {
                if with_add {
                    for cc in 0..n {
                        if visible(col0 + cc) {
                            p[col0 + cc] += bias_at(cc);
                        }
                    }
                    let z: f64 = p.iter().sum();
                    p.iter_mut().for_each(|x| *x /= z);
                }
                for cc in 0..n {
                    if visible(col0 + cc) {
                        readout[(h * n_q + i) * n_cols + cc] = p[col0 + cc];
                    }
                }
            }
            for j in 0..n_kv {
                for t in 0..d {
                    out[(i * n_heads + h) * d + t] += p[j] * v[(j * n_kv_heads + g) * d + t] as f64;
                }
            }
        }
    }
    (out, readout)
}

fn run(c: &Case, scratch: &mut AttentionScratch, seed: u64) {
    let s = c.shape;
    let mut q = data(s.n_q * s.n_heads * s.head_dim, seed, -1.0, 1.0);
    q.iter_mut().for_each(|x| *x *= c.q_gain);
    let k = data(s.n_kv * s.n_kv_heads * s.head_dim, seed + 1, -1.0, 1.0);
    let v = data(s.n_kv * s.n_kv_heads * s.head_dim, seed + 2, -1.0, 1.0);
    let n_cols = c.block.map_or(0, |b| b.2);
    // Post-softmax biases are probabilities-sized (gate·P_prev, |g| < 1); keep them positive-ish so
    // the renormalising sum stays well away from 0.
    let add = data(s.n_heads * s.n_q * n_cols, seed + 3, -0.05, 0.3);
    let (want_out, want_readout) = reference(c, &q, &k, &v, &add);

    let mut out = vec![f32::NAN; q.len()];
    let mut readout = vec![f32::NAN; want_readout.len()];
    let bias = c.block.map(|(mode, col0, n_cols, with_add)| BlockBias {
        mode,
        col0,
        n_cols,
        add: with_add.then_some(&add[..]),
        readout: Some(&mut readout[..]),
    });
    attention(&q, &k, &v, s, c.scale, c.mask, bias, &mut out, scratch).unwrap();
    // Scores are d-term f32 dot products (relative error ~d·eps ≈ 1e-6 of |q||k|); probabilities
    // inherit that absolute score error (≤ |s|·1e-6 with |s| ≤ ~50 in the large-score case), and the
    // output is a convex combination of |v| ≤ 1. 2e-5 absolute bounds all of it with margin, while
    // a wrong head, mask column or bias placement moves outputs by ~1e-2 or more.
    assert_close(&out, &want_out, 2e-5, 0.0, "attention out");
    assert_close(&readout, &want_readout, 2e-5, 1e-5, "attention readout");
}

fn shape(n_q: usize, n_kv: usize, n_heads: usize, n_kv_heads: usize, d: usize) -> AttentionShape {
    AttentionShape {
        n_q,
        n_kv,
        n_heads,
        n_kv_heads,
        head_dim: d,
    }
}

#[test]
fn bidirectional_gqa() {
    let mut scratch = AttentionScratch::new();
    // 6 query heads over 2 KV heads (groups of 3); d = 10 is not a SIMD multiple.
    let c = Case {
        shape: shape(5, 7, 6, 2, 10),
        scale: None,
        mask: Mask::None,
        block: None,
        q_gain: 1.0,
    };
    run(&c, &mut scratch, 1);
    // Multi-head (no sharing) and multi-query (one KV head).
    for (h, hkv) in [(3, 3), (4, 1)] {
        let c = Case {
            shape: shape(4, 6, h, hkv, 8),
            ..c
        };
        run(&c, &mut scratch, 2);
    }
}

#[test]
fn causal_with_offsets() {
    let mut scratch = AttentionScratch::new();
    for (n_q, n_kv, offset) in [(6, 6, 0), (3, 9, 6), (1, 40, 39), (4, 9, 2), (2, 5, 100)] {
        let c = Case {
            shape: shape(n_q, n_kv, 4, 2, 33),
            scale: None,
            mask: Mask::Causal { offset },
            block: None,
            q_gain: 1.0,
        };
        run(&c, &mut scratch, 3 + offset as u64);
    }
}

#[test]
fn scale_override_and_large_scores_stay_finite() {
    let mut scratch = AttentionScratch::new();
    let c = Case {
        shape: shape(3, 5, 2, 2, 16),
        scale: Some(0.5),
        mask: Mask::None,
        block: None,
        q_gain: 1.0,
    };
    run(&c, &mut scratch, 7);
    // Scores up to ~±50: without max subtraction exp would still be finite, so push to ~±5e2
    // through the scale and check the result against the stable reference.
    let c = Case {
        scale: Some(10.0),
        q_gain: 8.0,
        ..c
    };
    let s = c.shape;
    let q: Vec<f32> = data(s.n_q * s.n_heads * s.head_dim, 8, -1.0, 1.0)
        .iter()
        .map(|x| x * 8.0)
        .collect();
    let k = data(s.n_kv * s.n_kv_heads * s.head_dim, 9, -1.0, 1.0);
    let v = data(s.n_kv * s.n_kv_heads * s.head_dim, 10, -1.0, 1.0);
    let mut out = vec![0f32; q.len()];
    attention(&q, &k, &v, s, c.scale, c.mask, None, &mut out, &mut scratch).unwrap();
    assert!(out.iter().all(|x| x.is_finite()));
    let (want, _) = reference(&c, &q, &k, &v, &[]);
    // Near-one-hot rows: the f32 score error (|s| ~ 500 × 1e-6) moves weights by ~1e-3 at worst
    // where two scores nearly tie; 1e-3 absolute still tells a wrong max apart (errors ~1).
    assert_close(&out, &want, 1e-3, 0.0, "large scores");
}

#[test]
fn tcra_pre_softmax_bias_and_readout() {
    let mut scratch = AttentionScratch::new();
    // Prompt of 5 keys then an image block of 4 (columns 5..9), bidirectional, as replica layers.
    let c = Case {
        shape: shape(4, 9, 4, 2, 12),
        scale: None,
        mask: Mask::None,
        block: Some((BiasMode::PreSoftmax, 5, 4, true)),
        q_gain: 1.0,
    };
    run(&c, &mut scratch, 11);
    // The first layer of a group: no bias, readout only.
    run(
        &Case {
            block: Some((BiasMode::PreSoftmax, 5, 4, false)),
            ..c
        },
        &mut scratch,
        12,
    );
    // A block partly hidden by a causal mask: hidden entries get no bias and read out as 0.
    run(
        &Case {
            mask: Mask::Causal { offset: 4 },
            block: Some((BiasMode::PreSoftmax, 3, 5, true)),
            ..c
        },
        &mut scratch,
        13,
    );
}

#[test]
fn tcra_post_softmax_bias_and_readout() {
    let mut scratch = AttentionScratch::new();
    let c = Case {
        shape: shape(3, 8, 6, 3, 9),
        scale: None,
        mask: Mask::None,
        block: Some((BiasMode::PostSoftmax, 2, 6, true)),
        q_gain: 1.0,
    };
    run(&c, &mut scratch, 21);
    run(
        &Case {
            block: Some((BiasMode::PostSoftmax, 0, 8, false)),
            ..c
        },
        &mut scratch,
        22,
    );
    run(
        &Case {
            mask: Mask::Causal { offset: 3 },
            ..c
        },
        &mut scratch,
        23,
    );
}

#[test]
fn scratch_is_reused_across_shapes() {
    // A large call, then a smaller one on the same scratch: stale data must not leak in.
    let mut scratch = AttentionScratch::for_shape(&shape(6, 20, 4, 4, 16)).unwrap();
    for (i, s) in [
        shape(6, 20, 4, 4, 16),
        shape(2, 3, 2, 1, 5),
        shape(6, 20, 4, 4, 16),
    ]
    .into_iter()
    .enumerate()
    {
        let c = Case {
            shape: s,
            scale: None,
            mask: Mask::Causal { offset: 1 },
            block: Some((BiasMode::PreSoftmax, 1, 2, true)),
            q_gain: 1.0,
        };
        run(&c, &mut scratch, 30 + i as u64);
    }
}

#[test]
fn attention_rejects_bad_shapes() {
    let mut scratch = AttentionScratch::new();
    let s = shape(2, 3, 4, 2, 4);
    let q = vec![0f32; 2 * 4 * 4];
    let kv = vec![0f32; 3 * 2 * 4];
    let mut out = vec![0f32; q.len()];
    let call = |s: AttentionShape,
                q: &[f32],
                bias: Option<BlockBias<'_>>,
                out: &mut [f32],
                scratch: &mut AttentionScratch| {
        attention(q, &kv, &kv, s, None, Mask::None, bias, out, scratch)
    };
    assert!(call(s, &q, None, &mut out, &mut scratch).is_ok());
    assert!(matches!(
        call(shape(2, 3, 3, 2, 4), &q, None, &mut out, &mut scratch),
        Err(OpError::Param { .. })
    ));
    assert!(matches!(
        call(s, &q[1..], None, &mut out, &mut scratch),
        Err(OpError::Len { .. })
    ));
    assert!(matches!(
        call(s, &q, None, &mut out[1..], &mut scratch),
        Err(OpError::Len { .. })
    ));
    let over = BlockBias {
        mode: BiasMode::PreSoftmax,
        col0: 2,
        n_cols: 2,
        add: None,
        readout: None,
    };
    assert!(matches!(
        call(s, &q, Some(over), &mut out, &mut scratch),
        Err(OpError::Param { .. })
    ));
    let add = vec![0f32; 4 * 2 * 2 - 1];
    let short = BlockBias {
        mode: BiasMode::PostSoftmax,
        col0: 1,
        n_cols: 2,
        add: Some(&add),
        readout: None,
    };
    assert!(matches!(
        call(s, &q, Some(short), &mut out, &mut scratch),
        Err(OpError::Len { .. })
    ));
}
