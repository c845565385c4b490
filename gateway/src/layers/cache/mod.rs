//! The cache step: answers repeated (exact cache) and paraphrased (semantic cache) chat
//! requests from memory, and remembers complete answers.
//!
//! It sits below the limits step, so a cached answer is still admitted and counted by rate
//! limits, and settled at cost 0 ([`CacheHit`]); and right above forwarding, because a hit is
//! cheap and everything above (policy caps and redaction, routing) has shaped the request
//! the key is computed from.
//!
//! # Keys
//!
//! - **Exact**: sha256 of the tenant (team, else key), the requested alias, the decided
//!   targets and a canonical form of every body field but `model`, `stream` and
//!   `stream_options` (see [`key`]). By default only requests with `temperature: 0` take
//!   part (`cache.exact.temperature_zero_only`).
//! - **Semantic**: the last user message is embedded; the *scope* hashes everything else
//!   (tenant, alias, targets, system prompt, tools, earlier turns, parameters), so a hit is
//!   always the same conversation up to its last question, for the same team. Within a scope
//!   the most similar earlier question with cosine ≥ `cache.semantic.threshold` answers.
//!   Questions longer than the embedder reads (256 tokens for MiniLM) are not compared.
//!
//! # Who uses it
//!
//! `cache.exact.enabled` / `cache.semantic.enabled` decide for requests no policy speaks
//! about; a policy's `cache` action decides for the requests it matches (`cache: true`
//! caches even with `temperature > 0`, `false` turns both caches off, `ttl` replaces the
//! configured one, `semantic` turns the semantic cache on or off). The client can opt out:
//! `Cache-Control: no-cache` (or `Pragma: no-cache`) skips the lookup but stores the fresh
//! answer; `no-store` skips both.
//!
//! # What is stored
//!
//! A complete `chat.completion` JSON: the upstream's body for a JSON request, the assembled
//! events for a stream (see [`replay`]). Nothing is stored from an error status, an error
//! event, a stream without `[DONE]` or a choice without a finish reason, nor when the
//! client goes away before the upstream finished. One stored form serves both kinds of
//! request: a JSON request gets the completion; a stream request gets it replayed as
//! `chat.completion.chunk` events (one content chunk and one finish chunk per choice, the
//! usage chunk when asked for, then `[DONE]`). Cached answers keep their original `id`,
//! `created` and `usage`.
//!
//! # Response header
//!
//! `x-slmgate-cache`: `hit` (exact), `semantic-hit`, `miss` (looked up, not found; the
//! answer is stored if complete) or `bypass` (not looked up: not eligible, `no-cache` or
//! `no-store`, or a policy turned the cache off). Absent when caching is off for the
//! request altogether.

pub mod key;
pub mod replay;
pub mod store;

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tracing::Instrument as _;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;
use slmgate_config::cache::Cache as CacheConfig;
use slmgate_policies::rules::CacheDirective;
use tower::{Layer, Service};

use super::sse_map::{event_bytes, map_events, EventFilter};
use super::BoxFuture;
use crate::call::Decision;
use crate::call::RoutedCall;
use crate::facts::{CacheOutcome, Served};
use crate::state::RedisStore;
use slmgate_openai::chat::{is_usage_only_chunk, AnswerUsage, ChatRequest, JsonAnswer};
use slmgate_openai::error::GatewayError;
pub use store::CacheState;

/// The response cache of one configuration: its settings and the stores, which outlive the
/// configuration (see [`CacheState::carry`]).
#[derive(Debug, Clone, Default)]
pub struct Caching {
    /// `cache:`.
    pub settings: CacheConfig,
    /// The stores.
    pub state: CacheState,
    /// With `cache.exact.shared`: the Redis of `state.redis`, asked after a miss in `state`
    /// and given every exact answer stored there.
    pub shared: Option<Arc<RedisStore>>,
}

impl Caching {
    /// The cache for `settings`, keeping `previous`'s entries when its bounds still fit;
    /// `redis` is `state.redis`'s store, used when `cache.exact.shared` says so.
    pub fn new(
        settings: &CacheConfig,
        previous: Option<&CacheState>,
        redis: Option<&Arc<RedisStore>>,
    ) -> Self {
        Caching {
            state: CacheState::carry(previous, settings),
            shared: redis.filter(|_| settings.exact.shared).cloned(),
            settings: settings.clone(),
        }
    }
}

/// The client's `Cache-Control` (and `Pragma`) directives that matter here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientDirectives {
    /// Do not answer from the cache.
    pub no_cache: bool,
    /// Do not answer from the cache, and do not store the answer.
    pub no_store: bool,
}

impl ClientDirectives {
    /// Reads `Cache-Control` and `Pragma` (case-insensitive, comma-separated).
    pub fn from_headers(h: &HeaderMap) -> Self {
        let mut d = ClientDirectives::default();
        for v in h
            .get_all(header::CACHE_CONTROL)
            .iter()
            .chain(h.get_all(header::PRAGMA).iter())
        {
            let Ok(v) = v.to_str() else { continue };
            for item in v.split(',') {
                let name = item.split('=').next().unwrap_or("").trim();
                if name.eq_ignore_ascii_case("no-cache") {
                    d.no_cache = true;
                } else if name.eq_ignore_ascii_case("no-store") {
                    d.no_store = true;
                }
            }
        }
        d
    }
}

/// How one request uses the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Look up an answer.
    pub read: bool,
    /// Store a fresh answer.
    pub store: bool,
    /// The exact cache takes part.
    pub exact: bool,
    /// The semantic cache takes part.
    pub semantic: bool,
    /// TTL of a stored exact answer.
    pub exact_ttl: Duration,
    /// TTL of a stored semantic answer.
    pub semantic_ttl: Duration,
}

impl Plan {
    fn used(&self) -> bool {
        (self.read || self.store) && (self.exact || self.semantic)
    }
}

/// Decides how a request uses the cache; `None` when caching is off for it altogether (no
/// header is added).
pub fn plan(
    settings: &CacheConfig,
    directive: Option<&CacheDirective>,
    client: ClientDirectives,
    temperature: Option<f64>,
    have_embedder: bool,
) -> Option<Plan> {
    let off = Plan {
        read: false,
        store: false,
        exact: false,
        semantic: false,
        exact_ttl: settings.exact.ttl,
        semantic_ttl: settings.semantic.ttl,
    };
    let (exact_on, semantic_on) = match directive {
        Some(d) if !d.enabled => return Some(off),
        Some(d) => (true, d.semantic.unwrap_or(settings.semantic.enabled)),
        None => (settings.exact.enabled, settings.semantic.enabled),
    };
    let semantic_on = semantic_on && have_embedder;
    if !exact_on && !semantic_on {
        return None;
    }
    let exact = exact_on
        && (directive.is_some()
            || !settings.exact.temperature_zero_only
            || temperature == Some(0.0));
    let ttl = directive.and_then(|d| d.ttl);
    Some(Plan {
        read: !client.no_cache && !client.no_store,
        store: !client.no_store,
        exact,
        semantic: semantic_on,
        exact_ttl: ttl.unwrap_or(settings.exact.ttl),
        semantic_ttl: ttl.unwrap_or(settings.semantic.ttl),
    })
}

/// Serves and stores answers (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheLayer;

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CacheService { inner }
    }
}

/// See [`CacheLayer`].
#[derive(Clone, Debug)]
pub struct CacheService<S> {
    inner: S,
}

/// Says how the cache took part (a response extension, written as `x-slmgate-cache` at the
/// edge; the limits step charges nothing for a hit).
fn mark(resp: &mut Response, outcome: CacheOutcome) {
    resp.extensions_mut().insert(outcome);
}

impl<S> Service<RoutedCall> for CacheService<S>
where
    S: Service<RoutedCall, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: RoutedCall) -> Self::Future {
        // Take the service that was polled ready; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let gw = req.call.gw.clone();
            let (chat, decision) = (&req.call.chat, &req.decision);
            let directive = req.policy.as_ref().and_then(|p| p.0.cache().copied());
            let temperature = chat.field::<f64>("temperature").ok().flatten();
            let Some(plan) = plan(
                &gw.cache.settings,
                directive.as_ref(),
                ClientDirectives::from_headers(&req.call.head.headers),
                temperature,
                gw.embedder.is_some(),
            ) else {
                return inner.call(req).await;
            };
            if !plan.used() {
                let mut resp = inner.call(req).await?;
                mark(&mut resp, CacheOutcome::Bypass);
                return Ok(resp);
            }
            let tenant = key::tenant(req.call.caller.as_ref());
            let exact_key = plan
                .exact
                .then(|| key::exact_key(&tenant, chat, decision))
                .flatten();
            let state = gw.cache.state.clone();
            // The lookup's span (see crate::telemetry::cache_span); dropped before forwarding
            // so a miss's upstream call is not its child.
            let span = crate::telemetry::cache_span();
            let shared = gw.cache.shared.clone();
            if plan.read {
                if let Some(k) = &exact_key {
                    let found = match state.get_exact(k) {
                        Some(a) => Some(a),
                        None => match &shared {
                            Some(r) => get_shared(r, &state, k).instrument(span.clone()).await,
                            None => None,
                        },
                    };
                    if let Some(a) = found {
                        tracing::debug!(backend = %a.backend, "exact cache hit");
                        crate::telemetry::record_cache(&span, "hit", Some("exact"), None);
                        return Ok(replay(&a, chat, decision, CacheOutcome::Hit));
                    }
                }
            }
            let semantic = match (plan.semantic, &gw.embedder) {
                (true, Some(e)) => match key::body_map(chat)
                    .ok()
                    .and_then(|body| key::semantic_query(&tenant, chat, decision, &body))
                {
                    Some(q) => embed(e, &q.text)
                        .instrument(span.clone())
                        .await
                        .map(|v| (q.scope, v)),
                    None => None,
                },
                _ => None,
            };
            if plan.read {
                if let Some((scope, v)) = &semantic {
                    let threshold = gw.cache.settings.semantic.threshold;
                    if let Some((a, sim)) = state.get_semantic(scope, v, threshold) {
                        tracing::debug!(similarity = sim, backend = %a.backend, "semantic cache hit");
                        crate::telemetry::record_cache(&span, "hit", Some("semantic"), Some(sim));
                        return Ok(replay(&a, chat, decision, CacheOutcome::SemanticHit));
                    }
                }
            }
            crate::telemetry::record_cache(
                &span,
                if plan.read { "miss" } else { "bypass" },
                None,
                None,
            );
            drop(span);

            // A miss: forward, and record the answer if it completes.
            let label = if plan.read {
                CacheOutcome::Miss
            } else {
                CacheOutcome::Bypass
            };
            if !plan.store || (exact_key.is_none() && semantic.is_none()) {
                let mut resp = inner.call(req).await?;
                mark(&mut resp, label);
                return Ok(resp);
            }
            // Ask a stream for its usage chunk so the stored answer has it (hidden again
            // from a client that did not ask).
            let hide_usage = chat.stream && !chat.client_wants_usage;
            if hide_usage {
                match chat.with_stream_usage() {
                    Ok(c) => req.call.chat = c,
                    Err(e) => return Ok(e.into_response()),
                }
            }
            let mut resp = inner.call(req).await?;
            mark(&mut resp, label);
            if resp.status() != StatusCode::OK {
                return Ok(resp);
            }
            let sink = Sink {
                state,
                shared,
                exact: exact_key.map(|k| (k, plan.exact_ttl)),
                semantic: semantic.map(|(scope, v)| (scope, v, plan.semantic_ttl)),
                backend: resp
                    .extensions()
                    .get::<Served>()
                    .map(|s| s.backend.clone())
                    .unwrap_or_default(),
                max_bytes: usize::try_from(gw.cache.settings.exact.max_bytes).unwrap_or(usize::MAX),
            };
            Ok(record(resp, sink, hide_usage).await)
        })
    }
}

/// Embeds the last user message, or `None` (no semantic cache for this request) when it is
/// longer than the embedder reads or the embedder fails.
async fn embed(e: &crate::embedder::LocalEmbedder, text: &str) -> Option<Arc<[f32]>> {
    use slmgate_routing::query::{Query, MAX_EMBED_CHARS};
    if text.chars().nth(MAX_EMBED_CHARS).is_some() {
        return None;
    }
    #[cfg(feature = "local")]
    if e.routing_model().count_tokens(text) > e.routing_model().max_tokens() {
        // The embedder would read a prefix: two questions sharing it would look the same.
        return None;
    }
    use slmgate_routing::engine::QueryEmbedder as _;
    match e.embed(Query::from_text(text).embed_text()).await {
        Ok(v) => Some(v),
        Err(err) => {
            tracing::warn!(error = %err, "semantic cache: embedding failed; skipped");
            None
        }
    }
}

/// The shared store's answer for `key`, kept in the local store too for the time it has
/// left. A Redis failure is a miss (counted and logged by the store).
async fn get_shared(
    redis: &RedisStore,
    local: &CacheState,
    key: &key::Key,
) -> Option<Arc<store::Answer>> {
    let a = redis.cache_get(key).await.ok()??;
    let answer = Arc::new(store::Answer {
        json: a.json,
        backend: a.backend,
        ttl: a.ttl_left,
    });
    local.put_exact(*key, answer.clone());
    Some(answer)
}

/// A cached answer as a response to `chat`.
fn replay(
    a: &store::Answer,
    chat: &ChatRequest,
    decision: &Decision,
    outcome: CacheOutcome,
) -> Response {
    let mut resp = if chat.stream {
        let Ok(completion) = serde_json::from_slice::<Value>(&a.json) else {
            return GatewayError::Internal("cached answer is not JSON".into()).into_response();
        };
        let mut body = Vec::new();
        for e in replay::completion_events(&completion, chat.client_wants_usage) {
            body.extend_from_slice(&event_bytes(&e));
        }
        let mut r = Response::new(Body::from(body));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    } else {
        let mut r = Response::new(Body::from(a.json.clone()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    let target = decision
        .route
        .targets
        .iter()
        .find(|t| t.backend.name() == a.backend)
        .cloned();
    let ext = resp.extensions_mut();
    ext.insert(Arc::new(decision.clone()));
    ext.insert(Served {
        backend: a.backend.clone(),
        target,
    });
    mark(&mut resp, outcome);
    resp
}

/// Where a complete answer goes.
struct Sink {
    state: CacheState,
    /// The shared store, given the exact answer too (in a task of its own: the client's
    /// stream does not wait for Redis).
    shared: Option<Arc<RedisStore>>,
    exact: Option<(key::Key, Duration)>,
    semantic: Option<(key::Key, Arc<[f32]>, Duration)>,
    /// The answering backend's name ([`Served`]).
    backend: String,
    max_bytes: usize,
}

impl Sink {
    fn store(self, json: Bytes) {
        if json.len() > self.max_bytes {
            return;
        }
        // A body read from the upstream is a slice of the connection's read buffer (8 KiB
        // or more); keeping that slice would pin the whole buffer for the entry's lifetime
        // (measured: ~11 KB resident per cached 300-byte answer, and page-zeroing showing in
        // profiles). A compact copy keeps memory what the weigher counts. It is made only
        // for a store that takes the answer: a full exact store turns most new keys away.
        let compact = std::cell::OnceCell::new();
        let copy = || {
            compact
                .get_or_init(|| Bytes::copy_from_slice(&json))
                .clone()
        };
        let backend = self.backend.as_str();
        if let (Some(redis), Some((k, ttl))) = (self.shared, self.exact) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let (json, backend) = (json.clone(), backend.to_string());
                rt.spawn(async move {
                    // A failure is counted and logged by the store; the answer stays local.
                    let _ = redis.cache_set(&k, &backend, &json, ttl).await;
                });
            }
        }
        if let Some((k, ttl)) = self.exact {
            let w = store::weight_of(json.len(), backend.len());
            self.state.put_exact_with(k, w, || {
                Arc::new(store::Answer {
                    json: copy(),
                    backend: backend.to_string(),
                    ttl,
                })
            });
        }
        if let Some((scope, v, ttl)) = self.semantic {
            self.state.put_semantic(
                scope,
                v,
                Arc::new(store::Answer {
                    json: copy(),
                    backend: backend.to_string(),
                    ttl,
                }),
            );
        }
    }
}

/// Passes the answer on, storing it once complete.
async fn record(resp: Response, sink: Sink, hide_usage: bool) -> Response {
    let is_sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_sse {
        // The upstream client read the answer whole: store its bytes, pass the response on
        // untouched.
        if let Some(a) = resp.extensions().get::<JsonAnswer>() {
            if a.complete {
                sink.store(a.body.clone());
            }
            return resp;
        }
    }
    let (mut parts, body) = resp.into_parts();
    if is_sse {
        let rec = Recorder {
            asm: Some(replay::Assembler::default()),
            sink: Some(sink),
            hide_usage,
        };
        return Response::from_parts(parts, map_events(body, rec));
    }
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            return GatewayError::Upstream(format!("reading the answer failed: {e}"))
                .into_response()
        }
    };
    // Read it now, once, and leave its usage for the limits and account steps above.
    let (complete, usage) = slmgate_openai::chat::read_json_answer(&bytes);
    if parts.extensions.get::<AnswerUsage>().is_none() {
        parts.extensions.insert(AnswerUsage(usage));
    }
    if complete {
        sink.store(bytes.clone());
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

/// Watches a stream on its way to the client; stores the assembled answer when the upstream
/// finished it. A client that goes away drops the recorder before [`EventFilter::end`], so
/// nothing is stored.
struct Recorder {
    asm: Option<replay::Assembler>,
    sink: Option<Sink>,
    hide_usage: bool,
}

impl EventFilter for Recorder {
    fn event(&mut self, data: &str, out: &mut Vec<String>) {
        if let (Some(asm), Some(sink)) = (&mut self.asm, &self.sink) {
            asm.push(data);
            if asm.bytes > sink.max_bytes {
                // Too large to cache: stop collecting.
                self.asm = None;
            }
        }
        if self.hide_usage && is_usage_only_chunk(data) {
            return;
        }
        out.push(data.to_string());
    }

    fn end(&mut self, _out: &mut Vec<String>) {
        let (Some(asm), Some(sink)) = (self.asm.take(), self.sink.take()) else {
            return;
        };
        if let Some(c) = asm.finish() {
            sink.store(Bytes::from(c.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directive(enabled: bool, ttl: Option<u64>, semantic: Option<bool>) -> CacheDirective {
        CacheDirective {
            enabled,
            ttl: ttl.map(Duration::from_secs),
            semantic,
        }
    }

    fn on() -> CacheConfig {
        let mut c = CacheConfig::default();
        c.exact.enabled = true;
        c
    }

    #[test]
    fn temperature_zero_only_unless_a_policy_says_so() {
        let none = ClientDirectives::default();
        let p = plan(&on(), None, none, Some(0.0), false).unwrap();
        assert!(p.exact && p.read && p.store && !p.semantic);
        let p = plan(&on(), None, none, Some(0.7), false).unwrap();
        assert!(!p.exact && !p.used());
        let p = plan(&on(), None, none, None, false).unwrap();
        assert!(!p.exact, "absent temperature is OpenAI's default 1");
        let p = plan(
            &on(),
            Some(&directive(true, Some(5), None)),
            none,
            Some(0.7),
            false,
        )
        .unwrap();
        assert!(p.exact);
        assert_eq!(p.exact_ttl, Duration::from_secs(5));
        let mut any = on();
        any.exact.temperature_zero_only = false;
        assert!(plan(&any, None, none, Some(1.0), false).unwrap().exact);
    }

    #[test]
    fn off_by_config_or_policy() {
        let none = ClientDirectives::default();
        assert_eq!(
            plan(&CacheConfig::default(), None, none, Some(0.0), true),
            None
        );
        // A policy turns a cache that the config leaves off on for its requests...
        let p = plan(
            &CacheConfig::default(),
            Some(&directive(true, None, None)),
            none,
            None,
            true,
        )
        .unwrap();
        assert!(p.exact && !p.semantic);
        // ...and off for requests the config would cache (reported as `bypass`).
        let p = plan(
            &on(),
            Some(&directive(false, None, None)),
            none,
            Some(0.0),
            true,
        )
        .unwrap();
        assert!(!p.used());
        let mut sem = on();
        sem.semantic.enabled = true;
        assert!(plan(&sem, None, none, Some(0.0), true).unwrap().semantic);
        assert!(
            !plan(&sem, None, none, Some(0.0), false).unwrap().semantic,
            "no embedder"
        );
        let p = plan(
            &sem,
            Some(&directive(true, None, Some(false))),
            none,
            None,
            true,
        )
        .unwrap();
        assert!(p.exact && !p.semantic);
    }

    #[test]
    fn client_directives() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=0, No-Cache"),
        );
        let d = ClientDirectives::from_headers(&h);
        assert!(d.no_cache && !d.no_store);
        let p = plan(&on(), None, d, Some(0.0), false).unwrap();
        assert!(!p.read && p.store);
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let d = ClientDirectives::from_headers(&h);
        let p = plan(&on(), None, d, Some(0.0), false).unwrap();
        assert!(!p.read && !p.store && !p.used());
        let mut h = HeaderMap::new();
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        assert!(ClientDirectives::from_headers(&h).no_cache);
    }

    #[test]
    fn usage_only_chunks() {
        assert!(is_usage_only_chunk(
            r#"{"choices":[],"usage":{"prompt_tokens":1}}"#
        ));
        assert!(!is_usage_only_chunk(
            r#"{"choices":[{"delta":{}}],"usage":null}"#
        ));
        assert!(!is_usage_only_chunk(r#"{"choices":[]}"#));
    }

    #[tokio::test]
    async fn nothing_is_stored_from_a_cut_or_failed_stream() {
        use http_body_util::BodyExt;
        let state = CacheState::default();
        let sink = |state: &CacheState| Sink {
            state: state.clone(),
            shared: None,
            exact: Some(([9; 32], Duration::from_secs(60))),
            semantic: None,
            backend: "up".into(),
            max_bytes: 1 << 20,
        };
        let sse = |body: &'static str| {
            let mut r = Response::new(Body::from(body));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            r
        };
        let chunk = r#"data: {"id":"x","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#;
        let cut = Box::leak(format!("{chunk}\n\n").into_boxed_str());
        let resp = record(sse(cut), sink(&state), false).await;
        let _ = resp.into_body().collect().await.unwrap();
        assert!(state.get_exact(&[9; 32]).is_none(), "cut stream stored");

        let failed = Box::leak(
            format!("{chunk}\n\ndata: {{\"error\":{{\"message\":\"boom\"}}}}\n\ndata: [DONE]\n\n")
                .into_boxed_str(),
        );
        let resp = record(sse(failed), sink(&state), false).await;
        let _ = resp.into_body().collect().await.unwrap();
        assert!(state.get_exact(&[9; 32]).is_none(), "failed stream stored");

        // A client gone before the end: the body is dropped half-read.
        let whole = r#"data: {"id":"x","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}

data: {"id":"x","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}

data: [DONE]

"#;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let body = Body::from_stream(tokio_stream_from(rx));
        let mut r = Response::new(body);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        let resp = record(r, sink(&state), true).await;
        let mut body = resp.into_body();
        tx.send(Ok(Bytes::from_static(
            whole.split("\n\n").next().unwrap().as_bytes(),
        )))
        .await
        .unwrap();
        tx.send(Ok(Bytes::from_static(b"\n\n"))).await.unwrap();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.data_ref().is_some());
        drop(body);
        drop(tx);
        assert!(
            state.get_exact(&[9; 32]).is_none(),
            "abandoned stream stored"
        );

        // The same stream read to the end is stored, and its usage chunk hidden.
        let resp = record(sse(whole), sink(&state), true).await;
        let out = resp.into_body().collect().await.unwrap().to_bytes();
        let text = std::str::from_utf8(&out).unwrap();
        assert!(
            !text.contains("usage") && text.ends_with("data: [DONE]\n\n"),
            "{text}"
        );
        let a = state.get_exact(&[9; 32]).expect("complete stream stored");
        let v: Value = serde_json::from_slice(&a.json).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "hi");
        assert_eq!(v["usage"]["total_tokens"], 2);

        // JSON: an error body is not stored, a complete one is.
        let state = CacheState::default();
        let json = |s: &'static str| Response::new(Body::from(s));
        let _ = record(json(r#"{"error":{"message":"x"}}"#), sink(&state), false).await;
        assert!(state.get_exact(&[9; 32]).is_none());
        let _ = record(
            json(r#"{"choices":[{"index":0,"message":{"content":"a"},"finish_reason":"stop"}]}"#),
            sink(&state),
            false,
        )
        .await;
        assert!(state.get_exact(&[9; 32]).is_some());
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures::Stream<Item = T> + Send {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
