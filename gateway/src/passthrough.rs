//! Requests passed through to an OpenAI backend as they are: `POST /v1/responses` (the
//! Responses API has no cheap translation to chat), and `POST /v1/completions` for aliases
//! served by `kind: openai` backends (see [`crate::completions`]), so base models and the
//! legacy parameters (`suffix`, `echo`, `logprobs`, `best_of`, several prompts) work.
//!
//! The body goes to a backend that speaks the API: the first `kind: openai` target of the
//! alias named by `model` (its order, balancing included), at `{base_url}/responses` or
//! `{base_url}/completions`, with the backend's credential, timeout, retries (connect errors,
//! 429, 5xx, honouring `Retry-After`) and circuit breaker, then the alias's next
//! `kind: openai` target. `model` is rewritten to the target's upstream model. For
//! `/v1/responses`, a routed alias (`auto`) goes to its remote side, and an alias with no
//! `kind: openai` target (the embedded model, Anthropic, Azure) is refused with a 400.
//!
//! What applies: client keys, a key's model allow-list (403), its rate limit (429) and the
//! key's and team's budgets (429 `insufficient_quota`), with the chat endpoint's estimates:
//! the body's size / 4 prompt tokens plus the most the answer may hold (`max_output_tokens`,
//! else 1024; for completions `max_tokens`, else the API's 16, times `n` or `best_of`) at
//! the dearest target's prices, settled with the real usage when the answer ends. Policies
//! and the response cache do not apply.
//!
//! Answers are relayed as they come: a JSON answer bounded in size, a stream event by event
//! (an event larger than [`MAX_EVENT_BYTES`] ends it with an `error` event). One usage row
//! per request takes its tokens from the answer's `usage` (a Responses stream's from its
//! `response.completed` event; a completions stream is asked for its usage chunk, which is
//! hidden again from a client that did not ask). Upstream error text is never relayed (see
//! [`crate::upstream::openai`]).

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::{header, HeaderValue, Method, Request, StatusCode};
use serde_json::{Map, Value};

use crate::keys::{Caller, ClientKey};
use crate::layers::body_limit::read_body;
use crate::layers::limits::{self, cost, Hold, DEFAULT_COMPLETION_TOKENS};
use crate::layers::route::key_allows;
use crate::layers::snapshot::Snapshot;
use crate::runtime::Gateway;
use crate::targets::Target;
use crate::upstream::breaker::Admission;
use crate::upstream::openai::{backoff, retry_after, Dialect, OpenAiBackend, MAX_ANSWER_BYTES};
use crate::upstream::{Backend, UpstreamClock};
use slmgate_config::routing::Side;
use slmgate_openai::chat::is_usage_only_chunk;
use slmgate_openai::error::GatewayError;
use slmgate_policies::pricing::Price;
use slmgate_usage::{now_ms, UsageRecord, UsageSink};

/// The Responses API's path.
pub const RESPONSES_PATH: &str = "/v1/responses";

/// The largest single event of a relayed stream.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// The largest error body read from an upstream (only summarised).
const MAX_ERROR_BYTES: usize = 1 << 20;

/// The completion tokens of a legacy completion that sets no `max_tokens` (the API's
/// default).
const LEGACY_DEFAULT_MAX_TOKENS: u64 = 16;

/// The API a request is passed through to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `POST /v1/responses`.
    Responses,
    /// `POST /v1/completions` (legacy).
    Completions,
}

impl Api {
    fn path(self) -> &'static str {
        match self {
            Api::Responses => RESPONSES_PATH,
            Api::Completions => crate::completions::COMPLETIONS_PATH,
        }
    }

    /// The last segment of the upstream URL.
    fn upstream(self) -> &'static str {
        match self {
            Api::Responses => "responses",
            Api::Completions => "completions",
        }
    }

    /// (prompt, completion) tokens of a `usage` object.
    fn tokens(self, usage: &Value) -> (u64, u64) {
        let n = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
        match self {
            Api::Responses => (n("input_tokens"), n("output_tokens")),
            Api::Completions => (n("prompt_tokens"), n("completion_tokens")),
        }
    }

    /// The most completion tokens the request may be answered with.
    fn completion_estimate(self, body: &Map<String, Value>) -> u64 {
        let n = |k: &str| body.get(k).and_then(Value::as_u64);
        match self {
            Api::Responses => n("max_output_tokens").unwrap_or(DEFAULT_COMPLETION_TOKENS),
            Api::Completions => {
                let per = n("max_tokens").unwrap_or(LEGACY_DEFAULT_MAX_TOKENS);
                let choices = n("n").unwrap_or(1).max(n("best_of").unwrap_or(1)).max(1);
                // Several prompts are answered each.
                let prompts = match body.get("prompt") {
                    Some(Value::Array(items)) if items.iter().all(|i| !i.is_number()) => {
                        items.len().max(1) as u64
                    }
                    _ => 1,
                };
                per.saturating_mul(choices).saturating_mul(prompts)
            }
        }
    }
}

/// `POST /v1/responses`, recording usage into `sink`.
pub async fn handle(sink: Option<UsageSink>, req: Request<Body>) -> Response {
    if req.method() != Method::POST {
        return GatewayError::MethodNotAllowed.into_response();
    }
    let (parts, body) = req.into_parts();
    match read_body(&parts, body).await {
        Ok(bytes) => pass(Api::Responses, sink, &parts, &bytes).await,
        Err(e) => e.into_response(),
    }
}

/// Whether a legacy completion for `model` is passed through: a plain alias (not routed)
/// whose first target is a `kind: openai` backend.
pub fn passes_through(gw: &Gateway, model: &str) -> bool {
    if gw.router.as_ref().is_some_and(|r| r.router.routes(model)) {
        return false;
    }
    gw.resolve(model).is_ok_and(|route| {
        route
            .order()
            .next()
            .and_then(|i| route.targets.get(i))
            .is_some_and(speaks_openai)
    })
}

fn speaks_openai(t: &Target) -> bool {
    matches!(&*t.backend, Backend::OpenAi(b) if b.dialect == Dialect::OpenAi)
}

/// The usage row of one request, written once, when the answer ends (or is dropped).
struct Row {
    rec: UsageRecord,
    start: Instant,
    sink: Option<UsageSink>,
    price: Option<Price>,
    reference: Option<Price>,
    first: Option<Instant>,
    sse: bool,
    done: bool,
    written: bool,
    api: Api,
    /// The budgets' reservation, settled when the row is written.
    hold: Option<Hold>,
    /// The estimated prompt tokens (for an answer without usage).
    prompt_estimate: u64,
    /// Whether the answer reported its usage.
    got_usage: bool,
    /// Events relayed (an answer without usage is charged one token each).
    events: u64,
}

impl Row {
    fn usage(&mut self, usage: &Value) {
        let (p, c) = self.api.tokens(usage);
        self.rec.prompt_tokens = i64::try_from(p).unwrap_or(i64::MAX);
        self.rec.completion_tokens = i64::try_from(c).unwrap_or(i64::MAX);
        self.got_usage = true;
    }

    fn fail(&mut self, e: &GatewayError) {
        self.rec.status = i64::from(e.status_code().as_u16());
        self.rec.error_class = Some(e.code().to_owned());
    }

    fn refused(&mut self, r: &limits::Refusal) {
        self.rec.status = i64::from(r.status().as_u16());
        self.rec.error_class = Some(r.code().to_owned());
    }

    fn finish(&mut self) {
        if self.written {
            return;
        }
        self.written = true;
        let rec = &mut self.rec;
        rec.latency_ms = self.start.elapsed().as_secs_f64() * 1000.0;
        rec.ttft_ms = if self.sse {
            self.first
                .map(|f| f.duration_since(self.start).as_secs_f64() * 1000.0)
        } else {
            Some(rec.latency_ms)
        };
        if self.sse && rec.status < 400 && !self.done && rec.error_class.is_none() {
            rec.error_class = Some(crate::upstream::sse::STREAM_INCOMPLETE.into());
        }
        let (p, c) = (
            u64::try_from(rec.prompt_tokens).unwrap_or(0),
            u64::try_from(rec.completion_tokens).unwrap_or(0),
        );
        rec.cost_usd = cost(self.price, p, c);
        rec.counterfactual_usd = match self.reference {
            Some(r) => cost(Some(r), p, c),
            None => rec.cost_usd,
        };
        if let Some(hold) = self.hold.take() {
            let usd = if rec.status >= 400 || rec.backend.is_none() {
                // Nothing was generated.
                0.0
            } else if self.got_usage {
                rec.cost_usd
            } else {
                // No usage reported: the prompt estimate and a token per event, at most
                // what was reserved.
                let guess = cost(self.price, self.prompt_estimate, self.events);
                guess.min(hold.estimate_usd())
            };
            hold.settle(usd, std::time::SystemTime::now());
        }
        if let Some(sink) = &self.sink {
            sink.record(std::mem::take(rec));
        }
    }
}

impl Drop for Row {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The alias's targets that speak the Responses API, in the order to try them, and the alias
/// that decided (`auto`: its remote side).
fn targets(
    api: Api,
    gw: &Gateway,
    key: Option<&ClientKey>,
    model: &str,
) -> Result<(String, Vec<Target>), GatewayError> {
    let forbidden = |key: &ClientKey, alias: &str| {
        GatewayError::Forbidden(format!(
            "key `{}` may not use the model `{alias}`",
            key.name
        ))
    };
    if let Some(k) = key.filter(|k| !key_allows(k, model)) {
        return Err(forbidden(k, model));
    }
    let (alias, route) = match gw.router.as_ref().filter(|r| r.router.routes(model)) {
        Some(auto) => {
            let remote = auto.router.alias(Side::Remote).to_owned();
            if let Some(k) = key.filter(|k| !key_allows(k, &remote)) {
                return Err(forbidden(k, &remote));
            }
            let route = auto.chain(Side::Remote).cloned().ok_or_else(|| {
                GatewayError::Unavailable(format!("the model `{remote}` cannot serve"))
            })?;
            (remote, route)
        }
        None => {
            let route = gw
                .resolve(model)
                .map_err(|message| GatewayError::ModelNotFound { message })?;
            (model.to_owned(), route.clone())
        }
    };
    let usable: Vec<Target> = route
        .order()
        .filter_map(|i| route.targets.get(i))
        .filter(|t| speaks_openai(t))
        .cloned()
        .collect();
    if usable.is_empty() {
        return Err(GatewayError::bad_param(
            "model",
            format!(
                "`{}` needs an OpenAI backend; the model `{model}` is served by none (the embedded model, Anthropic and Azure backends do not speak it)",
                api.path()
            ),
        ));
    }
    Ok((alias, usable))
}

/// `{base_url}/{api}` of a `kind: openai` backend (its chat URL ends `/chat/completions`).
fn upstream_url(api: Api, b: &OpenAiBackend) -> Result<reqwest::Url, GatewayError> {
    let mut url = b.chat_url.clone();
    let path = url.path().trim_end_matches('/');
    let base = path.strip_suffix("/chat/completions").ok_or_else(|| {
        GatewayError::Internal(format!(
            "backend `{}`: its URL does not end in /chat/completions",
            b.name
        ))
    })?;
    let new = format!("{base}/{}", api.upstream());
    url.set_path(&new);
    Ok(url)
}

/// Passes the request (`parts`, with its body `bytes` read) through to `api`.
pub async fn pass(
    api: Api,
    sink: Option<UsageSink>,
    parts: &http::request::Parts,
    bytes: &[u8],
) -> Response {
    let Some(Snapshot(gw)) = parts.extensions.get::<Snapshot>().cloned() else {
        return GatewayError::Internal("no config snapshot".into()).into_response();
    };
    let key = parts.extensions.get::<Caller>().and_then(|c| c.key.clone());
    let clock = parts
        .extensions
        .get::<UpstreamClock>()
        .cloned()
        .unwrap_or_default();
    let request_id = parts.headers.get("x-request-id").cloned();
    let mut value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            return GatewayError::bad_request(format!("the body is not valid JSON: {e}"))
                .into_response()
        }
    };
    let Some(obj) = value.as_object_mut() else {
        return GatewayError::bad_request("the body must be a JSON object").into_response();
    };
    let Some(model) = obj.get("model").and_then(Value::as_str).map(str::to_owned) else {
        return GatewayError::bad_param("model", "`model` is required and must be a string")
            .into_response();
    };
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let prompt = bytes.len() as u64 / 4;
    let completion = api.completion_estimate(obj);
    // A completions stream is asked for its usage chunk (hidden again if not asked for).
    let hide_usage = api == Api::Completions
        && stream
        && obj
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            != Some(true);
    if hide_usage {
        let opts = obj
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        match opts.as_object_mut() {
            Some(o) => {
                o.insert("include_usage".into(), Value::Bool(true));
            }
            None => {
                return GatewayError::bad_param(
                    "stream_options",
                    "`stream_options` must be an object",
                )
                .into_response()
            }
        }
    }

    let mut row = Row {
        rec: UsageRecord {
            id: uuid::Uuid::now_v7().to_string(),
            ts_ms: now_ms(),
            request_id: request_id
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            key_name: key.as_ref().map(|k| k.name.clone()),
            team: key.as_ref().and_then(|k| k.team.clone()),
            requested_model: model.clone(),
            strategy: Some("alias".into()),
            stream,
            status: 200,
            ..Default::default()
        },
        start: Instant::now(),
        sink,
        price: None,
        reference: gw
            .usage_reference
            .as_deref()
            .and_then(|m| gw.accounting.model_price(m)),
        first: None,
        sse: false,
        done: false,
        written: false,
        api,
        hold: None,
        prompt_estimate: prompt,
        got_usage: false,
        events: 0,
    };
    // Refusals are recorded too (the row is written when it drops).
    let (alias, targets) = match targets(api, &gw, key.as_deref(), &model) {
        Ok(t) => t,
        Err(e) => {
            row.fail(&e);
            return e.into_response();
        }
    };
    row.rec.target = Some(alias.clone());
    if let Some(k) = &key {
        let tokens = u32::try_from(prompt.saturating_add(completion)).unwrap_or(u32::MAX);
        if let Err(r) = limits::check_rate(&gw.accounting, k, tokens).await {
            row.refused(&r);
            return r.into_response();
        }
        let estimate = targets
            .iter()
            .map(|t| cost(gw.accounting.price(t), prompt, completion))
            .fold(0.0, f64::max);
        match limits::reserve(&gw.accounting, k, estimate).await {
            Ok(hold) => row.hold = hold,
            Err(r) => {
                row.refused(&r);
                return r.into_response();
            }
        }
    }

    let mut last = None;
    for target in &targets {
        let Backend::OpenAi(b) = &*target.backend else {
            continue;
        };
        let url = match upstream_url(api, b) {
            Ok(u) => u,
            Err(e) => {
                row.fail(&e);
                return e.into_response();
            }
        };
        if let Some(o) = value.as_object_mut() {
            o.insert("model".into(), Value::from(target.model.clone()));
        }
        let body = Bytes::from(value.to_string());
        match call_backend(b, &url, body, request_id.as_ref(), &clock).await {
            Ok(Answer::Upstream(resp)) => {
                row.rec.backend = Some(b.name.clone());
                row.rec.upstream_model = Some(target.model.clone());
                row.price = gw.accounting.price(target);
                return relay(b, resp, row, &alias, hide_usage).await;
            }
            Ok(Answer::Refused(resp)) => {
                row.rec.backend = Some(b.name.clone());
                row.rec.upstream_model = Some(target.model.clone());
                row.rec.status = i64::from(resp.status().as_u16());
                row.rec.error_class = Some("invalid_request_error".into());
                return resp;
            }
            Err(e) => {
                tracing::info!(backend = %b.name, api = api.path(), error = %e, "pass-through: target failed");
                last = Some(e);
            }
        }
    }
    let e = last.unwrap_or_else(|| GatewayError::Unavailable("no target could answer".into()));
    row.fail(&e);
    e.into_response()
}

/// A backend's answer to one call.
enum Answer {
    /// A 2xx, body not read yet.
    Upstream(reqwest::Response),
    /// A 4xx the client caused, rebuilt in the gateway's shape.
    Refused(Response),
}

/// One call with retries on `b`: an [`Answer`], or the error that moves on to the next target.
async fn call_backend(
    b: &OpenAiBackend,
    url: &reqwest::Url,
    body: Bytes,
    request_id: Option<&HeaderValue>,
    clock: &UpstreamClock,
) -> Result<Answer, GatewayError> {
    let mut attempt = 0u32;
    loop {
        let ticket = match b.breaker.admit() {
            Admission::Pass(t) | Admission::Probe(t) => t,
            Admission::Rejected(retry_after) => {
                return Err(GatewayError::Ejected {
                    message: format!("backend `{}` is ejected after repeated failures", b.name),
                    retry_after,
                })
            }
        };
        let started = Instant::now();
        let mut rb = b
            .client
            .post(url.clone())
            .headers(b.headers.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        if let Some(id) = request_id {
            rb = rb.header("x-request-id", id.clone());
        }
        let sent = tokio::time::timeout(b.timeout, rb.send()).await;
        clock.add(started.elapsed());
        let (err, after) = match sent {
            Err(_) => {
                ticket.failed();
                return Err(GatewayError::UpstreamTimeout(format!(
                    "backend `{}` did not answer within {:?}",
                    b.name, b.timeout
                )));
            }
            Ok(Err(e)) if e.is_connect() => {
                ticket.failed();
                (
                    GatewayError::Upstream(format!("backend `{}`: cannot connect", b.name)),
                    None,
                )
            }
            Ok(Err(_)) => {
                ticket.failed();
                return Err(GatewayError::Upstream(format!(
                    "backend `{}`: the call failed",
                    b.name
                )));
            }
            Ok(Ok(resp)) => {
                let status = resp.status();
                if status.is_success() {
                    ticket.succeeded();
                    return Ok(Answer::Upstream(resp));
                }
                let after = retry_after(resp.headers());
                let limit = Duration::from_secs(5).min(b.timeout);
                let text = tokio::time::timeout(limit, read_bounded(resp, MAX_ERROR_BYTES))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                if status == StatusCode::TOO_MANY_REQUESTS {
                    ticket.succeeded();
                    (
                        GatewayError::RateLimited {
                            message: format!("backend `{}` is rate limiting (429)", b.name),
                            retry_after: after,
                        },
                        after,
                    )
                } else if status.is_server_error() {
                    ticket.failed();
                    (
                        GatewayError::Upstream(format!(
                            "backend `{}` answered {} (server error)",
                            b.name,
                            status.as_u16()
                        )),
                        after,
                    )
                } else if matches!(
                    status,
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
                ) {
                    ticket.succeeded();
                    return Err(GatewayError::Upstream(format!(
                        "backend `{}` answered {} (check its api_key and model name, and that it serves /responses)",
                        b.name,
                        status.as_u16()
                    )));
                } else {
                    ticket.succeeded();
                    return Ok(Answer::Refused(b.client_error(status, &text)));
                }
            }
        };
        if attempt >= b.max_retries {
            return Err(err);
        }
        let wait = match after {
            Some(d) if d > b.max_retry_backoff => return Err(err),
            Some(d) => d,
            None => backoff(b.retry_backoff, b.max_retry_backoff, attempt),
        };
        tracing::info!(backend = %b.name, attempt, ?wait, error = %err, "responses: retrying upstream");
        let s = Instant::now();
        tokio::time::sleep(wait).await;
        clock.add(s.elapsed());
        attempt += 1;
    }
}

/// `resp`'s body, or `None` once it passes `limit` bytes or breaks.
async fn read_bounded(mut resp: reqwest::Response, limit: usize) -> Result<Bytes, ()> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(());
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(|_| ())? {
        if buf.len() + chunk.len() > limit {
            return Err(());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Relays a 2xx answer (JSON or a stream), the usage row written when it ends.
async fn relay(
    b: &OpenAiBackend,
    resp: reqwest::Response,
    mut row: Row,
    alias: &str,
    hide_usage: bool,
) -> Response {
    let is_sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let status = resp.status();
    let mut out = if is_sse {
        row.sse = true;
        let scanner = Scanner {
            hide_usage,
            ..Scanner::default()
        };
        let mut r = Response::new(relay_stream(resp, row, scanner, b.timeout));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    } else {
        let read = tokio::time::timeout(b.timeout, read_bounded(resp, MAX_ANSWER_BYTES)).await;
        let Ok(Ok(bytes)) = read else {
            let e = GatewayError::Upstream(format!(
                "backend `{}`: its answer could not be read (timeout, broken, or larger than {} MiB)",
                b.name,
                MAX_ANSWER_BYTES >> 20
            ));
            row.fail(&e);
            return e.into_response();
        };
        let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
            let e = GatewayError::Upstream(format!(
                "backend `{}` answered {} with a body that is not JSON",
                b.name,
                status.as_u16()
            ));
            row.fail(&e);
            return e.into_response();
        };
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            row.usage(u);
        } else {
            // No usage: charge what the request could have cost.
            row.events = u64::MAX;
        }
        row.rec.status = i64::from(status.as_u16());
        row.finish();
        let mut r = Response::new(Body::from(bytes));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    *out.status_mut() = status;
    let h = out.headers_mut();
    if let Ok(v) = HeaderValue::from_str(alias) {
        h.insert("x-slmgate-route", v);
    }
    if let Ok(v) = HeaderValue::from_str(&b.name) {
        h.insert("x-slmgate-backend", v);
    }
    out
}

/// Cuts the relayed bytes into SSE events, reads the usage (and the end) from them, and
/// drops a usage chunk the client did not ask for.
#[derive(Default)]
struct Scanner {
    buf: Vec<u8>,
    hide_usage: bool,
}

impl Scanner {
    /// Feeds `chunk`; returns the complete events to pass on (each ending in a blank line),
    /// `Err` when one event outgrows [`MAX_EVENT_BYTES`].
    fn push(&mut self, chunk: &[u8], row: &mut Row) -> Result<Vec<u8>, ()> {
        self.buf
            .extend(chunk.iter().copied().filter(|&c| c != b'\r'));
        let mut out = Vec::new();
        let mut from = 0;
        while let Some(end) = self.buf[from..].windows(2).position(|w| w == b"\n\n") {
            let event = &self.buf[from..from + end + 2];
            if self.event(event, row) {
                out.extend_from_slice(event);
            }
            from += end + 2;
        }
        self.buf.drain(..from);
        if self.buf.len() > MAX_EVENT_BYTES {
            return Err(());
        }
        Ok(out)
    }

    /// The bytes left when the upstream ended (an event without its blank line), passed on.
    fn finish(&mut self, row: &mut Row) -> Vec<u8> {
        let mut rest = std::mem::take(&mut self.buf);
        if rest.iter().all(u8::is_ascii_whitespace) {
            return Vec::new();
        }
        rest.extend_from_slice(b"\n\n");
        if self.event(&rest, row) {
            rest
        } else {
            Vec::new()
        }
    }

    /// Reads one event; whether the client gets it.
    fn event(&self, event: &[u8], row: &mut Row) -> bool {
        let text = String::from_utf8_lossy(event);
        let data: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim_start)
            .collect::<Vec<_>>()
            .join("\n");
        if data.is_empty() {
            return true;
        }
        row.events += 1;
        if data == "[DONE]" {
            if row.api == Api::Completions {
                row.done = true;
            }
            return true;
        }
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            return true;
        };
        match row.api {
            Api::Responses => match v.get("type").and_then(Value::as_str) {
                Some("response.output_text.delta") if row.first.is_none() => {
                    row.first = Some(Instant::now());
                }
                Some("response.completed" | "response.incomplete" | "response.failed") => {
                    row.done = true;
                    if let Some(u) = v.pointer("/response/usage") {
                        row.usage(u);
                    }
                }
                Some("error") => {
                    row.rec.error_class = Some("upstream_error".into());
                }
                _ => {}
            },
            Api::Completions => {
                if v.get("error").is_some() {
                    row.rec.error_class = Some("upstream_error".into());
                    return true;
                }
                let has_text = v
                    .get("choices")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| {
                        cs.iter().any(|c| {
                            c.get("text")
                                .and_then(Value::as_str)
                                .is_some_and(|t| !t.is_empty())
                        })
                    });
                if has_text && row.first.is_none() {
                    row.first = Some(Instant::now());
                }
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    row.usage(u);
                    if self.hide_usage && is_usage_only_chunk(&data) {
                        return false;
                    }
                }
            }
        }
        true
    }
}

/// The stream error event of `api`.
fn error_event(api: Api, message: &str) -> Bytes {
    let code = crate::upstream::sse::STREAM_INCOMPLETE;
    match api {
        Api::Responses => {
            let v = serde_json::json!({"type": "error", "code": code, "message": message, "param": null});
            Bytes::from(format!("event: error\ndata: {v}\n\n"))
        }
        Api::Completions => crate::upstream::sse::error_event(message, code),
    }
}

/// Relays the upstream's SSE events as they complete, each idle gap bounded by `idle`.
fn relay_stream(resp: reqwest::Response, row: Row, scanner: Scanner, idle: Duration) -> Body {
    struct State {
        upstream: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
        scanner: Scanner,
        row: Row,
    }
    let state = State {
        upstream: resp.bytes_stream().boxed(),
        scanner,
        row,
    };
    let stream = futures::stream::unfold(Some(state), move |state| async move {
        let mut s = state?;
        let message = loop {
            let next = tokio::time::timeout(idle, s.upstream.next()).await;
            match next {
                Ok(Some(Ok(chunk))) => match s.scanner.push(&chunk, &mut s.row) {
                    Ok(out) if out.is_empty() => {}
                    Ok(out) => return Some((Ok::<_, Infallible>(Bytes::from(out)), Some(s))),
                    Err(()) => break "an event of the stream is too large",
                },
                Ok(None) => {
                    let rest = s.scanner.finish(&mut s.row);
                    s.row.finish();
                    return (!rest.is_empty()).then(|| (Ok(Bytes::from(rest)), None));
                }
                Ok(Some(Err(_))) => break "the stream was interrupted",
                Err(_) => break "the backend went silent",
            }
        };
        let api = s.row.api;
        tracing::info!(backend = ?s.row.rec.backend, message, "pass-through: stream ended early");
        s.row.rec.error_class = Some(crate::upstream::sse::STREAM_INCOMPLETE.into());
        s.row.finish();
        Some((Ok(error_event(api, message)), None))
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(api: Api) -> Row {
        Row {
            rec: UsageRecord::default(),
            start: Instant::now(),
            sink: None,
            price: None,
            reference: None,
            first: None,
            sse: true,
            done: false,
            written: false,
            api,
            hold: None,
            prompt_estimate: 0,
            got_usage: false,
            events: 0,
        }
    }

    #[test]
    fn scanner_reads_usage_from_the_completed_event_split_anywhere() {
        let text = "event: response.output_text.delta\r\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\r\n\r\nevent: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":4}}}\n\n";
        let mut r = row(Api::Responses);
        let mut s = Scanner::default();
        let mut out = Vec::new();
        for piece in text.as_bytes().chunks(7) {
            out.extend(s.push(piece, &mut r).unwrap());
        }
        assert_eq!(
            out,
            text.replace('\r', "").into_bytes(),
            "every event passed on"
        );
        assert!(r.done);
        assert!(r.first.is_some());
        assert_eq!((r.rec.prompt_tokens, r.rec.completion_tokens), (3, 4));
        r.written = true;
    }

    #[test]
    fn completion_streams_hide_the_usage_chunk_not_asked_for() {
        let text = "data: {\"choices\":[{\"text\":\"Hi\",\"index\":0}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":5}}\n\ndata: [DONE]";
        for hide in [true, false] {
            let mut r = row(Api::Completions);
            let mut s = Scanner {
                hide_usage: hide,
                ..Scanner::default()
            };
            let mut out = s.push(text.as_bytes(), &mut r).unwrap();
            out.extend(s.finish(&mut r));
            let out = String::from_utf8(out).unwrap();
            assert_eq!(out.contains("usage"), !hide, "{out}");
            assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
            assert!(r.done && r.got_usage && r.first.is_some());
            assert_eq!((r.rec.prompt_tokens, r.rec.completion_tokens), (2, 5));
            r.written = true;
        }
    }

    #[test]
    fn scanner_bounds_one_event() {
        let mut r = row(Api::Responses);
        let mut s = Scanner::default();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert!(s.push(&big, &mut r).is_err());
        r.written = true;
    }

    #[test]
    fn completion_estimates_follow_the_legacy_defaults() {
        let est = |v: Value| Api::Completions.completion_estimate(v.as_object().unwrap());
        assert_eq!(est(serde_json::json!({"prompt": "a"})), 16);
        assert_eq!(
            est(serde_json::json!({"prompt": "a", "max_tokens": 10, "n": 2, "best_of": 3})),
            30
        );
        assert_eq!(
            est(serde_json::json!({"prompt": ["a", "b"], "max_tokens": 10})),
            20
        );
        assert_eq!(
            est(serde_json::json!({"prompt": [1, 2, 3], "max_tokens": 10})),
            10
        );
        let est = |v: Value| Api::Responses.completion_estimate(v.as_object().unwrap());
        assert_eq!(est(serde_json::json!({"max_output_tokens": 7})), 7);
        assert_eq!(est(serde_json::json!({})), DEFAULT_COMPLETION_TOKENS);
    }
}
