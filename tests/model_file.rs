//! `ModelFile` lookups and `Linear` on a small GGUF written by our writer: shapes, dtypes and keys
//! are checked, and every failure names the file and the tensor or key.

use latte::backend::cpu::CPU;
use latte::backend::{DeviceBuffer, Placement};
use latte::dtype::TensorType;
use latte::gguf::{GgufBuilder, MetadataValue};
use latte::model::{Linear, ModelError, ModelFile};

fn write_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("m.gguf");
    let mut b = GgufBuilder::new();
    b.push_metadata("test.count", MetadataValue::U32(7))
        .unwrap();
    b.push_metadata("test.signed", MetadataValue::I32(3))
        .unwrap();
    b.push_metadata("test.eps", MetadataValue::F32(1e-6))
        .unwrap();
    b.push_metadata("test.name", MetadataValue::String("x".into()))
        .unwrap();
    b.push_tensor("w.weight", TensorType::F16, &[3, 2]).unwrap();
    b.push_tensor("w.bias", TensorType::F32, &[2]).unwrap();
    let mut w = b.create(&path).unwrap();
    let weight: Vec<u8> = [1.0f32, 2.0, 3.0, -1.0, 0.5, 0.0]
        .iter()
        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect();
    w.write_tensor("w.weight", &weight).unwrap();
    let bias: Vec<u8> = [10.0f32, 20.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    w.write_tensor("w.bias", &bias).unwrap();
    w.finish().unwrap();
    path
}

#[test]
fn lookups_are_typed_and_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path());
    let file = ModelFile::open(&path).unwrap();
    assert_eq!(file.usize("test.count").unwrap(), 7);
    assert_eq!(file.usize("test.signed").unwrap(), 3);
    assert!((file.f32("test.eps").unwrap() - 1e-6).abs() < 1e-12);
    assert_eq!(file.str("test.name").unwrap(), "x");
    let missing = file.usize("test.absent").unwrap_err();
    assert!(matches!(missing, ModelError::MissingKey { .. }));
    assert!(missing.to_string().contains("m.gguf") && missing.to_string().contains("test.absent"));
    assert!(matches!(
        file.str("test.count").unwrap_err(),
        ModelError::KeyType { .. }
    ));
    let shape = file.tensor_f32("w.weight", &[2, 3]).unwrap_err();
    assert!(shape.to_string().contains("w.weight"), "{shape}");
    assert!(matches!(
        file.tensor("nope").unwrap_err(),
        ModelError::MissingTensor { .. }
    ));
}

#[test]
fn linear_applies_weight_and_bias() {
    let dir = tempfile::tempdir().unwrap();
    let file = ModelFile::open(write_file(dir.path())).unwrap();
    let linear = Linear::load_pair(&CPU, &file, "w", true, [3, 2], Placement::Shared).unwrap();
    let x = vec![1.0f32, 1.0, 1.0, 2.0, 0.0, -2.0];
    let mut y = vec![0f32; 4];
    linear.forward(x.all(), 2, y.all_mut()).unwrap();
    // Rows of W: [1, 2, 3] and [-1, 0.5, 0] (exact in f16); F16 weights take F16 activations, exact
    // for these small integers.
    assert_eq!(y, [6.0 + 10.0, -0.5 + 20.0, -4.0 + 10.0, -2.0 + 20.0]);
    assert!(Linear::load_pair(&CPU, &file, "w", true, [2, 3], Placement::Shared).is_err());
}
