//! `latte generate --image` through the binary on the tiny reference fixture model: the PNG is the
//! reference's image-prompt generation (tests/fixtures/reference/base/image_prompt.safetensors,
//! ±2/255 per pixel as in tests/generate_parity.rs) and records the image's file name; bad image
//! inputs (missing, corrupt, over the pixel limit, a model without a vision tower) fail with one
//! clear line, a non-zero exit and no PNG.

use std::path::{Path, PathBuf};

use latte::gguf::{is_padding_tensor, GgufBuilder, GgufFile};
use latte_bin::latte;

#[path = "latte_bin/mod.rs"]
mod latte_bin;
mod reference_support;

use reference_support::{convert, fixture_dir, max_level_difference, Oracle};

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn image_fixture() -> Oracle {
    Oracle::open_path(&fixture_dir("base").join("image_prompt.safetensors"))
}

/// The fixture's prompt image as PNG.
fn fixture_png(dir: &Path) -> PathBuf {
    let path = dir.join("star.png");
    image_fixture().write_png("img.image", &path);
    path
}

/// `source` without its vision tower (`v.*`, `mm.*` tensors, `clip.*` keys): generation intact.
fn without_vision_tower(source: &Path, path: &Path) {
    let source = GgufFile::open(source).unwrap();
    let mut builder = GgufBuilder::new();
    builder.set_alignment(source.alignment() as u32).unwrap();
    for (key, value) in source.metadata() {
        if key != "general.alignment" && !key.starts_with("clip.") {
            builder.push_metadata(key.clone(), value.clone()).unwrap();
        }
    }
    let tensors: Vec<_> = source
        .tensor_infos()
        .iter()
        .filter(|t| {
            !t.name.starts_with("v.") && !t.name.starts_with("mm.") && !is_padding_tensor(&t.name)
        })
        .collect();
    for t in &tensors {
        builder.push_tensor(t.name.clone(), t.ty, &t.dims).unwrap();
    }
    let mut writer = builder.create(path).unwrap();
    for t in &tensors {
        writer
            .write_tensor(&t.name, source.tensor(&t.name).unwrap().bytes())
            .unwrap();
    }
    writer.finish().unwrap();
}

fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture_dir("base").join("image_prompt.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// (pixels, text chunks) of a PNG.
fn read_png(path: &Path) -> (Vec<u8>, Vec<(String, String)>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    pixels.truncate(frame.buffer_size());
    let info = reader.info();
    let mut text: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    text.extend(
        info.utf8_text
            .iter()
            .map(|t| (t.keyword.clone(), t.get_text().unwrap())),
    );
    (pixels, text)
}

#[test]
fn generate_with_an_image_matches_the_reference_and_records_it() {
    let tmp = tempfile::tempdir().unwrap();
    let model = convert("base", "f32", tmp.path());
    let image = fixture_png(tmp.path());
    let m = manifest();
    let prompt = m["prompt"].as_str().unwrap();
    let steps = m["steps"].to_string();
    let seed = image_fixture().i64("img.seed")[0].to_string();
    let run = |extra: &[&str], name: &str| -> PathBuf {
        let out = tmp.path().join(name);
        let mut args = vec![
            "generate",
            "-m",
            path_str(&model),
            "--prompt",
            prompt,
            "--steps",
            &steps,
            "--seed",
            &seed,
            "--quiet",
            "-o",
            path_str(&out),
        ];
        args.extend_from_slice(extra);
        let run = latte(&args);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        out
    };
    let with_image = run(&["--image", path_str(&image)], "with-image.png");
    let (pixels, text) = read_png(&with_image);
    let want = image_fixture().u8("img.image_u8");
    let worst = max_level_difference(&pixels, &want);
    assert!(worst <= 2, "a pixel differs by {worst}/255");
    let get = |k: &str| {
        text.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("image").as_deref(), Some("star.png"));
    assert_eq!(get("prompt").as_deref(), Some(prompt));
    // Without the image: another image, and no image chunk.
    let text_only = run(&[], "text-only.png");
    let (other, text) = read_png(&text_only);
    assert_ne!(pixels, other);
    assert!(text.iter().all(|(k, _)| k != "image"), "{text:?}");
    // --dry-run counts the image's tokens and computes nothing.
    let run = latte(&[
        "generate",
        "-m",
        path_str(&model),
        "--prompt",
        prompt,
        "--image",
        path_str(&image),
        "--dry-run",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("peak"));
}

#[test]
fn bad_images_fail_clearly_and_leave_no_png() {
    let tmp = tempfile::tempdir().unwrap();
    let model = convert("base", "f32", tmp.path());
    let image = fixture_png(tmp.path());
    let corrupt = tmp.path().join("corrupt.png");
    let bytes = std::fs::read(&image).unwrap();
    std::fs::write(&corrupt, &bytes[..bytes.len() / 2]).unwrap();
    let no_vision = tmp.path().join("no-vision.gguf");
    without_vision_tower(&model, &no_vision);
    let out = tmp.path().join("out.png");
    let missing = tmp.path().join("missing.png");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--image", path_str(&missing)], "missing.png"),
        (vec!["--image", path_str(&corrupt)], "cannot decode"),
        (
            vec!["--image", path_str(&image), "--max-image-pixels", "1000"],
            "over the limit",
        ),
        (
            vec!["--image", path_str(&image), "-m", path_str(&no_vision)],
            "no vision tower",
        ),
    ];
    for (extra, expected) in cases {
        let mut args = vec![
            "generate",
            "--quiet",
            "--prompt",
            "a star like this",
            "--steps",
            "1",
            "-o",
            path_str(&out),
        ];
        if !extra.contains(&"-m") {
            args.extend_from_slice(&["-m", path_str(&model)]);
        }
        args.extend_from_slice(&extra);
        let run = latte(&args);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{extra:?} succeeded");
        assert!(
            stderr.contains("error") && stderr.contains(expected),
            "{extra:?}: expected '{expected}' in: {stderr}"
        );
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{extra:?}: one line: {stderr}"
        );
        assert!(!out.exists(), "{extra:?} left a PNG");
    }
    // The same model without the image generates (only the image needs the tower).
    let run = latte(&[
        "generate",
        "--quiet",
        "-m",
        path_str(&no_vision),
        "--prompt",
        "a star",
        "--steps",
        "1",
        "-o",
        path_str(&out),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(out.exists());
}
