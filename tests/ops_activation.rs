//! Activations and erf against plain f64 references.

mod ops_util;

use latte::backend::cpu::ops::{erf, gelu_erf, gelu_tanh, quick_gelu, relu, silu, swiglu, OpError};
use ops_util::{assert_close, data};

/// erf by its Maclaurin series `2/√π Σ (−1)ⁿ x^(2n+1) / (n! (2n+1))`, in f64, for |x| ≤ 3; the
/// largest term is below e^(x²) ≈ 8.1e3, so cancellation costs at most 4 of f64's 16 digits.
/// Beyond 3, the continued fraction of erfc (Lentz-free, fixed depth, converges fast for x > 2).
fn erf_reference(x: f64) -> f64 {
    let a = x.abs();
    let r = if a <= 3.0 {
        let mut term = a; // x^(2n+1)/n!
        let mut total = 0.0;
        let mut n = 0.0;
        while term.abs() > 1e-30 {
            total += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -a * a / n;
        }
        total * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(x) = e^(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + …))))).
        let mut f = a;
        for k in (1..200).rev() {
            f = a + (k as f64 / 2.0) / f;
        }
        1.0 - (-a * a).exp() / (std::f64::consts::PI.sqrt() * f)
    };
    r.copysign(x)
}

#[test]
fn erf_reference_matches_tabulated_values() {
    // Abramowitz & Stegun, Table 7.1 (and standard tables).
    for (x, want) in [
        (0.5, 0.520_499_877_813_046_5),
        (1.0, 0.842_700_792_949_714_9),
        (2.0, 0.995_322_265_018_952_7),
        (3.0, 0.999_977_909_503_001_4),
        (3.5, 0.999_999_256_901_627_7),
    ] {
        assert!((erf_reference(x) - want).abs() < 1e-13, "x={x}");
    }
}

#[test]
fn erf_is_accurate_to_f32_rounding() {
    // The reference, rounded to f32, is the best f32 answer; we allow 1 ulp of the result plus
    // 1e-9 absolute (the fit error) for values that round differently near a midpoint.
    let mut x = -6.0f32;
    while x <= 6.0 {
        let want = erf_reference(x as f64);
        let got = erf(x) as f64;
        let ulp = f32::EPSILON as f64 * want.abs().max(f32::MIN_POSITIVE as f64);
        assert!(
            (got - want).abs() <= ulp + 1e-9,
            "erf({x}) = {got}, want {want}"
        );
        x += 0.0037;
    }
    for tiny in [1e-30f32, -1e-20, 1e-7, 0.0, -0.0] {
        let want = erf_reference(tiny as f64);
        assert!((erf(tiny) as f64 - want).abs() <= want.abs() * 1.2e-7);
    }
    assert_eq!(erf(f32::INFINITY), 1.0);
    assert_eq!(erf(f32::NEG_INFINITY), -1.0);
    assert!(erf(f32::NAN).is_nan());
    assert_eq!(erf(-0.0).to_bits(), (-0.0f32).to_bits());
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Inputs including lengths that are not a multiple of any SIMD width, and extreme values.
fn inputs() -> Vec<f32> {
    let mut x = data(203, 1, -8.0, 8.0);
    x.extend([
        0.0, -0.0, 1e-6, -1e-6, 30.0, -30.0, 90.0, -90.0, 1e30, -1e30,
    ]);
    x
}

// Tolerances: each activation is a few f32 operations on an exact-to-rounding exp/tanh/erf, so a few
// ulps relative (4e-7) plus 1e-30 absolute for values that underflow towards zero.
const RTOL: f64 = 4e-7;
const ATOL: f64 = 1e-30;

fn check(f: fn(&mut [f32]), reference: fn(f64) -> f64, what: &str) {
    let x = inputs();
    let mut got = x.clone();
    f(&mut got);
    let want: Vec<f64> = x.iter().map(|&v| reference(v as f64)).collect();
    assert_close(&got, &want, ATOL, RTOL, what);
}

#[test]
fn silu_matches_reference() {
    check(silu, |x| x * sigmoid(x), "silu");
}

#[test]
fn gelu_erf_matches_reference() {
    // `1 + erf(·)` cancels for negative x: its f32 rounding (half an ulp of 1) is scaled by x/2,
    // an absolute error ≤ eps·|x| that PyTorch's f32 formula has too.
    let x = inputs();
    let mut got = x.clone();
    gelu_erf(&mut got);
    let want: Vec<f64> = x
        .iter()
        .map(|&v| {
            let v = v as f64;
            0.5 * v * (1.0 + erf_reference(v / 2f64.sqrt()))
        })
        .collect();
    assert_within(
        &x,
        &got,
        &want,
        |x, w| RTOL * w.abs() + F32_EPS * x.abs(),
        "gelu_erf",
    );
}

#[test]
fn gelu_tanh_matches_reference() {
    // x³ for |x| = 1e30 overflows in f32 and f64 alike, giving ±inf inside tanh: same limit.
    // `1 + tanh(·)` cancels for negative x, like `1 + erf` above: eps·|x| absolute.
    let x = inputs();
    let mut got = x.clone();
    gelu_tanh(&mut got);
    let want: Vec<f64> = x
        .iter()
        .map(|&v| {
            let v = v as f64;
            let inner = (2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v);
            0.5 * v * (1.0 + inner.tanh())
        })
        .collect();
    assert_within(
        &x,
        &got,
        &want,
        |x, w| RTOL * w.abs() + F32_EPS * x.abs(),
        "gelu_tanh",
    );
}

#[test]
fn quick_gelu_matches_reference() {
    // Rounding the argument 1.702·x to f32 changes σ by a relative (1 − σ)·|1.702x|·eps/2 at most.
    let x = inputs();
    let mut got = x.clone();
    quick_gelu(&mut got);
    let want: Vec<f64> = x
        .iter()
        .map(|&v| v as f64 * sigmoid(1.702 * v as f64))
        .collect();
    assert_within(
        &x,
        &got,
        &want,
        |x, w| (RTOL + F32_EPS * 1.702 * x.abs()) * w.abs(),
        "quick_gelu",
    );
}

const F32_EPS: f64 = f32::EPSILON as f64;

/// Asserts `|got − want| ≤ tol(x, want)` element-wise.
#[track_caller]
fn assert_within(x: &[f32], got: &[f32], want: &[f64], tol: fn(f64, f64) -> f64, what: &str) {
    for i in 0..x.len() {
        let err = (got[i] as f64 - want[i]).abs();
        assert!(
            err <= tol(x[i] as f64, want[i]) + ATOL,
            "{what}({}): got {}, want {} (error {err:e})",
            x[i],
            got[i],
            want[i]
        );
    }
}

#[test]
fn relu_matches_reference() {
    check(relu, |x| x.max(0.0), "relu");
}

#[test]
fn swiglu_matches_reference_and_checks_lengths() {
    let gate = inputs();
    let up = data(gate.len(), 2, -3.0, 3.0);
    let mut got = gate.clone();
    swiglu(&mut got, &up).unwrap();
    let want: Vec<f64> = gate
        .iter()
        .zip(&up)
        .map(|(&g, &u)| g as f64 * sigmoid(g as f64) * u as f64)
        .collect();
    assert_close(&got, &want, ATOL, 1e-6, "swiglu");
    assert!(matches!(
        swiglu(&mut got, &up[1..]),
        Err(OpError::Len { .. })
    ));
}
