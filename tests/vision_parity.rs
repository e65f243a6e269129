//! The vision tower against transformers' Qwen2-VL (reference fixtures `und.*`, tied `base` and
//! untied `alt` models, which have different random towers): from the raw image through our
//! preprocessing, the ViT output before the merger (`und.vision_hidden`) and the merged
//! embeddings (`und.vision_embeds`), F32 weights; Q8_0 weights report their error.
//!
//! Tolerance: f32 sums in another order over 2 blocks and the merger: 1e-4 of the largest
//! magnitude (measured ~1e-6). Q8_0: 8-bit weights, bound 5e-2 of the largest magnitude.

mod reference_support;

use latte::image::{preprocess, RgbImage};
use latte::model::vision::VisionModel;
use latte::model::ModelFile;
use reference_support::{convert, max_abs_diff, Oracle};

fn check(config: &str, ty: &str, tolerance: f32) -> (f32, f32) {
    let tmp = tempfile::tempdir().unwrap();
    let file = ModelFile::open(convert(config, ty, tmp.path())).unwrap();
    let model = VisionModel::load(&file).unwrap();
    let o = Oracle::open(config);
    let shape = o.shape("und.image");
    let image = RgbImage::new(shape[1], shape[0], o.u8("und.image")).unwrap();
    let pixels = preprocess(&image, &model.config().preprocess).unwrap();
    assert_eq!(
        pixels.grid.map(|x| x as i64).to_vec(),
        o.i64("und.image_grid_thw")
    );
    let out = model.encode(&pixels).unwrap();

    let (hidden, hidden_scale) = max_abs_diff(&out.hidden, &o.f32("und.vision_hidden"));
    let (embeds, embeds_scale) = max_abs_diff(&out.embeddings, &o.f32("und.vision_embeds"));
    println!("{config} {ty}: vision hidden max |Δ| {hidden:e} (max {hidden_scale}), embeds {embeds:e} (max {embeds_scale})");
    assert!(
        hidden <= tolerance * hidden_scale.max(1.0),
        "{config} {ty} hidden {hidden}"
    );
    assert!(
        embeds <= tolerance * embeds_scale.max(1.0),
        "{config} {ty} embeds {embeds}"
    );
    assert_eq!(out.n_tokens(), o.shape("und.vision_embeds")[0]);
    (hidden, embeds)
}

#[test]
fn vision_features_match_transformers() {
    check("base", "f32", 1e-4);
    check("alt", "f32", 1e-4);
}

#[test]
fn vision_features_q8_0_error() {
    for config in ["base", "alt"] {
        let (hidden, embeds) = check(config, "q8_0", 5e-2);
        println!("{config}: Q8_0 vision hidden max |Δ| {hidden:e}, embeds {embeds:e}");
    }
}

#[test]
fn bad_pixel_values_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let file = ModelFile::open(convert("base", "f32", tmp.path())).unwrap();
    let model = VisionModel::load(&file).unwrap();
    let o = Oracle::open("base");
    let shape = o.shape("und.image");
    let image = RgbImage::new(shape[1], shape[0], o.u8("und.image")).unwrap();
    let mut pixels = preprocess(&image, &model.config().preprocess).unwrap();
    pixels.values.pop();
    assert!(model.encode(&pixels).is_err());
    pixels.values.push(0.0);
    pixels.grid = [1, 3, 8];
    assert!(model.encode(&pixels).is_err());
    pixels.grid = [0, 4, 6];
    assert!(model.encode(&pixels).is_err());
}
