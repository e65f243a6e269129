//! The CPU backend: quantized matrix multiplication (runtime ISA dispatch) and the f32 operations
//! the models need.
pub mod ops;
