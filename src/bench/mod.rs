//! The benchmark harness behind `latte bench` (llama-bench for a unified model): repeated,
//! warmed-up measurements summarised as mean ± sd, the machine and build they ran on, and the
//! report in markdown, CSV or JSON.
//!
//! The harness measures through the same library calls users make (pipelines and models); it must
//! not contain model math of its own.

pub mod machine;
pub mod report;
pub mod stats;

pub use machine::{Build, Machine};
pub use report::{Measurement, ModelDescription, PeerMeasurement, Report, Unit};
pub use stats::Summary;

pub mod bench_test;
#[cfg(feature = "ggml-peer")]
pub mod llama_cpp;
pub mod peers;
pub mod runner;
pub mod text;
