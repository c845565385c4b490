//! OpenAI's legacy Completions API inbound: `POST /v1/completions`.
//!
//! A request for a plain alias whose first target is a `kind: openai` backend is passed
//! through to that backend's own `/completions` ([`crate::passthrough`]): base models and
//! every legacy parameter work, with keys, rate limits, budgets and usage rows.
//!
//! Any other model (`auto` and other routed aliases, the embedded model, Anthropic and Azure
//! backends) goes through the chat endpoint's own pipeline, as
//! [`crate::anthropic::MessagesLayer`] does: [`CompletionsLayer`] translates the completion
//! request into a chat request whose one user message is the prompt (the model name
//! unchanged, so `auto`, aliases, policies, limits, the cache and usage accounting all apply
//! as they are), calls the pipeline, and translates its answer back into the
//! `text_completion` shape, streams chunk by chunk.
//!
//! The prompt is sent as a user turn: chat models answer it rather than continue it, and the
//! embedded model applies its chat template. One prompt per request (a string, or a list of
//! one string); `suffix`, `echo`, `logprobs`, `best_of` > 1 and token-array prompts are
//! refused with a 400 on this path. `max_tokens` left out means the backend's own default,
//! not the legacy API's 16. Errors stay in OpenAI's shape, as the pipeline gave them.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use http::{header, HeaderValue, Method, Request};
use serde_json::{json, Map, Value};
use tower::{Layer, Service};

use crate::layers::body_limit::read_body;
use crate::layers::snapshot::Snapshot;
use crate::layers::BoxFuture;
use crate::passthrough;
use slmgate_openai::error::GatewayError;
use slmgate_usage::UsageSink;

/// The endpoint's path.
pub const COMPLETIONS_PATH: &str = "/v1/completions";

/// The largest JSON answer read back from the chat pipeline for translation.
const MAX_ANSWER_BYTES: usize = 64 << 20;
/// How long reading a (non-streamed) answer of the chat pipeline may take. Its body is in
/// memory already; this only bounds the wait.
const ANSWER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The fields passed on to the chat request as they are.
const PASSED: [&str; 12] = [
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "stream",
    "stream_options",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "user",
];

/// A completion request as a chat request body, or the client's 400.
///
/// # Errors
///
/// A [`GatewayError::BadRequest`] naming the parameter that has no chat equivalent.
pub fn completion_to_chat(bytes: &[u8]) -> Result<Value, GatewayError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| GatewayError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(GatewayError::bad_request("the body must be a JSON object"));
    };
    if !obj.get("model").is_some_and(Value::is_string) {
        return Err(GatewayError::bad_param(
            "model",
            "`model` is required and must be a string",
        ));
    }
    let unsupported = |name: &str| {
        GatewayError::bad_param(
            name,
            format!("`{name}` is not supported by this gateway's /v1/completions"),
        )
    };
    if obj.get("suffix").is_some_and(|s| !s.is_null()) {
        return Err(unsupported("suffix"));
    }
    if obj.get("echo").is_some_and(|e| e.as_bool() == Some(true)) {
        return Err(unsupported("echo"));
    }
    if obj.get("logprobs").is_some_and(|l| !l.is_null()) {
        return Err(unsupported("logprobs"));
    }
    if obj
        .get("best_of")
        .is_some_and(|b| !b.is_null() && b.as_u64() != Some(1))
    {
        return Err(unsupported("best_of"));
    }
    let prompt = match obj.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(s)] => s.clone(),
            [] => return Err(GatewayError::bad_param("prompt", "`prompt` is empty")),
            [_] => {
                return Err(GatewayError::bad_param(
                    "prompt",
                    "token-array prompts are not supported; send a string",
                ))
            }
            _ => {
                return Err(GatewayError::bad_param(
                    "prompt",
                    "only one prompt per request is supported",
                ))
            }
        },
        None | Some(Value::Null) => {
            return Err(GatewayError::bad_param("prompt", "`prompt` is required"))
        }
        Some(_) => {
            return Err(GatewayError::bad_param(
                "prompt",
                "`prompt` must be a string or a list of one string",
            ))
        }
    };
    let mut chat = Map::new();
    for field in PASSED {
        if let Some(v) = obj.get(field).filter(|v| !v.is_null()) {
            chat.insert(field.to_owned(), v.clone());
        }
    }
    chat.insert(
        "messages".to_owned(),
        json!([{"role": "user", "content": prompt}]),
    );
    Ok(Value::Object(chat))
}

/// The `model` of a completion request (the other fields are skipped, not built).
fn pass_through_model(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Model {
        model: String,
    }
    serde_json::from_slice::<Model>(bytes).ok().map(|m| m.model)
}

/// `chatcmpl-…` as `cmpl-…`.
fn completion_id(chat_id: Option<&Value>) -> Value {
    match chat_id.and_then(Value::as_str) {
        Some(id) => Value::from(match id.strip_prefix("chatcmpl-") {
            Some(rest) => format!("cmpl-{rest}"),
            None => id.to_owned(),
        }),
        None => Value::Null,
    }
}

/// The text of a chat choice's `message` (or a chunk's `delta`).
fn content(message: Option<&Value>) -> &str {
    message
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// A chat completion as a text completion; `model` is the name the client asked for.
pub fn chat_to_completion(chat: &Value, model: &str) -> Value {
    let choices: Vec<Value> = chat
        .get("choices")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .enumerate()
                .map(|(i, c)| {
                    json!({
                        "text": content(c.get("message")),
                        "index": c.get("index").cloned().unwrap_or(Value::from(i)),
                        "logprobs": null,
                        "finish_reason": c.get("finish_reason").cloned().unwrap_or(Value::Null),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = json!({
        "id": completion_id(chat.get("id")),
        "object": "text_completion",
        "created": chat.get("created").cloned().unwrap_or(Value::Null),
        "model": model,
        "choices": choices,
    });
    if let Some(usage) = chat.get("usage").filter(|u| !u.is_null()) {
        out["usage"] = usage.clone();
    }
    out
}

/// A chat stream chunk as a text completion chunk; `None` for a chunk that carries nothing a
/// completion client sees (the opening role-only chunk). A JSON object that is not a chunk
/// (the gateway's error event) passes as it is.
pub fn chunk_to_completion(chunk: &Value, model: &str) -> Option<Value> {
    let Some(choices) = chunk.get("choices").and_then(Value::as_array) else {
        return Some(chunk.clone());
    };
    let out: Vec<Value> = choices
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let text = content(c.get("delta"));
            let finish = c.get("finish_reason").cloned().unwrap_or(Value::Null);
            if text.is_empty() && finish.is_null() {
                return None;
            }
            Some(json!({
                "text": text,
                "index": c.get("index").cloned().unwrap_or(Value::from(i)),
                "logprobs": null,
                "finish_reason": finish,
            }))
        })
        .collect();
    let usage = chunk.get("usage").filter(|u| !u.is_null());
    if out.is_empty() && usage.is_none() {
        return None;
    }
    let mut v = json!({
        "id": completion_id(chunk.get("id")),
        "object": "text_completion",
        "created": chunk.get("created").cloned().unwrap_or(Value::Null),
        "model": model,
        "choices": out,
    });
    if let Some(u) = usage {
        v["usage"] = u.clone();
    }
    Some(v)
}

/// Serves `POST /v1/completions`: passed through, or with the chat pipeline it wraps.
#[derive(Clone, Debug, Default)]
pub struct CompletionsLayer {
    sink: Option<UsageSink>,
}

impl CompletionsLayer {
    /// The layer; passed-through requests record usage into `sink` (the chat pipeline
    /// records its own).
    pub fn new(sink: Option<UsageSink>) -> Self {
        CompletionsLayer { sink }
    }
}

impl<S> Layer<S> for CompletionsLayer {
    type Service = Completions<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Completions {
            inner,
            sink: self.sink.clone(),
        }
    }
}

/// See [`CompletionsLayer`].
#[derive(Clone, Debug)]
pub struct Completions<S> {
    inner: S,
    sink: Option<UsageSink>,
}

impl<S> Service<Request<Body>> for Completions<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // Take the service that was polled ready; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let sink = self.sink.clone();
        Box::pin(async move { Ok(completions(inner, sink, req).await) })
    }
}

async fn completions<S>(mut inner: S, sink: Option<UsageSink>, req: Request<Body>) -> Response
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    if req.method() != Method::POST {
        return GatewayError::MethodNotAllowed.into_response();
    }
    let (mut head, body) = req.into_parts();
    let bytes = match read_body(&head, body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if let Some(Snapshot(gw)) = head.extensions.get::<Snapshot>() {
        if pass_through_model(&bytes).is_some_and(|m| passthrough::passes_through(gw, &m)) {
            return passthrough::pass(passthrough::Api::Completions, sink, &head, &bytes).await;
        }
    }
    let chat = match completion_to_chat(&bytes) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let model = chat
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    head.headers.remove(header::CONTENT_LENGTH);
    head.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let Ok(resp) = inner
        .call(Request::from_parts(head, Body::from(chat.to_string())))
        .await;
    translate_answer(resp, model).await
}

/// The chat pipeline's answer as the Completions API's; errors pass as they are (they are
/// OpenAI-shaped already).
async fn translate_answer(resp: Response, model: String) -> Response {
    if !resp.status().is_success() {
        return resp;
    }
    let is_sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let (mut parts, body) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    if is_sse {
        return Response::from_parts(parts, completion_sse(body, model));
    }
    let read = axum::body::to_bytes(body, MAX_ANSWER_BYTES);
    let Ok(Ok(bytes)) = tokio::time::timeout(ANSWER_READ_TIMEOUT, read).await else {
        return GatewayError::Upstream("the answer could not be read".into()).into_response();
    };
    let Ok(answer) = serde_json::from_slice::<Value>(&bytes) else {
        return GatewayError::Upstream("the answer is not a chat completion".into())
            .into_response();
    };
    let body = chat_to_completion(&answer, &model).to_string();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

/// The chat pipeline's SSE body as `text_completion` chunks, translated event by event. The
/// whole inner body is read, so the account and limits steps see it end.
fn completion_sse(body: Body, model: String) -> Body {
    let events = body.into_data_stream().eventsource();
    let stream = futures::stream::unfold(Some(events), move |state| {
        let model = model.clone();
        async move {
            let mut events = state?;
            loop {
                match events.next().await {
                    Some(Ok(event)) => {
                        if event.data.trim() == "[DONE]" {
                            return Some((
                                Ok::<_, Infallible>(Bytes::from_static(b"data: [DONE]\n\n")),
                                Some(events),
                            ));
                        }
                        let Ok(chunk) = serde_json::from_str::<Value>(&event.data) else {
                            tracing::debug!("skipping an unreadable stream event");
                            continue;
                        };
                        if let Some(out) = chunk_to_completion(&chunk, &model) {
                            return Some((
                                Ok(Bytes::from(format!("data: {out}\n\n"))),
                                Some(events),
                            ));
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "the chat stream broke");
                        let out = crate::upstream::sse::error_event(
                            "the stream was interrupted",
                            crate::upstream::sse::STREAM_INCOMPLETE,
                        );
                        return Some((Ok(out), None));
                    }
                    None => return None,
                }
            }
        }
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_becomes_one_user_message() {
        let chat = completion_to_chat(
            br#"{"model":"m","prompt":["Hi"],"max_tokens":5,"stop":"\n","echo":false,"suffix":null,"logit_bias":{}}"#,
        )
        .unwrap();
        assert_eq!(
            chat,
            json!({"model":"m","max_tokens":5,"stop":"\n","messages":[{"role":"user","content":"Hi"}]})
        );
    }

    #[test]
    fn untranslatable_requests_are_refused() {
        for (body, param) in [
            (r#"{"model":"m","prompt":"a","suffix":"b"}"#, "suffix"),
            (r#"{"model":"m","prompt":"a","echo":true}"#, "echo"),
            (r#"{"model":"m","prompt":"a","logprobs":2}"#, "logprobs"),
            (r#"{"model":"m","prompt":"a","best_of":3}"#, "best_of"),
            (r#"{"model":"m","prompt":["a","b"]}"#, "prompt"),
            (r#"{"model":"m","prompt":[1,2]}"#, "prompt"),
            (r#"{"model":"m"}"#, "prompt"),
            (r#"{"prompt":"a"}"#, "model"),
        ] {
            match completion_to_chat(body.as_bytes()) {
                Err(GatewayError::BadRequest { param: p, .. }) => {
                    assert_eq!(p.as_deref(), Some(param), "{body}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn chunks_translate_and_role_chunks_drop() {
        let role = json!({"id":"chatcmpl-1","choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]});
        assert_eq!(chunk_to_completion(&role, "m"), None);
        let text = json!({"id":"chatcmpl-1","created":1,"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]});
        let out = chunk_to_completion(&text, "m").unwrap();
        assert_eq!(out["id"], "cmpl-1");
        assert_eq!(out["object"], "text_completion");
        assert_eq!(out["choices"][0]["text"], "Hi");
        let err = json!({"error":{"message":"x"}});
        assert_eq!(chunk_to_completion(&err, "m"), Some(err.clone()));
    }
}
