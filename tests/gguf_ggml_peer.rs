//! llama.cpp's own GGUF reader (`gguf.cpp`, via the `ggml-peer` feature) reads what our writer
//! writes: same keys, value types and values, tensor names, shapes, types, offsets and sizes.
//! Run with: `CARGO_TARGET_DIR=/work/target-peer cargo test --features ggml-peer --test gguf_ggml_peer`.
#![cfg(feature = "ggml-peer")]

use std::ffi::{CStr, CString};
use std::path::Path;

use latte::dtype::TensorType;
use latte::gguf::{GgufBuilder, GgufFile, MetadataArray, MetadataValue};

mod gguf_mutation;

use gguf_mutation::{mutate, Insertions, Rng};
use llama_cpp_sys_2 as sys;

/// An open `gguf_context`, freed on drop.
struct Peer(*mut sys::gguf_context);

impl Peer {
    fn open(path: &Path) -> Option<Peer> {
        let c = CString::new(path.to_str().unwrap()).unwrap();
        let params = sys::gguf_init_params {
            no_alloc: true,
            ctx: std::ptr::null_mut(),
        };
        // SAFETY: a valid NUL-terminated path; with `ctx` null gguf.cpp allocates no tensors.
        let ctx = unsafe { sys::gguf_init_from_file(c.as_ptr(), params) };
        (!ctx.is_null()).then_some(Peer(ctx))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // SAFETY: the context came from gguf_init_from_file and is freed once.
        unsafe { sys::gguf_free(self.0) }
    }
}

fn cstr<'a>(p: *const std::os::raw::c_char) -> &'a str {
    // SAFETY: gguf.cpp returns NUL-terminated strings owned by the live context.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap()
}

/// The value gguf.cpp holds for key `i`, rebuilt as a `MetadataValue` for comparison.
fn peer_value(ctx: *const sys::gguf_context, i: i64) -> MetadataValue {
    // SAFETY (whole function): `i` is a valid key id of the live context and every getter is
    // called only for the type gguf.cpp reports (it asserts that itself); array data pointers
    // hold `gguf_get_arr_n` elements of the reported type.
    unsafe {
        let ty = sys::gguf_get_kv_type(ctx, i);
        match ty {
            sys::GGUF_TYPE_UINT8 => MetadataValue::U8(sys::gguf_get_val_u8(ctx, i)),
            sys::GGUF_TYPE_INT8 => MetadataValue::I8(sys::gguf_get_val_i8(ctx, i)),
            sys::GGUF_TYPE_UINT16 => MetadataValue::U16(sys::gguf_get_val_u16(ctx, i)),
            sys::GGUF_TYPE_INT16 => MetadataValue::I16(sys::gguf_get_val_i16(ctx, i)),
            sys::GGUF_TYPE_UINT32 => MetadataValue::U32(sys::gguf_get_val_u32(ctx, i)),
            sys::GGUF_TYPE_INT32 => MetadataValue::I32(sys::gguf_get_val_i32(ctx, i)),
            sys::GGUF_TYPE_FLOAT32 => MetadataValue::F32(sys::gguf_get_val_f32(ctx, i)),
            sys::GGUF_TYPE_BOOL => MetadataValue::Bool(sys::gguf_get_val_bool(ctx, i)),
            sys::GGUF_TYPE_STRING => {
                MetadataValue::String(cstr(sys::gguf_get_val_str(ctx, i)).to_owned())
            }
            sys::GGUF_TYPE_UINT64 => MetadataValue::U64(sys::gguf_get_val_u64(ctx, i)),
            sys::GGUF_TYPE_INT64 => MetadataValue::I64(sys::gguf_get_val_i64(ctx, i)),
            sys::GGUF_TYPE_FLOAT64 => MetadataValue::F64(sys::gguf_get_val_f64(ctx, i)),
            sys::GGUF_TYPE_ARRAY => {
                let n = sys::gguf_get_arr_n(ctx, i);
                fn raw<T: Copy>(ctx: *const sys::gguf_context, i: i64, n: usize) -> Vec<T> {
                    // SAFETY: see the function comment.
                    unsafe {
                        std::slice::from_raw_parts(sys::gguf_get_arr_data(ctx, i) as *const T, n)
                    }
                    .to_vec()
                }
                MetadataValue::Array(match sys::gguf_get_arr_type(ctx, i) {
                    sys::GGUF_TYPE_UINT8 => MetadataArray::U8(raw(ctx, i, n)),
                    sys::GGUF_TYPE_INT8 => MetadataArray::I8(raw(ctx, i, n)),
                    sys::GGUF_TYPE_UINT16 => MetadataArray::U16(raw(ctx, i, n)),
                    sys::GGUF_TYPE_INT16 => MetadataArray::I16(raw(ctx, i, n)),
                    sys::GGUF_TYPE_UINT32 => MetadataArray::U32(raw(ctx, i, n)),
                    sys::GGUF_TYPE_INT32 => MetadataArray::I32(raw(ctx, i, n)),
                    sys::GGUF_TYPE_FLOAT32 => MetadataArray::F32(raw(ctx, i, n)),
                    sys::GGUF_TYPE_BOOL => MetadataArray::Bool(
                        raw::<u8>(ctx, i, n).into_iter().map(|b| b != 0).collect(),
                    ),
                    sys::GGUF_TYPE_UINT64 => MetadataArray::U64(raw(ctx, i, n)),
                    sys::GGUF_TYPE_INT64 => MetadataArray::I64(raw(ctx, i, n)),
                    sys::GGUF_TYPE_FLOAT64 => MetadataArray::F64(raw(ctx, i, n)),
                    sys::GGUF_TYPE_STRING => MetadataArray::String(
                        (0..n)
                            .map(|j| cstr(sys::gguf_get_arr_str(ctx, i, j)).to_owned())
                            .collect(),
                    ),
                    other => panic!("array of type {other}"),
                })
            }
            other => panic!("type {other}"),
        }
    }
}

fn build(path: &Path, boundary: Option<u64>) -> Vec<Vec<u8>> {
    let mut b = GgufBuilder::new();
    b.set_alignment(64).unwrap();
    b.push_metadata("general.architecture", "latte-peer")
        .unwrap();
    b.push_metadata("p.u8", 200u8).unwrap();
    b.push_metadata("p.i8", -100i8).unwrap();
    b.push_metadata("p.u16", 60000u16).unwrap();
    b.push_metadata("p.i16", -30000i16).unwrap();
    b.push_metadata("p.u32", 4_000_000_000u32).unwrap();
    b.push_metadata("p.i32", -2_000_000_000i32).unwrap();
    b.push_metadata("p.f32", -1.25f32).unwrap();
    b.push_metadata("p.bool", true).unwrap();
    b.push_metadata("p.string", "ünïcödé").unwrap();
    b.push_metadata("p.u64", u64::MAX - 1).unwrap();
    b.push_metadata("p.i64", i64::MIN + 1).unwrap();
    b.push_metadata("p.f64", std::f64::consts::E).unwrap();
    b.push_metadata("p.arr.u8", vec![1u8, 2, 255]).unwrap();
    b.push_metadata("p.arr.i32", vec![16i32, 24, 24, 0])
        .unwrap();
    b.push_metadata("p.arr.u64", vec![u64::MAX, 0]).unwrap();
    b.push_metadata("p.arr.f32", vec![0.5f32, -2.0]).unwrap();
    b.push_metadata("p.arr.f64", vec![0.5f64]).unwrap();
    b.push_metadata("p.arr.bool", vec![true, false]).unwrap();
    b.push_metadata(
        "p.arr.string",
        vec!["<s>".to_string(), "héllo".into(), String::new()],
    )
    .unwrap();
    let tensors = [
        ("f32", TensorType::F32, vec![4u64, 3]),
        ("f16", TensorType::F16, vec![7]),
        ("bf16", TensorType::BF16, vec![16, 2]),
        ("q4_0", TensorType::Q4_0, vec![64, 2, 1, 2]),
        ("q8_0", TensorType::Q8_0, vec![32]),
        ("q4_k", TensorType::Q4_K, vec![256, 3]),
        ("q6_k", TensorType::Q6_K, vec![512]),
    ];
    for (i, (name, ty, dims)) in tensors.iter().enumerate() {
        match boundary {
            Some(bd) if i == 3 => b.push_tensor_on_boundary(*name, *ty, dims, bd).unwrap(),
            _ => b.push_tensor(*name, *ty, dims).unwrap(),
        }
    }
    let mut w = b.create(path).unwrap();
    let mut datas = Vec::new();
    for t in w.planned().to_vec() {
        let data: Vec<u8> = (0..t.n_bytes).map(|j| (j * 31 + 7) as u8).collect();
        w.write_tensor(&t.name, &data).unwrap();
        datas.push(data);
    }
    w.finish().unwrap();
    datas
}

#[test]
fn gguf_cpp_reads_what_we_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("peer.gguf");
    build(&path, None);
    let ours = GgufFile::open(&path).unwrap();
    let peer = Peer::open(&path).expect("gguf.cpp refused our file");
    let ctx = peer.0;
    // SAFETY: plain getters on a live context, with ids below the counts it reports.
    unsafe {
        assert_eq!(sys::gguf_get_version(ctx), 3);
        assert_eq!(sys::gguf_get_alignment(ctx) as u64, ours.alignment());
        assert_eq!(sys::gguf_get_data_offset(ctx) as u64, ours.data_offset());
        assert_eq!(sys::gguf_get_n_kv(ctx) as usize, ours.metadata().len());
        for (i, (key, value)) in ours.metadata().iter().enumerate() {
            assert_eq!(cstr(sys::gguf_get_key(ctx, i as i64)), key);
            assert_eq!(&peer_value(ctx, i as i64), value, "{key}");
        }
        assert_eq!(
            sys::gguf_get_n_tensors(ctx) as usize,
            ours.tensor_infos().len()
        );
        for (i, t) in ours.tensor_infos().iter().enumerate() {
            let id = i as i64;
            assert_eq!(cstr(sys::gguf_get_tensor_name(ctx, id)), t.name);
            assert_eq!(sys::gguf_get_tensor_type(ctx, id) as u32, t.ty.id());
            let ne = std::slice::from_raw_parts(sys::gguf_get_tensor_ne(ctx, id), 4);
            let mut dims = [1i64; 4];
            for (d, &x) in dims.iter_mut().zip(&t.dims) {
                *d = x as i64;
            }
            assert_eq!(ne, dims, "{}", t.name);
            assert_eq!(
                sys::gguf_get_tensor_offset(ctx, id) as u64,
                t.offset - ours.data_offset()
            );
            assert_eq!(sys::gguf_get_tensor_size(ctx, id) as u64, t.n_bytes);
        }
    }
}

#[test]
fn gguf_cpp_reads_files_with_group_boundaries() {
    // gguf.cpp requires each tensor to start where the previous one's padded data ends, so the
    // writer fills the gap before a 16 KiB boundary with an explicit zero `latte.pad.N` tensor.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grouped.gguf");
    let datas = build(&path, Some(16384));
    let ours = GgufFile::open(&path).unwrap();
    assert_eq!(ours.tensor("q4_0").unwrap().bytes(), &datas[3][..]);
    assert_eq!(ours.tensor_info("q4_0").unwrap().offset % 16384, 0);
    let peer = Peer::open(&path).expect("gguf.cpp refused a file with group boundaries");
    // SAFETY: `peer.0` is a live gguf context for the file just opened.
    unsafe {
        assert_eq!(
            sys::gguf_get_n_tensors(peer.0) as usize,
            ours.tensor_infos().len()
        );
        for (i, t) in ours.tensor_infos().iter().enumerate() {
            assert_eq!(
                sys::gguf_get_tensor_offset(peer.0, i as i64) as u64,
                t.offset - ours.data_offset()
            );
        }
    }
}

unsafe extern "C" fn quiet(
    _: sys::ggml_log_level,
    _: *const std::os::raw::c_char,
    _: *mut std::ffi::c_void,
) {
}

/// Whether gguf.cpp accepts `bytes` (header only: with `ctx` null it loads no tensor data).
fn gguf_cpp_accepts(bytes: &[u8]) -> bool {
    let params = sys::gguf_init_params {
        no_alloc: true,
        ctx: std::ptr::null_mut(),
    };
    // SAFETY: the pointer and length describe a live slice; the context is freed at once.
    unsafe {
        let ctx = sys::gguf_init_from_buffer(bytes.as_ptr().cast(), bytes.len(), params);
        if ctx.is_null() {
            return false;
        }
        sys::gguf_free(ctx);
        true
    }
}

/// Differential check against gguf.cpp on seeded mutations of a valid file. Both readers must
/// agree, except where the rules differ on purpose; each such case is named and checked:
/// - gguf.cpp only: tensors must be packed exactly (no gaps), names shorter than 64 bytes, no
///   nested arrays;
/// - ours only: dims must be non-zero, bools 0 or 1, strings UTF-8, and tensor data must lie
///   inside the file
///   (gguf.cpp checks that only when it loads the data, which this header-only call does not).
#[test]
fn gguf_cpp_and_we_agree_on_mutated_files() {
    // SAFETY: installs a no-op logger so thousands of refusals do not flood the output.
    unsafe { sys::ggml_log_set(Some(quiet), std::ptr::null_mut()) };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base.gguf");
    build(&path, None);
    let base = std::fs::read(&path).unwrap();
    let mut rng = Rng(0xD1FF_5EED_0000_0001);
    let interesting: [u64; 7] = [0, 1, 2, 0xFF, 0xFFFF_FFFF, 1 << 40, u64::MAX];
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..4000 {
        let mut m = base.clone();
        for _ in 0..1 + rng.below(3) {
            mutate(&mut rng, &mut m, &interesting, Insertions::Forbidden);
        }
        let ours = GgufFile::from_bytes(m.clone());
        let theirs = gguf_cpp_accepts(&m);
        let outcome = match (&ours, theirs) {
            (Ok(_), true) => "both accept".to_string(),
            (Err(_), false) => "both refuse".to_string(),
            (Ok(f), false) => {
                let mut expected = f.data_offset();
                let packed = f.tensor_infos().iter().all(|t| {
                    let ok = t.offset == expected;
                    expected = t.offset + t.n_bytes.div_ceil(f.alignment()) * f.alignment();
                    ok
                });
                let long_name = f.tensor_infos().iter().any(|t| t.name.len() >= 64);
                let nested = f.metadata().iter().any(|(_, v)| {
                    v.as_array()
                        .is_some_and(|a| a.elem_type() == latte::gguf::ValueType::Array)
                });
                let reason = match (packed, long_name, nested) {
                    (false, _, _) => "not packed",
                    (_, true, _) => "name of 64+ bytes",
                    (_, _, true) => "nested array",
                    _ => panic!("gguf.cpp refuses a file we accept, for no known reason: {f:?}"),
                };
                format!("gguf.cpp only: {reason}")
            }
            (Err(e), true) => {
                use latte::gguf::FormatError as E;
                let e = e.format().unwrap();
                assert!(
                    matches!(
                        e,
                        E::ZeroDim { .. }
                            | E::InvalidBool { .. }
                            | E::InvalidUtf8 { .. }
                            | E::TensorOutOfBounds { .. }
                    ),
                    "gguf.cpp accepts a file we refuse: {e}"
                );
                let variant = format!("{e:?}");
                format!(
                    "ours only: {}",
                    variant.split([' ', '{']).next().unwrap_or("")
                )
            }
        };
        *counts.entry(outcome).or_default() += 1;
    }
    eprintln!("{counts:#?}");
    // Both agreements and both kinds of known disagreement occur, so the mutations exercise
    // both readers' rules.
    for prefix in ["both accept", "both refuse", "gguf.cpp only", "ours only"] {
        assert!(counts.keys().any(|k| k.starts_with(prefix)), "{counts:?}");
    }
}
