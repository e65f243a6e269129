//! Quantization formats: ggml's block layouts, and reference quantizers / dequantizers that are
//! bit-exact with ggml's `quantize_row_*_ref` and `dequantize_row_*`.
//!
//! This module is plain scalar Rust: the definition of each format. Fast kernels that compute with
//! these blocks live in `backend::cpu` and are tested against what is here.

pub mod blocks;
