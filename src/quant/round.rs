//! ggml's integer rounding helper for the K-quants (`nearest_int` in `ggml-quants.c`).
//!
//! It owns nothing but this one bit trick; quantizers call it so that ties and out-of-range values
//! round exactly as ggml rounds them. It must not grow other helpers.

/// Rounds `x` to the nearest integer, ties to even, the way ggml's `nearest_int` does: adding
/// 1.5·2²³ pushes the integer part into the low mantissa bits (round-to-nearest-even by the FPU),
/// which are then read back. Only meaningful for |x| ≤ 4194303 (ggml asserts that in debug builds
/// only); outside that range, and for NaN, this returns the same bits ggml's release build returns.
#[inline]
pub fn nearest_int(x: f32) -> i32 {
    let val = x + 12_582_912.0;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

#[cfg(test)]
mod tests {
    use super::nearest_int;

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
