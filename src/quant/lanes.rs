//! Fixed-width lanes of `f32` / `i32` whose operations act lane by lane, written so that each one
//! compiles to one SIMD instruction per register (the compiler's straight-line vectorizer turns an
//! aligned array op into a vector op; a loop over lanes inside a larger loop it often leaves
//! scalar). Each lane op is the IEEE operation of its scalar (no reassociation, no fused
//! multiply-add), so code on lanes gives each lane the bits the scalar code gives.
//!
//! Used by the K-quant searches; knows nothing of quantization.

#![allow(clippy::needless_range_loop)] // indexed loops over lanes vectorize where iterators did not

use std::ops::{Add, Div, Mul, Sub};

use super::round::nearest_int;

/// `N` floats, one per lane.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(32))]
pub(super) struct F32s<const N: usize>(pub [f32; N]);

/// `N` integers, one per lane.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(32))]
pub(super) struct I32s<const N: usize>(pub [i32; N]);

/// `N` lane conditions: all bits set (true) or clear (false).
#[derive(Clone, Copy, Debug)]
#[repr(C, align(32))]
pub(super) struct Mask<const N: usize>([u32; N]);

impl<const N: usize> F32s<N> {
    #[inline(always)]
    pub fn splat(v: f32) -> Self {
        F32s([v; N])
    }

    #[inline(always)]
    fn map(self, f: impl Fn(f32) -> f32) -> Self {
        F32s(self.0.map(f))
    }

    #[inline(always)]
    fn zip(self, other: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        let mut out = self.0;
        for (o, b) in out.iter_mut().zip(other.0) {
            *o = f(*o, b);
        }
        F32s(out)
    }

    #[inline(always)]
    fn compare(self, other: Self, f: impl Fn(f32, f32) -> bool) -> Mask<N> {
        let mut out = [0u32; N];
        for ((o, a), b) in out.iter_mut().zip(self.0).zip(other.0) {
            *o = if f(a, b) { u32::MAX } else { 0 };
        }
        Mask(out)
    }

    #[inline(always)]
    pub fn abs(self) -> Self {
        self.map(f32::abs)
    }

    #[inline(always)]
    pub fn sqrt(self) -> Self {
        self.map(f32::sqrt)
    }

    /// `self < other`, false where either is NaN (as C's `<`).
    #[inline(always)]
    pub fn lt(self, other: Self) -> Mask<N> {
        self.compare(other, |a, b| a < b)
    }

    /// `self > other`, false where either is NaN.
    #[inline(always)]
    pub fn gt(self, other: Self) -> Mask<N> {
        self.compare(other, |a, b| a > b)
    }

    /// `self == other`, false where either is NaN.
    #[inline(always)]
    pub fn eq(self, other: Self) -> Mask<N> {
        self.compare(other, |a, b| a == b)
    }

    /// `self != other`, true where either is NaN.
    #[inline(always)]
    pub fn ne(self, other: Self) -> Mask<N> {
        self.compare(other, |a, b| a != b)
    }

    /// ggml's `nearest_int` in each lane.
    #[inline(always)]
    pub fn nearest_int(self) -> I32s<N> {
        I32s(self.0.map(nearest_int))
    }
}

impl<const N: usize> I32s<N> {
    /// C's `MAX(lo, MIN(hi, v))` in each lane.
    #[inline(always)]
    pub fn clamp_to(self, lo: i32, hi: i32) -> Self {
        I32s(self.0.map(|v| v.min(hi).max(lo)))
    }

    #[inline(always)]
    pub fn to_f32(self) -> F32s<N> {
        F32s(self.0.map(|v| v as f32))
    }
}

impl<const N: usize> Mask<N> {
    #[inline(always)]
    pub fn and(self, other: Self) -> Self {
        let mut out = self.0;
        for (o, b) in out.iter_mut().zip(other.0) {
            *o &= b;
        }
        Mask(out)
    }

    /// `if lane { a } else { b }`, lane by lane, on the bits.
    #[inline(always)]
    pub fn select(self, a: F32s<N>, b: F32s<N>) -> F32s<N> {
        let mut out = [0f32; N];
        for i in 0..N {
            let m = self.0[i];
            out[i] = f32::from_bits((a.0[i].to_bits() & m) | (b.0[i].to_bits() & !m));
        }
        F32s(out)
    }

    /// `if lane { a } else { b }` for integers.
    #[inline(always)]
    pub fn select_i32(self, a: I32s<N>, b: I32s<N>) -> I32s<N> {
        let mut out = [0i32; N];
        for i in 0..N {
            let m = self.0[i] as i32;
            out[i] = (a.0[i] & m) | (b.0[i] & !m);
        }
        I32s(out)
    }

    /// Whether lane `i` is true.
    #[inline(always)]
    pub fn get(self, i: usize) -> bool {
        self.0[i] != 0
    }
}

macro_rules! lane_op {
    ($trait:ident, $method:ident, $op:tt) => {
        impl<const N: usize> $trait for F32s<N> {
            type Output = Self;
            #[inline(always)]
            fn $method(self, other: Self) -> Self {
                self.zip(other, |a, b| a $op b)
            }
        }
    };
}
lane_op!(Add, add, +);
lane_op!(Sub, sub, -);
lane_op!(Mul, mul, *);
lane_op!(Div, div, /);

#[cfg(test)]
mod tests {
    use super::*;

    /// The same bits, or both NaN (Rust fixes no NaN payload, and ggml's results never depend on
    /// one).
    fn same(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    #[test]
    fn lanes_act_as_their_scalars() {
        let a = F32s([1.5, -2.0, f32::NAN, 0.0, -0.0, 3.0, f32::INFINITY, 1e-40]);
        let b = F32s([0.5, -2.0, 1.0, -0.0, 0.0, 7.0, 1.0, 2.0]);
        for i in 0..8 {
            let (x, y) = (a.0[i], b.0[i]);
            assert!(same((a + b).0[i], x + y), "+ in lane {i}");
            assert!(same((a - b).0[i], x - y), "- in lane {i}");
            assert!(same((a * b).0[i], x * y), "* in lane {i}");
            assert!(same((a / b).0[i], x / y), "/ in lane {i}");
            assert_eq!(a.lt(b).get(i), x < y);
            assert_eq!(a.gt(b).get(i), x > y);
            assert_eq!(a.eq(b).get(i), x == y);
            assert_eq!(a.ne(b).get(i), x != y);
            assert_eq!(
                a.lt(b).select(a, b).0[i].to_bits(),
                if x < y { x } else { y }.to_bits()
            );
            assert_eq!(a.nearest_int().0[i], nearest_int(x));
            assert_eq!(
                a.nearest_int().clamp_to(0, 1).0[i],
                nearest_int(x).clamp(0, 1)
            );
            let ints = I32s([3, -4, 5, 0, 9, -9, 1, 2]);
            assert_eq!(
                a.gt(b).select_i32(ints, I32s([7; 8])).0[i],
                if x > y { ints.0[i] } else { 7 }
            );
        }
    }
}
