//! llama.cpp's own Qwen2-VL text file, quantized by llama.cpp's own `llama_model_quantize`
//! (`llama-quantize`: its per-tensor type choices and fallbacks; also to F32), read by latte with the
//! projector beside it (feature `ggml-peer`). Oracle: llama.cpp running the same file. For text
//! prompts over the real Qwen vocabulary the greedy answers are the same tokens, and latte's
//! last-position logits are within a fraction of their largest magnitude of llama.cpp's: 2e-3 for
//! F32 and F16 (F16 weights round activations to F16 in both; llama.cpp keeps its KV cache in F16;
//! measured 5.6e-4 and 7.3e-4),
//! 2.5e-2 for the quantized files. There both engines round every matmul's activations to Q8_0 /
//! Q8_K blocks, a step function: inputs a rounding apart (the F16 cache, other sum orders) can land
//! on neighbouring steps, so the two differ by about as much as each differs from the unrounded
//! model (measured 1.2e-2 of the largest logit, while each is 0.04–0.17 from transformers' F32
//! logits). llama-quantize's own type choices (Q8_0 for the 32-wide embedding under Q4_0 and
//! Q4_K_M, Q5_0 / Q8_0 fallbacks for K-quant rows of 32) are read as they are.
#![cfg(feature = "ggml-peer")]

#[path = "common/ggml_peer.rs"]
mod ggml_peer;
mod llamacpp_support;

use std::ops::ControlFlow;

use latte::bench::llama_cpp::LlamaCppPeer;
use latte::model::projector;
use latte::pipeline::{DescribeRequest, Describer};
use latte::sampling::SamplingParams;
use llama_cpp_sys_2 as sys;
use llamacpp_support::{fixtures, last_logits, text_model};

const PROMPTS: [&str; 2] = [
    "Hello! How are you today?",
    "Café, naïve, Ångström: ÅÉ — 日本語 😀\n\n  code:\tx = 1",
];
const ANSWER_TOKENS: usize = 10;

fn greedy_with_llama_cpp(peer: &mut LlamaCppPeer, prompt: &[u32], stops: &[u32]) -> Vec<u32> {
    let mut ids = prompt.to_vec();
    let mut answer = Vec::new();
    for _ in 0..ANSWER_TOKENS {
        let logits = peer.last_logits(&ids).unwrap();
        let next = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
            .unwrap() as u32;
        if stops.contains(&next) {
            break;
        }
        answer.push(next);
        ids.push(next);
    }
    answer
}

#[test]
fn llama_quantized_text_models_answer_as_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let f16 = text_model(dir.path());
    for (label, ftype, tolerance) in [
        ("f32", sys::LLAMA_FTYPE_ALL_F32, 2e-3),
        ("f16", sys::LLAMA_FTYPE_MOSTLY_F16, 2e-3),
        ("q8_0", sys::LLAMA_FTYPE_MOSTLY_Q8_0, 2.5e-2),
        ("q4_0", sys::LLAMA_FTYPE_MOSTLY_Q4_0, 2.5e-2),
        ("q4_k_m", sys::LLAMA_FTYPE_MOSTLY_Q4_K_M, 2.5e-2),
    ] {
        let quantized = dir.path().join(format!("llama-quantized-{label}.gguf"));
        ggml_peer::llama_quantize(&f16, &quantized, ftype);
        let file =
            projector::open_with_projector(&quantized, fixtures().join("mmproj-f16.gguf")).unwrap();
        let describer = Describer::load(&file).unwrap();
        let stops: Vec<u32> = ["<|im_end|>", "<|endoftext|>"]
            .iter()
            .map(|t| describer.tokenizer().token_to_id(t).unwrap())
            .collect();
        let mut peer = LlamaCppPeer::load(&quantized, 256, 2).unwrap();
        for prompt in PROMPTS {
            let ids = describer.prompt_ids(prompt, None).unwrap();
            let theirs = peer.last_logits(&ids).unwrap();
            let ours = last_logits(&describer, &ids, None);
            let scale = theirs.iter().fold(0f32, |m, x| m.max(x.abs()));
            let worst = ours
                .iter()
                .zip(&theirs)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            println!("{label}, {prompt:?}: max |Δ logit| {worst:e} of {scale}");
            assert!(
                worst <= tolerance * scale,
                "{label}, {prompt:?}: {worst} of {scale}"
            );

            let want = greedy_with_llama_cpp(&mut peer, &ids, &stops);
            let mut tokens = Vec::new();
            let request =
                DescribeRequest::question(None, prompt, ANSWER_TOKENS, SamplingParams::greedy());
            describer
                .describe(&request, &mut |id, _| {
                    if id != u32::MAX {
                        tokens.push(id);
                    }
                    ControlFlow::Continue(())
                })
                .unwrap();
            assert_eq!(tokens, want, "{label}, {prompt:?}: greedy answer");
        }
    }
}
