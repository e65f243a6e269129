//! Throughput of encoding and streaming decoding (the demo model's 320-token byte-level BPE, both
//! pre-tokenizers) and the per-token cost of sampling over Qwen2-VL's 151,936-entry vocabulary.
//! Run: `cargo bench --bench tokenizer`.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use latte::convert::quantize::QuantizeOptions;
use latte::convert::Checkpoint;
use latte::model::ModelFile;
use latte::sampling::{SamplingParams, TokenSampler};
use latte::tokenizer::{Normalizer, PreTokenizer, Tokenizer, TokenizerParts};

fn demo_file() -> ModelFile {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/reference/demo_model");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo.gguf");
    let options = QuantizeOptions::parse("f32", &[]).unwrap();
    Checkpoint::plan(&dir, &options)
        .unwrap()
        .write(&out, &mut |_| {})
        .unwrap();
    ModelFile::from_bytes("demo.gguf", std::fs::read(&out).unwrap()).unwrap()
}

fn text() -> String {
    let paragraph = "<|im_start|>user\nDescribe the image: a small red star on the left, \
        a blue circle at the top right corner — and 3 yellow squares? It's 2024!\n\n\
        日本語のテキストと emoji 😀 too.<|im_end|>\n";
    paragraph.repeat(64 * 1024 / paragraph.len() + 1)
}

fn bench_tokenizer(c: &mut Criterion) {
    let file = demo_file();
    let text = text();
    let mut g = c.benchmark_group("tokenizer");
    g.throughput(Throughput::Bytes(text.len() as u64));
    for pre in [PreTokenizer::Gpt2, PreTokenizer::Qwen2] {
        let tok = Tokenizer::from_parts(TokenizerParts {
            tokens: file.str_array("tokenizer.ggml.tokens").unwrap().to_vec(),
            token_types: file.i64_array("tokenizer.ggml.token_type").unwrap(),
            merges: file.str_array("tokenizer.ggml.merges").unwrap().to_vec(),
            pre_tokenizer: pre,
            normalizer: Normalizer::Nfc,
            bos_id: None,
            eos_id: None,
            eot_id: None,
            padding_id: None,
            unknown_id: None,
        })
        .unwrap();
        g.bench_with_input(
            BenchmarkId::new("encode", format!("{pre:?}")),
            &pre,
            |b, _| b.iter(|| tok.encode(black_box(&text), true).unwrap()),
        );
        let ids = tok.encode(&text, true).unwrap();
        g.bench_with_input(
            BenchmarkId::new("stream_decode", format!("{pre:?}")),
            &pre,
            |b, _| {
                b.iter(|| {
                    let mut stream = tok.stream_decoder(false);
                    let mut n = 0;
                    for &id in &ids {
                        n += stream.push(black_box(id)).len();
                    }
                    n
                })
            },
        );
    }
    g.finish();
}

fn bench_sampling(c: &mut Criterion) {
    const VOCAB: usize = 151_936;
    // Roughly normal logits with standard deviation 3 (a sum of 4 uniforms), and 20 likely tokens
    // well above them: peaked like a language model's, so the nucleus is a handful of tokens.
    let mut rng = latte::rng::SplitMix64::new(3);
    let logits: Vec<f32> = (0..VOCAB)
        .map(|i| {
            let sum: f64 = (0..4).map(|_| rng.next_f64() - 0.5).sum();
            let likely = if i % 7919 == 0 { 20.0 } else { 0.0 };
            (sum * 3.0 * 3f64.sqrt() + likely) as f32
        })
        .collect();
    let history: Vec<u32> = (0..256).map(|i| i * 577 % VOCAB as u32).collect();
    let mut g = c.benchmark_group("sampling");
    let cases = [
        ("greedy", SamplingParams::greedy()),
        ("default_k40_p0.95", SamplingParams::default()),
        (
            "top_p_0.9_no_k_penalty_1.1",
            SamplingParams {
                temperature: 0.7,
                top_k: 0,
                top_p: 0.9,
                repetition_penalty: 1.1,
                seed: 1,
            },
        ),
    ];
    for (name, params) in cases {
        let mut sampler = TokenSampler::new(params, VOCAB).unwrap();
        let mut work = logits.clone();
        g.bench_function(name, |b| {
            b.iter(|| {
                work.copy_from_slice(&logits);
                sampler.sample(black_box(&mut work), &history).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_tokenizer, bench_sampling);
criterion_main!(benches);
