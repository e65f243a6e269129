//! The text decoder alone, as a GGUF that llama.cpp loads: the `qwen2vl` text tensors
//! (`token_embd`, `blk.*`, `output_norm`, `output`) and every metadata key except the vision,
//! generation and DC-AE ones. llama.cpp refuses files with tensors it does not expect, so this is
//! what `latte bench` hands it to compare text decoding at the same weights and quantization.
//!
//! This module copies bytes; it must not change tensor types or values.

use std::path::Path;

use crate::gguf::{
    is_padding_tensor, GgufBuilder, GgufFile, MetadataArray, MetadataValue, WriteError,
};

/// True for tensors of the text decoder (llama.cpp's qwen2vl names).
pub fn is_text_tensor(name: &str) -> bool {
    name.starts_with("blk.")
        || matches!(
            name,
            "token_embd.weight" | "output_norm.weight" | "output.weight"
        )
}

/// True for metadata that describes parts other than the text decoder.
fn is_other_part_key(key: &str) -> bool {
    ["clip.", "latte.flow.", "latte.dcae.", "latte.vision."]
        .iter()
        .any(|prefix| key.starts_with(prefix))
}

/// Writes the text decoder of `source` to `path` (temporary file, then rename). Returns the number
/// of tensors written.
pub fn write_text_model(source: &GgufFile, path: &Path) -> Result<usize, WriteError> {
    let mut builder = GgufBuilder::new();
    builder.set_alignment(source.alignment() as u32)?;
    for (key, value) in source.metadata() {
        if key != "general.alignment" && !is_other_part_key(key) {
            builder.push_metadata(key.clone(), value.clone())?;
        }
    }
    if source.get("tokenizer.ggml.model").is_none() {
        // Synthetic benchmark files have no tokenizer, and llama.cpp will not load a model without
        // one. Benchmarks feed token ids directly, so placeholder tokens (one per embedding row, no
        // merges) are enough for it to run the same weights.
        let rows = source
            .tensor_info("token_embd.weight")
            .and_then(|t| t.dims.get(1).copied())
            .unwrap_or(0);
        let tokens: Vec<String> = (0..rows).map(|i| format!("[PAD{i}]")).collect();
        builder.push_metadata("tokenizer.ggml.model", MetadataValue::String("gpt2".into()))?;
        builder.push_metadata("tokenizer.ggml.pre", MetadataValue::String("gpt-2".into()))?;
        builder.push_metadata(
            "tokenizer.ggml.token_type",
            MetadataValue::Array(MetadataArray::I32(vec![1; tokens.len()])),
        )?;
        builder.push_metadata(
            "tokenizer.ggml.tokens",
            MetadataValue::Array(MetadataArray::String(tokens)),
        )?;
        builder.push_metadata(
            "tokenizer.ggml.merges",
            MetadataValue::Array(MetadataArray::String(Vec::new())),
        )?;
    }
    let tensors: Vec<_> = source
        .tensor_infos()
        .iter()
        .filter(|t| is_text_tensor(&t.name) && !is_padding_tensor(&t.name))
        .collect();
    for t in &tensors {
        builder.push_tensor(t.name.clone(), t.ty, &t.dims)?;
    }
    let mut writer = builder.create(path)?;
    for t in &tensors {
        // The reader validated every tensor's range, so the view exists.
        if let Some(view) = source.tensor(&t.name) {
            writer.write_tensor(&t.name, view.bytes())?;
        }
    }
    writer.finish()?;
    Ok(tensors.len())
}
