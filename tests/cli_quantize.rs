//! `latte quantize` and `latte info` end to end, through the binary: types chosen per tensor, fallbacks,
//! metadata, expert-group placement, byte equality with the reference quantizers (which
//! `tests/ggml_peer_quant.rs` and `tests/quant_gguf_py.rs` check against ggml and gguf-py), and the
//! error contract (one line naming the file, non-zero exit, no output left behind).

use std::path::{Path, PathBuf};

use latte::dtype::TensorType;
use latte::gguf::{GgufBuilder, GgufFile, MetadataValue};
use latte::model::expert_groups::{GROUP_ALIGNMENT, KEY_GROUP_COUNT, KEY_LAYER_COUNT};
use latte::quant;
use latte_bin::latte;

#[path = "latte_bin/mod.rs"]
mod latte_bin;

/// (name, dims in ggml order) of the input model: F32 weights of assorted shapes.
const TENSORS: &[(&str, &[u64])] = &[
    ("token_embd.weight", &[512, 6]),
    ("blk.0.attn_norm.weight", &[512]),
    ("blk.0.attn_q.weight", &[512, 4]),
    ("blk.0.ffn_down.weight", &[96, 3]), // rows of 96: no K-quant block fits
    ("blk.0.odd.weight", &[40, 2]),      // rows of 40: no block fits at all
    ("flow.blk.0.attn_q.weight", &[256, 2]),
    ("flow.blk.0.attn_norm.weight", &[256]),
    ("flow.blk.1.attn_q.weight", &[256, 2]),
    ("flow.head.weight", &[256, 3]),
];

fn values(seed: usize, n: usize) -> Vec<f32> {
    // Deterministic, varied magnitudes, both signs.
    (0..n)
        .map(|i| {
            let x = ((i * 7919 + seed * 104729) % 1000) as f32 / 1000.0 - 0.5;
            x * (1.0 + (i % 13) as f32)
        })
        .collect()
}

fn write_input(dir: &Path) -> PathBuf {
    let path = dir.join("model-f32.gguf");
    let mut builder = GgufBuilder::new();
    builder
        .push_metadata(
            "general.architecture",
            MetadataValue::String("latte-flow".into()),
        )
        .unwrap();
    builder
        .push_metadata(KEY_LAYER_COUNT, MetadataValue::U32(2))
        .unwrap();
    builder
        .push_metadata(KEY_GROUP_COUNT, MetadataValue::U32(2))
        .unwrap();
    for (name, dims) in TENSORS {
        if name.starts_with("flow.blk.") && name.ends_with("attn_q.weight") {
            builder
                .push_tensor_on_boundary(*name, TensorType::F32, dims, GROUP_ALIGNMENT)
                .unwrap();
        } else {
            builder.push_tensor(*name, TensorType::F32, dims).unwrap();
        }
    }
    let mut writer = builder.create(&path).unwrap();
    for (seed, (name, dims)) in TENSORS.iter().enumerate() {
        let data = values(seed, dims.iter().product::<u64>() as usize);
        writer
            .write_tensor(name, bytemuck::cast_slice(&data))
            .unwrap();
    }
    writer.finish().unwrap();
    path
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn quantize_matches_reference_quantizers_tensor_by_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path());
    let output = dir.path().join("model-q4_k.gguf");
    let run = latte(&[
        "quantize",
        path_str(&input),
        path_str(&output),
        "--type",
        "q4_k",
        "--tensor-type",
        "attn_q=q8_0",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("blk.0.ffn_down.weight: Q4_K -> Q5_0"),
        "{stderr}"
    );
    assert!(stderr.contains("blk.0.odd.weight: Q4_K -> F16"), "{stderr}");

    let source = GgufFile::open(&input).unwrap();
    let result = GgufFile::open(&output).unwrap();
    let expected_types = [
        TensorType::Q4_K,
        TensorType::F32,
        TensorType::Q8_0,
        TensorType::Q5_0,
        TensorType::F16,
        TensorType::Q8_0,
        TensorType::F32,
        TensorType::Q8_0,
        TensorType::Q4_K,
    ];
    for ((name, _), ty) in TENSORS.iter().zip(expected_types) {
        let before = source.tensor(name).unwrap();
        let after = result.tensor(name).unwrap();
        assert_eq!(after.ty(), ty, "{name}");
        assert_eq!(after.dims(), before.dims(), "{name}");
        let mut expected = vec![0u8; after.bytes().len()];
        for (row, dst) in expected.chunks_mut(after.row_bytes()).enumerate() {
            let src = &before.as_f32().unwrap()[row * before.row_len()..][..before.row_len()];
            quant::quantize(ty, src, dst).unwrap();
        }
        assert!(
            after.bytes() == expected.as_slice(),
            "{name}: bytes differ from the reference"
        );
    }

    // Metadata is carried over, with the file type and quantization version set.
    assert_eq!(
        result.get("general.architecture").and_then(|v| v.as_str()),
        Some("latte-flow")
    );
    assert_eq!(
        result.get("general.file_type").and_then(|v| v.as_u32()),
        Some(14)
    );
    assert_eq!(
        result
            .get("general.quantization_version")
            .and_then(|v| v.as_u32()),
        Some(2)
    );

    // Each expert group still starts on a 16 KiB boundary.
    for name in ["flow.blk.0.attn_q.weight", "flow.blk.1.attn_q.weight"] {
        let info = result.tensor_info(name).unwrap();
        assert_eq!(
            info.offset % GROUP_ALIGNMENT,
            0,
            "{name} at {}",
            info.offset
        );
    }
}

#[test]
fn info_shows_tensors_prefixes_and_groups() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path());
    let run = latte(&["info", path_str(&input)]);
    assert!(
        run.status.success(),
        "{:?} {}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let text = String::from_utf8_lossy(&run.stdout);
    // 9 tensors and the 2 padding tensors before the two group boundaries.
    assert!(text.contains("tensors: 11 (2 of them"), "{text}");
    assert!(text.contains("blk.0.ffn_down.weight"), "{text}");
    assert!(text.contains("expert groups: 2"), "{text}");

    let run = latte(&["info", "--json", path_str(&input)]);
    assert!(run.status.success());
    let json: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let groups = json["expert_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    for group in groups {
        let start = group["byte_range"][0].as_u64().unwrap();
        assert_eq!(start % GROUP_ALIGNMENT, 0);
    }
    let totals = json["prefix_totals"].as_array().unwrap();
    let flow = totals.iter().find(|t| t["prefix"] == "flow").unwrap();
    assert_eq!(flow["tensors"], 4);
    assert_eq!(json["metadata"][KEY_GROUP_COUNT], 2);
}

#[test]
fn errors_name_the_file_exit_non_zero_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path());
    let output = dir.path().join("out.gguf");
    let listing = |dir: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let before = listing(dir.path());

    let missing = dir.path().join("missing.gguf");
    let run = latte(&[
        "quantize",
        path_str(&missing),
        path_str(&output),
        "--type",
        "q4_0",
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("missing.gguf"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");

    let corrupt = dir.path().join("corrupt.gguf");
    let mut bytes = std::fs::read(&input).unwrap();
    bytes.truncate(bytes.len() - 100);
    std::fs::write(&corrupt, &bytes).unwrap();
    let run = latte(&[
        "quantize",
        path_str(&corrupt),
        path_str(&output),
        "--type",
        "q4_0",
    ]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("corrupt.gguf"));

    for bad in [
        vec!["--type", "q9_9"],
        vec!["--type", "q2_k"],
        vec!["--type", "q4_0", "--tensor-type", "x"],
    ] {
        let mut args = vec!["quantize", path_str(&input), path_str(&output)];
        args.extend(bad.iter().copied());
        let run = latte(&args);
        assert!(!run.status.success(), "{bad:?}");
    }

    let run = latte(&[
        "quantize",
        path_str(&input),
        path_str(&input),
        "--type",
        "q4_0",
    ]);
    assert!(
        !run.status.success(),
        "overwriting the input must be refused"
    );

    // The OS's reason is printed once (the message and the error chain once showed it twice).
    let run = latte(&["info", path_str(&missing)]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
    // A directory given as a model says so.
    let run = latte(&["info", path_str(dir.path())]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("is a directory"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");

    let run = latte(&["info", path_str(&corrupt)]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("corrupt.gguf"));

    let mut after = listing(dir.path());
    after.retain(|name| name != "corrupt.gguf");
    assert_eq!(after, before, "no output or temporary file may remain");
}

/// An input of `layers` text layers (attn_v and ffn_down of 256-value rows) and a tied embedding.
fn write_layers(dir: &Path, layers: usize) -> PathBuf {
    let path = dir.join("layers-f32.gguf");
    let mut names = vec!["token_embd.weight".to_string()];
    for i in 0..layers {
        names.push(format!("blk.{i}.attn_v.weight"));
        names.push(format!("blk.{i}.ffn_down.weight"));
        names.push(format!("blk.{i}.attn_q.weight"));
    }
    let mut builder = GgufBuilder::new();
    for name in &names {
        builder
            .push_tensor(name, TensorType::F32, &[256, 2])
            .unwrap();
    }
    let mut writer = builder.create(&path).unwrap();
    for (seed, name) in names.iter().enumerate() {
        let data = values(seed, 512);
        writer
            .write_tensor(name, bytemuck::cast_slice(&data))
            .unwrap();
    }
    writer.finish().unwrap();
    path
}

/// llama-quantize's Q4_K_M on 8 layers: more bits (Q6_K) for attn_v and ffn_down on layers 0,
/// 3, 6 and 7 (`use_more_bits`: i < n/8, i ≥ 7n/8, (i − n/8) mod 3 = 2), Q6_K for the tied
/// embedding, Q4_K elsewhere; `general.file_type` 15 (LLAMA_FTYPE_MOSTLY_Q4_K_M). Q4_K_S gives
/// Q5_K to attn_v of layers 0–3 and ffn_down of layer 0.
#[test]
fn llama_quantize_types_mix_per_tensor_as_llama_quantize() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_layers(dir.path(), 8);
    let check = |preset: &str, file_type: u32, expected: &dyn Fn(&str, usize) -> TensorType| {
        let output = dir.path().join(format!("{preset}.gguf"));
        let run = latte(&["quantize", path_str(&input), path_str(&output), preset]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let file = GgufFile::open(&output).unwrap();
        assert_eq!(
            file.get("general.file_type").and_then(|v| v.as_u32()),
            Some(file_type),
            "{preset}"
        );
        // The tied embedding is the output projection: Q6_K, or Q8_0 in a Q8_0 file.
        let output_type = if preset == "Q8_0" {
            TensorType::Q8_0
        } else {
            TensorType::Q6_K
        };
        assert_eq!(
            file.tensor("token_embd.weight").unwrap().ty(),
            output_type,
            "{preset}"
        );
        for i in 0..8 {
            for kind in ["attn_v", "ffn_down", "attn_q"] {
                let name = format!("blk.{i}.{kind}.weight");
                assert_eq!(
                    file.tensor(&name).unwrap().ty(),
                    expected(kind, i),
                    "{preset} {name}"
                );
            }
        }
    };
    check("Q4_K_M", 15, &|kind, i| match (kind, i) {
        ("attn_v" | "ffn_down", 0 | 3 | 6 | 7) => TensorType::Q6_K,
        _ => TensorType::Q4_K,
    });
    check("q4_k_s", 14, &|kind, i| match (kind, i) {
        ("attn_v", 0..=3) | ("ffn_down", 0) => TensorType::Q5_K,
        _ => TensorType::Q4_K,
    });
    check("Q8_0", 7, &|_, _| TensorType::Q8_0);
    // A mixture llama.cpp has but latte cannot make is refused by name.
    let out = dir.path().join("q3.gguf");
    let run = latte(&["quantize", path_str(&input), path_str(&out), "Q3_K_M"]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("Q3_K"));
    assert!(!out.exists());
}

/// A device is written in place, never replaced; `-` streams the file to standard output.
#[cfg(unix)]
#[test]
fn outputs_to_devices_and_stdout_are_written_in_place() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path());
    let run = latte(&["quantize", path_str(&input), "/dev/null", "Q8_0"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let null = std::fs::metadata("/dev/null").unwrap();
    assert!(null.file_type().is_char_device(), "/dev/null was replaced");

    // The test harness gives the child a pipe as stdout.
    let run = latte(&["quantize", path_str(&input), "-", "Q8_0"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let streamed = GgufFile::from_bytes(run.stdout).unwrap();
    assert_eq!(
        streamed.tensor("blk.0.attn_q.weight").unwrap().ty(),
        TensorType::Q8_0
    );
}

/// The embedded demo model can be inspected without a file and saved as one.
#[test]
fn info_shows_and_writes_the_embedded_demo_model() {
    for args in [vec!["info"], vec!["info", "--demo"]] {
        let run = latte(&args);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let text = String::from_utf8_lossy(&run.stdout);
        assert!(text.starts_with("<embedded demo model>: GGUF v3"), "{text}");
        assert!(text.contains("flow.blk.0.attn_q.weight"), "{text}");
    }
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("demo.gguf");
    let run = latte(&["info", "--write-demo", path_str(&saved)]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo-f16.gguf");
    assert!(std::fs::read(&saved).unwrap() == std::fs::read(shipped).unwrap());
    let run = latte(&["info", path_str(&saved)]);
    assert!(run.status.success());
}
