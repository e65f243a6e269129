//! The Qwen2-VL text decoder: its configuration (`config`), the preallocated KV cache
//! (`kv_cache`) and the decoder itself (`decoder`). Understanding decodes answers with it;
//! generation reads its per-layer prompt K/V (and normed layer inputs) from it.
//!
//! This module must not tokenize, sample or decide positions.

pub mod config;
pub mod decoder;
pub mod kv_cache;

pub use config::TextConfig;
pub use decoder::{Logits, TextModel, TextScratch};
pub use kv_cache::KvCache;
