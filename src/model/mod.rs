//! Model descriptions over a GGUF file: which tensors a LaTtE-Flow file holds and how they are grouped.
//! Model math (vision, text, flow, DC-AE) will live here too.

pub mod expert_groups;
