//! PNG output: an f32 image `[3, H, W]` in `[−1, 1]` becomes 8-bit RGB by the reference's rule
//! (`tools/reference/autoencoder.py`'s `to_uint8`): clamp to `[−1, 1]`, `(y + 1)·127.5`, round half
//! to even (`torch.round`), and is written with the `png` crate plus text chunks for the
//! generation parameters (`prompt`, `seed`, `steps`, `guidance`, `sampler`, `model`, or whatever the
//! caller passes): `tEXt` when the value is Latin-1, `iTXt` (UTF-8) otherwise.
//!
//! The encoded bytes go out through [`crate::output`]: a temporary file renamed into place (a
//! reader never sees a half-written PNG, and on any error nothing is left behind), a device or
//! FIFO written directly, or `-` for stdout.

use std::path::Path;

use crate::output::{write_output, Content, OutputError};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("image has {actual} values, expected 3×{height}×{width}")]
    Shape {
        height: usize,
        width: usize,
        actual: usize,
    },
    #[error("image size {height}×{width} cannot be stored in a PNG")]
    Size { height: usize, width: usize },
    #[error("PNG text key '{key}' is not 1–79 printable Latin-1 characters without leading, trailing or double spaces")]
    TextKey { key: String },
    #[error(transparent)]
    Output(#[from] OutputError),
    // Encoding happens in memory, before any file is named: only text chunks can fail it.
    #[error("cannot encode the PNG: {0}")]
    Encode(::png::EncodingError),
}

/// `[3, H, W]` f32 in `[−1, 1]` → interleaved RGB bytes `[H, W, 3]`.
pub fn to_rgb8(image: &[f32], height: usize, width: usize) -> Result<Vec<u8>, ImageError> {
    let plane = height
        .checked_mul(width)
        .filter(|p| p.checked_mul(3).is_some())
        .ok_or(ImageError::Size { height, width })?;
    if image.len() != 3 * plane {
        return Err(ImageError::Shape {
            height,
            width,
            actual: image.len(),
        });
    }
    let mut rgb = vec![0u8; 3 * plane];
    for (c, channel) in image.chunks_exact(plane.max(1)).enumerate().take(3) {
        for (p, &y) in channel.iter().enumerate() {
            rgb[3 * p + c] = to_byte(y);
        }
    }
    Ok(rgb)
}

/// One value: clamp, scale to `[0, 255]` in f32 as the reference does, round half to even. NaN
/// (which only a broken model produces) becomes 0, as `as u8` saturates it.
fn to_byte(y: f32) -> u8 {
    ((y.clamp(-1.0, 1.0) + 1.0) * 127.5).round_ties_even() as u8
}

/// A PNG text keyword: 1–79 Latin-1 printable characters, no leading, trailing or double spaces.
fn valid_keyword(key: &str) -> bool {
    let printable = |c: char| matches!(c as u32, 0x20..=0x7e | 0xa1..=0xff);
    (1..=79).contains(&key.chars().count())
        && key.chars().all(printable)
        && !key.starts_with(' ')
        && !key.ends_with(' ')
        && !key.contains("  ")
}

fn is_latin1(text: &str) -> bool {
    text.chars().all(|c| (c as u32) <= 0xff && c != '\0')
}

/// Writes `image` (`[3, H, W]`, f32 in `[−1, 1]`) to `path` as an 8-bit RGB PNG with `text`
/// key/value chunks (see the module documentation for where the bytes go).
pub fn write_png(
    path: &Path,
    image: &[f32],
    height: usize,
    width: usize,
    text: &[(&str, &str)],
) -> Result<(), ImageError> {
    // Encoded in memory first (a few hundred KB), so every write error surfaces below.
    let bytes = encode_png(image, height, width, text)?;
    Ok(write_output(path, &bytes, Content::Binary("PNG"))?)
}

/// The PNG file's bytes for `image` (`[3, H, W]`, f32 in `[−1, 1]`) with `text` chunks.
pub fn encode_png(
    image: &[f32],
    height: usize,
    width: usize,
    text: &[(&str, &str)],
) -> Result<Vec<u8>, ImageError> {
    let rgb = to_rgb8(image, height, width)?;
    let (Ok(h), Ok(w)) = (u32::try_from(height), u32::try_from(width)) else {
        return Err(ImageError::Size { height, width });
    };
    if h == 0 || w == 0 {
        return Err(ImageError::Size { height, width });
    }
    if let Some((key, _)) = text.iter().find(|(k, _)| !valid_keyword(k)) {
        return Err(ImageError::TextKey { key: (*key).into() });
    }
    let mut bytes = Vec::new();
    let mut encoder = ::png::Encoder::new(&mut bytes, w, h);
    encoder.set_color(::png::ColorType::Rgb);
    encoder.set_depth(::png::BitDepth::Eight);
    for (key, value) in text {
        if is_latin1(value) {
            encoder.add_text_chunk((*key).into(), (*value).into())
        } else {
            encoder.add_itxt_chunk((*key).into(), (*value).into())
        }
        .map_err(ImageError::Encode)?;
    }
    let mut writer = encoder.write_header().map_err(ImageError::Encode)?;
    writer.write_image_data(&rgb).map_err(ImageError::Encode)?;
    writer.finish().map_err(ImageError::Encode)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_follow_the_reference_rule() {
        // −1 → 0, 1 → 255, clamped outside, ties to even: 0.5 → 1, 1.5 → 2 (y = k/127.5 − 1 + …).
        assert_eq!(to_byte(-1.0), 0);
        assert_eq!(to_byte(-7.0), 0);
        assert_eq!(to_byte(1.0), 255);
        assert_eq!(to_byte(3.0), 255);
        assert_eq!(to_byte(0.0), 128); // 127.5 rounds to even 128
        assert_eq!(to_byte(f32::NAN), 0);
        let y = 0.5f32 / 127.5 - 1.0; // (y + 1)·127.5 ≈ 0.5
        let exact = (y + 1.0) * 127.5;
        assert_eq!(to_byte(y), exact.round_ties_even() as u8);
    }

    #[test]
    fn planar_to_interleaved() {
        let image = [-1.0, 1.0, 0.0, 0.0, 1.0, -1.0]; // 1×2, channels R, G, B
        assert_eq!(to_rgb8(&image, 1, 2).unwrap(), [0, 128, 255, 255, 128, 0]);
        assert!(matches!(
            to_rgb8(&image, 2, 2),
            Err(ImageError::Shape { .. })
        ));
    }

    #[test]
    fn keywords() {
        assert!(valid_keyword("prompt"));
        assert!(!valid_keyword(""));
        assert!(!valid_keyword(" x"));
        assert!(!valid_keyword("a  b"));
        assert!(!valid_keyword(&"k".repeat(80)));
        assert!(!valid_keyword("ключ"));
    }
}
