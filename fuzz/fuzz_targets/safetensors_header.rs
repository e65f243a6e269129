//! Fuzzes what `latte convert` parses from untrusted checkpoints: the safetensors header (sizes,
//! offsets, shapes, JSON) and the Qwen2-VL and generation config JSON. None may panic; an
//! accepted safetensors header must describe ranges inside the input.
//!
//! Registered in `fuzz/Cargo.toml` as
//! `[[bin]] name = "safetensors_header", path = "fuzz_targets/safetensors_header.rs", test = false,
//! doc = false, bench = false`. Run:
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run safetensors_header fuzz/corpus/safetensors_header fuzz/seeds/safetensors_header`
#![no_main]

use std::path::Path;

use latte::convert::config::{GenerationConfig, Qwen2VlConfig};
use latte::safetensors::parse_header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((start, tensors)) = parse_header(data) {
        for t in &tensors {
            assert!(start + t.data.end <= data.len());
            assert_eq!(t.data.len() as u64, t.n_elements() * t.dtype.size());
        }
    }
    let path = Path::new("fuzz.json");
    let _ = Qwen2VlConfig::parse(path, data);
    let _ = GenerationConfig::parse(path, data);
});
