//! Forwarding to an OpenAI-compatible backend (OpenAI, vLLM, Ollama, llama.cpp server, …),
//! and to its two variants ([`Dialect`]): Azure OpenAI (deployment URLs, `api-key` header,
//! `api-version`) and Anthropic's Messages API (requests and answers translated by
//! [`slmgate_anthropic`], streams included). All three share everything below.
//!
//! Retries with exponential back-off and full jitter on connect errors, 429, 5xx, a 200 that
//! is not a chat completion, and a stream that fails before its first token, honouring
//! `Retry-After`. A stream is never retried once a token has been sent (see [`sse`]). Each
//! attempt is bounded by the backend's `timeout` (to the response head, then per idle gap of
//! a stream, and for the whole body of a non-stream answer).
//!
//! Upstream error text is never relayed: a 5xx or 429 reaches the client as the status and
//! the backend's name, a 4xx the client caused as the upstream's message with every
//! configured secret masked ([`super::redact`]); the bodies are logged at debug level,
//! masked too.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use rand::Rng;

use super::breaker::{Admission, Breaker};
use super::redact::Secrets;
use super::{Fallback, UpstreamClock};
use crate::telemetry;
use crate::upstream::sse;
pub use slmgate_config::Dialect;
use slmgate_openai::chat::{check_json_answer, AnswerUsage, ChatRequest, JsonAnswer};
use slmgate_openai::error::GatewayError;

/// An OpenAI-compatible backend.
pub struct OpenAiBackend {
    /// Configured name.
    pub name: String,
    /// Which API it speaks.
    pub dialect: Dialect,
    /// `openai`: `{base_url}/chat/completions`; `azure`: `{base_url}/openai/deployments` (the
    /// deployment, `/chat/completions` and `api-version` are added per call, see
    /// [`OpenAiBackend::url_for`]); `anthropic`: `{base_url}/v1/messages`.
    pub chat_url: reqwest::Url,
    /// `kind: azure`: the `api-version` query parameter.
    pub api_version: Option<String>,
    /// Headers sent on every call: the backend's credential (`Authorization`, `api-key` or
    /// `x-api-key` with `anthropic-version`) and configured extras.
    pub headers: HeaderMap,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Back-off base.
    pub retry_backoff: Duration,
    /// Back-off cap; a `Retry-After` longer than this moves on to the next target.
    pub max_retry_backoff: Duration,
    /// The process-wide pooled client.
    pub client: reqwest::Client,
    /// Every configured secret, masked in the upstream error text this backend logs.
    pub secrets: Arc<Secrets>,
    /// Outlier ejection (kept across reloads while its settings are unchanged).
    pub breaker: Arc<Breaker>,
}

/// What the forwarding service needs to know about the request in flight.
pub struct CallContext<'a> {
    /// The parsed request.
    pub req: &'a ChatRequest,
    /// The upstream model name.
    pub model: &'a str,
    /// Upstream wait accounting.
    pub clock: &'a UpstreamClock,
    /// The request id, forwarded as `x-request-id`.
    pub request_id: Option<&'a HeaderValue>,
}

enum AttemptError {
    /// Worth another attempt on this backend (after `after`, when the upstream said).
    Retry {
        err: GatewayError,
        after: Option<Duration>,
    },
    /// Give up on this backend for this request.
    Fallback(GatewayError),
    /// The backend refused its own credentials or model name (401/403/404): the next target,
    /// but no sign that the backend is unwell.
    Misconfigured(GatewayError),
}

impl AttemptError {
    /// The backend misbehaved: counts toward its ejection (see [`super::breaker`]).
    fn is_fault(&self) -> bool {
        match self {
            AttemptError::Retry {
                err: GatewayError::RateLimited { .. },
                ..
            } => false,
            AttemptError::Retry { .. } | AttemptError::Fallback(_) => true,
            AttemptError::Misconfigured(_) => false,
        }
    }
}

impl OpenAiBackend {
    /// Sends the request, with retries; returns the client response or a reason to fall back.
    /// An ejected backend is skipped at once (see [`super::breaker`]).
    pub async fn chat(&self, ctx: CallContext<'_>) -> Result<Response, Fallback> {
        let body = match self.request_body(&ctx) {
            Ok(b) => b,
            // The request cannot be said to this backend: the client's to fix, so no other
            // target is tried and the backend is not called.
            Err(refused) => return Ok(*refused),
        };
        let url = match self.url_for(ctx.model) {
            Ok(u) => u,
            Err(e) => return Err(Fallback(e)),
        };
        let mut attempt = 0u32;
        let mut last = None;
        loop {
            let ticket = match self.breaker.admit() {
                Admission::Pass(t) | Admission::Probe(t) => t,
                Admission::Rejected(retry_after) => {
                    // Ejected, perhaps by this very request's failures: report those.
                    return Err(Fallback(last.unwrap_or_else(|| GatewayError::Ejected {
                        message: format!(
                            "backend `{}` is ejected after repeated failures",
                            self.name
                        ),
                        retry_after,
                    })));
                }
            };
            let started = Instant::now();
            let result = self.attempt(&ctx, &url, body.clone()).await;
            ctx.clock.add(started.elapsed());
            match &result {
                Err(e) if e.is_fault() => ticket.failed(),
                _ => ticket.succeeded(),
            }
            match result {
                Ok(resp) => return Ok(resp),
                Err(AttemptError::Fallback(e) | AttemptError::Misconfigured(e)) => {
                    return Err(Fallback(e))
                }
                Err(AttemptError::Retry { err, after }) => {
                    if attempt >= self.max_retries {
                        return Err(Fallback(err));
                    }
                    let wait = match after {
                        Some(d) if d > self.max_retry_backoff => {
                            tracing::info!(backend = %self.name, retry_after = ?d, "Retry-After exceeds max_retry_backoff; moving on");
                            return Err(Fallback(err));
                        }
                        Some(d) => d,
                        None => backoff(self.retry_backoff, self.max_retry_backoff, attempt),
                    };
                    tracing::info!(backend = %self.name, attempt, ?wait, error = %err, "retrying upstream");
                    metrics::counter!(crate::metrics::UPSTREAM_RETRIES, "backend" => self.name.clone())
                        .increment(1);
                    last = Some(err);
                    let s = Instant::now();
                    tokio::time::sleep(wait).await;
                    ctx.clock.add(s.elapsed());
                    attempt += 1;
                }
            }
        }
    }

    /// The URL of a call for upstream `model` (Azure names the deployment in the path).
    pub fn url_for(&self, model: &str) -> Result<reqwest::Url, GatewayError> {
        if self.dialect != Dialect::Azure {
            return Ok(self.chat_url.clone());
        }
        let mut url = self.chat_url.clone();
        url.path_segments_mut()
            .map_err(|()| {
                GatewayError::Internal(format!("backend `{}`: base_url has no path", self.name))
            })?
            .pop_if_empty()
            .extend([model, "chat", "completions"]);
        if let Some(v) = &self.api_version {
            url.query_pairs_mut().append_pair("api-version", v);
        }
        Ok(url)
    }

    /// The body sent upstream, or the client's 400 when the request cannot be translated.
    fn request_body(&self, ctx: &CallContext<'_>) -> Result<Bytes, Box<Response>> {
        if self.dialect != Dialect::Anthropic {
            return Ok(Bytes::from(ctx.req.upstream_body(ctx.model, true)));
        }
        let refuse = |body: serde_json::Value| {
            let mut out = (StatusCode::BAD_REQUEST, body.to_string()).into_response();
            out.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Box::new(out)
        };
        let value: serde_json::Value = match serde_json::from_slice(ctx.req.body()) {
            Ok(v) => v,
            Err(e) => {
                return Err(refuse(
                    slmgate_anthropic::TranslateError::invalid("body", e.to_string())
                        .to_openai_body(),
                ))
            }
        };
        let mut messages = match slmgate_anthropic::openai_to_messages(&value) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(backend = %self.name, error = %e, "request refused: no Anthropic equivalent");
                return Err(refuse(e.to_openai_body()));
            }
        };
        ctx.model.clone_into(&mut messages.model);
        serde_json::to_vec(&messages).map(Bytes::from).map_err(|e| {
            Box::new(GatewayError::Internal(format!("encoding the request: {e}")).into_response())
        })
    }

    async fn attempt(
        &self,
        ctx: &CallContext<'_>,
        url: &reqwest::Url,
        body: Bytes,
    ) -> Result<Response, AttemptError> {
        let mut rb = self
            .client
            .post(url.clone())
            .headers(self.headers.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(id) = ctx.request_id {
            rb = rb.header("x-request-id", id.clone());
        }
        // W3C trace context naming the model-call span, so the provider's spans join the
        // trace (only when exporting).
        let span = telemetry::current_model_span();
        if let Some(h) = telemetry::trace_headers(&span) {
            rb = rb.headers(h);
        }
        let deadline = Instant::now() + self.timeout;
        let resp = match tokio::time::timeout(self.timeout, rb.send()).await {
            Err(_) => {
                return Err(AttemptError::Fallback(GatewayError::UpstreamTimeout(
                    format!(
                        "backend `{}` did not answer within {:?}",
                        self.name, self.timeout
                    ),
                )))
            }
            Ok(Err(e)) if e.is_connect() => {
                return Err(AttemptError::Retry {
                    err: GatewayError::Upstream(format!(
                        "backend `{}`: cannot connect: {}",
                        self.name,
                        root_cause(&e)
                    )),
                    after: None,
                })
            }
            Ok(Err(e)) if e.is_timeout() => {
                return Err(AttemptError::Fallback(GatewayError::UpstreamTimeout(
                    format!("backend `{}`: {}", self.name, root_cause(&e)),
                )))
            }
            Ok(Err(e)) => {
                return Err(AttemptError::Fallback(GatewayError::Upstream(format!(
                    "backend `{}`: {}",
                    self.name,
                    root_cause(&e)
                ))))
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        telemetry::record_status(&span, status.as_u16());
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let after = retry_after(resp.headers());
            // The body is the upstream's own text and may echo its credential: it is logged
            // (redacted), never relayed; the client learns the status and whose it was.
            self.log_error_body(status, resp, deadline).await;
            let err = if status == StatusCode::TOO_MANY_REQUESTS {
                GatewayError::RateLimited {
                    message: format!("backend `{}` is rate limiting (429)", self.name),
                    retry_after: after,
                }
            } else {
                GatewayError::Upstream(format!(
                    "backend `{}` answered {} (server error)",
                    self.name,
                    status.as_u16()
                ))
            };
            return Err(AttemptError::Retry { err, after });
        }
        if matches!(
            status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
        ) {
            // The backend's key or model name is wrong: a configuration problem of this
            // target, not the client's fault; another target may work.
            self.log_error_body(status, resp, deadline).await;
            return Err(AttemptError::Misconfigured(GatewayError::Upstream(
                format!(
                    "backend `{}` answered {} (check its api_key and model name)",
                    self.name,
                    status.as_u16()
                ),
            )));
        }
        let is_sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if status.is_success() && is_sse {
            // Nothing reaches the client before the first token: a stream failing before it
            // is retried and falls back like any failed answer.
            let (timeout, usage, name, secrets) = (
                self.timeout,
                ctx.req.client_wants_usage,
                self.name.clone(),
                self.secrets.clone(),
            );
            let opened = if self.dialect == Dialect::Anthropic {
                sse::open_anthropic(resp, timeout, usage, name, secrets).await
            } else {
                sse::open(resp, timeout, usage, name, secrets).await
            };
            return opened.map_err(|err| AttemptError::Retry { err, after: None });
        }
        // A complete JSON answer, or a client error such as a 400 (see `client_error`).
        let remaining = deadline.saturating_duration_since(Instant::now());
        let limit = if status.is_success() {
            MAX_ANSWER_BYTES
        } else {
            MAX_ERROR_BYTES
        };
        let bytes = match tokio::time::timeout(remaining, read_limited(resp, limit)).await {
            Err(_) => {
                return Err(AttemptError::Fallback(GatewayError::UpstreamTimeout(
                    format!(
                        "backend `{}` did not finish its answer within {:?}",
                        self.name, self.timeout
                    ),
                )))
            }
            Ok(Err(ReadError::Http(e))) => {
                return Err(AttemptError::Retry {
                    err: GatewayError::Upstream(format!(
                        "backend `{}`: reading the answer failed: {}",
                        self.name,
                        root_cause(&e)
                    )),
                    after: None,
                })
            }
            Ok(Err(ReadError::TooLarge)) => {
                return Err(AttemptError::Retry {
                    err: GatewayError::Upstream(format!(
                        "backend `{}`: its answer is larger than {} MiB",
                        self.name,
                        limit >> 20
                    )),
                    after: None,
                })
            }
            Ok(Ok(b)) => b,
        };
        if !status.is_success() {
            return Ok(self.client_error(status, &bytes));
        }
        // One invalid UTF-8 byte does not make a broken answer, but JSON clients would
        // choke on it: replaced with U+FFFD, as in streams.
        let bytes = match String::from_utf8_lossy(&bytes) {
            std::borrow::Cow::Borrowed(_) => bytes,
            std::borrow::Cow::Owned(fixed) => Bytes::from(fixed),
        };
        let bytes = if self.dialect == Dialect::Anthropic {
            self.translate_answer(&bytes)?
        } else {
            bytes
        };
        // A 200 that is not a chat completion (an HTML error page, a truncated or garbled
        // body, an `error` object) is a broken upstream: retried, then the next target.
        let Some((complete, usage)) = check_json_answer(&bytes) else {
            if tracing::enabled!(tracing::Level::DEBUG) {
                let text = String::from_utf8_lossy(&bytes[..bytes.len().min(2048)]);
                tracing::debug!(backend = %self.name, body = %self.secrets.redact(&text), "upstream 200 is not a chat completion");
            }
            return Err(AttemptError::Retry {
                err: GatewayError::Upstream(format!(
                    "backend `{}` answered 200 with a body that is not a chat completion",
                    self.name
                )),
                after: None,
            });
        };
        // One parse serves the steps above (usage, completeness: see `AnswerUsage`); the
        // span, when exporting, reads its own facts (model, id, finish reasons).
        let usage = if span.is_disabled() {
            usage
        } else {
            telemetry::record_completion(&span, &bytes)
        };
        if let Some(u) = usage {
            tracing::debug!(
                backend = %self.name,
                prompt_tokens = u.prompt_tokens,
                completion_tokens = u.completion_tokens,
                "usage"
            );
        }
        let mut out = (status, Body::from(bytes.clone())).into_response();
        // Checked above to be a JSON completion, whatever the upstream labelled it.
        out.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let ext = out.extensions_mut();
        ext.insert(AnswerUsage(usage));
        ext.insert(JsonAnswer {
            complete,
            body: bytes,
        });
        Ok(out)
    }
}

impl OpenAiBackend {
    /// An Anthropic answer as an OpenAI chat completion; one that is not a Messages answer
    /// is a broken upstream, like a 200 that is not a chat completion.
    fn translate_answer(&self, bytes: &[u8]) -> Result<Bytes, AttemptError> {
        match slmgate_anthropic::parse_messages_response(bytes) {
            Ok(answer) => {
                let created = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
                let chat = slmgate_anthropic::messages_response_to_openai(&answer, created);
                Ok(Bytes::from(chat.to_string()))
            }
            Err(e) => {
                if tracing::enabled!(tracing::Level::DEBUG) {
                    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(2048)]);
                    tracing::debug!(backend = %self.name, error = %e, body = %self.secrets.redact(&text), "upstream 200 is not a Messages answer");
                }
                Err(AttemptError::Retry {
                    err: GatewayError::Upstream(format!(
                        "backend `{}` answered 200 with a body that is not a Messages answer",
                        self.name
                    )),
                    after: None,
                })
            }
        }
    }
}

/// Exponential back-off with full jitter: uniform in `[0, min(cap, base * 2^attempt)]`, never
/// below 1 ms so a zero base still yields.
pub fn backoff(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX));
    let ceiling = exp.min(cap).max(Duration::from_millis(1));
    let nanos = rand::rng().random_range(0..=ceiling.as_nanos() as u64);
    Duration::from_nanos(nanos).max(Duration::from_millis(1))
}

/// Parses `Retry-After` (delta-seconds or an HTTP date) and `retry-after-ms`.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
    {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The `error` object of an OpenAI-shaped error body, as far as it reads.
#[derive(Debug, Default, serde::Deserialize)]
struct UpstreamError {
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    param: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
}

impl UpstreamError {
    /// Reads `{"error": {...}}` or `{"error": "text"}`; anything else reads as nothing.
    fn parse(body: &[u8]) -> UpstreamError {
        #[derive(serde::Deserialize)]
        struct E {
            error: Option<serde_json::Value>,
        }
        match serde_json::from_slice::<E>(body).ok().and_then(|e| e.error) {
            Some(serde_json::Value::String(message)) => UpstreamError {
                message: Some(message),
                ..Default::default()
            },
            Some(v) => serde_json::from_value(v).unwrap_or_default(),
            None => UpstreamError::default(),
        }
    }
}

/// Longest upstream message passed on to a client (in characters).
const MAX_MESSAGE_CHARS: usize = 500;

/// A short machine token (`type`, `param`, `code`) worth passing on; anything longer or
/// with other characters is not a token and is dropped.
fn token(s: Option<&str>) -> Option<&str> {
    s.filter(|s| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"_.-[]".contains(&c))
    })
}

/// The largest JSON answer read from an upstream; a larger one is a failed attempt (a
/// broken or hostile upstream must not make the gateway buffer without bound).
pub const MAX_ANSWER_BYTES: usize = 16 << 20;
/// The largest error body read from an upstream (it is only summarised and logged).
pub const MAX_ERROR_BYTES: usize = 1 << 20;

enum ReadError {
    Http(reqwest::Error),
    TooLarge,
}

/// Reads `resp`'s body, failing once it passes `limit` bytes.
async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Bytes, ReadError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(ReadError::TooLarge);
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Http)? {
        if buf.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

impl OpenAiBackend {
    /// Reads an error answer's body (bounded by the attempt deadline and 5 s) and logs it at
    /// debug level with every configured secret masked.
    async fn log_error_body(&self, status: StatusCode, resp: reqwest::Response, deadline: Instant) {
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(5));
        let read = tokio::time::timeout(remaining, read_limited(resp, MAX_ERROR_BYTES)).await;
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let text = match read {
            Ok(Ok(b)) => String::from_utf8_lossy(&b[..b.len().min(2048)]).into_owned(),
            _ => "(no body)".to_string(),
        };
        tracing::debug!(
            backend = %self.name,
            status = status.as_u16(),
            body = %self.secrets.redact(&text),
            "upstream error answer"
        );
    }

    /// An upstream error the client caused (a 400 for a bad parameter, ...), passed on with
    /// its status. The body is rebuilt, never relayed: the upstream's `message` (masked,
    /// shortened) and its `type`/`param`/`code` when they are plain tokens.
    pub(crate) fn client_error(&self, status: StatusCode, body: &[u8]) -> Response {
        let e = UpstreamError::parse(body);
        if tracing::enabled!(tracing::Level::DEBUG) {
            let text = String::from_utf8_lossy(&body[..body.len().min(2048)]);
            tracing::debug!(backend = %self.name, status = status.as_u16(), body = %self.secrets.redact(&text), "upstream refused the request");
        }
        let message = match e.message.as_deref().filter(|m| !m.trim().is_empty()) {
            Some(m) => {
                let m = self.secrets.redact(m);
                let mut short: String = m.chars().take(MAX_MESSAGE_CHARS).collect();
                if short.len() < m.len() {
                    short.push('…');
                }
                short
            }
            None => format!(
                "backend `{}` refused the request ({})",
                self.name,
                status.as_u16()
            ),
        };
        let code = match &e.code {
            Some(serde_json::Value::String(c)) => token(Some(c)),
            _ => None,
        };
        // `code` stays null when the upstream gave none, as OpenAI's own errors do.
        let body = serde_json::json!({"error": {
            "message": message,
            "type": token(e.kind.as_deref()).unwrap_or("invalid_request_error"),
            "param": token(e.param.as_deref()),
            "code": code,
        }});
        let mut out = (status, body.to_string()).into_response();
        out.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        out
    }
}

/// The innermost error message (reqwest's own Display hides the cause).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_grows() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(1);
        for attempt in 0..30 {
            let d = backoff(base, cap, attempt);
            assert!(d <= cap, "{d:?}");
            assert!(d >= Duration::from_millis(1));
        }
        // attempt 0 never exceeds the base.
        for _ in 0..100 {
            assert!(backoff(base, cap, 0) <= base);
        }
    }

    #[test]
    fn parses_retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("0.5"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(500)));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
        let future = SystemTime::now() + Duration::from_secs(30);
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(future)).unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(28) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
    }
}
