//! Every op of the wgpu backend against the CPU backend (the oracle of every GPU kernel), on small
//! shapes that cover each kernel's edges (partial tiles, k not a multiple of the tile depth, GQA,
//! masks, the TCRA block in both modes, every weight type, grouped and strided convolutions).
//!
//! Runs on whatever adapter `--device wgpu` would take; in CI that is Mesa's lavapipe (software
//! Vulkan). Without an adapter the tests pass vacuously unless `LATTE_REQUIRE_GPU=1`, which makes a
//! missing GPU a failure (a prepared GPU run cannot pass silently).
//!
//! Tolerances, as `max |gpu − cpu| / max(1, max |cpu|)` unless said otherwise: 1e-5 for pure f32
//! arithmetic whose only difference is summation order or a fused multiply-add (a few hundred terms
//! at most, 2⁻²⁴ each); 2e-6 absolute for the transcendental activations (WGSL's exp and tanh are
//! within a few ulp; erf is a polynomial of 1e-7); matrix products as stated at their test.
#![cfg(feature = "wgpu")]

mod common;

use common::gpu::gpu;
use latte::backend::cpu::ops::RopeTable;
use latte::backend::cpu::CPU;
use latte::backend::wgpu::WgpuBackend;
use latte::backend::{
    AttentionShape, Backend, BackendError, BiasMode, Conv2d, DeviceBuffer, GatedScores, Mask,
    Placement, ScoreBlock, Unary,
};
use latte::dtype::TensorType;
use latte::tensor::TensorView;

/// splitmix64 → uniform values in [-scale, scale).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

fn error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
        / scale
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f32], tolerance: f32) {
    assert!(
        got.iter().all(|v| v.is_finite()) || want.iter().any(|v| !v.is_finite()),
        "{what}: non-finite"
    );
    let e = error(got, want);
    if std::env::var_os("LATTE_PRINT_ERRORS").is_some() {
        eprintln!("{what}: {e:e}");
    }
    assert!(e <= tolerance, "{what}: error {e:e} > {tolerance:e}");
}

fn read(gpu: &WgpuBackend, b: &<WgpuBackend as Backend>::Buffer) -> Vec<f32> {
    gpu.read_vec(b.all()).unwrap()
}

/// Runs an in-place op on the CPU and the GPU from the same input and compares.
fn in_place(
    what: &str,
    x: &[f32],
    tolerance: f32,
    cpu: impl FnOnce(&mut Vec<f32>),
    gpu_op: impl FnOnce(&WgpuBackend, &mut <WgpuBackend as Backend>::Buffer),
) {
    let Some(gpu) = gpu() else { return };
    let mut want = x.to_vec();
    cpu(&mut want);
    let mut g = gpu.upload(x).unwrap();
    gpu_op(gpu, &mut g);
    assert_close(what, &read(gpu, &g), &want, tolerance);
}

#[test]
fn buffers_round_trip_with_offsets() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng(1);
    let a = rng.vec(1000, 1.0);
    let mut b = gpu.upload(&a).unwrap();
    assert_eq!(read(gpu, &b), a);
    gpu.write(b.slice_mut(10..20), &[7.0; 10]).unwrap();
    let mut c = gpu.alloc(30).unwrap();
    gpu.copy(b.slice(5..35), c.all_mut()).unwrap();
    let got = read(gpu, &c);
    assert_eq!(&got[..5], &a[5..10]);
    assert_eq!(&got[5..15], &[7.0; 10]);
    assert_eq!(&got[15..], &a[20..35]);
    let mut out = vec![0.0; 3];
    gpu.read(b.slice(997..), &mut out).unwrap();
    assert_eq!(out, &a[997..]);
    // Lengths are checked.
    assert!(gpu.write(b.slice_mut(0..3), &[1.0; 4]).is_err());
    assert!(gpu.copy(b.slice(0..3), c.slice_mut(0..4)).is_err());
    // The ledger counts what is alive (on a device of its own: the other tests share `gpu`).
    let own = WgpuBackend::open(latte::backend::wgpu::AdapterChoice::Best)
        .unwrap()
        .unwrap();
    let before = own.device_memory().unwrap().allocated;
    let big = own.alloc(1 << 20).unwrap();
    assert!(own.device_memory().unwrap().allocated >= before + (4 << 20));
    drop(big);
    assert_eq!(own.device_memory().unwrap().allocated, before);
}

#[test]
fn norms_match_the_cpu() {
    let mut rng = Rng(2);
    let (rows, dim) = (5, 300);
    let x = rng.vec(rows * dim, 3.0);
    let w = rng.vec(dim, 1.0);
    let b = rng.vec(dim, 1.0);
    in_place(
        "rms_norm",
        &x,
        1e-5,
        |v| CPU.rms_norm(v.all_mut(), w.all(), 1e-6).unwrap(),
        |g, v| {
            let w = g.upload(&w).unwrap();
            g.rms_norm(v.all_mut(), w.all(), 1e-6).unwrap()
        },
    );
    for (wo, bo) in [(true, true), (true, false), (false, true), (false, false)] {
        in_place(
            &format!("layer_norm w {wo} b {bo}"),
            &x,
            1e-5,
            |v| {
                CPU.layer_norm(
                    v.all_mut(),
                    dim,
                    wo.then(|| w.all()),
                    bo.then(|| b.all()),
                    1e-5,
                )
                .unwrap()
            },
            |g, v| {
                let (wg, bg) = (g.upload(&w).unwrap(), g.upload(&b).unwrap());
                g.layer_norm(
                    v.all_mut(),
                    dim,
                    wo.then(|| wg.all()),
                    bo.then(|| bg.all()),
                    1e-5,
                )
                .unwrap()
            },
        );
    }
    // Channel norms over a [C, P] image, at an offset inside a larger buffer.
    let (c, p) = (7, 333);
    let image = rng.vec(c * p + 11, 2.0);
    let (cw, cb) = (rng.vec(c, 1.0), rng.vec(c, 1.0));
    for bias in [true, false] {
        in_place(
            &format!("rms_norm_channels bias {bias}"),
            &image,
            1e-5,
            |v| {
                CPU.rms_norm_channels(v.slice_mut(11..), cw.all(), bias.then(|| cb.all()), 1e-5)
                    .unwrap()
            },
            |g, v| {
                let (wg, bg) = (g.upload(&cw).unwrap(), g.upload(&cb).unwrap());
                g.rms_norm_channels(v.slice_mut(11..), wg.all(), bias.then(|| bg.all()), 1e-5)
                    .unwrap()
            },
        );
    }
    let (mean, inv) = (rng.vec(c, 1.0), rng.vec(c, 2.0));
    in_place(
        "batch_norm",
        &image[..c * p],
        1e-5,
        |v| {
            CPU.batch_norm(v.all_mut(), mean.all(), inv.all(), cw.all(), cb.all())
                .unwrap()
        },
        |g, v| {
            let up = |x: &Vec<f32>| g.upload(x).unwrap();
            let (m, s, w, b) = (up(&mean), up(&inv), up(&cw), up(&cb));
            g.batch_norm(v.all_mut(), m.all(), s.all(), w.all(), b.all())
                .unwrap()
        },
    );
    // A bad shape is an error, not a dispatch.
    if let Some(g) = gpu() {
        let mut v = g.upload(&x).unwrap();
        let w = g.upload(&w[..7]).unwrap();
        assert!(matches!(
            g.rms_norm(v.all_mut(), w.all(), 1e-6),
            Err(BackendError::Op(_))
        ));
    }
}

#[test]
fn element_wise_ops_match_the_cpu() {
    let mut rng = Rng(3);
    // Large enough to fold the dispatch grid past 65535 workgroups of 256? No: that needs 16M
    // values; the fold is covered by `large_grids_fold`.
    let mut x = rng.vec(70_000, 6.0);
    x.extend([0.0, -0.0, 30.0, -30.0, 100.0, -100.0, 1e-30, -88.0, 90.0]);
    for f in [
        Unary::Silu,
        Unary::GeluErf,
        Unary::GeluTanh,
        Unary::QuickGelu,
        Unary::Relu,
        Unary::Mish,
        Unary::Tanh,
        Unary::Add(1.0),
    ] {
        // Absolute: the values reach 100, their functions' errors do not grow with them.
        let tolerance = 2e-6 * 100.0;
        in_place(
            &format!("{f:?}"),
            &x,
            tolerance / 100.0,
            |v| CPU.unary(v.all_mut(), f).unwrap(),
            |g, v| g.unary(v.all_mut(), f).unwrap(),
        );
    }
    let y = rng.vec(x.len(), 2.0);
    in_place(
        "swiglu",
        &x,
        1e-5,
        |v| CPU.swiglu(v.all_mut(), y.all()).unwrap(),
        |g, v| {
            let yg = g.upload(&y).unwrap();
            g.swiglu(v.all_mut(), yg.all()).unwrap()
        },
    );
    in_place(
        "add",
        &x,
        0.0,
        |v| CPU.add(v.all_mut(), y.all()).unwrap(),
        |g, v| {
            let yg = g.upload(&y).unwrap();
            g.add(v.all_mut(), yg.all()).unwrap()
        },
    );
    let (rows, d) = (9, 130);
    let h = rng.vec(rows * d, 1.0);
    let delta = rng.vec(rows * d, 1.0);
    let gate = rng.vec(d, 1.0);
    let shift = rng.vec(d, 1.0);
    in_place(
        "add_gated_rows",
        &h,
        1e-6,
        |v| {
            CPU.add_gated_rows(v.all_mut(), delta.all(), gate.all())
                .unwrap()
        },
        |g, v| {
            let (dg, gg) = (g.upload(&delta).unwrap(), g.upload(&gate).unwrap());
            g.add_gated_rows(v.all_mut(), dg.all(), gg.all()).unwrap()
        },
    );
    in_place(
        "modulate_rows",
        &h,
        1e-6,
        |v| {
            CPU.modulate_rows(v.all_mut(), gate.all(), shift.all())
                .unwrap()
        },
        |g, v| {
            let (sc, sh) = (g.upload(&gate).unwrap(), g.upload(&shift).unwrap());
            g.modulate_rows(v.all_mut(), sc.all(), sh.all()).unwrap()
        },
    );
}

#[test]
fn rope_matches_the_cpu() {
    let mut rng = Rng(4);
    let (tokens, heads, d) = (11, 3, 32);
    let inv = latte::backend::cpu::ops::inv_freqs(d, 10000.0).unwrap();
    let positions: Vec<[u32; 3]> = (0..tokens as u32).map(|i| [i, i / 2, i % 5]).collect();
    let table = RopeTable::mrope(&positions, &inv, [4, 6, 6]).unwrap();
    let x = rng.vec(tokens * heads * d + 5, 2.0);
    in_place(
        "rope",
        &x,
        1e-6,
        |v| {
            let r = CPU.rope_table(&table).unwrap();
            CPU.rope(v.slice_mut(5..), heads, &r).unwrap()
        },
        |g, v| {
            let r = g.rope_table(&table).unwrap();
            g.rope(v.slice_mut(5..), heads, &r).unwrap()
        },
    );
}

/// A weight of type `ty` with `rows` rows of `k`, quantized from random values by latte's
/// reference quantizers.
fn weight_bytes(ty: TensorType, rows: usize, k: usize, seed: u64) -> Vec<u8> {
    let values = Rng(seed).vec(rows * k, 1.0);
    let bytes = ty.row_bytes(k as u64).unwrap() as usize * rows;
    let mut out = vec![0u8; bytes];
    latte::quant::quantize(ty, &values, &mut out).unwrap();
    out
}

#[test]
fn matmul_matches_the_cpu_for_every_type() {
    let Some(g) = gpu() else { return };
    // Subgroup reductions where the device has them, then the workgroup-memory ones.
    for subgroups in [true, false] {
        g.use_subgroups(subgroups);
        matmul_cases(g, subgroups, 2.0);
    }
    g.use_subgroups(true);
}

#[test]
fn matmul_matches_the_cpu_past_f16_range() {
    let Some(g) = gpu() else { return };
    // Activations of 2³¹ (a DC-AE decoder passes 10⁸): f16 scales and F16 partners would overflow;
    // the CPU scales them by a power of two, the GPU rounds to f16's precision without overflow.
    matmul_cases(g, true, 2.0 * (1u64 << 30) as f32);
}

/// Every type against the CPU, activations uniform in [-amplitude, amplitude).
fn matmul_cases(g: &WgpuBackend, subgroups: bool, amplitude: f32) {
    // Σ|w|·|x| per output bounds what reordering a sum can change.
    for ty in TensorType::COMPUTABLE {
        let k = if ty.block_size() == 256 { 512 } else { 96 };
        let rows = 70; // two tiles of 64, the second partial
        let bytes = weight_bytes(ty, rows, k, 5);
        let view = TensorView::new("w", ty, &[k as u64, rows as u64], &bytes).unwrap();
        let mut dequantized = vec![0.0; rows * k];
        latte::quant::dequantize(ty, &bytes, &mut dequantized).unwrap();
        let bias = Rng(6).vec(rows, 1.0);
        let cpu_w = CPU.weight(view, Placement::Shared).unwrap();
        let gpu_w = g.weight(view, Placement::Shared).unwrap();
        let gpu_bias = g.upload(&bias).unwrap();
        for n in [1, 3, 5, 67] {
            let x = Rng(7 + n as u64).vec(n * k, amplitude);
            let mut want = vec![0.0; n * rows];
            CPU.matmul(&cpu_w, x.all(), n, want.all_mut(), Some(bias.all()))
                .unwrap();
            let xg = g.upload(&x).unwrap();
            let mut yg = g.alloc(n * rows).unwrap();
            g.matmul(&gpu_w, xg.all(), n, yg.all_mut(), Some(gpu_bias.all()))
                .unwrap();
            let got = read(g, &yg);
            // Per output: the CPU's products are of the same rounded activations and exactly
            // decoded weights, so the difference is the order of a k-term sum (≤ k·2⁻²⁴ of Σ|w·x|),
            // except for Q4_1 / Q5_1, whose CPU dot uses the block sum s = f16(d·Σq): 2⁻¹¹ of the
            // min term m·Σx.
            let tolerance = match ty {
                TensorType::Q4_1 | TensorType::Q5_1 => 2e-3,
                _ => 1e-5,
            };
            let mut worst = 0f32;
            for j in 0..n {
                for i in 0..rows {
                    let scale: f32 = (0..k)
                        .map(|t| (dequantized[i * k + t] * x[j * k + t]).abs())
                        .sum::<f32>()
                        .max(1e-3);
                    let e = (got[j * rows + i] - want[j * rows + i]).abs() / scale;
                    worst = worst.max(e);
                    assert!(
                        e <= tolerance,
                        "{ty} n {n} row {i} col {j}: {} vs {} (error {e:e} of Σ|w·x| {scale})",
                        got[j * rows + i],
                        want[j * rows + i]
                    );
                }
            }
            if std::env::var_os("LATTE_PRINT_ERRORS").is_some() {
                eprintln!("matmul {ty} n {n} subgroups {subgroups}: {worst:e} of Σ|w·x|");
            }
        }
    }
}

#[test]
fn matmul_parts_split_at_the_binding_limit() {
    // A weight larger than one binding is split into row parts that write their columns of y.
    let Some(g) = gpu() else { return };
    let (k, rows) = (64, 40);
    let bytes = weight_bytes(TensorType::F32, rows, k, 9);
    let view = TensorView::new("w", TensorType::F32, &[k as u64, rows as u64], &bytes).unwrap();
    let parts = latte::backend::wgpu::weights::plan_parts(
        "w",
        latte::backend::wgpu::kernels::WeightFormat::F32,
        rows,
        k,
        1024,
    )
    .unwrap();
    assert!(parts.len() > 1);
    let x = Rng(10).vec(2 * k, 1.0);
    let mut want = vec![0.0; 2 * rows];
    let cpu_w = CPU.weight(view, Placement::Shared).unwrap();
    CPU.matmul(&cpu_w, x.all(), 2, want.all_mut(), None)
        .unwrap();
    let gpu_w = g.weight(view, Placement::Shared).unwrap();
    let xg = g.upload(&x).unwrap();
    let mut yg = g.alloc(2 * rows).unwrap();
    g.matmul(&gpu_w, xg.all(), 2, yg.all_mut(), None).unwrap();
    assert_close("one part", &read(g, &yg), &want, 1e-5);
}

#[test]
fn group_weights_work_only_while_resident() {
    let Some(g) = gpu() else { return };
    let (k, rows) = (64, 33);
    let a = weight_bytes(TensorType::Q8_0, rows, k, 11);
    let b = weight_bytes(TensorType::Q4_K, rows, 256, 12);
    let va = TensorView::new("a", TensorType::Q8_0, &[k as u64, rows as u64], &a).unwrap();
    let vb = TensorView::new("b", TensorType::Q4_K, &[256, rows as u64], &b).unwrap();
    let wa = g.weight(va, Placement::Group(3)).unwrap();
    let wb = g.weight(vb, Placement::Group(3)).unwrap();
    let x = Rng(13).vec(k, 1.0);
    let xg = g.upload(&x).unwrap();
    let mut yg = g.alloc(rows).unwrap();
    assert!(matches!(
        g.matmul(&wa, xg.all(), 1, yg.all_mut(), None),
        Err(BackendError::GroupNotResident { group: 3 })
    ));
    let bytes = g.group_bytes(&[&wa, &wb]);
    assert!(bytes >= (a.len() + b.len()) as u64);
    g.reserve_group_slots(2, bytes).unwrap();
    let staged = g.stage_group(3, &[&wa, &wb]).unwrap();
    g.commit_group(3, staged).unwrap();
    assert!(g.group_resident(3));
    g.matmul(&wa, xg.all(), 1, yg.all_mut(), None).unwrap();
    let mut want = vec![0.0; rows];
    CPU.matmul(
        &CPU.weight(va, Placement::Shared).unwrap(),
        x.all(),
        1,
        want.all_mut(),
        None,
    )
    .unwrap();
    assert_close("group weight", &read(g, &yg), &want, 1e-5);
    let xb = Rng(14).vec(256, 1.0);
    let xbg = g.upload(&xb).unwrap();
    g.matmul(&wb, xbg.all(), 1, yg.all_mut(), None).unwrap();
    CPU.matmul(
        &CPU.weight(vb, Placement::Shared).unwrap(),
        xb.all(),
        1,
        want.all_mut(),
        None,
    )
    .unwrap();
    assert_close("second weight of the group", &read(g, &yg), &want, 1e-5);
    g.release_group(3);
    assert!(!g.group_resident(3));
    assert!(g.matmul(&wa, xg.all(), 1, yg.all_mut(), None).is_err());
    g.release_group_slots();
}

fn attention_case(
    shape: AttentionShape,
    mask: Mask,
    block: Option<(BiasMode, usize, bool)>,
    seed: u64,
) {
    let Some(g) = gpu() else { return };
    let mut rng = Rng(seed);
    let AttentionShape {
        n_q,
        n_kv,
        n_heads,
        n_kv_heads,
        head_dim: d,
    } = shape;
    let q = rng.vec(n_q * n_heads * d, 1.5);
    let k = rng.vec(n_kv * n_kv_heads * d, 1.5);
    let v = rng.vec(n_kv * n_kv_heads * d, 1.0);
    let (cols, size) = match block {
        Some((_, col0, _)) => (n_kv - col0, n_heads * n_q * (n_kv - col0)),
        None => (0, 0),
    };
    // The previous layer's block: scores (pre-softmax) or probabilities (post-softmax, ≥ 0).
    let previous: Vec<f32> = match block {
        Some((BiasMode::PostSoftmax, ..)) => {
            rng.vec(size, 1.0).iter().map(|v| v.abs() * 0.2).collect()
        }
        _ => rng.vec(size, 1.0),
    };
    let gate = rng.vec(n_heads, 1.0);
    let mut want = vec![0.0; q.len()];
    let mut want_readout = vec![0.0; size];
    let cpu_block = block.map(|(mode, col0, add)| ScoreBlock {
        mode,
        col0,
        n_cols: cols,
        add: add.then(|| GatedScores {
            previous: previous.all(),
            gate: gate.all(),
        }),
        readout: None,
    });
    let cpu_block = cpu_block.map(|mut b| {
        b.readout = Some(want_readout.all_mut());
        b
    });
    CPU.attention(
        q.all(),
        k.all(),
        v.all(),
        shape,
        mask,
        cpu_block,
        want.all_mut(),
    )
    .unwrap();
    let up = |x: &Vec<f32>| g.upload(x).unwrap();
    let (qg, kg, vg, pg, gg) = (up(&q), up(&k), up(&v), up(&previous), up(&gate));
    let mut out = g.alloc(q.len()).unwrap();
    let mut readout = g.alloc(size).unwrap();
    let gpu_block = block.map(|(mode, col0, add)| ScoreBlock {
        mode,
        col0,
        n_cols: cols,
        add: add.then(|| GatedScores {
            previous: pg.all(),
            gate: gg.all(),
        }),
        readout: Some(readout.all_mut()),
    });
    g.attention(
        qg.all(),
        kg.all(),
        vg.all(),
        shape,
        mask,
        gpu_block,
        out.all_mut(),
    )
    .unwrap();
    let what = format!("{shape:?} {mask:?} {block:?}");
    assert_close(&what, &read(g, &out), &want, 1e-5);
    if size > 0 {
        assert_close(
            &format!("{what} readout"),
            &read(g, &readout),
            &want_readout,
            1e-5,
        );
    }
}

#[test]
fn attention_matches_the_cpu() {
    let shape = |n_q, n_kv, n_heads, n_kv_heads, head_dim| AttentionShape {
        n_q,
        n_kv,
        n_heads,
        n_kv_heads,
        head_dim,
    };
    // Text: causal with a cache offset, GQA 6:2, more keys than one workgroup's 64.
    attention_case(
        shape(5, 75, 6, 2, 32),
        Mask::Causal { offset: 70 },
        None,
        20,
    );
    attention_case(shape(9, 9, 4, 4, 16), Mask::Causal { offset: 0 }, None, 21);
    // Vision: bidirectional, head_dim 80.
    attention_case(shape(12, 12, 2, 2, 80), Mask::None, None, 22);
    // The replica: prompt keys then image keys, the TCRA block on the image columns.
    for mode in [BiasMode::PreSoftmax, BiasMode::PostSoftmax] {
        for add in [false, true] {
            attention_case(
                shape(16, 23, 4, 2, 32),
                Mask::None,
                Some((mode, 7, add)),
                23,
            );
        }
    }
    // A block under a causal mask: masked entries read out as 0.
    attention_case(
        shape(6, 10, 2, 1, 8),
        Mask::Causal { offset: 3 },
        Some((BiasMode::PostSoftmax, 4, true)),
        24,
    );
}

fn conv_case(conv: Conv2d, hw: [usize; 2], ty: TensorType, bias: bool, seed: u64) {
    let Some(g) = gpu() else { return };
    let mut rng = Rng(seed);
    let weight_len = conv.weight_len().unwrap();
    let k = weight_len / conv.out_channels;
    let bytes = weight_bytes(ty, conv.out_channels, k, seed + 1);
    // ggml order; a quantized 1×1 kernel is stored as the matrix [in, out] (its rows must be
    // whole blocks), as latte convert writes it.
    let dims: Vec<u64> = if conv.kernel == [1, 1] {
        vec![
            (conv.in_channels / conv.groups) as u64,
            conv.out_channels as u64,
        ]
    } else {
        vec![
            conv.kernel[1] as u64,
            conv.kernel[0] as u64,
            (conv.in_channels / conv.groups) as u64,
            conv.out_channels as u64,
        ]
    };
    let view = TensorView::new("conv", ty, &dims, &bytes).unwrap();
    let x = rng.vec(conv.in_channels * hw[0] * hw[1], 1.0);
    let b = rng.vec(conv.out_channels, 1.0);
    let [oh, ow] = conv.output_hw(hw).unwrap();
    let mut want = vec![0.0; conv.out_channels * oh * ow];
    // The GPU multiplies the dequantized kernel by f32 activations; the CPU runs a quantized 1×1
    // as a quantized matmul (activations rounded to Q8, tests/ops_conv.rs), so its oracle here is
    // the CPU's f32 convolution on the same dequantized kernel.
    let mut dequantized = vec![0f32; weight_len];
    latte::quant::dequantize(ty, &bytes, &mut dequantized).unwrap();
    let f32_bytes: Vec<u8> = dequantized.iter().flat_map(|v| v.to_le_bytes()).collect();
    let oracle_view = TensorView::new("conv", TensorType::F32, &dims, &f32_bytes).unwrap();
    let cw = CPU.conv_weight(oracle_view, &conv).unwrap();
    CPU.conv2d(
        &conv,
        &cw,
        bias.then(|| b.all()),
        x.all(),
        hw,
        want.all_mut(),
    )
    .unwrap();
    let gw = g.conv_weight(view, &conv).unwrap();
    let (xg, bg) = (g.upload(&x).unwrap(), g.upload(&b).unwrap());
    let mut out = g.alloc(want.len()).unwrap();
    g.conv2d(
        &conv,
        &gw,
        bias.then(|| bg.all()),
        xg.all(),
        hw,
        out.all_mut(),
    )
    .unwrap();
    assert_close(
        &format!("{conv:?} {hw:?} {ty} bias {bias}"),
        &read(g, &out),
        &want,
        1e-5,
    );
}

#[test]
fn convolutions_match_the_cpu() {
    let same = Conv2d::same;
    // 3×3 dense, channel counts and pixels past one 64-tile.
    conv_case(same(5, 70, 3), [9, 8], TensorType::F32, true, 30);
    conv_case(same(8, 6, 3), [5, 7], TensorType::F16, false, 31);
    // 1×1 (nn.Linear over channels), quantized rows of 64.
    conv_case(same(64, 9, 1), [6, 6], TensorType::Q8_0, false, 32);
    conv_case(same(64, 9, 1), [6, 6], TensorType::Q4_0, true, 33);
    // Depthwise 3×3 and 5×5.
    conv_case(
        Conv2d {
            groups: 12,
            ..same(12, 12, 3)
        },
        [7, 5],
        TensorType::F32,
        true,
        34,
    );
    conv_case(
        Conv2d {
            groups: 6,
            ..same(6, 6, 5)
        },
        [8, 8],
        TensorType::F16,
        false,
        35,
    );
    // Grouped 1×1 (multi-scale attention's per-head projection).
    conv_case(
        Conv2d {
            groups: 3,
            ..same(12, 12, 1)
        },
        [4, 6],
        TensorType::F32,
        false,
        36,
    );
    // Strided, padded, non-square.
    let strided = Conv2d {
        in_channels: 3,
        out_channels: 4,
        kernel: [3, 2],
        stride: [2, 1],
        padding: [1, 0],
        groups: 1,
    };
    conv_case(strided, [7, 6], TensorType::F32, true, 37);
}

#[test]
fn resampling_and_linear_attention_match_the_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng(40);
    let (c, hw) = (8, [3, 5]);
    let x = rng.vec(c * hw[0] * hw[1], 1.0);
    let xg = g.upload(&x).unwrap();
    let n = x.len() * 4;
    let mut want = vec![0.0; n];
    let mut out = g.alloc(n).unwrap();
    CPU.upsample_nearest(x.all(), c, hw, 2, want.all_mut())
        .unwrap();
    g.upsample_nearest(xg.all(), c, hw, 2, out.all_mut())
        .unwrap();
    assert_eq!(read(g, &out), want, "upsample_nearest");
    let mut want = vec![0.0; x.len()];
    let mut out = g.alloc(x.len()).unwrap();
    CPU.pixel_shuffle(x.all(), c, hw, 2, want.all_mut())
        .unwrap();
    g.pixel_shuffle(xg.all(), c, hw, 2, out.all_mut()).unwrap();
    assert_eq!(read(g, &out), want, "pixel_shuffle");
    let mut want = vec![0.0; x.len() * 3];
    let mut out = g.alloc(x.len() * 3).unwrap();
    CPU.repeat_channels(x.all(), c, hw, 3, want.all_mut())
        .unwrap();
    g.repeat_channels(xg.all(), c, hw, 3, out.all_mut())
        .unwrap();
    assert_eq!(read(g, &out), want, "repeat_channels");

    let (heads, d, pixels) = (3, 8, 300);
    let qkv = rng.vec(heads * 3 * d * pixels, 1.0);
    let mut want = vec![0.0; heads * d * pixels];
    CPU.relu_linear_attention(qkv.all(), heads, d, pixels, 1e-15, want.all_mut())
        .unwrap();
    let qg = g.upload(&qkv).unwrap();
    let mut out = g.alloc(want.len()).unwrap();
    g.relu_linear_attention(qg.all(), heads, d, pixels, 1e-15, out.all_mut())
        .unwrap();
    assert_close("relu_linear_attention", &read(g, &out), &want, 1e-5);
}

#[test]
fn refused_allocations_and_a_lost_device_are_errors() {
    let Some(shared) = gpu() else { return };
    // More than one storage binding holds: refused before the driver sees it.
    let too_many = (shared.max_binding_bytes() / 4 + 1) as usize;
    assert!(matches!(
        shared.alloc(too_many),
        Err(BackendError::TooLarge { .. })
    ));
    // A device of its own, lost: every later call says so.
    let g = WgpuBackend::open(latte::backend::wgpu::AdapterChoice::Best)
        .unwrap()
        .unwrap();
    let x = g.upload(&[1.0, 2.0]).unwrap();
    g.close();
    assert!(matches!(g.alloc(4), Err(BackendError::DeviceLost(_))));
    let mut out = [0.0; 2];
    assert!(matches!(
        g.read(x.all(), &mut out),
        Err(BackendError::DeviceLost(_))
    ));
    let err = g.alloc(4).unwrap_err().to_string();
    assert!(err.contains("lost"), "{err}");
}

#[test]
fn large_grids_fold() {
    // 17M values: more than 65535 workgroups of 256 in one dimension.
    let Some(g) = gpu() else { return };
    let n = 17 << 20;
    let mut x = g.alloc(n).unwrap();
    g.unary(x.all_mut(), Unary::Add(2.5)).unwrap();
    let mut tail = vec![0.0; 4];
    g.read(x.slice(n - 4..), &mut tail).unwrap();
    assert_eq!(tail, [2.5; 4]);
}
