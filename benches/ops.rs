//! Throughput of the f32 CPU ops at the shapes the models use (Qwen2-VL-2B decoder/replica
//! attention, DC-AE convolutions), plus the multiversioned kernels against their baseline builds.
//! Run: `cargo bench --bench ops`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use latte::backend::cpu::isa::Isa;
use latte::backend::cpu::ops::gemm::MicroKernel;
use latte::backend::cpu::ops::{
    attention, conv2d_prepared, conv2d_with_kernel, kernels, rms_norm, silu, softmax_rows,
    AttentionScratch, AttentionShape, BiasMode, BlockBias, Conv2d, ConvScratch, Mask, PreparedConv,
};
use latte::dtype::TensorType;
use std::hint::black_box;

fn data(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

fn bench_kernels(c: &mut Criterion) {
    let mut g = c.benchmark_group("kernels");
    for n in [128usize, 4096] {
        let (a, b) = (data(n, 1), data(n, 2));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("dot_dispatch", n), &n, |bch, _| {
            bch.iter(|| kernels::dot(black_box(&a), black_box(&b)))
        });
        g.bench_with_input(BenchmarkId::new("dot_scalar", n), &n, |bch, _| {
            bch.iter(|| kernels::dot_scalar(black_box(&a), black_box(&b)))
        });
        let mut y = data(n, 3);
        g.bench_with_input(BenchmarkId::new("axpy_dispatch", n), &n, |bch, _| {
            bch.iter(|| kernels::axpy(0.5, black_box(&a), black_box(&mut y)))
        });
        g.bench_with_input(BenchmarkId::new("axpy_portable", n), &n, |bch, _| {
            bch.iter(|| kernels::axpy_portable(0.5, black_box(&a), black_box(&mut y)))
        });
    }
    g.finish();
}

fn bench_attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention");
    g.sample_size(20);
    // (name, n_q, n_kv, mask, TCRA block): a replica step (64 image tokens after a 32-token prompt,
    // pre-softmax bias + readout on the image block), a 512-token causal prefill, one decode step.
    let cases = [
        ("replica_64x96_tcra", 64, 96, Mask::None, true),
        (
            "prefill_512_causal",
            512,
            512,
            Mask::Causal { offset: 0 },
            false,
        ),
        (
            "decode_1x1024",
            1,
            1024,
            Mask::Causal { offset: 1023 },
            false,
        ),
    ];
    for (name, n_q, n_kv, mask, tcra) in cases {
        let shape = AttentionShape {
            n_q,
            n_kv,
            n_heads: 12,
            n_kv_heads: 2,
            head_dim: 128,
        };
        let q = data(n_q * 12 * 128, 1);
        let k = data(n_kv * 2 * 128, 2);
        let v = data(n_kv * 2 * 128, 3);
        let add = data(12 * n_q * 64, 4);
        let mut readout = vec![0f32; add.len()];
        let mut out = vec![0f32; q.len()];
        let mut scratch = AttentionScratch::for_shape(&shape).unwrap();
        // Multiply-adds of QKᵀ and PV (upper bound for causal).
        g.throughput(Throughput::Elements((2 * n_q * n_kv * 12 * 128) as u64));
        g.bench_function(name, |bch| {
            bch.iter(|| {
                let bias = tcra.then(|| BlockBias {
                    mode: BiasMode::PreSoftmax,
                    col0: n_kv - 64,
                    n_cols: 64,
                    add: Some(&add),
                    readout: Some(&mut readout),
                });
                attention(&q, &k, &v, shape, None, mask, bias, &mut out, &mut scratch).unwrap()
            })
        });
    }
    g.finish();
}

fn bench_conv(c: &mut Criterion) {
    let mut g = c.benchmark_group("conv2d");
    g.sample_size(10);
    // DC-AE-like layers: a 3×3 ResBlock conv, the depthwise 5×5 and grouped 1×1 of the
    // multi-scale linear attention, and a channel-mixing 1×1.
    // Then the paper-size decoder's 3×3 ResBlock convs at their real sizes (1024 channels at
    // 8×8 up to 128 at 256×256).
    let cases = [
        ("3x3_128to128_64x64", Conv2d::same(128, 128, 3), 64),
        ("3x3_1024to1024_8x8", Conv2d::same(1024, 1024, 3), 8),
        ("3x3_512to512_32x32", Conv2d::same(512, 512, 3), 32),
        ("3x3_256to256_128x128", Conv2d::same(256, 256, 3), 128),
        ("3x3_128to128_256x256", Conv2d::same(128, 128, 3), 256),
        (
            "dw5x5_384_32x32",
            Conv2d {
                groups: 384,
                ..Conv2d::same(384, 384, 5)
            },
            32,
        ),
        (
            "1x1_g12_384_32x32",
            Conv2d {
                groups: 12,
                ..Conv2d::same(384, 384, 1)
            },
            32,
        ),
        ("1x1_256to256_64x64", Conv2d::same(256, 256, 1), 64),
    ];
    for (name, conv, side) in cases {
        let x = data(conv.in_channels * side * side, 1);
        let w = data(conv.weight_len().unwrap(), 2);
        let b = data(conv.out_channels, 3);
        let [oh, ow] = conv.output_hw([side, side]).unwrap();
        let mut out = vec![0f32; conv.out_channels * oh * ow];
        let mut scratch = ConvScratch::default();
        let macs = conv.weight_len().unwrap() * oh * ow;
        g.throughput(Throughput::Elements(macs as u64));
        // The f32 kernel, then the same product on BF16 dot products where this CPU has them
        // (BF16-stored weights; depthwise convolutions are not GEMMs and stay f32). Each packs
        // the weight per call, then once, as the backend holds it after load (`_prepared`: what
        // a model's decode pays per call).
        let f32_kernel = (MicroKernel::detect(TensorType::F32), "");
        let bf16 = MicroKernel::bf16_for(Isa::detect()).filter(|_| !conv.is_depthwise());
        for (kernel, suffix) in std::iter::once(f32_kernel).chain(bf16.map(|k| (k, "_bf16"))) {
            g.bench_function(format!("{name}{suffix}"), |bch| {
                bch.iter(|| {
                    conv2d_with_kernel(
                        kernel,
                        &conv,
                        &x,
                        [side, side],
                        &w,
                        Some(&b),
                        &mut out,
                        &mut scratch,
                    )
                    .unwrap()
                })
            });
            let prepared = PreparedConv::new(kernel, &conv, w.as_slice().into()).unwrap();
            g.bench_function(format!("{name}{suffix}_prepared"), |bch| {
                bch.iter(|| {
                    conv2d_prepared(
                        &prepared,
                        &x,
                        [side, side],
                        Some(&b),
                        &mut out,
                        &mut scratch,
                    )
                    .unwrap()
                })
            });
        }
    }
    g.finish();
}

fn bench_elementwise(c: &mut Criterion) {
    let mut g = c.benchmark_group("elementwise");
    let n = 64 * 1536;
    let w = data(1536, 1);
    // Each iteration restarts from the same input (repeated in-place application would drift into
    // denormals); the copy is part of the time.
    let src: Vec<f32> = data(n, 2).iter().map(|v| 4.0 * v).collect();
    let mut x = src.clone();
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("rms_norm_64x1536", |b| {
        b.iter(|| {
            x.copy_from_slice(&src);
            rms_norm(black_box(&mut x), &w, 1e-6).unwrap()
        })
    });
    g.bench_function("softmax_64x1536", |b| {
        b.iter(|| {
            x.copy_from_slice(&src);
            softmax_rows(black_box(&mut x), 1536).unwrap()
        })
    });
    g.bench_function("silu_98304", |b| {
        b.iter(|| {
            x.copy_from_slice(&src);
            silu(black_box(&mut x))
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_kernels,
    bench_attention,
    bench_conv,
    bench_elementwise
);
criterion_main!(benches);
