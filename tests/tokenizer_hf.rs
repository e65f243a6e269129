//! The tokenizer and chat template against HF: `tokenizers` (encode with and without special-token
//! parsing, the pre-tokenizer's pieces, decode) and transformers' `apply_chat_template`, as
//! recorded by tools/make_tokenizer_fixtures.py, and the prompt ids of the PyTorch reference's
//! fixtures (tests/fixtures/reference/base). All comparisons are exact: tokenization has no
//! tolerance. The GGUF is converted from the checkpoint in the test, so this also checks the
//! tokenizer keys `latte convert` writes.

mod convert_support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use convert_support::{copy_dir, read_st};
use latte::convert::quantize::QuantizeOptions;
use latte::convert::Checkpoint;
use latte::model::ModelFile;
use latte::tokenizer::{
    byte_level, ChatMessage, ChatTemplate, ContentPart, MessageContent, Normalizer, PreTokenizer,
    Tokenizer, TokenizerParts,
};
use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cases() -> &'static Value {
    static CASES: OnceLock<Value> = OnceLock::new();
    CASES.get_or_init(|| {
        let path = root().join("tests/fixtures/tokenizer/tokenizer_cases.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    })
}

/// The GGUF `latte convert` makes of a fixture tokenizer's checkpoint (for `base_qwen2`, the base
/// checkpoint with Qwen2's pre-tokenizer and NFC normalizer written into its tokenizer.json).
fn convert(name: &str) -> ModelFile {
    let spec = &cases()["tokenizers"][name];
    let tmp = tempfile::tempdir().unwrap();
    let mut dir: PathBuf = root().join(spec["checkpoint"].as_str().unwrap());
    if let Some(pre) = spec["pre_tokenizer"].as_object() {
        let copy = tmp.path().join("checkpoint");
        copy_dir(&dir, &copy);
        let path = copy.join("tokenizer.json");
        let mut tok: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        tok["pre_tokenizer"] = Value::Object(pre.clone());
        tok["normalizer"] = spec["normalizer"].clone();
        std::fs::write(&path, tok.to_string()).unwrap();
        dir = copy;
    }
    let options = QuantizeOptions::parse("f32", &[]).unwrap();
    let out = tmp.path().join("model.gguf");
    Checkpoint::plan(&dir, &options)
        .unwrap()
        .write(&out, &mut |_| {})
        .unwrap();
    ModelFile::from_bytes(name, std::fs::read(&out).unwrap()).unwrap()
}

fn model_file(name: &str) -> &'static ModelFile {
    static FILES: OnceLock<HashMap<&'static str, ModelFile>> = OnceLock::new();
    FILES
        .get_or_init(|| {
            ["base", "demo", "base_qwen2"]
                .into_iter()
                .map(|n| (n, convert(n)))
                .collect()
        })
        .get(name)
        .unwrap()
}

/// The tokenizer of a fixture entry; `base_added` is the base file's with HF-added tokens that
/// are not special appended as user-defined tokens (type 4), as they would follow the vocabulary.
fn tokenizer(name: &str) -> Tokenizer {
    let spec = &cases()["tokenizers"][name];
    let Some(added) = spec["added_tokens"].as_array() else {
        return Tokenizer::from_model_file(model_file(name)).unwrap();
    };
    let file = model_file("base");
    let mut tokens = file.str_array("tokenizer.ggml.tokens").unwrap().to_vec();
    let mut token_types = file.i64_array("tokenizer.ggml.token_type").unwrap();
    for token in added {
        tokens.push(token.as_str().unwrap().to_string());
        token_types.push(4);
    }
    Tokenizer::from_parts(TokenizerParts {
        tokens,
        token_types,
        merges: file.str_array("tokenizer.ggml.merges").unwrap().to_vec(),
        pre_tokenizer: PreTokenizer::Gpt2,
        normalizer: Normalizer::None,
        bos_id: None,
        eos_id: None,
        eot_id: None,
        padding_id: None,
        unknown_id: None,
    })
    .unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn names() -> impl Iterator<Item = (&'static str, &'static Value)> {
    cases()["tokenizers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), v))
}

#[test]
fn convert_records_the_pre_tokenizer_tokenizer_json_uses() {
    assert_eq!(tokenizer("base").pre_tokenizer(), PreTokenizer::Gpt2);
    assert_eq!(tokenizer("demo").pre_tokenizer(), PreTokenizer::Gpt2);
    assert_eq!(tokenizer("base_qwen2").pre_tokenizer(), PreTokenizer::Qwen2);
    assert_eq!(tokenizer("base").normalizer(), Normalizer::None);
    assert_eq!(tokenizer("base_qwen2").normalizer(), Normalizer::Nfc);
}

/// `text` as the tokenizer normalizes it.
fn normalized(tok: &Tokenizer, text: &str) -> String {
    match tok.normalizer() {
        Normalizer::None => text.to_string(),
        Normalizer::Nfc => text.nfc().collect(),
    }
}

#[test]
fn pieces_match_hf_pre_tokenizer() {
    for (name, spec) in names() {
        let tok = tokenizer(name);
        let pre = tok.pre_tokenizer();
        for case in spec["encode"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let ours: Vec<String> = pre
                .pieces(&normalized(&tok, text))
                .map(|p| p.bytes().map(byte_level::byte_to_char).collect())
                .collect();
            let theirs: Vec<String> = case["pieces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect();
            assert_eq!(ours, theirs, "{name}: pieces of {text:?}");
        }
    }
}

#[test]
fn encode_matches_hf_with_and_without_special_parsing() {
    let mut checked = 0;
    for (name, spec) in names() {
        let tok = tokenizer(name);
        for case in spec["encode"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            assert_eq!(
                tok.encode(text, true).unwrap(),
                ids(&case["ids_special"]),
                "{name}: {text:?} (specials parsed)"
            );
            assert_eq!(
                tok.encode(text, false).unwrap(),
                ids(&case["ids_plain"]),
                "{name}: {text:?} (specials as text)"
            );
            checked += 1;
        }
    }
    assert!(checked >= 4 * 80, "{checked} cases");
}

/// `decode` and the streaming decoder (pieces concatenated, then `finish`) give HF's text.
fn check_decode(tok: &Tokenizer, ids: &[u32], expected: &str, what: &str) {
    assert_eq!(tok.decode(ids), expected, "{what}: decode {ids:?}");
    let mut stream = tok.stream_decoder(false);
    let mut text = String::new();
    for &id in ids {
        let piece = stream.push(id);
        // Streaming never emits half a character: each piece is whole UTF-8 by type, and a
        // piece that ends a multi-byte character only appears once all its bytes are in.
        text.push_str(piece);
    }
    text.push_str(stream.finish());
    assert_eq!(text, expected, "{what}: streamed {ids:?}");
}

#[test]
fn decode_matches_hf_and_streaming_concatenates_to_it() {
    for (name, spec) in names() {
        let tok = tokenizer(name);
        for case in spec["encode"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            for (ids_key, text_key) in [
                ("ids_special", "decoded_special"),
                ("ids_plain", "decoded_plain"),
            ] {
                let expected = case[text_key].as_str().unwrap();
                check_decode(&tok, &ids(&case[ids_key]), expected, name);
                // Byte-level BPE round-trips every (normalized) string, unless an added token's
                // text is itself byte-level (`Ġhi` decodes to " hi", as in HF).
                if spec["added_tokens"].is_null() {
                    assert_eq!(expected, normalized(&tok, text));
                }
            }
        }
        for case in spec["decode"].as_array().unwrap() {
            check_decode(
                &tok,
                &ids(&case["ids"]),
                case["text"].as_str().unwrap(),
                name,
            );
        }
    }
}

#[test]
fn streaming_holds_back_an_unfinished_character() {
    let tok = tokenizer("base");
    // "😀" is four bytes; with this tiny vocabulary each is its own token.
    let ids = tok.encode("😀!", false).unwrap();
    assert_eq!(ids.len(), 5);
    let mut stream = tok.stream_decoder(false);
    for &id in &ids[..3] {
        assert_eq!(stream.push(id), "");
    }
    assert_eq!(stream.push(ids[3]), "😀");
    assert_eq!(stream.push(ids[4]), "!");
    assert_eq!(stream.finish(), "");
    // An unfinished character at the end becomes one replacement character, as in `decode`.
    let mut stream = tok.stream_decoder(false);
    stream.push(ids[0]);
    stream.push(ids[1]);
    assert_eq!(stream.finish(), "\u{fffd}");
    assert_eq!(tok.decode(&ids[..2]), "\u{fffd}");
}

fn message(v: &Value) -> ChatMessage {
    let role = v["role"].as_str().unwrap();
    match &v["content"] {
        Value::String(s) => ChatMessage::text(role, s.as_str()),
        Value::Array(parts) => ChatMessage::parts(
            role,
            parts
                .iter()
                .map(|p| match p["type"].as_str().unwrap() {
                    "image" => ContentPart::Image,
                    "text" => ContentPart::Text(p["text"].as_str().unwrap().into()),
                    other => panic!("part type {other}"),
                })
                .collect(),
        ),
        other => panic!("content {other}"),
    }
}

struct Chat {
    messages: Vec<ChatMessage>,
    add_generation_prompt: bool,
    text: &'static str,
}

/// The fixture's chats rendered with `template` (`None`: the tokenizer's own).
fn chats(template: Option<&str>) -> Vec<(&'static Value, Chat)> {
    cases()["chats"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["template"].as_str() == template)
        .map(|c| {
            let chat = Chat {
                messages: c["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(message)
                    .collect(),
                add_generation_prompt: c["add_generation_prompt"].as_bool().unwrap(),
                text: c["text"].as_str().unwrap(),
            };
            (c, chat)
        })
        .collect()
}

#[test]
fn chat_template_from_the_file_matches_transformers() {
    let chats = chats(None);
    assert_eq!(chats.len(), 12);
    for (spec, chat) in chats {
        let name = spec["tokenizer"].as_str().unwrap();
        let template = ChatTemplate::from_model_file(model_file(name)).unwrap();
        assert!(!template.is_fallback());
        let rendered = template
            .render(&chat.messages, chat.add_generation_prompt)
            .unwrap();
        assert_eq!(rendered, chat.text, "{name}");
        // The fixture templates are ChatML as the reference writes it, so the fallback agrees.
        let fallback = ChatTemplate::chatml()
            .render(&chat.messages, chat.add_generation_prompt)
            .unwrap();
        assert_eq!(fallback, chat.text, "ChatML fallback");
    }
}

#[test]
fn qwen2vl_and_python_flavoured_templates_match_transformers() {
    for name in ["qwen2vl", "pycompat"] {
        let chats = chats(Some(name));
        assert_eq!(chats.len(), 6);
        for (spec, chat) in chats {
            // transformers passes the tokenizer's special tokens: the base one has only eos.
            let source = spec["template_source"].as_str().unwrap();
            let template = ChatTemplate::new(source, None, Some("<|im_end|>".into())).unwrap();
            let rendered = template
                .render(&chat.messages, chat.add_generation_prompt)
                .unwrap();
            assert_eq!(rendered, chat.text, "{name}");
        }
    }
}

fn reference_ids(name: &str) -> Vec<u32> {
    let path = root().join("tests/fixtures/reference/base/tensors.safetensors");
    let entry = read_st(&path).into_iter().find(|e| e.name == name).unwrap();
    assert_eq!(entry.dtype, "I64");
    entry
        .bytes
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect()
}

#[test]
fn reproduces_the_reference_prompt_ids() {
    let file = model_file("base");
    let tok = tokenizer("base");

    // Understanding: the chat template over [image, question], the image pad expanded to the
    // image's 6 merged tokens (a 40×70 image: grid 1×4×6 patches, merge 2×2).
    let template = ChatTemplate::from_model_file(file).unwrap();
    let text = template
        .render(
            &[ChatMessage {
                role: "user".into(),
                content: MessageContent::Parts(vec![
                    ContentPart::Image,
                    ContentPart::Text("What shape is it?".into()),
                ]),
            }],
            true,
        )
        .unwrap();
    let pad = tok.token_to_id("<|image_pad|>").unwrap();
    let mut und = Vec::new();
    for id in tok.encode(&text, true).unwrap() {
        let copies = if id == pad { 6 } else { 1 };
        und.extend(std::iter::repeat_n(id, copies));
    }
    assert_eq!(und, reference_ids("und.input_ids"));

    // Generation: the prompt template with the prompt substituted, specials parsed, no BOS.
    let template = file.str("latte.flow.prompt_template").unwrap();
    let cond = template.replace("{prompt}", "a red star on the left");
    assert_eq!(
        tok.encode(&cond, true).unwrap(),
        reference_ids("gen.cond_ids")
    );
    let uncond = template.replace("{prompt}", "");
    assert_eq!(
        tok.encode(&uncond, true).unwrap(),
        reference_ids("gen.uncond_ids")
    );

    // Decoding stops at the end of the turn: `<|im_end|>` is both eos and a stop token.
    let im_end = tok.token_to_id("<|im_end|>").unwrap();
    assert_eq!(tok.eos_id(), Some(im_end));
    assert!(tok.is_stop(im_end));
    assert!(tok.is_special(im_end));
    assert!(!tok.is_stop(pad));
}

#[test]
fn vocabulary_covers_the_embedding_and_skips_unknown_ids() {
    let file = model_file("base");
    let tok = tokenizer("base");
    let rows = file.tensor("token_embd.weight").unwrap().n_rows();
    assert_eq!(tok.vocab_size(), rows);
    assert_eq!(
        tok.decode(&[rows as u32, u32::MAX]),
        "",
        "ids outside the vocabulary"
    );
}

/// A file from another converter (llama.cpp's keeps the `tokenizer.ggml.*` keys and no
/// normalizer): the family implies HF's normalizer, so the ids stay HF's, the NFC cases included.
#[test]
fn a_file_without_the_normalizer_key_gets_its_familys() {
    for (name, expected) in [("base_qwen2", Normalizer::Nfc), ("base", Normalizer::None)] {
        let mut builder = latte::gguf::GgufBuilder::new();
        for (key, value) in model_file(name).gguf().metadata() {
            if key.starts_with("tokenizer.") {
                builder.push_metadata(key.clone(), value.clone()).unwrap();
            }
        }
        let file = ModelFile::from_bytes("llama.cpp-like", builder.header().unwrap()).unwrap();
        assert!(file.get("latte.tokenizer.normalizer").is_none());
        let tok = Tokenizer::from_model_file(&file).unwrap();
        assert_eq!(tok.normalizer(), expected, "{name}");
        let spec = &cases()["tokenizers"][name];
        let mut not_nfc = 0;
        for case in spec["encode"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            not_nfc += usize::from(text.nfc().collect::<String>() != text);
            assert_eq!(
                tok.encode(text, true).unwrap(),
                ids(&case["ids_special"]),
                "{name}: {text:?}"
            );
        }
        assert!(not_nfc > 0, "{name}: no case tells NFC apart");
    }
    // latte's own files say "none" when tokenizer.json has no normalizer.
    assert_eq!(
        model_file("base")
            .str("latte.tokenizer.normalizer")
            .unwrap(),
        "none"
    );
}

/// Bytes without a token (a vocabulary trained without the whole byte alphabet), as HF
/// `tokenizers` encodes them (`tools/make_missing_byte_fixture.py`): dropped, their neighbours
/// merging across them, without an `unk_token`; the unknown token in their place with one.
#[test]
fn bytes_without_a_token_are_dropped_or_unknown_as_hf_does() {
    let fixture: Value = serde_json::from_slice(
        &std::fs::read(root().join("tests/fixtures/tokenizer/missing_byte.json")).unwrap(),
    )
    .unwrap();
    let merges: Vec<String> = fixture["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    let missing: Vec<u8> = fixture["missing_bytes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect();
    for (name, case) in fixture["cases"].as_object().unwrap() {
        let tokens: Vec<String> = case["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        let tok = Tokenizer::from_parts(TokenizerParts {
            token_types: vec![1; tokens.len()],
            tokens,
            merges: merges.clone(),
            pre_tokenizer: PreTokenizer::Qwen2,
            normalizer: Normalizer::None,
            bos_id: None,
            eos_id: None,
            eot_id: None,
            padding_id: None,
            unknown_id: case["unknown_id"].as_u64(),
        })
        .unwrap();
        assert_eq!(tok.missing_bytes(), missing, "{name}");
        for encode in case["encode"].as_array().unwrap() {
            let text = encode["text"].as_str().unwrap();
            assert_eq!(
                tok.encode(text, true).unwrap(),
                ids(&encode["ids"]),
                "{name}: {text:?}"
            );
        }
    }
}
