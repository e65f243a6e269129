//! `latte serve`: one local HTTP server for chat about images and for image generation, speaking
//! OpenAI's API (`/v1/chat/completions`, `/v1/images/generations`, `/v1/models`) so that its
//! official clients work unchanged, plus `/health` and a web page at `/`.
//!
//! The HTTP stack is axum on tokio; the model work is synchronous and runs on tokio's blocking
//! threads ([`engine`]), admitted through `--parallel` slots and a bounded queue ([`admission`]).
//! This module owns routing, authentication, limits and shutdown; it must not compute.

pub mod admission;
pub mod api;
pub mod engine;
pub mod error;
mod page;
mod routes;
pub mod stop;

pub use engine::{Engine, EngineLoadError};
pub use routes::{serve, ServeError, ServerOptions};
