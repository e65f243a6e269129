//! Pipelines: the steps that turn a prompt into an image, or an image and a question into text,
//! over the models in `model`. `sampler` integrates the flow with layerwise timestep experts and
//! guidance; `prompt_context` turns the frozen VLM's prompt pass into per-layer prompt K/V for the
//! replica (`image_prompt` splices an image into a prompt, for both directions); `generate` runs the phases (prefill, sampling per group, decode) with residency advice
//! and per-phase timings; `describe` answers questions about images (understanding).
//!
//! Pipelines sequence models and own their buffers; they must not parse files or print.

pub mod describe;
pub mod device_groups;
pub mod generate;
pub mod image_prompt;
pub mod parameters;
pub mod plan;
pub mod prompt_context;
pub mod sampler;

pub use describe::{DescribeError, DescribeRequest, DescribeStats, Describer};
pub use sampler::{
    sample, sample_batch, Evaluation, Pass, SamplerKind, SamplingObserver, SamplingOptions,
    StepInfo,
};
