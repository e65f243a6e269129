//! Quantization formats: ggml's block layouts, and reference quantizers / dequantizers that are
//! bit-exact with ggml's `quantize_row_*_ref` and `dequantize_row_*`.
//!
//! This module is plain scalar Rust: the definition of each format. Fast kernels that compute with
//! these blocks live in `backend::cpu` and are tested against what is here.
//!
//! Two levels of API:
//! - typed row functions per format (`quantize_row_q4_0(&[f32], &mut [BlockQ4_0])`, …), for
//!   kernels; they panic on a length mismatch, like slice indexing;
//! - [`quantize`] / [`dequantize`] over raw bytes, dispatching on [`TensorType`], for files and the
//!   CLI; they check every length and return a [`QuantError`], and accept unaligned byte slices.
//!
//! Byte layouts assume a little-endian host, as ggml's do.

pub mod activation;
pub mod blocks;
pub mod float;
mod kquant_search;
pub mod kquants;
mod lanes;
pub mod legacy;
pub mod round;

use bytemuck::Pod;
use thiserror::Error;

use crate::dtype::TensorType;

pub use activation::{
    dequantize_row_q8_1, dequantize_row_q8_k, quantize_row_q8_1, quantize_row_q8_k,
};
pub use float::{
    bf16_to_f32, dequantize_row_bf16, dequantize_row_f16, f16_to_f32, f32_to_bf16, f32_to_f16,
    quantize_row_bf16, quantize_row_f16,
};
pub use kquants::{
    dequantize_row_q4_k, dequantize_row_q5_k, dequantize_row_q6_k, get_scale_min_k4,
    quantize_row_q4_k, quantize_row_q5_k, quantize_row_q6_k,
};
pub use legacy::{
    dequantize_row_q4_0, dequantize_row_q4_1, dequantize_row_q5_0, dequantize_row_q5_1,
    dequantize_row_q8_0, quantize_row_q4_0, quantize_row_q4_1, quantize_row_q5_0,
    quantize_row_q5_1, quantize_row_q8_0,
};
pub use round::nearest_int;

use blocks::{
    BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0,
    BlockQ8_1,
};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum QuantError {
    #[error("no quantizer / dequantizer for type {0}")]
    Unsupported(TensorType),
    #[error("{ty}: {len} {unit} is not a whole number of blocks of {block}")]
    NotBlockMultiple {
        ty: TensorType,
        len: usize,
        block: usize,
        unit: &'static str,
    },
    #[error("{ty}: destination holds {actual} {unit}, {expected} expected")]
    DestinationSize {
        ty: TensorType,
        expected: usize,
        actual: usize,
        unit: &'static str,
    },
}

/// The types [`quantize`] and [`dequantize`] handle: every computable type, plus the activation
/// formats Q8_1 and Q8_K.
pub fn is_supported(ty: TensorType) -> bool {
    ty.is_computable() || matches!(ty, TensorType::Q8_1 | TensorType::Q8_K)
}

/// Quantizes `src` (a whole number of blocks of `ty`) into `dst`, which must be exactly
/// `ty.row_bytes(src.len())` bytes. F32 is a copy. `dst` need not be aligned.
pub fn quantize(ty: TensorType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    match ty {
        TensorType::F32 => quantize_as(ty, src, dst, |x: &[f32], y: &mut [f32]| {
            y.copy_from_slice(x)
        }),
        TensorType::F16 => quantize_as(ty, src, dst, quantize_row_f16),
        TensorType::BF16 => quantize_as(ty, src, dst, quantize_row_bf16),
        TensorType::Q4_0 => quantize_as::<BlockQ4_0>(ty, src, dst, quantize_row_q4_0),
        TensorType::Q4_1 => quantize_as::<BlockQ4_1>(ty, src, dst, quantize_row_q4_1),
        TensorType::Q5_0 => quantize_as::<BlockQ5_0>(ty, src, dst, quantize_row_q5_0),
        TensorType::Q5_1 => quantize_as::<BlockQ5_1>(ty, src, dst, quantize_row_q5_1),
        TensorType::Q8_0 => quantize_as::<BlockQ8_0>(ty, src, dst, quantize_row_q8_0),
        TensorType::Q8_1 => quantize_as::<BlockQ8_1>(ty, src, dst, quantize_row_q8_1),
        TensorType::Q4_K => quantize_as::<BlockQ4K>(ty, src, dst, quantize_row_q4_k),
        TensorType::Q5_K => quantize_as::<BlockQ5K>(ty, src, dst, quantize_row_q5_k),
        TensorType::Q6_K => quantize_as::<BlockQ6K>(ty, src, dst, quantize_row_q6_k),
        TensorType::Q8_K => quantize_as::<BlockQ8K>(ty, src, dst, quantize_row_q8_k),
        _ => Err(QuantError::Unsupported(ty)),
    }
}

/// Dequantizes `src` (whole blocks of `ty`) into `dst`, which must hold exactly the number of
/// elements those blocks encode. `src` need not be aligned.
pub fn dequantize(ty: TensorType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    match ty {
        TensorType::F32 => dequantize_as(ty, src, dst, |x: &[f32], y: &mut [f32]| {
            y.copy_from_slice(x)
        }),
        TensorType::F16 => dequantize_as(ty, src, dst, dequantize_row_f16),
        TensorType::BF16 => dequantize_as(ty, src, dst, dequantize_row_bf16),
        TensorType::Q4_0 => dequantize_as::<BlockQ4_0>(ty, src, dst, dequantize_row_q4_0),
        TensorType::Q4_1 => dequantize_as::<BlockQ4_1>(ty, src, dst, dequantize_row_q4_1),
        TensorType::Q5_0 => dequantize_as::<BlockQ5_0>(ty, src, dst, dequantize_row_q5_0),
        TensorType::Q5_1 => dequantize_as::<BlockQ5_1>(ty, src, dst, dequantize_row_q5_1),
        TensorType::Q8_0 => dequantize_as::<BlockQ8_0>(ty, src, dst, dequantize_row_q8_0),
        TensorType::Q8_1 => dequantize_as::<BlockQ8_1>(ty, src, dst, dequantize_row_q8_1),
        TensorType::Q4_K => dequantize_as::<BlockQ4K>(ty, src, dst, dequantize_row_q4_k),
        TensorType::Q5_K => dequantize_as::<BlockQ5K>(ty, src, dst, dequantize_row_q5_k),
        TensorType::Q6_K => dequantize_as::<BlockQ6K>(ty, src, dst, dequantize_row_q6_k),
        TensorType::Q8_K => dequantize_as::<BlockQ8K>(ty, src, dst, dequantize_row_q8_k),
        _ => Err(QuantError::Unsupported(ty)),
    }
}

/// Checks lengths, then runs the typed quantizer `f` over `dst` viewed as blocks `B`: in place when
/// `dst` is aligned for `B`, else one block at a time through a stack copy.
fn quantize_as<B: Pod>(
    ty: TensorType,
    src: &[f32],
    dst: &mut [u8],
    f: impl Fn(&[f32], &mut [B]),
) -> Result<(), QuantError> {
    debug_assert_eq!(std::mem::size_of::<B>(), ty.block_bytes());
    let (block, block_bytes) = (ty.block_size(), ty.block_bytes());
    if !src.len().is_multiple_of(block) {
        return Err(QuantError::NotBlockMultiple {
            ty,
            len: src.len(),
            block,
            unit: "elements",
        });
    }
    let expected = src.len() / block * block_bytes;
    if dst.len() != expected {
        return Err(QuantError::DestinationSize {
            ty,
            expected,
            actual: dst.len(),
            unit: "bytes",
        });
    }
    match bytemuck::try_cast_slice_mut::<u8, B>(dst) {
        Ok(blocks) => f(src, blocks),
        Err(_) => {
            let mut one = [B::zeroed()];
            for (x, y) in src
                .chunks_exact(block)
                .zip(dst.chunks_exact_mut(block_bytes))
            {
                f(x, &mut one);
                y.copy_from_slice(bytemuck::bytes_of(&one[0]));
            }
        }
    }
    Ok(())
}

/// Checks lengths, then runs the typed dequantizer `f` over `src` viewed as blocks `B`: in place
/// when `src` is aligned for `B`, else one block at a time through an unaligned read.
fn dequantize_as<B: Pod>(
    ty: TensorType,
    src: &[u8],
    dst: &mut [f32],
    f: impl Fn(&[B], &mut [f32]),
) -> Result<(), QuantError> {
    debug_assert_eq!(std::mem::size_of::<B>(), ty.block_bytes());
    let (block, block_bytes) = (ty.block_size(), ty.block_bytes());
    if !src.len().is_multiple_of(block_bytes) {
        return Err(QuantError::NotBlockMultiple {
            ty,
            len: src.len(),
            block: block_bytes,
            unit: "bytes",
        });
    }
    let expected = src.len() / block_bytes * block;
    if dst.len() != expected {
        return Err(QuantError::DestinationSize {
            ty,
            expected,
            actual: dst.len(),
            unit: "elements",
        });
    }
    match bytemuck::try_cast_slice::<u8, B>(src) {
        Ok(blocks) => f(blocks, dst),
        Err(_) => {
            for (x, y) in src
                .chunks_exact(block_bytes)
                .zip(dst.chunks_exact_mut(block))
            {
                f(&[bytemuck::pod_read_unaligned::<B>(x)], y);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [TensorType; 13] = [
        TensorType::F32,
        TensorType::F16,
        TensorType::BF16,
        TensorType::Q4_0,
        TensorType::Q4_1,
        TensorType::Q5_0,
        TensorType::Q5_1,
        TensorType::Q8_0,
        TensorType::Q8_1,
        TensorType::Q4_K,
        TensorType::Q5_K,
        TensorType::Q6_K,
        TensorType::Q8_K,
    ];

    /// A deterministic wavy signal with an outlier, so every block has structure.
    fn signal(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let t = i as f32;
                (t * 0.37).sin() * 2.0 + (t * 0.011).cos() - if i % 97 == 5 { 9.0 } else { 0.0 }
            })
            .collect()
    }

    #[test]
    fn every_computable_type_is_supported() {
        for ty in TensorType::COMPUTABLE {
            assert!(is_supported(ty), "{ty}");
        }
        for ty in ALL {
            assert!(is_supported(ty), "{ty}");
        }
    }

    #[test]
    fn bad_lengths_and_types_are_errors() {
        let x = signal(512);
        for ty in ALL {
            let block = ty.block_size();
            let bytes = ty.row_bytes(512).unwrap() as usize;
            let mut dst = vec![0u8; bytes];
            if block > 1 {
                assert!(matches!(
                    quantize(ty, &x[..block + 1], &mut dst),
                    Err(QuantError::NotBlockMultiple { .. })
                ));
            }
            assert!(matches!(
                quantize(ty, &x, &mut dst[..bytes - 1]),
                Err(QuantError::DestinationSize { .. })
            ));
            let mut y = vec![0f32; 512];
            assert!(matches!(
                dequantize(ty, &dst[..bytes - 1], &mut y),
                Err(QuantError::NotBlockMultiple { .. }) | Err(QuantError::DestinationSize { .. })
            ));
            assert!(matches!(
                dequantize(ty, &dst, &mut y[..511]),
                Err(QuantError::DestinationSize { .. })
            ));
        }
        let mut dst = vec![0u8; 1024];
        assert_eq!(
            quantize(TensorType::Q2_K, &x, &mut dst),
            Err(QuantError::Unsupported(TensorType::Q2_K))
        );
        assert_eq!(
            dequantize(TensorType::IQ4_NL, &dst, &mut vec![0.0; 512]),
            Err(QuantError::Unsupported(TensorType::IQ4_NL))
        );
    }

    #[test]
    fn unaligned_buffers_give_the_same_bytes() {
        let x = signal(512);
        for ty in ALL {
            let bytes = ty.row_bytes(512).unwrap() as usize;
            let mut aligned = vec![0u32; bytes / 4 + 1];
            let aligned = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut aligned)[..bytes];
            let mut shifted = vec![0u8; bytes + 1];
            quantize(ty, &x, aligned).unwrap();
            quantize(ty, &x, &mut shifted[1..]).unwrap();
            assert_eq!(&aligned[..], &shifted[1..], "{ty}");
            let (mut a, mut b) = (vec![0f32; 512], vec![0f32; 512]);
            dequantize(ty, aligned, &mut a).unwrap();
            dequantize(ty, &shifted[1..], &mut b).unwrap();
            assert_eq!(
                a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{ty}"
            );
        }
    }

    #[test]
    fn round_trip_error_is_within_each_format_step() {
        // The worst-case error of a b-bit format is about half a step of its block's range (plus
        // f16 rounding of the scale); these bounds are loose multiples of that, relative to the
        // signal's absmax (≈ 12), and would catch any misplaced nibble or bit.
        let x = signal(1024);
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (ty, rel) in [
            (TensorType::F32, 0.0),
            (TensorType::F16, 1e-3),
            (TensorType::BF16, 8e-3),
            (TensorType::Q8_0, 1e-2),
            (TensorType::Q8_1, 1e-2),
            (TensorType::Q8_K, 1e-2),
            (TensorType::Q6_K, 4e-2),
            (TensorType::Q5_0, 8e-2),
            (TensorType::Q5_1, 8e-2),
            (TensorType::Q5_K, 8e-2),
            (TensorType::Q4_0, 0.15),
            (TensorType::Q4_1, 0.15),
            (TensorType::Q4_K, 0.15),
        ] {
            let mut q = vec![0u8; ty.row_bytes(1024).unwrap() as usize];
            let mut y = vec![0f32; 1024];
            quantize(ty, &x, &mut q).unwrap();
            dequantize(ty, &q, &mut y).unwrap();
            let worst = x
                .iter()
                .zip(&y)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(worst <= rel * amax, "{ty}: error {worst} > {rel} * {amax}");
        }
    }

    #[test]
    fn zero_blocks_quantize_to_zero_and_back() {
        let x = vec![0f32; 512];
        for ty in ALL {
            let mut q = vec![0xAAu8; ty.row_bytes(512).unwrap() as usize];
            let mut y = vec![1f32; 512];
            quantize(ty, &x, &mut q).unwrap();
            dequantize(ty, &q, &mut y).unwrap();
            assert!(y.iter().all(|&v| v == 0.0), "{ty}");
        }
    }
}
