//! Writes a sample GGUF file with every metadata type, arrays (nested too), several tensor types
//! and a tensor on a 16 KiB boundary, for `tools/gguf_py_check.py` to read back with gguf-py.
//!
//! Usage: `cargo run --example write_sample_gguf -- OUT.gguf [ALIGNMENT]`
//!
//! The values are simple formulas that the Python script recomputes independently; keep the two
//! in step.

use anyhow::{bail, Context, Result};
use half::{bf16, f16};
use latte::dtype::TensorType;
use latte::gguf::{GgufBuilder, MetadataArray};

/// Byte `j` of the pattern-filled tensor number `k` (quantized tensors: raw block bytes).
fn pattern(k: usize, n: u64) -> Vec<u8> {
    (0..n)
        .map(|j| ((j * 37 + 11 * k as u64) % 251) as u8)
        .collect()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, alignment) = match args.as_slice() {
        [out] => (out.clone(), None),
        [out, a] => (out.clone(), Some(a.parse::<u32>().context("ALIGNMENT")?)),
        _ => bail!("usage: write_sample_gguf OUT.gguf [ALIGNMENT]"),
    };

    let mut b = GgufBuilder::new();
    if let Some(a) = alignment {
        b.set_alignment(a)?;
    }
    b.push_metadata("general.architecture", "latte-sample")?;
    b.push_metadata("sample.u8", 200u8)?;
    b.push_metadata("sample.i8", -100i8)?;
    b.push_metadata("sample.u16", 60000u16)?;
    b.push_metadata("sample.i16", -30000i16)?;
    b.push_metadata("sample.u32", 4_000_000_000u32)?;
    b.push_metadata("sample.i32", -2_000_000_000i32)?;
    b.push_metadata("sample.f32", -1.25f32)?;
    b.push_metadata("sample.bool", true)?;
    b.push_metadata("sample.string", "latte wrote this: ünïcödé ✓")?;
    b.push_metadata("sample.u64", u64::MAX - 1)?;
    b.push_metadata("sample.i64", i64::MIN + 1)?;
    b.push_metadata("sample.f64", std::f64::consts::PI)?;
    b.push_metadata("sample.arr.u8", vec![0u8, 1, 255])?;
    b.push_metadata("sample.arr.i8", vec![-128i8, 0, 127])?;
    b.push_metadata("sample.arr.u16", vec![0u16, 65535])?;
    b.push_metadata("sample.arr.i16", vec![-32768i16, 0, 32767])?;
    b.push_metadata("sample.arr.u32", vec![16u32, 24, 24, 0])?;
    b.push_metadata("sample.arr.i32", vec![-1i32, 2, -3])?;
    b.push_metadata("sample.arr.f32", vec![0.5f32, -0.25, 1024.0])?;
    b.push_metadata("sample.arr.bool", vec![true, false, true])?;
    b.push_metadata(
        "sample.arr.string",
        vec![
            "<s>".to_string(),
            "</s>".into(),
            "héllo".into(),
            String::new(),
        ],
    )?;
    b.push_metadata("sample.arr.u64", vec![1u64 << 63, 1])?;
    b.push_metadata("sample.arr.i64", vec![i64::MIN, -1])?;
    b.push_metadata("sample.arr.f64", vec![1e-300f64, -2.5])?;
    b.push_metadata(
        "sample.arr.nested",
        MetadataArray::Array(vec![
            MetadataArray::I32(vec![1, 2]),
            MetadataArray::I32(vec![3]),
        ]),
    )?;

    // F32: i * 0.5 - 3; F16: i / 4; BF16: (i - 16) / 8 (all exact in their types).
    let f32_data: Vec<u8> = (0..12)
        .flat_map(|i| (i as f32 * 0.5 - 3.0).to_le_bytes())
        .collect();
    let f16_data: Vec<u8> = (0..8)
        .flat_map(|i| f16::from_f32(i as f32 / 4.0).to_le_bytes())
        .collect();
    let bf16_data: Vec<u8> = (0..32)
        .flat_map(|i| bf16::from_f32((i as f32 - 16.0) / 8.0).to_le_bytes())
        .collect();
    let i32_data: Vec<u8> = (0..5)
        .flat_map(|i: i32| (i * 1000 - 2000).to_le_bytes())
        .collect();

    let tensors: Vec<(&str, TensorType, Vec<u64>, Option<u64>)> = vec![
        ("t.f32", TensorType::F32, vec![4, 3], None),
        ("t.f16", TensorType::F16, vec![8], None),
        ("t.bf16", TensorType::BF16, vec![16, 2], None),
        ("t.i32", TensorType::I32, vec![5], None),
        ("t.q4_0", TensorType::Q4_0, vec![64, 2], None),
        ("t.q8_0", TensorType::Q8_0, vec![32, 3], None),
        ("t.q4_k", TensorType::Q4_K, vec![256, 1, 2], None),
        ("t.q6_k", TensorType::Q6_K, vec![256], None),
        ("grp.f32", TensorType::F32, vec![100], Some(16384)),
        ("grp.q8_0", TensorType::Q8_0, vec![64], None),
    ];
    for (name, ty, dims, boundary) in &tensors {
        match boundary {
            Some(bd) => b.push_tensor_on_boundary(*name, *ty, dims, *bd)?,
            None => b.push_tensor(*name, *ty, dims)?,
        }
    }
    let mut w = b.create(&out)?;
    for (k, t) in w.planned().to_vec().iter().enumerate() {
        let data = match t.name.as_str() {
            "t.f32" => f32_data.clone(),
            "t.f16" => f16_data.clone(),
            "t.bf16" => bf16_data.clone(),
            "t.i32" => i32_data.clone(),
            "grp.f32" => (0..100).flat_map(|i| (i as f32).to_le_bytes()).collect(),
            _ => pattern(k, t.n_bytes),
        };
        w.write_tensor(&t.name, &data)?;
    }
    w.finish()?;
    println!("wrote {out}");
    Ok(())
}
