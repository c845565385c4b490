//! OpenAI's Responses API, passed through: `POST /v1/responses`.
//!
//! The Responses API has no cheap translation to chat, so the body goes as it is to a backend
//! that speaks it: the first `kind: openai` target of the alias named by `model` (its order,
//! balancing included), at `{base_url}/responses`, with the backend's credential, timeout,
//! retries (connect errors, 429, 5xx, honouring `Retry-After`) and circuit breaker, then the
//! alias's next `kind: openai` target. `model` is rewritten to the target's upstream model. A
//! routed alias (`auto`) goes to its remote side. An alias with no `kind: openai` target
//! (the embedded model, Anthropic, Azure) is refused with a 400.
//!
//! What applies: client keys, a key's model allow-list (403) and its rate limit (429; the
//! token estimate is the body's size / 4 plus `max_output_tokens`). Budgets, policies and
//! the response cache do not; the cost is recorded in the usage row.
//!
//! Answers are relayed as they come: a JSON answer bounded in size, a stream event by event
//! (an event larger than [`MAX_EVENT_BYTES`] ends it with an `error` event). One usage row
//! per request takes its tokens from `usage.input_tokens`/`usage.output_tokens` (a stream's
//! from its `response.completed` event). Upstream error text is never relayed (see
//! [`crate::upstream::openai`]).

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::{header, HeaderValue, Method, Request, StatusCode};
use serde_json::Value;

use crate::keys::{Caller, ClientKey};
use crate::layers::body_limit::read_body;
use crate::layers::limits::cost;
use crate::layers::route::key_allows;
use crate::layers::snapshot::Snapshot;
use crate::runtime::Gateway;
use crate::targets::Target;
use crate::upstream::breaker::Admission;
use crate::upstream::openai::{backoff, retry_after, Dialect, OpenAiBackend, MAX_ANSWER_BYTES};
use crate::upstream::{Backend, UpstreamClock};
use slmgate_config::routing::Side;
use slmgate_config::state::OnError;
use slmgate_openai::error::GatewayError;
use slmgate_policies::pricing::Price;
use slmgate_usage::{now_ms, UsageRecord, UsageSink};

/// The endpoint's path.
pub const RESPONSES_PATH: &str = "/v1/responses";

/// The largest single event of a relayed stream.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// The largest error body read from an upstream (only summarised).
const MAX_ERROR_BYTES: usize = 1 << 20;

/// `POST /v1/responses`, recording usage into `sink`.
pub async fn handle(sink: Option<UsageSink>, req: Request<Body>) -> Response {
    match run(sink, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
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
}

impl Row {
    fn usage(&mut self, usage: &Value) {
        let n = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
        self.rec.prompt_tokens = i64::try_from(n("input_tokens")).unwrap_or(i64::MAX);
        self.rec.completion_tokens = i64::try_from(n("output_tokens")).unwrap_or(i64::MAX);
    }

    fn fail(&mut self, e: &GatewayError) {
        self.rec.status = i64::from(e.status_code().as_u16());
        self.rec.error_class = Some(e.code().to_owned());
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
        .filter(|t| matches!(&*t.backend, Backend::OpenAi(b) if b.dialect == Dialect::OpenAi))
        .cloned()
        .collect();
    if usable.is_empty() {
        return Err(GatewayError::bad_param(
            "model",
            format!(
                "`/v1/responses` needs an OpenAI backend; the model `{model}` is served by none (the embedded model, Anthropic and Azure backends do not speak the Responses API)"
            ),
        ));
    }
    Ok((alias, usable))
}

/// `{base_url}/responses` of a `kind: openai` backend (its chat URL ends `/chat/completions`).
fn responses_url(b: &OpenAiBackend) -> Result<reqwest::Url, GatewayError> {
    let mut url = b.chat_url.clone();
    let path = url.path().trim_end_matches('/');
    let base = path.strip_suffix("/chat/completions").ok_or_else(|| {
        GatewayError::Internal(format!(
            "backend `{}`: its URL does not end in /chat/completions",
            b.name
        ))
    })?;
    let new = format!("{base}/responses");
    url.set_path(&new);
    Ok(url)
}

/// The key's rate limit, for `tokens` estimated tokens.
async fn rate_limit(gw: &Gateway, key: &ClientKey, tokens: u32) -> Result<(), GatewayError> {
    let Some(rl) = &key.rate_limit else {
        return Ok(());
    };
    let acc = &gw.accounting;
    let checked = match &acc.state.redis {
        Some(r) => match r.check_rate(&key.name, rl, tokens).await {
            Ok(checked) => checked,
            Err(e) if r.on_error() == OnError::Closed => {
                return Err(GatewayError::Unavailable(format!(
                    "{e}; limits cannot be checked (state.redis.on_error: closed)"
                )))
            }
            Err(_) => acc.state.rates.check(&key.name, rl, tokens),
        },
        None => acc.state.rates.check(&key.name, rl, tokens),
    };
    checked.map_err(|e| GatewayError::RateLimited {
        message: format!("key `{}`: {e}", key.name),
        retry_after: e.retry_after,
    })
}

async fn run(sink: Option<UsageSink>, req: Request<Body>) -> Result<Response, GatewayError> {
    if req.method() != Method::POST {
        return Err(GatewayError::MethodNotAllowed);
    }
    let (parts, body) = req.into_parts();
    let Some(Snapshot(gw)) = parts.extensions.get::<Snapshot>().cloned() else {
        return Err(GatewayError::Internal("no config snapshot".into()));
    };
    let key = parts.extensions.get::<Caller>().and_then(|c| c.key.clone());
    let clock = parts
        .extensions
        .get::<UpstreamClock>()
        .cloned()
        .unwrap_or_default();
    let request_id = parts.headers.get("x-request-id").cloned();
    let bytes = read_body(&parts, body).await?;
    let mut value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| GatewayError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let Some(obj) = value.as_object_mut() else {
        return Err(GatewayError::bad_request("the body must be a JSON object"));
    };
    let Some(model) = obj.get("model").and_then(Value::as_str).map(str::to_owned) else {
        return Err(GatewayError::bad_param(
            "model",
            "`model` is required and must be a string",
        ));
    };
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let max_output = obj
        .get("max_output_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);

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
    };
    // Refusals are recorded too (the row is written when it drops).
    let (alias, targets) = match targets(&gw, key.as_deref(), &model) {
        Ok(t) => t,
        Err(e) => {
            row.fail(&e);
            return Err(e);
        }
    };
    row.rec.target = Some(alias.clone());
    if let Some(k) = &key {
        let tokens = (bytes.len() as u64 / 4).saturating_add(max_output);
        if let Err(e) = rate_limit(&gw, k, u32::try_from(tokens).unwrap_or(u32::MAX)).await {
            row.fail(&e);
            return Err(e);
        }
    }

    let mut last = None;
    for target in &targets {
        let Backend::OpenAi(b) = &*target.backend else {
            continue;
        };
        let url = responses_url(b)?;
        if let Some(o) = value.as_object_mut() {
            o.insert("model".into(), Value::from(target.model.clone()));
        }
        let body = Bytes::from(value.to_string());
        match call_backend(b, &url, body, request_id.as_ref(), &clock).await {
            Ok(Answer::Upstream(resp)) => {
                row.rec.backend = Some(b.name.clone());
                row.rec.upstream_model = Some(target.model.clone());
                row.price = gw.accounting.price(target);
                return Ok(relay(b, resp, row, &alias).await);
            }
            Ok(Answer::Refused(resp)) => {
                row.rec.backend = Some(b.name.clone());
                row.rec.upstream_model = Some(target.model.clone());
                row.rec.status = i64::from(resp.status().as_u16());
                row.rec.error_class = Some("invalid_request_error".into());
                return Ok(resp);
            }
            Err(e) => {
                tracing::info!(backend = %b.name, error = %e, "responses: target failed");
                last = Some(e);
            }
        }
    }
    let e = last.unwrap_or_else(|| GatewayError::Unavailable("no target could answer".into()));
    row.fail(&e);
    Err(e)
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
async fn relay(b: &OpenAiBackend, resp: reqwest::Response, mut row: Row, alias: &str) -> Response {
    let is_sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let status = resp.status();
    let mut out = if is_sse {
        row.sse = true;
        let mut r = Response::new(relay_stream(resp, row, b.timeout));
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
        if let Some(u) = v.get("usage") {
            row.usage(u);
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

/// Finds complete SSE events in the relayed bytes and reads the final usage from them.
#[derive(Default)]
struct Scanner {
    buf: Vec<u8>,
}

impl Scanner {
    /// Feeds `chunk`; `Err` when one event outgrows [`MAX_EVENT_BYTES`].
    fn push(&mut self, chunk: &[u8], row: &mut Row) -> Result<(), ()> {
        self.buf
            .extend(chunk.iter().copied().filter(|&c| c != b'\r'));
        while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = self.buf.drain(..end + 2).collect();
            Self::event(&event, row);
        }
        if self.buf.len() > MAX_EVENT_BYTES {
            return Err(());
        }
        Ok(())
    }

    fn event(event: &[u8], row: &mut Row) {
        let text = String::from_utf8_lossy(event);
        let data: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim_start)
            .collect::<Vec<_>>()
            .join("\n");
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            return;
        };
        match v.get("type").and_then(Value::as_str) {
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
        }
    }
}

/// The Responses API's stream error event.
fn error_event(message: &str) -> Bytes {
    let v = serde_json::json!({"type": "error", "code": crate::upstream::sse::STREAM_INCOMPLETE, "message": message, "param": null});
    Bytes::from(format!("event: error\ndata: {v}\n\n"))
}

/// Relays the upstream's SSE bytes as they come, each idle gap bounded by `idle`.
fn relay_stream(resp: reqwest::Response, row: Row, idle: Duration) -> Body {
    struct State {
        upstream: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
        scanner: Scanner,
        row: Row,
    }
    let state = State {
        upstream: resp.bytes_stream().boxed(),
        scanner: Scanner::default(),
        row,
    };
    let stream = futures::stream::unfold(Some(state), move |state| async move {
        let mut s = state?;
        let next = tokio::time::timeout(idle, s.upstream.next()).await;
        let message = match next {
            Ok(Some(Ok(chunk))) => {
                if s.scanner.push(&chunk, &mut s.row).is_ok() {
                    return Some((Ok::<_, Infallible>(chunk), Some(s)));
                }
                "an event of the stream is too large"
            }
            Ok(None) => {
                s.row.finish();
                return None;
            }
            Ok(Some(Err(_))) => "the stream was interrupted",
            Err(_) => "the backend went silent",
        };
        tracing::info!(backend = ?s.row.rec.backend, message, "responses: stream ended early");
        s.row.rec.error_class = Some(crate::upstream::sse::STREAM_INCOMPLETE.into());
        s.row.finish();
        Some((Ok(error_event(message)), None))
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
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
        }
    }

    #[test]
    fn scanner_reads_usage_from_the_completed_event_split_anywhere() {
        let text = "event: response.output_text.delta\r\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\r\n\r\nevent: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":4}}}\n\n";
        let mut r = row();
        let mut s = Scanner::default();
        for piece in text.as_bytes().chunks(7) {
            s.push(piece, &mut r).unwrap();
        }
        assert!(r.done);
        assert!(r.first.is_some());
        assert_eq!((r.rec.prompt_tokens, r.rec.completion_tokens), (3, 4));
        r.written = true;
    }

    #[test]
    fn scanner_bounds_one_event() {
        let mut r = row();
        let mut s = Scanner::default();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert!(s.push(&big, &mut r).is_err());
        r.written = true;
    }
}
