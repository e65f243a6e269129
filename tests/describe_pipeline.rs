//! Image understanding end to end against transformers' Qwen2-VL (reference fixtures, tied `base`
//! and untied `alt`): from the raw image through our preprocessing, vision tower, prompt and
//! decoder, the prompt ids equal `und.input_ids`, the logits of every prompt position match
//! `und.logits`, and `Describer` (the `latte describe` pipeline) decodes the reference's greedy
//! tokens through its KV cache. Also the errors of issue 5's item 10.
//!
//! Tolerance: as tests/text_decoder_parity.rs (f32 sums in other orders): logits within 2e-4 of
//! max(1, largest |logit|); measured ~1e-6.

use std::ops::ControlFlow;
mod reference_support;

use latte::image::{preprocess, RgbImage};
use latte::model::positions::rope_positions;
use latte::model::text::{KvCache, Logits, TextScratch};
use latte::model::ModelFile;
use latte::pipeline::{DescribeError, DescribeRequest, Describer};
use latte::sampling::SamplingParams;
use reference_support::{convert, max_abs_diff, Oracle};

const QUESTION: &str = "What shape is it?";

fn fixture_image(o: &Oracle) -> RgbImage {
    let shape = o.shape("und.image");
    RgbImage::new(shape[1], shape[0], o.u8("und.image")).unwrap()
}

fn request(image: Option<&RgbImage>, max_tokens: usize) -> DescribeRequest<'_> {
    DescribeRequest::question(image, QUESTION, max_tokens, SamplingParams::greedy())
}

#[test]
fn image_to_logits_and_greedy_tokens_match_transformers() {
    for config in ["base", "alt"] {
        let tmp = tempfile::tempdir().unwrap();
        let file = ModelFile::open(convert(config, "f32", tmp.path())).unwrap();
        let describer = Describer::load(&file).unwrap();
        let o = Oracle::open(config);
        let image = fixture_image(&o);

        // The chain by hand, to compare every prompt position's logits.
        let vision = describer.vision_model().unwrap();
        let text = describer.text_model();
        let output = vision
            .encode(&preprocess(&image, &vision.config().preprocess).unwrap())
            .unwrap();
        let ids = describer
            .prompt_ids(QUESTION, Some(output.n_tokens()))
            .unwrap();
        assert_eq!(ids, o.u32s("und.input_ids"), "{config}: prompt ids");
        let image_token = vision.config().image_token_id;
        let (positions, _) = rope_positions(&ids, image_token, &[output.merged_grid]).unwrap();
        let d = text.config().hidden;
        let mut embeddings = vec![0f32; ids.len() * d];
        text.embed_tokens(&ids, &mut embeddings).unwrap();
        let mut image_rows = output.embeddings.chunks_exact(d);
        for (id, row) in ids.iter().zip(embeddings.chunks_exact_mut(d)) {
            if *id == image_token {
                row.copy_from_slice(image_rows.next().unwrap());
            }
        }
        let mut cache = KvCache::new(text.config(), ids.len());
        let mut logits = Vec::new();
        text.forward(
            &embeddings,
            &positions,
            &mut cache,
            &mut TextScratch::new(),
            None,
            Logits::All,
            &mut logits,
        )
        .unwrap();
        let (diff, scale) = max_abs_diff(&logits, &o.f32("und.logits"));
        println!("{config}: image → logits max |Δ| {diff:e} (max {scale})");
        assert!(diff <= 2e-4 * scale.max(1.0), "{config}: {diff}");

        // The pipeline: greedy tokens through the cache.
        let greedy = o.u32s("und.greedy_tokens");
        let mut tokens = Vec::new();
        let mut text_out = String::new();
        let stats = describer
            .describe(&request(Some(&image), greedy.len()), &mut |id, piece| {
                if id != u32::MAX {
                    tokens.push(id);
                }
                text_out.push_str(piece);
                ControlFlow::Continue(())
            })
            .unwrap();
        // The reference decodes 8 tokens without stopping; the pipeline stops at <|im_end|>.
        let im_end = describer.tokenizer().token_to_id("<|im_end|>").unwrap();
        let answer: Vec<u32> = greedy
            .iter()
            .copied()
            .take_while(|&t| t != im_end)
            .collect();
        assert_eq!(tokens, answer, "{config}: greedy tokens");
        assert_eq!(stats.stopped, answer.len() < greedy.len());
        assert_eq!(text_out, describer.tokenizer().decode(&answer));
        assert_eq!(stats.prompt_tokens, ids.len());
        assert_eq!(stats.image_tokens, output.n_tokens());
        assert_eq!(stats.generated_tokens, answer.len());
        // One cached step per answer token after the first, plus the one that produced the stop.
        let steps = if stats.stopped {
            answer.len()
        } else {
            answer.len() - 1
        };
        assert_eq!(stats.decode_steps, steps);
    }
}

#[test]
fn text_only_prompts_and_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let file = ModelFile::open(convert("base", "f32", tmp.path())).unwrap();
    let describer = Describer::load(&file).unwrap();
    let mut n = 0;
    let stats = describer
        .describe(&request(None, 5), &mut |_, _| {
            n += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
    assert!(stats.generated_tokens <= 5 && stats.image_tokens == 0);
    assert!(n >= stats.generated_tokens);
    // Zero answer tokens: nothing decoded.
    let stats = describer
        .describe(&request(None, 0), &mut |_, _| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(stats.generated_tokens, 0);

    // An absurd answer length is bounded by the context (512 tokens), not allocated.
    let stats = describer
        .describe(&request(None, usize::MAX), &mut |_, _| {
            ControlFlow::Continue(())
        })
        .unwrap();
    // Every token but the last one sampled goes through the 512-token cache.
    assert!(stats.prompt_tokens + stats.generated_tokens <= 513);
    assert!(stats.stopped || stats.prompt_tokens + stats.decode_steps == 512);

    // A prompt longer than the context (512 tokens in the fixture model).
    let long = DescribeRequest::question(None, &"star ".repeat(2000), 4, SamplingParams::greedy());
    let err = describer
        .describe(&long, &mut |_, _| ControlFlow::Continue(()))
        .unwrap_err();
    assert!(matches!(err, DescribeError::PromptTooLong { .. }), "{err}");
    // Bad sampling settings.
    let mut bad = request(None, 4);
    bad.sampling.top_p = 0.0;
    assert!(matches!(
        describer.describe(&bad, &mut |_, _| ControlFlow::Continue(())),
        Err(DescribeError::Sampling(_))
    ));
}

#[test]
fn an_image_needs_a_vision_tower() {
    // The fixture model's text decoder alone (what llama.cpp loads: no `v.*`, `mm.*`, `clip.*`).
    let tmp = tempfile::tempdir().unwrap();
    let full = convert("base", "f32", tmp.path());
    let text_only = tmp.path().join("text-only.gguf");
    let source = latte::gguf::GgufFile::open(&full).unwrap();
    latte::convert::text_only::write_text_model(&source, &text_only).unwrap();
    let file = ModelFile::open(&text_only).unwrap();
    let describer = Describer::load(&file).unwrap();
    assert!(describer.vision_model().is_none());
    let o = Oracle::open("base");
    let image = fixture_image(&o);
    let err = describer
        .describe(&request(Some(&image), 4), &mut |_, _| {
            ControlFlow::Continue(())
        })
        .unwrap_err();
    assert!(matches!(err, DescribeError::NoVisionTower { .. }), "{err}");
    // Text-only prompts still work.
    describer
        .describe(&request(None, 2), &mut |_, _| ControlFlow::Continue(()))
        .unwrap();
}
