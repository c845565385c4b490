//! The accounting step: one [`UsageRecord`] per chat request, and the chat metrics.
//!
//! It sits right below request parsing, above routing, policy and limits, so it sees every
//! outcome of a valid request: answers (JSON or streamed, local or remote, from the cache)
//! and refusals (403/404 from routing, 4xx from the policy, 429 from the limits, 5xx when no
//! target could answer). It needs no state of its own: the decision, the target that
//! answered and the cache outcome come back as typed response extensions
//! ([`crate::facts`]).
//!
//! - **Tokens** come from the answer's `usage`. For streams the step asks upstream for the
//!   usage chunk (`stream_options.include_usage`) and hides it again from clients that did
//!   not ask; a stream cut short records what it saw (no usage: 0 tokens, error class
//!   `stream_incomplete`).
//! - **Cost** is the tokens at the answering model's price (`pricing:` over the embedded
//!   defaults; `local` for the embedded model; 0 for a cache hit). The **counterfactual** is
//!   the same tokens at the reference model's price (`usage.reference_model`).
//! - **Latency** runs from here to the last byte (the stream's end, or the client leaving);
//!   **time to first token** to the first streamed event carrying generated output (content or
//!   a tool call; the whole latency for JSON).
//!
//! - **Requests that end without an answer** are recorded too: the record exists before the
//!   steps below run, so a request dropped before its response head is written as 504
//!   `gateway_timeout` when its whole-request deadline passed ([`RequestDeadline`]), else as
//!   499 `client_disconnected` (the client left, or shutdown cut it).
//!
//! The record is handed to the [`UsageSink`], which never blocks (see [`slmgate_usage`]).
//!
//! ```
//! use slmgate_gateway::layers::account::AccountLayer;
//! use tower::ServiceBuilder;
//! # let svc = tower::service_fn(|_: slmgate_gateway::call::ChatCall| async {
//! #     Ok::<_, std::convert::Infallible>(axum::response::Response::new(axum::body::Body::empty()))
//! # });
//! // No sink: metrics only.
//! let chat = ServiceBuilder::new().layer(AccountLayer::new(None)).service(svc);
//! # let _ = chat;
//! ```

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap};
use tower::{Layer, Service};

use super::sse_map::{map_events, EventFilter};
use super::timeout::RequestDeadline;
use super::BoxFuture;
use crate::call::ChatCall;
use crate::call::Decision;
use crate::facts::{CacheOutcome, Served};
use crate::metrics as m;
use crate::upstream::Backend;
use slmgate_openai::chat::{extract_usage, is_usage_only_chunk, AnswerUsage, Usage};
use slmgate_openai::error::GatewayError;
use slmgate_usage::{now_ms, UsageRecord, UsageSink};

/// The status recorded for a request whose client left before its answer (nginx's 499
/// "client closed request"; never sent, as nobody is there to receive it).
pub const CLIENT_CLOSED: i64 = 499;

/// Records usage and chat metrics (see the module docs).
#[derive(Clone, Debug)]
pub struct AccountLayer {
    sink: Option<UsageSink>,
}

impl AccountLayer {
    /// Records into `sink` (`None`: metrics only, no usage rows).
    pub fn new(sink: Option<UsageSink>) -> Self {
        AccountLayer { sink }
    }
}

impl<S> Layer<S> for AccountLayer {
    type Service = Account<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Account {
            inner,
            sink: self.sink.clone(),
        }
    }
}

/// See [`AccountLayer`].
#[derive(Clone, Debug)]
pub struct Account<S> {
    inner: S,
    sink: Option<UsageSink>,
}

/// Everything known about a request before its answer is complete.
struct Pending {
    rec: UsageRecord,
    start: Instant,
    first: Option<Instant>,
    usage: Option<Usage>,
    price: Option<slmgate_policies::pricing::Price>,
    reference: Option<slmgate_policies::pricing::Price>,
    sink: Option<UsageSink>,
    /// The answer is an event stream (time to first token = first event).
    sse: bool,
    done: bool,
    finished: bool,
    /// The inner steps answered (a response head exists). A request dropped before that is
    /// recorded as 504 `gateway_timeout` past its deadline, else 499 `client_disconnected`.
    answered: bool,
    /// The whole-request deadline ([`RequestDeadline`]).
    deadline: Option<Instant>,
}

fn header_str<K: http::header::AsHeaderName>(h: &HeaderMap, name: K) -> Option<&str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
}

/// The `error.code` (else `error.type`) of an OpenAI error body.
pub fn error_class(json: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    let e = v.get("error")?;
    let pick = |k: &str| e.get(k).and_then(|c| c.as_str()).filter(|s| !s.is_empty());
    Some(
        pick("code")
            .or_else(|| pick("type"))
            .unwrap_or("error")
            .to_string(),
    )
}

impl Pending {
    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let latency = self.start.elapsed();
        let rec = &mut self.rec;
        if !self.answered {
            let timed_out = self.deadline.is_some_and(|d| Instant::now() >= d);
            let (status, class) = if timed_out {
                (504, "gateway_timeout")
            } else {
                (CLIENT_CLOSED, "client_disconnected")
            };
            rec.status = status;
            rec.error_class = Some(class.into());
        }
        rec.latency_ms = latency.as_secs_f64() * 1000.0;
        if self.sse {
            rec.ttft_ms = self
                .first
                .map(|f| f.duration_since(self.start).as_secs_f64() * 1000.0);
            if rec.status < 400 && !self.done && rec.error_class.is_none() {
                rec.error_class = Some("stream_incomplete".into());
            }
        } else {
            rec.ttft_ms = Some(rec.latency_ms);
        }
        if let Some(u) = self.usage {
            rec.prompt_tokens = u.prompt_tokens as i64;
            rec.completion_tokens = u.completion_tokens as i64;
        }
        let usage = self.usage.unwrap_or(Usage {
            prompt_tokens: rec.prompt_tokens as u64,
            completion_tokens: rec.completion_tokens as u64,
            ..Usage::default()
        });
        rec.cost_usd = if rec.cache.is_some() {
            0.0
        } else {
            super::limits::usage_cost(self.price, &usage)
        };
        rec.counterfactual_usd = match self.reference {
            Some(r) => super::limits::usage_cost(Some(r), &usage),
            // No reference price: nothing saved, nothing lost.
            None => rec.cost_usd,
        };
        emit_metrics(rec, self.sse);
        if let Some(sink) = &self.sink {
            sink.record(std::mem::take(rec));
        }
    }
}

/// The series of one (target, backend) pair.
#[derive(Clone)]
struct PairSeries {
    prompt: metrics::Counter,
    completion: metrics::Counter,
    cost: metrics::Gauge,
    counterfactual: metrics::Gauge,
    ttft: metrics::Histogram,
}

/// The series of one (strategy, target) pair.
#[derive(Clone)]
struct DecisionSeries {
    decisions: metrics::Counter,
    score: metrics::Histogram,
}

static PAIRS: m::HandleCache<(String, String), PairSeries> = m::HandleCache::new();
static DECISIONS: m::HandleCache<(String, String), DecisionSeries> = m::HandleCache::new();

fn emit_metrics(rec: &UsageRecord, sse: bool) {
    let target = rec.target.clone().unwrap_or_default();
    let backend = rec.backend.clone().unwrap_or_default();
    let pair = PAIRS.get((target.clone(), backend.clone()), |(t, b)| PairSeries {
        prompt: metrics::counter!(m::TOKENS, "target" => t.clone(), "backend" => b.clone(), "kind" => "prompt"),
        completion: metrics::counter!(m::TOKENS, "target" => t.clone(), "backend" => b.clone(), "kind" => "completion"),
        cost: metrics::gauge!(m::COST, "target" => t.clone(), "backend" => b.clone()),
        counterfactual: metrics::gauge!(m::COUNTERFACTUAL, "target" => t.clone(), "backend" => b.clone()),
        ttft: metrics::histogram!(m::TTFT, "target" => t.clone(), "backend" => b.clone()),
    });
    if rec.prompt_tokens > 0 || rec.completion_tokens > 0 {
        pair.prompt.increment(rec.prompt_tokens.max(0) as u64);
        pair.completion
            .increment(rec.completion_tokens.max(0) as u64);
    }
    pair.cost.increment(rec.cost_usd);
    pair.counterfactual.increment(rec.counterfactual_usd);
    if let Some(kind) = &rec.cache {
        metrics::counter!(m::CACHE_HITS, "kind" => kind.clone()).increment(1);
    }
    if let Some(strategy) = &rec.strategy {
        let d = DECISIONS.get((strategy.clone(), target.clone()), |(s, t)| DecisionSeries {
            decisions: metrics::counter!(m::DECISIONS, "strategy" => s.clone(), "target" => t.clone()),
            score: metrics::histogram!(m::DECISION_SCORE, "strategy" => s.clone(), "target" => t.clone()),
        });
        d.decisions.increment(1);
        if let Some(s) = rec.score {
            d.score.record(s);
        }
    }
    if sse && rec.status < 400 {
        if let Some(t) = rec.ttft_ms {
            pair.ttft.record(t / 1000.0);
        }
    }
    if rec.local && rec.completion_tokens > 0 && rec.cache.is_none() {
        // Generation time: after the first token for streams, the whole request for JSON.
        let gen_ms = rec.latency_ms - if sse { rec.ttft_ms.unwrap_or(0.0) } else { 0.0 };
        if gen_ms > 0.0 {
            metrics::histogram!(m::LOCAL_SPEED, "backend" => backend)
                .record(rec.completion_tokens as f64 / (gen_ms / 1000.0));
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Watches a stream's events: first-event time, usage (hidden again when only the gateway
/// asked for it), error events and the final `[DONE]`.
struct StreamWatch {
    pending: Pending,
    hide_usage: bool,
}

/// True when a stream chunk carries generated output: non-empty `delta.content` (or
/// `refusal`, `reasoning_content`) or a tool call in some choice.
pub(crate) fn carries_token(data: &str) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
        return false;
    };
    let Some(choices) = v.get("choices").and_then(|c| c.as_array()) else {
        return false;
    };
    choices.iter().any(|c| {
        let Some(d) = c.get("delta") else {
            return false;
        };
        ["content", "refusal", "reasoning_content"].iter().any(|k| {
            d.get(k)
                .and_then(|x| x.as_str())
                .is_some_and(|x| !x.is_empty())
        }) || d.get("tool_calls").is_some_and(|t| !t.is_null())
    })
}

impl EventFilter for StreamWatch {
    fn event(&mut self, data: &str, out: &mut Vec<String>) {
        // Time to first *token*: the opening role-only chunk (which the embedded model sends
        // before it generates anything) does not count. Only events before the first token
        // are parsed for this.
        if self.pending.first.is_none() && data != "[DONE]" && carries_token(data) {
            self.pending.first = Some(Instant::now());
        }
        if data == "[DONE]" {
            self.pending.done = true;
        } else if data.contains("\"usage\"") {
            if let Some(u) = extract_usage(data.as_bytes()) {
                self.pending.usage = Some(u);
                if self.hide_usage && is_usage_only_chunk(data) {
                    return;
                }
            }
        } else if data.contains("\"error\"") {
            if let Some(c) = error_class(data.as_bytes()) {
                self.pending.rec.error_class = Some(c);
            }
        }
        out.push(data.to_string());
    }

    fn end(&mut self, _out: &mut Vec<String>) {
        self.pending.finish();
    }
}

impl<S> Service<ChatCall> for Account<S>
where
    S: Service<ChatCall, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: ChatCall) -> Self::Future {
        // Take the service that was polled ready; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let sink = self.sink.clone();
        Box::pin(async move {
            let start = Instant::now();
            let ts_ms = now_ms();
            let gw = call.gw.clone();
            let chat = &call.chat;
            let key = call.caller.as_ref().and_then(|c| c.key.clone());
            let stream = chat.stream;
            let requested_model = chat.model.clone();
            // Streams: ask upstream for the usage chunk; it is hidden again below. The
            // request then says the client wants usage, so no inner step hides it first.
            let hide_usage = stream && !chat.client_wants_usage;
            if hide_usage {
                match chat.with_stream_usage() {
                    Ok(c) => call.chat = c,
                    Err(e) => return Ok(e.into_response()),
                }
            }
            let request_id = header_str(&call.head.headers, "x-request-id")
                .unwrap_or_default()
                .to_string();
            let deadline = call.head.extensions.get::<RequestDeadline>().map(|d| d.0);
            // Made before the request runs, so that a request dropped before its answer (the
            // whole-request timeout, the client gone, shutdown) is still recorded once.
            let mut pending = Pending {
                rec: UsageRecord {
                    id: uuid::Uuid::now_v7().to_string(),
                    ts_ms,
                    request_id,
                    key_name: key.as_ref().map(|k| k.name.clone()),
                    team: key.as_ref().and_then(|k| k.team.clone()),
                    requested_model,
                    stream,
                    ..Default::default()
                },
                start,
                first: None,
                usage: None,
                price: None,
                reference: None,
                sink,
                sse: false,
                done: false,
                finished: false,
                answered: false,
                deadline,
            };

            let resp = inner.call(call).await?;

            pending.answered = true;
            let (h, ext) = (resp.headers(), resp.extensions());
            let status = resp.status();
            let decision = ext.get::<Arc<Decision>>();
            let served = ext.get::<Served>();
            let target = served.and_then(|s| s.target.as_ref());
            let local = target.is_some_and(|t| match &*t.backend {
                Backend::OpenAi(_) => false,
                #[cfg(feature = "local")]
                Backend::Local(_) => true,
            });
            // `miss` and `bypass` went upstream: only hits were served from the cache.
            let cache = ext
                .get::<CacheOutcome>()
                .filter(|c| c.is_hit())
                .map(|c| c.as_str().to_string());
            // A hit was answered by the cache, not the model: it is neither local nor remote.
            let local = local && cache.is_none();
            pending.price = target.and_then(|t| gw.accounting.price(t));
            pending.reference = gw
                .usage_reference
                .as_deref()
                .and_then(|r| gw.accounting.model_price(r));
            let rec = &mut pending.rec;
            if let Some(d) = decision {
                rec.strategy = Some(d.strategy.to_string());
                rec.category.clone_from(&d.category);
                rec.score = d.score.map(f64::from);
                rec.reason = Some(d.reason.clone());
                rec.target = Some(d.target.clone());
            }
            rec.upstream_model = target.map(|t| t.model.clone());
            rec.backend = served.map(|s| s.backend.clone());
            rec.local = local;
            rec.cache = cache;
            rec.status = i64::from(status.as_u16());
            let is_sse = h
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            if !is_sse && status.is_success() {
                // A step below read the answer's usage already: the body need not be read.
                if let Some(&AnswerUsage(usage)) = resp.extensions().get::<AnswerUsage>() {
                    pending.usage = usage;
                    pending.finish();
                    return Ok(resp);
                }
            }
            let (mut parts, body) = resp.into_parts();
            if is_sse && status.is_success() {
                pending.sse = true;
                let watch = StreamWatch {
                    pending,
                    hide_usage,
                };
                return Ok(Response::from_parts(parts, map_events(body, watch)));
            }
            // A JSON answer or an error: complete already, read it whole.
            let bytes = match axum::body::to_bytes(body, usize::MAX).await {
                Ok(b) => b,
                Err(e) => {
                    pending.rec.error_class = Some("body_error".into());
                    pending.rec.status = 502;
                    return Ok(
                        GatewayError::Upstream(format!("reading the answer failed: {e}"))
                            .into_response(),
                    );
                }
            };
            if status.is_success() {
                pending.usage = slmgate_openai::chat::answer_usage(&mut parts, &bytes);
            } else {
                pending.rec.error_class = Some(
                    error_class(&bytes).unwrap_or_else(|| format!("http_{}", status.as_u16())),
                );
            }
            pending.finish();
            Ok(Response::from_parts(parts, Body::from(bytes)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_token_is_content_not_the_role_chunk() {
        assert!(!carries_token(
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#
        ));
        assert!(!carries_token(
            r#"{"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#
        ));
        assert!(!carries_token(
            r#"{"choices":[],"usage":{"prompt_tokens":1}}"#
        ));
        assert!(!carries_token("not json"));
        assert!(carries_token(
            r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#
        ));
        assert!(carries_token(
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0}]}}]}"#
        ));
    }
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn gateway() -> Arc<crate::runtime::Gateway> {
        let cfg = slmgate_config::load_str_with_env(
            r#"
backends:
  - name: up
    kind: openai
    base_url: http://127.0.0.1:9/v1
models:
  - name: remote
    backend: up
    model: gpt-x
pricing:
  gpt-x: { input: 1000, output: 2000 }
  ref: { input: 10000, output: 20000 }
usage:
  database: sqlite://unused.db
  reference_model: ref
"#,
            "t.yaml",
            &|_| None,
        )
        .unwrap();
        Arc::new(crate::build::build_gateway(&cfg).unwrap())
    }

    fn request(body: &str) -> ChatCall {
        let mut req = http::Request::new(());
        req.headers_mut()
            .insert("x-request-id", http::HeaderValue::from_static("rid"));
        ChatCall {
            head: req.into_parts().0,
            gw: gateway(),
            caller: None,
            chat: slmgate_openai::chat::ChatRequest::parse(bytes::Bytes::from(body.to_string()))
                .unwrap(),
        }
    }

    fn answer(body: &'static str, sse: bool, cache: Option<CacheOutcome>) -> Response {
        let mut resp = Response::new(Body::from(body));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static(if sse {
                "text/event-stream"
            } else {
                "application/json"
            }),
        );
        let gw = gateway();
        let route = gw.models["remote"].clone();
        let ext = resp.extensions_mut();
        ext.insert(Arc::new(Decision {
            route: route.clone(),
            target: "remote".into(),
            strategy: "alias",
            category: None,
            score: None,
            threshold: None,
            reason: "test".into(),
            cascade: None,
        }));
        ext.insert(Served::target(&route.targets[0]));
        if let Some(c) = cache {
            ext.insert(c);
        }
        resp
    }

    const USAGE: &str = r#"{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}"#;

    /// A cache hit costs nothing, but its counterfactual still counts.
    #[tokio::test]
    async fn cache_hits_are_free_but_keep_their_counterfactual() {
        let (sink, mut rx) = UsageSink::channel(8);
        let body: &'static str = Box::leak(
            format!(r#"{{"choices":[{{"message":{{"content":"hi"}}}}],"usage":{USAGE}}}"#)
                .into_boxed_str(),
        );
        let svc = AccountLayer::new(Some(sink)).layer(tower::service_fn(move |_| async move {
            Ok::<_, Infallible>(answer(body, false, Some(CacheOutcome::SemanticHit)))
        }));
        let resp = svc
            .oneshot(request(
                r#"{"model":"remote","messages":[{"role":"user","content":"x"}]}"#,
            ))
            .await
            .unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), body);
        let rec = rx.recv().await.unwrap();
        assert_eq!(rec.cache.as_deref(), Some("semantic-hit"));
        assert_eq!((rec.prompt_tokens, rec.completion_tokens), (10, 20));
        assert_eq!(rec.cost_usd, 0.0);
        assert!((rec.counterfactual_usd - (10.0 * 10000.0 + 20.0 * 20000.0) / 1e6).abs() < 1e-12);
        assert_eq!(rec.upstream_model.as_deref(), Some("gpt-x"));
        assert_eq!(rec.request_id, "rid");
        assert_eq!(rec.ttft_ms, Some(rec.latency_ms));
    }

    /// The usage chunk the gateway asked for is hidden from the client and recorded; a
    /// stream the client abandons is recorded as incomplete.
    #[tokio::test]
    async fn streams_hide_requested_usage_and_record_incomplete_ones() {
        let (sink, mut rx) = UsageSink::channel(8);
        let events: &'static str = Box::leak(
            format!(
                "data: {{\"choices\":[{{\"delta\":{{\"content\":\"a\"}}}}]}}\n\ndata: {{\"choices\":[],\"usage\":{USAGE}}}\n\ndata: [DONE]\n\n"
            )
            .into_boxed_str(),
        );
        let seen = Arc::new(std::sync::Mutex::new(None));
        let seen2 = seen.clone();
        let svc = AccountLayer::new(Some(sink.clone())).layer(tower::service_fn(
            move |call: ChatCall| {
                let seen = seen2.clone();
                async move {
                    // The request now asks upstream for usage.
                    *seen.lock().unwrap() = Some(call.chat.client_wants_usage);
                    Ok::<_, Infallible>(answer(events, true, None))
                }
            },
        ));
        let body = r#"{"model":"remote","messages":[{"role":"user","content":"x"}],"stream":true}"#;
        let resp = svc.clone().oneshot(request(body)).await.unwrap();
        let out = resp.into_body().collect().await.unwrap().to_bytes();
        let out = std::str::from_utf8(&out).unwrap();
        assert!(!out.contains("usage") && out.contains("[DONE]"), "{out}");
        assert_eq!(*seen.lock().unwrap(), Some(true));
        let rec = rx.recv().await.unwrap();
        assert!(rec.stream);
        assert_eq!((rec.prompt_tokens, rec.completion_tokens), (10, 20));
        assert!((rec.cost_usd - (10.0 * 1000.0 + 20.0 * 2000.0) / 1e6).abs() < 1e-12);
        assert_eq!(rec.error_class, None);
        assert!(rec.ttft_ms.unwrap() <= rec.latency_ms);

        // The client goes away before reading anything.
        let resp = svc.oneshot(request(body)).await.unwrap();
        drop(resp);
        let rec = rx.recv().await.unwrap();
        assert_eq!(rec.error_class.as_deref(), Some("stream_incomplete"));
        assert_eq!(rec.prompt_tokens, 0);
    }

    #[test]
    fn error_classes() {
        assert_eq!(
            error_class(br#"{"error":{"message":"x","type":"invalid_request_error","code":"model_not_found"}}"#).as_deref(),
            Some("model_not_found")
        );
        assert_eq!(
            error_class(br#"{"error":{"message":"x","type":"rate_limit_error","code":null}}"#)
                .as_deref(),
            Some("rate_limit_error")
        );
        assert_eq!(error_class(b"not json"), None);
    }

    #[test]
    fn usage_only_chunks() {
        assert!(is_usage_only_chunk(
            r#"{"choices":[],"usage":{"prompt_tokens":1}}"#
        ));
        assert!(!is_usage_only_chunk(
            r#"{"choices":[{"delta":{}}],"usage":{}}"#
        ));
    }
}
