//! The one error type of the f32 operations: a shape or parameter the caller got wrong.
//!
//! Ops check every length before they touch memory, so bad input is an `Err`, never a panic or an
//! out-of-bounds read.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum OpError {
    /// A buffer does not hold the number of elements its shape says.
    #[error("{op}: `{what}` has {actual} elements, expected {expected}")]
    Len {
        op: &'static str,
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    /// A parameter is invalid on its own or does not fit the others (e.g. heads not a multiple).
    #[error("{op}: {reason}")]
    Param { op: &'static str, reason: String },
}

/// `Ok` when `actual == expected`, else [`OpError::Len`].
pub(crate) fn check_len(
    op: &'static str,
    what: &'static str,
    expected: usize,
    actual: usize,
) -> Result<(), OpError> {
    if actual == expected {
        Ok(())
    } else {
        Err(OpError::Len {
            op,
            what,
            expected,
            actual,
        })
    }
}

/// An [`OpError::Param`] with a formatted reason.
pub(crate) fn param(op: &'static str, reason: impl Into<String>) -> OpError {
    OpError::Param {
        op,
        reason: reason.into(),
    }
}

/// The product of `dims`, or an error when it overflows `usize`.
pub(crate) fn checked_product(op: &'static str, dims: &[usize]) -> Result<usize, OpError> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| param(op, format!("shape {dims:?} overflows usize")))
}
