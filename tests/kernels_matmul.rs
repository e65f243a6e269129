//! The CPU matmul against oracles we did not write: the scalar kernel against an f64 product of
//! the reference dequantizers' values, and every SIMD path this CPU (or qemu) runs against the
//! scalar kernel, for every weight type, with odd shapes.

mod common;

use common::*;
use latte::backend::cpu::dot::{dot_partner, Kernels};
use latte::backend::cpu::{matmul_with_isa, Isa, MatmulError, MatmulScratch};
use latte::dtype::TensorType;
use latte::tensor::TensorView;

/// Output rows to test: 1, fewer than a rayon task, and more than two tasks with a ragged end.
const MS: [usize; 3] = [1, 5, 37];
/// Activation columns: matrix-vector, partial tiles, one full tile, a full tile plus a partial.
const NS: [usize; 5] = [1, 2, 3, 4, 9];

struct Case {
    ty: TensorType,
    k: usize,
    m: usize,
    n: usize,
    w: Vec<u8>,
    x: Vec<f32>,
}

impl Case {
    fn run(&self, isa: Isa) -> Vec<f32> {
        let view = TensorView::new("w", self.ty, &[self.k as u64, self.m as u64], &self.w).unwrap();
        let mut y = vec![f32::NAN; self.n * self.m];
        let mut scratch = MatmulScratch::new();
        matmul_with_isa(isa, &view, &self.x, self.n, &mut y, &mut scratch).unwrap();
        y
    }

    /// f64 products of the dequantized weights and the dequantized dot-partner activations (what
    /// the kernels multiply, exactly), and Σ|w·x| per output as the scale of rounding errors.
    fn reference(&self) -> (Vec<f64>, Vec<f64>) {
        let (k, m, n) = (self.k, self.m, self.n);
        let w = dequantized(self.ty, &self.w, k * m);
        let partner = dot_partner(self.ty).unwrap();
        let mut xq = vec![0u8; partner.row_bytes((k * n) as u64).unwrap() as usize];
        // Quantizing all n rows at once equals row by row: k is a whole number of partner blocks.
        latte::quant::quantize(partner, &self.x, &mut xq).unwrap();
        let x = dequantized(partner, &xq, k * n);
        let (mut exact, mut scale) = (vec![0.0; n * m], vec![0.0; n * m]);
        for j in 0..n {
            for i in 0..m {
                let (wr, xr) = (&w[i * k..][..k], &x[j * k..][..k]);
                exact[j * m + i] = wr.iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum();
                scale[j * m + i] = wr
                    .iter()
                    .zip(xr)
                    .map(|(&a, &b)| (a as f64 * b as f64).abs())
                    .sum::<f64>()
                    + self.offset_rounding(i, xr);
            }
        }
        (exact, scale)
    }

    /// Q4_1 / Q5_1 dots use Q8_1's `s = d·Σq`, computed with the unrounded d and stored as f16
    /// (ggml's design), while the dequantized activations use the f16-rounded d: the offset term
    /// m·s carries up to 2·2^-11 relative error the f64 reference does not have. Returned divided
    /// by the tolerance so that `tol · scale` covers it.
    fn offset_rounding(&self, row: usize, xr: &[f32]) -> f64 {
        if !matches!(self.ty, TensorType::Q4_1 | TensorType::Q5_1) {
            return 0.0;
        }
        let row_bytes = self.w.len() / self.m;
        let blocks = self.w[row * row_bytes..][..row_bytes].chunks_exact(self.ty.block_bytes());
        let err: f64 = blocks
            .zip(xr.chunks_exact(32))
            .map(|(b, xb)| {
                let m = half::f16::from_le_bytes([b[2], b[3]]).to_f32() as f64;
                let s: f64 = xb.iter().map(|&v| v as f64).sum();
                (m * s).abs() * 2f64.powi(-10)
            })
            .sum();
        err / REF_TOL
    }
}

fn cases(ty: TensorType, seed: u64) -> Vec<Case> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for k in test_ks(ty) {
        for (mi, &m) in MS.iter().enumerate() {
            // Every n on the smallest k; a couple per m otherwise (keeps debug runs quick).
            for (ni, &n) in NS.iter().enumerate() {
                if k != test_ks(ty)[0] && (ni + mi) % 2 == 1 {
                    continue;
                }
                let w = if ni % 2 == 1 {
                    random_block_bytes(ty, k, m, &mut rng)
                } else {
                    None
                }
                .unwrap_or_else(|| weight_bytes(ty, k, m, &mut rng));
                let x = rng.activations(k * n);
                out.push(Case { ty, k, m, n, w, x });
            }
        }
    }
    out
}

/// Scalar kernel vs the f64 reference. The integer block sums are exact in both; what differs is
/// f32 rounding: a few roundings per block scale product (~1e-7 relative each), the f32 sum over
/// at most a few dozen blocks (~1e-6 relative to Σ|terms|), and the reference dequantizer's own
/// f32 rounding of each weight. K-quant min terms can make Σ|terms| a few times Σ|w·x|. 1e-4·Σ|w·x|
/// leaves a wide margin while a wrong nibble, scale or bit gives errors of order 1e-2..1.
const REF_TOL: f64 = 1e-4;

/// SIMD vs scalar: the same exact integer sums, summed in another order in f32; see `REF_TOL`.
const SIMD_TOL: f64 = 1e-4;

fn assert_close(what: &str, got: &[f32], want: &[f64], scale: &[f64], tol: f64) {
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= tol * s + 1e-30,
            "{what}: output {i}: got {g}, want {w} (error {err:e}, allowed {:e})",
            tol * s
        );
    }
}

#[test]
fn scalar_matches_f64_reference_for_every_type() {
    for (t, &ty) in TensorType::COMPUTABLE.iter().enumerate() {
        for case in cases(ty, 1 + t as u64) {
            let (want, scale) = case.reference();
            let got = case.run(Isa::Scalar);
            let what = format!("{ty} scalar k={} m={} n={}", case.k, case.m, case.n);
            assert_close(&what, &got, &want, &scale, REF_TOL);
        }
    }
}

#[test]
fn every_simd_path_matches_scalar_for_every_type() {
    let simd: Vec<Isa> = Isa::supported().filter(|&i| i != Isa::Scalar).collect();
    if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        assert!(
            !simd.is_empty(),
            "no SIMD path detected on a SIMD architecture"
        );
    }
    for (t, &ty) in TensorType::COMPUTABLE.iter().enumerate() {
        for case in cases(ty, 100 + t as u64) {
            let want: Vec<f64> = case.run(Isa::Scalar).iter().map(|&v| v as f64).collect();
            let (_, scale) = case.reference();
            for &isa in &simd {
                let got = case.run(isa);
                let what = format!("{ty} {isa} k={} m={} n={}", case.k, case.m, case.n);
                assert_close(&what, &got, &want, &scale, SIMD_TOL);
            }
        }
    }
}

/// Activation blocks with exact halves (d = 1 when max|x| = 127), where round-half-away (Q8_0 /
/// Q8_1) and round-half-even (Q8_K) differ, plus random rows with zeros and outliers.
fn quantizer_inputs() -> Vec<Vec<f32>> {
    let mut rng = Rng::new(7);
    let mut ties: Vec<f32> = (0..256).map(|i| (i % 64) as f32 - 31.5).collect();
    for block in ties.chunks_exact_mut(32) {
        block[0] = 127.0;
    }
    let mut negative_max = ties.clone();
    negative_max[0] = -127.0;
    // Equal magnitudes of both signs: the first one sets Q8_K's scale sign.
    let mut both = vec![0.25f32; 256];
    both[3] = -2.0;
    both[9] = 2.0;
    // Non-finite values and subnormal blocks (1/d overflows): garbage in, but the same garbage.
    let mut non_finite = rng.activations(1024);
    non_finite[3] = f32::NAN;
    non_finite[300] = f32::INFINITY;
    non_finite[700] = f32::NEG_INFINITY;
    let subnormal: Vec<f32> = (0..256).map(|i| (i as f32 - 128.0) * 1e-44).collect();
    vec![
        ties,
        negative_max,
        both,
        vec![0.0; 512],
        rng.activations(512),
        rng.activations(1024).iter().map(|v| v * 1e-3).collect(),
        non_finite,
        subnormal,
    ]
}

#[test]
fn activation_quantizers_are_bit_exact_with_reference() {
    for isa in Isa::supported() {
        for ty in TensorType::COMPUTABLE {
            let kernels = Kernels::new(ty, isa).unwrap();
            for x in quantizer_inputs() {
                let bytes = kernels.partner.row_bytes(x.len() as u64).unwrap() as usize;
                let (mut got, mut want) = (vec![0xAAu8; bytes], vec![0x55u8; bytes]);
                (kernels.quantize)(&x, &mut got);
                latte::quant::quantize(kernels.partner, &x, &mut want).unwrap();
                assert!(
                    got == want,
                    "{isa} {ty}: {} quantizer differs",
                    kernels.partner
                );
            }
        }
    }
}

#[test]
fn shape_and_type_errors_are_reported() {
    let w = vec![0u8; TensorType::Q4_0.row_bytes(64 * 3).unwrap() as usize];
    let view = TensorView::new("w", TensorType::Q4_0, &[64, 3], &w).unwrap();
    let mut scratch = MatmulScratch::new();
    let mut y = vec![0.0; 6];
    let x = vec![0.0; 256];
    assert!(matches!(
        matmul_with_isa(Isa::Scalar, &view, &x[..127], 2, &mut y, &mut scratch),
        Err(MatmulError::XShape { .. })
    ));
    assert!(matches!(
        matmul_with_isa(Isa::Scalar, &view, &x[..128], 2, &mut y[..5], &mut scratch),
        Err(MatmulError::YShape { .. })
    ));
    let q8k = vec![0u8; 292];
    let view8k = TensorView::new("a", TensorType::Q8_K, &[256], &q8k).unwrap();
    assert!(matches!(
        matmul_with_isa(
            Isa::Scalar,
            &view8k,
            &x[..256],
            1,
            &mut y[..1],
            &mut scratch
        ),
        Err(MatmulError::UnsupportedType { .. })
    ));
    let view3d = TensorView::new("w3", TensorType::Q4_0, &[64, 1, 3], &w).unwrap();
    assert!(matches!(
        matmul_with_isa(Isa::Scalar, &view3d, &x[..128], 2, &mut y, &mut scratch),
        Err(MatmulError::NotAMatrix { .. })
    ));
    let missing = Isa::ALL.into_iter().find(|i| !i.is_supported());
    if let Some(isa) = missing {
        assert_eq!(
            matmul_with_isa(isa, &view, &x[..128], 2, &mut y, &mut scratch),
            Err(MatmulError::UnsupportedIsa { isa })
        );
    }
}

#[test]
fn scratch_grows_once_and_is_reused() {
    let mut rng = Rng::new(3);
    let (k, m) = (256, 8);
    let w = weight_bytes(TensorType::Q4_K, k, m, &mut rng);
    let view = TensorView::new("w", TensorType::Q4_K, &[k as u64, m as u64], &w).unwrap();
    let mut scratch = MatmulScratch::new();
    let x = rng.activations(k * 4);
    let mut y = vec![0.0; 4 * m];
    latte::backend::cpu::matmul(&view, &x, 4, &mut y, &mut scratch).unwrap();
    let grown = scratch.capacity_bytes();
    assert!(grown >= 4 * 292);
    let first = y.clone();
    latte::backend::cpu::matmul(&view, &x[..k], 1, &mut y[..m], &mut scratch).unwrap();
    latte::backend::cpu::matmul(&view, &x, 4, &mut y, &mut scratch).unwrap();
    assert_eq!(scratch.capacity_bytes(), grown);
    assert_eq!(y, first, "same inputs, same outputs");
}

/// Every output bit-identical however the rows and columns around it are tiled: a row alone, a
/// column alone, one thread or two. Row tiles (4 × 1, 2 × C, edge tiles) must sum each output in
/// the same order, or images would change with the thread count and the batch.
#[test]
fn results_do_not_depend_on_tiling_or_threads() {
    let (m, n) = (37, 9);
    for isa in Isa::supported() {
        for (t, &ty) in TensorType::COMPUTABLE.iter().enumerate() {
            let mut rng = Rng::new(100 + t as u64);
            let k = test_ks(ty)[0];
            let w = weight_bytes(ty, k, m, &mut rng);
            let x = rng.activations(k * n);
            let run = |w: &[u8], rows: usize, x: &[f32], cols: usize| {
                let view = TensorView::new("w", ty, &[k as u64, rows as u64], w).unwrap();
                let mut y = vec![f32::NAN; cols * rows];
                matmul_with_isa(isa, &view, x, cols, &mut y, &mut MatmulScratch::new()).unwrap();
                y
            };
            let full = run(&w, m, &x, n);
            let row_bytes = w.len() / m;
            for i in [0, 3, 5, 36] {
                let alone = run(&w[i * row_bytes..][..row_bytes], 1, &x, n);
                for j in 0..n {
                    let (a, b) = (alone[j].to_bits(), full[j * m + i].to_bits());
                    assert_eq!(a, b, "{ty} {isa}: row {i} column {j} alone");
                }
            }
            for j in [0, 4, 8] {
                let alone = run(&w, m, &x[j * k..][..k], 1);
                for i in 0..m {
                    let (a, b) = (alone[i].to_bits(), full[j * m + i].to_bits());
                    assert_eq!(a, b, "{ty} {isa}: column {j} alone, row {i}");
                }
            }
            let one_thread = on_one_thread(|| run(&w, m, &x, n));
            let same = one_thread
                .iter()
                .zip(&full)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{ty} {isa}: one thread differs from the pool");
        }
    }
}

/// Repacked Q4_0, Q8_0, Q4_K and Q6_K (`packed`): every packed kernel against the scalar kernel on the
/// file's layout (same integer sums, another f32 order: `SIMD_TOL`), and, since each output is
/// summed in block order whatever the batch, bit-identical for a column alone and on one thread.
#[test]
fn packed_kernels_match_scalar_and_do_not_depend_on_batch_or_threads() {
    use latte::backend::cpu::matmul::matmul_packed;
    use latte::backend::cpu::packed::PackedWeight;
    let mut rng = Rng::new(7);
    for (ty, (k, m)) in PACKED_TYPES.into_iter().flat_map(|ty| {
        [(1, 8), (8, 24), (32, 40)].map(|(blocks, m)| (ty, (blocks * ty.block_size(), m)))
    }) {
        let packing = packing_isas(ty);
        let w = weight_bytes(ty, k, m, &mut rng);
        let view = TensorView::new("w", ty, &[k as u64, m as u64], &w).unwrap();
        let packed = PackedWeight::pack(&view).unwrap();
        for n in [1, 2, 3, 4, 5, 9] {
            let x = rng.activations(k * n);
            let case = Case {
                ty,
                k,
                m,
                n,
                w: w.clone(),
                x: x.clone(),
            };
            let want: Vec<f64> = case.run(Isa::Scalar).iter().map(|&v| v as f64).collect();
            let (_, scale) = case.reference();
            for &isa in &packing {
                let run = |x: &[f32], cols: usize| {
                    let mut y = vec![f32::NAN; cols * m];
                    matmul_packed(isa, &packed, x, cols, &mut y, &mut MatmulScratch::new())
                        .unwrap();
                    y
                };
                let got = run(&x, n);
                let what = format!("packed {ty} {isa} k={k} m={m} n={n}");
                assert_close(&what, &got, &want, &scale, SIMD_TOL);
                for j in [0, n - 1] {
                    let alone = run(&x[j * k..][..k], 1);
                    for i in 0..m {
                        let (a, b) = (alone[i].to_bits(), got[j * m + i].to_bits());
                        assert_eq!(a, b, "{what}: column {j} alone, row {i}");
                    }
                }
                let one_thread = on_one_thread(|| run(&x, n));
                let same = one_thread
                    .iter()
                    .zip(&got)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{what}: one thread differs from the pool");
                let mut y = vec![0.0; n * m + 1];
                let wrong = matmul_packed(isa, &packed, &x, n, &mut y, &mut MatmulScratch::new());
                assert!(matches!(wrong, Err(MatmulError::YShape { .. })));
                let mut y = vec![0.0; n * m];
                let scalar = matmul_packed(
                    Isa::Scalar,
                    &packed,
                    &x,
                    n,
                    &mut y,
                    &mut MatmulScratch::new(),
                );
                assert!(matches!(scalar, Err(MatmulError::UnsupportedIsa { .. })));
            }
        }
    }
}

/// Q4_0, Q8_0, Q4_K and Q6_K in the file's layout through the packed kernel, each task packing its own rows
/// (`matmul_repacking`, what the CPU backend runs on expert-group weights): bit-identical to
/// `matmul_packed` on the copy packed at load, for every batch, on one thread and on the pool,
/// with tasks that split the rows (m = 64 is four tasks of 16), and a clear error for weights it
/// cannot pack.
#[test]
fn packed_per_task_equals_packed_at_load() {
    use latte::backend::cpu::matmul::{matmul_packed, matmul_repacking};
    use latte::backend::cpu::packed::PackedWeight;
    let mut rng = Rng::new(11);
    for (ty, (k, m)) in PACKED_TYPES.into_iter().flat_map(|ty| {
        [(1, 8), (8, 24), (3, 64), (32, 40)].map(|(blocks, m)| (ty, (blocks * ty.block_size(), m)))
    }) {
        let packing = packing_isas(ty);
        let w = weight_bytes(ty, k, m, &mut rng);
        let view = TensorView::new("w", ty, &[k as u64, m as u64], &w).unwrap();
        let packed = PackedWeight::pack(&view).unwrap();
        for n in [1, 3, 4, 9, 64] {
            let x = rng.activations(k * n);
            for &isa in &packing {
                let at_load = |x: &[f32], cols: usize| {
                    let mut y = vec![f32::NAN; cols * m];
                    matmul_packed(isa, &packed, x, cols, &mut y, &mut MatmulScratch::new())
                        .unwrap();
                    y
                };
                let per_task = |x: &[f32], cols: usize| {
                    let mut y = vec![f32::NAN; cols * m];
                    matmul_repacking(isa, &view, x, cols, &mut y, &mut MatmulScratch::new())
                        .unwrap();
                    y
                };
                let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
                let want = bits(at_load(&x, n));
                let what = format!("{ty} packed per task, {isa} k={k} m={m} n={n}");
                assert_eq!(bits(per_task(&x, n)), want, "{what}");
                assert_eq!(
                    bits(on_one_thread(|| per_task(&x, n))),
                    want,
                    "{what}, 1 thread"
                );
                let last = &x[(n - 1) * k..];
                assert_eq!(
                    bits(per_task(last, 1)),
                    want[(n - 1) * m..],
                    "{what}, column alone"
                );
            }
        }
    }
    let ty = TensorType::Q4_0;
    for isa in packing_isas(ty) {
        let mut y = vec![0.0; 12];
        let q4_rows_12 = weight_bytes(ty, 32, 12, &mut rng);
        let view = TensorView::new("w.12", ty, &[32, 12], &q4_rows_12).unwrap();
        let x = rng.activations(32);
        let err = matmul_repacking(isa, &view, &x, 1, &mut y, &mut MatmulScratch::new());
        assert!(matches!(err, Err(MatmulError::NotPackable { ref name, .. }) if name == "w.12"));
        let q4_1 = weight_bytes(TensorType::Q4_1, 32, 8, &mut rng);
        let view = TensorView::new("w.q4_1", TensorType::Q4_1, &[32, 8], &q4_1).unwrap();
        let err = matmul_repacking(isa, &view, &x, 1, &mut y[..8], &mut MatmulScratch::new());
        assert!(
            matches!(err, Err(MatmulError::NotPackable { .. })),
            "{err:?}"
        );
    }
    let w = weight_bytes(ty, 32, 8, &mut rng);
    let view = TensorView::new("w", ty, &[32, 8], &w).unwrap();
    let (x, mut y) = (rng.activations(32), vec![0.0; 8]);
    let scalar = matmul_repacking(Isa::Scalar, &view, &x, 1, &mut y, &mut MatmulScratch::new());
    assert!(matches!(scalar, Err(MatmulError::UnsupportedIsa { .. })));
}

/// The types with a packed layout.
const PACKED_TYPES: [TensorType; 4] = [
    TensorType::Q4_0,
    TensorType::Q8_0,
    TensorType::Q4_K,
    TensorType::Q6_K,
];

/// The instruction sets with a packed kernel for `ty` on this CPU (every x86-64 one has AVX2).
fn packing_isas(ty: TensorType) -> Vec<Isa> {
    use latte::backend::cpu::dot::packed_kernel;
    let packing: Vec<Isa> = Isa::supported()
        .filter(|&i| packed_kernel(ty, i).is_some())
        .collect();
    if cfg!(target_arch = "x86_64") {
        assert!(!packing.is_empty(), "no packed {ty} kernel on x86-64");
    }
    packing
}

/// `f` on a pool of one thread.
fn on_one_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(f)
}

/// `matmul_channels` (channel-major: x k rows of n, y m rows of n, the 1×1 convolution's layout)
/// against the token-major product of the same kernel on the transposed input, bit for bit: the
/// columns are gathered and quantized as whole columns would be, and written back transposed.
/// Every computable type on every instruction set here; k below, at and above the 256-value
/// gathering piece, m in whole pack groups (the per-task packed kernel) and not, n ragged against
/// the 16-column gather and the tile, and one case big enough for the parallel gather.
#[test]
fn channel_major_equals_token_major_on_the_transpose() {
    use latte::backend::cpu::matmul::{matmul_repacking, packs_per_task};
    use latte::backend::cpu::matmul_channels;
    let mut rng = Rng::new(23);
    for &ty in TensorType::COMPUTABLE.iter() {
        let block = ty.block_size().max(32);
        let ks = [block, 3 * block, 9 * block];
        for (i, (k, m, n)) in ks
            .into_iter()
            .flat_map(|k| [(k, 8, 1), (k, 16, 21), (k, 70, 5), (k, 24, 37)])
            .chain([(block * (1024 / block), 16, 96)])
            .enumerate()
        {
            let w = weight_bytes(ty, k, m, &mut rng);
            let view = TensorView::new("w", ty, &[k as u64, m as u64], &w).unwrap();
            let x = rng.activations(k * n);
            let transposed: Vec<f32> = (0..n * k).map(|e| x[(e % k) * n + e / k]).collect();
            for isa in Isa::supported() {
                let what = format!("{ty} {isa} k={k} m={m} n={n}");
                let mut token_major = vec![f32::NAN; m * n];
                let mut scratch = MatmulScratch::new();
                if packs_per_task(isa, &view) {
                    matmul_repacking(isa, &view, &transposed, n, &mut token_major, &mut scratch)
                } else {
                    matmul_with_isa(isa, &view, &transposed, n, &mut token_major, &mut scratch)
                }
                .unwrap();
                let mut channels = vec![f32::NAN; m * n];
                matmul_channels(isa, &view, &x, n, &mut channels, &mut scratch).unwrap();
                for row in 0..m {
                    for j in 0..n {
                        let (got, want) = (channels[row * n + j], token_major[j * m + row]);
                        assert_eq!(got.to_bits(), want.to_bits(), "{what}: y[{row}, {j}]");
                    }
                }
                if i == 1 {
                    let one_thread = on_one_thread(|| {
                        let mut y = vec![f32::NAN; m * n];
                        matmul_channels(isa, &view, &x, n, &mut y, &mut MatmulScratch::new())
                            .unwrap();
                        y
                    });
                    let same = one_thread
                        .iter()
                        .zip(&channels)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{what}: one thread differs from the pool");
                }
            }
        }
    }
}

/// Channel-major products reject inputs and outputs of the wrong length, as token-major ones do.
#[test]
fn channel_major_shape_errors_are_reported() {
    use latte::backend::cpu::matmul_channels;
    let mut rng = Rng::new(29);
    let ty = TensorType::Q8_0;
    let w = weight_bytes(ty, 64, 8, &mut rng);
    let view = TensorView::new("w", ty, &[64, 8], &w).unwrap();
    let x = rng.activations(64 * 3);
    for isa in Isa::supported() {
        let mut scratch = MatmulScratch::new();
        let mut y = vec![0.0; 8 * 3];
        let short = matmul_channels(isa, &view, &x[1..], 3, &mut y, &mut scratch);
        assert!(
            matches!(short, Err(MatmulError::XShape { .. })),
            "{short:?}"
        );
        let mut long = vec![0.0; 8 * 3 + 1];
        let wrong = matmul_channels(isa, &view, &x, 3, &mut long, &mut scratch);
        assert!(
            matches!(wrong, Err(MatmulError::YShape { .. })),
            "{wrong:?}"
        );
    }
}

/// Activations past f16's range (a DC-AE decoder's reach 10^8, where Q8_0's f16 block scale ends
/// near 8·10^6, Q8_1's offset near 2·10^3 and an F16 partner at 65504): the product is linear in x
/// and a power of two scales f32 and f16 exactly, so `W · (x·2^30)` must be finite and equal
/// `2^30 · (W · x)` bit for bit, for every type, instruction set and path (file layout, packed at
/// load, packed per task, channel-major), small and big enough for the parallel range scan. The
/// values keep |x| ≥ 0.5 (or 0) so that no f16 rounding of the small input is subnormal.
#[test]
fn activations_beyond_f16_range_scale_exactly() {
    use latte::backend::cpu::matmul::{matmul_packed, matmul_repacking, packs_per_task};
    use latte::backend::cpu::matmul_channels;
    use latte::backend::cpu::packed::PackedWeight;
    let mut rng = Rng::new(31);
    let big = 2f32.powi(30);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for &ty in TensorType::COMPUTABLE.iter() {
        let block = ty.block_size().max(32);
        for (k, m, n) in [(2 * block, 16, 3), (block * (1024 / block), 16, 64)] {
            let w = weight_bytes(ty, k, m, &mut rng);
            let view = TensorView::new("w", ty, &[k as u64, m as u64], &w).unwrap();
            let small: Vec<f32> = (0..k * n)
                .map(|_| match rng.next_u64() % 16 {
                    0 => 0.0,
                    _ => {
                        let u = rng.uniform();
                        u.signum() * (0.5 + 3.5 * u.abs())
                    }
                })
                .collect();
            let scaled: Vec<f32> = small.iter().map(|v| v * big).collect();
            let packed = PackedWeight::pack(&view);
            for isa in Isa::supported() {
                let paths = [
                    "file layout",
                    "channel-major",
                    "packed per task",
                    "packed at load",
                ];
                let packs = packs_per_task(isa, &view);
                for path in paths
                    .into_iter()
                    .filter(|p| packs || !p.starts_with("packed"))
                {
                    let product = |x: &[f32]| {
                        let (mut y, scratch) = (vec![f32::NAN; m * n], &mut MatmulScratch::new());
                        match path {
                            "file layout" => matmul_with_isa(isa, &view, x, n, &mut y, scratch),
                            "channel-major" => matmul_channels(isa, &view, x, n, &mut y, scratch),
                            "packed per task" => {
                                matmul_repacking(isa, &view, x, n, &mut y, scratch)
                            }
                            _ => {
                                matmul_packed(isa, packed.as_ref().unwrap(), x, n, &mut y, scratch)
                            }
                        }
                        .unwrap();
                        y
                    };
                    let what = format!("{ty} {isa} {path} k={k} m={m} n={n}");
                    let want: Vec<f32> = product(&small).iter().map(|v| v * big).collect();
                    assert!(want.iter().all(|v| v.is_finite()), "{what}: small input");
                    assert_eq!(bits(&product(&scaled)), bits(&want), "{what}");
                }
            }
        }
    }
}
