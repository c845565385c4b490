//! Anthropic's Messages API inbound: `POST /v1/messages` and `POST /v1/messages/count_tokens`.
//!
//! [`MessagesLayer`] wraps the chat endpoint's own pipeline (the very service that answers
//! `/v1/chat/completions`): it reads the body under the same limits, translates the Messages
//! request into an OpenAI chat request ([`slmgate_anthropic::messages_to_openai`], the model
//! name unchanged, so `auto`, aliases, policies, limits, the cache and usage accounting all
//! apply as they are), calls the pipeline, and translates its answer back:
//!
//! - a JSON answer through [`slmgate_anthropic::openai_response_to_messages`];
//! - a stream through one [`OpenAiToAnthropicStream`] into Anthropic's event sequence
//!   (`message_start`, `content_block_*`, `message_delta`, `message_stop`), as the chunks come;
//! - an error into Anthropic's shape (`{"type":"error","error":{"type","message"}}`), the
//!   status kept: a 503 stays 503 (`overloaded_error`) rather than Anthropic's 529, so
//!   proxies, `Retry-After` and the gateway's own metrics agree on it (the Anthropic SDKs
//!   retry both).
//!
//! The `x-slmgate-*` headers and the request id stay on the answer. `anthropic-version` and
//! `anthropic-beta` are accepted and ignored; the client key may come as `x-api-key`
//! ([`crate::layers::auth`]).
//!
//! [`AnthropicErrorsLayer`] sits in the outer stack and re-shapes the errors that layers above
//! the endpoint answer for these paths (auth, load shedding, timeouts, body limits) the same
//! way.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use http::{header, HeaderValue, Method, Request, StatusCode};
use serde_json::Value;
use tower::{Layer, Service};

use crate::layers::body_limit::read_body;
use crate::layers::limits::prompt_estimate;
use crate::layers::BoxFuture;
use slmgate_anthropic::{
    anthropic_error_body, event_to_sse, messages_to_openai, openai_error_to_anthropic,
    openai_response_to_messages, parse_messages_request, ErrorDetail, ErrorKind, MessagesRequest,
    OpenAiToAnthropicStream, StreamEvent,
};
use slmgate_openai::chat::ChatRequest;

/// The Messages endpoint's path.
pub const MESSAGES_PATH: &str = slmgate_anthropic::MESSAGES_PATH;
/// The token-counting endpoint's path.
pub const COUNT_TOKENS_PATH: &str = "/v1/messages/count_tokens";

/// The largest JSON answer (or error body) read back from the chat pipeline for translation.
const MAX_ANSWER_BYTES: usize = 64 << 20;
/// How long reading a (non-streamed) answer of the chat pipeline may take. Its body is in
/// memory already; this only bounds the wait.
const ANSWER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Marks a response already in Anthropic's shape, so [`AnthropicErrorsLayer`] leaves it.
#[derive(Clone, Copy, Debug)]
struct AnthropicShaped;

/// An Anthropic error answer with `status`.
fn error_response(status: StatusCode, kind: ErrorKind, message: &str) -> Response {
    let mut resp = (status, axum::Json(anthropic_error_body(kind, message))).into_response();
    resp.extensions_mut().insert(AnthropicShaped);
    resp
}

/// A 400 `invalid_request_error` for a request that does not translate.
fn translate_error(e: &slmgate_anthropic::TranslateError) -> Response {
    let mut resp = (StatusCode::BAD_REQUEST, axum::Json(e.to_anthropic_body())).into_response();
    resp.extensions_mut().insert(AnthropicShaped);
    resp
}

/// Re-shapes an OpenAI-shaped error answer (the gateway's own) as Anthropic's, keeping the
/// status and headers (`Retry-After`, `x-slmgate-*`). The message is the gateway's own: the
/// forwarding step never relays a backend's error text.
async fn reshape_error(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = match tokio::time::timeout(
        ANSWER_READ_TIMEOUT,
        axum::body::to_bytes(body, MAX_ANSWER_BYTES),
    )
    .await
    {
        Ok(Ok(b)) => b,
        _ => Bytes::new(),
    };
    let status = parts.status.as_u16();
    let (_, mut value) = openai_error_to_anthropic(status, &bytes);
    if bytes.is_empty() {
        let kind = ErrorKind::from_status(status);
        let reason = parts.status.canonical_reason().unwrap_or("request failed");
        value = anthropic_error_body(kind, reason);
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.extensions.insert(AnthropicShaped);
    Response::from_parts(parts, Body::from(value.to_string()))
}

/// Serves `POST /v1/messages` with the chat pipeline it wraps.
#[derive(Clone, Copy, Debug, Default)]
pub struct MessagesLayer;

impl<S> Layer<S> for MessagesLayer {
    type Service = Messages<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Messages { inner }
    }
}

/// See [`MessagesLayer`].
#[derive(Clone, Debug)]
pub struct Messages<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for Messages<S>
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
        Box::pin(async move { Ok(messages(inner, req).await) })
    }
}

async fn messages<S>(mut inner: S, req: Request<Body>) -> Response
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    if req.method() != Method::POST {
        return error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::InvalidRequest,
            "method not allowed: use POST",
        );
    }
    let (mut head, body) = req.into_parts();
    let bytes = match read_body(&head, body).await {
        Ok(b) => b,
        Err(e) => return reshape_error(e.into_response()).await,
    };
    let request = match parse_messages_request(&bytes) {
        Ok(r) => r,
        Err(e) => return translate_error(&e),
    };
    let chat = match messages_to_openai(&request, None) {
        Ok(v) => v,
        Err(e) => return translate_error(&e),
    };
    let chat = match serde_json::to_vec(&chat) {
        Ok(v) => Bytes::from(v),
        Err(_) => {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorKind::Api,
                "the request could not be translated",
            )
        }
    };
    let stream = request.stream.unwrap_or(false);
    // `message_start` reports the prompt size before the backend's exact count arrives.
    let input_tokens = if stream {
        ChatRequest::parse(chat.clone()).map_or(0, |c| prompt_estimate(&c))
    } else {
        0
    };
    head.headers.remove(header::CONTENT_LENGTH);
    head.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let Ok(resp) = inner
        .call(Request::from_parts(head, Body::from(chat)))
        .await;
    translate_answer(resp, &request, input_tokens).await
}

/// The chat pipeline's answer as the Messages API's.
async fn translate_answer(
    resp: Response,
    request: &MessagesRequest,
    input_tokens: u64,
) -> Response {
    if !resp.status().is_success() {
        return reshape_error(resp).await;
    }
    let is_sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let (mut parts, body) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.extensions.insert(AnthropicShaped);
    if is_sse {
        let converter =
            OpenAiToAnthropicStream::new(request.model.clone()).with_input_tokens(input_tokens);
        return Response::from_parts(parts, anthropic_sse(body, converter));
    }
    let read = axum::body::to_bytes(body, MAX_ANSWER_BYTES);
    let Ok(Ok(bytes)) = tokio::time::timeout(ANSWER_READ_TIMEOUT, read).await else {
        return error_response(
            StatusCode::BAD_GATEWAY,
            ErrorKind::Api,
            "the answer could not be read",
        );
    };
    let answer = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| openai_response_to_messages(&v).ok());
    let Some(mut answer) = answer else {
        return error_response(
            StatusCode::BAD_GATEWAY,
            ErrorKind::Api,
            "the backend's answer could not be translated to the Messages API",
        );
    };
    // The name the client asked for (`auto`, an alias): `x-slmgate-route` and
    // `x-slmgate-backend` say what served it.
    answer.model.clone_from(&request.model);
    let Ok(body) = serde_json::to_vec(&answer) else {
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Api,
            "the answer could not be written",
        );
    };
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

/// The chat pipeline's OpenAI SSE body as Anthropic's event stream, translated event by
/// event (nothing is held beyond one event). The whole inner body is read, so the account
/// and limits steps see it end; a body that breaks ends the stream with an `error` event.
fn anthropic_sse(body: Body, converter: OpenAiToAnthropicStream) -> Body {
    let events = body.into_data_stream().eventsource();
    let stream = futures::stream::unfold(Some((events, converter)), |state| async move {
        let (mut events, mut converter) = state?;
        loop {
            let (out, done) = match events.next().await {
                Some(Ok(event)) => match converter.push_sse_data(&event.data) {
                    Ok(out) => (out, false),
                    // The gateway writes JSON chunks and `[DONE]` only; skip anything else.
                    Err(e) => {
                        tracing::debug!(error = %e, "skipping an untranslatable stream event");
                        continue;
                    }
                },
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "the chat stream broke");
                    let mut out = Vec::new();
                    if !converter.is_finished() {
                        out.push(StreamEvent::Error {
                            error: ErrorDetail {
                                kind: ErrorKind::Api.as_str().to_owned(),
                                message: "the stream was interrupted".to_owned(),
                            },
                        });
                    }
                    (out, true)
                }
                None => (converter.finish(), true),
            };
            if out.is_empty() {
                if done {
                    return None;
                }
                continue;
            }
            let mut buf = BytesMut::new();
            for event in &out {
                buf.extend_from_slice(event_to_sse(event).as_bytes());
            }
            let next = (!done).then_some((events, converter));
            return Some((Ok::<_, Infallible>(buf.freeze()), next));
        }
    });
    Body::from_stream(stream)
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": N}`, the gateway's own prompt-token
/// estimate of the translated request (the one its limits use). `max_tokens` may be left
/// out, as Anthropic's endpoint allows.
pub async fn count_tokens(req: Request<Body>) -> Response {
    let (head, body) = req.into_parts();
    let bytes = match read_body(&head, body).await {
        Ok(b) => b,
        Err(e) => return reshape_error(e.into_response()).await,
    };
    let mut value: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                ErrorKind::InvalidRequest,
                &format!("body: not valid JSON: {e}"),
            )
        }
    };
    if let Some(obj) = value.as_object_mut() {
        obj.entry("max_tokens").or_insert(Value::from(1));
        obj.remove("stream");
    }
    let request = match serde_json::to_vec(&value)
        .map_err(|e| slmgate_anthropic::TranslateError::invalid("body", e.to_string()))
        .and_then(|b| parse_messages_request(&b))
    {
        Ok(r) => r,
        Err(e) => return translate_error(&e),
    };
    let chat = match messages_to_openai(&request, None) {
        Ok(v) => v,
        Err(e) => return translate_error(&e),
    };
    let body = serde_json::to_vec(&chat).unwrap_or_default();
    let estimate = body.len() as u64 / 4;
    let tokens = ChatRequest::parse(Bytes::from(body)).map_or(estimate, |c| prompt_estimate(&c));
    let mut resp = axum::Json(serde_json::json!({ "input_tokens": tokens })).into_response();
    resp.extensions_mut().insert(AnthropicShaped);
    resp
}

/// Re-shapes error answers on the Messages paths that the layers above the endpoint gave in
/// OpenAI's shape (401, 413, 408, 503 from load shedding, 504 from the deadline, 404, 405).
#[derive(Clone, Copy, Debug, Default)]
pub struct AnthropicErrorsLayer;

impl<S> Layer<S> for AnthropicErrorsLayer {
    type Service = AnthropicErrors<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AnthropicErrors { inner }
    }
}

/// See [`AnthropicErrorsLayer`].
#[derive(Clone, Debug)]
pub struct AnthropicErrors<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for AnthropicErrors<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let path = req.uri().path();
        let anthropic = path == MESSAGES_PATH || path.starts_with("/v1/messages/");
        let fut = self.inner.call(req);
        if !anthropic {
            return Box::pin(fut);
        }
        Box::pin(async move {
            let Ok(resp) = fut.await;
            if resp.status().is_success() || resp.extensions().get::<AnthropicShaped>().is_some() {
                return Ok(resp);
            }
            Ok(reshape_error(resp).await)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(resp: Response) -> Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn gateway_errors_are_reshaped_keeping_status_and_headers() {
        let mut resp = slmgate_openai::error::GatewayError::Unauthorized("invalid API key".into())
            .into_response();
        resp.headers_mut()
            .insert("x-slmgate-route", HeaderValue::from_static("remote"));
        let resp = reshape_error(resp).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()["x-slmgate-route"], "remote");
        let v = body_json(resp).await;
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "authentication_error");
        assert_eq!(v["error"]["message"], "invalid API key");
    }

    #[tokio::test]
    async fn a_503_stays_503_as_overloaded_error() {
        let resp = (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"error":{"message":"busy","type":"server_error"}})),
        )
            .into_response();
        let resp = reshape_error(resp).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body_json(resp).await["error"]["type"], "overloaded_error");
    }

    #[tokio::test]
    async fn streams_translate_event_by_event() {
        let sse = concat!(
            "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n",
            "data: [DONE]\n\n",
        );
        let body = anthropic_sse(
            Body::from(sse),
            OpenAiToAnthropicStream::new("auto").with_input_tokens(2),
        );
        let text = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(text.contains("\"model\":\"auto\""), "{text}");
        assert!(text.contains("\"output_tokens\":1"), "{text}");
    }
}
