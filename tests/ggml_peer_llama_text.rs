//! llama.cpp loads the text decoder that `convert::text_only` extracts from a latte file, and runs
//! it (feature `ggml-peer`): the peer `latte bench` compares text decoding against.
#![cfg(feature = "ggml-peer")]

mod convert_support;

use convert_support::fixture;
use latte::bench::llama_cpp::LlamaCppPeer;
use latte::bench::text::TextBench;
use latte::convert::quantize::QuantizeOptions;
use latte::convert::text_only::{is_text_tensor, write_text_model};
use latte::convert::Checkpoint;
use latte::gguf::GgufFile;
use latte::model::text::TextModel;
use latte::model::ModelFile;

#[test]
fn llama_cpp_runs_the_extracted_text_model() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.gguf");
    let options = QuantizeOptions::parse("f32", &[]).unwrap();
    Checkpoint::plan(&fixture("base"), &options)
        .unwrap()
        .write(&full, &mut |_| {})
        .unwrap();
    let source = GgufFile::open(&full).unwrap();
    let text = dir.path().join("text.gguf");
    let written = write_text_model(&source, &text).unwrap();
    let extracted = GgufFile::open(&text).unwrap();
    assert_eq!(extracted.tensor_infos().len(), written);
    for info in extracted.tensor_infos() {
        assert!(is_text_tensor(&info.name), "{}", info.name);
        let a = source.tensor(&info.name).unwrap();
        let b = extracted.tensor(&info.name).unwrap();
        assert_eq!((a.ty(), a.dims(), a.bytes()), (b.ty(), b.dims(), b.bytes()));
    }
    assert!(extracted.get("latte.flow.layer_count").is_none());

    let mut peer = LlamaCppPeer::load(&text, 64, 1).unwrap();
    let tokens = [7u32, 8, 9, 10, 11];
    let logits = peer.last_logits(&tokens).unwrap();
    assert_eq!(logits.len(), peer.vocab_size());
    assert!(logits.iter().all(|x| x.is_finite()));
    assert!(peer.prompt_seconds(&tokens).unwrap() > 0.0);
    assert!(peer.generate_seconds(&tokens).unwrap() > 0.0);
    // Same tokens, same logits: the cache really is cleared between runs.
    assert_eq!(peer.last_logits(&tokens).unwrap(), logits);

    // Our decoder on the same file agrees with llama.cpp's: the two engines `latte bench` compares
    // compute the same function. Both use F32 weights; the sums run in different orders (and ggml
    // rounds activations to F16 in places on some paths), so compare with a tolerance relative to
    // the logits' scale: 1e-3 of the largest magnitude.
    let file = ModelFile::open(&full).unwrap();
    let model = TextModel::load(&file).unwrap();
    let mut bench = TextBench::new(&model, 16).unwrap();
    bench.prompt_seconds(&tokens).unwrap();
    let ours = bench.last_logits();
    assert_eq!(ours.len(), logits.len());
    let scale = logits.iter().fold(0f32, |m, x| m.max(x.abs()));
    let worst = ours
        .iter()
        .zip(&logits)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst <= 1e-3 * scale,
        "max |ours - llama.cpp| = {worst}, scale {scale}"
    );
}
