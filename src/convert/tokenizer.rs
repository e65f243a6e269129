//! The tokenizer and chat template, as llama.cpp's `tokenizer.ggml.*` keys: a byte-level BPE
//! (`gpt2` model, `gpt-2` or `qwen2` pre-tokenizer; an NFC normalizer as
//! `latte.tokenizer.normalizer`) from `tokenizer.json`, special tokens as control tokens, the
//! vocabulary padded to the embedding's row count with `[PAD{id}]` tokens (as
//! `convert_hf_to_gguf.py` does), and the chat template from `tokenizer_config.json`,
//! `chat_template.jinja` or the hub's `chat_template.json`.

use std::path::Path;

use serde_json::Value;

use super::error::ConvertError;
use super::json::JsonFile;
use crate::gguf::{MetadataArray, MetadataValue};

/// llama.cpp's token types.
const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;
const TOKEN_UNUSED: i32 = 5;

/// Metadata entries for the tokenizer files in `dir`, for a model with `vocab_size` embedding rows.
pub fn tokenizer_metadata(
    dir: &Path,
    vocab_size: u64,
) -> Result<Vec<(String, MetadataValue)>, ConvertError> {
    let tok = JsonFile::read(&dir.join("tokenizer.json"))?;
    let model_type = tok.str_of(&["model.type"])?;
    if model_type != "BPE" {
        return Err(tok.error(format!("tokenizer model '{model_type}' is not BPE")));
    }
    let vocab = tok
        .get("model.vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| tok.error("'model.vocab' is missing or not an object"))?;
    let mut tokens: Vec<Option<(String, i32)>> = vec![None; vocab_size as usize];
    let mut place = |id: Option<u64>, text: &str, ty: i32| -> Result<(), ConvertError> {
        let id = id.ok_or_else(|| tok.error(format!("token '{text}' has no valid id")))?;
        let slot = tokens.get_mut(id as usize).ok_or_else(|| {
            tok.error(format!(
                "token '{text}' has id {id}, beyond the model's vocab_size {vocab_size}"
            ))
        })?;
        *slot = Some((text.to_string(), ty));
        Ok(())
    };
    for (text, id) in vocab {
        place(id.as_u64(), text, TOKEN_NORMAL)?;
    }
    if let Some(added) = tok.get("added_tokens") {
        let added = added
            .as_array()
            .ok_or_else(|| tok.error("'added_tokens' is not an array"))?;
        for token in added {
            let text = token
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| tok.error("an added token has no 'content'"))?;
            let special = token
                .get("special")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let ty = if special {
                TOKEN_CONTROL
            } else {
                TOKEN_USER_DEFINED
            };
            place(token.get("id").and_then(Value::as_u64), text, ty)?;
        }
    }
    let (texts, types): (Vec<String>, Vec<i32>) = tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| t.unwrap_or_else(|| (format!("[PAD{id}]"), TOKEN_UNUSED)))
        .unzip();

    let merges = tok
        .get("model.merges")
        .and_then(Value::as_array)
        .ok_or_else(|| tok.error("'model.merges' is missing or not an array"))?
        .iter()
        .map(|m| match m {
            // Older tokenizers: "a b"; newer: ["a", "b"].
            Value::String(s) => Some(s.clone()),
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(a), Value::String(b)] => Some(format!("{a} {b}")),
                _ => None,
            },
            _ => None,
        })
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| tok.error("'model.merges' holds an entry that is not a merge"))?;

    let id_of = |text: &str| texts.iter().position(|t| t == text).map(|i| i as u32);
    let mut meta: Vec<(String, MetadataValue)> = vec![
        ("tokenizer.ggml.model".into(), "gpt2".into()),
        (
            "tokenizer.ggml.pre".into(),
            pre_tokenizer_name(&tok)?.into(),
        ),
        (
            "tokenizer.ggml.tokens".into(),
            MetadataArray::String(texts.clone()).into(),
        ),
        ("tokenizer.ggml.token_type".into(), types.into()),
        (
            "tokenizer.ggml.merges".into(),
            MetadataArray::String(merges).into(),
        ),
        ("tokenizer.ggml.add_bos_token".into(), false.into()),
    ];
    // Always written, "none" included: a file without the key is another converter's, and the
    // reader then infers the normalizer from the tokenizer family.
    let normalizer = normalizer_name(&tok)?.unwrap_or("none");
    meta.push(("latte.tokenizer.normalizer".into(), normalizer.into()));
    let config_path = dir.join("tokenizer_config.json");
    let config = JsonFile::read_optional(&config_path)?;
    let special = |key: &str| -> Option<String> {
        let value = config.as_ref()?.get(key)?;
        value
            .as_str()
            .or_else(|| value.get("content").and_then(Value::as_str))
            .map(str::to_string)
    };
    for (key, gguf) in [
        ("eos_token", "tokenizer.ggml.eos_token_id"),
        ("pad_token", "tokenizer.ggml.padding_token_id"),
        ("bos_token", "tokenizer.ggml.bos_token_id"),
    ] {
        if let Some(text) = special(key) {
            let id = id_of(&text).ok_or_else(|| ConvertError::Config {
                path: config_path.clone(),
                reason: format!("'{key}' is '{text}', which is not in the vocabulary"),
            })?;
            meta.push((gguf.into(), id.into()));
        }
    }
    let template = match config.as_ref().and_then(|c| c.get("chat_template")) {
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => {
            return Err(ConvertError::Config {
                path: config_path,
                reason: "'chat_template' is not a string".into(),
            })
        }
        None => chat_template_file(dir)?,
    };
    if let Some(template) = template {
        meta.push(("tokenizer.chat_template".into(), template.as_str().into()));
    }
    Ok(meta)
}

/// Qwen2's split regex, as its `tokenizer.json` writes it.
const QWEN2_SPLIT_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp's name for the pre-tokenizer `tokenizer.json` describes: `gpt-2` for a `ByteLevel`
/// pre-tokenizer with its built-in (GPT-2) regex, `qwen2` for Qwen2's split regex followed by a
/// regex-less `ByteLevel`. Anything else would be tokenized wrongly, so it is refused.
fn pre_tokenizer_name(tok: &JsonFile) -> Result<&'static str, ConvertError> {
    let pre = tok.get("pre_tokenizer").unwrap_or(&Value::Null);
    let field = |v: &Value, key: &str| v.get(key).cloned().unwrap_or(Value::Null);
    let byte_level = |v: &Value, use_regex: bool| {
        field(v, "type") == "ByteLevel"
            && field(v, "add_prefix_space") != Value::Bool(true)
            // `use_regex` defaults to true.
            && field(v, "use_regex").as_bool().unwrap_or(true) == use_regex
    };
    if byte_level(pre, true) {
        return Ok("gpt-2");
    }
    if field(pre, "type") == "Sequence" {
        if let Some([split, last]) = pre
            .get("pretokenizers")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            let qwen2_split = field(split, "type") == "Split"
                && split
                    .get("pattern")
                    .and_then(|p| p.get("Regex"))
                    .and_then(Value::as_str)
                    == Some(QWEN2_SPLIT_PATTERN)
                && field(split, "behavior") == "Isolated"
                && field(split, "invert") != Value::Bool(true);
            if qwen2_split && byte_level(last, false) {
                return Ok("qwen2");
            }
        }
    }
    Err(tok.error(format!(
        "pre-tokenizer {pre} is neither GPT-2's byte-level regex nor Qwen2's split (the two latte implements)"
    )))
}

/// latte's name for `tokenizer.json`'s normalizer: none, or `nfc` (Qwen2's). llama.cpp has no key
/// for it (and skips NFC); latte records it so its tokenizer matches HF on uncomposed text.
fn normalizer_name(tok: &JsonFile) -> Result<Option<&'static str>, ConvertError> {
    match tok.get("normalizer") {
        None | Some(Value::Null) => Ok(None),
        Some(n) if n.get("type").and_then(Value::as_str) == Some("NFC") => Ok(Some("nfc")),
        Some(n) => Err(tok.error(format!(
            "normalizer {n} is not one latte implements (none or NFC)"
        ))),
    }
}

/// The chat template from `chat_template.jinja` or the hub's `chat_template.json`, if either exists.
fn chat_template_file(dir: &Path) -> Result<Option<String>, ConvertError> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.exists() {
        return std::fs::read_to_string(&jinja)
            .map(Some)
            .map_err(|source| ConvertError::Io {
                path: jinja,
                cause: source,
            });
    }
    match JsonFile::read_optional(&dir.join("chat_template.json"))? {
        Some(f) => f.str_of(&["chat_template"]).map(|t| Some(t.to_string())),
        None => Ok(None),
    }
}
