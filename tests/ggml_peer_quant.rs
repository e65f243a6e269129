//! Bit-exactness against ggml itself (the C library vendored by `llama-cpp-sys-2`): our quantizers
//! against `ggml_quantize_chunk(type, src, dst, 0, nrows, n_per_row, NULL)` — which for every type
//! here calls `quantize_row_*_ref` when there is no importance matrix (checked in `ggml-quants.c`) —
//! and our dequantizers against `ggml_get_type_traits(type)->to_float`, byte for byte and bit for
//! bit. The activation formats: Q8_1 against the traits' `from_float_ref`
//! (`quantize_row_q8_1_ref`), Q8_K against `quantize_row_q8_K_ref` / `dequantize_row_q8_K`, which
//! ggml exports (`GGML_API` in `ggml-quants.h`) but the bindings do not bind, so they are declared
//! here.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-peer cargo test --features ggml-peer --test ggml_peer_quant`.
#![cfg(feature = "ggml-peer")]

use latte::dtype::{TensorType, QK_K};
use latte::quant::{self, blocks::BlockQ8K};
use llama_cpp_sys_2 as sys;

#[path = "common/ggml_peer.rs"]
mod ggml_peer;

use ggml_peer::ggml_quantize;

extern "C" {
    fn quantize_row_q8_K_ref(x: *const f32, y: *mut BlockQ8K, k: i64);
    fn dequantize_row_q8_K(x: *const BlockQ8K, y: *mut f32, k: i64);
}

/// The weight types `ggml_quantize_chunk` handles, i.e. every computable type.
const WEIGHT_TYPES: [TensorType; 11] = TensorType::COMPUTABLE;

/// Row length: one K-quant super-block, eight legacy blocks.
const ROW: usize = QK_K;

/// splitmix64: a tiny deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
}

/// Finite rows that exercise ordinary data and the edge cases ggml's code branches on.
fn edge_and_random_rows(n_random: usize) -> Vec<Vec<f32>> {
    let mut rng = Rng(0x1a77e);
    let mut rows: Vec<Vec<f32>> = Vec::new();
    let normal = |rng: &mut Rng, s: f32| (0..ROW).map(|_| rng.normal() * s).collect::<Vec<_>>();
    for i in 0..n_random {
        // Scales from 1e-3 to 1e3, as real weights and activations span.
        let s = 10f32.powf((i % 7) as f32 - 3.0);
        rows.push(normal(&mut rng, s));
        rows.push((0..ROW).map(|_| (rng.uniform() * 2.0 - 1.0) * s).collect());
    }
    // Heavy tails: a few huge outliers among small values.
    let mut r = normal(&mut rng, 0.02);
    for k in [3, 77, 140, 255] {
        r[k] = if k % 2 == 0 { 40.0 } else { -55.0 };
    }
    rows.push(r);
    // Negative-only and positive-only.
    rows.push((0..ROW).map(|_| -rng.normal().abs() - 0.1).collect());
    rows.push((0..ROW).map(|_| rng.normal().abs() + 0.1).collect());
    rows.push((0..ROW).map(|_| rng.uniform() + 3.0).collect());
    // All zero, negative zero, constant blocks.
    rows.push(vec![0.0; ROW]);
    rows.push(vec![-0.0; ROW]);
    rows.push(vec![0.5; ROW]);
    rows.push(vec![-3.25; ROW]);
    // Tiny values: f16 scales underflow to subnormal or zero; f32 subnormal inputs.
    for s in [1e-8f32, 1e-12, 1e-20, 1e-30, 1e-40, 1e-44] {
        rows.push(normal(&mut rng, s));
    }
    // Huge values: f16 scales overflow to infinity.
    for s in [6e4f32, 1e6, 1e20, 1e30] {
        rows.push(normal(&mut rng, s));
    }
    // Rounding ties: small integers and half-integers, for which x/d lands on .5 exactly.
    rows.push((0..ROW).map(|j| (j % 17) as f32 - 8.0).collect());
    rows.push((0..ROW).map(|j| (j % 33) as f32 - 16.0).collect());
    rows.push((0..ROW).map(|j| ((j % 16) as f32 - 8.0) * 0.5).collect());
    rows.push((0..ROW).map(|j| (j % 64) as f32 * 0.25 - 7.75).collect());
    rows.push((0..ROW).map(|j| ((j * 7) % 255) as f32 - 127.0).collect());
    rows.push(
        (0..ROW)
            .map(|_| (rng.normal() * 8.0).round() * 0.5)
            .collect(),
    );
    // Equal magnitudes of opposite sign: which one is "max" decides the sign of d.
    rows.push(
        (0..ROW)
            .map(|j| if j % 2 == 0 { 1.0 } else { -1.0 })
            .collect(),
    );
    rows.push(
        (0..ROW)
            .map(|j| if j % 2 == 0 { -2.0 } else { 2.0 })
            .collect(),
    );
    // One non-zero value per block of 32, and a single spike per row.
    rows.push(
        (0..ROW)
            .map(|j| if j % 32 == 9 { 1.5 } else { 0.0 })
            .collect(),
    );
    let mut spike = vec![0.0; ROW];
    spike[200] = -7.0;
    rows.push(spike);
    // Blocks of wildly different scales in one row (K-quant super-block scale search).
    rows.push(
        (0..ROW)
            .map(|j| rng.normal() * 10f32.powi((j / 32) as i32 - 4))
            .collect(),
    );
    // Sub-blocks that are all zero next to ordinary ones.
    rows.push(
        (0..ROW)
            .map(|j| if (j / 16) % 3 == 0 { 0.0 } else { rng.normal() })
            .collect(),
    );
    rows
}

fn ggml_dequantize(ty: TensorType, src: &[u8]) -> Vec<f32> {
    let n = src.len() / ty.block_bytes() * ty.block_size();
    let mut dst = vec![0f32; n];
    // SAFETY: ggml's traits table is static; `to_float` reads n / block_size blocks from `src`
    // (exactly its length) and writes n floats into `dst`.
    unsafe {
        let traits = &*sys::ggml_get_type_traits(ty.id() as sys::ggml_type);
        let to_float = traits.to_float.expect("type has to_float");
        to_float(src.as_ptr().cast(), dst.as_mut_ptr(), n as i64);
    }
    dst
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// The first differing block, for a readable failure.
fn first_diff(a: &[u8], b: &[u8], block: usize) -> Option<usize> {
    a.chunks(block)
        .zip(b.chunks(block))
        .position(|(x, y)| x != y)
}

fn check_quantize(ty: TensorType, rows: &[Vec<f32>]) {
    let src: Vec<f32> = rows.concat();
    let theirs = ggml_quantize(ty, &src, ROW);
    let mut ours = vec![0u8; theirs.len()];
    quant::quantize(ty, &src, &mut ours).unwrap();
    if let Some(i) = first_diff(&ours, &theirs, ty.block_bytes()) {
        let bb = ty.block_bytes();
        panic!(
            "{ty}: block {i} (row {}) differs\n ours   {:?}\n theirs {:?}\n input {:?}",
            i * ty.block_size() / ROW,
            &ours[i * bb..(i + 1) * bb],
            &theirs[i * bb..(i + 1) * bb],
            &src[i * ty.block_size()..(i + 1) * ty.block_size()]
        );
    }
}

#[test]
fn quantize_matches_ggml_quantize_chunk() {
    let rows = edge_and_random_rows(150);
    for ty in WEIGHT_TYPES {
        check_quantize(ty, &rows);
    }
}

#[test]
fn dequantize_matches_ggml_to_float() {
    let rows = edge_and_random_rows(40);
    let src: Vec<f32> = rows.concat();
    let mut rng = Rng(0xdeadbeef);
    // ggml has no to_float for F32 (it is not converted at all); ours must be the identity.
    let mut copy = vec![0f32; src.len()];
    quant::dequantize(TensorType::F32, bytemuck::cast_slice(&src), &mut copy).unwrap();
    assert_eq!(bits(&copy), bits(&src));
    for ty in WEIGHT_TYPES.into_iter().filter(|&t| t != TensorType::F32) {
        // Real blocks (what files hold) and arbitrary bytes (every bit pattern of scales and
        // quants, NaN and infinite scales included).
        let real = ggml_quantize(ty, &src, ROW);
        let random: Vec<u8> = (0..ty.block_bytes() * 2000)
            .map(|_| rng.next_u64() as u8)
            .collect();
        for bytes in [real, random] {
            let theirs = ggml_dequantize(ty, &bytes);
            let mut ours = vec![0f32; theirs.len()];
            quant::dequantize(ty, &bytes, &mut ours).unwrap();
            assert_eq!(bits(&ours), bits(&theirs), "{ty}");
        }
    }
}

#[test]
fn q8_1_matches_quantize_row_q8_1_ref() {
    let mut rows = edge_and_random_rows(100);
    if cfg!(target_arch = "x86_64") {
        // roundf(inf or NaN) → int8 is undefined in C; ours does what x86-64 does.
        rows.extend(non_finite_rows());
    }
    let src: Vec<f32> = rows.concat();
    let ty = TensorType::Q8_1;
    let mut theirs = vec![0u8; ty.row_bytes(src.len() as u64).unwrap() as usize];
    // SAFETY: the traits table is static; from_float_ref reads src.len() floats and writes
    // src.len() / 32 blocks, exactly `theirs`.
    unsafe {
        let traits = &*sys::ggml_get_type_traits(ty.id() as sys::ggml_type);
        let from_float = traits.from_float_ref.expect("q8_1 has from_float_ref");
        from_float(src.as_ptr(), theirs.as_mut_ptr().cast(), src.len() as i64);
    }
    let mut ours = vec![0u8; theirs.len()];
    quant::quantize(ty, &src, &mut ours).unwrap();
    assert_eq!(first_diff(&ours, &theirs, ty.block_bytes()), None);
}

#[test]
fn q8_k_matches_quantize_row_q8_k_ref_and_dequantize_row_q8_k() {
    let mut rows = edge_and_random_rows(100);
    rows.extend(non_finite_rows()); // nearest_int is defined on every float

    let src: Vec<f32> = rows.concat();
    let n_blocks = src.len() / QK_K;
    // ggml leaves `bsums` of an all-zero block untouched; starting from zeroed blocks makes that
    // the zeros we write.
    let mut theirs = vec![bytemuck::Zeroable::zeroed(); n_blocks];
    // SAFETY: reads src.len() floats, writes src.len() / 256 blocks, exactly `theirs`.
    unsafe { quantize_row_q8_K_ref(src.as_ptr(), theirs.as_mut_ptr(), src.len() as i64) };
    let mut ours = vec![bytemuck::Zeroable::zeroed(); n_blocks];
    quant::quantize_row_q8_k(&src, &mut ours);
    let (o, t): (&[u8], &[u8]) = (bytemuck::cast_slice(&ours), bytemuck::cast_slice(&theirs));
    assert_eq!(first_diff(o, t, std::mem::size_of::<BlockQ8K>()), None);

    let mut y_theirs = vec![0f32; src.len()];
    // SAFETY: reads n_blocks blocks, writes n_blocks · 256 floats, exactly `y_theirs`.
    unsafe { dequantize_row_q8_K(theirs.as_ptr(), y_theirs.as_mut_ptr(), src.len() as i64) };
    let mut y_ours = vec![0f32; src.len()];
    quant::dequantize_row_q8_k(&ours, &mut y_ours);
    assert_eq!(bits(&y_ours), bits(&y_theirs));
}

/// Ordinary rows with one inf or NaN each, at the start, middle and end.
fn non_finite_rows() -> Vec<Vec<f32>> {
    let mut rng = Rng(7);
    let mut rows = Vec::new();
    for special in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN] {
        for pos in [0usize, 17, 255] {
            let mut r: Vec<f32> = (0..ROW).map(|_| rng.normal()).collect();
            r[pos] = special;
            rows.push(r);
        }
    }
    rows
}

#[test]
fn non_finite_inputs_match_ggml() {
    // The float formats and the K-quants (whose rounding is the nearest_int bit trick) are well
    // defined on inf / NaN. The legacy quantizers then convert non-finite floats to integers,
    // which C leaves undefined; ours does what ggml's x86-64 build does (cvttss2si), so they are
    // compared on x86-64 only.
    let rows = non_finite_rows();
    let mut types = vec![
        TensorType::F32,
        TensorType::F16,
        TensorType::BF16,
        TensorType::Q4_K,
        TensorType::Q5_K,
        TensorType::Q6_K,
    ];
    if cfg!(target_arch = "x86_64") {
        types.extend([
            TensorType::Q4_0,
            TensorType::Q4_1,
            TensorType::Q5_0,
            TensorType::Q5_1,
            TensorType::Q8_0,
        ]);
    }
    for ty in types {
        check_quantize(ty, &rows);
    }
}

#[test]
fn f16_and_bf16_scalar_conversions_match_ggml() {
    // Every f16 value, the midpoints between neighbours (round-to-nearest-even ties) and one
    // bit either side, plus a stride through all f32 bit patterns.
    let mut inputs: Vec<u32> = (0..=u32::MAX).step_by(65_537).collect();
    for h in 0..=u16::MAX {
        let x = half::f16::from_bits(h).to_f32();
        let next = half::f16::from_bits(h.wrapping_add(1)).to_f32();
        if x.is_finite() && next.is_finite() && next.abs() > x.abs() {
            let mid = ((x as f64 + next as f64) / 2.0) as f32;
            for d in [-1i64, 0, 1] {
                inputs.push((mid.to_bits() as i64 + d) as u32);
            }
        }
        // bf16 midpoints: the f32 halfway between two bf16 neighbours, and one bit either side.
        let mid_bf16 = ((h as u32) << 16) | 0x8000;
        inputs.extend([mid_bf16 - 1, mid_bf16, mid_bf16 + 1]);
    }
    for b in inputs {
        let x = f32::from_bits(b);
        // SAFETY: plain value conversions.
        let (h, bf) = unsafe { (sys::ggml_fp32_to_fp16(x), sys::ggml_fp32_to_bf16(x)) };
        assert_eq!(quant::f32_to_f16(x).to_bits(), h, "f16 of {b:#x}");
        assert_eq!(quant::f32_to_bf16(x).to_bits(), bf.bits, "bf16 of {b:#x}");
    }
    for h in 0..=u16::MAX {
        // SAFETY: plain value conversions.
        let theirs = unsafe { sys::ggml_fp16_to_fp32(h) };
        let ours = quant::f16_to_f32(half::f16::from_bits(h));
        assert_eq!(ours.to_bits(), theirs.to_bits(), "{h:#x}");
    }
}
