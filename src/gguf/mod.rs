//! GGUF v2/v3 files: a validating reader over a memory map, and a writer that aligns tensors and
//! never leaves a half-written file.
