//! Tensor element types: ggml's type ids, block sizes and byte sizes.
//!
//! This is the one table every layer agrees on: the GGUF reader validates tensor byte ranges with it,
//! the quantizers and kernels dispatch on it. It knows sizes for every type ggml defines (so a
//! llama.cpp file with an exotic type still parses and reports clearly), but only the types in
//! [`TensorType::is_computable`] have quantizers and kernels in this crate.
//!
//! It must not depend on any other module of the crate.

use std::fmt;

/// A ggml tensor type, by its numeric id in `ggml.h` (stable; stored in GGUF tensor infos).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
}

/// Number of weights in one super-block of the K-quants (`QK_K` in ggml).
pub const QK_K: usize = 256;

/// (type, ggml id, name, elements per block, bytes per block)
const TABLE: &[(TensorType, u32, &str, usize, usize)] = &[
    (TensorType::F32, 0, "F32", 1, 4),
    (TensorType::F16, 1, "F16", 1, 2),
    (TensorType::Q4_0, 2, "Q4_0", 32, 18),
    (TensorType::Q4_1, 3, "Q4_1", 32, 20),
    (TensorType::Q5_0, 6, "Q5_0", 32, 22),
    (TensorType::Q5_1, 7, "Q5_1", 32, 24),
    (TensorType::Q8_0, 8, "Q8_0", 32, 34),
    (TensorType::Q8_1, 9, "Q8_1", 32, 36),
    (TensorType::Q2_K, 10, "Q2_K", QK_K, 84),
    (TensorType::Q3_K, 11, "Q3_K", QK_K, 110),
    (TensorType::Q4_K, 12, "Q4_K", QK_K, 144),
    (TensorType::Q5_K, 13, "Q5_K", QK_K, 176),
    (TensorType::Q6_K, 14, "Q6_K", QK_K, 210),
    (TensorType::Q8_K, 15, "Q8_K", QK_K, 292),
    (TensorType::IQ2_XXS, 16, "IQ2_XXS", QK_K, 66),
    (TensorType::IQ2_XS, 17, "IQ2_XS", QK_K, 74),
    (TensorType::IQ3_XXS, 18, "IQ3_XXS", QK_K, 98),
    (TensorType::IQ1_S, 19, "IQ1_S", QK_K, 50),
    (TensorType::IQ4_NL, 20, "IQ4_NL", 32, 18),
    (TensorType::IQ3_S, 21, "IQ3_S", QK_K, 110),
    (TensorType::IQ2_S, 22, "IQ2_S", QK_K, 82),
    (TensorType::IQ4_XS, 23, "IQ4_XS", QK_K, 136),
    (TensorType::I8, 24, "I8", 1, 1),
    (TensorType::I16, 25, "I16", 1, 2),
    (TensorType::I32, 26, "I32", 1, 4),
    (TensorType::I64, 27, "I64", 1, 8),
    (TensorType::F64, 28, "F64", 1, 8),
    (TensorType::IQ1_M, 29, "IQ1_M", QK_K, 56),
    (TensorType::BF16, 30, "BF16", 1, 2),
    (TensorType::TQ1_0, 34, "TQ1_0", QK_K, 54),
    (TensorType::TQ2_0, 35, "TQ2_0", QK_K, 66),
    (TensorType::MXFP4, 39, "MXFP4", 32, 17),
];

impl TensorType {
    /// The types this crate can quantize to, dequantize and multiply with.
    pub const COMPUTABLE: [TensorType; 11] = [
        TensorType::F32,
        TensorType::F16,
        TensorType::BF16,
        TensorType::Q8_0,
        TensorType::Q4_0,
        TensorType::Q4_1,
        TensorType::Q5_0,
        TensorType::Q5_1,
        TensorType::Q4_K,
        TensorType::Q5_K,
        TensorType::Q6_K,
    ];

    fn entry(self) -> &'static (TensorType, u32, &'static str, usize, usize) {
        TABLE
            .iter()
            .find(|e| e.0 == self)
            .expect("every TensorType variant has a table row")
    }

    /// The type with ggml id `id`, or `None` for an id ggml does not define (or has retired).
    pub fn from_id(id: u32) -> Option<TensorType> {
        TABLE.iter().find(|e| e.1 == id).map(|e| e.0)
    }

    /// The type named `name` (case-insensitive: `q4_k`, `Q4_K`, `f16`).
    pub fn from_name(name: &str) -> Option<TensorType> {
        TABLE
            .iter()
            .find(|e| e.2.eq_ignore_ascii_case(name))
            .map(|e| e.0)
    }

    /// ggml's numeric id.
    pub fn id(self) -> u32 {
        self.entry().1
    }

    /// ggml's name, as llama.cpp prints it (`Q4_K`).
    pub fn name(self) -> &'static str {
        self.entry().2
    }

    /// Elements per block (1 for plain types).
    pub fn block_size(self) -> usize {
        self.entry().3
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.entry().4
    }

    /// Whether this crate has quantizers and kernels for the type.
    pub fn is_computable(self) -> bool {
        Self::COMPUTABLE.contains(&self)
    }

    /// Whether the type is stored in blocks with scales (anything but plain numbers).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes taken by a row of `n` elements, or `None` when `n` is not a multiple of the block size
    /// or the byte count overflows.
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let block = self.block_size() as u64;
        if !n.is_multiple_of(block) {
            return None;
        }
        (n / block).checked_mul(self.block_bytes() as u64)
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_round_trip() {
        for e in TABLE {
            assert_eq!(TensorType::from_id(e.1), Some(e.0));
            assert_eq!(TensorType::from_name(&e.2.to_lowercase()), Some(e.0));
            assert_eq!(e.0.id(), e.1);
        }
        // Retired ids (Q4_2, Q4_3, the Q4_0_4_4 family) are unknown.
        for id in [4, 5, 31, 32, 33, 36, 37, 38, 40, 1000] {
            assert_eq!(TensorType::from_id(id), None, "id {id}");
        }
    }

    #[test]
    fn row_bytes_checks_blocks_and_overflow() {
        assert_eq!(TensorType::Q4_0.row_bytes(64), Some(36));
        assert_eq!(TensorType::Q4_0.row_bytes(33), None);
        assert_eq!(TensorType::Q6_K.row_bytes(512), Some(420));
        assert_eq!(TensorType::F32.row_bytes(u64::MAX), None);
    }
}
