//! Reads a file written by gguf-py (an independent writer; `tools/make_gguf_fixture.py`) and
//! compares every key, value, tensor name, shape, type and byte with what the script gave the
//! writer (recorded in the JSON manifest next to it).

use std::path::PathBuf;

use latte::dtype::TensorType;
use latte::gguf::{GgufFile, MetadataArray, MetadataValue};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf")
        .join(name)
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn int(v: &Value) -> i128 {
    v.as_i64()
        .map(i128::from)
        .or_else(|| v.as_u64().map(i128::from))
        .unwrap_or_else(|| panic!("not an integer: {v}"))
}

fn expected_array(elem: &str, values: &Value) -> MetadataArray {
    let vs = values.as_array().unwrap();
    let ints = || vs.iter().map(int);
    // The manifest's values are in range for their type (the writer packed them), so the
    // narrowing casts below are exact; `try_from` would only restate that.
    match elem {
        "u8" => MetadataArray::U8(ints().map(|x| x as u8).collect()),
        "i8" => MetadataArray::I8(ints().map(|x| x as i8).collect()),
        "u16" => MetadataArray::U16(ints().map(|x| x as u16).collect()),
        "i16" => MetadataArray::I16(ints().map(|x| x as i16).collect()),
        "u32" => MetadataArray::U32(ints().map(|x| x as u32).collect()),
        "i32" => MetadataArray::I32(ints().map(|x| x as i32).collect()),
        "u64" => MetadataArray::U64(ints().map(|x| x as u64).collect()),
        "i64" => MetadataArray::I64(ints().map(|x| x as i64).collect()),
        // The script uses only values exactly representable in f32.
        "f32" => MetadataArray::F32(vs.iter().map(|v| v.as_f64().unwrap() as f32).collect()),
        "f64" => MetadataArray::F64(vs.iter().map(|v| v.as_f64().unwrap()).collect()),
        "bool" => MetadataArray::Bool(vs.iter().map(|v| v.as_bool().unwrap()).collect()),
        "string" => {
            MetadataArray::String(vs.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        }
        "array" => MetadataArray::Array(
            vs.iter()
                .map(|inner| expected_array(inner["elem"].as_str().unwrap(), &inner["value"]))
                .collect(),
        ),
        other => panic!("unknown element type {other}"),
    }
}

fn expected_value(entry: &Value) -> MetadataValue {
    let v = &entry["value"];
    match entry["type"].as_str().unwrap() {
        "u8" => MetadataValue::U8(int(v) as u8),
        "i8" => MetadataValue::I8(int(v) as i8),
        "u16" => MetadataValue::U16(int(v) as u16),
        "i16" => MetadataValue::I16(int(v) as i16),
        "u32" => MetadataValue::U32(int(v) as u32),
        "i32" => MetadataValue::I32(int(v) as i32),
        "u64" => MetadataValue::U64(int(v) as u64),
        "i64" => MetadataValue::I64(int(v) as i64),
        "f32" => MetadataValue::F32(v.as_f64().unwrap() as f32),
        "f64" => MetadataValue::F64(v.as_f64().unwrap()),
        "bool" => MetadataValue::Bool(v.as_bool().unwrap()),
        "string" => MetadataValue::String(v.as_str().unwrap().to_owned()),
        "array" => MetadataValue::Array(expected_array(entry["elem"].as_str().unwrap(), v)),
        other => panic!("unknown type {other}"),
    }
}

#[test]
fn reads_every_key_and_tensor_written_by_gguf_py() {
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("gguf_py_sample.json")).unwrap())
            .unwrap();
    let f = GgufFile::open(fixture("gguf_py_sample.gguf")).unwrap();
    assert_eq!(
        u64::from(f.version()),
        manifest["version"].as_u64().unwrap()
    );
    assert_eq!(f.alignment(), manifest["alignment"].as_u64().unwrap());

    let kv = manifest["metadata"].as_array().unwrap();
    assert_eq!(f.metadata().len(), kv.len());
    for ((key, value), entry) in f.metadata().iter().zip(kv) {
        assert_eq!(key, entry["key"].as_str().unwrap());
        assert_eq!(value, &expected_value(entry), "{key}");
    }
    assert_eq!(
        f.get("test.arr.nested")
            .and_then(MetadataValue::as_array)
            .and_then(|a| a.as_arrays())
            .map(|inner| inner[0].as_i32s()),
        Some(Some(&[1, 2][..]))
    );

    let tensors = manifest["tensors"].as_array().unwrap();
    assert_eq!(f.tensor_infos().len(), tensors.len());
    for (info, t) in f.tensor_infos().iter().zip(tensors) {
        let name = t["name"].as_str().unwrap();
        assert_eq!(info.name, name);
        assert_eq!(
            Some(info.ty),
            TensorType::from_name(t["type"].as_str().unwrap())
        );
        let dims: Vec<u64> = t["dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(info.dims, dims, "{name}");
        assert_eq!(info.offset % f.alignment(), 0);
        let view = f.tensor(name).unwrap();
        assert_eq!(
            view.bytes(),
            &unhex(t["hex"].as_str().unwrap())[..],
            "{name}"
        );
    }
    // The F32 tensor, typed: np.arange(12) * 0.5 - 3 in the script.
    let w = f.tensor("w.f32").unwrap();
    let expected: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 3.0).collect();
    assert_eq!(w.as_f32().unwrap(), &expected[..]);
    assert_eq!((w.row_len(), w.n_rows()), (4, 3));
}
