//! slmgate's server: an OpenAI-compatible reverse proxy built as a tower stack.
//!
//! The request path lives in one function, [`stack::build`]; each concern is one layer in
//! [`layers`]; the chat pipeline passes typed values ([`call`]) and reports what it learned
//! as typed response extensions ([`facts`]); upstreams are in [`upstream`]. [`serve_from`]
//! is the entry point the binary calls; tests use [`start_on`] and [`start_with`]. Every
//! failure answers in OpenAI's error shape ([`GatewayError`], from `slmgate-openai`).
//!
//! The gateway composes the other crates: `slmgate-openai` (wire types), `slmgate-routing`
//! (the decision for routed aliases, see [`auto`]), `slmgate-policies` (rules, budgets,
//! limits), `slmgate-usage` (usage records) and `slmgate-local-model` (the embedded model).

#![warn(missing_docs)]

pub mod admin;
pub mod admin_keys;
pub mod anthropic;
pub mod auto;
pub mod build;
pub mod call;
pub mod completions;
pub mod connections;
pub mod dashboard;
pub mod embed_batcher;
pub mod embedder;
pub mod embeddings;
pub mod facts;
pub mod handlers;
pub mod keys;
pub mod layers;
pub mod loaded;
pub mod metrics;
pub mod passthrough;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod stack;
pub mod state;
pub mod targets;
pub mod telemetry;
pub mod upstream;
pub mod usage_http;

pub use reload::{ConfigSource, Reloader};
pub use server::{serve_from, start_on, start_with, Running, StartOptions};
pub use slmgate_openai::GatewayError;
