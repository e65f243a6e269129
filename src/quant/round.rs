//! ggml's float → integer conversions: the K-quants' `nearest_int` bit trick, and C's plain
//! `(int8_t)f` casts of the legacy quantizers as ggml's x86-64 build executes them.
//!
//! Quantizers call these so that ties and out-of-range values convert exactly as ggml converts
//! them. This module must not hold anything else.

/// Rounds `x` to the nearest integer, ties to even, the way ggml's `nearest_int` does: adding
/// 1.5·2²³ pushes the integer part into the low mantissa bits (round-to-nearest-even by the FPU),
/// which are then read back. Only meaningful for |x| ≤ 4194303 (ggml asserts that in debug builds
/// only); outside that range, and for NaN, this returns the same bits ggml's release build returns.
#[inline]
pub fn nearest_int(x: f32) -> i32 {
    let val = x + 12_582_912.0;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// C's `(int8_t)f` / `(uint8_t)f` as ggml's x86-64 build computes it: `cvttss2si` (truncate toward
/// zero into an `i32`; NaN and values outside the `i32` range give `i32::MIN`), then the low byte
/// (take it with `as i8` / `as u8`). For values that fit the byte this is plain truncation. It
/// matters only for degenerate blocks (subnormal maxima make `1/d` infinite), where C leaves the
/// conversion undefined; we fix it to what ggml does on x86-64, on every platform.
#[inline]
pub fn c_float_to_int(f: f32) -> i32 {
    // Written as a select of two always-computed values (false for NaN) so loops vectorize.
    let in_range = (-2_147_483_648.0..2_147_483_648.0).contains(&f);
    let truncated = f as i32;
    if in_range {
        truncated
    } else {
        i32::MIN
    }
}

#[cfg(test)]
mod tests {
    use super::{c_float_to_int, nearest_int};

    #[test]
    fn c_casts_truncate_and_overflow_like_cvttss2si() {
        assert_eq!(c_float_to_int(15.99), 15);
        assert_eq!(c_float_to_int(-0.7), 0);
        assert_eq!(c_float_to_int(-8.9), -8);
        assert_eq!(c_float_to_int(200.0) as i8, -56);
        assert_eq!(c_float_to_int(f32::INFINITY) as i8, 0);
        assert_eq!(c_float_to_int(f32::NEG_INFINITY) as u8, 0);
        assert_eq!(c_float_to_int(f32::NAN), i32::MIN);
        assert_eq!(c_float_to_int(2_147_483_520.0), 2_147_483_520);
        assert_eq!(c_float_to_int(2_147_483_648.0), i32::MIN);
        assert_eq!(c_float_to_int(-2_147_483_648.0), i32::MIN);
    }

    #[test]
    fn rounds_to_nearest_with_ties_to_even() {
        assert_eq!(nearest_int(0.0), 0);
        assert_eq!(nearest_int(-0.0), 0);
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(0.49999997), 0);
        assert_eq!(nearest_int(-31.6), -32);
        assert_eq!(nearest_int(4_194_303.0), 4_194_303);
        assert_eq!(nearest_int(-4_194_303.0), -4_194_303);
        // NaN: the mantissa of the canonical NaN is exactly the bias, so ggml gets 0.
        assert_eq!(nearest_int(f32::NAN), 0);
    }

    #[test]
    fn agrees_with_round_ties_even_in_range() {
        let mut x = -300.0f32;
        while x < 300.0 {
            assert_eq!(nearest_int(x), x.round_ties_even() as i32, "{x}");
            x += 0.0625 / 3.0;
        }
    }
}
