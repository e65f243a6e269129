//! `latte bench` smoke test (the full table is docs/BENCHMARKS.md's job, not CI's): on the tiny
//! reference fixture model, every requested row is there with a positive finite value, the formats
//! parse, peers attach, and bad arguments fail with a message and a non-zero exit.

mod convert_support;

use convert_support::{fixture, latte};
use latte::convert::quantize::QuantizeOptions;
use latte::convert::Checkpoint;

fn stderr(run: &std::process::Output) -> String {
    String::from_utf8_lossy(&run.stderr).into_owned()
}

#[test]
fn json_report_has_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let peer = dir.path().join("peer.json");
    std::fs::write(
        &peer,
        r#"{"peer": "fake", "threads": 1, "rows": [{"test": "vae", "unit": "s", "mean": 1.0,
            "std_dev": 0.0, "median": 1.0, "min": 1.0, "max": 1.0, "reps": 1}]}"#,
    )
    .unwrap();
    let trace = dir.path().join("trace.json");
    // The tiny base fixture (16×16 images, 2 groups of 2 layers) keeps this fast under qemu.
    let model = dir.path().join("tiny.gguf");
    let options = QuantizeOptions::parse("f32", &[]).unwrap();
    Checkpoint::plan(&fixture("base"), &options)
        .unwrap()
        .write(&model, &mut |_| {})
        .unwrap();
    let run = latte(&[
        "bench",
        "-m",
        model.to_str().unwrap(),
        "-t",
        "1",
        "-r",
        "1",
        "--tests",
        "pp8,tg4,img,vae,load",
        "--steps",
        "4",
        "-o",
        "json",
        "--peer-json",
        peer.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let rows = report["results"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["test"].as_str().unwrap()).collect();
    for expected in [
        "pp8",
        "tg4",
        "img",
        "img prefill",
        "img g0 step",
        "img g1 step",
        "img decode",
        "vae",
        "load",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    for row in rows {
        let mean = row["value"]["mean"].as_f64().unwrap();
        let switch = row["test"].as_str().unwrap().ends_with("switch");
        // A switch cost is a difference of two times and may come out negative.
        assert!(mean.is_finite() && (switch || mean > 0.0), "{row}");
        assert_eq!(row["threads"], 1);
    }
    let vae = rows.iter().find(|r| r["test"] == "vae").unwrap();
    assert_eq!(vae["peers"][0]["name"], "fake");
    assert!(report["machine"]["logical_cores"].as_u64().unwrap() >= 1);
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    assert_eq!(trace[0]["test"], "img");
    assert_eq!(trace[0]["steps"].as_array().unwrap().len(), 4);
}

#[test]
fn markdown_and_csv_render() {
    let md = latte(&["bench", "-t", "1", "-r", "1", "--tests", "pp4"]);
    assert!(md.status.success(), "{}", stderr(&md));
    let text = String::from_utf8(md.stdout).unwrap();
    assert!(text.contains("| pp4 | 1 | t/s |"), "{text}");
    let csv = latte(&["bench", "-t", "1", "-r", "1", "--tests", "tg2", "-o", "csv"]);
    assert!(csv.status.success(), "{}", stderr(&csv));
    let text = String::from_utf8(csv.stdout).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
}

#[test]
fn bad_arguments_fail_clearly() {
    let unknown = latte(&["bench", "--tests", "pp512,fast"]);
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("unknown test 'fast'"));
    let reps = latte(&["bench", "-r", "0", "--tests", "pp4"]);
    assert_eq!(reps.status.code(), Some(1));
    assert!(stderr(&reps).contains("--reps"));
    // User numbers are bounded before anything is allocated or started.
    for (args, expected) in [
        (vec!["-r", "100000000"], "--reps"),
        (vec!["--steps", "1000000000"], "--steps"),
        (vec!["-t", "0"], "cores"),
        (vec!["-t", "100000"], "cores"),
        (vec!["--tests", "pp100000000"], "context"),
    ] {
        let mut all = vec!["bench", "--tests", "pp4"];
        all.extend(args.iter().copied());
        let run = latte(&all);
        assert_eq!(run.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&run).contains(expected),
            "{args:?}: {}",
            stderr(&run)
        );
        assert_eq!(stderr(&run).trim().lines().count(), 1, "{args:?}: one line");
    }
    let missing = latte(&[
        "bench",
        "--tests",
        "pp4",
        "--peer-json",
        "/nonexistent/peer.json",
    ]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("/nonexistent/peer.json"));
    let no_model = latte(&["bench", "-m", "/nonexistent/model.gguf", "--tests", "pp4"]);
    assert_eq!(no_model.status.code(), Some(1));
    assert!(stderr(&no_model).contains("/nonexistent/model.gguf"));
}
