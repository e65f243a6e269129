//! Images in and out of the engine.
//!
//! In: decoding PNG / JPEG / WebP to RGB (`decode`), PIL's bicubic resampling (`resize`), and
//! Qwen2-VL's image processor (`preprocess`: smart resize, rescale, CLIP normalisation, temporal
//! repeat, patch order); their errors are [`ImageInputError`].
//! Out: the decoder's f32 `[3, H, W]` output turned into 8-bit RGB and written as PNG (`png`).
//!
//! This module owns pixel conversion and files; it must not know models, weights or tokens (the
//! vision tower reads its `PreprocessConfig` from the model file and hands it here).

pub mod decode;
pub mod error;
pub mod png;
pub mod preprocess;
pub mod resize;

pub use decode::{decode_rgb, load_rgb, RgbImage, DEFAULT_MAX_INPUT_PIXELS};
pub use error::ImageInputError;
pub use png::{to_rgb8, write_png, ImageError};
pub use preprocess::{merged_tokens, preprocess, smart_resize, PixelValues, PreprocessConfig};
pub use resize::resize_bicubic;
