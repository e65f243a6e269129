//! llama.cpp's own Qwen2-VL files: a text GGUF and its vision projector (`--mmproj`), written by
//! llama.cpp's unmodified `convert_hf_to_gguf.py` from a tiny Qwen2-VL around the real Qwen
//! vocabulary (151,936 rows), against transformers on the same checkpoint
//! (`tests/fixtures/llamacpp/`, made by `tools/make_llamacpp_fixture.py`). For each prompt, with and
//! without an image: the prompt ids, the logits' 32 largest entries at the last prompt position and
//! the greedy answer through `Describer` (the `latte describe` pipeline).
//!
//! Tolerance on those logits: the weights are exact in F16 (the fixture draws them on a 1/64 grid),
//! but latte's F16 products round their activations to F16 as ggml does (relative 2⁻¹¹ per value,
//! sums of 32–128 products over two layers), while transformers stays in f32: 2e-3 of
//! max(1, |logit|) for the F16 projector, measured ≤ 3.7e-4; 1.5e-2 with the Q8_0 projector (the
//! image embeddings carry Q8_0's rounding, up to 1/254 of a block's largest weight, besides),
//! measured ≤ 3.6e-3.

mod latte_bin;
mod llamacpp_support;

use std::ops::ControlFlow;
use std::path::Path;

use latte::image::{load_rgb, DEFAULT_MAX_INPUT_PIXELS};
use latte::model::projector;
use latte::model::ModelFile;
use latte::pipeline::{DescribeRequest, Describer};
use latte::sampling::SamplingParams;
use latte_bin::latte;
use llamacpp_support::{fixtures, last_logits, text_model};
use serde_json::Value;

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap())
        .unwrap()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn check_against_transformers(mmproj: &str, tolerance: f32) {
    let tmp = tempfile::tempdir().unwrap();
    let file =
        projector::open_with_projector(text_model(tmp.path()), fixtures().join(mmproj)).unwrap();
    let describer = Describer::load(&file).unwrap();
    let vision = describer.vision_model().expect("the projector's tower");
    assert_eq!(vision.config().preprocess.merge_size, 2);
    assert_eq!(
        (
            vision.config().preprocess.min_pixels,
            vision.config().preprocess.max_pixels
        ),
        (56 * 56, 28 * 28 * 1280),
        "transformers' processor defaults"
    );
    let expected = expected();
    for case in expected["cases"].as_array().unwrap() {
        let question = case["question"].as_str().unwrap();
        let image = case["image"].as_str().map(|name| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/image")
                .join(name)
        });
        let want_ids = u32s(&case["prompt_ids"]);
        let image_tokens = image.as_ref().map(|_| {
            let grid = u32s(&case["grid"]);
            (grid[0] * grid[1] * grid[2] / 4) as usize
        });
        let ids = describer.prompt_ids(question, image_tokens).unwrap();
        assert_eq!(ids, want_ids, "{mmproj}, {question:?}: prompt ids");

        let logits = last_logits(&describer, &ids, image.as_deref());
        let mut worst = 0f32;
        for (id, want) in u32s(&case["top_ids"])
            .iter()
            .zip(case["top_logits"].as_array().unwrap())
        {
            let want = want.as_f64().unwrap() as f32;
            worst = worst.max((logits[*id as usize] - want).abs() / want.abs().max(1.0));
        }
        println!("{mmproj}, {question:?}: top-32 logits, worst relative |Δ| {worst:e}");
        assert!(worst <= tolerance, "{mmproj}, {question:?}: {worst}");

        let greedy = u32s(&case["greedy"]);
        let rgb = image
            .as_ref()
            .map(|path| load_rgb(path, DEFAULT_MAX_INPUT_PIXELS).unwrap());
        let request = DescribeRequest::question(
            rgb.as_ref(),
            question,
            greedy.len(),
            SamplingParams::greedy(),
        );
        let mut tokens = Vec::new();
        let mut answer = String::new();
        describer
            .describe(&request, &mut |id, piece| {
                if id != u32::MAX {
                    tokens.push(id);
                }
                answer.push_str(piece);
                ControlFlow::Continue(())
            })
            .unwrap();
        let stop = expected["eos"].as_u64().unwrap() as u32;
        let want: Vec<u32> = greedy.iter().copied().take_while(|&t| t != stop).collect();
        assert_eq!(tokens, want, "{mmproj}, {question:?}: greedy answer");
        assert_eq!(
            answer,
            case["answer"].as_str().unwrap(),
            "{mmproj}, {question:?}"
        );
    }
}

#[test]
fn llama_cpp_text_model_with_its_f16_projector_answers_as_transformers() {
    check_against_transformers("mmproj-f16.gguf", 2e-3);
}

#[test]
fn llama_cpp_text_model_with_its_q8_0_projector_answers_as_transformers() {
    check_against_transformers("mmproj-q8_0.gguf", 1.5e-2);
}

#[test]
fn llama_cpp_files_that_do_not_pair_are_refused_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let text = text_model(tmp.path());
    let mmproj = fixtures().join("mmproj-f16.gguf");
    let refusal = |a: &Path, b: &Path| {
        let joined = projector::open_with_projector(a, b);
        joined.err().expect("joined").to_string()
    };
    // The text model given as the projector, and the projector as the text model.
    let swapped = refusal(&text, &text);
    assert!(swapped.contains(&text.display().to_string()), "{swapped}");
    assert!(swapped.contains("not a vision projector"), "{swapped}");
    let reversed = refusal(&mmproj, &mmproj);
    assert!(
        reversed.contains("the -m file is not a text model"),
        "{reversed}"
    );
    assert!(reversed.contains("'clip'"), "{reversed}");
    // The projector alone as a model: no text decoder to load.
    let alone = ModelFile::open(&mmproj).unwrap();
    let error = Describer::load(&alone)
        .err()
        .expect("no text model")
        .to_string();
    assert!(error.contains("mmproj-f16.gguf"), "{error}");
}

#[test]
fn describe_and_info_take_mmproj_and_convert_joins_the_pair() {
    let tmp = tempfile::tempdir().unwrap();
    let text = text_model(tmp.path());
    let mmproj = fixtures().join("mmproj-f16.gguf");
    let image = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/image/source.png");
    let expected = expected();
    let case = &expected["cases"][0];
    let question = case["question"].as_str().unwrap();
    let n = case["greedy"].as_array().unwrap().len().to_string();
    let want = case["answer"].as_str().unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();

    let describe = |model: &[&str]| {
        let mut args = vec!["describe"];
        args.extend_from_slice(model);
        let (image, n) = (s(&image), n.clone());
        args.extend_from_slice(&["--image", &image, "-p", question, "-n", &n]);
        let run = latte(&args);
        let stderr = String::from_utf8_lossy(&run.stderr).to_string();
        assert!(run.status.success(), "{stderr}");
        String::from_utf8(run.stdout).unwrap()
    };
    let pair = describe(&["-m", &s(&text), "--mmproj", &s(&mmproj)]);
    assert_eq!(pair.trim_end_matches('\n'), want);

    let info = latte(&["info", &s(&text), "--mmproj", &s(&mmproj)]);
    assert!(info.status.success());
    let shown = String::from_utf8(info.stdout).unwrap();
    assert!(shown.contains("token_embd.weight") && shown.contains("v.patch_embd.weight"));
    assert!(shown.contains("mmproj-f16.gguf: GGUF v3"), "{shown}");

    // One file, as latte writes it: the same answer, and llama.cpp's implicit values explicit.
    for ty in ["f16", "q8_0"] {
        let joined = tmp.path().join(format!("joined-{ty}.gguf"));
        let convert = latte(&[
            "convert",
            &s(&text),
            "--mmproj",
            &s(&mmproj),
            "-o",
            &s(&joined),
            "--type",
            ty,
        ]);
        assert!(
            convert.status.success(),
            "{}",
            String::from_utf8_lossy(&convert.stderr)
        );
        let file = ModelFile::open(&joined).unwrap();
        assert_eq!(file.str("latte.model_kind").unwrap(), "understanding");
        assert_eq!(file.usize("clip.vision.spatial_merge_size").unwrap(), 2);
        assert_eq!(file.usize("clip.vision.feed_forward_length").unwrap(), 64);
        assert_eq!(file.usize("latte.vision.image_token_id").unwrap(), 151655);
        assert_eq!(file.str("latte.tokenizer.normalizer").unwrap(), "nfc");
        assert!(file.projector().is_none());
        let answer = describe(&["-m", &s(&joined)]);
        if ty == "f16" {
            assert_eq!(answer.trim_end_matches('\n'), want, "joined {ty}");
        }
    }

    // Files that do not pair: one line naming both, a non-zero exit, no output file.
    let refused = latte(&[
        "describe",
        "-m",
        &s(&text),
        "--mmproj",
        &s(&text),
        "-p",
        "hi",
    ]);
    assert!(!refused.status.success());
    let error = String::from_utf8(refused.stderr).unwrap();
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(
        error.contains("with --mmproj") && error.contains("not a vision projector"),
        "{error}"
    );
    let out = tmp.path().join("never.gguf");
    let refused = latte(&[
        "convert",
        &s(&mmproj),
        "--mmproj",
        &s(&mmproj),
        "-o",
        &s(&out),
    ]);
    assert!(!refused.status.success());
    assert!(!out.exists());
    let alone = latte(&["describe", "--mmproj", &s(&mmproj), "-p", "hi"]);
    assert!(!alone.status.success());
    assert!(String::from_utf8(alone.stderr)
        .unwrap()
        .contains("--mmproj needs -m"));
}

#[test]
fn a_truncated_or_foreign_projector_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let text = text_model(tmp.path());
    let bytes = std::fs::read(fixtures().join("mmproj-f16.gguf")).unwrap();
    for cut in [16, 2000, bytes.len() / 2, bytes.len() - 1] {
        let truncated = tmp.path().join(format!("mmproj-cut-{cut}.gguf"));
        std::fs::write(&truncated, &bytes[..cut]).unwrap();
        let error = projector::open_with_projector(&text, &truncated)
            .err()
            .expect("a truncated projector joined")
            .to_string();
        assert!(error.contains(&format!("mmproj-cut-{cut}.gguf")), "{error}");
    }
    // The demo model (latte's own file, vision tower inside) is not a text model for a projector.
    let demo = tmp.path().join("demo.gguf");
    assert!(latte(&["info", "--write-demo", demo.to_str().unwrap()])
        .status
        .success());
    let error = projector::open_with_projector(&demo, fixtures().join("mmproj-f16.gguf"))
        .err()
        .expect("the demo model took a projector")
        .to_string();
    assert!(error.contains("already holds a vision tower"), "{error}");
}
