//! Decoding image files (PNG, JPEG, WebP; the format is sniffed from the bytes) into 8-bit RGB, as
//! PIL's `Image.open(...).convert("RGB")` does: alpha is dropped (not composited), grey is
//! replicated. The pixel count is checked from the header before any pixel is decoded, so a
//! hostile header cannot make us allocate gigabytes.
//!
//! This module owns decoding; it must not resize or normalise.

use std::io::{Cursor, Read};
use std::path::Path;

use image::{ImageFormat, ImageReader, Limits};

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

/// The largest pixel limit a caller may ask for (1 gigapixel): the decoded buffers of an image
/// at the limit already take gigabytes.
pub const MAX_INPUT_PIXELS: u64 = 1 << 30;

/// Reads and decodes the file at `path`: the header first, so that the pixel count is checked
/// before the body is read, then at most the bytes such an image can take (a FIFO or a device
/// such as `/dev/zero` is never read without end).
pub fn load_rgb(path: impl AsRef<Path>, max_pixels: u64) -> Result<RgbImage, ImageInputError> {
    let path = path.as_ref();
    let what = path.display().to_string();
    let io_error = |error| ImageInputError::Io {
        path: path.into(),
        error,
    };
    let file = std::fs::File::open(path).map_err(io_error)?;
    if file.metadata().map_err(io_error)?.is_dir() {
        return Err(ImageInputError::Decode {
            what,
            reason: "is a directory, not an image file".into(),
        });
    }
    // Read in growing chunks until the dimensions can be parsed from what has been read.
    let mut file = file.take(HEADER_BYTES);
    let mut bytes = Vec::new();
    let mut chunk = 64 << 10;
    let (width, height) = loop {
        let before = bytes.len();
        (&mut file)
            .take(chunk)
            .read_to_end(&mut bytes)
            .map_err(io_error)?;
        let exhausted = (bytes.len() - before) < chunk as usize;
        let reader = ImageReader::new(Cursor::new(&bytes))
            .with_guessed_format()
            .map_err(io_error)?;
        if reader.format().is_none() {
            return Err(ImageInputError::Decode {
                what,
                reason: "not a PNG, JPEG or WebP image".into(),
            });
        }
        match reader.into_dimensions() {
            Ok(dimensions) => break dimensions,
            Err(e) if exhausted => {
                return Err(ImageInputError::Decode {
                    what,
                    reason: e.to_string(),
                })
            }
            Err(_) => chunk *= 2,
        }
    };
    check_pixels(&what, width, height, max_pixels)?;
    let limit = max_file_bytes(width, height);
    let already = bytes.len() as u64;
    file.into_inner()
        .take((limit + 1).saturating_sub(already))
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > limit {
        return Err(ImageInputError::Decode {
            what,
            reason: format!(
                "more than {limit} bytes for a {width}×{height} image: not an image file"
            ),
        });
    }
    decode_rgb(&bytes, &what, max_pixels)
}

/// Enough for any header the decoders read before the dimensions (JPEG APP segments such as
/// EXIF and ICC profiles come first and may take a few hundred kilobytes).
const HEADER_BYTES: u64 = 16 << 20;

/// The most bytes an image file of `width × height` may hold: uncompressed 16-bit RGBA with
/// per-row overhead, plus room for metadata chunks.
fn max_file_bytes(width: u32, height: u32) -> u64 {
    let pixels = u64::from(width) * u64::from(height);
    pixels * 8 + u64::from(height) * 16 + (32 << 20)
}

fn check_pixels(
    what: &str,
    width: u32,
    height: u32,
    max_pixels: u64,
) -> Result<(), ImageInputError> {
    if max_pixels > MAX_INPUT_PIXELS {
        return Err(ImageInputError::Config(format!(
            "a pixel limit of {max_pixels} is over the most this engine decodes ({MAX_INPUT_PIXELS})"
        )));
    }
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
        return Err(ImageInputError::Decode {
            what: what.into(),
            reason: "the image is empty".into(),
        });
    }
    Ok(())
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
    check_pixels(what, width, height, max_pixels)?;
    let (w, h) = (u64::from(width), u64::from(height));
    let mut reader = reader()?;
    // PIL refuses a JPEG whose data ends before its last scan does ("image file is truncated");
    // the decoder here would fill the rest with grey.
    if reader.format() == Some(ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        return Err(decode_error(
            &"the JPEG data ends before the image does (a truncated file)",
        ));
    }
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

/// Walks a JPEG's segments (lengths skip EXIF thumbnails and other payloads) and its
/// entropy-coded scans (where a 0xFF byte is always followed by 0x00 or a restart marker) and
/// says whether the end-of-image marker is reached before the bytes end.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    const SOI: u8 = 0xD8;
    const EOI: u8 = 0xD9;
    const SOS: u8 = 0xDA;
    if bytes.get(..2) != Some(&[0xFF, SOI]) {
        return false;
    }
    let mut at = 2;
    loop {
        // A marker, possibly after fill bytes of 0xFF.
        if bytes.get(at) != Some(&0xFF) {
            return false;
        }
        while bytes.get(at) == Some(&0xFF) {
            at += 1;
        }
        let Some(&marker) = bytes.get(at) else {
            return false;
        };
        at += 1;
        match marker {
            EOI => return true,
            // Markers without a length.
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(len) = bytes.get(at..at + 2) else {
            return false;
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len < 2 {
            return false;
        }
        at += len;
        if at > bytes.len() {
            return false;
        }
        if marker == SOS {
            // The scan's data runs to the next marker that is neither a stuffed byte nor a
            // restart marker.
            loop {
                match bytes.get(at..at + 2) {
                    None => return false,
                    Some([0xFF, 0x00]) | Some([0xFF, 0xD0..=0xD7]) => at += 2,
                    Some([0xFF, next]) if *next != 0xFF => break,
                    Some([0xFF, _]) => at += 1,
                    Some(_) => at += 1,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny baseline JPEG, encoded by the `image` crate.
    fn jpeg() -> Vec<u8> {
        let mut bytes = Vec::new();
        let img =
            image::RgbImage::from_fn(16, 8, |x, y| image::Rgb([x as u8 * 16, y as u8 * 32, 7]));
        img.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Jpeg)
            .unwrap();
        bytes
    }

    #[test]
    fn complete_jpegs_are_recognised_and_every_truncation_refused() {
        let bytes = jpeg();
        assert!(jpeg_is_complete(&bytes));
        // Trailing bytes after the end marker are allowed, as PIL allows them.
        let mut trailing = bytes.clone();
        trailing.extend_from_slice(b"junk after the image");
        assert!(jpeg_is_complete(&trailing));
        assert!(decode_rgb(&trailing, "trailing", 1 << 20).is_ok());
        for cut in 0..bytes.len() - 1 {
            assert!(!jpeg_is_complete(&bytes[..cut]), "cut at {cut}");
            let err = decode_rgb(&bytes[..cut], "cut", 1 << 20).unwrap_err();
            assert!(
                matches!(err, ImageInputError::Decode { .. }),
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn endless_and_non_image_inputs_are_refused_without_reading_them_whole() {
        #[cfg(unix)]
        {
            let err = load_rgb("/dev/zero", DEFAULT_MAX_INPUT_PIXELS).unwrap_err();
            assert!(err.to_string().contains("not a PNG, JPEG or WebP"), "{err}");
        }
        let dir = std::env::temp_dir();
        let err = load_rgb(&dir, DEFAULT_MAX_INPUT_PIXELS).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
        let err = decode_rgb(&jpeg(), "x", MAX_INPUT_PIXELS + 1).unwrap_err();
        assert!(matches!(err, ImageInputError::Config(_)), "{err}");
    }

    /// A valid header followed by more bytes than an image of its size can hold (a PNG whose
    /// tail is endless, as from a FIFO) is cut off at the bound.
    #[test]
    fn a_body_past_the_bound_is_refused() {
        let mut png = Vec::new();
        image::RgbImage::new(2, 2)
            .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        let limit = max_file_bytes(2, 2) as usize;
        png.resize(limit + 10, 0);
        let path = std::env::temp_dir().join(format!("latte-endless-{}.png", std::process::id()));
        std::fs::write(&path, &png).unwrap();
        let err = load_rgb(&path, DEFAULT_MAX_INPUT_PIXELS).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(err.to_string().contains("more than"), "{err}");
    }
}
