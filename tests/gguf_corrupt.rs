//! Hostile and corrupted GGUF bytes: every truncation of a valid file, thousands of seeded random
//! mutations, and hand-crafted headers for each validation rule. The reader must return the right
//! error (or a valid file) and never panic, hang or read out of bounds.

use latte::dtype::TensorType;
use latte::gguf::{FormatError, GgufBuilder, GgufFile, MetadataArray, MetadataValue};

mod gguf_mutation;

use gguf_mutation::{mutate, Insertions, Rng};

/// A small valid file: every metadata type, arrays, four tensor types, a custom alignment.
fn small_valid_file() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.gguf");
    let mut b = GgufBuilder::new();
    b.set_alignment(16).unwrap();
    b.push_metadata("general.architecture", "latte").unwrap();
    b.push_metadata("u8", 1u8).unwrap();
    b.push_metadata("i8", -1i8).unwrap();
    b.push_metadata("u16", 2u16).unwrap();
    b.push_metadata("i16", -2i16).unwrap();
    b.push_metadata("u32", 3u32).unwrap();
    b.push_metadata("i32", -3i32).unwrap();
    b.push_metadata("f32", 0.5f32).unwrap();
    b.push_metadata("bool", true).unwrap();
    b.push_metadata("u64", 4u64).unwrap();
    b.push_metadata("i64", -4i64).unwrap();
    b.push_metadata("f64", 0.25f64).unwrap();
    b.push_metadata("strs", vec!["a".to_string(), "bc".into()])
        .unwrap();
    b.push_metadata("bools", vec![true, false]).unwrap();
    b.push_metadata(
        "nested",
        MetadataArray::Array(vec![MetadataArray::I32(vec![1, 2])]),
    )
    .unwrap();
    b.push_tensor("w.f32", TensorType::F32, &[4, 2]).unwrap();
    b.push_tensor("w.f16", TensorType::F16, &[8]).unwrap();
    b.push_tensor("w.q4_0", TensorType::Q4_0, &[32, 2]).unwrap();
    b.push_tensor("w.q8_0", TensorType::Q8_0, &[32]).unwrap();
    let mut w = b.create(&path).unwrap();
    for t in w.planned().to_vec() {
        let data: Vec<u8> = (0..t.n_bytes).map(|i| (i * 7 + 3) as u8).collect();
        w.write_tensor(&t.name, &data).unwrap();
    }
    w.finish().unwrap();
    std::fs::read(&path).unwrap()
}

/// Parses and, when the bytes are accepted, reads every tensor view in full the way a model
/// loader would, so any inconsistency between header and data surfaces here.
fn parse_and_touch(bytes: Vec<u8>) -> Result<u64, FormatError> {
    let f = GgufFile::from_bytes(bytes).map_err(|e| e.format().cloned().unwrap())?;
    let mut sum = 0u64;
    for info in f.tensor_infos() {
        let v = f.tensor(&info.name).expect("validated tensor has a view");
        assert_eq!(v.bytes().len() as u64, info.n_bytes);
        for r in 0..v.n_rows() {
            sum += v.row(r).iter().map(|&b| u64::from(b)).sum::<u64>();
        }
        if let Ok(xs) = v.as_f32() {
            sum += xs.len() as u64;
        }
    }
    for (k, _) in f.metadata() {
        assert!(f.get(k).is_some());
    }
    Ok(sum)
}

#[test]
fn every_truncation_is_refused_until_the_last_tensor_ends() {
    let file = small_valid_file();
    let f = GgufFile::from_bytes(file.clone()).unwrap();
    let data_end = f
        .tensor_infos()
        .iter()
        .map(|t| t.offset + t.n_bytes)
        .max()
        .unwrap() as usize;
    let data_offset = f.data_offset() as usize;
    for len in 0..=file.len() {
        let result = parse_and_touch(file[..len].to_vec());
        match result {
            Ok(_) => assert!(len >= data_end, "prefix of {len} bytes accepted"),
            Err(FormatError::BadMagic { .. }) => assert!(len < 4, "len {len}"),
            Err(FormatError::Truncated { .. } | FormatError::CountTooLarge { .. }) => {
                assert!(len < data_offset, "len {len}")
            }
            Err(FormatError::TensorOutOfBounds { .. }) => {
                assert!(len < data_end, "len {len}")
            }
            Err(other) => panic!("prefix of {len} bytes: unexpected {other:?}"),
        }
        // Messages render (they name fields and offsets) without panicking.
        if let Err(e) = parse_and_touch(file[..len].to_vec()) {
            assert!(e.to_string().contains("byte"), "{e}");
        }
    }
}

#[test]
fn thousands_of_seeded_mutations_never_panic() {
    let file = small_valid_file();
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let interesting: [u64; 8] = [0, 1, 0xFF, 0x7FFF_FFFF, 0xFFFF_FFFF, 1 << 32, u64::MAX, 5];
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..6000 {
        let mut m = file.clone();
        for _ in 0..1 + rng.below(4) {
            mutate(&mut rng, &mut m, &interesting, Insertions::Allowed);
        }
        match parse_and_touch(m) {
            Ok(_) => accepted += 1,
            Err(e) => {
                refused += 1;
                assert!(!e.to_string().is_empty());
            }
        }
    }
    // Both outcomes occur, so the mutations reach past the magic and into the data.
    assert!(accepted > 100 && refused > 1000, "{accepted} / {refused}");
}

/// Raw little-endian bytes for hand-made headers.
#[derive(Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw::default();
        r.0.extend_from_slice(b"GGUF");
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &[u8]) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s);
        self
    }
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key.as_bytes()).u32(4).u32(v)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name.as_bytes()).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pads to `align` and appends `n` data bytes.
    fn data(&mut self, align: usize, n: usize) -> &mut Self {
        while !self.0.len().is_multiple_of(align) {
            self.0.push(0);
        }
        self.0.resize(self.0.len() + n, 0xAB);
        self
    }
    fn parse(&self) -> Result<GgufFile, FormatError> {
        GgufFile::from_bytes(self.0.clone()).map_err(|e| e.format().cloned().unwrap())
    }
}

fn err(r: &Raw) -> FormatError {
    r.parse().unwrap_err()
}

#[test]
fn a_minimal_hand_made_file_is_accepted() {
    // The control for the hostile cases below: the same builder, valid values.
    let mut r = Raw::header(3, 2, 1);
    r.kv_u32("general.alignment", 8)
        .tensor("a", &[2], 0, 0)
        .tensor("b", &[3], 0, 8)
        .data(8, 8 + 12);
    let f = r.parse().unwrap();
    assert_eq!(f.alignment(), 8);
    assert_eq!(f.tensor("b").unwrap().bytes(), &[0xAB; 12]);
}

#[test]
fn hostile_counts_and_lengths() {
    assert!(matches!(
        err(&Raw::header(3, u64::MAX, 0)),
        FormatError::CountTooLarge { ref field, offset: 8, count: u64::MAX, .. } if field == "header.n_tensors"
    ));
    assert!(matches!(
        err(&Raw::header(3, 0, u64::MAX)),
        FormatError::CountTooLarge { offset: 16, .. }
    ));
    // A count that the bytes that remain could not hold, even if small.
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("k", 1);
    assert!(matches!(err(&r), FormatError::CountTooLarge { .. }));

    let mut r = Raw::header(3, 0, 1);
    r.u64(u64::MAX).u64(0).u64(0);
    assert!(matches!(
        err(&r),
        FormatError::Truncated {
            offset: 24,
            needed: u64::MAX,
            ..
        }
    ));
    // A string value whose length runs past the end names its key.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"name").u32(8).u64(1 << 40).u64(0);
    assert!(
        matches!(err(&r), FormatError::Truncated { ref field, offset: 40, .. } if field == "name")
    );
    // Array counts are bounded by the bytes left.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"arr").u32(9).u32(10).u64(u64::MAX / 2).u64(0);
    assert!(matches!(err(&r), FormatError::CountTooLarge { ref field, .. } if field == "arr"));
    let mut r = Raw::header(3, 0, 1);
    r.str(b"strs").u32(9).u32(8).u64(3).str(b"a").str(b"b");
    assert!(matches!(err(&r), FormatError::CountTooLarge { .. }));
}

#[test]
fn hostile_shapes_and_types() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[1, 1, 1, 1, 1], 0, 0).data(32, 4);
    assert!(matches!(
        err(&r),
        FormatError::TooManyDims { ref tensor, n_dims: 5, offset: 33 } if tensor == "t"
    ));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[4, 0], 0, 0).data(32, 16);
    assert!(matches!(
        err(&r),
        FormatError::ZeroDim {
            axis: 1,
            offset: 45,
            ..
        }
    ));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[1 << 32, 1 << 32, 2], 0, 0).data(32, 4);
    assert!(matches!(err(&r), FormatError::ShapeOverflow { .. }));
    // The element count fits, the byte count does not.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[1 << 62], 0, 0).data(32, 4);
    assert!(matches!(err(&r), FormatError::ShapeOverflow { .. }));
    for id in [4, 31, 1000, u32::MAX] {
        let mut r = Raw::header(3, 1, 0);
        r.tensor("t", &[32], id, 0).data(32, 64);
        assert!(
            matches!(err(&r), FormatError::UnknownTensorType { type_id, offset: 45, .. } if type_id == id)
        );
    }
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[33], TensorType::Q4_0.id(), 0).data(32, 64);
    assert!(matches!(
        err(&r),
        FormatError::RowNotBlockMultiple {
            row_len: 33,
            block_size: 32,
            ..
        }
    ));
}

#[test]
fn hostile_offsets() {
    // Past the end, also with an offset that would overflow a naive sum.
    for offset in [32, 1 << 40, u64::MAX - 7] {
        let mut r = Raw::header(3, 1, 0);
        r.tensor("t", &[8], 0, offset).data(32, 32);
        assert!(
            matches!(err(&r), FormatError::TensorOutOfBounds { ref tensor, offset: 49, .. } if tensor == "t"),
            "offset {offset}"
        );
    }
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[2], 0, 4).data(32, 32);
    assert!(matches!(
        err(&r),
        FormatError::TensorMisaligned { alignment: 32, .. }
    ));
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[16], 0, 0)
        .tensor("b", &[8], 0, 32)
        .data(32, 128);
    assert!(matches!(
        err(&r),
        FormatError::TensorOverlap { ref tensor, ref other, .. } if tensor == "b" && other == "a"
    ));
    // Identical ranges overlap too, in either declaration order.
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[8], 0, 32)
        .tensor("b", &[16], 0, 0)
        .data(32, 128);
    assert!(matches!(err(&r), FormatError::TensorOverlap { .. }));
}

#[test]
fn duplicates() {
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[8], 0, 0)
        .tensor("a", &[8], 0, 32)
        .data(32, 64);
    assert!(matches!(err(&r), FormatError::DuplicateTensor { ref tensor, .. } if tensor == "a"));
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("k", 1).kv_u32("k", 2);
    assert!(matches!(err(&r), FormatError::DuplicateKey { ref key, offset: 41, .. } if key == "k"));
    let mut r = Raw::header(3, 0, 1);
    r.kv_u32("", 1);
    assert!(matches!(err(&r), FormatError::EmptyKey { index: 0, .. }));
}

#[test]
fn alignment_rules() {
    for a in [0, 3, 48] {
        let mut r = Raw::header(3, 0, 1);
        r.kv_u32("general.alignment", a);
        assert!(matches!(
            err(&r),
            FormatError::AlignmentNotPowerOfTwo { value, offset: 53 } if value == a
        ));
    }
    let mut r = Raw::header(3, 0, 1);
    r.str(b"general.alignment").u32(10).u64(32);
    assert!(matches!(
        err(&r),
        FormatError::AlignmentNotU32 {
            found: latte::gguf::ValueType::U64,
            ..
        }
    ));
    // Alignment 1 is a power of two.
    let mut r = Raw::header(3, 1, 1);
    r.kv_u32("general.alignment", 1)
        .tensor("t", &[1], 24, 0)
        .u8(7);
    assert_eq!(r.parse().unwrap().tensor("t").unwrap().bytes(), &[7]);
}

#[test]
fn magic_and_versions() {
    assert!(matches!(
        GgufFile::from_bytes(b"GGML\x03\0\0\0".to_vec())
            .unwrap_err()
            .format(),
        Some(FormatError::BadMagic { .. })
    ));
    assert!(matches!(
        GgufFile::from_bytes(b"GG".to_vec()).unwrap_err().format(),
        Some(FormatError::BadMagic { .. })
    ));
    let e = err(&Raw::header(1, 0, 0));
    assert!(matches!(e, FormatError::UnsupportedVersion { version: 1 }));
    assert!(e.to_string().contains("version 1"), "{e}");
    assert!(e.to_string().contains("re-convert"), "{e}");
    assert!(matches!(
        err(&Raw::header(4, 0, 0)),
        FormatError::UnsupportedVersion { version: 4 }
    ));
    assert!(matches!(
        err(&Raw::header(3u32.swap_bytes(), 0, 0)),
        FormatError::BigEndian { version: 3 }
    ));
    // The header fields themselves, cut short.
    let mut r = Raw::default();
    r.0.extend_from_slice(b"GGUF");
    r.u32(3).u32(0);
    assert!(matches!(err(&r), FormatError::Truncated { offset: 8, .. }));
}

#[test]
fn invalid_utf8_anywhere() {
    let bad = [0x66, 0xff, 0x66];
    let mut r = Raw::header(3, 0, 1);
    r.str(&bad).u32(4).u32(1);
    assert!(matches!(
        err(&r),
        FormatError::InvalidUtf8 { offset: 24, .. }
    ));
    let mut r = Raw::header(3, 0, 1);
    r.str(b"s").u32(8).str(&bad);
    assert!(matches!(err(&r), FormatError::InvalidUtf8 { ref field, offset: 37 } if field == "s"));
    let mut r = Raw::header(3, 0, 1);
    r.str(b"s").u32(9).u32(8).u64(2).str(b"ok").str(&bad);
    assert!(matches!(err(&r), FormatError::InvalidUtf8 { .. }));
    let mut r = Raw::header(3, 1, 0);
    r.str(&bad).u32(1).u64(1).u32(0).u64(0).data(32, 4);
    assert!(matches!(
        err(&r),
        FormatError::InvalidUtf8 { offset: 24, .. }
    ));
}

#[test]
fn unknown_value_types_and_bad_bools() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(13).u32(0);
    assert!(matches!(
        err(&r),
        FormatError::UnknownValueType {
            type_id: 13,
            offset: 33,
            ..
        }
    ));
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(9).u32(99).u64(0);
    assert!(matches!(
        err(&r),
        FormatError::UnknownValueType { type_id: 99, .. }
    ));
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(7).u8(2);
    assert!(matches!(
        err(&r),
        FormatError::InvalidBool {
            value: 2,
            offset: 37,
            ..
        }
    ));
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(9).u32(7).u64(2).u8(1).u8(9);
    assert!(matches!(err(&r), FormatError::InvalidBool { value: 9, .. }));
}

#[test]
fn array_nesting_bombs_are_refused() {
    // Deep: 100 000 nested arrays (1.2 MB) stop at the depth limit without deep recursion.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"bomb").u32(9);
    for _ in 0..100_000 {
        r.u32(9).u64(1);
    }
    r.u32(0).u64(0);
    assert!(matches!(
        err(&r),
        FormatError::NestingTooDeep { ref key, limit: 8, .. } if key == "bomb"
    ));
    // Wide: a huge count of empty arrays is bounded by the bytes that remain.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"wide").u32(9).u32(9).u64(u64::MAX / 12);
    assert!(matches!(err(&r), FormatError::CountTooLarge { .. }));
    // At the limit, nesting is fine.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"ok").u32(9);
    for _ in 0..7 {
        r.u32(9).u64(1);
    }
    r.u32(4).u64(1).u32(42);
    let f = r.parse().unwrap();
    let mut a = f.get("ok").and_then(MetadataValue::as_array).unwrap();
    for _ in 0..7 {
        a = &a.as_arrays().unwrap()[0];
    }
    assert_eq!(a.as_u32s(), Some(&[42][..]));
}

#[test]
fn fuzz_seeds_and_findings_replay_without_panic() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["seeds/gguf_parse", "findings"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            // Seeds are valid files; findings may be either.
            let _ = parse_and_touch(bytes);
            n += 1;
        }
    }
    assert!(n >= 5);
}

#[test]
fn nan_metadata_reads_back_bit_for_bit() {
    // The fuzzer's first finding: a NaN value broke an `==` in the harness, not the reader.
    let nan = f32::from_bits(0x7FC0_1234);
    let mut r = Raw::header(3, 0, 1);
    r.str(b"nan").u32(6).u32(nan.to_bits());
    let f = r.parse().unwrap();
    let v = f.get("nan").and_then(MetadataValue::as_f32).unwrap();
    assert_eq!(v.to_bits(), nan.to_bits());
}
