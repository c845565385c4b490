//! Prometheus metrics: the names, the process-wide recorder, and `GET /metrics`.
//!
//! Layers record with the `metrics` macros under the names below; the recorder
//! (`metrics-exporter-prometheus`) is installed once per process by [`handle`] and rendered
//! in the text exposition format by [`render`]. Histograms use the buckets in [`buckets`].
//! `deploy/grafana/slmgate.json` is a dashboard built on these names (a test checks every
//! name it uses is exported).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `slmgate_requests_total` | counter | route, target, status |
//! | `slmgate_request_duration_seconds` | histogram | route, target, status |
//! | `slmgate_time_to_first_token_seconds` | histogram | target, backend |
//! | `slmgate_tokens_total` | counter | target, backend, kind (prompt/completion) |
//! | `slmgate_cost_usd` | gauge (only grows) | target, backend |
//! | `slmgate_counterfactual_cost_usd` | gauge (only grows) | target, backend |
//! | `slmgate_cache_hits_total` | counter | kind (hit/semantic-hit) |
//! | `slmgate_decision_score` | histogram | strategy, target |
//! | `slmgate_decisions_total` | counter | strategy, target |
//! | `slmgate_local_queue_depth` | gauge | backend |
//! | `slmgate_local_generation_tokens_per_second` | histogram | backend |
//! | `slmgate_upstream_errors_total` | counter | backend, type |
//! | `slmgate_upstream_retries_total` | counter | backend |
//! | `slmgate_backend_ejected` | gauge (1 while ejected or probing) | backend |
//! | `slmgate_backend_ejections_total` | counter | backend |
//! | `slmgate_open_connections` | gauge | |
//! | `slmgate_usage_dropped_total` | counter | reason (queue_full/closed/write_error) |
//! | `slmgate_usage_written_total` | counter | |
//! | `slmgate_usage_queue_depth` | gauge | |
//! | `slmgate_state_errors_total` | counter | op (connect/rate_limit/budget_admit/budget_settle) |
//! | `slmgate_state_redis_up` | gauge (1 while the last Redis call succeeded) | |
//!
//! Costs are gauges because Prometheus counters in the `metrics` crate are integers; they
//! only ever grow, so `increase()` / `rate()` work on them as on counters.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{OnceLock, RwLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests by route (path), target and status.
pub const REQUESTS: &str = "slmgate_requests_total";
/// Request duration to the last byte, seconds.
pub const REQUEST_DURATION: &str = "slmgate_request_duration_seconds";
/// Time to the first body chunk of streamed chat answers, seconds.
pub const TTFT: &str = "slmgate_time_to_first_token_seconds";
/// Tokens by target, backend and kind.
pub const TOKENS: &str = "slmgate_tokens_total";
/// USD spent.
pub const COST: &str = "slmgate_cost_usd";
/// USD the same tokens would have cost on the reference model.
pub const COUNTERFACTUAL: &str = "slmgate_counterfactual_cost_usd";
/// Response cache hits.
pub const CACHE_HITS: &str = "slmgate_cache_hits_total";
/// The routing decision's score.
pub const DECISION_SCORE: &str = "slmgate_decision_score";
/// Routing decisions by strategy and target.
pub const DECISIONS: &str = "slmgate_decisions_total";
/// Jobs waiting for a local-model worker.
pub const LOCAL_QUEUE_DEPTH: &str = "slmgate_local_queue_depth";
/// Local generation speed, completion tokens per second.
pub const LOCAL_SPEED: &str = "slmgate_local_generation_tokens_per_second";
/// Upstream failures by backend and error type.
pub const UPSTREAM_ERRORS: &str = "slmgate_upstream_errors_total";
/// Upstream retries by backend.
pub const UPSTREAM_RETRIES: &str = "slmgate_upstream_retries_total";
/// 1 while a backend is ejected or half-open, 0 once its circuit closes again.
pub const BACKEND_EJECTED: &str = "slmgate_backend_ejected";
/// Backend ejections (see [`crate::upstream::breaker`]).
pub const BACKEND_EJECTIONS: &str = "slmgate_backend_ejections_total";
/// Client connections open (bounded by `limits.max_connections`).
pub const OPEN_CONNECTIONS: &str = "slmgate_open_connections";
/// Failed calls to the shared state (`state.redis`), by operation.
pub const STATE_ERRORS: &str = "slmgate_state_errors_total";
/// 1 while the shared state's last call succeeded, 0 after a failure.
pub const STATE_REDIS_UP: &str = "slmgate_state_redis_up";
pub use slmgate_usage::names::{USAGE_DROPPED, USAGE_QUEUE_DEPTH, USAGE_WRITTEN};

/// Every metric name above (the Grafana test checks the dashboard against this list).
pub const ALL: &[&str] = &[
    REQUESTS,
    REQUEST_DURATION,
    TTFT,
    TOKENS,
    COST,
    COUNTERFACTUAL,
    CACHE_HITS,
    DECISION_SCORE,
    DECISIONS,
    LOCAL_QUEUE_DEPTH,
    LOCAL_SPEED,
    UPSTREAM_ERRORS,
    UPSTREAM_RETRIES,
    BACKEND_EJECTED,
    BACKEND_EJECTIONS,
    OPEN_CONNECTIONS,
    USAGE_DROPPED,
    USAGE_WRITTEN,
    USAGE_QUEUE_DEPTH,
    STATE_ERRORS,
    STATE_REDIS_UP,
];

/// Histogram buckets: seconds for durations, 0..1 for scores, tokens/s for speed.
pub fn buckets() -> [(&'static str, &'static [f64]); 4] {
    const SECONDS: &[f64] = &[
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    ];
    const SCORES: &[f64] = &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];
    const SPEED: &[f64] = &[1.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0];
    [
        (REQUEST_DURATION, SECONDS),
        (TTFT, SECONDS),
        (DECISION_SCORE, SCORES),
        (LOCAL_SPEED, SPEED),
    ]
}

/// Metric handles by label values, so a hot path registers each series once instead of
/// building and looking up its key on every request (`metrics::counter!` with owned labels
/// allocates them and hashes the key each time). At most [`HandleCache::MAX`] series are
/// kept; beyond that (label values from a config reloaded many times) handles are made per
/// call as before.
pub struct HandleCache<K, V> {
    map: OnceLock<RwLock<HashMap<K, V>>>,
}

impl<K: Hash + Eq, V: Clone> HandleCache<K, V> {
    const MAX: usize = 4096;

    /// An empty cache (for a `static`).
    pub const fn new() -> Self {
        HandleCache {
            map: OnceLock::new(),
        }
    }

    /// The handles for `key`, made by `make` the first time. The recorder is installed first
    /// (see [`handle`]), so no handle of the no-op recorder is ever kept.
    pub fn get(&self, key: K, make: impl FnOnce(&K) -> V) -> V {
        let map = self.map.get_or_init(|| {
            let _ = handle();
            RwLock::new(HashMap::new())
        });
        if let Ok(m) = map.read() {
            if let Some(v) = m.get(&key) {
                return v.clone();
            }
        }
        let v = make(&key);
        if let Ok(mut m) = map.write() {
            if m.len() < Self::MAX {
                m.entry(key).or_insert_with(|| v.clone());
            }
        }
        v
    }
}

impl<K: Hash + Eq, V: Clone> Default for HandleCache<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

/// Drains the histograms' recorded samples into their buckets every `every`, so memory
/// stays bounded when nobody scrapes `/metrics` (the exporter otherwise keeps every sample
/// until the next render). Runs until the runtime shuts down.
pub fn spawn_upkeep(every: std::time::Duration) {
    if let Some(h) = handle() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                h.run_upkeep();
            }
        });
    }
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide recorder, installed on first use. `None` when another recorder was
/// installed first (an embedding program's own); metrics then go there instead.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let mut b = PrometheusBuilder::new();
            for (name, buckets) in buckets() {
                b = match b.set_buckets_for_metric(Matcher::Full(name.to_string()), buckets) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(error = %e, metric = name, "bad histogram buckets");
                        return None;
                    }
                };
            }
            match b.install_recorder() {
                Ok(h) => {
                    describe();
                    Some(h)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed; /metrics is empty");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(REQUESTS, "HTTP requests by route, target and status");
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "request duration to the last byte"
    );
    describe_histogram!(TTFT, Unit::Seconds, "time to the first streamed chunk");
    describe_counter!(TOKENS, "tokens by target, backend and kind");
    describe_gauge!(COST, "USD spent (only grows)");
    describe_gauge!(
        COUNTERFACTUAL,
        "USD the same tokens would have cost on the reference model (only grows)"
    );
    describe_counter!(CACHE_HITS, "answers served from the response cache");
    describe_histogram!(DECISION_SCORE, "routing decision scores");
    describe_counter!(DECISIONS, "routing decisions by strategy and target");
    describe_gauge!(LOCAL_QUEUE_DEPTH, "jobs waiting for a local model worker");
    describe_histogram!(LOCAL_SPEED, "local generation speed, completion tokens/s");
    describe_counter!(UPSTREAM_ERRORS, "upstream failures by backend and type");
    describe_counter!(UPSTREAM_RETRIES, "upstream retries by backend");
    describe_counter!(USAGE_DROPPED, "usage records dropped, by reason");
    describe_counter!(USAGE_WRITTEN, "usage records written");
    describe_gauge!(USAGE_QUEUE_DEPTH, "usage records waiting for the writer");
    describe_counter!(
        STATE_ERRORS,
        "failed calls to the shared state (Redis), by operation"
    );
    describe_gauge!(
        STATE_REDIS_UP,
        "1 while the shared state's (Redis) last call succeeded"
    );
}

/// The metrics in Prometheus text format, after refreshing the gauges read on demand (the
/// local models' queue depths in `gw`).
pub fn render(gw: &crate::runtime::Gateway) -> String {
    #[cfg(feature = "local")]
    for (name, b) in &gw.policies.backends {
        if let crate::upstream::Backend::Local(l) = &**b {
            metrics::gauge!(LOCAL_QUEUE_DEPTH, "backend" => name.clone())
                .set(l.pool.queue_depth() as f64);
        }
    }
    #[cfg(not(feature = "local"))]
    let _ = gw;
    match handle() {
        Some(h) => {
            h.run_upkeep();
            h.render()
        }
        None => String::new(),
    }
}

/// A bounded label for a request path: the gateway's own routes as they are, anything
/// else `other` (so scanners cannot blow up the series count).
pub fn route_label(path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" => "/v1/chat/completions",
        "/v1/route" => "/v1/route",
        "/v1/messages" => "/v1/messages",
        "/v1/completions" => "/v1/completions",
        "/v1/responses" => "/v1/responses",
        "/v1/messages/count_tokens" => "/v1/messages/count_tokens",
        "/v1/models" => "/v1/models",
        "/v1/embeddings" => "/v1/embeddings",
        "/v1/usage" => "/v1/usage",
        "/v1/usage/recent" => "/v1/usage/recent",
        "/metrics" => "/metrics",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/dashboard" => "/dashboard",
        p if p.starts_with("/admin/") => "/admin",
        _ => "other",
    }
}
