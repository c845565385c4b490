//! A mock OpenAI-compatible upstream for slmgate's integration tests and benchmarks.
//!
//! The mock picks its behaviour from the requested `model` name, so one server serves every
//! scenario a test needs (an idea borrowed from TensorZero's dummy provider):
//!
//! | model                | behaviour                                                          |
//! |----------------------|--------------------------------------------------------------------|
//! | anything else        | 200 with [`REPLY`], streamed as three chunks when `stream: true`   |
//! | `slow-<ms>`          | waits `<ms>` before answering                                      |
//! | `error-<status>`     | answers `<status>` with an OpenAI error body                       |
//! | `flaky-<n>`          | the first `<n>` requests for that exact name answer 500, then 200  |
//! | `retry-after-<s>`    | first request answers 429 with `Retry-After: <s>`, then 200        |
//! | `drip-<ms>`          | streams 50 chunks, `<ms>` apart (for cancellation tests)           |
//! | `cut`                | streams two chunks then drops the connection mid-stream            |
//! | `echo`               | answers the last message's text (streamed 3 characters a chunk)    |
//! | `garbled`            | 200 `application/json` whose body is cut off mid-object            |
//! | `bad-utf8`           | 200 completion with an invalid UTF-8 byte inside its content       |
//! | `html`               | 200 with an HTML page instead of a completion                      |
//! | `huge`               | 200 `application/json` whose body is 80 MiB of spaces, streamed     |
//! | `giant-event`        | an SSE stream whose first event is 8 MiB without a line end         |
//! | `early-close`        | streams the role chunk, then ends without content or `[DONE]`      |
//! | `early-error`        | streams the role chunk, then an error event (no content)           |
//! | `noisy`              | streams with a foreign event, a non-JSON `data:` line, a comment and an invalid UTF-8 byte between the usual chunks |
//! | `leak-<status>`      | answers `<status>` with an error body quoting the `Authorization` header it got |
//! | `tools`              | with `tools` in the request and no `tool` message last: calls the first tool with [`TOOL_ARGUMENTS`] (id [`TOOL_CALL_ID`], `finish_reason: tool_calls`; streamed as the call header then two argument fragments); with a `tool` message last: answers `Tool said: <its content>` (streamed 3 characters a chunk) |
//!
//! Every request is counted and the last one recorded ([`Mock::last_request`]).
//!
//! Azure OpenAI's deployment URLs (`POST /openai/deployments/{deployment}/chat/completions`)
//! are served like `/v1/chat/completions` (the recorded [`RecordedRequest::uri`] shows the
//! deployment and `api-version`).
//!
//! **Anthropic mode**: `POST /v1/messages` answers like Anthropic's Messages API, again by
//! `model`:
//!
//! | model            | behaviour                                                              |
//! |------------------|------------------------------------------------------------------------|
//! | anything else    | 200 with [`REPLY`] and usage with cache tokens ([`ANTHROPIC_USAGE`]); streamed as Anthropic SSE (text deltas) when `stream: true` |
//! | `tool`           | text then a `tool_use` block `get_weather` with input [`TOOL_INPUT`] (streamed as `input_json_delta` fragments) |
//! | `overloaded-<n>` | the first `<n>` requests for that exact name answer 529 `overloaded_error`, then as above |
//! | `error-<status>` | answers `<status>` with an Anthropic error body                        |
//!
//! A request without `x-api-key` or `anthropic-version` answers 401.
//!
//! **Legacy completions**: `POST /v1/completions` answers a `text_completion` whose text is
//! [`LEGACY_PREFIX`] followed by the prompt (so a test sees what arrived), one choice per
//! prompt, usage ([`PROMPT_TOKENS`], [`COMPLETION_TOKENS`] per prompt); streamed as one chunk
//! per choice, then a usage chunk when `stream_options.include_usage` is set, then `[DONE]`.
//! Model `error-<status>` answers that status.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};

/// The assistant text every successful mock answer carries.
pub const REPLY: &str = "Hello from the mock upstream.";
/// The streamed pieces of [`REPLY`].
pub const REPLY_CHUNKS: [&str; 3] = ["Hello", " from the mock", " upstream."];
/// The arguments of the `tools` model's tool call.
pub const TOOL_ARGUMENTS: &str = r#"{"city":"Paris"}"#;
/// The id of the `tools` model's tool call.
pub const TOOL_CALL_ID: &str = "call_mock_1";
/// Usage reported by every successful answer.
pub const PROMPT_TOKENS: u64 = 11;
/// Usage reported by every successful answer.
pub const COMPLETION_TOKENS: u64 = 7;

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Request headers.
    pub headers: HeaderMap,
    /// Path and query, as received.
    pub uri: String,
    /// Parsed JSON body (`Value::Null` when the body was not JSON).
    pub body: Value,
    /// When the request arrived.
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    requests: AtomicUsize,
    streams_started: AtomicUsize,
    streams_completed: AtomicUsize,
    streams_cancelled: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    record: bool,
    last: Mutex<Option<RecordedRequest>>,
    history: Mutex<Vec<RecordedRequest>>,
    per_model: Mutex<HashMap<String, usize>>,
}

/// A running mock upstream. Dropping it does not stop the server (tests end with the runtime).
#[derive(Clone)]
pub struct Mock {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Mock {
    /// Starts a mock on `127.0.0.1:0` that records every request.
    pub async fn start() -> Mock {
        Self::start_with(true).await
    }

    /// Starts a mock; `record: false` skips recording (for load benchmarks).
    pub async fn start_with(record: bool) -> Mock {
        let inner = Arc::new(Inner {
            record,
            ..Inner::default()
        });
        let app = router(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock upstream");
        let addr = listener.local_addr().expect("mock local addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Mock { addr, inner }
    }

    /// The mock's socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI-style base URL (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Number of chat requests received.
    pub fn requests(&self) -> usize {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// Streams that began sending.
    pub fn streams_started(&self) -> usize {
        self.inner.streams_started.load(Ordering::SeqCst)
    }

    /// Streams that sent everything including `[DONE]`.
    pub fn streams_completed(&self) -> usize {
        self.inner.streams_completed.load(Ordering::SeqCst)
    }

    /// Streams whose client went away before the end.
    pub fn streams_cancelled(&self) -> usize {
        self.inner.streams_cancelled.load(Ordering::SeqCst)
    }

    /// The most chat requests that were being answered at once (to the response head).
    pub fn max_in_flight(&self) -> usize {
        self.inner.max_in_flight.load(Ordering::SeqCst)
    }

    /// The last chat request received.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.inner.last.lock().ok().and_then(|g| g.clone())
    }

    /// Every chat request received, in order.
    pub fn history(&self) -> Vec<RecordedRequest> {
        self.inner
            .history
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
    }
}

/// Builds the mock's axum router (exposed for a standalone binary or custom serving).
fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(chat),
        )
        .route("/v1/messages", post(messages))
        .route("/v1/responses", post(responses))
        .route("/v1/completions", post(legacy_completions))
        .route("/v1/models", get(models))
        .with_state(inner)
}

async fn models() -> Response {
    axum::Json(json!({"object":"list","data":[{"id":"mock-model","object":"model","created":0,"owned_by":"mock"}]}))
        .into_response()
}

fn error(status: StatusCode, msg: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        json!({"error":{"message":msg,"type":"mock_error","param":null,"code":null}}).to_string(),
    )
        .into_response()
}

/// The text of the last message (for `echo`).
fn last_text(body: &Value) -> String {
    body.get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// For the `tools` model: the tool to call (the first of the request's tools) when the last
/// message is not a tool result.
fn tool_to_call(body: &Value) -> Option<String> {
    let last_role = body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str);
    if last_role == Some("tool") {
        return None;
    }
    body.pointer("/tools/0/function/name")
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn tool_call_body(model: &str, name: &str) -> String {
    json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1_700_000_000u64,
        "model": model,
        "choices": [{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[
            {"id":TOOL_CALL_ID,"type":"function","function":{"name":name,"arguments":TOOL_ARGUMENTS}}
        ]},"finish_reason":"tool_calls","logprobs":null}],
        "usage": {"prompt_tokens":PROMPT_TOKENS,"completion_tokens":COMPLETION_TOKENS,"total_tokens":PROMPT_TOKENS+COMPLETION_TOKENS}
    })
    .to_string()
}

fn completion_body(model: &str, reply: &str) -> String {
    json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1_700_000_000u64,
        "model": model,
        "choices": [{"index":0,"message":{"role":"assistant","content":reply},"finish_reason":"stop","logprobs":null}],
        "usage": {"prompt_tokens":PROMPT_TOKENS,"completion_tokens":COMPLETION_TOKENS,"total_tokens":PROMPT_TOKENS+COMPLETION_TOKENS}
    })
    .to_string()
}

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> Bytes {
    let v = json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000u64,
        "model": model,
        "choices": [{"index":0,"delta":delta,"finish_reason":finish,"logprobs":null}]
    });
    Bytes::from(format!("data: {v}\n\n"))
}

fn usage_chunk(model: &str) -> Bytes {
    let v = json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000u64,
        "model": model,
        "choices": [],
        "usage": {"prompt_tokens":PROMPT_TOKENS,"completion_tokens":COMPLETION_TOKENS,"total_tokens":PROMPT_TOKENS+COMPLETION_TOKENS}
    });
    Bytes::from(format!("data: {v}\n\n"))
}

/// Counts a stream as completed or cancelled when dropped.
struct StreamGuard {
    inner: Arc<Inner>,
    done: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.done {
            self.inner.streams_completed.fetch_add(1, Ordering::SeqCst);
        } else {
            self.inner.streams_cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Counts a request as in flight until its response head is returned.
struct InFlight(Arc<Inner>);

impl InFlight {
    fn enter(inner: &Arc<Inner>) -> InFlight {
        let now = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        inner.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(inner.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Records a request (when recording) and returns its parsed body.
fn record(inner: &Inner, uri: &axum::http::Uri, headers: &HeaderMap, body: &[u8]) -> Value {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if inner.record {
        let rec = RecordedRequest {
            headers: headers.clone(),
            uri: uri.to_string(),
            body: parsed.clone(),
            at: Instant::now(),
        };
        if let Ok(mut g) = inner.history.lock() {
            g.push(rec.clone());
        }
        if let Ok(mut g) = inner.last.lock() {
            *g = Some(rec);
        }
    }
    parsed
}

async fn chat(
    State(inner): State<Arc<Inner>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    inner.requests.fetch_add(1, Ordering::SeqCst);
    let _in_flight = InFlight::enter(&inner);
    let parsed = record(&inner, &uri, &headers, &body);
    let model = parsed
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let stream = parsed
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let include_usage = parsed
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let seen = {
        let mut g = match inner.per_model.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let n = g.entry(model.clone()).or_insert(0);
        *n += 1;
        *n
    };

    let mut drip = None;
    if let Some(ms) = model.strip_prefix("slow-").and_then(|s| s.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    } else if let Some(code) = model.strip_prefix("error-").and_then(|s| s.parse().ok()) {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(status, &format!("mock error {code}"));
    } else if model == "garbled" {
        return (
            StatusCode::OK,
            [("content-type", "application/json")],
            r#"{"id":"chatcmpl-mock","choices":[{"index":0,"message":{"role":"assi"#,
        )
            .into_response();
    } else if model == "bad-utf8" {
        let mut body = completion_body(&model, REPLY).into_bytes();
        let at = body
            .windows(5)
            .position(|w| w == b"from ")
            .map_or(0, |p| p + 4);
        body.insert(at, 0xff);
        return (StatusCode::OK, [("content-type", "application/json")], body).into_response();
    } else if model == "giant-event" {
        let mut first = b"data: {\"x\":\"".to_vec();
        first.resize(1 << 20, b'a');
        let rest = Bytes::from(vec![b'a'; 1 << 20]);
        let body = stream::iter(
            std::iter::once(Bytes::from(first))
                .chain(std::iter::repeat_n(rest, 7))
                .map(Ok::<_, Infallible>),
        );
        return (
            StatusCode::OK,
            [("content-type", "text/event-stream")],
            Body::from_stream(body),
        )
            .into_response();
    } else if model == "huge" {
        let chunk = Bytes::from(vec![b' '; 1 << 20]);
        let body = stream::iter((0..80).map(move |_| Ok::<_, Infallible>(chunk.clone())));
        return (
            StatusCode::OK,
            [("content-type", "application/json")],
            Body::from_stream(body),
        )
            .into_response();
    } else if model == "html" {
        return (
            StatusCode::OK,
            [("content-type", "text/html")],
            "<html><body>502 Bad Gateway</body></html>",
        )
            .into_response();
    } else if let Some(code) = model.strip_prefix("leak-").and_then(|s| s.parse().ok()) {
        // A careless upstream (or proxy) that quotes the credential it was sent.
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        return error(status, &format!("invalid request; you sent `{auth}`"));
    } else if let Some(n) = model
        .strip_prefix("flaky-")
        .and_then(|s| s.parse::<usize>().ok())
    {
        if seen <= n {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "mock flaky failure");
        }
    } else if let Some(s) = model.strip_prefix("retry-after-") {
        if seen == 1 {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "mock rate limit");
            if let Ok(v) = HeaderValue::from_str(s) {
                r.headers_mut().insert("retry-after", v);
            }
            return r;
        }
    } else if let Some(ms) = model.strip_prefix("drip-").and_then(|s| s.parse().ok()) {
        drip = Some(Duration::from_millis(ms));
    }

    let tool = if model == "tools" {
        tool_to_call(&parsed)
    } else {
        None
    };
    let reply = match model.as_str() {
        "echo" => last_text(&parsed),
        "tools" => format!("Tool said: {}", last_text(&parsed)),
        _ => REPLY.to_string(),
    };
    if !stream {
        let body = match &tool {
            Some(name) => tool_call_body(&model, name),
            None => completion_body(&model, &reply),
        };
        return (StatusCode::OK, [("content-type", "application/json")], body).into_response();
    }

    inner.streams_started.fetch_add(1, Ordering::SeqCst);
    let mut guard = StreamGuard {
        inner: inner.clone(),
        done: false,
    };
    let m = model.clone();
    let body = if let Some(gap) = drip {
        let s = stream::unfold((0usize, guard), move |(i, mut guard)| {
            let m = m.clone();
            async move {
                if i > 50 {
                    return None;
                }
                if i == 50 {
                    guard.done = true;
                    return Some((
                        Ok::<_, Infallible>(Bytes::from("data: [DONE]\n\n")),
                        (i + 1, guard),
                    ));
                }
                tokio::time::sleep(gap).await;
                Some((
                    Ok(chunk(&m, json!({"content": format!("t{i} ")}), None)),
                    (i + 1, guard),
                ))
            }
        });
        Body::from_stream(s)
    } else if model == "early-close" || model == "early-error" {
        let mut pieces = vec![Ok::<_, Infallible>(chunk(
            &m,
            json!({"role":"assistant","content":""}),
            None,
        ))];
        if model == "early-error" {
            let e = json!({"error":{"message":"mock overloaded mid-stream","type":"server_error","param":null,"code":null}});
            pieces.push(Ok(Bytes::from(format!("data: {e}\n\n"))));
        }
        drop(guard);
        Body::from_stream(stream::iter(pieces))
    } else if model == "noisy" {
        let mut pieces = vec![chunk(&m, json!({"role":"assistant","content":""}), None)];
        pieces.push(Bytes::from_static(
            b"event: ping\ndata: {\"type\":\"ping\"}\n\n",
        ));
        pieces.push(Bytes::from_static(b": keep-alive comment\n\n"));
        pieces.push(Bytes::from_static(b"data: this is not json\n\n"));
        for (i, c) in REPLY_CHUNKS.iter().enumerate() {
            let mut b = chunk(&m, json!({"content": c}), None).to_vec();
            if i == 1 {
                // One invalid UTF-8 byte inside the JSON string of the second chunk.
                let at = b
                    .windows(5)
                    .position(|w| w == b"from ")
                    .map_or(0, |p| p + 4);
                b.insert(at, 0xff);
            }
            pieces.push(Bytes::from(b));
        }
        pieces.push(chunk(&m, json!({}), Some("stop")));
        if include_usage {
            pieces.push(usage_chunk(&m));
        }
        pieces.push(Bytes::from("data: [DONE]\n\n"));
        guard.done = true;
        let s = stream::iter(pieces.into_iter().map(Ok::<_, Infallible>)).chain(stream::once(
            async move {
                drop(guard);
                Ok(Bytes::new())
            },
        ));
        Body::from_stream(s)
    } else if model == "cut" {
        let pieces = vec![
            Ok(chunk(&m, json!({"role":"assistant","content":""}), None)),
            Ok(chunk(&m, json!({"content":"partial"}), None)),
        ];
        guard.done = false;
        // The pause lets hyper flush the headers and chunks before the connection drops
        // (an error in the same poll would abort the response before anything is sent).
        let s = stream::iter(pieces).chain(stream::once(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(guard);
            Err(std::io::Error::other("mock cut the stream"))
        }));
        Body::from_stream(s)
    } else {
        let mut pieces = vec![chunk(&m, json!({"role":"assistant","content":""}), None)];
        let mut finish = "stop";
        if let Some(name) = &tool {
            let (a, b) = TOOL_ARGUMENTS.split_at(TOOL_ARGUMENTS.len() / 2);
            pieces.push(chunk(
                &m,
                json!({"tool_calls":[{"index":0,"id":TOOL_CALL_ID,"type":"function","function":{"name":name,"arguments":""}}]}),
                None,
            ));
            for part in [a, b] {
                pieces.push(chunk(
                    &m,
                    json!({"tool_calls":[{"index":0,"function":{"arguments":part}}]}),
                    None,
                ));
            }
            finish = "tool_calls";
        } else if model == "echo" || model == "tools" {
            let text: Vec<char> = reply.chars().collect();
            for c in text.chunks(3) {
                let c: String = c.iter().collect();
                pieces.push(chunk(&m, json!({"content":c}), None));
            }
        } else {
            for c in REPLY_CHUNKS {
                pieces.push(chunk(&m, json!({"content":c}), None));
            }
        }
        pieces.push(chunk(&m, json!({}), Some(finish)));
        if include_usage {
            pieces.push(usage_chunk(&m));
        }
        pieces.push(Bytes::from("data: [DONE]\n\n"));
        guard.done = true;
        let s = stream::iter(pieces.into_iter().map(Ok::<_, Infallible>)).chain(stream::once(
            async move {
                drop(guard);
                Ok(Bytes::new())
            },
        ));
        Body::from_stream(s)
    };
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "mock build"))
}

/// Usage of every successful Anthropic-mode answer: `(input, cache_creation, cache_read,
/// output)` tokens.
pub const ANTHROPIC_USAGE: (u64, u64, u64, u64) = (5, 3, 4, 7);
/// The arguments of the `tool` model's `get_weather` call.
pub const TOOL_INPUT: &str = r#"{"city":"Paris","unit":"c"}"#;

fn anthropic_error(status: StatusCode, kind: &str, msg: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        json!({"type":"error","error":{"type":kind,"message":msg}}).to_string(),
    )
        .into_response()
}

fn anthropic_usage() -> Value {
    let (input, creation, read, output) = ANTHROPIC_USAGE;
    json!({"input_tokens": input, "cache_creation_input_tokens": creation,
           "cache_read_input_tokens": read, "output_tokens": output})
}

fn anthropic_event(v: &Value) -> String {
    let name = v.get("type").and_then(Value::as_str).unwrap_or("message");
    format!("event: {name}\ndata: {v}\n\n")
}

/// `POST /v1/messages`: see the module docs.
async fn messages(
    State(inner): State<Arc<Inner>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    inner.requests.fetch_add(1, Ordering::SeqCst);
    let parsed = record(&inner, &uri, &headers, &body);
    if !headers.contains_key("x-api-key") || !headers.contains_key("anthropic-version") {
        return anthropic_error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "missing x-api-key or anthropic-version",
        );
    }
    let model = parsed
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let stream = parsed
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let seen = {
        let mut g = match inner.per_model.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let n = g.entry(model.clone()).or_insert(0);
        *n += 1;
        *n
    };
    if let Some(code) = model.strip_prefix("error-").and_then(|s| s.parse().ok()) {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return anthropic_error(
            status,
            "invalid_request_error",
            &format!("mock anthropic error {code}"),
        );
    }
    if let Some(n) = model
        .strip_prefix("overloaded-")
        .and_then(|s| s.parse::<usize>().ok())
    {
        if seen <= n {
            return anthropic_error(
                StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                "overloaded_error",
                "Overloaded",
            );
        }
    }
    let tool = model == "tool";
    if !stream {
        let mut content = vec![json!({"type":"text","text":REPLY})];
        if tool {
            let input: Value = serde_json::from_str(TOOL_INPUT).unwrap_or(Value::Null);
            content
                .push(json!({"type":"tool_use","id":"toolu_1","name":"get_weather","input":input}));
        }
        let body = json!({
            "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
            "content": content,
            "stop_reason": if tool { "tool_use" } else { "end_turn" },
            "stop_sequence": null,
            "usage": anthropic_usage(),
        });
        return (
            StatusCode::OK,
            [("content-type", "application/json")],
            body.to_string(),
        )
            .into_response();
    }
    let (input, creation, read, output) = ANTHROPIC_USAGE;
    let mut events = vec![
        json!({"type":"message_start","message":{"id":"msg_mock","type":"message","role":"assistant",
            "model":model,"content":[],"stop_reason":null,"stop_sequence":null,
            "usage":{"input_tokens":input,"cache_creation_input_tokens":creation,
                     "cache_read_input_tokens":read,"output_tokens":1}}}),
        json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        json!({"type":"ping"}),
    ];
    for piece in REPLY_CHUNKS {
        events.push(json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":piece}}));
    }
    events.push(json!({"type":"content_block_stop","index":0}));
    if tool {
        events.push(json!({"type":"content_block_start","index":1,
            "content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}));
        let (a, b) = TOOL_INPUT.split_at(TOOL_INPUT.len() / 2);
        for part in ["", a, b] {
            events.push(json!({"type":"content_block_delta","index":1,
                "delta":{"type":"input_json_delta","partial_json":part}}));
        }
        events.push(json!({"type":"content_block_stop","index":1}));
    }
    events.push(json!({"type":"message_delta",
        "delta":{"stop_reason": if tool { "tool_use" } else { "end_turn" },"stop_sequence":null},
        "usage":{"output_tokens":output}}));
    events.push(json!({"type":"message_stop"}));
    let body = stream::iter(
        events
            .into_iter()
            .map(|e| Ok::<_, Infallible>(Bytes::from(anthropic_event(&e)))),
    );
    (
        StatusCode::OK,
        [("content-type", "text/event-stream")],
        Body::from_stream(body),
    )
        .into_response()
}

/// The Responses API usage the mock reports: `(input_tokens, output_tokens)`.
pub const RESPONSES_USAGE: (u64, u64) = (13, 5);

/// `POST /v1/responses`: a Responses-shaped answer with [`REPLY`] and [`RESPONSES_USAGE`];
/// `stream: true` sends `response.created`, one `response.output_text.delta` per
/// [`REPLY_CHUNKS`] item and `response.completed` with the usage. Model `error-<code>`
/// answers that status (its body echoing the backend key, which must never be relayed).
async fn responses(
    State(inner): State<Arc<Inner>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    inner.requests.fetch_add(1, Ordering::SeqCst);
    let parsed = record(&inner, &uri, &headers, &body);
    let model = parsed
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some(code) = model.strip_prefix("error-").and_then(|s| s.parse().ok()) {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        return error(status, &format!("mock responses error {code} for {auth}"));
    }
    let stream = parsed
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let (input, output) = RESPONSES_USAGE;
    let done = json!({
        "id": "resp_mock", "object": "response", "status": "completed", "model": model,
        "output": [{"type": "message", "id": "msg_mock", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": REPLY, "annotations": []}]}],
        "usage": {"input_tokens": input, "output_tokens": output, "total_tokens": input + output},
    });
    if !stream {
        return (StatusCode::OK, axum::Json(done)).into_response();
    }
    let mut events = vec![json!({"type": "response.created", "sequence_number": 0,
        "response": {"id": "resp_mock", "object": "response", "status": "in_progress", "model": model}})];
    for (i, delta) in REPLY_CHUNKS.iter().enumerate() {
        events.push(
            json!({"type": "response.output_text.delta", "sequence_number": i + 1,
            "item_id": "msg_mock", "output_index": 0, "content_index": 0, "delta": delta}),
        );
    }
    events.push(
        json!({"type": "response.completed", "sequence_number": REPLY_CHUNKS.len() + 1,
        "response": done}),
    );
    let text: String = events
        .iter()
        .map(|e| {
            let name = e.get("type").and_then(Value::as_str).unwrap_or("");
            format!("event: {name}\ndata: {e}\n\n")
        })
        .collect();
    (
        StatusCode::OK,
        [("content-type", "text/event-stream")],
        text,
    )
        .into_response()
}

/// What the legacy completion answer puts before the prompt.
pub const LEGACY_PREFIX: &str = "Completed: ";

/// `POST /v1/completions` (see the module docs).
async fn legacy_completions(
    State(inner): State<Arc<Inner>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    inner.requests.fetch_add(1, Ordering::SeqCst);
    let parsed = record(&inner, &uri, &headers, &body);
    let model = parsed
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some(code) = model.strip_prefix("error-").and_then(|s| s.parse().ok()) {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(status, &format!("mock completions error {code}"));
    }
    let prompts: Vec<String> = match parsed.get("prompt") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
            .collect(),
        Some(Value::String(p)) => vec![p.clone()],
        _ => vec![String::new()],
    };
    let n = prompts.len() as u64;
    let usage = json!({"prompt_tokens": PROMPT_TOKENS * n, "completion_tokens": COMPLETION_TOKENS * n,
        "total_tokens": (PROMPT_TOKENS + COMPLETION_TOKENS) * n});
    let choice = |i: usize, p: &str| json!({"text": format!("{LEGACY_PREFIX}{p}"), "index": i, "logprobs": null, "finish_reason": "stop"});
    let stream = parsed
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !stream {
        let choices: Vec<Value> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| choice(i, p))
            .collect();
        return axum::Json(
            json!({"id": "cmpl-mock", "object": "text_completion", "created": 0,
            "model": model, "choices": choices, "usage": usage}),
        )
        .into_response();
    }
    let mut text = String::new();
    for (i, p) in prompts.iter().enumerate() {
        let c = json!({"id": "cmpl-mock", "object": "text_completion", "created": 0, "model": model,
            "choices": [choice(i, p)]});
        text.push_str(&format!("data: {c}\n\n"));
    }
    if parsed.pointer("/stream_options/include_usage") == Some(&Value::Bool(true)) {
        let u = json!({"id": "cmpl-mock", "object": "text_completion", "created": 0, "model": model,
            "choices": [], "usage": usage});
        text.push_str(&format!("data: {u}\n\n"));
    }
    text.push_str("data: [DONE]\n\n");
    (
        StatusCode::OK,
        [("content-type", "text/event-stream")],
        text,
    )
        .into_response()
}
