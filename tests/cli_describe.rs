//! `latte describe` as a user runs it: the answer alone on stdout (the reference's greedy answer
//! for the fixture model), timings on stderr, and a clear one-line error with a non-zero exit for
//! each bad input of issue 5 (unreadable / corrupt image, image over the pixel limit, prompt longer
//! than the context, image to a model without a vision tower).

mod reference_support;

#[path = "latte_bin/mod.rs"]
mod latte_bin;

use latte_bin::latte;
use reference_support::{convert, Oracle};

/// The reference image as PNG.
fn fixture_png(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("und.png");
    Oracle::open("base").write_png("und.image", &path);
    path
}

#[test]
fn describe_prints_the_greedy_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let model = convert("alt", "f32", tmp.path());
    let image = fixture_png(tmp.path());
    let out = latte(&[
        "describe",
        "-m",
        model.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "-p",
        "What shape is it?",
        "-n",
        "8",
        "--threads",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("tok/s"), "{stderr}");
    // alt's greedy answer is one token, then <|im_end|> (tests/describe_pipeline.rs).
    let greedy = Oracle::open("alt").u32s("und.greedy_tokens");
    let file = latte::model::ModelFile::open(&model).unwrap();
    let tokenizer = latte::tokenizer::Tokenizer::from_model_file(&file).unwrap();
    let im_end = tokenizer.token_to_id("<|im_end|>").unwrap();
    let answer: Vec<u32> = greedy.into_iter().take_while(|&t| t != im_end).collect();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{}\n", tokenizer.decode(&answer))
    );
}

fn assert_fails(args: &[&str], needle: &str) {
    let out = latte(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_inputs_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let model = convert("base", "f32", tmp.path());
    let m = model.to_str().unwrap();
    let image = fixture_png(tmp.path());
    let corrupt = tmp.path().join("corrupt.png");
    let bytes = std::fs::read(&image).unwrap();
    std::fs::write(&corrupt, &bytes[..bytes.len() / 2]).unwrap();
    let text = tmp.path().join("notes.jpg");
    std::fs::write(&text, "not an image").unwrap();

    assert_fails(
        &[
            "describe",
            "-m",
            m,
            "--image",
            "/nonexistent.png",
            "-p",
            "x",
        ],
        "/nonexistent.png",
    );
    assert_fails(
        &[
            "describe",
            "-m",
            m,
            "--image",
            corrupt.to_str().unwrap(),
            "-p",
            "x",
        ],
        "cannot decode",
    );
    assert_fails(
        &[
            "describe",
            "-m",
            m,
            "--image",
            text.to_str().unwrap(),
            "-p",
            "x",
        ],
        "cannot decode",
    );
    assert_fails(
        &[
            "describe",
            "-m",
            m,
            "--image",
            image.to_str().unwrap(),
            "-p",
            "x",
            "--max-image-pixels",
            "1000",
        ],
        "over the limit",
    );
    let long = "star ".repeat(2000);
    assert_fails(&["describe", "-m", m, "-p", &long], "context");

    let text_only = tmp.path().join("text-only.gguf");
    let source = latte::gguf::GgufFile::open(&model).unwrap();
    latte::convert::text_only::write_text_model(&source, &text_only).unwrap();
    assert_fails(
        &[
            "describe",
            "-m",
            text_only.to_str().unwrap(),
            "--image",
            image.to_str().unwrap(),
            "-p",
            "x",
        ],
        "no vision tower",
    );
    assert_fails(
        &["describe", "-m", "/nonexistent.gguf", "-p", "x"],
        "nonexistent.gguf",
    );
}
