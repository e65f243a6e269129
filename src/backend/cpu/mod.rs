//! The CPU backend: quantized matrix multiplication (runtime ISA dispatch) and the f32 operations
//! the models need, behind the [`Backend`](crate::backend::Backend) interface ([`CpuBackend`]).

pub mod backend;
pub mod dot;
pub mod isa;
pub mod matmul;
pub mod ops;
pub mod packed;
pub mod pointwise;
mod prefetch;

pub use backend::{CpuBackend, CpuConvWeight, CpuWeight, CPU, CPU_MAPPED};
pub use isa::Isa;
pub use matmul::{matmul, matmul_channels, matmul_with_isa, MatmulError, MatmulScratch};
