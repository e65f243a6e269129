//! `latte quantize` against ggml itself: every tensor of the output file equals, byte for byte, what
//! `ggml_quantize_chunk` (no importance matrix: ggml's `quantize_row_*_ref`) makes of the input's
//! values, for every target type, including the fallback types and the F32/F16/BF16 conversions.
#![cfg(feature = "ggml-peer")]

use latte::convert::quantize::{quantize_gguf, QuantizeOptions};
use latte::dtype::TensorType;
use latte::gguf::{GgufBuilder, GgufFile};
#[path = "common/ggml_peer.rs"]
mod ggml_peer;

use ggml_peer::ggml_quantize;

/// (name, dims): full K-quant rows, rows that force the first fallback, rows that force F16, a vector.
const TENSORS: &[(&str, &[u64])] = &[
    ("a.weight", &[512, 3]),
    ("b.weight", &[96, 2]),
    ("c.weight", &[40, 2]),
    ("d.norm", &[256]),
];

#[test]
fn every_output_tensor_equals_ggml_quantize_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.gguf");
    let mut builder = GgufBuilder::new();
    for (name, dims) in TENSORS {
        builder.push_tensor(*name, TensorType::F32, dims).unwrap();
    }
    let mut writer = builder.create(&input).unwrap();
    let mut state = 0x5eed_u64;
    for (name, dims) in TENSORS {
        let n = dims.iter().product::<u64>() as usize;
        let data: Vec<f32> = (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 3.0
            })
            .collect();
        writer
            .write_tensor(name, bytemuck::cast_slice(&data))
            .unwrap();
    }
    writer.finish().unwrap();
    let source = GgufFile::open(&input).unwrap();

    for target in TensorType::COMPUTABLE {
        let output = dir.path().join(format!("out-{target}.gguf"));
        let options = QuantizeOptions::parse(target.name(), &[]).unwrap();
        quantize_gguf(&input, &output, &options).unwrap();
        let result = GgufFile::open(&output).unwrap();
        for (name, _) in TENSORS {
            let before = source.tensor(name).unwrap();
            let after = result.tensor(name).unwrap();
            let expected = ggml_quantize(after.ty(), before.as_f32().unwrap(), before.row_len());
            assert!(
                after.bytes() == expected.as_slice(),
                "{target}: {name} ({})",
                after.ty()
            );
        }
    }
}
