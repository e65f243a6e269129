//! Float dtypes of safetensors to f32: exact for F32, F16 and BF16 (both widen without rounding).

use thiserror::Error;

use super::Dtype;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConvertDtypeError {
    #[error("dtype {0:?} is not a float type latte converts (F32, F16, BF16)")]
    Unsupported(Dtype),
    #[error("{bytes} bytes of {dtype:?} cannot fill {elements} f32 values")]
    Length {
        dtype: Dtype,
        bytes: usize,
        elements: usize,
    },
}

/// Decodes little-endian `bytes` of `dtype` into `out` (one value per element of `out`).
pub fn to_f32(dtype: Dtype, bytes: &[u8], out: &mut [f32]) -> Result<(), ConvertDtypeError> {
    let size = match dtype {
        Dtype::F32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        other => return Err(ConvertDtypeError::Unsupported(other)),
    };
    if bytes.len() != out.len() * size {
        return Err(ConvertDtypeError::Length {
            dtype,
            bytes: bytes.len(),
            elements: out.len(),
        });
    }
    // Byte-wise decoding: the mapped data section need not be aligned for f32.
    match dtype {
        Dtype::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Dtype::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        _ => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widens_exactly() {
        let mut out = [0.0f32; 3];
        let f16: Vec<u8> = [1.0f32, -2.5, 65504.0]
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        to_f32(Dtype::F16, &f16, &mut out).unwrap();
        assert_eq!(out, [1.0, -2.5, 65504.0]);
        // bf16 is the top half of an f32.
        let bf16 = [0x80, 0x3f, 0x20, 0xc1, 0x00, 0x00];
        to_f32(Dtype::BF16, &bf16, &mut out).unwrap();
        assert_eq!(out, [1.0, -10.0, 0.0]);
        assert!(to_f32(Dtype::I32, &[0; 12], &mut out).is_err());
        assert!(to_f32(Dtype::F32, &[0; 11], &mut out).is_err());
    }
}
