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
