//! Element-wise activations, in place on f32 slices: SiLU, GELU (exact erf form and tanh
//! approximation), quick-GELU, ReLU, and the SwiGLU gate `silu(gate)·up`. Also `erf` itself, since
//! Rust's standard library has none.
//!
//! Formulas follow PyTorch: `F.silu`, `F.gelu(approximate="none" | "tanh")`, transformers'
//! `QuickGELUActivation` (`x·σ(1.702x)`), `F.relu`. The sigmoid-based ones (SiLU, quick-GELU,
//! SwiGLU) run on a branch-free exponential of our own (`exp_neg`, ≤ 2 ulp) and are compiled twice
//! by `kernels::multiversion!`, so they vectorise with AVX2 where the CPU has it. This module owns
//! only element-wise maps; it must not know about shapes.

use super::error::{check_len, OpError};
use super::kernels::multiversion;

/// `erf(x) = 2/√π ∫₀ˣ e^(−t²) dt`, accurate to f32 rounding.
///
/// Two pieces, each a least-squares polynomial fitted (in f64, against Python's `math.erf`) for this
/// crate and evaluated in f64 so that only the final rounding to f32 is visible:
/// - `|x| < 1`: `erf(x) = x·P(x²)`, P of degree 8 (fit error below f32 resolution);
/// - `1 ≤ |x| < 4`: `erfc(x) = e^(−x²)·Q(1/x)`, Q of degree 10 (absolute error < 3e-10, a hundred
///   times below half an f32 ulp of values near 1);
/// - `|x| ≥ 4`: `erf(x) = ±1` (`erfc(4) ≈ 1.5e-8` already rounds away next to 1 in f32).
pub fn erf(x: f32) -> f32 {
    const P: [f64; 9] = [
        1.128_379_167_095_195_7,
        -0.376_126_388_936_699_7,
        0.112_837_913_784_496_85,
        -0.026_866_138_217_294_31,
        0.005_223_801_571_309_645,
        -0.000_854_300_224_472_908_7,
        0.000_119_606_781_071_732_39,
        -1.393_377_082_502_273_2e-5,
        1.064_867_825_430_355_7e-6,
    ];
    const Q: [f64; 11] = [
        3.437_904_523_839_075e-5,
        0.563_548_371_653_554_8,
        0.004_532_995_213_041_149,
        -0.292_954_610_202_153_6,
        -0.043_875_864_290_509_59,
        0.844_064_276_631_783_7,
        -1.442_179_046_064_606,
        1.343_075_133_849_798_8,
        -0.759_317_973_300_481_7,
        0.245_823_661_426_473_1,
        -0.035_167_748_517_912_406,
    ];
    fn horner(c: &[f64], u: f64) -> f64 {
        c.iter().rev().fold(0.0, |acc, &ci| acc * u + ci)
    }
    if x.is_nan() {
        return x;
    }
    let a = (x as f64).abs();
    let magnitude = if a < 1.0 {
        a * horner(&P, a * a)
    } else if a < 4.0 {
        1.0 - (-a * a).exp() * horner(&Q, 1.0 / a)
    } else {
        1.0
    };
    (magnitude as f32).copysign(x)
}

/// `e^(−a)` for `0 ≤ a ≤ 87` (NaN gives NaN), to about 1 ulp, in plain f32 arithmetic with no
/// branch or call, so that element-wise loops over it vectorise (libm's `expf` is one call per
/// element: in perf, SwiGLU with it was 7.7% of a dense image step, SiLU 4% of a DC-AE decode).
///
/// `e^(−a) = 2^n · e^r` with `n = round(−a·log₂e)` (at least −126 here, so `2^n` is a normal
/// float built from its bits) and `r = −a − n·ln 2` in [−ln2/2, ln2/2], reduced in two parts
/// (Cody–Waite: `n·LN2_HI` is exact for |n| < 2^15); `e^r` is its degree-7 Taylor polynomial,
/// whose truncation error (|r|⁸/8! < 6e-9) is far below half an ulp.
#[inline(always)]
fn exp_neg(a: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 = LN2_HI + LN2_LO, LN2_HI = 355/512 (9 significant bits).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2^23: adding it rounds to an integer (round to nearest even), which then sits in the
    // low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let y = -a;
    let t = y * LOG2_E + ROUND;
    let n = t - ROUND;
    let r = (y - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // n = t's bits minus ROUND's; 2^n has exponent field n + 127 (1..=127 for a in [0, 87]).
    let n_bits = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let scale = f32::from_bits((n_bits.wrapping_add(127) as u32) << 23);
    p * scale
}

/// The logistic function `1/(1 + e^(−x))`, with `z = e^(−|x|)`: `1/(1 + z)` for x ≥ 0 and
/// `z/(1 + z)` below, so that nothing overflows. Branch-free, so loops over it vectorise.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    // Past |x| = 87, e^(−|x|) is below f32's normal range: z is taken at 87 instead, where
    // 1/(1 + z) already rounds to exactly 1, and the negative side is exactly 0 (what libm's
    // underflow gave, within 1.7e-38). NaN fails every comparison and stays NaN.
    let a = x.abs();
    let z = exp_neg(if a > 87.0 { 87.0 } else { a });
    let s = if x >= 0.0 { 1.0 } else { z } / (1.0 + z);
    if x < -87.0 {
        0.0
    } else {
        s
    }
}

multiversion! {
    /// SiLU (swish): `x·σ(x)`.
    pub fn silu / silu_portable(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v *= sigmoid(*v);
        }
    }
}

/// GELU, exact form: `x/2·(1 + erf(x/√2))` (PyTorch `approximate="none"`).
pub fn gelu_erf(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// GELU, tanh approximation: `x/2·(1 + tanh(√(2/π)·(x + 0.044715x³)))` (PyTorch
/// `approximate="tanh"`, transformers' `gelu_pytorch_tanh`).
pub fn gelu_tanh(x: &mut [f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    for v in x.iter_mut() {
        let u = *v;
        *v = 0.5 * u * (1.0 + (SQRT_2_OVER_PI * (u + 0.044_715 * u * u * u)).tanh());
    }
}

multiversion! {
    /// Quick-GELU: `x·σ(1.702x)` (transformers' `QuickGELUActivation`, Qwen2-VL's vision MLP).
    pub fn quick_gelu / quick_gelu_portable(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v *= sigmoid(1.702 * *v);
        }
    }
}

/// Mish, `x·tanh(softplus(x))` (PyTorch's `F.mish`: `x·tanh(log1p(exp(x)))`; for large x,
/// `exp` overflows to +inf and the result is x, as in PyTorch).
pub fn mish(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v *= v.exp().ln_1p().tanh();
    }
}

/// ReLU: `max(x, 0)` (NaN stays NaN, as in PyTorch).
pub fn relu(x: &mut [f32]) {
    for v in x.iter_mut() {
        if *v < 0.0 {
            *v = 0.0;
        }
    }
}

/// SwiGLU's gating: `gate[i] = silu(gate[i])·up[i]`, in place on `gate`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) -> Result<(), OpError> {
    check_len("swiglu", "up", gate.len(), up.len())?;
    swiglu_unchecked(gate, up);
    Ok(())
}

multiversion! {
    /// [`swiglu`] over the common length.
    fn swiglu_unchecked / swiglu_portable(gate: &mut [f32], up: &[f32]) {
        for (g, &u) in gate.iter_mut().zip(up) {
            *g = *g * sigmoid(*g) * u;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative error of `exp_neg` against f64's `exp` over [0, 87] every 2^-12 (356,353 points),
    /// in f32 ulps of the result. Tolerance 2 ulp: the polynomial's truncation is below 0.05 ulp,
    /// the reduction's error below 0.05 ulp, and the roundings of the Horner steps (no FMA) add
    /// up to about 1 ulp; measured worst 1.19 ulp (at a = 81.44).
    #[test]
    fn exp_neg_is_within_two_ulps_of_f64() {
        let mut worst = (0.0f64, 0.0f32);
        for i in 0..=(87 << 12) {
            let a = i as f32 / 4096.0;
            let got = exp_neg(a) as f64;
            let want = (-(a as f64)).exp();
            let ulp = f32::EPSILON as f64 * 2f64.powi(want.log2().floor() as i32);
            let err = (got - want).abs() / ulp;
            if err > worst.0 {
                worst = (err, a);
            }
        }
        assert!(worst.0 <= 2.0, "{} ulp at a = {}", worst.0, worst.1);
        assert!(exp_neg(f32::NAN).is_nan());
        assert_eq!(exp_neg(0.0), 1.0);
    }

    #[test]
    fn sigmoid_keeps_its_limits_and_nan() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert_eq!(sigmoid(-0.0), 0.5);
        for x in [87.0, 87.5, 100.0, 1e30, f32::INFINITY] {
            assert_eq!(sigmoid(x), 1.0, "sigmoid({x})");
            assert_eq!(sigmoid(-x - 1.0), 0.0, "sigmoid({})", -x - 1.0);
        }
        assert!(sigmoid(f32::NAN).is_nan());
        let mut x = [f32::NAN, 1.0];
        silu(&mut x);
        assert!(x[0].is_nan());
    }

    /// The runtime-dispatched builds (AVX2+FMA where the CPU has it) equal the baseline builds bit
    /// for bit: the same operations in the same order, no contraction into FMAs.
    #[test]
    fn dispatched_builds_equal_the_portable_ones() {
        let mut x: Vec<f32> = (0..1037).map(|i| (i as f32 * 0.731).sin() * 12.0).collect();
        x.extend([
            0.0,
            -0.0,
            86.9,
            87.0,
            87.1,
            -86.9,
            -87.0,
            -87.1,
            1e30,
            -1e30,
            f32::NAN,
        ]);
        let up: Vec<f32> = x.iter().map(|v| (v * 0.37).cos()).collect();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        type Pair = (fn(&mut [f32]), fn(&mut [f32]));
        let pairs: [(&str, Pair); 2] = [
            ("silu", (silu, silu_portable)),
            ("quick_gelu", (quick_gelu, quick_gelu_portable)),
        ];
        for (what, (dispatched, portable)) in pairs {
            let (mut a, mut b) = (x.clone(), x.clone());
            dispatched(&mut a);
            portable(&mut b);
            assert_eq!(bits(&a), bits(&b), "{what}");
        }
        let (mut a, mut b) = (x.clone(), x.clone());
        swiglu_unchecked(&mut a, &up);
        swiglu_portable(&mut b, &up);
        assert_eq!(bits(&a), bits(&b), "swiglu");
    }
}
