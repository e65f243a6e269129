//! `latte quantize` against ggml itself: every tensor of the output file equals, byte for byte, what
//! `ggml_quantize_chunk` (no importance matrix: ggml's `quantize_row_*_ref`) makes of the input's
//! values, for every target type, including the fallback types and the F32/F16/BF16 conversions.
#![cfg(feature = "ggml-peer")]

use latte::convert::quantize::{quantize_gguf, QuantizeOptions};
use latte::dtype::TensorType;
use latte::gguf::{GgufBuilder, GgufFile};
use llama_cpp_sys_2 as sys;

/// (name, dims): full K-quant rows, rows that force the first fallback, rows that force F16, a vector.
const TENSORS: &[(&str, &[u64])] = &[
    ("a.weight", &[512, 3]),
    ("b.weight", &[96, 2]),
    ("c.weight", &[40, 2]),
    ("d.norm", &[256]),
];

fn ggml_quantize(ty: TensorType, src: &[f32], row_len: usize) -> Vec<u8> {
    let n_rows = src.len() / row_len;
    let mut dst = vec![0u8; ty.row_bytes(row_len as u64).unwrap() as usize * n_rows];
    // SAFETY: `src` holds n_rows · row_len floats and `dst` exactly n_rows rows of `ty`, which is what
    // ggml_quantize_chunk reads and writes with start = 0 and no importance matrix.
    let written = unsafe {
        sys::ggml_quantize_chunk(
            ty.id() as sys::ggml_type,
            src.as_ptr(),
            dst.as_mut_ptr().cast(),
            0,
            n_rows as i64,
            row_len as i64,
            std::ptr::null(),
        )
    };
    assert_eq!(written, dst.len());
    dst
}

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
        let options = QuantizeOptions {
            target,
            rules: Vec::new(),
        };
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
