//! The activations a DC-AE config can name, as the backend's element-wise functions.

use super::config::Activation;
use crate::backend::Unary;

impl Activation {
    /// The element-wise function, or `None` for the identity.
    pub fn unary(self) -> Option<Unary> {
        match self {
            Activation::Identity => None,
            Activation::Silu => Some(Unary::Silu),
            Activation::Mish => Some(Unary::Mish),
            Activation::Gelu => Some(Unary::GeluErf),
            Activation::Relu => Some(Unary::Relu),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::cpu::ops::mish;

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
}
