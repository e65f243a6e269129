//! Fuzzes the tokenizer files the way `latte convert` and the tokenizer read them: a
//! `tokenizer.json`, a chat template (as `chat_template.jinja` or in `tokenizer_config.json`) and a
//! text go through `convert::tokenizer::tokenizer_metadata` (HF JSON → `tokenizer.ggml.*` keys),
//! a GGUF file written with those keys, `Tokenizer::from_model_file` and
//! `ChatTemplate::from_model_file`. An accepted tokenizer encodes the text with and without
//! special parsing and decodes the ids back; the template renders one user message (text, and
//! image + text), and the prompt is encoded as the pipeline encodes it. Nothing may panic or run
//! unbounded; ids lie in the vocabulary; the streaming decoder's pieces concatenate to `decode`;
//! without added tokens or a normalizer, decoding gives the text back exactly.
//!
//! Input: one control byte, then `tokenizer.json`, the template and the text separated by `0xFF`
//! (a byte UTF-8 never holds). Control bits 0–3: embedding rows beyond the highest token id
//! (`[PAD{id}]` padding); bit 4: the template goes into `tokenizer_config.json`'s `chat_template`
//! instead of `chat_template.jinja`; bit 5: `tokenizer_config.json` names Qwen2's EOS and padding
//! tokens. With no second part there is no template (ChatML fallback).
//!
//! Registered in `fuzz/Cargo.toml` as
//! `[[bin]] name = "tokenizer_template", path = "fuzz_targets/tokenizer_template.rs", test = false,
//! doc = false, bench = false`. Run:
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run tokenizer_template fuzz/corpus/tokenizer_template fuzz/seeds/tokenizer_template`
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use latte::convert::tokenizer::tokenizer_metadata;
use latte::gguf::GgufBuilder;
use latte::model::ModelFile;
use latte::tokenizer::{ChatMessage, ChatTemplate, ContentPart, Normalizer, TokenKind, Tokenizer};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

/// Token ids at or above this are not looked at: the harness would only spend time padding.
/// (2^18 made one input with an id near 63 000 take 0.5 s under ASan, and 12 s, a timeout, while
/// a compile shared the two cores; every path is reached with vocabularies far smaller.)
const MAX_VOCAB: u64 = 1 << 14;

/// One scratch directory per fuzzing process (in memory where `/dev/shm` exists).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("latte-fuzz-tokenizer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    })
}

/// The embedding rows a checkpoint with this `tokenizer.json` would have: one past the highest
/// id it names, plus `pad`.
fn vocab_size(tokenizer_json: &[u8], pad: u64) -> u64 {
    let Ok(v) = serde_json::from_slice::<Value>(tokenizer_json) else {
        return 1 + pad;
    };
    let vocab_ids = v
        .pointer("/model/vocab")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.values().filter_map(Value::as_u64));
    let added_ids = v
        .get("added_tokens")
        .and_then(Value::as_array)
        .into_iter()
        .flat_map(|a| a.iter().filter_map(|t| t.get("id").and_then(Value::as_u64)));
    let max = vocab_ids.chain(added_ids).max().unwrap_or(0).min(MAX_VOCAB);
    max + 1 + pad
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("scratch write");
}

fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(3, |&b| b == 0xFF);
    let tokenizer_json = parts.next().unwrap_or_default();
    let template = parts.next();
    let text = String::from_utf8_lossy(parts.next().unwrap_or_default());

    let dir = scratch();
    write(&dir.join("tokenizer.json"), tokenizer_json);
    let mut config = serde_json::Map::new();
    if control & 0x20 != 0 {
        config.insert("eos_token".into(), json!("<|im_end|>"));
        config.insert("pad_token".into(), json!({"content": "<|endoftext|>"}));
    }
    remove(&dir.join("chat_template.jinja"));
    match template {
        Some(t) if control & 0x10 != 0 => {
            config.insert(
                "chat_template".into(),
                json!(String::from_utf8_lossy(t).into_owned()),
            );
        }
        Some(t) => write(&dir.join("chat_template.jinja"), t),
        None => {}
    }
    if config.is_empty() {
        remove(&dir.join("tokenizer_config.json"));
    } else {
        write(
            &dir.join("tokenizer_config.json"),
            Value::Object(config).to_string().as_bytes(),
        );
    }

    let vocab_size = vocab_size(tokenizer_json, u64::from(control & 0x0F));
    let meta = match tokenizer_metadata(dir, vocab_size) {
        Ok(meta) => meta,
        Err(e) => {
            // Messages must render for any input.
            std::hint::black_box(e.to_string());
            return;
        }
    };
    // What convert accepted must be writable and read back.
    let mut builder = GgufBuilder::new();
    for (key, value) in meta {
        builder
            .push_metadata(key, value)
            .expect("convert's tokenizer keys are valid metadata");
    }
    let gguf = dir.join("tokenizer.gguf");
    builder
        .create(&gguf)
        .and_then(|w| w.finish())
        .expect("the tokenizer keys are written");
    let bytes = std::fs::read(&gguf).expect("scratch read");
    let file = ModelFile::from_bytes("fuzz.gguf", bytes).expect("the written file reads back");

    let tokenizer = match Tokenizer::from_model_file(&file) {
        Ok(t) => Some(t),
        Err(e) => {
            std::hint::black_box(e.to_string());
            None
        }
    };
    if let Some(tok) = &tokenizer {
        assert_eq!(tok.vocab_size() as u64, vocab_size);
        let plain = (0..tok.vocab_size() as u32)
            .all(|id| !matches!(tok.kind(id), Some(TokenKind::UserDefined)))
            && tok.normalizer() == Normalizer::None;
        for parse_special in [false, true] {
            let ids = match tok.encode(&text, parse_special) {
                Ok(ids) => ids,
                Err(e) => {
                    std::hint::black_box(e.to_string());
                    continue;
                }
            };
            assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
            let decoded = tok.decode(&ids);
            if plain && !parse_special {
                assert_eq!(decoded, text, "byte-level BPE gives the text back");
            }
            for skip_special in [false, true] {
                let mut stream = tok.stream_decoder(skip_special);
                let mut pieces = String::new();
                for &id in &ids {
                    pieces.push_str(stream.push(id));
                }
                pieces.push_str(stream.finish());
                let whole = if skip_special {
                    tok.decode_skipping_special(&ids)
                } else {
                    decoded.clone()
                };
                assert_eq!(pieces, whole, "streamed pieces concatenate to decode");
            }
        }
        // Ids from anywhere (out of range included) decode to something, never a panic.
        let ids: Vec<u32> = text
            .as_bytes()
            .chunks(2)
            .map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0)))
            .chain([u32::MAX, tok.vocab_size() as u32])
            .collect();
        std::hint::black_box(tok.decode(&ids));
    }

    let template = match ChatTemplate::from_model_file(&file) {
        Ok(t) => t,
        Err(e) => {
            std::hint::black_box(e.to_string());
            return;
        }
    };
    let messages = [
        vec![ChatMessage::text("user", text.as_ref())],
        vec![ChatMessage::parts(
            "user",
            vec![ContentPart::Image, ContentPart::Text(text.to_string())],
        )],
    ];
    for message in &messages {
        match template.render(message, true) {
            Ok(prompt) => {
                if let Some(tok) = &tokenizer {
                    if let Err(e) = tok.encode(&prompt, true) {
                        std::hint::black_box(e.to_string());
                    }
                }
            }
            Err(e) => {
                std::hint::black_box(e.to_string());
            }
        }
    }
});
