//! RoPE, M-RoPE and Qwen2-VL's vision rotary against references that follow transformers'
//! procedures literally (build the full `[d]` cos/sin with `cat(freqs, freqs)`, split M-RoPE
//! sections with `mrope_section * 2` and chunk k from component k % 3, `x·cos + rotate_half(x)·sin`),
//! in f64.

mod ops_util;

use latte::backend::cpu::ops::{inv_freqs, rope_neox, vision_positions, OpError, RopeTable};
use ops_util::{assert_close, data};

/// `1/theta^(2i/dim)` in f64 (transformers: `arange(0, dim, 2) / dim`).
fn inv_freq_ref(dim: usize, theta: f64) -> Vec<f64> {
    (0..dim)
        .step_by(2)
        .map(|k| 1.0 / theta.powf(k as f64 / dim as f64))
        .collect()
}

/// `x·cos + rotate_half(x)·sin` for one head, `cos`/`sin` of length d.
fn apply_hf(x: &[f32], cos: &[f64], sin: &[f64]) -> Vec<f64> {
    let d = x.len();
    let h = d / 2;
    (0..d)
        .map(|k| {
            let rot = if k < h {
                -(x[k + h] as f64)
            } else {
                x[k - h] as f64
            };
            x[k] as f64 * cos[k] + rot * sin[k]
        })
        .collect()
}

/// Applies per-token full cos/sin (`[n, d]` angles) to `[n, heads, d]`.
fn apply_all(x: &[f32], heads: usize, angles: &[Vec<f64>]) -> Vec<f64> {
    let d = angles[0].len();
    let mut out = Vec::new();
    for (n, token) in x.chunks(heads * d).enumerate() {
        let cos: Vec<f64> = angles[n].iter().map(|a| a.cos()).collect();
        let sin: Vec<f64> = angles[n].iter().map(|a| a.sin()).collect();
        for head in token.chunks(d) {
            out.extend(apply_hf(head, &cos, &sin));
        }
    }
    out
}

// Angles are formed in f32 (as transformers does); with positions < 64 and frequencies ≤ 1 the
// angle's rounding is ≤ 64·6e-8 ≈ 4e-6 rad, so outputs (|x| ≤ 1, two terms) differ from the exact
// f64 rotation by ≤ ~1e-5.
const ATOL: f64 = 1e-5;

#[test]
fn inv_freqs_match_definition() {
    let got = inv_freqs(128, 1e6).unwrap();
    let want = inv_freq_ref(128, 1e6);
    assert_close(&got, &want, 0.0, 1e-7, "inv_freqs");
    assert!(inv_freqs(7, 1e4).is_err());
    assert!(inv_freqs(8, 0.0).is_err());
}

#[test]
fn rope_1d_matches_transformers() {
    let (n, heads, d) = (5, 3, 16);
    let positions = [0u32, 1, 2, 17, 63];
    let x = data(n * heads * d, 1, -1.0, 1.0);
    let table = RopeTable::new(&positions, &inv_freqs(d, 10000.0).unwrap()).unwrap();
    let mut got = x.clone();
    rope_neox(&mut got, heads, &table).unwrap();
    let f = inv_freq_ref(d, 10000.0);
    let angles: Vec<Vec<f64>> = positions
        .iter()
        .map(|&p| f.iter().chain(&f).map(|fi| p as f64 * fi).collect())
        .collect();
    assert_close(&got, &apply_all(&x, heads, &angles), ATOL, 0.0, "rope 1d");
    // Position 0 is the identity.
    assert_eq!(&got[..heads * d], &x[..heads * d]);
}

#[test]
fn mrope_matches_apply_multimodal_rotary_pos_emb() {
    // d = 24 → 12 frequencies split [2, 4, 6]: small but uneven, so a wrong split shows.
    let (heads, d, sections) = (2, 24, [2usize, 4, 6]);
    let positions: Vec<[u32; 3]> = vec![[0, 0, 0], [3, 3, 3], [5, 1, 2], [5, 7, 0], [9, 2, 11]];
    let n = positions.len();
    let x = data(n * heads * d, 2, -1.0, 1.0);
    let table = RopeTable::mrope(&positions, &inv_freqs(d, 1e6).unwrap(), sections).unwrap();
    let mut got = x.clone();
    rope_neox(&mut got, heads, &table).unwrap();

    // transformers: cos[c] (c = t, h, w) = cat(freqs·pos_c, freqs·pos_c); split the last dim into
    // mrope_section * 2 = [2, 4, 6, 2, 4, 6] and take chunk k from component k % 3.
    let f = inv_freq_ref(d, 1e6);
    let split: Vec<usize> = sections.iter().chain(&sections).copied().collect();
    let angles: Vec<Vec<f64>> = positions
        .iter()
        .map(|pos| {
            let full = |c: usize| -> Vec<f64> {
                f.iter().chain(&f).map(|fi| pos[c] as f64 * fi).collect()
            };
            let comps = [full(0), full(1), full(2)];
            let mut out = Vec::new();
            let mut start = 0;
            for (k, &len) in split.iter().enumerate() {
                out.extend_from_slice(&comps[k % 3][start..start + len]);
                start += len;
            }
            out
        })
        .collect();
    assert_close(&got, &apply_all(&x, heads, &angles), ATOL, 0.0, "mrope");

    // Text tokens (t = h = w = p) get plain 1-D RoPE, bit for bit.
    let text: Vec<[u32; 3]> = (0..4).map(|p| [p, p, p]).collect();
    let plain: Vec<u32> = (0..4).collect();
    let a = RopeTable::mrope(&text, &inv_freqs(d, 1e6).unwrap(), sections).unwrap();
    let b = RopeTable::new(&plain, &inv_freqs(d, 1e6).unwrap()).unwrap();
    assert_eq!(a, b);

    assert!(matches!(
        RopeTable::mrope(&positions, &inv_freqs(d, 1e6).unwrap(), [2, 4, 5]),
        Err(OpError::Param { .. })
    ));
}

#[test]
fn vision_positions_follow_rot_pos_emb_order() {
    // transformers: hpos = arange(h)[:, None].expand(h, w).reshape(h/m, m, w/m, m)
    // .permute(0, 2, 1, 3).flatten(), likewise wpos, then repeated t times. Emulated with indices.
    let (t, h, w, m) = (2, 4, 6, 2);
    let mut want = Vec::new();
    for _ in 0..t {
        // After the permute the index order is (a, c, b, d) over dims (h/m, w/m, m, m).
        for a in 0..h / m {
            for c in 0..w / m {
                for b in 0..m {
                    for dd in 0..m {
                        let (row, col) = (a * m + b, c * m + dd);
                        want.push([row as u32, col as u32]);
                    }
                }
            }
        }
    }
    assert_eq!(vision_positions(t, h, w, m).unwrap(), want);
    assert!(vision_positions(1, 3, 4, 2).is_err());
}

#[test]
fn vision_rotary_matches_qwen2_vl() {
    // head_dim 16 → VisionRotaryEmbedding(8): 4 frequencies 10000^(−k/8), k = 0, 2, 4, 6.
    let (heads, d) = (2, 16);
    let positions = vision_positions(1, 4, 4, 2).unwrap();
    let n = positions.len();
    let x = data(n * heads * d, 3, -1.0, 1.0);
    let table = RopeTable::vision_2d(&positions, d, 10000.0).unwrap();
    let mut got = x.clone();
    rope_neox(&mut got, heads, &table).unwrap();

    let f = inv_freq_ref(d / 2, 10000.0);
    let angles: Vec<Vec<f64>> = positions
        .iter()
        .map(|&[r, c]| {
            // rotary_pos_emb = cat(freqs[row], freqs[col]); emb = cat(rotary_pos_emb, rotary_pos_emb).
            let half: Vec<f64> = f
                .iter()
                .map(|fi| r as f64 * fi)
                .chain(f.iter().map(|fi| c as f64 * fi))
                .collect();
            half.iter().chain(&half).copied().collect()
        })
        .collect();
    assert_close(
        &got,
        &apply_all(&x, heads, &angles),
        ATOL,
        0.0,
        "vision rotary",
    );
    assert!(RopeTable::vision_2d(&positions, 18, 10000.0).is_err());
}

#[test]
fn rope_rejects_mismatched_shapes() {
    let table = RopeTable::new(&[0, 1], &inv_freqs(8, 1e4).unwrap()).unwrap();
    let mut x = vec![0f32; 2 * 3 * 8 - 1];
    assert!(matches!(
        rope_neox(&mut x, 3, &table),
        Err(OpError::Len { .. })
    ));
    assert!(matches!(
        rope_neox(&mut x, 0, &table),
        Err(OpError::Param { .. })
    ));
}
