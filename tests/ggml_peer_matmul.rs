//! Our matmul against ggml's `ggml_mul_mat` (CPU backend, built from llama-cpp-sys-2's vendored
//! sources) on the same weight bytes, for every weight type and for every ISA this CPU runs.
//! Run with `--features ggml-peer` (CARGO_TARGET_DIR=/work/target-peer shares ggml's build).
#![cfg(feature = "ggml-peer")]

mod common;

#[path = "common/ggml_peer.rs"]
mod ggml_peer;

use common::*;
use ggml_peer::GgmlMatmul;
use latte::backend::cpu::{matmul_with_isa, Isa, MatmulScratch};
use latte::dtype::TensorType;
use latte::tensor::TensorView;

/// Both sides multiply the same weights with activations quantized by the same reference
/// algorithm, with exact integer block sums, so they differ by f32 summation order (~1e-6 of
/// Σ|w·x|) and by ggml's SIMD activation quantizers, which round exact halves to even where the
/// reference rounds them away from zero (one quantum of one activation: ≲ 1e-3 of Σ|w·x| for the
/// smallest k tested). 2e-3·Σ|w·x| covers both; a wrong block layout gives errors of order 1e-1.
const TOL: f64 = 2e-3;

#[test]
fn matches_ggml_mul_mat_for_every_type() {
    let mut rng = Rng::new(42);
    for ty in TensorType::COMPUTABLE {
        let k = match ty.block_size() {
            1 => 96,
            32 => 320,
            _ => 512,
        };
        let m = 37;
        for n in [1, 5, 16] {
            let w = weight_bytes(ty, k, m, &mut rng);
            let x = rng.activations(k * n);
            let mut want = vec![0.0f32; n * m];
            GgmlMatmul::new(ty, k, m, n, &w, 2).run(&x, &mut want);

            let wd = dequantized(ty, &w, k * m);
            let view = TensorView::new("w", ty, &[k as u64, m as u64], &w).unwrap();
            for isa in Isa::supported() {
                let mut got = vec![f32::NAN; n * m];
                matmul_with_isa(isa, &view, &x, n, &mut got, &mut MatmulScratch::new()).unwrap();
                for j in 0..n {
                    for i in 0..m {
                        let scale: f64 = (0..k)
                            .map(|l| (wd[i * k + l] as f64 * x[j * k + l] as f64).abs())
                            .sum();
                        let (g, e) = (got[j * m + i] as f64, want[j * m + i] as f64);
                        assert!(
                            (g - e).abs() <= TOL * scale,
                            "{ty} {isa} n={n} y[{j},{i}]: ours {g}, ggml {e}, Σ|w·x| {scale}"
                        );
                    }
                }
            }
        }
    }
}
