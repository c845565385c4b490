//! slmgate's server: an OpenAI-compatible reverse proxy built as a tower stack.
//!
//! The request path lives in one function, [`stack::build`]; each concern is one layer in
//! [`layers`]; upstreams are in [`upstream`]. [`server::serve`] is the entry point the binary
//! calls. Every failure answers in OpenAI's error shape ([`error::GatewayError`]).

pub mod admin;
pub mod api;
pub mod build;
pub mod connections;
pub mod dashboard;
pub mod embed_batcher;
pub mod embeddings;
pub mod error;
pub mod handlers;
pub mod layers;
pub mod metrics;
pub mod reload;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod stack;
pub mod telemetry;
pub mod upstream;
pub mod usage;

pub use error::GatewayError;
pub use reload::{ConfigSource, Reloader};
pub use server::{serve, serve_from, start, start_on, start_with, Running, StartOptions};
