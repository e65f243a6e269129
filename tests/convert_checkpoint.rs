//! `latte convert` on the reference fixtures (tools/reference/README.md's checkpoint layout):
//! F32 output equals the checkpoint exactly under llama.cpp's names (with the qkv and Conv3d splits
//! checked by hand-computed indices), a quantized conversion equals `latte quantize` of the F32
//! one byte for byte, and sharded input, the flat config layout, transformers-5 tensor names and
//! F16/BF16 inputs all give the file the canonical input gives. (gguf-py and ggml read the output:
//! tools/convert_check.py, tests/ggml_peer_convert.rs.)

mod convert_support;

use std::path::{Path, PathBuf};

use convert_support::*;
use latte::convert::quantize::{quantize_gguf, QuantizeOptions};
use latte::convert::{Checkpoint, ModelKind};
use latte::gguf::{is_padding_tensor, GgufFile, MetadataArray, MetadataValue};
use latte::model::expert_groups::{GroupLayout, GROUP_ALIGNMENT};

fn options(ty: &str) -> QuantizeOptions {
    QuantizeOptions::parse(ty, &[]).unwrap()
}

fn convert(dir: &Path, ty: &str, out: &Path) -> Checkpoint {
    let checkpoint = Checkpoint::plan(dir, &options(ty)).unwrap();
    checkpoint.write(out, &mut |_| {}).unwrap();
    checkpoint
}

fn source(dir: &Path, file: &str, name: &str) -> Entry {
    read_st(&dir.join(file))
        .into_iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("{name} not in {file}"))
}

fn tensor_f32(f: &GgufFile, name: &str) -> Vec<f32> {
    f32s(f.tensor(name).unwrap_or_else(|| panic!("{name}")).bytes())
}

#[test]
fn f32_conversion_equals_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    for config in ["base", "alt", "no_tcra"] {
        let dir = fixture(config);
        let out = tmp.path().join(format!("{config}.gguf"));
        let checkpoint = convert(&dir, "f32", &out);
        assert_eq!(checkpoint.kind, ModelKind::LatteFlow);
        let f = GgufFile::open(&out).unwrap();

        // Whole tensors: bytes equal, shape reversed into ggml order.
        let whole = [
            (
                "model.safetensors",
                "model.embed_tokens.weight",
                "token_embd.weight",
            ),
            (
                "model.safetensors",
                "model.layers.3.mlp.down_proj.weight",
                "blk.3.ffn_down.weight",
            ),
            (
                "model.safetensors",
                "model.layers.1.self_attn.k_proj.bias",
                "blk.1.attn_k.bias",
            ),
            (
                "model.safetensors",
                "visual.merger.mlp.2.weight",
                "mm.2.weight",
            ),
            (
                "model.safetensors",
                "visual.merger.ln_q.bias",
                "v.post_ln.bias",
            ),
            (
                "model.safetensors",
                "visual.blocks.1.mlp.fc1.weight",
                "v.blk.1.ffn_up.weight",
            ),
            (
                "generation/model.safetensors",
                "layers.3.modulation.weight",
                "flow.blk.3.modulation.weight",
            ),
            (
                "generation/model.safetensors",
                "layers.0.tcra_gate.bias",
                "flow.blk.0.tcra_gate.bias",
            ),
            (
                "autoencoder/diffusion_pytorch_model.safetensors",
                "decoder.conv_in.weight",
                "dcae.conv_in.weight",
            ),
        ];
        for (file, src, dst) in whole {
            let e = source(&dir, file, src);
            let info = f.tensor_info(dst).unwrap();
            let mut reversed = e.shape.clone();
            reversed.reverse();
            assert_eq!(info.dims, reversed, "{config} {dst}");
            assert_eq!(
                f.tensor(dst).unwrap().bytes(),
                &e.bytes[..],
                "{config} {dst}"
            );
        }

        // qkv [3E, E] → q, k, v row blocks.
        let qkv = f32s(&source(&dir, "model.safetensors", "visual.blocks.1.attn.qkv.weight").bytes);
        let e = 32;
        for (i, part) in ["attn_q", "attn_k", "attn_v"].iter().enumerate() {
            let got = tensor_f32(&f, &format!("v.blk.1.{part}.weight"));
            assert_eq!(got, qkv[i * e * e..(i + 1) * e * e], "{part}");
        }
        // Conv3d [E, 3, 2, 14, 14] → one [E, 3, 14, 14] kernel per temporal slice.
        let patch =
            f32s(&source(&dir, "model.safetensors", "visual.patch_embed.proj.weight").bytes);
        for (t, name) in ["v.patch_embd.weight", "v.patch_embd.weight.1"]
            .iter()
            .enumerate()
        {
            let got = tensor_f32(&f, name);
            assert_eq!(f.tensor_info(name).unwrap().dims, vec![14, 14, 3, 32]);
            for oc in 0..e * 3 {
                for k in 0..196 {
                    assert_eq!(got[oc * 196 + k], patch[(oc * 2 + t) * 196 + k], "{name}");
                }
            }
        }

        // Groups: contiguous, on 16 KiB, packed back to back as llama.cpp demands.
        let layout = GroupLayout::from_file(&f).unwrap().unwrap();
        let ranges = layout.ranges(f.tensor_infos()).unwrap();
        for r in &ranges {
            assert_eq!(r.bytes.start % GROUP_ALIGNMENT, 0);
        }
        for pair in f.tensor_infos().windows(2) {
            assert_eq!(
                pair[0].offset + pair[0].n_bytes.next_multiple_of(32),
                pair[1].offset
            );
        }
        // Nothing else besides padding is in the file.
        let real = f
            .tensor_infos()
            .iter()
            .filter(|t| !is_padding_tensor(&t.name))
            .count();
        assert_eq!(real, checkpoint.tensors.len());
    }
}

#[test]
fn metadata_carries_keys_tokenizer_and_switches() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("alt.gguf");
    convert(&fixture("alt"), "f16", &out);
    let f = GgufFile::open(&out).unwrap();
    let s = |k: &str| {
        f.get(k)
            .unwrap_or_else(|| panic!("{k}"))
            .as_str()
            .unwrap()
            .to_string()
    };
    let u = |k: &str| f.get(k).unwrap_or_else(|| panic!("{k}")).as_u64().unwrap();
    assert_eq!(s("general.architecture"), "qwen2vl");
    assert_eq!(u("qwen2vl.block_count"), 4);
    assert_eq!(u("qwen2vl.embedding_length"), 64);
    assert_eq!(
        f.get("qwen2vl.rope.dimension_sections"),
        Some(&MetadataValue::Array(MetadataArray::I32(vec![2, 3, 3, 0])))
    );
    assert_eq!(u("clip.vision.block_count"), 2);
    assert_eq!(u("clip.vision.image_min_pixels"), 3136);
    assert_eq!(u("clip.vision.image_max_pixels"), 50176);
    assert_eq!(s("tokenizer.ggml.model"), "gpt2");
    let tokens = f.get("tokenizer.ggml.tokens").unwrap().as_array().unwrap();
    assert_eq!(tokens.len(), 300);
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixture("alt").join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        s("tokenizer.chat_template"),
        config["chat_template"].as_str().unwrap()
    );
    assert_eq!(u("tokenizer.ggml.eos_token_id"), 2, "<|im_end|>");
    assert_eq!(u("general.file_type"), 1);
    // Every switch of generation/config.json.
    assert_eq!(s("latte.model_kind"), "latte-flow");
    assert_eq!(s("latte.flow.ctx_kv"), "replica");
    assert_eq!(s("latte.flow.img_pos"), "rope1d");
    assert_eq!(s("latte.flow.tcra"), "post_softmax");
    assert_eq!(
        f.get("latte.flow.per_group_head").unwrap().as_bool(),
        Some(true)
    );
    assert_eq!(f.get("latte.flow.time_shift").unwrap().as_f64(), Some(3.0));
    assert_eq!(
        f.get("latte.flow.group_boundaries"),
        Some(&MetadataValue::Array(MetadataArray::F64(vec![
            0.0, 0.35, 1.0
        ])))
    );
    assert_eq!(u("latte.flow.group_count"), 2);
    assert_eq!(u("latte.flow.layer_count"), 4);
    assert!(s("latte.dcae.config_json").contains("AutoencoderDC"));
    // Untied: lm_head is the output; per-group heads sit in their groups.
    assert!(f.tensor("output.weight").is_some());
    let layout = GroupLayout::from_file(&f).unwrap().unwrap();
    let ranges = layout.ranges(f.tensor_infos()).unwrap();
    let last = *ranges[1].tensors.last().unwrap();
    assert!(f.tensor_infos()[last].name.starts_with("flow.group.1."));
    // Tied: no output tensor.
    let tied = tmp.path().join("base.gguf");
    convert(&fixture("base"), "f16", &tied);
    assert!(GgufFile::open(&tied)
        .unwrap()
        .tensor("output.weight")
        .is_none());
}

#[test]
fn quantized_conversion_equals_quantize_of_the_f32_conversion() {
    let tmp = tempfile::tempdir().unwrap();
    for (config, ty) in [("base", "q4_0"), ("alt", "q4_k"), ("no_tcra", "bf16")] {
        let f32_out = tmp.path().join(format!("{config}-f32.gguf"));
        let direct = tmp.path().join(format!("{config}-{ty}.gguf"));
        let via = tmp.path().join(format!("{config}-{ty}-via.gguf"));
        convert(&fixture(config), "f32", &f32_out);
        let checkpoint = convert(&fixture(config), ty, &direct);
        quantize_gguf(&f32_out, &via, &options(ty)).unwrap();
        assert!(
            std::fs::read(&direct).unwrap() == std::fs::read(&via).unwrap(),
            "{config} {ty}"
        );
        // K-quant rows of 64 or 96 fall back, conv kernels (rows of 3 or 14) too.
        if ty == "q4_k" {
            assert!(checkpoint.tensors.iter().any(|t| t.plan.fell_back()));
        }
    }
}

/// A copy of `config`'s checkpoint at `<root>/checkpoint` (same directory name, so the same
/// `general.name`), changed by `edit`.
fn variant(root: &Path, config: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let dir = root.join("checkpoint");
    copy_dir(&fixture(config), &dir);
    edit(&dir);
    dir
}

fn assert_same_output(a: &Path, b: &Path, ty: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (oa, ob) = (tmp.path().join("a.gguf"), tmp.path().join("b.gguf"));
    convert(a, ty, &oa);
    convert(b, ty, &ob);
    assert!(std::fs::read(oa).unwrap() == std::fs::read(ob).unwrap());
}

#[test]
fn sharded_flat_and_renamed_inputs_give_the_same_file() {
    let tmp = tempfile::tempdir().unwrap();
    let canonical = variant(&tmp.path().join("canonical"), "alt", |_| {});

    let sharded = variant(&tmp.path().join("sharded"), "alt", |dir| {
        let entries = read_st(&dir.join("model.safetensors"));
        std::fs::remove_file(dir.join("model.safetensors")).unwrap();
        let (a, b) = entries.split_at(entries.len() / 2);
        let mut map = serde_json::Map::new();
        for (shard, part) in [
            ("model-00001-of-00002.safetensors", a),
            ("model-00002-of-00002.safetensors", b),
        ] {
            write_st(&dir.join(shard), part);
            for e in part {
                map.insert(e.name.clone(), shard.into());
            }
        }
        let index = serde_json::json!({"metadata": {}, "weight_map": map});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    });
    assert_same_output(&canonical, &sharded, "q8_0");

    // The hub's flat config: text keys at the top level, rope_scaling.mrope_section.
    let flat = variant(&tmp.path().join("flat"), "alt", |dir| {
        let path = dir.join("config.json");
        let mut c: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let text = c["text_config"].take();
        for (k, v) in text.as_object().unwrap() {
            if k == "model_type" {
                continue;
            } else if k == "rope_parameters" {
                c["rope_theta"] = v["rope_theta"].clone();
                c["rope_scaling"] =
                    serde_json::json!({"type": "mrope", "mrope_section": v["mrope_section"]});
            } else {
                c[k] = v.clone();
            }
        }
        c.as_object_mut().unwrap().remove("text_config");
        std::fs::write(&path, c.to_string()).unwrap();
    });
    assert_same_output(&canonical, &flat, "f16");

    // Newer transformers' names: model.language_model.*, model.visual.*.
    let renamed = variant(&tmp.path().join("renamed"), "alt", |dir| {
        let path = dir.join("model.safetensors");
        let mut entries = read_st(&path);
        for e in &mut entries {
            if let Some(rest) = e.name.strip_prefix("model.") {
                e.name = format!("model.language_model.{rest}");
            } else if let Some(rest) = e.name.strip_prefix("visual.") {
                e.name = format!("model.visual.{rest}");
            }
        }
        write_st(&path, &entries);
    });
    assert_same_output(&canonical, &renamed, "f16");

    // The hub keeps the chat template in chat_template.json and the hub's vision config says
    // `in_chans`.
    let hub_files = variant(&tmp.path().join("hub_files"), "alt", |dir| {
        let path = dir.join("tokenizer_config.json");
        let mut c: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let template = c.as_object_mut().unwrap().remove("chat_template").unwrap();
        std::fs::write(&path, c.to_string()).unwrap();
        std::fs::remove_file(dir.join("chat_template.jinja")).unwrap();
        let json = serde_json::json!({ "chat_template": template });
        std::fs::write(dir.join("chat_template.json"), json.to_string()).unwrap();
        let path = dir.join("config.json");
        let mut c: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let vision = c["vision_config"].as_object_mut().unwrap();
        let channels = vision.remove("in_channels").unwrap();
        vision.insert("in_chans".into(), channels);
        std::fs::write(&path, c.to_string()).unwrap();
    });
    assert_same_output(&canonical, &hub_files, "f16");
}

/// Re-encodes every float tensor of every weight file of `dir` as `dtype`.
fn reencode(dir: &Path, dtype: &str) {
    for file in [
        "model.safetensors",
        "generation/model.safetensors",
        "autoencoder/diffusion_pytorch_model.safetensors",
    ] {
        let path = dir.join(file);
        let mut entries = read_st(&path);
        for e in &mut entries {
            let values = f32s(&e.bytes);
            e.bytes = match dtype {
                "F16" => values
                    .iter()
                    .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                    .collect(),
                _ => values
                    .iter()
                    .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                    .collect(),
            };
            e.dtype = dtype.into();
        }
        write_st(&path, &entries);
    }
}

#[test]
fn f16_and_bf16_inputs_widen_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    for dtype in ["F16", "BF16"] {
        let dir = variant(&tmp.path().join(dtype), "base", |dir| reencode(dir, dtype));
        let out = tmp.path().join(format!("{dtype}.gguf"));
        convert(&dir, "f32", &out);
        let f = GgufFile::open(&out).unwrap();
        let src = source(
            &fixture("base"),
            "model.safetensors",
            "model.layers.2.mlp.up_proj.weight",
        );
        let rounded: Vec<f32> = f32s(&src.bytes)
            .iter()
            .map(|&x| match dtype {
                "F16" => half::f16::from_f32(x).to_f32(),
                _ => half::bf16::from_f32(x).to_f32(),
            })
            .collect();
        assert_eq!(tensor_f32(&f, "blk.2.ffn_up.weight"), rounded, "{dtype}");
        // An F16 input converted to F16 is the input, bit for bit.
        if dtype == "F16" {
            let out16 = tmp.path().join("f16-f16.gguf");
            convert(&dir, "f16", &out16);
            let f16 = GgufFile::open(&out16).unwrap();
            let e = source(
                &dir,
                "model.safetensors",
                "model.layers.2.mlp.up_proj.weight",
            );
            assert_eq!(
                f16.tensor("blk.2.ffn_up.weight").unwrap().bytes(),
                &e.bytes[..]
            );
        }
    }
}

#[test]
fn a_plain_qwen2vl_becomes_an_understanding_model() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = variant(tmp.path(), "base", |dir| {
        std::fs::remove_dir_all(dir.join("generation")).unwrap();
        std::fs::remove_dir_all(dir.join("autoencoder")).unwrap();
        // A tied checkpoint may still carry lm_head; it is dropped, as llama.cpp does.
        let path = dir.join("model.safetensors");
        let mut entries = read_st(&path);
        let embed = entries
            .iter()
            .find(|e| e.name == "model.embed_tokens.weight")
            .unwrap();
        entries.push(Entry {
            name: "lm_head.weight".into(),
            dtype: embed.dtype.clone(),
            shape: embed.shape.clone(),
            bytes: embed.bytes.clone(),
        });
        write_st(&path, &entries);
    });
    let out = tmp.path().join("und.gguf");
    let checkpoint = convert(&dir, "q8_0", &out);
    assert_eq!(checkpoint.kind, ModelKind::Understanding);
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(
        f.get("latte.model_kind").unwrap().as_str(),
        Some("understanding")
    );
    assert!(f.get("latte.flow.group_count").is_none());
    assert!(f
        .tensor_infos()
        .iter()
        .all(|t| !t.name.starts_with("flow.") && !t.name.starts_with("dcae.")));
    assert!(f.tensor("output.weight").is_none());
    assert_eq!(
        f.get("general.quantization_version").unwrap().as_u64(),
        Some(2)
    );
}

#[test]
fn cli_dry_run_writes_nothing_and_convert_writes_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o.gguf");
    let run = latte(&[
        "convert",
        s(&fixture("base")),
        "-o",
        s(&out),
        "--type",
        "q4_k",
        "--dry-run",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(text.contains("expert group 1:"), "{text}");
    assert!(
        text.contains("predicted peak memory, latte generate"),
        "{text}"
    );
    assert!(text.contains("flow.blk.0.attn_q.weight"), "{text}");
    assert!(String::from_utf8_lossy(&run.stderr).contains("fell back"));
    assert!(!out.exists());

    let run = latte(&[
        "convert",
        s(&fixture("base")),
        "-o",
        s(&out),
        "--type",
        "q4_0",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(GgufFile::open(&out).is_ok());
    let info = latte(&["info", s(&out)]);
    assert!(String::from_utf8_lossy(&info.stdout).contains("expert groups: 2"));
}

#[test]
fn synthetic_models_have_the_converter_layout_and_say_so() {
    use latte::convert::synthetic::SyntheticModel;
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a.gguf"), tmp.path().join("b.gguf"));
    let model = SyntheticModel::plan("latte-flow-tiny", &options("q4_0"), 7).unwrap();
    model.write(&a, &mut |_| {}).unwrap();
    SyntheticModel::plan("latte-flow-tiny", &options("q4_0"), 7)
        .unwrap()
        .write(&b, &mut |_| {})
        .unwrap();
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "seeded"
    );
    let f = GgufFile::open(&a).unwrap();
    assert!(f
        .get("latte.synthetic")
        .unwrap()
        .as_str()
        .unwrap()
        .contains("random"));
    let layout = GroupLayout::from_file(&f).unwrap().unwrap();
    assert_eq!(layout.group_count, 2);
    for r in layout.ranges(f.tensor_infos()).unwrap() {
        assert_eq!(r.bytes.start % GROUP_ALIGNMENT, 0);
    }
    // Same names and types as a conversion plans; norms are ones, weights are not constant.
    assert!(f.tensor("v.patch_embd.weight.1").is_some());
    assert!(f.tensor("dcae.conv_in.weight").is_some());
    let norm = f32s(f.tensor("blk.0.attn_norm.weight").unwrap().bytes());
    assert!(norm.iter().all(|&x| x == 1.0));
    let bias = f32s(f.tensor("blk.0.attn_q.bias").unwrap().bytes());
    assert!(bias.iter().any(|&x| x != bias[0]));
    // The full-size plan has the paper's shapes (planned only: writing it takes GBs).
    let big = SyntheticModel::plan("latte-flow-2b", &options("q4_0"), 0).unwrap();
    let dims = |name: &str| {
        big.tensors
            .iter()
            .find(|t| t.plan.name == name)
            .unwrap_or_else(|| panic!("{name}"))
            .dims
            .clone()
    };
    assert_eq!(dims("token_embd.weight"), vec![1536, 151_936]);
    assert_eq!(dims("flow.blk.27.ffn_down.weight"), vec![8960, 1536]);
    assert_eq!(dims("v.blk.31.attn_q.weight"), vec![1280, 1280]);
    assert_eq!(big.tensors.iter().filter(|t| t.starts_group).count(), 4);
    assert!(SyntheticModel::plan("nope", &options("f16"), 0).is_err());
}
