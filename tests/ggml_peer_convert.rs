//! ggml's own GGUF reader (`gguf_init_from_file`, llama.cpp's `gguf.cpp`) reads what `latte
//! convert` writes, including the 16 KiB expert-group boundaries (filled with padding tensors,
//! since gguf.cpp refuses gaps between tensors), and sees the same tensors at the same offsets.
#![cfg(feature = "ggml-peer")]

use std::ffi::{CStr, CString};
use std::path::Path;

use latte::convert::quantize::QuantizeOptions;
use latte::convert::Checkpoint;
use latte::gguf::GgufFile;
use latte::model::expert_groups::{GroupLayout, GROUP_ALIGNMENT};
use llama_cpp_sys_2 as sys;

fn convert(config: &str, ty: &str, out: &Path) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference")
        .join(config)
        .join("checkpoint");
    let options = QuantizeOptions::parse(ty, &[]).unwrap();
    Checkpoint::plan(&dir, &options)
        .unwrap()
        .write(out, &mut |_| {})
        .unwrap();
}

#[test]
fn ggml_reads_converted_files_with_groups() {
    let dir = tempfile::tempdir().unwrap();
    for (config, ty) in [("base", "f16"), ("alt", "q4_0"), ("no_tcra", "q4_k")] {
        let path = dir.path().join(format!("{config}-{ty}.gguf"));
        convert(config, ty, &path);
        let ours = GgufFile::open(&path).unwrap();
        let layout = GroupLayout::from_file(&ours).unwrap().unwrap();
        for range in layout.ranges(ours.tensor_infos()).unwrap() {
            assert_eq!(range.bytes.start % GROUP_ALIGNMENT, 0);
        }
        let c_path = CString::new(path.to_str().unwrap()).unwrap();
        let params = sys::gguf_init_params {
            no_alloc: true,
            ctx: std::ptr::null_mut(),
        };
        // SAFETY: a valid NUL-terminated path and plain parameters; the context is freed below and
        // every pointer read from it is used before that.
        unsafe {
            let ctx = sys::gguf_init_from_file(c_path.as_ptr(), params);
            assert!(!ctx.is_null(), "{config} {ty}: ggml refused the file");
            let n = sys::gguf_get_n_tensors(ctx);
            assert_eq!(n as usize, ours.tensor_infos().len());
            let data_offset = sys::gguf_get_data_offset(ctx) as u64;
            assert_eq!(data_offset, ours.data_offset());
            for (i, info) in ours.tensor_infos().iter().enumerate() {
                let name = CStr::from_ptr(sys::gguf_get_tensor_name(ctx, i as i64));
                assert_eq!(name.to_str().unwrap(), info.name);
                let offset = sys::gguf_get_tensor_offset(ctx, i as i64) as u64;
                assert_eq!(data_offset + offset, info.offset, "{}", info.name);
            }
            let key = CString::new("latte.flow.group_count").unwrap();
            assert!(sys::gguf_find_key(ctx, key.as_ptr()) >= 0);
            sys::gguf_free(ctx);
        }
    }
}
