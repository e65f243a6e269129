//! Images in, model input out: decoding PNG / JPEG / WebP to RGB (`decode`), PIL's bicubic
//! resampling (`resize`), and Qwen2-VL's image processor (`preprocess`: smart resize, rescale,
//! CLIP normalisation, temporal repeat, patch order).
//!
//! This module owns pixels; it must not know model weights or tokens (the vision tower reads its
//! `PreprocessConfig` from the model file and hands it here).

pub mod decode;
pub mod error;
pub mod preprocess;
pub mod resize;

pub use decode::{decode_rgb, load_rgb, RgbImage, DEFAULT_MAX_INPUT_PIXELS};
pub use error::ImageError;
pub use preprocess::{preprocess, smart_resize, PixelValues, PreprocessConfig};
pub use resize::resize_bicubic;
