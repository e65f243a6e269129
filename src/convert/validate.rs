//! Convert refuses what the engine would refuse: the planned file (its header: metadata and
//! tensor infos, no data yet) is read through the same loaders `describe` and `generate` use
//! (`model::check`, the tokenizer and the chat template) before a byte is written. The rules live
//! in those loaders only; this module just runs them on a plan.

use std::path::Path;

use super::error::ConvertError;
use super::write::{builder, OutputTensor};
use crate::gguf::MetadataValue;
use crate::model::check::check_model_file;
use crate::model::ModelFile;
use crate::tokenizer::{ChatTemplate, Tokenizer};

/// Checks the file `metadata` and `tensors` describe; `origin` (the checkpoint) names errors.
pub fn check_planned(
    origin: &Path,
    metadata: &[(String, MetadataValue)],
    tensors: &[OutputTensor],
) -> Result<(), ConvertError> {
    let header = builder(metadata, tensors)
        .and_then(|b| b.header())
        .map_err(|cause| ConvertError::Write {
            path: origin.to_path_buf(),
            cause,
        })?;
    let refused = |cause: String| ConvertError::Refused {
        origin: origin.to_path_buf(),
        from: config_file_of(&cause),
        cause,
    };
    let file = ModelFile::from_header(origin.display().to_string(), header)
        .map_err(|e| refused(e.to_string()))?;
    check_model_file(&file).map_err(|e| refused(e.to_string()))?;
    if file.get("tokenizer.ggml.model").is_some() {
        let tokenizer_error = |e: crate::tokenizer::TokenizerError| ConvertError::Refused {
            origin: origin.to_path_buf(),
            from: "tokenizer.json / tokenizer_config.json",
            // Some tokenizer errors already name the file; others only the token or merge.
            cause: match e.to_string() {
                named if named.contains(&origin.display().to_string()) => named,
                bare => format!("{}: {bare}", origin.display()),
            },
        };
        Tokenizer::from_model_file(&file).map_err(tokenizer_error)?;
        ChatTemplate::from_model_file(&file).map_err(tokenizer_error)?;
    }
    Ok(())
}

/// The checkpoint file the GGUF key named first in `message` was converted from.
fn config_file_of(message: &str) -> &'static str {
    const SOURCES: [(&str, &str); 5] = [
        ("latte.flow.", "generation/config.json"),
        ("latte.dcae.", "autoencoder/config.json"),
        ("clip.vision.image_", "preprocessor_config.json"),
        ("clip.vision.", "config.json"),
        ("latte.vision.", "config.json"),
    ];
    SOURCES
        .iter()
        .filter_map(|(prefix, file)| message.find(prefix).map(|at| (at, *file)))
        .min_by_key(|(at, _)| *at)
        .map_or("config.json", |(_, file)| file)
}
