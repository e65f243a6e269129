//! The DC-AE decoder (diffusers' `AutoencoderDC` decoder half): turns a generated latent into an
//! RGB image. `config` parses the diffusers config stored in the file; `weights` loads tensors and
//! convolutions; the blocks are one file each (`res_block`, `up_block`, `multiscale_attention`,
//! `glumb_conv`, `efficient_vit`, with `norm` and `activation`); `decoder` wires them;
//! `scratch` is the reused working memory.
//!
//! This module computes through `backend::cpu::ops` on f32 CHW images (batch 1); it must not write
//! files (PNG output is `image::png`) or know about sampling.

pub mod activation;
pub mod config;
pub mod decoder;
pub mod efficient_vit;
pub mod glumb_conv;
pub mod multiscale_attention;
pub mod norm;
pub mod res_block;
pub mod scratch;
pub mod up_block;
pub mod weights;

pub use config::{DcaeConfig, DcaeConfigError, KEY_CONFIG_JSON};
pub use decoder::Decoder;
pub use scratch::DecoderScratch;
