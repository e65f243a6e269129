//! Qwen2-VL's image processor (transformers' `Qwen2VLImageProcessorPil`), step for step:
//! 1. smart resize: both sides to multiples of `patch · merge` (28), the pixel count kept within
//!    `[min_pixels, max_pixels]`, the aspect ratio as close as those allow ([`smart_resize`]);
//! 2. PIL bicubic resampling of the 8-bit image (`resize`);
//! 3. `x = f32(byte · rescale_factor)` (the product in f64, as numpy does), then
//!    `(x − mean[c]) / std[c]` in f32 (CLIP mean / std);
//! 4. patches: the frame repeated `temporal_patch` times, one row per 14×14 patch, rows in merge
//!    windows (`merge × merge` patches, windows row-major, patches row-major inside a window),
//!    each row's values ordered (channel, time, y, x): the processor's
//!    `reshape(C, gh/m, m, p, gw/m, m, p)` → `transpose(1, 4, 2, 5, 0, 3, 6)` with time inserted
//!    after the channel.
//!
//! This module owns that recipe; it must not run the vision tower.

use super::decode::RgbImage;
use super::error::ImageInputError;
use super::resize::resize_bicubic;

/// The processor's settings (from the model file's `clip.vision.*` / `latte.vision.*` keys).
#[derive(Clone, Debug, PartialEq)]
pub struct PreprocessConfig {
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub merge_size: usize,
    pub min_pixels: usize,
    pub max_pixels: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Multiplies each byte (1/255), in f64.
    pub rescale_factor: f64,
}

/// The processor's output for one image.
#[derive(Clone, Debug, PartialEq)]
pub struct PixelValues {
    /// `[patches, 3 · temporal · patch · patch]`, patches in merge-window order.
    pub values: Vec<f32>,
    /// `(t, h, w)` in patches (`t = 1` for an image).
    pub grid: [usize; 3],
    /// Size after the smart resize.
    pub resized_width: usize,
    pub resized_height: usize,
}

impl PixelValues {
    /// Values per patch row.
    pub fn patch_len(&self) -> usize {
        self.values.len() / self.grid.iter().product::<usize>().max(1)
    }
}

/// transformers' `smart_resize(height, width, factor, min_pixels, max_pixels)`: the resized
/// `(height, width)`. Python's `round` rounds halves to even, as here.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize), ImageInputError> {
    let geometry = |reason: String| ImageInputError::Geometry {
        width,
        height,
        reason,
    };
    if height == 0 || width == 0 || factor == 0 {
        return Err(geometry("empty image".into()));
    }
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    if h.max(w) / h.min(w) > 200.0 {
        return Err(geometry(format!(
            "aspect ratio {:.1} is over 200",
            h.max(w) / h.min(w)
        )));
    }
    let mut h_bar = (h / f).round_ties_even() * f;
    let mut w_bar = (w / f).round_ties_even() * f;
    if h_bar * w_bar > max_pixels as f64 {
        let beta = (h * w / max_pixels as f64).sqrt();
        h_bar = f.max((h / beta / f).floor() * f);
        w_bar = f.max((w / beta / f).floor() * f);
    } else if h_bar * w_bar < min_pixels as f64 {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        h_bar = (h * beta / f).ceil() * f;
        w_bar = (w * beta / f).ceil() * f;
    }
    Ok((h_bar as usize, w_bar as usize))
}

/// How many merged tokens an image of `width × height` pixels becomes (the processor's resize
/// only; nothing is computed on pixels). `preprocess` refuses images whose count is 0.
pub fn merged_tokens(
    width: usize,
    height: usize,
    config: &PreprocessConfig,
) -> Result<usize, ImageInputError> {
    let side = config.patch_size * config.merge_size;
    let (h, w) = smart_resize(height, width, side, config.min_pixels, config.max_pixels)?;
    Ok((h / side) * (w / side))
}

/// Runs the processor on `image`.
pub fn preprocess(
    image: &RgbImage,
    config: &PreprocessConfig,
) -> Result<PixelValues, ImageInputError> {
    let PreprocessConfig {
        patch_size: p,
        temporal_patch_size: temporal,
        merge_size: m,
        ..
    } = *config;
    if p == 0 || temporal == 0 || m == 0 || config.std.contains(&0.0) {
        return Err(ImageInputError::Config(format!("{config:?}")));
    }
    let (height, width) = smart_resize(
        image.height,
        image.width,
        p * m,
        config.min_pixels,
        config.max_pixels,
    )?;
    if height < p * m || width < p * m {
        return Err(ImageInputError::Geometry {
            width: image.width,
            height: image.height,
            reason: format!("resizes to {width}×{height}, smaller than one merged patch"),
        });
    }
    let resized = if (width, height) == (image.width, image.height) {
        image.clone()
    } else {
        resize_bicubic(image, width, height)?
    };

    // Normalised planes [3, H, W].
    let plane = width * height;
    let mut planes = vec![0f32; 3 * plane];
    for (i, px) in resized.pixels.chunks_exact(3).enumerate() {
        for c in 0..3 {
            let x = (f64::from(px[c]) * config.rescale_factor) as f32;
            planes[c * plane + i] = (x - config.mean[c]) / config.std[c];
        }
    }

    let (gh, gw) = (height / p, width / p);
    let row_len = 3 * temporal * p * p;
    let mut values = Vec::with_capacity(gh * gw * row_len);
    for bh in 0..gh / m {
        for bw in 0..gw / m {
            for ih in 0..m {
                for iw in 0..m {
                    let (y0, x0) = ((bh * m + ih) * p, (bw * m + iw) * p);
                    for c in 0..3 {
                        for _ in 0..temporal {
                            for y in y0..y0 + p {
                                let start = c * plane + y * width + x0;
                                values.extend_from_slice(&planes[start..start + p]);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(PixelValues {
        values,
        grid: [1, gh, gw],
        resized_width: width,
        resized_height: height,
    })
}
