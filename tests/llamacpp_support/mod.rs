//! Shared helpers of the tests on llama.cpp's own Qwen2-VL files (`tests/fixtures/llamacpp/`, made
//! by tools/make_llamacpp_fixture.py): the text model unpacked into a temporary directory, and the
//! logits at the last prompt position through the describe chain by hand.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};

use latte::image::{load_rgb, preprocess, DEFAULT_MAX_INPUT_PIXELS};
use latte::model::positions::rope_positions;
use latte::model::text::{KvCache, Logits, TextScratch};
use latte::pipeline::Describer;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llamacpp")
}

/// The text GGUF, committed gzip-compressed (15 MB of vocabulary and embedding rows → 2.8 MB),
/// written to `dir`.
pub fn text_model(dir: &Path) -> PathBuf {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(fixtures().join("text-f16.gguf.gz")).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    let path = dir.join("text-f16.gguf");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The logits at the last position of `ids` (with `image`'s rows at its pads, when given).
pub fn last_logits(describer: &Describer<'_>, ids: &[u32], image: Option<&Path>) -> Vec<f32> {
    let text = describer.text_model();
    let d = text.config().hidden;
    let mut embeddings = vec![0f32; ids.len() * d];
    text.embed_tokens(ids, &mut embeddings).unwrap();
    let positions = match image {
        Some(path) => {
            let vision = describer.vision_model().unwrap();
            let rgb = load_rgb(path, DEFAULT_MAX_INPUT_PIXELS).unwrap();
            let output = vision
                .encode(&preprocess(&rgb, &vision.config().preprocess).unwrap())
                .unwrap();
            let image_token = vision.config().image_token_id;
            let mut rows = output.embeddings.chunks_exact(d);
            for (id, row) in ids.iter().zip(embeddings.chunks_exact_mut(d)) {
                if *id == image_token {
                    row.copy_from_slice(rows.next().unwrap());
                }
            }
            rope_positions(ids, image_token, &[output.merged_grid])
                .unwrap()
                .0
        }
        None => rope_positions(ids, u32::MAX, &[]).unwrap().0,
    };
    let mut cache = KvCache::new(text.config(), ids.len());
    let mut logits = Vec::new();
    text.forward(
        &embeddings,
        &positions,
        &mut cache,
        &mut TextScratch::new(),
        None,
        Logits::Last,
        &mut logits,
    )
    .unwrap();
    logits
}
