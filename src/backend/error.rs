//! The error of every backend operation: a shape the caller got wrong ([`OpError`], [`MatmulError`]),
//! or what a device can refuse (memory, a lost device, a type it has no kernel for, a group that is
//! not resident). Each variant prints its cause once.

use thiserror::Error;

use super::cpu::matmul::MatmulError;
use super::op_error::OpError;
use crate::dtype::TensorType;

#[derive(Debug, Error)]
pub enum BackendError {
    #[error(transparent)]
    Op(#[from] OpError),
    #[error(transparent)]
    Matmul(#[from] MatmulError),
    #[error("{backend}: tensor '{name}' has type {ty}, which has no {what} kernel here")]
    UnsupportedType {
        backend: &'static str,
        name: String,
        ty: TensorType,
        what: &'static str,
    },
    #[error("{what}: {bytes} bytes exceed the device's limit of {limit} bytes per {limit_name}")]
    TooLarge {
        what: String,
        bytes: u64,
        limit: u64,
        limit_name: &'static str,
    },
    #[error("the device is out of memory allocating {bytes} bytes for {what} ({allocated} bytes in use)")]
    OutOfMemory {
        what: String,
        bytes: u64,
        allocated: u64,
    },
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    #[error("expert group {group} is not resident on the device")]
    GroupNotResident { group: usize },
    #[error("{0}")]
    Device(String),
}
