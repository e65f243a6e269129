//! Compute backends. Only the CPU backend exists so far; GPU backends will sit beside it.

pub mod cpu;
