//! Element-wise activations, in place on f32 slices: SiLU, GELU (exact erf form and tanh
//! approximation), quick-GELU, ReLU, and the SwiGLU gate `silu(gate)·up`. Also `erf` itself, since
//! Rust's standard library has none.
//!
//! Formulas follow PyTorch: `F.silu`, `F.gelu(approximate="none" | "tanh")`, transformers'
//! `QuickGELUActivation` (`x·σ(1.702x)`), `F.relu`. This module owns only element-wise maps; it must
//! not know about shapes.

use super::error::{check_len, OpError};

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

/// The logistic function `1/(1 + e^(−x))`, written so that neither branch overflows.
#[inline]
fn sigmoid(x: f32) -> f32 {
    // Past ±87, e^(−|x|) is below f32's normal range: libm would take its slow underflow (errno)
    // path, measured 4–6% of a DC-AE decode, for a result within 1.7e-38 of 0 or 1 (and
    // 1/(1 + that) rounds to exactly 1, so the shortcut changes no result).
    if x > 87.0 {
        1.0
    } else if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else if x < -87.0 {
        0.0
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// SiLU (swish): `x·σ(x)`.
pub fn silu(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v *= sigmoid(*v);
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

/// Quick-GELU: `x·σ(1.702x)` (transformers' `QuickGELUActivation`, Qwen2-VL's vision MLP).
pub fn quick_gelu(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v *= sigmoid(1.702 * *v);
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
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g * sigmoid(*g) * u;
    }
    Ok(())
}
