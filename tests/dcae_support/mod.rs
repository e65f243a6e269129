//! Shared by the DC-AE tests: reading fixture tensors, building a decoder-only GGUF from a diffusers
//! `AutoencoderDC` directory (config.json + diffusion_pytorch_model.safetensors) with the names
//! `latte convert` gives them, and a tolerance check that reports the worst element.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use latte::convert::names::dcae_name;
use latte::dtype::TensorType;
use latte::gguf::{GgufBuilder, MetadataValue};
use latte::model::dcae::KEY_CONFIG_JSON;
use latte::safetensors::{to_f32, Dtype, SafetensorsFile};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tensor of a safetensors fixture: its torch shape and its values as f32 (U8 widened).
pub fn read_tensor(path: &Path, name: &str) -> (Vec<u64>, Vec<f32>) {
    let file = SafetensorsFile::open(path).unwrap();
    let t = file
        .get(name)
        .unwrap_or_else(|| panic!("{name} not in {}", path.display()))
        .clone();
    let bytes = file.data(&t);
    let values = if t.dtype == Dtype::U8 {
        bytes.iter().map(|&b| b as f32).collect()
    } else {
        let mut out = vec![0f32; t.n_elements() as usize];
        to_f32(t.dtype, bytes, &mut out).unwrap();
        out
    };
    (t.shape.clone(), values)
}

/// How [`dcae_gguf`] stores the weights.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    F32,
    F16,
    /// F32 holding the values F16 storage would round them to.
    F32RoundedToF16,
}

/// Writes `out` with the decoder half of the autoencoder in `dir`: `latte.dcae.config_json` and
/// every tensor `dcae_name` keeps, shapes reversed into ggml order.
pub fn dcae_gguf(dir: &Path, out: &Path, storage: Storage) {
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    dcae_gguf_with(dir, &config, out, storage, None);
}

/// [`dcae_gguf`] with another config text and, if `skip` names one, that GGUF tensor left out.
pub fn dcae_gguf_with(dir: &Path, config: &str, out: &Path, storage: Storage, skip: Option<&str>) {
    let f16 = storage == Storage::F16;
    let config = config.to_string();
    let file = SafetensorsFile::open(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let mut tensors = Vec::new();
    for t in file.tensors() {
        if let Ok(Some(name)) = dcae_name(&t.name) {
            if skip == Some(name.as_str()) {
                continue;
            }
            let mut values = vec![0f32; t.n_elements() as usize];
            to_f32(t.dtype, file.data(t), &mut values).unwrap();
            if storage == Storage::F32RoundedToF16 {
                values
                    .iter_mut()
                    .for_each(|v| *v = half::f16::from_f32(*v).to_f32());
            }
            let dims: Vec<u64> = t.shape.iter().rev().copied().collect();
            tensors.push((name, dims, values));
        }
    }
    let ty = if f16 {
        TensorType::F16
    } else {
        TensorType::F32
    };
    let mut b = GgufBuilder::new();
    b.push_metadata(KEY_CONFIG_JSON, MetadataValue::String(config))
        .unwrap();
    for (name, dims, _) in &tensors {
        let dims = if dims.is_empty() {
            vec![1]
        } else {
            dims.clone()
        };
        b.push_tensor(name.clone(), ty, &dims).unwrap();
    }
    let mut w = b.create(out).unwrap();
    for (name, _, values) in &tensors {
        let bytes: Vec<u8> = if f16 {
            values
                .iter()
                .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                .collect()
        } else {
            values.iter().flat_map(|x| x.to_le_bytes()).collect()
        };
        w.write_tensor(name, &bytes).unwrap();
    }
    w.finish().unwrap();
}

/// Asserts `|got − want| ≤ tol·max(1, max|want|)` everywhere and returns the worst relative error.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    let (mut worst, mut at) = (0f32, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let e = (g - w).abs() / scale;
        assert!(!g.is_nan(), "{what}: NaN at {i}");
        if e > worst {
            (worst, at) = (e, i);
        }
    }
    assert!(
        worst <= tol,
        "{what}: worst error {worst:e} (of max |want| {scale}) at {at}: got {}, want {}",
        got[at],
        want[at]
    );
    worst
}
