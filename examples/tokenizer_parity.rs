//! latte's tokenizer against HF `tokenizers` on a real vocabulary (tools/qwen_vocab_check.py
//! prepares the inputs and runs this): `DIR/tokenizer.json` (+ `tokenizer_config.json`) goes
//! through `latte convert`'s tokenizer path into GGUF keys and back into a `Tokenizer`, as a
//! converted model's would; every line of `CORPUS` (JSON: `text`, HF's `ids` with added tokens
//! parsed, HF's `decoded` text of those ids) must give the same ids and the same decoded text.
//! Prints the mismatches (the first 20), then the encode speed over the corpus, and exits 1 on any
//! mismatch.
//!
//! `cargo run --release --example tokenizer_parity -- DIR CORPUS.jsonl VOCAB_ROWS`

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use latte::convert::tokenizer::tokenizer_metadata;
use latte::gguf::GgufBuilder;
use latte::model::ModelFile;
use latte::tokenizer::Tokenizer;
use serde_json::Value;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, corpus, rows] = args.as_slice() else {
        eprintln!("usage: tokenizer_parity DIR CORPUS.jsonl VOCAB_ROWS");
        return ExitCode::from(2);
    };
    let rows: u64 = rows.parse().expect("VOCAB_ROWS is a number");
    let mut builder = GgufBuilder::new();
    for (key, value) in tokenizer_metadata(Path::new(dir), rows).expect("tokenizer.json converts") {
        builder.push_metadata(key, value).expect("valid metadata");
    }
    let file = ModelFile::from_bytes("tokenizer", builder.header().expect("header")).unwrap();
    let tokenizer = Tokenizer::from_model_file(&file).expect("the tokenizer loads");
    eprintln!(
        "vocabulary {} rows, pre-tokenizer {:?}, normalizer {:?}, {} bytes without a token",
        tokenizer.vocab_size(),
        tokenizer.pre_tokenizer(),
        tokenizer.normalizer(),
        tokenizer.missing_bytes().len()
    );

    let text = std::fs::read_to_string(corpus).expect("the corpus reads");
    let cases: Vec<(String, Vec<u32>, String)> = text
        .lines()
        .map(|line| {
            let case: Value = serde_json::from_str(line).expect("a JSON line");
            let ids = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|id| id.as_u64().unwrap() as u32)
                .collect();
            (
                case["text"].as_str().unwrap().to_string(),
                ids,
                case["decoded"].as_str().unwrap().to_string(),
            )
        })
        .collect();

    let mut mismatches = 0;
    for (text, expected, decoded) in &cases {
        let ids = tokenizer.encode(text, true).expect("encodes");
        let ours = tokenizer.decode(expected);
        if ids != *expected || ours != *decoded {
            mismatches += 1;
            if mismatches <= 20 {
                eprintln!("mismatch: {text:?}\n  HF    {expected:?} {decoded:?}\n  latte {ids:?} {ours:?}");
            }
        }
    }
    let tokens: usize = cases.iter().map(|c| c.1.len()).sum();
    let bytes: usize = cases.iter().map(|c| c.0.len()).sum();
    // Speed: the whole corpus, string by string, best of 5 passes (one in a debug build, whose
    // figure means nothing).
    let passes = if cfg!(debug_assertions) { 1 } else { 5 };
    let mut best = f64::INFINITY;
    for _ in 0..passes {
        let started = Instant::now();
        for (text, _, _) in &cases {
            std::hint::black_box(tokenizer.encode(std::hint::black_box(text), true).unwrap());
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    println!(
        "latte: {} strings, {tokens} tokens, {bytes} bytes: {} mismatches; encode {:.0} tokens/s ({:.1} MB/s), best of {passes} passes in {:.3} s",
        cases.len(),
        mismatches,
        tokens as f64 / best,
        bytes as f64 / best / 1e6,
        best
    );
    if mismatches > 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
