//! The safetensors header parser: pure bytes in, validated tensor list out.
//!
//! Everything a hostile file could get wrong is checked here, before any tensor byte is read:
//! the length prefix (truncated, larger than the file, or absurd), the JSON (malformed, wrong
//! types), each tensor's dtype, shape (element count overflow) and data range (inverted,
//! overflowing, outside the data section, not matching dtype × shape, overlapping another).

use std::ops::Range;

use serde_json::Value;
use thiserror::Error;

/// The reference implementation refuses headers larger than 100 MB; so do we.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Element types a safetensors file can declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    F8E4M3,
    F8E5M2,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    I64,
    U64,
    F64,
}

impl Dtype {
    pub fn from_name(name: &str) -> Option<Dtype> {
        Some(match name {
            "BOOL" => Dtype::Bool,
            "U8" => Dtype::U8,
            "I8" => Dtype::I8,
            "F8_E4M3" => Dtype::F8E4M3,
            "F8_E5M2" => Dtype::F8E5M2,
            "I16" => Dtype::I16,
            "U16" => Dtype::U16,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "I32" => Dtype::I32,
            "U32" => Dtype::U32,
            "F32" => Dtype::F32,
            "I64" => Dtype::I64,
            "U64" => Dtype::U64,
            "F64" => Dtype::F64,
            _ => return None,
        })
    }

    pub fn size(self) -> u64 {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 | Dtype::F8E4M3 | Dtype::F8E5M2 => 1,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::U64 | Dtype::F64 => 8,
        }
    }
}

/// One tensor of a safetensors file; `data` is relative to the data section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StTensor {
    pub name: String,
    pub dtype: Dtype,
    /// Row-major (torch) order, outermost first.
    pub shape: Vec<u64>,
    pub data: Range<usize>,
}

impl StTensor {
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HeaderError {
    #[error("file of {len} bytes is too short for the 8-byte header length")]
    TooShort { len: usize },
    #[error("header length {declared} exceeds the {available} bytes after it (truncated file?)")]
    HeaderPastEnd { declared: u64, available: u64 },
    #[error("header length {0} exceeds the {MAX_HEADER_BYTES}-byte limit")]
    HeaderTooLarge(u64),
    #[error("header is not valid JSON: {0}")]
    Json(String),
    #[error("header is not a JSON object")]
    NotAnObject,
    #[error("tensor '{name}': {reason}")]
    BadEntry { name: String, reason: String },
    #[error("tensor '{name}': unknown dtype '{dtype}'")]
    UnknownDtype { name: String, dtype: String },
    #[error("tensor '{name}': shape {shape:?} overflows")]
    ShapeOverflow { name: String, shape: Vec<u64> },
    #[error("tensor '{name}': data_offsets [{begin}, {end}] hold {} bytes, dtype × shape needs {needed}", end.saturating_sub(*begin))]
    SizeMismatch {
        name: String,
        begin: u64,
        end: u64,
        needed: u64,
    },
    #[error("tensor '{name}': data_offsets [{begin}, {end}] lie outside the {data_len}-byte data section")]
    OutOfRange {
        name: String,
        begin: u64,
        end: u64,
        data_len: u64,
    },
    #[error("tensors '{first}' and '{second}' overlap in the data section")]
    Overlap { first: String, second: String },
    /// JSON itself allows it, but which copy would be meant? The `safetensors` library refuses it.
    #[error("tensor '{0}' is declared twice")]
    Duplicate(String),
}

/// Validates a whole file's bytes: returns where the data section starts and every tensor
/// (header order; `__metadata__` is skipped).
pub fn parse_header(bytes: &[u8]) -> Result<(usize, Vec<StTensor>), HeaderError> {
    let prefix: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or(HeaderError::TooShort { len: bytes.len() })?;
    let declared = u64::from_le_bytes(prefix);
    let available = (bytes.len() - 8) as u64;
    if declared > MAX_HEADER_BYTES {
        return Err(HeaderError::HeaderTooLarge(declared));
    }
    if declared > available {
        return Err(HeaderError::HeaderPastEnd {
            declared,
            available,
        });
    }
    let data_start = 8 + declared as usize;
    let Entries { entries, duplicate } =
        serde_json::from_slice(&bytes[8..data_start]).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => HeaderError::NotAnObject,
            _ => HeaderError::Json(e.to_string()),
        })?;
    if let Some(name) = duplicate {
        return Err(HeaderError::Duplicate(name));
    }
    let data_len = (bytes.len() - data_start) as u64;
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, entry) in &entries {
        if name == "__metadata__" {
            continue;
        }
        tensors.push(parse_entry(name, entry, data_len)?);
    }
    let mut by_start: Vec<&StTensor> = tensors.iter().filter(|t| !t.data.is_empty()).collect();
    by_start.sort_by_key(|t| t.data.start);
    for pair in by_start.windows(2) {
        if pair[0].data.end > pair[1].data.start {
            return Err(HeaderError::Overlap {
                first: pair[0].name.clone(),
                second: pair[1].name.clone(),
            });
        }
    }
    Ok((data_start, tensors))
}

/// The header's entries by name, and the first name seen twice (a JSON object deserialized into a
/// map would keep the last copy without a word).
struct Entries {
    entries: std::collections::BTreeMap<String, Value>,
    duplicate: Option<String>,
}

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> serde::de::Visitor<'de> for EntriesVisitor {
            type Value = Entries;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Entries, A::Error> {
                let mut out = Entries {
                    entries: std::collections::BTreeMap::new(),
                    duplicate: None,
                };
                while let Some(name) = map.next_key::<String>()? {
                    let value: Value = map.next_value()?;
                    match out.entries.entry(name) {
                        std::collections::btree_map::Entry::Occupied(seen) => {
                            out.duplicate.get_or_insert_with(|| seen.key().clone());
                        }
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            slot.insert(value);
                        }
                    }
                }
                Ok(out)
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

fn parse_entry(name: &str, entry: &Value, data_len: u64) -> Result<StTensor, HeaderError> {
    let bad = |reason: &str| HeaderError::BadEntry {
        name: name.into(),
        reason: reason.into(),
    };
    let dtype_name = entry
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("'dtype' is missing or not a string"))?;
    let dtype = Dtype::from_name(dtype_name).ok_or_else(|| HeaderError::UnknownDtype {
        name: name.into(),
        dtype: dtype_name.into(),
    })?;
    let shape = u64_array(entry.get("shape"))
        .ok_or_else(|| bad("'shape' is missing or not an array of unsigned integers"))?;
    let offsets = u64_array(entry.get("data_offsets"))
        .filter(|o| o.len() == 2)
        .ok_or_else(|| bad("'data_offsets' is missing or not two unsigned integers"))?;
    let (begin, end) = (offsets[0], offsets[1]);
    let needed = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.size()))
        .ok_or_else(|| HeaderError::ShapeOverflow {
            name: name.into(),
            shape: shape.clone(),
        })?;
    if begin > end || end > data_len {
        return Err(HeaderError::OutOfRange {
            name: name.into(),
            begin,
            end,
            data_len,
        });
    }
    if end - begin != needed {
        return Err(HeaderError::SizeMismatch {
            name: name.into(),
            begin,
            end,
            needed,
        });
    }
    Ok(StTensor {
        name: name.into(),
        dtype,
        shape,
        // Both fit in usize: they are at most the data section's length.
        data: begin as usize..end as usize,
    })
}

fn u64_array(value: Option<&Value>) -> Option<Vec<u64>> {
    value?.as_array()?.iter().map(Value::as_u64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data_len: usize) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.resize(out.len() + data_len, 0);
        out
    }

    #[test]
    fn parses_a_valid_header() {
        let bytes = file(
            r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}}"#,
            32,
        );
        let (start, tensors) = parse_header(&bytes).unwrap();
        assert_eq!(start, bytes.len() - 32);
        assert_eq!(tensors.len(), 2);
        assert_eq!(tensors[0].shape, vec![2, 3]);
        assert_eq!(tensors[1].dtype, Dtype::BF16);
        assert_eq!(tensors[1].data, 24..32);
    }

    #[test]
    fn rejects_hostile_headers() {
        let entry = |dtype: &str, shape: &str, offsets: &str| {
            format!(r#"{{"t":{{"dtype":"{dtype}","shape":{shape},"data_offsets":{offsets}}}}}"#)
        };
        type Case = (Vec<u8>, fn(&HeaderError) -> bool);
        let cases: Vec<Case> = vec![
            (vec![1, 2, 3], |e| matches!(e, HeaderError::TooShort { .. })),
            (u64::MAX.to_le_bytes().to_vec(), |e| {
                matches!(e, HeaderError::HeaderTooLarge(_))
            }),
            (50u64.to_le_bytes().to_vec(), |e| {
                matches!(e, HeaderError::HeaderPastEnd { .. })
            }),
            (file("{not json", 0), |e| matches!(e, HeaderError::Json(_))),
            (file("[1,2]", 0), |e| matches!(e, HeaderError::NotAnObject)),
            (file(&entry("F32", "[2]", "[0,8]"), 4), |e| {
                matches!(e, HeaderError::OutOfRange { .. })
            }),
            (file(&entry("F32", "[2]", "[8,0]"), 8), |e| {
                matches!(e, HeaderError::OutOfRange { .. })
            }),
            (file(&entry("F32", "[3]", "[0,8]"), 8), |e| {
                matches!(e, HeaderError::SizeMismatch { .. })
            }),
            (
                file(&entry("F64", "[4294967296,4294967296]", "[0,8]"), 8),
                |e| matches!(e, HeaderError::ShapeOverflow { .. }),
            ),
            (
                file(
                    &entry("F32", "[2]", "[18446744073709551615,18446744073709551615]"),
                    8,
                ),
                |e| matches!(e, HeaderError::OutOfRange { .. }),
            ),
            (file(&entry("Q4", "[2]", "[0,8]"), 8), |e| {
                matches!(e, HeaderError::UnknownDtype { .. })
            }),
            (file(&entry("F32", "[-2]", "[0,8]"), 8), |e| {
                matches!(e, HeaderError::BadEntry { .. })
            }),
            (file(&entry("F32", "[2]", "[0]"), 8), |e| {
                matches!(e, HeaderError::BadEntry { .. })
            }),
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                    12,
                ),
                |e| matches!(e, HeaderError::Overlap { .. }),
            ),
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                    8,
                ),
                |e| matches!(e, HeaderError::Duplicate(name) if name == "a"),
            ),
        ];
        for (i, (bytes, expected)) in cases.iter().enumerate() {
            let err = parse_header(bytes).expect_err(&format!("case {i} must fail"));
            assert!(expected(&err), "case {i}: unexpected {err:?}");
        }
    }

    /// Seeded byte mutations of a valid file: never a panic, and whatever is accepted describes
    /// ranges inside the input whose sizes match dtype × shape.
    #[test]
    fn mutations_never_panic_and_accepted_ranges_are_sound() {
        let valid = file(
            r#"{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}}"#,
            32,
        );
        let mut state = 0x1234_5678_u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        for _ in 0..3000 {
            let mut bytes = valid.clone();
            for _ in 0..1 + next() % 4 {
                let i = next() % bytes.len();
                bytes[i] = match next() % 3 {
                    0 => bytes[i] ^ (1 << (next() % 8)),
                    1 => b"0123456789[]{},:\"\"eE-"[next() % 21],
                    _ => next() as u8,
                };
            }
            if let Ok((start, tensors)) = parse_header(&bytes) {
                for t in tensors {
                    assert!(start + t.data.end <= bytes.len());
                    assert_eq!(t.data.len() as u64, t.n_elements() * t.dtype.size());
                }
            }
        }
    }

    /// Every truncation of a valid file is an error or a smaller valid file, never a panic.
    #[test]
    fn truncations_never_panic() {
        let bytes = file(
            r#"{"a":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]}}"#,
            8,
        );
        for len in 0..bytes.len() {
            assert!(parse_header(&bytes[..len]).is_err(), "length {len}");
        }
    }
}
