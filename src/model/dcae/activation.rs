//! The activations a DC-AE config can name, applied in place over a whole activation image, in
//! parallel chunks (the full-resolution stages hold millions of values). The element math is the
//! `backend::cpu::ops` activations', except Mish, which only DC-AE configs use.

use rayon::prelude::*;

use super::config::Activation;
use crate::backend::cpu::ops::{gelu_erf, relu, silu};

/// Values per parallel task.
const CHUNK: usize = 1 << 15;

impl Activation {
    /// Applies the activation to every element of `x`.
    pub fn apply(self, x: &mut [f32]) {
        let f: fn(&mut [f32]) = match self {
            Activation::Identity => return,
            Activation::Silu => silu,
            Activation::Mish => mish,
            Activation::Gelu => gelu_erf,
            Activation::Relu => relu,
        };
        x.par_chunks_mut(CHUNK).for_each(f);
    }
}

/// Mish, `x·tanh(softplus(x))` (PyTorch's `F.mish`: `x·tanh(log1p(exp(x)))`; for large x,
/// `exp` overflows to +inf and the result is x, as in PyTorch).
pub fn mish(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v *= v.exp().ln_1p().tanh();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mish_matches_its_definition_in_f64() {
        let xs: Vec<f32> = (-400..=400).map(|i| i as f32 * 0.1).collect();
        let mut ys = xs.clone();
        mish(&mut ys);
        for (&x, &y) in xs.iter().zip(&ys) {
            let x = x as f64;
            let softplus = if x > 30.0 { x } else { x.exp().ln_1p() };
            let want = x * softplus.tanh();
            // f32 exp/log1p/tanh: a few ulp of the result, absolute near zero.
            assert!(
                (y as f64 - want).abs() <= 1e-6 + 1e-6 * want.abs(),
                "{x}: {y} vs {want}"
            );
        }
    }

    #[test]
    fn identity_leaves_values() {
        let mut x = vec![-1.0, 2.0];
        Activation::Identity.apply(&mut x);
        assert_eq!(x, [-1.0, 2.0]);
        Activation::Relu.apply(&mut x);
        assert_eq!(x, [0.0, 2.0]);
    }
}
