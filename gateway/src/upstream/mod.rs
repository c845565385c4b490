//! Upstreams: where a chat request is finally answered.
//!
//! One enum built from config, dispatched by `match`: [`openai::OpenAiBackend`] for any
//! OpenAI-compatible API, and (with the `local` feature) the embedded SLM. Each backend answers
//! either with a final response — success, or an upstream error that is the client's own
//! fault (a 400 passed through) — or with a [`Fallback`] error that lets the forwarding
//! service try the next target of the alias.

pub mod breaker;
pub mod forward;
#[cfg(feature = "local")]
pub mod local;
pub mod openai;
pub mod redact;
pub mod sse;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use slmgate_openai::error::GatewayError;

/// A configured backend.
// Built once per config and shared behind an `Arc`: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Backend {
    /// Any OpenAI-compatible HTTP API.
    OpenAi(openai::OpenAiBackend),
    /// The embedded small language model.
    #[cfg(feature = "local")]
    Local(Arc<local::LocalBackend>),
}

impl Backend {
    /// The backend's configured name.
    pub fn name(&self) -> &str {
        match self {
            Backend::OpenAi(b) => &b.name,
            #[cfg(feature = "local")]
            Backend::Local(b) => &b.name,
        }
    }
}

/// A target failed in a way another target might not: try the next one.
#[derive(Debug)]
pub struct Fallback(pub GatewayError);

/// Time spent waiting on upstreams (and in retry back-off) during one request, so the gateway
/// can report its own overhead as total time minus this.
#[derive(Debug, Clone, Default)]
pub struct UpstreamClock(Arc<AtomicU64>);

impl UpstreamClock {
    /// Adds a wait.
    pub fn add(&self, d: Duration) {
        self.0.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Total wait so far.
    pub fn total(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}
