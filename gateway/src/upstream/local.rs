//! The embedded SLM as a backend (`kind: local`): OpenAI chat requests answered in-process.
//!
//! The request's messages and sampling parameters become a
//! [`slmgate_local_model::pool::GenerateRequest`]; the worker pool's token events become an
//! OpenAI `chat.completion` or a stream of `chat.completion.chunk` SSE events. Dropping the
//! response body (the client went away) drops the generation stream, which cancels the
//! generation and frees the worker.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use http::{header, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use slmgate_local_model::generator::ChatMessage;
use slmgate_local_model::pool::{GenerateRequest, GenerationEvent, LocalPool, PoolError};
use slmgate_local_model::sampling::{FinishReason, SamplingParams};

use super::{Fallback, UpstreamClock};
use crate::telemetry;
use crate::upstream::sse::error_event;
use slmgate_openai::chat::ChatRequest;
use slmgate_openai::error::GatewayError;
use slmgate_routing::cascade::{CascadeCheck, Confidence};

/// What [`LocalBackend::chat_checked`] produced.
#[derive(Debug)]
pub enum LocalAnswer {
    /// The answer (or the stream of it).
    Answer(Response),
    /// The cascade check failed: the answer was dropped.
    Escalate(Confidence),
}

/// The embedded model behind a pool of workers.
pub struct LocalBackend {
    /// Configured backend name.
    pub name: String,
    /// The model name reported in responses.
    pub model_name: String,
    /// The worker pool.
    pub pool: LocalPool,
    /// What a request leaves out.
    pub defaults: SamplingDefaults,
}

/// Sampling for what a request leaves out (`backends[].max_tokens`, `temperature`,
/// `repetition_penalty`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingDefaults {
    /// `max_tokens` when the client sends none.
    pub max_tokens: usize,
    /// `temperature` when the client sends none.
    pub temperature: f64,
    /// Repetition penalty when the client sends neither it nor `frequency_penalty`.
    pub repetition_penalty: Option<f32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// Converts OpenAI messages into plain role/content pairs. Image or audio parts cannot be
/// read by a text model: that is a 400, not a silent drop.
fn messages(req: &ChatRequest) -> Result<Vec<ChatMessage>, GatewayError> {
    let msgs = req.messages()?;
    let mut out = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.into_iter().enumerate() {
        if let Some(kind) = m.media.first() {
            return Err(GatewayError::bad_param(
                "messages",
                format!("messages[{i}] has a `{kind}` part; the local model reads text only"),
            ));
        }
        let role = match m.role.as_str() {
            "" => {
                return Err(GatewayError::bad_param(
                    "messages",
                    format!("messages[{i}] has no `role`"),
                ))
            }
            "developer" => "system".to_string(),
            _ => m.role,
        };
        out.push(ChatMessage {
            role,
            content: m.text,
        });
    }
    Ok(out)
}

/// The sampling parameters of `req`, with `defaults` for what it leaves out.
pub fn sampling(
    req: &ChatRequest,
    defaults: &SamplingDefaults,
) -> Result<SamplingParams, GatewayError> {
    if let Some(n) = req.field::<u32>("n")? {
        if n != 1 {
            return Err(GatewayError::bad_param(
                "n",
                "the local model supports only `n: 1`",
            ));
        }
    }
    let temperature = req
        .field::<f64>("temperature")?
        .unwrap_or(defaults.temperature);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(GatewayError::bad_param(
            "temperature",
            "`temperature` must be between 0 and 2",
        ));
    }
    let top_p = req.field::<f64>("top_p")?;
    if top_p.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
        return Err(GatewayError::bad_param(
            "top_p",
            "`top_p` must be between 0 and 1",
        ));
    }
    let max_tokens = req
        .field::<usize>("max_completion_tokens")?
        .or(req.field::<usize>("max_tokens")?)
        .unwrap_or(defaults.max_tokens);
    if max_tokens == 0 {
        return Err(GatewayError::bad_param(
            "max_tokens",
            "`max_tokens` must be at least 1",
        ));
    }
    let stop = match req.field::<Stop>("stop")? {
        None => vec![],
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    }
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect::<Vec<_>>();
    if stop.len() > 4 {
        return Err(GatewayError::bad_param("stop", "at most 4 stop sequences"));
    }
    let frequency_penalty = req.field::<f32>("frequency_penalty")?;
    let repetition_penalty = match (req.field::<f32>("repetition_penalty")?, frequency_penalty) {
        (Some(p), _) => Some(p),
        (None, Some(f)) => (f > 0.0).then_some(1.0 + f / 2.0),
        (None, None) => defaults.repetition_penalty,
    };
    Ok(SamplingParams {
        temperature,
        top_p,
        top_k: req.field::<usize>("top_k")?,
        seed: req.field::<u64>("seed")?,
        repetition_penalty,
        max_tokens,
        stop,
        logprobs: req.field::<bool>("logprobs")?.unwrap_or(false),
    })
}

fn finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        _ => "stop",
    }
}

fn pool_error(name: &str, e: PoolError) -> Fallback {
    let msg = format!("local backend `{name}`: {e}");
    Fallback(match e {
        // No worker free for this request: the gateway's capacity, not the caller's pace
        // (503, `server_error`), and worth retrying shortly.
        PoolError::QueueFull | PoolError::QueueTimeout => GatewayError::Overloaded {
            message: msg,
            retry_after: std::time::Duration::from_secs(1),
        },
        PoolError::ContextTooLong { .. } | PoolError::InvalidRequest(_) => {
            GatewayError::bad_param("messages", msg)
        }
        #[allow(unreachable_patterns)]
        _ => GatewayError::Unavailable(msg),
    })
}

impl LocalBackend {
    /// Answers a chat request with the local model.
    pub async fn chat(
        self: &Arc<Self>,
        req: &ChatRequest,
        clock: &UpstreamClock,
    ) -> Result<Response, Fallback> {
        match self.chat_checked(req, clock, None).await? {
            LocalAnswer::Answer(r) => Ok(r),
            // Unreachable without a check; answer something sensible regardless.
            LocalAnswer::Escalate(c) => Err(Fallback(GatewayError::Unavailable(format!(
                "local answer not confident ({c})"
            )))),
        }
    }

    /// Answers a chat request with the local model; with a cascade `check`, the first tokens
    /// are generated (and held back) first, and an unsure answer is dropped — cancelling the
    /// generation — in favour of [`LocalAnswer::Escalate`].
    pub async fn chat_checked(
        self: &Arc<Self>,
        req: &ChatRequest,
        clock: &UpstreamClock,
        check: Option<CascadeCheck>,
    ) -> Result<LocalAnswer, Fallback> {
        // The forwarding service runs this inside the `local.generate` span (when exporting).
        let span = telemetry::current_model_span();
        let messages = messages(req).map_err(Fallback)?;
        let params = sampling(req, &self.defaults).map_err(Fallback)?;
        let want_logprobs = params.logprobs;
        let started = Instant::now();
        let stream = self
            .pool
            .generate(GenerateRequest { messages, params })
            .await
            .map_err(|e| pool_error(&self.name, e));
        clock.add(started.elapsed());
        let mut stream = stream?;
        // Cascade: generate the first tokens, check them, and either give up or replay them.
        let mut held = Vec::new();
        if let Some(check) = check {
            let started = Instant::now();
            let mut logprobs = Vec::with_capacity(check.tokens);
            while logprobs.len() < check.tokens {
                match stream.next().await {
                    Some(ev) => {
                        let end = !matches!(ev, Ok(GenerationEvent::Token { .. }));
                        if let Ok(GenerationEvent::Token { logprob, .. }) = &ev {
                            logprobs.push(*logprob);
                        }
                        held.push(ev);
                        if end {
                            break;
                        }
                    }
                    None => break,
                }
            }
            clock.add(started.elapsed());
            let failed = held.iter().any(std::result::Result::is_err);
            let confidence = check.check(&logprobs);
            if !failed && !confidence.confident {
                // Dropping the stream cancels the generation and frees the worker.
                return Ok(LocalAnswer::Escalate(confidence));
            }
        }
        let stream = futures::stream::iter(held).chain(stream);
        let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
        let created = crate::runtime::unix_now();
        if req.stream {
            return Ok(LocalAnswer::Answer(self.stream_response(
                stream,
                id,
                created,
                req.client_wants_usage,
                want_logprobs,
                span,
            )));
        }
        // Non-streaming: collect, then answer once.
        let started = Instant::now();
        let mut text = String::new();
        let mut logprobs = Vec::new();
        let mut stream = stream;
        let mut done = None;
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(GenerationEvent::Token {
                    text: t, logprob, ..
                }) => {
                    if want_logprobs && !t.is_empty() {
                        logprobs.push(json!({"token": t, "logprob": logprob, "bytes": t.as_bytes(), "top_logprobs": []}));
                    }
                    text.push_str(&t);
                }
                Ok(GenerationEvent::Done {
                    finish_reason,
                    prompt_tokens,
                    completion_tokens,
                }) => done = Some((finish_reason, prompt_tokens, completion_tokens)),
                Err(e) => {
                    clock.add(started.elapsed());
                    return Err(Fallback(GatewayError::Upstream(format!(
                        "local backend `{}`: generation failed: {e}",
                        self.name
                    ))));
                }
            }
        }
        clock.add(started.elapsed());
        let Some((finish, pt, ct)) = done else {
            return Err(Fallback(GatewayError::Upstream(format!(
                "local backend `{}`: generation ended without finishing",
                self.name
            ))));
        };
        telemetry::record_answer(
            &span,
            Some(&self.model_name),
            Some(&id),
            Some((pt as u64, ct as u64)),
            &[finish_str(finish)],
        );
        let body = json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": self.model_name,
            "system_fingerprint": "slmgate-local",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": if want_logprobs { json!({"content": logprobs}) } else { Value::Null },
                "finish_reason": finish_str(finish),
            }],
            "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
        });
        let mut resp = (StatusCode::OK, body.to_string()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(LocalAnswer::Answer(resp))
    }

    fn stream_response(
        self: &Arc<Self>,
        stream: impl futures::Stream<
                Item = Result<GenerationEvent, slmgate_local_model::generator::LocalModelError>,
            > + Send
            + 'static,
        id: String,
        created: u64,
        include_usage: bool,
        want_logprobs: bool,
        span: tracing::Span,
    ) -> Response {
        // What the span needs at the end of the stream (when exporting).
        let traced =
            (!span.is_disabled()).then(|| (span.clone(), self.model_name.clone(), id.clone()));
        let model = self.model_name.clone();
        let chunk = move |delta: Value, finish: Option<&str>, logprobs: Option<Value>| -> Bytes {
            let v = json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": "slmgate-local",
                "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
            });
            Bytes::from(format!("data: {v}\n\n"))
        };
        let first = chunk(json!({"role": "assistant", "content": ""}), None, None);
        let usage_chunk = {
            let id = format!("chatcmpl-usage-{created}");
            let model = self.model_name.clone();
            move |pt: usize, ct: usize| -> Bytes {
                let v = json!({
                    "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [],
                    "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
                });
                Bytes::from(format!("data: {v}\n\n"))
            }
        };
        let name = self.name.clone();
        let events = stream.flat_map(move |ev| {
            let out: Vec<Result<Bytes, std::io::Error>> = match ev {
                Ok(GenerationEvent::Token { text, logprob, .. }) => {
                    if text.is_empty() {
                        vec![]
                    } else {
                        let lp = want_logprobs.then(|| {
                            json!({"content": [{"token": text, "logprob": logprob, "bytes": text.as_bytes(), "top_logprobs": []}]})
                        });
                        vec![Ok(chunk(json!({"content": text}), None, lp))]
                    }
                }
                Ok(GenerationEvent::Done {
                    finish_reason,
                    prompt_tokens,
                    completion_tokens,
                }) => {
                    if let Some((span, model, id)) = &traced {
                        telemetry::record_answer(
                            span,
                            Some(model),
                            Some(id),
                            Some((prompt_tokens as u64, completion_tokens as u64)),
                            &[finish_str(finish_reason)],
                        );
                    }
                    let mut v = vec![Ok(chunk(json!({}), Some(finish_str(finish_reason)), None))];
                    if include_usage {
                        v.push(Ok(usage_chunk(prompt_tokens, completion_tokens)));
                    }
                    v.push(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
                    v
                }
                Err(e) => {
                    if let Some((span, ..)) = &traced {
                        telemetry::record_error(span, "local_error");
                    }
                    vec![Ok(error_event(
                        &format!("local backend `{name}`: generation failed: {e}"),
                        "local_error",
                    ))]
                }
            };
            futures::stream::iter(out)
        });
        let body = futures::stream::once(async move { Ok(first) }).chain(events);
        // The span ends with the stream (its usage is known only then).
        let mut resp = if span.is_disabled() {
            Response::new(Body::from_stream(body))
        } else {
            Response::new(Body::from_stream(telemetry::InSpan::new(body, span)))
        };
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        resp
    }
}
