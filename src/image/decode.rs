//! Decoding image files (PNG, JPEG, WebP; the format is sniffed from the bytes) into 8-bit RGB, as
//! PIL's `Image.open(...).convert("RGB")` does: alpha is dropped (not composited), grey is
//! replicated. The pixel count is checked from the header before any pixel is decoded, so a
//! hostile header cannot make us allocate gigabytes.
//!
//! This module owns decoding; it must not resize or normalise.

use std::io::Cursor;
use std::path::Path;

use image::{ImageReader, Limits};

use super::error::ImageInputError;

/// Larger inputs are refused (64 megapixels, far above anything a model sees after resizing).
pub const DEFAULT_MAX_INPUT_PIXELS: u64 = 64 << 20;

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl RgbImage {
    /// Checks that `pixels` holds `width × height × 3` bytes.
    pub fn new(width: usize, height: usize, pixels: Vec<u8>) -> Result<Self, ImageInputError> {
        let expected = width.checked_mul(height).and_then(|x| x.checked_mul(3));
        if expected != Some(pixels.len()) {
            return Err(ImageInputError::BufferSize {
                width,
                height,
                expected: expected.unwrap_or(usize::MAX),
                got: pixels.len(),
            });
        }
        Ok(RgbImage {
            width,
            height,
            pixels,
        })
    }
}

/// Reads and decodes the file at `path`.
pub fn load_rgb(path: impl AsRef<Path>, max_pixels: u64) -> Result<RgbImage, ImageInputError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|error| ImageInputError::Io {
        path: path.into(),
        error,
    })?;
    decode_rgb(&bytes, &path.display().to_string(), max_pixels)
}

/// Decodes `bytes` (`what` names them in errors), refusing images over `max_pixels` pixels.
pub fn decode_rgb(bytes: &[u8], what: &str, max_pixels: u64) -> Result<RgbImage, ImageInputError> {
    let decode_error = |e: &dyn std::fmt::Display| ImageInputError::Decode {
        what: what.into(),
        reason: e.to_string(),
    };
    let reader = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| decode_error(&e))
    };
    let (width, height) = reader()?.into_dimensions().map_err(|e| decode_error(&e))?;
    let (w, h) = (u64::from(width), u64::from(height));
    if w * h > max_pixels {
        return Err(ImageInputError::TooLarge {
            what: what.into(),
            width: w,
            height: h,
            pixels: w * h,
            limit: max_pixels,
        });
    }
    if w == 0 || h == 0 {
        return Err(decode_error(&"the image is empty"));
    }
    let mut reader = reader()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    // The decoded buffer (up to 16-bit RGBA) plus the RGB copy, with room for decoder state.
    limits.max_alloc = Some(w * h * 8 * 2 + (64 << 20));
    reader.limits(limits);
    let decoded = reader.decode().map_err(|e| decode_error(&e))?;
    let rgb = decoded.into_rgb8();
    RgbImage::new(rgb.width() as usize, rgb.height() as usize, rgb.into_raw())
}
