//! Every way a checkpoint can be wrong gives a non-zero exit, a message naming the file (and the
//! tensor or key), and no output file: missing and unexpected tensors, shapes that contradict the
//! config, unsupported dtypes, malformed JSON, an index naming a missing shard, truncated and
//! hostile safetensors headers.

mod convert_support;

use std::path::Path;

use convert_support::*;

/// Copies the `base` fixture, applies `edit`, runs `latte convert`, and checks the failure.
fn fails(case: &str, edit: impl FnOnce(&Path), expected: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");
    copy_dir(&fixture("base"), &dir);
    edit(&dir);
    let out = tmp.path().join("out.gguf");
    let run = latte(&["convert", s(&dir), "-o", s(&out), "--quiet"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{case}: succeeded");
    for part in expected {
        assert!(stderr.contains(part), "{case}: '{part}' not in: {stderr}");
    }
    assert_eq!(stderr.lines().count(), 1, "{case}: one line: {stderr}");
    if std::env::var_os("LATTE_SHOW_ERRORS").is_some() {
        eprintln!("{case}: {stderr}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "checkpoint")
        .collect();
    assert!(leftovers.is_empty(), "{case}: left {leftovers:?}");
}

fn edit_tensors(dir: &Path, file: &str, f: impl FnOnce(&mut Vec<Entry>)) {
    let path = dir.join(file);
    let mut entries = read_st(&path);
    f(&mut entries);
    write_st(&path, &entries);
}

fn raw_header(dir: &Path, file: &str, header: &[u8], data_len: usize) {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.resize(out.len() + data_len, 0);
    std::fs::write(dir.join(file), out).unwrap();
}

#[test]
fn missing_unexpected_and_misshapen_tensors() {
    fails(
        "missing",
        |d| {
            edit_tensors(d, "model.safetensors", |e| {
                e.retain(|t| t.name != "model.layers.2.mlp.up_proj.weight")
            })
        },
        &[
            "model.safetensors",
            "missing tensor 'model.layers.2.mlp.up_proj.weight'",
        ],
    );
    fails(
        "missing replica tensor",
        |d| {
            edit_tensors(d, "generation/model.safetensors", |e| {
                e.retain(|t| t.name != "layers.3.tcra_gate.bias")
            })
        },
        &["generation/model.safetensors", "layers.3.tcra_gate.bias"],
    );
    fails(
        "unexpected",
        |d| {
            edit_tensors(d, "model.safetensors", |e| {
                e.push(Entry {
                    name: "model.layers.9.extra.weight".into(),
                    dtype: "F32".into(),
                    shape: vec![2],
                    bytes: vec![0; 8],
                })
            })
        },
        &[
            "model.safetensors",
            "unexpected tensor 'model.layers.9.extra.weight'",
        ],
    );
    fails(
        "unexpected in autoencoder",
        |d| {
            edit_tensors(d, "autoencoder/diffusion_pytorch_model.safetensors", |e| {
                e.push(Entry {
                    name: "quant_conv.weight".into(),
                    dtype: "F32".into(),
                    shape: vec![2],
                    bytes: vec![0; 8],
                })
            })
        },
        &["diffusion_pytorch_model.safetensors", "quant_conv.weight"],
    );
    fails(
        "shape",
        |d| {
            edit_tensors(d, "model.safetensors", |e| {
                let t = e
                    .iter_mut()
                    .find(|t| t.name == "model.layers.0.self_attn.q_proj.weight")
                    .unwrap();
                t.shape = vec![32, 128];
            })
        },
        &[
            "model.safetensors",
            "model.layers.0.self_attn.q_proj.weight",
            "[32, 128]",
            "[64, 64]",
        ],
    );
    fails(
        "config contradicts replica",
        |d| {
            let p = d.join("generation/config.json");
            let text = std::fs::read_to_string(&p)
                .unwrap()
                .replace("\"intermediate_size\": 96", "\"intermediate_size\": 128");
            std::fs::write(p, text).unwrap();
        },
        // The replica's tensors are the VLM's shape, so the contradiction shows there first.
        &[
            "generation/model.safetensors",
            "layers.0.gate_proj.weight",
            "the config says [128, 64]",
        ],
    );
    fails(
        "decoder tensor of rank 5",
        |d| {
            edit_tensors(d, "autoencoder/diffusion_pytorch_model.safetensors", |e| {
                e.push(Entry {
                    name: "decoder.odd.weight".into(),
                    dtype: "F32".into(),
                    shape: vec![1, 1, 1, 1, 2],
                    bytes: vec![0; 8],
                })
            })
        },
        &[
            "diffusion_pytorch_model.safetensors",
            "decoder.odd.weight",
            "1 to 4",
        ],
    );
    fails(
        "dtype",
        |d| {
            edit_tensors(d, "model.safetensors", |e| {
                e.iter_mut()
                    .find(|t| t.name == "model.norm.weight")
                    .unwrap()
                    .dtype = "I32".into()
            })
        },
        &["model.safetensors", "model.norm.weight", "I32"],
    );
}

#[test]
fn malformed_json_and_missing_shard() {
    fails(
        "config json",
        |d| std::fs::write(d.join("config.json"), "{\"model_type\": \"qwen2_vl\", ").unwrap(),
        &["config.json", "malformed JSON"],
    );
    fails(
        "tokenizer json",
        |d| std::fs::write(d.join("tokenizer.json"), "[]").unwrap(),
        &["tokenizer.json", "model.type"],
    );
    fails(
        "unknown pre-tokenizer",
        |d| {
            // A Metaspace (SentencePiece-style) pre-tokenizer is none latte can reproduce.
            let p = d.join("tokenizer.json");
            let mut tok: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            tok["pre_tokenizer"] = serde_json::json!({"type": "Metaspace", "replacement": "▁"});
            std::fs::write(p, tok.to_string()).unwrap();
        },
        &["tokenizer.json", "pre-tokenizer", "Metaspace"],
    );
    fails(
        "unknown normalizer",
        |d| {
            let p = d.join("tokenizer.json");
            let mut tok: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            tok["normalizer"] = serde_json::json!({"type": "Lowercase"});
            std::fs::write(p, tok.to_string()).unwrap();
        },
        &["tokenizer.json", "normalizer", "Lowercase"],
    );
    fails(
        "bad switch",
        |d| {
            let p = d.join("generation/config.json");
            let text = std::fs::read_to_string(&p)
                .unwrap()
                .replace("\"pre_softmax\"", "\"sideways\"");
            std::fs::write(p, text).unwrap();
        },
        &["generation/config.json", "tcra", "sideways"],
    );
    fails(
        "missing shard",
        |d| {
            let entries = read_st(&d.join("model.safetensors"));
            std::fs::remove_file(d.join("model.safetensors")).unwrap();
            write_st(&d.join("model-00001-of-00002.safetensors"), &entries);
            let mut map = serde_json::Map::new();
            for (i, e) in entries.iter().enumerate() {
                let shard = if i == 0 {
                    "model-00002-of-00002.safetensors"
                } else {
                    "model-00001-of-00002.safetensors"
                };
                map.insert(e.name.clone(), shard.into());
            }
            let index = serde_json::json!({"weight_map": map});
            std::fs::write(d.join("model.safetensors.index.json"), index.to_string()).unwrap();
        },
        &[
            "model.safetensors.index.json",
            "model-00002-of-00002.safetensors",
            "does not exist",
        ],
    );
}

#[test]
fn truncated_and_hostile_safetensors() {
    let file = "generation/model.safetensors";
    fails(
        "truncated",
        |d| {
            let bytes = std::fs::read(d.join(file)).unwrap();
            std::fs::write(d.join(file), &bytes[..bytes.len() / 2]).unwrap();
        },
        &[file, "outside"],
    );
    fails(
        "truncated header",
        |d| {
            let bytes = std::fs::read(d.join(file)).unwrap();
            std::fs::write(d.join(file), &bytes[..100]).unwrap();
        },
        &[file, "exceeds"],
    );
    fails(
        "header length overflows",
        |d| {
            let mut bytes = std::fs::read(d.join(file)).unwrap();
            bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            std::fs::write(d.join(file), bytes).unwrap();
        },
        &[file, "header length"],
    );
    fails(
        "offsets past the end",
        |d| {
            raw_header(d, file, br#"{"layers.0.q_proj.bias":{"dtype":"F32","shape":[64],"data_offsets":[18446744073709551360,18446744073709551616]}}"#, 16)
        },
        &[file],
    );
    fails(
        "offsets out of range",
        |d| {
            raw_header(
                d,
                file,
                br#"{"layers.0.q_proj.bias":{"dtype":"F32","shape":[64],"data_offsets":[0,256]}}"#,
                16,
            )
        },
        &[file, "layers.0.q_proj.bias", "outside"],
    );
    fails(
        "shape overflows",
        |d| {
            raw_header(d, file, br#"{"x":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}}"#, 16)
        },
        &[file, "overflows"],
    );
    fails(
        "header not JSON",
        |d| raw_header(d, file, b"\xff\xfe{{", 0),
        &[file, "JSON"],
    );
}

#[test]
fn output_may_not_replace_a_checkpoint_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");
    copy_dir(&fixture("base"), &dir);
    let target = dir.join("model.safetensors");
    let before = std::fs::read(&target).unwrap();
    let run = latte(&["convert", s(&dir), "-o", s(&target), "--quiet"]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("would replace a file of the checkpoint"));
    assert_eq!(std::fs::read(&target).unwrap(), before);
}

/// Rewrites the JSON file `file` of the checkpoint in `dir` with `f`.
fn edit_json(dir: &Path, file: &str, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join(file);
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    f(&mut value);
    std::fs::write(path, value.to_string()).unwrap();
}

/// What the loaders refuse, `convert` refuses before writing anything (the validation is the
/// loaders' own, run on the planned file): each case names the key and the file it came from.
#[test]
fn what_the_loaders_refuse_is_refused_at_convert() {
    use serde_json::json;
    let generation = "generation/config.json";
    let autoencoder = "autoencoder/config.json";
    fails(
        "rope theta zero",
        |d| {
            edit_json(d, "config.json", |v| {
                v["text_config"]["rope_parameters"]["rope_theta"] = json!(0.0)
            })
        },
        &["rope", "config.json"],
    );
    fails(
        "time shift negative",
        |d| edit_json(d, generation, |v| v["time_shift"] = json!(-1.0)),
        &["time_shift", "generation/config.json"],
    );
    fails(
        "layers not divisible into groups",
        |d| {
            edit_json(d, generation, |v| {
                v["num_groups"] = json!(3);
                v["group_boundaries"] = json!([0.0, 0.3, 0.6, 1.0]);
            })
        },
        &["generation/config.json", "group"],
    );
    fails(
        "zero scaling factor",
        |d| {
            edit_json(d, generation, |v| v["scaling_factor"] = json!(0.0));
            edit_json(d, autoencoder, |v| v["scaling_factor"] = json!(0.0));
        },
        &["scaling_factor"],
    );
    fails(
        "preprocessor std zero",
        |d| {
            edit_json(d, "preprocessor_config.json", |v| {
                v["image_std"] = json!([0.0, 0.26, 0.27])
            })
        },
        &["preprocessor_config.json", "std"],
    );
    fails(
        "patch sizes contradict",
        |d| {
            edit_json(d, "preprocessor_config.json", |v| {
                v["patch_size"] = json!(16)
            })
        },
        &[
            "preprocessor_config.json",
            "patch_size is 16",
            "vision_config.patch_size is 14",
        ],
    );
    fails(
        "image token outside the vocabulary",
        |d| edit_json(d, "config.json", |v| v["image_token_id"] = json!(100_000)),
        &["100000", "config.json"],
    );
    fails(
        "absurd vision depth",
        |d| {
            edit_json(d, "config.json", |v| {
                v["vision_config"]["depth"] = json!(1_000_000_000)
            })
        },
        &["config.json"],
    );
    fails(
        "unknown DC-AE block type",
        |d| {
            edit_json(d, autoencoder, |v| {
                v["decoder_block_types"] = json!("Sideways")
            })
        },
        &["autoencoder/config.json", "Sideways"],
    );
    fails(
        "DC-AE lengths disagree",
        |d| {
            edit_json(d, autoencoder, |v| {
                v["decoder_layers_per_block"] = json!([1, 1])
            })
        },
        &["autoencoder/config.json"],
    );
    fails(
        "absurd DC-AE channels",
        |d| {
            edit_json(d, autoencoder, |v| {
                v["decoder_block_out_channels"] = json!([8, 16, 4_000_000_000u64])
            })
        },
        &["autoencoder/config.json"],
    );
    fails(
        "merge of unknown tokens",
        |d| {
            edit_json(d, "tokenizer.json", |v| {
                v["model"]["merges"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!(["never", "seen"]))
            })
        },
        &["tokenizer.json", "merge"],
    );
    fails(
        "a million garbage merges",
        |d| {
            edit_json(d, "tokenizer.json", |v| {
                v["model"]["merges"] = (0..1_000_000)
                    .map(|i| json!([format!("x{i}"), "y"]))
                    .collect()
            })
        },
        &["tokenizer.json", "merge"],
    );
    fails(
        "empty chat template",
        |d| {
            std::fs::write(d.join("chat_template.jinja"), "").unwrap();
            edit_json(d, "tokenizer_config.json", |v| {
                v["chat_template"] = json!("")
            });
        },
        &["chat template", "empty"],
    );
    fails(
        "tensor named twice",
        |d| {
            raw_header(
                d,
                "generation/model.safetensors",
                br#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"x":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                16,
            )
        },
        &["generation/model.safetensors", "'x' is declared twice"],
    );
    fails(
        "a directory as a shard",
        |d| {
            std::fs::remove_file(d.join("generation/model.safetensors")).unwrap();
            std::fs::create_dir(d.join("generation/model.safetensors")).unwrap();
        },
        &["generation/model.safetensors", "is a directory"],
    );
}
