//! `latte convert TEXT.gguf --mmproj MMPROJ.gguf`: llama.cpp's two-file Qwen2-VL (a text model and
//! its vision projector, as its `convert_hf_to_gguf.py` writes them) joined into one latte file, the
//! layout `latte convert` writes from a checkpoint directory (an understanding model).
//!
//! What llama.cpp leaves implicit becomes explicit: the merge size its projector type implies, the
//! vision MLP's real width (llama.cpp's `feed_forward_length` holds another number), transformers'
//! pixel limits, the image token ids from the text vocabulary, the tied output head and the
//! tokenizer's normalizer. The file is checked by the loaders' own rules before a byte is written.
//! This module decides keys; types and bytes are `quantize.rs`'s.

use std::path::Path;

use super::error::ConvertError;
use super::metadata::KEY_MODEL_KIND;
use super::preset::LayerCounts;
use super::quantize::{plan_tensor, write_requantized, QuantizeOptions, QuantizeReport};
use super::validate::check_planned;
use super::write::OutputTensor;
use crate::gguf::MetadataValue;
use crate::model::projector::open_with_projector;
use crate::model::text::TextConfig;
use crate::model::vision::VisionConfig;
use crate::model::ModelFile;
use crate::tokenizer::{Normalizer, PreTokenizer};

/// Keys of either file that the joined file does not keep (layout and file type, set when
/// writing, or what is rewritten below).
const DROPPED: [&str; 5] = [
    "general.alignment",
    "general.file_type",
    "general.quantization_version",
    "general.type",
    "clip.vision.feed_forward_length",
];

/// Joins `text` and `mmproj` into `output` (written atomically), each tensor re-typed by `options`.
pub fn convert_pair(
    text: &Path,
    mmproj: &Path,
    output: &Path,
    options: &QuantizeOptions,
) -> Result<QuantizeReport, ConvertError> {
    let refused = |cause: String| ConvertError::Refused {
        origin: text.to_path_buf(),
        from: "the --mmproj pair",
        cause,
    };
    let pair = open_with_projector(text, mmproj).map_err(|e| refused(e.to_string()))?;
    let projector = pair.projector().expect("joined with a projector");
    let metadata = joined_metadata(&pair, projector).map_err(|e| refused(e.to_string()))?;

    let infos: Vec<_> = [pair.gguf(), projector.gguf()]
        .into_iter()
        .flat_map(|file| file.tensor_infos())
        .collect();
    let layers = LayerCounts::of(infos.iter().map(|info| info.name.as_str()));
    let tensors: Vec<OutputTensor> = infos
        .iter()
        .map(|info| OutputTensor {
            plan: plan_tensor(info, options, &layers),
            dims: info.dims.clone(),
            group: None,
            starts_group: false,
        })
        .collect();
    check_planned(text, &metadata, &tensors)?;
    Ok(write_requantized(
        &[(text, pair.gguf()), (mmproj, projector.gguf())],
        metadata,
        output,
        options,
    )?)
}

fn joined_metadata(
    pair: &ModelFile,
    projector: &ModelFile,
) -> Result<Vec<(String, MetadataValue)>, crate::model::ModelError> {
    let text = TextConfig::from_file(pair)?;
    let vision = VisionConfig::from_file(pair)?;
    let mut metadata: Vec<(String, MetadataValue)> = Vec::new();
    let mut push = |key: &str, value: MetadataValue| {
        if !metadata.iter().any(|(k, _)| k == key) {
            metadata.push((key.to_string(), value));
        }
    };
    push("general.type", "model".into());
    // The text model's keys first (its general.* win), then the projector's clip.* keys.
    for (file, only_clip) in [(pair.gguf(), false), (projector.gguf(), true)] {
        for (key, value) in file.metadata() {
            if DROPPED.contains(&key.as_str()) || (only_clip && !key.starts_with("clip.")) {
                continue;
            }
            push(key, value.clone());
        }
    }
    push(KEY_MODEL_KIND, "understanding".into());
    push("latte.tie_word_embeddings", text.tied.into());
    if pair.gguf().get("latte.tokenizer.normalizer").is_none() {
        let implied = pair
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.as_str())
            .and_then(PreTokenizer::from_name)
            .map(Normalizer::implied_by);
        if let Some(normalizer) = implied {
            let name = match normalizer {
                Normalizer::Nfc => "nfc",
                Normalizer::None => "none",
            };
            push("latte.tokenizer.normalizer", name.into());
        }
    }
    let u32_of = |x: usize| MetadataValue::U32(u32::try_from(x).unwrap_or(u32::MAX));
    let p = &vision.preprocess;
    push("clip.vision.feed_forward_length", u32_of(vision.ffn));
    push("clip.vision.spatial_merge_size", u32_of(p.merge_size));
    push("clip.vision.image_min_pixels", u32_of(p.min_pixels));
    push("clip.vision.image_max_pixels", u32_of(p.max_pixels));
    push(
        "latte.vision.temporal_patch_size",
        u32_of(p.temporal_patch_size),
    );
    push("latte.vision.image_token_id", vision.image_token_id.into());
    push("latte.vision.start_token_id", vision.start_token_id.into());
    push("latte.vision.end_token_id", vision.end_token_id.into());
    Ok(metadata)
}
