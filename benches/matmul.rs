//! `y = W·x` per weight type at the model's shapes, ours and (with `--features ggml-peer`)
//! ggml's `ggml_mul_mat` on its CPU backend with the same thread count, then a summary table.
//!
//! Shapes (k, m): (1536, 1536), (1536, 8960), (8960, 1536); N = 1, 128, 512 activation columns.
//! Subsets: `LATTE_BENCH_TYPES=Q4_0,Q6_K`, `LATTE_BENCH_N=1,128`, `LATTE_BENCH_SHAPES=1536x8960`
//! (env vars, which also skip building the weights), or a criterion name filter
//! (`cargo bench --bench matmul -- Q4_K`). `LATTE_BENCH_ISA=avx2` (or `scalar`, `avx512`, `neon`)
//! pins our side to one instruction set instead of the detected best.
//!
//! Weights are random blocks with sane scales (speed does not depend on the values); activations
//! are random. Short criterion settings keep the full run near ten minutes on two cores.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use criterion::{black_box, Criterion};
use latte::backend::cpu::dot::packed_kernel;
use latte::backend::cpu::matmul::{matmul_packed, matmul_repacking};
use latte::backend::cpu::packed::PackedWeight;
use latte::backend::cpu::{matmul_with_isa, Isa, MatmulScratch};
use latte::dtype::TensorType;
use latte::tensor::TensorView;

#[path = "../tests/common/mod.rs"]
mod common;
#[cfg(feature = "ggml-peer")]
#[path = "../tests/common/ggml_peer.rs"]
mod ggml_peer;

const SHAPES: [(usize, usize); 3] = [(1536, 1536), (1536, 8960), (8960, 1536)];
const NS: [usize; 3] = [1, 128, 512];

struct Row {
    ty: TensorType,
    /// Our weight layout: "" (the file's), " repacked" (the copy the CPU backend makes of resident
    /// Q4_0 matrices at load) or " packed per task" (expert-group Q4_0 views, packed as used).
    layout: &'static str,
    k: usize,
    m: usize,
    n: usize,
    weight_bytes: usize,
    ours: Option<f64>,
    ggml: Option<f64>,
}

fn env_list(name: &str) -> Option<Vec<String>> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_lowercase()).collect())
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Runs `f` under criterion and returns the median seconds per call of the measured samples.
fn measure(c: &mut Criterion, name: &str, samples: usize, mut f: impl FnMut()) -> Option<f64> {
    let times = RefCell::new(Vec::new());
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            let t = start.elapsed();
            times.borrow_mut().push(t.as_secs_f64() / iters as f64);
            t
        })
    });
    let times = times.into_inner();
    // The last `samples` entries are the measurement; earlier ones are warm-up.
    let skip = times.len().saturating_sub(samples);
    median(times[skip..].to_vec())
}

fn main() {
    let samples = 10;
    let mut c = Criterion::default()
        .sample_size(samples)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .without_plots()
        .configure_from_args();
    let threads = rayon::current_num_threads();
    let isa = match std::env::var("LATTE_BENCH_ISA").ok().as_deref() {
        None => Isa::detect(),
        Some(name) => Isa::ALL
            .into_iter()
            .find(|i| i.to_string().eq_ignore_ascii_case(name) && i.is_supported())
            .unwrap_or_else(|| panic!("LATTE_BENCH_ISA={name}: not an ISA this CPU supports")),
    };
    let types = env_list("LATTE_BENCH_TYPES");
    let ns: Vec<usize> = env_list("LATTE_BENCH_N")
        .map(|v| v.iter().filter_map(|s| s.parse().ok()).collect())
        .unwrap_or(NS.to_vec());
    let shapes = env_list("LATTE_BENCH_SHAPES");
    println!(
        "latte matmul bench: ISA {}, {threads} threads (ggml peer: {})",
        isa,
        if cfg!(feature = "ggml-peer") {
            "on"
        } else {
            "off"
        }
    );

    let mut rng = common::Rng::new(1);
    let mut rows = Vec::new();
    for ty in TensorType::COMPUTABLE {
        if types
            .as_ref()
            .is_some_and(|t| !t.iter().any(|t| t.eq_ignore_ascii_case(ty.name())))
        {
            continue;
        }
        for (k, m) in SHAPES {
            let shape = format!("{k}x{m}");
            if shapes.as_ref().is_some_and(|s| !s.contains(&shape)) {
                continue;
            }
            let w = common::random_block_bytes(ty, k, m, &mut rng)
                .unwrap_or_else(|| common::weight_bytes(ty, k, m, &mut rng));
            let view = TensorView::new("w", ty, &[k as u64, m as u64], &w).unwrap();
            for &n in &ns {
                let x = rng.activations(k * n);
                let mut y = vec![0.0f32; n * m];
                let mut scratch = MatmulScratch::new();
                let name = format!("matmul/{ty}/{shape}/n{n}");
                let ours = measure(&mut c, &format!("{name}/ours"), samples, || {
                    matmul_with_isa(isa, &view, black_box(&x), n, &mut y, &mut scratch).unwrap();
                });
                let packed = PackedWeight::pack(&view).filter(|_| packed_kernel(ty, isa).is_some());
                let repacked = packed.map(|packed| {
                    let at_load =
                        measure(&mut c, &format!("{name}/ours-repacked"), samples, || {
                            matmul_packed(isa, &packed, black_box(&x), n, &mut y, &mut scratch)
                                .unwrap();
                        });
                    let per_task =
                        measure(&mut c, &format!("{name}/ours-per-task"), samples, || {
                            matmul_repacking(isa, &view, black_box(&x), n, &mut y, &mut scratch)
                                .unwrap();
                        });
                    [(" repacked", at_load), (" packed per task", per_task)]
                });
                #[cfg(feature = "ggml-peer")]
                let ggml = {
                    let mut g = ggml_peer::GgmlMatmul::new(ty, k, m, n, &w, threads);
                    measure(&mut c, &format!("{name}/ggml"), samples, || {
                        g.run(black_box(&x), &mut y);
                    })
                };
                #[cfg(not(feature = "ggml-peer"))]
                let ggml = None;
                for (layout, ours) in repacked.into_iter().flatten() {
                    rows.push(Row {
                        ty,
                        layout,
                        k,
                        m,
                        n,
                        weight_bytes: w.len(),
                        ours,
                        ggml,
                    });
                }
                rows.push(Row {
                    ty,
                    layout: "",
                    k,
                    m,
                    n,
                    weight_bytes: w.len(),
                    ours,
                    ggml,
                });
            }
        }
    }
    c.final_summary();
    print_table(&rows);
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| type | k x m | N | ours median | ours GFLOP/s | ours weight GB/s | ggml median | ggml GFLOP/s | ours/ggml speed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let fmt_t = |t: Option<f64>| t.map_or("-".into(), |t| format!("{:.3} ms", t * 1e3));
    for r in rows.iter().filter(|r| r.ours.is_some() || r.ggml.is_some()) {
        let flops = 2.0 * (r.k * r.m * r.n) as f64;
        let gflops = |t: Option<f64>| t.map_or("-".into(), |t| format!("{:.1}", flops / t / 1e9));
        let gbs = match (r.n, r.ours) {
            (1, Some(t)) => format!("{:.1}", r.weight_bytes as f64 / t / 1e9),
            _ => "-".into(),
        };
        let ratio = match (r.ours, r.ggml) {
            (Some(o), Some(g)) => format!("{:.2}x", g / o),
            _ => "-".into(),
        };
        println!(
            "| {}{} | {}x{} | {} | {} | {} | {} | {} | {} | {} |",
            r.ty,
            r.layout,
            r.k,
            r.m,
            r.n,
            fmt_t(r.ours),
            gflops(r.ours),
            gbs,
            fmt_t(r.ggml),
            gflops(r.ggml),
            ratio
        );
    }
}
