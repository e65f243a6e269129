//! `latte generate` through the binary, with the demo model embedded in it: a PNG with the
//! generation parameters in its text chunks; on the tiny reference fixture model, the same bytes for
//! the same seed on every run and thread count; `--dry-run`'s memory plan, and the error contract for bad input (one clear line,
//! a non-zero exit, no PNG left behind).

use std::path::Path;

use latte::dtype::TensorType;
use latte::gguf::{GgufBuilder, MetadataValue};
use latte::model::ModelFile;
use latte_bin::{latte, png_text};

#[path = "latte_bin/mod.rs"]
mod latte_bin;
mod reference_support;

use reference_support::convert;

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn generates_a_png_with_its_parameters_deterministically() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tempfile::tempdir().unwrap();
    // The tiny `base` reference fixture (16×16 images): fast, also under qemu.
    let tiny = convert("base", "f32", models.path());
    let run = |model: Option<&Path>, name: &str, seed: &str, threads: &str| -> Vec<u8> {
        let out = tmp.path().join(name);
        let mut args = vec![
            "generate",
            "--prompt",
            "a red circle",
            "-o",
            path_str(&out),
            "--steps",
            "2",
            "--seed",
            seed,
            "--threads",
            threads,
            "--quiet",
        ];
        if let Some(model) = model {
            args.extend(["-m", path_str(model)]);
        }
        let run = latte(&args);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            stderr.contains("prefill") && stderr.contains("decode"),
            "{stderr}"
        );
        std::fs::read(out).unwrap()
    };
    // The embedded demo model (no -m): the PNG carries the generation parameters.
    let demo = run(None, "demo.png", "7", "1");
    let text = png_text(&demo);
    let get = |k: &str| {
        text.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("prompt"), Some("a red circle"));
    assert_eq!(get("seed"), Some("7"));
    assert_eq!(get("steps"), Some("2"));
    assert_eq!(get("sampler"), Some("euler"));
    // Without --cfg, the model's default guidance, as the file states it.
    let demo_file =
        ModelFile::open(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo-f16.gguf"))
            .unwrap();
    let default_guidance = demo_file
        .f32("latte.flow.guidance_scale")
        .unwrap()
        .to_string();
    assert_eq!(get("guidance"), Some(default_guidance.as_str()));
    // Determinism on the tiny model (the same code path, a fraction of the time).
    let first = run(Some(&tiny), "a.png", "7", "1");
    assert_eq!(
        first,
        run(Some(&tiny), "b.png", "7", "1"),
        "same seed, two runs"
    );
    assert_eq!(
        first,
        run(Some(&tiny), "c.png", "7", "2"),
        "1 and 2 threads"
    );
    assert_ne!(first, run(Some(&tiny), "d.png", "8", "2"), "another seed");
    // Leftover temporary files would show up here.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 5, "{names:?}");
}

#[test]
fn dry_run_prints_the_memory_plan_per_phase() {
    let run = latte(&["generate", "--prompt", "a blue star", "--dry-run"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    for phase in [
        "prefill", "group 0", "group 1", "group 2", "group 3", "decode", "peak",
    ] {
        assert!(stdout.contains(phase), "{phase} missing:\n{stdout}");
    }
    let dense = latte(&[
        "generate",
        "--prompt",
        "a blue star",
        "--dry-run",
        "--dense",
    ]);
    let stdout = String::from_utf8_lossy(&dense.stdout);
    assert!(
        stdout.contains("dense") && !stdout.contains("group 0"),
        "{stdout}"
    );
}

/// A GGUF with a text model's keys but no generation pathway.
fn model_without_generation(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("no-generation.gguf");
    let mut builder = GgufBuilder::new();
    builder
        .push_metadata(
            "general.architecture",
            MetadataValue::String("qwen2vl".into()),
        )
        .unwrap();
    builder
        .push_tensor("token_embd.weight", TensorType::F32, &[4, 2])
        .unwrap();
    let mut writer = builder.create(&path).unwrap();
    writer
        .write_tensor("token_embd.weight", &[0u8; 32])
        .unwrap();
    writer.finish().unwrap();
    path
}

#[test]
fn bad_input_fails_clearly_and_leaves_no_png() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.png");
    let no_generation = model_without_generation(tmp.path());
    let long_prompt = "a red circle on the left ".repeat(300);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["-m", path_str(&no_generation)],
            "no generation pathway",
        ),
        (vec!["--steps", "0"], "steps"),
        (vec!["--cfg", "-1"], "guidance"),
        (vec!["--cfg", "nan"], "guidance"),
        (vec!["--cfg", "inf"], "guidance"),
        (vec!["--prompt", long_prompt.as_str()], "too long"),
        (vec!["--mem-budget", "lots"], "mem-budget"),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["generate", "--quiet", "-o", path_str(&out)];
        if !extra.contains(&"--prompt") {
            args.extend_from_slice(&["--prompt", "a red circle"]);
        }
        args.extend_from_slice(&extra);
        let run = latte(&args);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{extra:?} succeeded");
        assert!(
            stderr.contains("error") && stderr.to_lowercase().contains(expected),
            "{extra:?}: expected '{expected}' in: {stderr}"
        );
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{extra:?}: one line: {stderr}"
        );
        assert!(!out.exists(), "{extra:?} left a PNG");
    }
    // Unwritable outputs: a missing directory, a directory.
    for target in [tmp.path().join("missing/out.png"), tmp.path().to_path_buf()] {
        let run = latte(&[
            "generate",
            "--quiet",
            "--prompt",
            "a red circle",
            "-o",
            path_str(&target),
        ]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success() && stderr.contains("error"),
            "{stderr}"
        );
    }
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["no-generation.gguf".to_string()]);
}

/// Files without a tokenizer (synthetic benchmark files) take token ids; asking them for a text
/// prompt is a clear error. (`--dry-run`: decoding the tiny synthetic model's 256×256 image takes
/// half a minute in a debug build; the empty-prompt path is generated in tests/generate_parity.rs.)
#[test]
fn prompt_ids_drive_a_file_without_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny.gguf");
    let run = latte(&[
        "convert",
        "--synthetic",
        "latte-flow-tiny",
        "--type",
        "q8_0",
        "--quiet",
        "-o",
        path_str(&model),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let run = latte(&[
        "generate",
        "-m",
        path_str(&model),
        "--prompt-ids",
        "1,2,3",
        "--uncond-ids",
        "1",
        "--steps",
        "2",
        "--dry-run",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("2 steps") && stdout.contains("group 1"),
        "{stdout}"
    );
    let out = tmp.path().join("out.png");
    let run = latte(&[
        "generate",
        "-m",
        path_str(&model),
        "--prompt",
        "a red circle",
        "--quiet",
        "-o",
        path_str(&out),
    ]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("tokenizer"));
    assert!(!out.exists());
}
