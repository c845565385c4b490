//! The gateway's runtime view of one configuration: resolved model aliases, live backend
//! clients and client keys. Built once per config (startup or reload) and shared as an
//! immutable snapshot: a request keeps the snapshot it started with until it ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::keys::Keys;
use crate::targets::ModelRoute;

/// Request-path limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Concurrent requests before load shedding.
    pub max_concurrent_requests: usize,
    /// Whole-request timeout (to the response head).
    pub request_timeout: Duration,
    /// Drain timeout on shutdown.
    pub shutdown_timeout: Duration,
    /// Time a connection has to deliver a request head.
    pub header_read_timeout: Duration,
    /// Longest stall between two chunks of a request body.
    pub body_read_timeout: Duration,
    /// Open client connections at most.
    pub max_connections: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 keep-alive ping interval.
    pub http2_keepalive_interval: Duration,
}

/// One configuration, resolved.
pub struct Gateway {
    /// Enabled aliases.
    pub models: HashMap<String, Arc<ModelRoute>>,
    /// Alias order as configured (for `/v1/models`).
    pub model_order: Vec<String>,
    /// Aliases that exist in the config but cannot be served, with the reason.
    pub unavailable: HashMap<String, String>,
    /// Client keys from the config (`keys:`).
    pub keys: Keys,
    /// Client keys created at run time (`/admin/keys`): one handle shared by every snapshot.
    pub runtime_keys: crate::keys::RuntimeKeys,
    /// `auth: none`: the API stays open even when runtime keys exist (a presented key is
    /// still recognized, for accounting).
    pub open_on_purpose: bool,
    /// Limits.
    pub limits: Limits,
    /// Unix seconds when this snapshot was built.
    pub created: u64,
    /// The sentence embedder behind `/v1/embeddings`, when configured and present.
    pub embedder: Option<Arc<crate::embedder::LocalEmbedder>>,
    /// The query router behind routed aliases (`auto`), when configured.
    pub router: Option<Arc<crate::auto::AutoRouter>>,
    /// Compiled `policies:` (see [`crate::layers::policy`]).
    pub policies: crate::layers::policy::Policies,
    /// Prices, team budgets, and the budget / rate-limit state that outlives this snapshot
    /// (see [`crate::layers::limits`]).
    pub accounting: crate::layers::limits::Accounting,
    /// Who may use the operator endpoints.
    pub admin: crate::layers::admin_auth::AdminAccess,
    /// The model whose prices give each request's counterfactual cost (`usage.reference_model`,
    /// default the router's `remote` side's upstream model).
    pub usage_reference: Option<String>,
    /// `cache:` and the response cache's stores (which outlive this snapshot; see
    /// [`crate::layers::cache`]).
    pub cache: crate::layers::cache::Caching,
    /// Loaded models and clients, which a reload reuses when their config is unchanged.
    pub loaded: crate::loaded::Loaded,
}

impl Gateway {
    /// Resolves an alias: the route, or a 404-worthy explanation.
    pub fn resolve(&self, alias: &str) -> Result<&Arc<ModelRoute>, String> {
        if let Some(r) = self.models.get(alias) {
            return Ok(r);
        }
        if let Some(why) = self.unavailable.get(alias) {
            return Err(format!("the model `{alias}` is not available: {why}"));
        }
        let mut known: Vec<&str> = self.model_order.iter().map(String::as_str).collect();
        known.sort_unstable();
        Err(format!(
            "the model `{alias}` does not exist; available models: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ))
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
