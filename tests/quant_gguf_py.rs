//! Bit-exactness against gguf-py, an independent Python implementation of ggml's formats: the
//! fixtures in `tests/fixtures/quant/` are gguf-py's `quantize` / `dequantize` outputs for
//! deterministic inputs (written by `tools/make_quant_fixtures.py`; see its docstring for the
//! layout). gguf-py has no K-quant quantizer, so Q4_K / Q5_K / Q6_K are checked here for
//! dequantization only (ggml itself is their quantizer oracle, in `ggml_peer_quant.rs`).

use std::path::PathBuf;

use latte::dtype::TensorType;
use latte::quant;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/quant")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn manifest_types(key: &str) -> Vec<TensorType> {
    let manifest: serde_json::Value = serde_json::from_slice(&fixture("manifest.json")).unwrap();
    manifest[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| TensorType::from_name(n.as_str().unwrap()).unwrap())
        .collect()
}

#[test]
fn quantize_matches_gguf_py() {
    let input = floats(&fixture("input.f32"));
    let types = manifest_types("quantized");
    assert_eq!(types.len(), 7, "F16, BF16 and the five legacy types");
    for ty in types {
        let expected = fixture(&format!("{}.bin", ty.name().to_lowercase()));
        let mut ours = vec![0u8; expected.len()];
        quant::quantize(ty, &input, &mut ours).unwrap();
        let bb = ty.block_bytes();
        if let Some(i) = ours
            .chunks(bb)
            .zip(expected.chunks(bb))
            .position(|(a, b)| a != b)
        {
            panic!(
                "{ty}: block {i} differs\n ours    {:?}\n gguf-py {:?}\n input {:?}",
                &ours[i * bb..(i + 1) * bb],
                &expected[i * bb..(i + 1) * bb],
                &input[i * ty.block_size()..(i + 1) * ty.block_size()]
            );
        }
    }
}

#[test]
fn dequantize_matches_gguf_py() {
    let types = manifest_types("dequantized");
    assert_eq!(types.len(), 10, "every computable type but F32");
    for ty in types {
        let name = ty.name().to_lowercase();
        let blocks = fixture(&format!("{name}.bin"));
        let expected = floats(&fixture(&format!("{name}.f32")));
        let mut ours = vec![0f32; expected.len()];
        quant::dequantize(ty, &blocks, &mut ours).unwrap();
        for (i, (a, b)) in ours.iter().zip(&expected).enumerate() {
            // A NaN made by arithmetic (0 · inf, from an infinite f16 scale) takes its sign from
            // the FPU: negative on x86-64, where the fixtures were written, positive on aarch64.
            // ggml computes it with the same instruction, so only "is NaN" is portable.
            if a.is_nan() && b.is_nan() {
                continue;
            }
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{ty}: value {i}: ours {a}, gguf-py {b}"
            );
        }
    }
}
