//! Images leaving the engine: the decoder's f32 `[3, H, W]` output turned into 8-bit RGB and
//! written as PNG (`png`). This module owns pixel conversion and files; it must not know models.

pub mod png;

pub use png::{to_rgb8, write_png, ImageError};
