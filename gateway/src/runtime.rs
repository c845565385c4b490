//! The gateway's runtime view of one configuration: resolved model aliases, live backend
//! clients and client keys. Built once per config (startup or reload) and shared as an
//! immutable snapshot: a request keeps the snapshot it started with until it ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::upstream::Backend;

/// One place a request for an alias can be sent: a backend and the model name it knows.
#[derive(Clone)]
pub struct Target {
    /// The backend.
    pub backend: Arc<Backend>,
    /// The model name sent upstream.
    pub model: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.backend.name(), self.model)
    }
}

/// A public model alias and the ordered list of targets that may serve it.
#[derive(Debug, Clone)]
pub struct ModelRoute {
    /// The alias clients ask for.
    pub alias: String,
    /// Primary target first, then the fallbacks, in order. Never empty.
    pub targets: Vec<Target>,
}

/// A client key, known by the sha256 of its secret.
#[derive(Debug, Clone)]
pub struct ClientKey {
    /// Key name (for logs and accounting).
    pub name: String,
    /// sha256 of the secret.
    pub sha256: [u8; 32],
    /// Team, if any.
    pub team: Option<String>,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// Allowed aliases; empty = all.
    pub models: Vec<String>,
    /// USD budget (`keys[].budget`).
    pub budget: Option<slmgate_policies::budget::BudgetLimits>,
    /// Requests and tokens per minute (`keys[].rate_limit`).
    pub rate_limit: Option<slmgate_policies::ratelimit::RateLimits>,
}

/// The identity of an authenticated caller, put in request extensions by the auth layer.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key that matched, or `None` when the gateway is open (no keys configured).
    pub key: Option<Arc<ClientKey>>,
}

/// Client keys, found by the sha256 digest of the presented secret.
///
/// Only digests are stored. A lookup hashes the presented secret and finds the digest in a
/// hash map: O(1) whatever the number of keys (a linear constant-time scan of 100 keys cost
/// ~10 % of the gateway's throughput in `benches/gateway_load.rs`). Lookup timing can at most
/// reveal something about the *digest* of a guess, and sha256's preimage resistance makes that
/// useless for finding a secret, so no constant-time comparison is needed on this path.
/// The map is hashed with foldhash: its keys are sha256 digests, uniformly spread whatever
/// the secrets, so SipHash's flooding protection buys nothing.
#[derive(Debug, Default)]
pub struct Keys {
    keys: HashMap<[u8; 32], Arc<ClientKey>, foldhash::fast::RandomState>,
}

impl Keys {
    /// Builds the key set (a later key with the same secret replaces an earlier one; config
    /// validation rejects duplicate secrets).
    pub fn new(keys: Vec<ClientKey>) -> Self {
        Keys {
            keys: keys.into_iter().map(|k| (k.sha256, Arc::new(k))).collect(),
        }
    }

    /// True when no key is configured (the gateway is open).
    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// Finds the key whose secret is `presented`.
    pub fn find(&self, presented: &str) -> Option<Arc<ClientKey>> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.keys.get(&digest).cloned()
    }
}

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
    /// Client keys.
    pub keys: Keys,
    /// Limits.
    pub limits: Limits,
    /// Unix seconds when this snapshot was built.
    pub created: u64,
    /// The sentence embedder behind `/v1/embeddings`, when configured and present.
    pub embedder: Option<Arc<crate::embeddings::LocalEmbedder>>,
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
    pub loaded: crate::build::Loaded,
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

/// Decodes a 64-hex-digit sha256.
pub fn parse_sha256(hex_str: &str) -> Option<[u8; 32]> {
    let v = hex::decode(hex_str.trim()).ok()?;
    v.try_into().ok()
}

/// sha256 of a secret.
pub fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, secret: &str) -> ClientKey {
        ClientKey {
            name: name.into(),
            sha256: sha256(secret),
            team: None,
            tags: vec![],
            models: vec![],
            budget: None,
            rate_limit: None,
        }
    }

    #[test]
    fn finds_the_right_key() {
        let keys = Keys::new(vec![key("a", "sk-a"), key("b", "sk-b")]);
        assert_eq!(keys.find("sk-b").unwrap().name, "b");
        assert!(keys.find("sk-c").is_none());
        assert!(keys.find("").is_none());
        assert!(!keys.is_open());
        assert!(Keys::default().is_open());
    }

    #[test]
    fn parses_hex_digests() {
        let h = hex::encode(sha256("x"));
        assert_eq!(parse_sha256(&h), Some(sha256("x")));
        assert_eq!(parse_sha256("abc"), None);
        assert_eq!(parse_sha256("zz"), None);
    }
}
