//! Image decoding, PIL bicubic resampling and Qwen2-VL's image processor against PIL and
//! transformers (fixtures: tools/make_image_fixtures.py → tests/fixtures/image/, and the reference
//! fixtures' `und.image` → `und.pixel_values`).
//!
//! Tolerances: resampling is PIL's fixed-point arithmetic reproduced exactly, so resized pixels
//! must be equal (the issue allows ±1 level; we measure 0). Pixel values are
//! `(f32(byte·1/255) − mean)/std` in f32 as numpy computes them: equal up to 1 ulp of the
//! normalised value (≤ 1e-6 absolute for values within ±3). A JPEG decoder other than libjpeg
//! may upsample chroma and round its IDCT differently: measured max 4 levels, mean 0.36 on this
//! noisy image; bounded at 6 and 0.5.

mod reference_support;

use std::path::Path;

use latte::image::{decode_rgb, load_rgb, preprocess, resize_bicubic, smart_resize};
use latte::image::{ImageInputError, PreprocessConfig, RgbImage, DEFAULT_MAX_INPUT_PIXELS};
use reference_support::{max_abs_diff, max_level_difference, Oracle};

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/image")
}

fn oracle() -> Oracle {
    Oracle::open_path(&fixtures().join("image.safetensors"))
}

fn source(o: &Oracle) -> RgbImage {
    let shape = o.shape("source");
    RgbImage::new(shape[1], shape[0], o.u8("source")).unwrap()
}

const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const CLIP_STD: [f32; 3] = [0.268_629_55, 0.261_302_6, 0.275_777_1];

fn config(min_pixels: usize, max_pixels: usize) -> PreprocessConfig {
    PreprocessConfig {
        patch_size: 14,
        temporal_patch_size: 2,
        merge_size: 2,
        min_pixels,
        max_pixels,
        mean: CLIP_MEAN,
        std: CLIP_STD,
        rescale_factor: 1.0 / 255.0,
    }
}

#[test]
fn bicubic_equals_pil() {
    let o = oracle();
    let src = source(&o);
    for (w, h) in [
        (56, 28),
        (28, 56),
        (40, 30),
        (97, 61),
        (200, 120),
        (150, 35),
        (13, 90),
        (1, 1),
        (3, 200),
    ] {
        let ours = resize_bicubic(&src, w, h).unwrap();
        let expected = o.u8(&format!("resize.{w}x{h}"));
        let worst = max_level_difference(&ours.pixels, &expected);
        assert_eq!(worst, 0, "{w}x{h}: max level difference {worst}");
    }
    assert!(resize_bicubic(&src, 0, 5).is_err());
}

#[test]
fn smart_resize_equals_transformers() {
    let rows = oracle().i64("smart_resize");
    for row in rows.chunks_exact(6) {
        let [h, w, lo, hi, out_h, out_w] = [0, 1, 2, 3, 4, 5].map(|i| row[i] as usize);
        assert_eq!(
            smart_resize(h, w, 28, lo, hi).unwrap(),
            (out_h, out_w),
            "{row:?}"
        );
    }
    assert!(smart_resize(1, 201, 28, 3136, 12544).is_err());
    assert!(smart_resize(0, 10, 28, 3136, 12544).is_err());
}

#[test]
fn pixel_values_equal_the_processor() {
    let o = oracle();
    let src = source(&o);
    for (name, lo, hi) in [("processor", 3136, 12544), ("processor_up", 6272, 1003520)] {
        let ours = preprocess(&src, &config(lo, hi)).unwrap();
        let grid = o.i64(&format!("{name}.grid_thw"));
        assert_eq!(ours.grid.map(|x| x as i64).to_vec(), grid, "{name}");
        let (diff, _) = max_abs_diff(&ours.values, &o.f32(&format!("{name}.pixel_values")));
        println!("{name}: max |Δ| = {diff:e}");
        assert!(diff <= 1e-6, "{name}: {diff}");
    }
}

/// The reference fixtures' own processor run (a 40×70 image upscaled to 56×84).
#[test]
fn pixel_values_equal_the_reference_fixture() {
    for config_name in ["base", "alt"] {
        let o = Oracle::open(config_name);
        let shape = o.shape("und.image");
        let image = RgbImage::new(shape[1], shape[0], o.u8("und.image")).unwrap();
        let ours = preprocess(&image, &config(3136, 50176)).unwrap();
        assert_eq!(
            ours.grid.map(|x| x as i64).to_vec(),
            o.i64("und.image_grid_thw")
        );
        let (diff, _) = max_abs_diff(&ours.values, &o.f32("und.pixel_values"));
        assert!(diff <= 1e-6, "{config_name}: {diff}");
    }
}

#[test]
fn decoding_matches_pil() {
    let o = oracle();
    let src = source(&o);
    for lossless in ["source.png", "source.webp"] {
        let img = load_rgb(fixtures().join(lossless), DEFAULT_MAX_INPUT_PIXELS).unwrap();
        assert_eq!(img, src, "{lossless}");
    }
    let jpeg = load_rgb(fixtures().join("source.jpg"), DEFAULT_MAX_INPUT_PIXELS).unwrap();
    let pil = o.u8("decoded.jpg");
    let diffs: Vec<i32> = jpeg
        .pixels
        .iter()
        .zip(&pil)
        .map(|(&a, &b)| (a as i32 - b as i32).abs())
        .collect();
    let worst = *diffs.iter().max().unwrap();
    let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
    println!("jpeg vs PIL: max {worst} levels, mean {mean:.3}");
    assert!(worst <= 6 && mean < 0.5, "jpeg: max {worst}, mean {mean}");
}

#[test]
fn bad_images_are_errors() {
    let png = std::fs::read(fixtures().join("source.png")).unwrap();
    // Truncated and corrupt files.
    for bad in [
        &png[..png.len() / 2],
        &png[..20],
        b"not an image at all".as_slice(),
        &[],
    ] {
        assert!(matches!(
            decode_rgb(bad, "bad", DEFAULT_MAX_INPUT_PIXELS),
            Err(ImageInputError::Decode { .. })
        ));
    }
    let mut flipped = png.clone();
    for i in (100..flipped.len()).step_by(97) {
        flipped[i] ^= 0x5a;
    }
    assert!(decode_rgb(&flipped, "flipped", DEFAULT_MAX_INPUT_PIXELS).is_err());
    // Over the pixel limit: refused from the header, before decoding.
    let err = decode_rgb(&png, "big", 1000).unwrap_err();
    assert!(
        matches!(err, ImageInputError::TooLarge { pixels: 5917, .. }),
        "{err}"
    );
    // A header claiming 100000 × 100000 pixels.
    let mut huge = png.clone();
    huge[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    huge[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    assert!(decode_rgb(&huge, "huge", DEFAULT_MAX_INPUT_PIXELS).is_err());
    assert!(load_rgb("/nonexistent/image.png", DEFAULT_MAX_INPUT_PIXELS).is_err());
    assert!(RgbImage::new(2, 2, vec![0; 11]).is_err());
}
