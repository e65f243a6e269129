//! Which instruction set the CPU kernels use: detected once at first use, cached, and overridable so
//! tests can run every path the machine supports against the scalar reference.
//!
//! This module only answers "what can this CPU run"; it must not hold kernels itself.

use std::fmt;
use std::sync::OnceLock;

/// A family of kernels. Each SIMD family is only ever selected when the running CPU has every
/// feature its kernels are compiled with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust, the reference every other path is tested against.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 (F, BW, VL, VNNI) on top of everything [`Isa::Avx2`] needs. Types without
    /// a 512-bit kernel use the AVX2 one.
    Avx512,
    /// aarch64 Advanced SIMD (baseline on every aarch64 CPU).
    Neon,
}

impl Isa {
    /// Every family, best first.
    pub const ALL: [Isa; 4] = [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Scalar];

    /// The best family this CPU supports, detected on the first call and cached.
    pub fn detect() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            Isa::ALL
                .into_iter()
                .find(|isa| isa.is_supported())
                .unwrap_or(Isa::Scalar)
        })
    }

    /// Whether the running CPU can execute this family's kernels.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => has_avx2(),
            Isa::Avx512 => has_avx2() && has_avx512(),
            Isa::Neon => cfg!(target_arch = "aarch64"),
        }
    }

    /// Whether this family has BF16 dot products here (AVX-512 BF16 `vdpbf16ps`, only on top of
    /// [`Isa::Avx512`]): what the f32 GEMM uses for BF16 weights.
    pub fn has_bf16_dot(self) -> bool {
        self == Isa::Avx512 && self.is_supported() && has_avx512_bf16()
    }

    /// The families this CPU supports, best first (always ends with [`Isa::Scalar`]).
    pub fn supported() -> impl Iterator<Item = Isa> {
        Isa::ALL.into_iter().filter(|isa| isa.is_supported())
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        })
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx2() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx512() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn has_avx512_bf16() -> bool {
    std::arch::is_x86_feature_detected!("avx512bf16")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx512_bf16() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detected_is_supported_and_scalar_always_is() {
        assert!(Isa::detect().is_supported());
        assert!(Isa::Scalar.is_supported());
        assert_eq!(Isa::supported().last(), Some(Isa::Scalar));
        #[cfg(target_arch = "aarch64")]
        assert_eq!(Isa::detect(), Isa::Neon);
        #[cfg(target_arch = "x86_64")]
        assert!(!Isa::Neon.is_supported());
        assert!([Isa::Scalar, Isa::Avx2, Isa::Neon]
            .iter()
            .all(|isa| !isa.has_bf16_dot()));
    }
}
