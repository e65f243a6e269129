//! GGUF metadata values: the thirteen value types, scalars and (possibly nested) typed arrays.
//!
//! This module owns the in-memory shape of a metadata value and its typed accessors. It must not
//! parse or serialise bytes (the reader and writer do that).
//!
//! Arrays are stored per element type (`Vec<u32>`, `Vec<String>`, …) rather than as a
//! `Vec<MetadataValue>`: a 150 000-token vocabulary then costs what its strings cost, and an empty
//! array still knows its element type.

use std::fmt;

/// A GGUF value type, by its id in the file (`gguf_type` in ggml's `gguf.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl ValueType {
    /// Every type, in id order.
    pub const ALL: [ValueType; 13] = [
        ValueType::U8,
        ValueType::I8,
        ValueType::U16,
        ValueType::I16,
        ValueType::U32,
        ValueType::I32,
        ValueType::F32,
        ValueType::Bool,
        ValueType::String,
        ValueType::Array,
        ValueType::U64,
        ValueType::I64,
        ValueType::F64,
    ];

    /// The type with file id `id`, or `None` for an id GGUF does not define.
    pub fn from_id(id: u32) -> Option<ValueType> {
        Self::ALL.get(id as usize).copied()
    }

    /// The id stored in the file.
    pub fn id(self) -> u32 {
        Self::ALL
            .iter()
            .position(|&t| t == self)
            .map_or(u32::MAX, |i| i as u32)
    }

    /// Bytes one value of this type takes in the file, for fixed-size types (`None` for strings
    /// and arrays).
    pub fn fixed_size(self) -> Option<usize> {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => Some(1),
            ValueType::U16 | ValueType::I16 => Some(2),
            ValueType::U32 | ValueType::I32 | ValueType::F32 => Some(4),
            ValueType::U64 | ValueType::I64 | ValueType::F64 => Some(8),
            ValueType::String | ValueType::Array => None,
        }
    }

    /// The fewest bytes one value of this type can take in the file (a string is at least its
    /// 8-byte length, an array its 4-byte element type and 8-byte count). Used to bound counts
    /// read from the file by the bytes that remain.
    pub fn min_size(self) -> usize {
        match self {
            ValueType::String => 8,
            ValueType::Array => 12,
            other => other.fixed_size().unwrap_or(1),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ValueType::U8 => "u8",
            ValueType::I8 => "i8",
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::F32 => "f32",
            ValueType::Bool => "bool",
            ValueType::String => "string",
            ValueType::Array => "array",
            ValueType::U64 => "u64",
            ValueType::I64 => "i64",
            ValueType::F64 => "f64",
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetadataValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(MetadataArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A metadata array: all elements share one type, kept even when the array is empty.
#[derive(Clone, Debug, PartialEq)]
pub enum MetadataArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    /// Arrays of arrays (gguf-py reads and writes them; llama.cpp's `gguf.cpp` does not).
    Array(Vec<MetadataArray>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl MetadataValue {
    pub fn value_type(&self) -> ValueType {
        match self {
            MetadataValue::U8(_) => ValueType::U8,
            MetadataValue::I8(_) => ValueType::I8,
            MetadataValue::U16(_) => ValueType::U16,
            MetadataValue::I16(_) => ValueType::I16,
            MetadataValue::U32(_) => ValueType::U32,
            MetadataValue::I32(_) => ValueType::I32,
            MetadataValue::F32(_) => ValueType::F32,
            MetadataValue::Bool(_) => ValueType::Bool,
            MetadataValue::String(_) => ValueType::String,
            MetadataValue::Array(_) => ValueType::Array,
            MetadataValue::U64(_) => ValueType::U64,
            MetadataValue::I64(_) => ValueType::I64,
            MetadataValue::F64(_) => ValueType::F64,
        }
    }

    /// Any integer value as `i128`, which holds every GGUF integer type exactly.
    fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            MetadataValue::U8(v) => v.into(),
            MetadataValue::I8(v) => v.into(),
            MetadataValue::U16(v) => v.into(),
            MetadataValue::I16(v) => v.into(),
            MetadataValue::U32(v) => v.into(),
            MetadataValue::I32(v) => v.into(),
            MetadataValue::U64(v) => v.into(),
            MetadataValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// An unsigned integer (u8, u16, u32, or a u64 that fits) as `u32`. Writers disagree on which
    /// width they use for counts, so readers should accept any that holds the value.
    pub fn as_u32(&self) -> Option<u32> {
        self.as_u64().and_then(|v| u32::try_from(v).ok())
    }

    /// Any unsigned integer as `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            MetadataValue::U8(_)
            | MetadataValue::U16(_)
            | MetadataValue::U32(_)
            | MetadataValue::U64(_) => self.as_integer().and_then(|v| u64::try_from(v).ok()),
            _ => None,
        }
    }

    /// Any integer, signed or not, that fits in `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_integer().and_then(|v| i64::try_from(v).ok())
    }

    /// An `f32` value (only F32: narrowing an F64 silently would hide a writer's mistake).
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            MetadataValue::F32(v) => Some(v),
            _ => None,
        }
    }

    /// An F32 or F64 value as `f64` (widening is exact).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetadataValue::F32(v) => Some(v.into()),
            MetadataValue::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetadataValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetadataValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&MetadataArray> {
        match self {
            MetadataValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl MetadataArray {
    /// The element type.
    pub fn elem_type(&self) -> ValueType {
        match self {
            MetadataArray::U8(_) => ValueType::U8,
            MetadataArray::I8(_) => ValueType::I8,
            MetadataArray::U16(_) => ValueType::U16,
            MetadataArray::I16(_) => ValueType::I16,
            MetadataArray::U32(_) => ValueType::U32,
            MetadataArray::I32(_) => ValueType::I32,
            MetadataArray::F32(_) => ValueType::F32,
            MetadataArray::Bool(_) => ValueType::Bool,
            MetadataArray::String(_) => ValueType::String,
            MetadataArray::Array(_) => ValueType::Array,
            MetadataArray::U64(_) => ValueType::U64,
            MetadataArray::I64(_) => ValueType::I64,
            MetadataArray::F64(_) => ValueType::F64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            MetadataArray::U8(v) => v.len(),
            MetadataArray::I8(v) => v.len(),
            MetadataArray::U16(v) => v.len(),
            MetadataArray::I16(v) => v.len(),
            MetadataArray::U32(v) => v.len(),
            MetadataArray::I32(v) => v.len(),
            MetadataArray::F32(v) => v.len(),
            MetadataArray::Bool(v) => v.len(),
            MetadataArray::String(v) => v.len(),
            MetadataArray::Array(v) => v.len(),
            MetadataArray::U64(v) => v.len(),
            MetadataArray::I64(v) => v.len(),
            MetadataArray::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as a standalone value (cloned), or `None` past the end.
    pub fn get(&self, i: usize) -> Option<MetadataValue> {
        Some(match self {
            MetadataArray::U8(v) => MetadataValue::U8(*v.get(i)?),
            MetadataArray::I8(v) => MetadataValue::I8(*v.get(i)?),
            MetadataArray::U16(v) => MetadataValue::U16(*v.get(i)?),
            MetadataArray::I16(v) => MetadataValue::I16(*v.get(i)?),
            MetadataArray::U32(v) => MetadataValue::U32(*v.get(i)?),
            MetadataArray::I32(v) => MetadataValue::I32(*v.get(i)?),
            MetadataArray::F32(v) => MetadataValue::F32(*v.get(i)?),
            MetadataArray::Bool(v) => MetadataValue::Bool(*v.get(i)?),
            MetadataArray::String(v) => MetadataValue::String(v.get(i)?.clone()),
            MetadataArray::Array(v) => MetadataValue::Array(v.get(i)?.clone()),
            MetadataArray::U64(v) => MetadataValue::U64(*v.get(i)?),
            MetadataArray::I64(v) => MetadataValue::I64(*v.get(i)?),
            MetadataArray::F64(v) => MetadataValue::F64(*v.get(i)?),
        })
    }

    /// Every element of an integer array that fits in `i64` (e.g. llama.cpp stores
    /// `rope.dimension_sections` as i32, other writers as u32).
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        fn conv<T: Copy>(v: &[T], f: impl Fn(T) -> Option<i64>) -> Option<Vec<i64>> {
            v.iter().map(|&x| f(x)).collect()
        }
        match self {
            MetadataArray::U8(v) => conv(v, |x| Some(x.into())),
            MetadataArray::I8(v) => conv(v, |x| Some(x.into())),
            MetadataArray::U16(v) => conv(v, |x| Some(x.into())),
            MetadataArray::I16(v) => conv(v, |x| Some(x.into())),
            MetadataArray::U32(v) => conv(v, |x| Some(x.into())),
            MetadataArray::I32(v) => conv(v, |x| Some(x.into())),
            MetadataArray::U64(v) => conv(v, |x| i64::try_from(x).ok()),
            MetadataArray::I64(v) => Some(v.clone()),
            _ => None,
        }
    }
}

/// Typed slice accessors: `as_u32s()`, `as_strs()`, … return the elements when the array has
/// exactly that element type.
macro_rules! slice_accessors {
    ($($fn_name:ident => $variant:ident : $t:ty),* $(,)?) => {
        impl MetadataArray {
            $(
                pub fn $fn_name(&self) -> Option<&[$t]> {
                    match self {
                        MetadataArray::$variant(v) => Some(v),
                        _ => None,
                    }
                }
            )*
        }
    };
}

slice_accessors! {
    as_u8s => U8: u8,
    as_i8s => I8: i8,
    as_u16s => U16: u16,
    as_i16s => I16: i16,
    as_u32s => U32: u32,
    as_i32s => I32: i32,
    as_f32s => F32: f32,
    as_bools => Bool: bool,
    as_strs => String: String,
    as_arrays => Array: MetadataArray,
    as_u64s => U64: u64,
    as_i64s => I64: i64,
    as_f64s => F64: f64,
}

/// `MetadataValue::from(x)` for the scalar and array types, so writers can say
/// `w.push_metadata("n", 8u32)`.
macro_rules! from_impls {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(
            impl From<$t> for MetadataValue {
                fn from(v: $t) -> Self {
                    MetadataValue::$variant(v)
                }
            }
            impl From<Vec<$t>> for MetadataArray {
                fn from(v: Vec<$t>) -> Self {
                    MetadataArray::$variant(v)
                }
            }
            impl From<Vec<$t>> for MetadataValue {
                fn from(v: Vec<$t>) -> Self {
                    MetadataValue::Array(MetadataArray::$variant(v))
                }
            }
        )*
    };
}

from_impls! {
    u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, f32 => F32,
    bool => Bool, String => String, u64 => U64, i64 => I64, f64 => F64,
}

impl From<&str> for MetadataValue {
    fn from(v: &str) -> Self {
        MetadataValue::String(v.to_owned())
    }
}

impl From<MetadataArray> for MetadataValue {
    fn from(v: MetadataArray) -> Self {
        MetadataValue::Array(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_ids_follow_gguf_h() {
        // gguf.h: UINT8=0 … ARRAY=9, UINT64=10, INT64=11, FLOAT64=12.
        assert_eq!(ValueType::from_id(7), Some(ValueType::Bool));
        assert_eq!(ValueType::from_id(9), Some(ValueType::Array));
        assert_eq!(ValueType::from_id(12), Some(ValueType::F64));
        assert_eq!(ValueType::from_id(13), None);
        for t in ValueType::ALL {
            assert_eq!(ValueType::from_id(t.id()), Some(t));
        }
    }

    #[test]
    fn integer_accessors_accept_any_width_that_fits() {
        assert_eq!(MetadataValue::U8(7).as_u32(), Some(7));
        assert_eq!(MetadataValue::U64(7).as_u32(), Some(7));
        assert_eq!(MetadataValue::U64(1 << 40).as_u32(), None);
        assert_eq!(MetadataValue::U64(1 << 40).as_u64(), Some(1 << 40));
        assert_eq!(MetadataValue::I32(7).as_u32(), None);
        assert_eq!(MetadataValue::I32(-7).as_i64(), Some(-7));
        assert_eq!(MetadataValue::U64(u64::MAX).as_i64(), None);
        assert_eq!(MetadataValue::F32(1.5).as_f64(), Some(1.5));
        assert_eq!(MetadataValue::F64(1.5).as_f32(), None);
        assert_eq!(MetadataValue::from("x").as_str(), Some("x"));
        assert_eq!(MetadataValue::Bool(true).as_bool(), Some(true));
        assert_eq!(MetadataValue::U8(1).as_bool(), None);
    }

    #[test]
    fn arrays_keep_their_element_type() {
        let a = MetadataArray::U32(vec![]);
        assert_eq!(a.elem_type(), ValueType::U32);
        assert!(a.is_empty());
        let v = MetadataValue::from(vec![1i32, -2, 3]);
        let arr = v.as_array().unwrap();
        assert_eq!(arr.as_i32s(), Some(&[1, -2, 3][..]));
        assert_eq!(arr.as_u32s(), None);
        assert_eq!(arr.get(1), Some(MetadataValue::I32(-2)));
        assert_eq!(arr.get(3), None);
        assert_eq!(arr.to_i64_vec(), Some(vec![1, -2, 3]));
        assert_eq!(MetadataArray::U64(vec![u64::MAX]).to_i64_vec(), None);
        assert_eq!(MetadataArray::F32(vec![1.0]).to_i64_vec(), None);
    }
}
