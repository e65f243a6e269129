//! latte: an inference engine for LaTtE-Flow models (a frozen Qwen2-VL that understands images, and a
//! flow-matching replica whose layer groups are experts for ranges of timesteps).
//!
//! Data flows one way through the modules, and nothing below reaches up:
//!
//! ```text
//! gguf (file) → tensor (views) → quant (block formats) → backend (cpu, wgpu: buffers, weights, ops)
//!     → model (written once against the backend) → pipeline (describe, generate) → CLI, bench, convert
//! ```
//!
//! `docs/ARCHITECTURE.md` is the map.

pub mod backend;
pub mod bench;
pub mod convert;
pub mod dtype;
pub mod gguf;
pub mod image;
pub mod input;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod process_memory;
pub mod quant;
pub mod residency;
pub mod rng;
pub mod safetensors;
pub mod sampling;
pub mod schedule;
pub mod server;
pub mod tensor;
pub mod tokenizer;
