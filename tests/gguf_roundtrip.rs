//! Writer → reader round trips: every metadata type, several tensor types, alignment, 16 KiB
//! boundaries, chunked writes, and the writer's promise that no partial file ever remains.

use latte::dtype::TensorType;
use latte::gguf::{
    FormatError, GgufBuilder, GgufError, GgufFile, MetadataArray, MetadataValue, WriteError,
};

/// Deterministic bytes for tensor data (xorshift), so tests need no crate.
fn pseudo_bytes(n: u64, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

fn every_value() -> Vec<(&'static str, MetadataValue)> {
    use MetadataValue as V;
    vec![
        ("t.u8", V::U8(250)),
        ("t.i8", V::I8(-120)),
        ("t.u16", V::U16(65000)),
        ("t.i16", V::I16(-32000)),
        ("t.u32", V::U32(4_000_000_000)),
        ("t.i32", V::I32(-2_000_000_000)),
        ("t.f32", V::F32(-1.5e-7)),
        ("t.bool", V::Bool(true)),
        ("t.string", V::from("héllo, wörld ✓")),
        ("t.u64", V::U64(u64::MAX - 3)),
        ("t.i64", V::I64(i64::MIN + 5)),
        ("t.f64", V::F64(std::f64::consts::PI)),
        ("t.empty_string", V::from("")),
        ("a.u8", vec![0u8, 1, 255].into()),
        ("a.i8", vec![-128i8, 0, 127].into()),
        ("a.u16", vec![1u16, 65535].into()),
        ("a.i16", vec![-32768i16, 32767].into()),
        ("a.u32", vec![0u32, u32::MAX].into()),
        ("a.i32", vec![16i32, 24, 24, 0].into()),
        ("a.f32", vec![0.5f32, -0.0, f32::INFINITY].into()),
        ("a.bool", vec![true, false, true].into()),
        (
            "a.string",
            vec!["a".to_string(), String::new(), "ü".into()].into(),
        ),
        ("a.u64", vec![u64::MAX].into()),
        ("a.i64", vec![i64::MIN, -1].into()),
        ("a.f64", vec![1e300f64, -2.5].into()),
        ("a.empty_u32", MetadataArray::U32(vec![]).into()),
        (
            "a.nested",
            MetadataArray::Array(vec![
                MetadataArray::U32(vec![1, 2]),
                MetadataArray::String(vec!["x".into()]),
                MetadataArray::Array(vec![MetadataArray::F32(vec![3.0])]),
            ])
            .into(),
        ),
    ]
}

/// (name, type, dims) of the tensors used in the round trips.
fn tensor_set() -> Vec<(&'static str, TensorType, Vec<u64>)> {
    vec![
        ("f32.w", TensorType::F32, vec![5, 3]),
        ("f16.w", TensorType::F16, vec![7]),
        ("bf16.w", TensorType::BF16, vec![4, 2, 2]),
        ("q4_0.w", TensorType::Q4_0, vec![64, 3]),
        ("q8_0.w", TensorType::Q8_0, vec![32, 2, 1, 2]),
        ("q6_k.w", TensorType::Q6_K, vec![256, 2]),
        ("q4_k.w", TensorType::Q4_K, vec![512]),
    ]
}

fn n_bytes(ty: TensorType, dims: &[u64]) -> u64 {
    ty.row_bytes(dims[0]).unwrap() * dims[1..].iter().product::<u64>()
}

#[test]
fn every_value_type_and_tensor_type_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.gguf");
    let mut b = GgufBuilder::new();
    for (k, v) in every_value() {
        b.push_metadata(k, v).unwrap();
    }
    for (name, ty, dims) in tensor_set() {
        b.push_tensor(name, ty, &dims).unwrap();
    }
    let mut w = b.create(&path).unwrap();
    let mut datas = Vec::new();
    for (i, (name, ty, dims)) in tensor_set().into_iter().enumerate() {
        let data = pseudo_bytes(n_bytes(ty, &dims), i as u64);
        w.write_tensor(name, &data).unwrap();
        datas.push(data);
    }
    w.finish().unwrap();

    let from_disk = GgufFile::open(&path).unwrap();
    let in_memory = GgufFile::from_bytes(std::fs::read(&path).unwrap()).unwrap();
    for f in [&from_disk, &in_memory] {
        assert_eq!(f.version(), 3);
        assert_eq!(f.alignment(), 32);
        assert!(f.get("general.alignment").is_none(), "default not written");
        let expected = every_value();
        assert_eq!(f.metadata().len(), expected.len());
        for ((k, v), (ek, ev)) in f.metadata().iter().zip(&expected) {
            assert_eq!(k, ek);
            assert_eq!(v, ev, "{k}");
            assert_eq!(f.get(k), Some(ev));
        }
        assert_eq!(f.tensor_infos().len(), datas.len());
        for ((info, (name, ty, dims)), data) in
            f.tensor_infos().iter().zip(tensor_set()).zip(&datas)
        {
            assert_eq!((info.name.as_str(), info.ty, &info.dims), (name, ty, &dims));
            assert_eq!(info.offset % 32, 0);
            assert_eq!(info.n_bytes, data.len() as u64);
            let view = f.tensor(name).unwrap();
            assert_eq!(view.bytes(), &data[..]);
            assert_eq!(view.dims(), &dims[..]);
            assert_eq!(view.ty(), ty);
        }
        assert_eq!(f.tensors().count(), datas.len());
        assert_eq!(f.bytes().len() % 32, 0, "file padded to the alignment");
        assert!(f.tensor("missing").is_none());
    }
    // Zero-copy: the view points into the mapped file.
    let v = from_disk.tensor("f32.w").unwrap();
    let base = from_disk.bytes().as_ptr() as usize;
    assert_eq!(
        v.bytes().as_ptr() as usize - base,
        from_disk.tensor_info("f32.w").unwrap().offset as usize
    );
    // Aligned in memory too, so typed access works on both storages.
    assert_eq!(v.as_f32().unwrap().len(), 15);
    assert_eq!(
        in_memory.tensor("f32.w").unwrap().as_f32().unwrap().len(),
        15
    );
}

#[test]
fn custom_alignment_is_written_and_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a64.gguf");
    let mut b = GgufBuilder::new();
    b.set_alignment(64).unwrap();
    b.push_metadata("general.architecture", "latte").unwrap();
    b.push_tensor("a", TensorType::F32, &[3]).unwrap();
    b.push_tensor("b", TensorType::F32, &[5]).unwrap();
    let mut w = b.create(&path).unwrap();
    w.write_tensor("a", &[1; 12]).unwrap();
    w.write_tensor("b", &[2; 20]).unwrap();
    w.finish().unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.get("general.alignment"), Some(&MetadataValue::U32(64)));
    assert_eq!(f.data_offset() % 64, 0);
    let infos = f.tensor_infos();
    assert_eq!(infos[0].offset, f.data_offset());
    // Packed like ggml: the next tensor starts at the padded end of the previous one.
    assert_eq!(infos[1].offset, f.data_offset() + 64);
    assert_eq!(f.tensor("b").unwrap().bytes(), &[2; 20]);
}

#[test]
fn boundary_tensors_start_on_16_kib_multiples() {
    const B: u64 = 16384;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("groups.gguf");
    let mut b = GgufBuilder::new();
    b.push_metadata("general.architecture", "latte").unwrap();
    b.push_tensor("shared", TensorType::F32, &[100]).unwrap();
    b.push_tensor_on_boundary("g0.a", TensorType::Q8_0, &[64, 4], B)
        .unwrap();
    b.push_tensor("g0.b", TensorType::F16, &[10]).unwrap();
    b.push_tensor_on_boundary("g1.a", TensorType::F32, &[5000], B)
        .unwrap();
    b.push_tensor("g1.b", TensorType::F32, &[3]).unwrap();
    let mut w = b.create(&path).unwrap();
    let plan = w.planned().to_vec();
    assert_eq!(plan[1].offset % B, 0);
    assert_eq!(plan[3].offset % B, 0);
    assert!(plan[1].offset >= B, "the header and 'shared' come first");
    // Within a group, tensors follow at the ordinary alignment.
    assert_eq!(plan[2].offset, plan[1].offset + 288);
    let mut datas = Vec::new();
    for (i, t) in plan.iter().enumerate() {
        let data = pseudo_bytes(t.n_bytes, 100 + i as u64);
        w.write_tensor(&t.name, &data).unwrap();
        datas.push(data);
    }
    w.finish().unwrap();
    let f = GgufFile::open(&path).unwrap();
    let declared: Vec<_> = f
        .tensor_infos()
        .iter()
        .filter(|t| !latte::gguf::is_padding_tensor(&t.name))
        .cloned()
        .collect();
    assert_eq!(declared, plan);
    for (t, data) in plan.iter().zip(&datas) {
        assert_eq!(t.offset % 32, 0);
        assert_eq!(f.tensor(&t.name).unwrap().bytes(), &data[..]);
    }
    // Every gap is an explicit zero padding tensor, so tensors are packed back to back as
    // llama.cpp's gguf.cpp requires: each starts where the previous one's padded data ends.
    let names: Vec<&str> = f.tensor_infos().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "shared",
            "latte.pad.0",
            "g0.a",
            "g0.b",
            "latte.pad.1",
            "g1.a",
            "g1.b"
        ]
    );
    for pair in f.tensor_infos().windows(2) {
        assert_eq!(
            pair[0].offset + pair[0].n_bytes.next_multiple_of(32),
            pair[1].offset
        );
    }
    let pad = f.tensor("latte.pad.0").unwrap();
    assert_eq!(pad.ty(), TensorType::I8);
    assert!(pad.bytes().iter().all(|&b| b == 0));
}

#[test]
fn chunked_writes_equal_whole_writes() {
    let dir = tempfile::tempdir().unwrap();
    let data = pseudo_bytes(18 * 8, 7);
    let mut files = Vec::new();
    for chunked in [false, true] {
        let path = dir.path().join(format!("c{chunked}.gguf"));
        let mut b = GgufBuilder::new();
        b.push_tensor("x", TensorType::Q4_0, &[64, 4]).unwrap();
        b.push_tensor("y", TensorType::F32, &[2]).unwrap();
        let mut w = b.create(&path).unwrap();
        if chunked {
            for part in data.chunks(50) {
                w.write_tensor_chunk("x", part).unwrap();
            }
            w.write_tensor_chunk("y", &[1; 3]).unwrap();
            w.write_tensor_chunk("y", &[2; 5]).unwrap();
        } else {
            w.write_tensor("x", &data).unwrap();
            w.write_tensor("y", &[1, 1, 1, 2, 2, 2, 2, 2]).unwrap();
        }
        w.finish().unwrap();
        files.push(std::fs::read(&path).unwrap());
    }
    assert_eq!(files[0], files[1]);
}

fn dir_entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn two_tensor_builder() -> GgufBuilder {
    let mut b = GgufBuilder::new();
    b.push_metadata("k", 1u32).unwrap();
    b.push_tensor("a", TensorType::F32, &[4]).unwrap();
    b.push_tensor("b", TensorType::F32, &[2]).unwrap();
    b
}

#[test]
fn dropped_or_failed_writers_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.gguf");

    // Dropped midway.
    let mut w = two_tensor_builder().create(&out).unwrap();
    assert_eq!(
        dir_entries(dir.path()).len(),
        1,
        "the temporary file exists while writing"
    );
    w.write_tensor("a", &[0; 16]).unwrap();
    drop(w);
    assert!(dir_entries(dir.path()).is_empty());

    // Wrong size: the error aborts the write, later calls say so.
    let mut w = two_tensor_builder().create(&out).unwrap();
    assert!(matches!(
        w.write_tensor("a", &[0; 15]),
        Err(WriteError::SizeMismatch {
            declared: 16,
            written: 15,
            ..
        })
    ));
    assert!(dir_entries(dir.path()).is_empty());
    assert!(matches!(
        w.write_tensor("a", &[0; 16]),
        Err(WriteError::Aborted)
    ));
    assert!(matches!(w.finish(), Err(WriteError::Aborted)));
    assert!(dir_entries(dir.path()).is_empty());

    // Out of order.
    let mut w = two_tensor_builder().create(&out).unwrap();
    assert!(matches!(
        w.write_tensor("b", &[0; 8]),
        Err(WriteError::OutOfOrder { .. })
    ));
    assert!(dir_entries(dir.path()).is_empty());

    // A chunk past the declared size, and a new tensor while one is incomplete.
    let mut w = two_tensor_builder().create(&out).unwrap();
    w.write_tensor_chunk("a", &[0; 10]).unwrap();
    assert!(matches!(
        w.write_tensor_chunk("a", &[0; 7]),
        Err(WriteError::SizeMismatch { written: 17, .. })
    ));
    let mut w = two_tensor_builder().create(&out).unwrap();
    w.write_tensor_chunk("a", &[0; 10]).unwrap();
    assert!(matches!(
        w.write_tensor_chunk("b", &[0; 8]),
        Err(WriteError::SizeMismatch { written: 10, .. })
    ));

    // Finishing early, and writing past the last tensor.
    let mut w = two_tensor_builder().create(&out).unwrap();
    w.write_tensor("a", &[0; 16]).unwrap();
    assert!(matches!(
        w.finish(),
        Err(WriteError::SizeMismatch { written: 0, .. })
    ));
    assert!(dir_entries(dir.path()).is_empty());
    let mut w = two_tensor_builder().create(&out).unwrap();
    w.write_tensor("a", &[0; 16]).unwrap();
    w.write_tensor("b", &[0; 8]).unwrap();
    assert!(matches!(
        w.write_tensor("c", &[0; 8]),
        Err(WriteError::NoMoreTensors { .. })
    ));
    assert!(dir_entries(dir.path()).is_empty());

    // And a finished one leaves exactly the output.
    let mut w = two_tensor_builder().create(&out).unwrap();
    w.write_tensor("a", &[0; 16]).unwrap();
    w.write_tensor("b", &[0; 8]).unwrap();
    w.finish().unwrap();
    assert_eq!(dir_entries(dir.path()), vec!["out.gguf".to_string()]);
}

#[test]
fn finishing_replaces_an_existing_output_only_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.gguf");
    std::fs::write(&out, b"old").unwrap();
    let mut w = two_tensor_builder().create(&out).unwrap();
    w.write_tensor("a", &[0; 16]).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), b"old");
    drop(w);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"old",
        "a failed write keeps the old file"
    );
}

#[test]
fn builder_refuses_bad_declarations() {
    let mut b = GgufBuilder::new();
    b.push_metadata("k", 1u8).unwrap();
    assert!(matches!(
        b.push_metadata("k", 2u8),
        Err(WriteError::DuplicateKey { .. })
    ));
    assert!(matches!(
        b.push_metadata("", 2u8),
        Err(WriteError::BadMetadata { .. })
    ));
    assert!(matches!(
        b.push_metadata("general.alignment", 64u32),
        Err(WriteError::BadMetadata { .. })
    ));
    let mut deep = MetadataArray::U8(vec![1]);
    for _ in 0..8 {
        deep = MetadataArray::Array(vec![deep]);
    }
    assert!(matches!(
        b.push_metadata("deep", deep),
        Err(WriteError::BadMetadata { .. })
    ));
    assert!(matches!(
        b.set_alignment(48),
        Err(WriteError::BadAlignment(48))
    ));
    assert!(matches!(
        b.set_alignment(0),
        Err(WriteError::BadAlignment(0))
    ));
    b.push_tensor("t", TensorType::F32, &[4]).unwrap();
    assert!(matches!(
        b.push_tensor("t", TensorType::F32, &[4]),
        Err(WriteError::DuplicateTensor { .. })
    ));
    for dims in [&[][..], &[0], &[1, 1, 1, 1, 1], &[u64::MAX, 2]] {
        assert!(matches!(
            b.push_tensor("u", TensorType::F32, dims),
            Err(WriteError::BadTensor { .. })
        ));
    }
    assert!(matches!(
        b.push_tensor("q", TensorType::Q4_0, &[33]),
        Err(WriteError::BadTensor { .. })
    ));
    assert!(matches!(
        b.push_tensor("n".repeat(64), TensorType::F32, &[1]),
        Err(WriteError::BadTensor { .. })
    ));
    assert!(matches!(
        b.push_tensor_on_boundary("v", TensorType::F32, &[1], 3000),
        Err(WriteError::BadTensor { .. })
    ));
}

#[test]
fn a_file_without_tensors_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.gguf");
    let mut b = GgufBuilder::new();
    b.push_metadata("general.name", "only metadata").unwrap();
    b.create(&path).unwrap().finish().unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert!(f.tensor_infos().is_empty());
    assert_eq!(
        f.get("general.name").and_then(MetadataValue::as_str),
        Some("only metadata")
    );
}

#[test]
fn version_2_files_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.gguf");
    let mut w = two_tensor_builder().create(&path).unwrap();
    w.write_tensor("a", &[0; 16]).unwrap();
    w.write_tensor("b", &[0; 8]).unwrap();
    w.finish().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[4] = 2; // v2 and v3 share the layout (v3 added big-endian files).
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.version(), 2);
}

#[test]
fn open_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.gguf");
    let err = GgufFile::open(&missing).unwrap_err();
    assert!(matches!(err, GgufError::Io { .. }));
    assert!(err.to_string().contains("missing.gguf"), "{err}");

    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, b"GGML\x03\0\0\0").unwrap();
    let err = GgufFile::open(&bad).unwrap_err();
    assert!(matches!(err.format(), Some(FormatError::BadMagic { .. })));
    assert!(err.to_string().contains("bad.gguf"), "{err}");

    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let err = GgufFile::open(&empty).unwrap_err();
    assert!(matches!(err.format(), Some(FormatError::BadMagic { .. })));
}

#[test]
fn two_writers_to_one_path_do_not_share_a_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("same.gguf");
    let mut first = two_tensor_builder().create(&out).unwrap();
    let second = two_tensor_builder().create(&out).unwrap();
    assert_eq!(dir_entries(dir.path()).len(), 2);
    drop(second);
    first.write_tensor("a", &[1; 16]).unwrap();
    first.write_tensor("b", &[2; 8]).unwrap();
    first.finish().unwrap();
    assert_eq!(dir_entries(dir.path()), vec!["same.gguf".to_string()]);
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.tensor("b").unwrap().bytes(), &[2; 8]);
}

#[test]
fn padding_names_are_reserved_and_never_empty() {
    let mut b = GgufBuilder::new();
    assert!(b.push_tensor("latte.pad.0", TensorType::I8, &[32]).is_err());
    // Two boundary tensors in a row: the second would start on a boundary already, yet still gets
    // a (whole-boundary) padding tensor, so the header never depends on where tensors land.
    b.push_tensor_on_boundary("g0", TensorType::F32, &[4096], 16384)
        .unwrap();
    b.push_tensor_on_boundary("g1", TensorType::F32, &[8], 16384)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pads.gguf");
    let mut w = b.create(&path).unwrap();
    assert_eq!(w.file_tensors().len(), 4);
    for t in w.planned().to_vec() {
        w.write_tensor(&t.name, &vec![1u8; t.n_bytes as usize])
            .unwrap();
    }
    w.finish().unwrap();
    let f = GgufFile::open(&path).unwrap();
    let pad = f.tensor_info("latte.pad.1").unwrap();
    assert_eq!(pad.n_bytes, 16384);
    assert_eq!(f.tensor_info("g1").unwrap().offset % 16384, 0);
    assert!(f
        .tensor("latte.pad.1")
        .unwrap()
        .bytes()
        .iter()
        .all(|&b| b == 0));
}
