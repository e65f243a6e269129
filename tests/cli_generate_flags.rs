//! `latte generate`'s flags through the binary, on the demo model embedded in it: short flags,
//! `--seed -1`, `-b/--batch-count` (names, seeds, rows equal to single runs), `--negative-prompt`,
//! outputs that are not regular files (stdout, /dev/null, a FIFO), the refusals that must come
//! before any work (huge `--steps`, thread counts, batch sizes, streams for a batch), the
//! non-finite refusal of a huge guidance scale, and a dry run that plans without loading a model.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[path = "latte_bin/mod.rs"]
mod latte_bin;

use latte_bin::{latte, latte_command, png_text};

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn text_value(bytes: &[u8], key: &str) -> Option<String> {
    png_text(bytes)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// The decoded RGB pixels.
fn pixels(bytes: &[u8]) -> Vec<u8> {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    buf
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// A short run on the demo model (CPU: no adapter probing, the same image everywhere).
fn generate(extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "generate",
        "-p",
        "a red circle",
        "--steps",
        "4",
        "--quiet",
        "--device",
        "cpu",
    ];
    args.extend_from_slice(extra);
    latte(&args)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &std::process::Output) {
    assert!(out.status.success(), "{}", stderr(out));
}

/// Fails with `needle` in a one-line message (clap's usage errors excepted: they add a hint).
fn assert_refused(out: &std::process::Output, needle: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "succeeded: {err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn huge_steps_and_bad_thread_counts_are_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.png");
    let o = path_str(&out);
    let huge = |extra: &str| {
        latte(&[
            "generate",
            "-p",
            "x",
            "--quiet",
            "--device",
            "cpu",
            "--steps",
            "1000000000",
            "-o",
            o,
            extra,
        ])
    };
    let run = huge("--dense");
    assert_refused(&run, "1000000000 steps: at most 10000");
    assert_eq!(stderr(&run).trim().lines().count(), 1);
    // The dry run plans, so it must refuse the same way rather than size anything by the count.
    assert_refused(&huge("--dry-run"), "at most 10000");
    let cores = std::thread::available_parallelism().unwrap().get();
    let many = generate(&["--threads", "100000", "-o", o]);
    assert_refused(&many, &format!("this machine has {cores} cores"));
    assert_refused(
        &generate(&["-t", "0", "-o", o]),
        "--threads must be at least 1",
    );
    assert_refused(&generate(&["-b", "0", "-o", o]), "--batch-count 0");
    assert_refused(&generate(&["-b", "65", "-o", o]), "1 to 64 images");
    assert_refused(&generate(&["-s", "-2", "-o", o]), "-1 for a random one");
    assert!(files_in(tmp.path()).is_empty());
}

#[test]
fn a_guidance_scale_that_overflows_ends_in_a_clear_error_and_no_png() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.png");
    // 1e38 times any conditional-unconditional difference above 3.4 is past f32's range, so the
    // velocity holds infinities and the decoded image NaN. Smaller scales (1e30) stay finite on
    // the demo model: its norms rescale the huge latent, and the matmuls scale activations past
    // f16's range instead of overflowing. The alias of sd.cpp is the same flag.
    for flag in ["--cfg", "--cfg-scale"] {
        let run = generate(&[flag, "1e38", "-o", path_str(&out)]);
        assert_refused(
            &run,
            "guidance scale of 1000000000000000000000000000000000000",
        );
        assert!(
            stderr(&run).contains("no image is written"),
            "{}",
            stderr(&run)
        );
        assert_eq!(stderr(&run).trim().lines().count(), 1, "{}", stderr(&run));
        assert!(!out.exists());
    }
    assert!(files_in(tmp.path()).is_empty());
}

#[test]
fn a_batch_writes_numbered_pngs_whose_rows_equal_single_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.png");
    let run = generate(&["-b", "3", "-s", "5", "-o", path_str(&out)]);
    assert_ok(&run);
    assert_eq!(files_in(tmp.path()), ["out.png", "out_2.png", "out_3.png"]);
    let batch: Vec<Vec<u8>> = ["out.png", "out_2.png", "out_3.png"]
        .iter()
        .map(|n| std::fs::read(tmp.path().join(n)).unwrap())
        .collect();
    for (k, png) in batch.iter().enumerate() {
        assert_eq!(text_value(png, "seed"), Some((5 + k).to_string()));
    }
    // Each row of the batch follows exactly the arithmetic of a single run: the same bytes.
    for (k, seed) in [(0, "5"), (1, "6")] {
        let single = tmp.path().join(format!("single{k}.png"));
        assert_ok(&generate(&["-s", seed, "-o", path_str(&single)]));
        assert_eq!(
            std::fs::read(&single).unwrap(),
            batch[k],
            "row {k} vs seed {seed}"
        );
    }
    assert_ne!(pixels(&batch[0]), pixels(&batch[1]));

    // A name without an extension gets _k at its end.
    let plain = tmp.path().join("noext");
    assert_ok(&generate(&["-b", "2", "-o", path_str(&plain)]));
    assert!(plain.exists() && tmp.path().join("noext_2").exists());

    // A batch into one stream is refused before any work.
    assert_refused(&generate(&["-b", "2", "-o", "-"]), "standard output");
    assert_refused(
        &generate(&["-b", "2", "-o", "/dev/null"]),
        "a device or FIFO",
    );
    // Every destination is checked first: the second name is a directory here.
    let blocked = tmp.path().join("blocked.png");
    std::fs::create_dir(tmp.path().join("blocked_2.png")).unwrap();
    assert_refused(
        &generate(&["-b", "2", "-o", path_str(&blocked)]),
        "is a directory",
    );
    assert!(!blocked.exists());
}

#[test]
fn a_random_seed_is_printed_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("random.png");
    let run = generate(&["--seed", "-1", "-o", path_str(&out)]);
    assert_ok(&run);
    let err = stderr(&run);
    let seed: u64 = err
        .lines()
        .find_map(|l| l.strip_prefix("latte: random seed "))
        .unwrap_or_else(|| panic!("no seed line in: {err}"))
        .trim()
        .parse()
        .unwrap();
    let png = std::fs::read(&out).unwrap();
    assert_eq!(text_value(&png, "seed"), Some(seed.to_string()));
    // The printed seed reproduces the image.
    let again = tmp.path().join("again.png");
    assert_ok(&generate(&[
        "-s",
        &seed.to_string(),
        "-o",
        path_str(&again),
    ]));
    assert_eq!(std::fs::read(&again).unwrap(), png);
}

#[test]
fn a_negative_prompt_changes_the_image_and_is_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain.png");
    let negative = tmp.path().join("negative.png");
    assert_ok(&generate(&["-o", path_str(&plain)]));
    assert_ok(&generate(&[
        "--negative-prompt",
        "a blue square",
        "-o",
        path_str(&negative),
    ]));
    let (plain, negative) = (
        std::fs::read(&plain).unwrap(),
        std::fs::read(&negative).unwrap(),
    );
    assert_ne!(pixels(&plain), pixels(&negative));
    assert_eq!(
        text_value(&negative, "negative_prompt").as_deref(),
        Some("a blue square")
    );
    assert_eq!(text_value(&plain, "negative_prompt"), None);
    // Token ids have their own unconditional flag.
    assert_refused(
        &latte(&[
            "generate",
            "--prompt-ids",
            "1,2",
            "--negative-prompt",
            "x",
            "--dry-run",
        ]),
        "cannot be used with",
    );
}

#[test]
fn stdout_devices_and_fifos_receive_the_png_in_place() {
    // `-o -` with stdout a pipe (what `output()` gives the child).
    let run = generate(&["-o", "-"]);
    assert_ok(&run);
    assert!(run.stdout.starts_with(PNG_SIGNATURE), "not a PNG on stdout");
    assert_eq!(text_value(&run.stdout, "seed").as_deref(), Some("0"));

    // A character device stays one.
    use std::os::unix::fs::FileTypeExt;
    assert_ok(&generate(&["-o", "/dev/null"]));
    let meta = std::fs::metadata("/dev/null").unwrap();
    assert!(meta.file_type().is_char_device());

    // A FIFO is written in place, to a reader on the other end.
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("pipe");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    assert_ok(&generate(&["-o", path_str(&fifo)]));
    let received = reader.join().unwrap();
    assert!(received.starts_with(PNG_SIGNATURE));
    assert_eq!(received, run.stdout, "the same PNG as on stdout");
    let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
    assert!(kind.is_fifo());
}

/// A terminal as standard output refuses the PNG: the child's stdout is a pseudo-terminal.
#[cfg(unix)]
#[test]
fn stdout_that_is_a_terminal_is_refused() {
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty(3) writes two descriptors into the given ints; the other arguments may be
    // null (no name, default terminal settings and size).
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty failed");
    // SAFETY: both descriptors were just opened by openpty and are owned by nothing else.
    let (master, slave) = unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::fs::File::from_raw_fd(slave),
        )
    };
    let run = latte_command(&[
        "generate", "-p", "x", "--steps", "1", "--quiet", "--device", "cpu", "-o", "-",
    ])
    .stdout(Stdio::from(slave))
    .output()
    .unwrap();
    drop(master);
    assert_refused(&run, "standard output is a terminal");
}

/// The GGUF header offset of the type field of tensor `name` (its info: u64 name length, name,
/// u32 dimension count, u64 dims, u32 type).
fn type_field(bytes: &[u8], name: &str, n_dims: usize) -> usize {
    let mut key = (name.len() as u64).to_le_bytes().to_vec();
    key.extend_from_slice(name.as_bytes());
    let at = bytes
        .windows(key.len())
        .position(|w| w == key.as_slice())
        .unwrap();
    at + key.len() + 4 + 8 * n_dims
}

/// The demo model with the first F16 matrix of each `prefixes` part retyped to I16 (the same
/// size, so the file stays valid): no kernel and no dequantizer takes I16, so loading that model
/// fails, while the shapes and the file's layout are intact.
fn demo_with_unloadable_tensors(dir: &Path, prefixes: &[&str]) -> PathBuf {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo-f16.gguf");
    let mut bytes = std::fs::read(&demo).unwrap();
    let file = latte::gguf::GgufFile::open(&demo).unwrap();
    let pick = |prefix: &str| {
        file.tensor_infos()
            .iter()
            .find(|t| {
                t.name.starts_with(prefix)
                    && t.dims.len() >= 2
                    && t.ty == latte::dtype::TensorType::F16
            })
            .map(|t| (t.name.clone(), t.dims.len()))
            .unwrap()
    };
    for (name, n_dims) in prefixes.iter().map(|p| pick(p)) {
        let at = type_field(&bytes, &name, n_dims);
        assert_eq!(&bytes[at..at + 4], &1u32.to_le_bytes(), "{name} is F16");
        bytes[at..at + 4].copy_from_slice(&25u32.to_le_bytes()); // I16
    }
    let path = dir.join(format!("unloadable-{}.gguf", prefixes.join("")));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_dry_run_plans_from_metadata_without_loading_a_model() {
    let tmp = tempfile::tempdir().unwrap();
    // The text decoder's weights are read only by a real run.
    let model = demo_with_unloadable_tensors(tmp.path(), &["blk."]);
    let out = tmp.path().join("out.png");
    let dry = latte(&[
        "generate",
        "-m",
        path_str(&model),
        "-p",
        "a blue star",
        "-b",
        "2",
        "--device",
        "cpu",
        "--dry-run",
        "-o",
        path_str(&out),
    ]);
    assert_ok(&dry);
    let plan = String::from_utf8_lossy(&dry.stdout);
    for needle in [
        "2 images",
        "process baseline",
        "prefill",
        "group 3",
        "decode",
        "peak:",
        "no model loaded",
    ] {
        assert!(plan.contains(needle), "{needle} missing:\n{plan}");
    }
    // The predicted peak holds the process baseline, so it is at least what was measured before
    // loading; the figures are sizes, not the 3.7 MiB of weights and buffers alone.
    let bytes_after = |label: &str| -> f64 {
        let line = plan.lines().find(|l| l.contains(label)).unwrap();
        let rest = &line[line.find(label).unwrap() + label.len()..];
        let mut words = rest.split_whitespace();
        let value: f64 = words.next().unwrap().parse().unwrap();
        let unit = words.next().unwrap().trim_end_matches([')', ':', '+']);
        let scale = match unit {
            "B" => 1.0,
            "KiB" => 1024.0,
            "MiB" => 1024.0 * 1024.0,
            "GiB" => 1024.0 * 1024.0 * 1024.0,
            other => panic!("unit {other} in {line}"),
        };
        value * scale
    };
    let baseline = bytes_after("process baseline");
    let peak = bytes_after("peak:");
    assert!(baseline > 1e6 && peak > baseline, "{plan}");
    assert!(
        files_in(tmp.path()) == ["unloadable-blk..gguf"],
        "a dry run wrote a file"
    );

    // The real run loads the models and fails on the same file, naming the tensor it cannot take.
    let real = latte(&[
        "generate",
        "-m",
        path_str(&model),
        "-p",
        "a blue star",
        "--steps",
        "1",
        "--quiet",
        "--device",
        "cpu",
        "-o",
        path_str(&out),
    ]);
    assert_refused(&real, "I16");
    assert!(!out.exists());

    // The decoder's structure is planned from its shapes and types (no weight read, no f32
    // copy): a decoder tensor no backend can read is refused by the dry run too.
    let model = demo_with_unloadable_tensors(tmp.path(), &["dcae."]);
    let dry = latte(&[
        "generate",
        "-m",
        path_str(&model),
        "-p",
        "a blue star",
        "--device",
        "cpu",
        "--dry-run",
    ]);
    assert_refused(&dry, "I16");
}

#[test]
fn a_text_prompt_to_a_file_without_tokenizer_points_to_prompt_ids() {
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
    assert_ok(&run);
    let out = tmp.path().join("out.png");
    let run = latte(&[
        "generate",
        "-m",
        path_str(&model),
        "-p",
        "a red circle",
        "--quiet",
        "-o",
        path_str(&out),
    ]);
    assert_refused(&run, "--prompt-ids");
    assert!(stderr(&run).contains("no tokenizer"), "{}", stderr(&run));
    assert_eq!(stderr(&run).trim().lines().count(), 1);
    assert!(!out.exists());
    let run = latte(&["describe", "-m", path_str(&model), "-p", "What is it?"]);
    assert_refused(&run, "no tokenizer");
    assert_eq!(stderr(&run).trim().lines().count(), 1);
}
