//! `latte describe`'s short flags and thread rule through the binary, on the embedded demo model:
//! `-p`, `-n`, `-s`, `-t`; `-t 0` and absurd thread counts refused naming the machine; a model
//! with a vision tower asked without `--image` answers and says so on stderr, once.

#[path = "latte_bin/mod.rs"]
mod latte_bin;

use latte_bin::latte;

#[test]
fn short_flags_answer_and_a_missing_image_is_mentioned_once() {
    let out = latte(&[
        "describe",
        "-p",
        "What shape is it?",
        "-n",
        "4",
        "-s",
        "3",
        "-t",
        "1",
        "--device",
        "cpu",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!out.stdout.is_empty());
    let notices = stderr
        .lines()
        .filter(|l| l.contains("no --image given"))
        .count();
    assert_eq!(notices, 1, "{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("--image"),
        "the notice is not part of the answer"
    );
}

#[test]
fn thread_counts_out_of_range_are_refused() {
    let cores = std::thread::available_parallelism().unwrap().get();
    for threads in ["0", "100000"] {
        let out = latte(&["describe", "-p", "x", "-t", threads, "--device", "cpu"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "-t {threads} succeeded");
        assert!(
            stderr.contains(&format!("this machine has {cores} cores")),
            "{stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

/// Image inputs that never end or are not images are refused from their first bytes, in one
/// line naming the file, by both commands that take `--image`.
#[cfg(unix)]
#[test]
fn endless_and_non_image_inputs_are_refused_quickly() {
    let tmp = tempfile::tempdir().unwrap();
    let truncated = tmp.path().join("cut.jpg");
    let jpeg = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/image/source.jpg"
    ))
    .unwrap();
    std::fs::write(&truncated, &jpeg[..jpeg.len() * 2 / 3]).unwrap();
    let cases = [
        ("/dev/zero", "not a PNG, JPEG or WebP"),
        (tmp.path().to_str().unwrap(), "is a directory"),
        (truncated.to_str().unwrap(), "truncated"),
    ];
    for (image, expected) in cases {
        for command in ["describe", "generate"] {
            let out = tmp.path().join("out.png");
            let mut args = vec![command, "-p", "What shape is it?", "--image", image];
            args.extend(["--device", "cpu"]);
            if command == "generate" {
                args.extend(["-o", out.to_str().unwrap()]);
            }
            let run = latte(&args);
            let stderr = String::from_utf8_lossy(&run.stderr);
            let what = format!("{command} --image {image}");
            assert!(!run.status.success(), "{what} succeeded");
            assert!(
                stderr.contains(image) && stderr.contains(expected),
                "{what}: {stderr}"
            );
            assert_eq!(stderr.trim().lines().count(), 1, "{what}: {stderr}");
            assert!(!out.exists());
        }
    }
}
