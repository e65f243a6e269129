//! The generation replica of a LaTtE-Flow file (MODEL.md §3–§5): its switches (`config`), timestep
//! embedding, image-token positions, one replica layer with TCRA, the per-prompt K/V container and
//! the velocity network over a run of layers.
//!
//! Everything here computes one velocity `v(x_t, t)`; choosing timesteps, groups, guidance and the
//! update rule is the sampler's job (`schedule`, `pipeline`).

pub mod config;
pub mod layer;
pub mod positions;
pub mod prompt_kv;
pub mod replica;
pub mod time_embedding;

pub use config::{ContextKv, FlowConfig, ImagePositions, Tcra};
pub use layer::{LayerConditioning, ReplicaLayer};
pub use prompt_kv::PromptKv;
pub use replica::{LayerTrace, Replica, ReplicaScratch, StepConditioning};
