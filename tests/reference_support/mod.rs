//! Shared helpers of the parity tests against the PyTorch reference fixtures
//! (`tests/fixtures/reference/<config>/`): reading the oracle tensors and converting the fixture
//! checkpoint to a GGUF in a temporary directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use latte::convert::quantize::QuantizeOptions;
use latte::convert::Checkpoint;
use latte::safetensors::{Dtype, SafetensorsFile};

/// Every fixture configuration (tools/reference/README.md: base = defaults, alt = every alternative
/// switch, no_tcra = TCRA off, one layer per group, plus a dense run).
pub const CONFIGS: &[&str] = &["base", "alt", "no_tcra"];

pub fn fixture_dir(config: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference")
        .join(config)
}

/// The oracle tensors of one fixture configuration.
pub struct Oracle {
    file: SafetensorsFile,
}

impl Oracle {
    pub fn open(config: &str) -> Oracle {
        Self::open_path(&fixture_dir(config).join("tensors.safetensors"))
    }

    pub fn open_path(path: &Path) -> Oracle {
        Oracle {
            file: SafetensorsFile::open(path).unwrap(),
        }
    }

    /// Writes the `[H, W, 3]` u8 image tensor `name` to `path` as PNG (a lossless round trip through
    /// the `image` crate), for tests that feed a fixture image to the binary.
    pub fn write_png(&self, name: &str, path: &Path) {
        let shape = self.shape(name);
        image::save_buffer(
            path,
            &self.u8(name),
            shape[1] as u32,
            shape[0] as u32,
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    }

    pub fn has(&self, name: &str) -> bool {
        self.file.get(name).is_some()
    }

    pub fn shape(&self, name: &str) -> Vec<usize> {
        let t = self
            .file
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        t.shape.iter().map(|&d| d as usize).collect()
    }

    pub fn f32(&self, name: &str) -> Vec<f32> {
        let t = self
            .file
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(t.dtype, Dtype::F32, "{name}");
        self.file
            .data(t)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    pub fn i64(&self, name: &str) -> Vec<i64> {
        let t = self
            .file
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(t.dtype, Dtype::I64, "{name}");
        self.file
            .data(t)
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    pub fn u32s(&self, name: &str) -> Vec<u32> {
        self.i64(name).into_iter().map(|x| x as u32).collect()
    }

    pub fn u8(&self, name: &str) -> Vec<u8> {
        let t = self
            .file
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(t.dtype, Dtype::U8, "{name}");
        self.file.data(t).to_vec()
    }

    /// `[heads, P, d]` (the reference's layout) as `[P, heads, d]` (ours: token-major).
    pub fn heads_to_tokens(&self, name: &str) -> (usize, Vec<f32>) {
        let shape = self.shape(name);
        let (heads, p, d) = (shape[0], shape[1], shape[2]);
        let values = self.f32(name);
        let mut out = vec![0.0; values.len()];
        for h in 0..heads {
            for i in 0..p {
                out[(i * heads + h) * d..][..d].copy_from_slice(&values[(h * p + i) * d..][..d]);
            }
        }
        (p, out)
    }
}

/// The fixture checkpoint of `config` converted to a GGUF of type `ty` under `dir`.
pub fn convert(config: &str, ty: &str, dir: &Path) -> PathBuf {
    let options = QuantizeOptions::parse(ty, &[]).unwrap();
    let out = dir.join(format!("{config}-{ty}.gguf"));
    Checkpoint::plan(&fixture_dir(config).join("checkpoint"), &options)
        .unwrap()
        .write(&out, &mut |_| {})
        .unwrap();
    out
}

/// Largest |a − b| and largest |b|.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(0f32, f32::max);
    (diff, scale)
}

/// Largest difference in levels between two 8-bit images of the same size.
pub fn max_level_difference(got: &[u8], want: &[u8]) -> i32 {
    assert_eq!(got.len(), want.len(), "image sizes differ");
    got.iter()
        .zip(want)
        .map(|(&a, &b)| (a as i32 - b as i32).abs())
        .max()
        .unwrap_or(0)
}

/// Index of the largest value (first on ties), as torch's argmax.
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// Largest |a − b| over the largest |b| (at least 1): one number per tensor, comparable across
/// tensors of different magnitudes.
pub fn scaled_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max)
        / scale
}

#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tolerance: f32) {
    let error = scaled_error(got, want);
    if std::env::var_os("LATTE_PRINT_ERRORS").is_some() {
        eprintln!("{what}: scaled error {error:e}");
    }
    assert!(
        error <= tolerance,
        "{what}: scaled error {error:e} > {tolerance:e}"
    );
}
