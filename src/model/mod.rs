//! What a LaTtE-Flow file holds and the model math over it: the file's typed lookups (`file`),
//! projections (`linear`), the expert-group layout (`expert_groups`), the vision encoder, the text
//! decoder, the flow replica and the DC-AE decoder; a text model joined with llama.cpp's vision
//! projector file (`projector`).
//!
//! Models read tensors through `ModelFile` and compute through a `backend::Backend` they are
//! generic over (written once for the CPU and the GPU); they must not parse bytes themselves, know
//! a device, or reach up into pipelines and the CLI.

pub mod check;
pub mod dcae;
pub mod error;
pub mod expert_groups;
pub mod file;
pub mod flow;
pub mod linear;
pub mod positions;
pub mod projector;
pub mod text;
pub mod vision;

pub use error::ModelError;
pub use file::ModelFile;
pub use linear::Linear;
