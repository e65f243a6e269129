//! Fuzzes the `--image` input path: arbitrary bytes into `latte::image::decode_rgb` (the format
//! sniffed from the bytes: PNG, JPEG, WebP) with a small pixel limit, and every accepted image
//! through Qwen2-VL's processor (`image::preprocess`: smart resize, PIL bicubic, normalisation,
//! patches) with a small config. Nothing may panic, allocate without bound or loop; an accepted
//! image holds `width · height · 3` bytes and at most the limit's pixels, and the processor's
//! output has the shape its grid says, with finite values.
//!
//! Registered in `fuzz/Cargo.toml` as
//! `[[bin]] name = "image_decode", path = "fuzz_targets/image_decode.rs", test = false,
//! doc = false, bench = false`. Run:
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run image_decode fuzz/corpus/image_decode fuzz/seeds/image_decode`
#![no_main]

use latte::image::{decode_rgb, merged_tokens, preprocess, PreprocessConfig};
use libfuzzer_sys::fuzz_target;

/// 256 × 256: large enough for every header trick, small enough to decode quickly.
const MAX_PIXELS: u64 = 1 << 16;

/// Qwen2-VL's processor with its real patch geometry and a small pixel budget (4 to 16 merged
/// patches), so odd sizes are resized up and down.
fn config() -> PreprocessConfig {
    PreprocessConfig {
        patch_size: 14,
        temporal_patch_size: 2,
        merge_size: 2,
        min_pixels: 4 * 28 * 28,
        max_pixels: 16 * 28 * 28,
        mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
        std: [0.268_629_54, 0.261_302_6, 0.275_777_1],
        rescale_factor: 1.0 / 255.0,
    }
}

fuzz_target!(|data: &[u8]| {
    let image = match decode_rgb(data, "fuzz", MAX_PIXELS) {
        Ok(image) => image,
        Err(e) => {
            // Messages must render for any input.
            std::hint::black_box(e.to_string());
            return;
        }
    };
    assert_eq!(image.width * image.height * 3, image.pixels.len());
    assert!((image.width * image.height) as u64 <= MAX_PIXELS);
    assert!(image.width > 0 && image.height > 0);

    let config = config();
    let tokens = merged_tokens(image.width, image.height, &config);
    let values = match preprocess(&image, &config) {
        Ok(v) => v,
        Err(e) => {
            std::hint::black_box(e.to_string());
            return;
        }
    };
    let (p, m, t) = (
        config.patch_size,
        config.merge_size,
        config.temporal_patch_size,
    );
    let [gt, gh, gw] = values.grid;
    assert_eq!(gt, 1);
    assert_eq!(values.resized_height, gh * p);
    assert_eq!(values.resized_width, gw * p);
    assert!(gh % m == 0 && gw % m == 0, "grid {:?}", values.grid);
    assert_eq!(values.values.len(), gh * gw * 3 * t * p * p);
    assert_eq!(values.patch_len(), 3 * t * p * p);
    assert_eq!(tokens.ok(), Some((gh / m) * (gw / m)));
    assert!(values.values.iter().all(|x| x.is_finite()));
});
