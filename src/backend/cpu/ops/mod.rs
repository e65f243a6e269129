//! The f32 operations the models need, on the CPU: what Qwen2-VL (vision tower and text decoder),
//! the LaTtE-Flow replica and the DC-AE decoder compute between their matrix products.
//!
//! Every op works on caller-owned `f32` slices with explicit sizes, checks every length first
//! (bad input is an [`OpError`], never a panic or an out-of-bounds read) and allocates nothing in
//! its hot loop. Layouts, row-major with the last index fastest:
//!
//! | op | layout | module |
//! |---|---|---|
//! | [`rms_norm`], [`layer_norm`] | rows `[n, dim]`, in place | [`norm`] |
//! | [`rms_norm_channels`], [`group_norm`] | image `[C, H, W]`, in place | [`norm`] |
//! | [`softmax_rows`] | rows `[n, len]`, in place | [`softmax`] |
//! | [`silu`], [`gelu_erf`], [`gelu_tanh`], [`quick_gelu`], [`relu`], [`swiglu`], [`erf`] | element-wise, in place | [`activation`] |
//! | [`rope_neox`] with [`RopeTable`] (1-D, M-RoPE, vision 2-D) | `[n_tok, n_heads, d]`, in place | [`rope`] |
//! | [`attention()`] (GQA, causal offset, TCRA block bias + readout) | q `[n_q, H, d]`, k/v `[n_kv, H_kv, d]` → `[n_q, H, d]` | [`attention`](mod@attention) |
//! | [`relu_linear_attention`] (DC-AE's LiteMLA) | qkv `[H, 3, d, N]` → `[H, d, N]` | [`linear_attention`] |
//! | [`conv2d`] (general, 1×1, depthwise; groups), on [`gemm`]; [`conv2d_prepared`] with a weight packed once ([`PreparedConv`]) | `[C_in, H, W]` → `[C_out, OH, OW]`, weights `[C_out, C_in/G, kh, kw]` | [`conv`] |
//! | [`upsample_nearest`], [`pixel_shuffle`], [`pixel_unshuffle`], [`repeat_channels`] | `[C, H, W]` | [`resample`] |
//!
//! SIMD (measured, see `benches/ops.rs`): [`kernels::dot`] has AVX2+FMA (runtime-detected) and NEON
//! intrinsics, because LLVM vectorised every plain-Rust form of that reduction only 2-wide. Everything
//! else is plain Rust that LLVM vectorises fully once compiled for AVX2: hot loop nests (a conv task,
//! an attention head, the [`kernels`] element-wise loops) are built twice by `multiversion!` and
//! dispatched at run time; on aarch64 NEON is baseline. Dense convolutions are a packed,
//! cache-blocked GEMM ([`gemm`]) over implicit im2col blocks, with an AVX2+FMA 6×16 intrinsics
//! micro-kernel (a portable 8×12 one elsewhere; an 8×48 `vdpbf16ps` one for BF16 weights on AVX-512
//! BF16). Transcendentals (`exp`, `tanh`) are libm's scalar calls: they
//! are a small share of any model step next to the matrix products.
//!
//! Threads: rayon, over rows, heads, output-channel blocks, planes or pixel tiles.

pub mod activation;
pub mod attention;
pub mod conv;
pub mod gemm;
pub mod kernels;
pub mod linear_attention;
pub mod norm;
pub mod resample;
pub mod rope;
mod shared_mut;
pub mod softmax;

pub use crate::backend::op_error::{self as error, OpError};
pub use activation::{erf, gelu_erf, gelu_tanh, mish, quick_gelu, relu, silu, swiglu};
pub use attention::{attention, AttentionScratch, AttentionShape, BiasMode, BlockBias, Mask};
pub use conv::{
    conv2d, conv2d_prepared, conv2d_with_isa, conv2d_with_kernel, conv2d_with_scratch, Conv2d,
    ConvScratch, PreparedConv,
};
pub use linear_attention::relu_linear_attention;
pub use norm::{group_norm, layer_norm, rms_norm, rms_norm_channels};
pub use resample::{pixel_shuffle, pixel_unshuffle, repeat_channels, upsample_nearest};
pub use rope::{inv_freqs, rope_neox, vision_positions, RopeTable};
pub use softmax::{softmax_row, softmax_rows};
