//! Encode speed on the real Qwen vocabulary, latte against HF `tokenizers` (the Rust crate, no Python)
//! in the same run: the corpus of tools/qwen_vocab_check.py (more than 10,000 strings of many
//! scripts, code, emoji, whitespace runs and added tokens), one string per call, one thread, added
//! tokens parsed. Throughput is in tokens.
//!
//! `python3 tools/qwen_vocab_check.py` first (it fetches the tokenizer and writes the corpus under
//! target/qwen-vocab, or `LATTE_QWEN_VOCAB=DIR`), then
//! `cargo bench --features hf-peer --bench tokenizer_hf`.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use latte::convert::tokenizer::tokenizer_metadata;
use latte::gguf::GgufBuilder;
use latte::model::ModelFile;
use latte::tokenizer::Tokenizer;

/// The real model's embedding rows (the vocabulary padded as `latte convert` pads it).
const VOCAB_ROWS: u64 = 151_936;

fn work_dir() -> PathBuf {
    std::env::var_os("LATTE_QWEN_VOCAB").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/qwen-vocab"),
        PathBuf::from,
    )
}

fn corpus(dir: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("corpus.jsonl"))
        .expect("corpus.jsonl: run tools/qwen_vocab_check.py first");
    text.lines()
        .map(|line| {
            let case: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            case["text"].as_str().expect("text").to_string()
        })
        .collect()
}

fn latte_tokenizer(dir: &std::path::Path) -> Tokenizer {
    let mut builder = GgufBuilder::new();
    for (key, value) in tokenizer_metadata(dir, VOCAB_ROWS).expect("tokenizer.json converts") {
        builder.push_metadata(key, value).expect("valid metadata");
    }
    let file = ModelFile::from_bytes("tokenizer", builder.header().expect("header")).unwrap();
    Tokenizer::from_model_file(&file).expect("the tokenizer loads")
}

fn encode_corpus(c: &mut Criterion) {
    let dir = work_dir();
    let strings = corpus(&dir);
    let ours = latte_tokenizer(&dir);
    let theirs = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json"))
        .expect("HF loads tokenizer.json");
    let mut tokens = 0u64;
    for s in &strings {
        let a = ours.encode(s, true).unwrap();
        let b = theirs.encode(s.as_str(), false).unwrap();
        assert_eq!(a, b.get_ids(), "{s:?}: the two tokenizers disagree");
        tokens += a.len() as u64;
    }
    let bytes: usize = strings.iter().map(String::len).sum();
    eprintln!(
        "corpus: {} strings, {tokens} tokens, {bytes} bytes ({})",
        strings.len(),
        dir.display()
    );

    let mut group = c.benchmark_group("qwen_vocab_encode");
    group.throughput(Throughput::Elements(tokens));
    group.sample_size(10);
    group.bench_function("latte", |b| {
        b.iter(|| {
            for s in &strings {
                black_box(ours.encode(black_box(s), true).unwrap());
            }
        })
    });
    group.bench_function("hf_tokenizers_rust", |b| {
        b.iter(|| {
            for s in &strings {
                black_box(theirs.encode(black_box(s.as_str()), false).unwrap());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, encode_corpus);
criterion_main!(benches);
