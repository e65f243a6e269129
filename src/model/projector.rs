//! Two-file models: a text model and llama.cpp's vision projector (`mmproj-*.gguf`, what
//! `convert_hf_to_gguf.py --mmproj` writes), the layout llama.cpp's multimodal tools take with
//! `--mmproj`. [`open_with_projector`] checks that the second file is a Qwen2-VL projector that
//! belongs to the first, then joins them ([`ModelFile::with_projector`]) so that every loader reads
//! the pair as it reads one of latte's own files.
//!
//! This module owns which projector fits which text model; it must not load weights.

use std::path::Path;

use super::{ModelError, ModelFile};

/// The projector type of Qwen2-VL's merger (`clip.projector_type`, llama.cpp's name).
pub const QWEN2VL_PROJECTOR: &str = "qwen2vl_merger";

/// The text tokens an image needs; llama.cpp keeps them in the text model's vocabulary only.
const VISION_TOKENS: [&str; 3] = ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>"];

/// Opens `text` and `projector` and joins them, or says in one line, naming both files, why the
/// projector does not belong to the text model.
pub fn open_with_projector(
    text: impl AsRef<Path>,
    projector: impl AsRef<Path>,
) -> Result<ModelFile, ModelError> {
    join(ModelFile::open(text)?, ModelFile::open(projector)?)
}

/// [`open_with_projector`] over files already open.
pub fn join(text: ModelFile, projector: ModelFile) -> Result<ModelFile, ModelError> {
    check_pair(&text, &projector).map_err(|what| ModelError::Invalid {
        file: format!("{} with --mmproj {}", text.name(), projector.name()),
        what,
    })?;
    text.with_projector(projector)
}

fn check_pair(text: &ModelFile, projector: &ModelFile) -> Result<(), String> {
    let architecture = |f: &ModelFile| {
        f.get("general.architecture")
            .and_then(|v| v.as_str())
            .unwrap_or("none")
            .to_string()
    };
    if !text.has_tensor("token_embd.weight") {
        return Err(format!(
            "the -m file is not a text model (general.architecture '{}', no token_embd.weight)",
            architecture(text)
        ));
    }
    if projector.has_tensor("token_embd.weight") || projector.get("clip.projector_type").is_none() {
        return Err(format!(
            "the --mmproj file is not a vision projector (general.architecture '{}', no \
             clip.projector_type); it should be llama.cpp's mmproj-*.gguf",
            architecture(projector)
        ));
    }
    let kind = projector
        .get("clip.projector_type")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if kind != QWEN2VL_PROJECTOR {
        return Err(format!(
            "the projector's type is '{kind}', not Qwen2-VL's '{QWEN2VL_PROJECTOR}' (latte reads \
             Qwen2-VL's projector only)"
        ));
    }
    if !projector.has_tensor("v.patch_embd.weight") {
        return Err("the projector holds no vision tower (no v.patch_embd.weight)".into());
    }
    if text.has_tensor("v.patch_embd.weight") {
        return Err(
            "the text model already holds a vision tower; --mmproj adds one to a text model only"
                .into(),
        );
    }
    let text_width = text
        .tensor_dims("token_embd.weight")
        .ok()
        .and_then(|d| d.first().copied());
    let projector_width = projector
        .tensor_dims("mm.2.weight")
        .ok()
        .and_then(|d| d.get(1).copied());
    if projector_width != text_width {
        let show = |w: Option<u64>| w.map_or("unknown".to_string(), |w| w.to_string());
        return Err(format!(
            "the projector does not belong to the text model: it gives image embeddings of width \
             {} (mm.2.weight), the text model's width is {}",
            show(projector_width),
            show(text_width)
        ));
    }
    let tokens = text
        .str_array("tokenizer.ggml.tokens")
        .map_err(|_| "the text model has no tokenizer (tokenizer.ggml.tokens)".to_string())?;
    if let Some(missing) = VISION_TOKENS
        .iter()
        .find(|t| !tokens.iter().any(|x| x == *t))
    {
        return Err(format!(
            "the projector does not belong to the text model: its vocabulary has no {missing} \
             token, so no image can enter its prompt"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::TensorType;
    use crate::gguf::{GgufBuilder, MetadataValue};

    /// A header alone: joining reads keys and tensor shapes, never data.
    fn file(name: &str, keys: &[(&str, MetadataValue)], tensors: &[(&str, &[u64])]) -> ModelFile {
        let mut builder = GgufBuilder::new();
        for (key, value) in keys {
            builder.push_metadata(*key, value.clone()).unwrap();
        }
        for (tensor, dims) in tensors {
            builder.push_tensor(*tensor, TensorType::F32, dims).unwrap();
        }
        ModelFile::from_header(name, builder.header().unwrap()).unwrap()
    }

    fn tokens(list: &[&str]) -> MetadataValue {
        list.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into()
    }

    fn text(width: u64, vocab: &[&str]) -> ModelFile {
        file(
            "text.gguf",
            &[
                ("general.architecture", "qwen2vl".into()),
                ("tokenizer.ggml.tokens", tokens(vocab)),
            ],
            &[("token_embd.weight", &[width, vocab.len() as u64])],
        )
    }

    fn projector(kind: &str, width: u64) -> ModelFile {
        file(
            "mmproj.gguf",
            &[
                ("general.architecture", "clip".into()),
                ("clip.projector_type", kind.into()),
                ("clip.vision.embedding_length", MetadataValue::U32(8)),
            ],
            &[
                ("v.patch_embd.weight", &[14, 14, 3, 8]),
                ("mm.2.weight", &[32, width]),
            ],
        )
    }

    const VOCAB: [&str; 4] = ["a", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"];

    fn refusal(text: ModelFile, projector: ModelFile) -> String {
        match join(text, projector) {
            Ok(_) => panic!("joined"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_matching_projector_joins_and_lends_its_tensors_and_keys() {
        let pair = join(text(4, &VOCAB), projector(QWEN2VL_PROJECTOR, 4)).unwrap();
        assert!(pair.has_tensor("v.patch_embd.weight") && pair.has_tensor("token_embd.weight"));
        assert_eq!(pair.usize("clip.vision.embedding_length").unwrap(), 8);
        // The text model's own keys win where both files have one.
        assert_eq!(pair.str("general.architecture").unwrap(), "qwen2vl");
        let missing = pair
            .usize("clip.vision.block_count")
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("text.gguf (with mmproj.gguf)"),
            "{missing}"
        );
    }

    #[test]
    fn mismatches_are_refused_naming_both_files() {
        let width = refusal(text(4, &VOCAB), projector(QWEN2VL_PROJECTOR, 6));
        assert!(
            width.starts_with("text.gguf with --mmproj mmproj.gguf: "),
            "{width}"
        );
        assert!(
            width.contains("width 6") && width.contains("width is 4"),
            "{width}"
        );

        let vocab = refusal(text(4, &["a", "b"]), projector(QWEN2VL_PROJECTOR, 4));
        assert!(vocab.contains("no <|vision_start|> token"), "{vocab}");

        let kind = refusal(text(4, &VOCAB), projector("gemma3", 4));
        assert!(
            kind.contains("'gemma3'") && kind.contains("qwen2vl_merger"),
            "{kind}"
        );

        let swapped = refusal(text(4, &VOCAB), text(4, &VOCAB));
        assert!(swapped.contains("not a vision projector"), "{swapped}");
        assert!(swapped.contains("'qwen2vl'"), "{swapped}");
    }
}
