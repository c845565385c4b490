//! Server-sent-events pass-through for streamed completions.
//!
//! Upstream bytes are split into events by `eventsource-stream` and each event is written to
//! the client the moment it is complete: nothing is buffered beyond one event. On the way the
//! gateway reads the usage chunk (which it asked for with `stream_options.include_usage`) and
//! drops it again when the client did not ask for it itself, so naive clients that index
//! `choices[0]` of every chunk never see the extra chunk.
//!
//! Dropping the returned body (the client went away) drops the upstream response, which
//! closes the upstream connection: the upstream stops generating.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use http::{header, HeaderValue, StatusCode};
use serde_json::json;

use crate::api::{extract_usage, Usage};
use crate::telemetry::{self, InSpan, StreamTrace};

/// Logs the end of a stream once, however it ends.
struct StreamLog {
    backend: String,
    usage: Option<Usage>,
    chunks: u64,
    finished: bool,
    /// The model-call span, when exporting: ends with the stream, carrying its usage.
    trace: Option<StreamTrace>,
}

impl Drop for StreamLog {
    fn drop(&mut self) {
        if let Some(t) = &self.trace {
            t.end(self.usage.as_ref(), self.finished);
        }
        if self.finished {
            tracing::debug!(backend = %self.backend, chunks = self.chunks, usage = ?self.usage, "stream finished");
        } else {
            tracing::info!(backend = %self.backend, chunks = self.chunks, "stream ended early (client gone or upstream cut)");
        }
    }
}

/// An SSE error event in OpenAI's shape, sent when a stream breaks after it started.
pub fn error_event(message: &str, code: &str) -> Bytes {
    let v = json!({"error": {"message": message, "type": "upstream_error", "param": null, "code": code}});
    Bytes::from(format!("data: {v}\n\n"))
}

/// True when a chunk carries nothing but usage (`choices` empty).
fn is_usage_only(data: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct C<'a> {
        #[serde(borrow)]
        choices: Option<Vec<&'a serde_json::value::RawValue>>,
    }
    serde_json::from_str::<C>(data)
        .ok()
        .and_then(|c| c.choices)
        .is_none_or(|c| c.is_empty())
}

/// Turns an upstream SSE response into the client's streaming response.
pub fn passthrough(
    resp: reqwest::Response,
    idle_timeout: Duration,
    client_wants_usage: bool,
    backend: String,
) -> Response {
    let events = resp.bytes_stream().eventsource();
    // `passthrough` runs inside the forwarding service's model-call span.
    let trace = StreamTrace::new(telemetry::current_model_span());
    let span = trace.as_ref().map(|t| t.span().clone());
    let body = relay(events, idle_timeout, client_wants_usage, backend, trace);
    let mut out = match span {
        Some(span) => Response::new(Body::from_stream(InSpan::new(body, span))),
        None => Response::new(Body::from_stream(body)),
    };
    *out.status_mut() = StatusCode::OK;
    let h = out.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    out
}

fn relay<S, E>(
    events: S,
    idle_timeout: Duration,
    client_wants_usage: bool,
    backend: String,
    trace: Option<StreamTrace>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send
where
    S: Stream<Item = Result<eventsource_stream::Event, E>> + Send + Unpin + 'static,
    E: std::fmt::Display + Send,
{
    let log = StreamLog {
        backend,
        usage: None,
        chunks: 0,
        finished: false,
        trace,
    };
    futures::stream::unfold(
        (events, log, false),
        move |(mut events, mut log, ended)| async move {
            if ended {
                return None;
            }
            loop {
                let next = match tokio::time::timeout(idle_timeout, events.next()).await {
                    Err(_) => {
                        let msg = format!(
                            "backend `{}` sent nothing for {:?}; stream aborted",
                            log.backend, idle_timeout
                        );
                        return Some((
                            Ok(error_event(&msg, "upstream_timeout")),
                            (events, log, true),
                        ));
                    }
                    Ok(n) => n,
                };
                match next {
                    None => {
                        // Upstream closed. Without `[DONE]` the answer may be truncated.
                        if !log.finished {
                            let msg = format!("backend `{}` closed the stream early", log.backend);
                            return Some((
                                Ok(error_event(&msg, "upstream_error")),
                                (events, log, true),
                            ));
                        }
                        return None;
                    }
                    Some(Err(e)) => {
                        let msg = format!("backend `{}` stream broke: {e}", log.backend);
                        return Some((
                            Ok(error_event(&msg, "upstream_error")),
                            (events, log, true),
                        ));
                    }
                    Some(Ok(ev)) => {
                        if ev.data == "[DONE]" {
                            log.finished = true;
                            return Some((
                                Ok(Bytes::from_static(b"data: [DONE]\n\n")),
                                (events, log, false),
                            ));
                        }
                        if let Some(t) = &mut log.trace {
                            t.observe(&ev.data);
                        }
                        if ev.data.contains("\"usage\"") {
                            if let Some(u) = extract_usage(ev.data.as_bytes()) {
                                log.usage = Some(u);
                                if !client_wants_usage && is_usage_only(&ev.data) {
                                    continue;
                                }
                            }
                        }
                        log.chunks += 1;
                        let mut out = String::with_capacity(ev.data.len() + 24);
                        if !ev.event.is_empty() && ev.event != "message" {
                            out.push_str("event: ");
                            out.push_str(&ev.event);
                            out.push('\n');
                        }
                        for line in ev.data.split('\n') {
                            out.push_str("data: ");
                            out.push_str(line);
                            out.push('\n');
                        }
                        out.push('\n');
                        return Some((Ok(Bytes::from(out)), (events, log, false)));
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(input: &'static str, wants_usage: bool) -> String {
        let src = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(
            input.as_bytes(),
        ))]);
        let s = relay(
            src.eventsource(),
            Duration::from_secs(5),
            wants_usage,
            "b".into(),
            None,
        );
        let parts: Vec<_> = s.collect().await;
        parts
            .into_iter()
            .map(|r| String::from_utf8(r.unwrap().to_vec()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn relays_events_and_hides_unrequested_usage() {
        let input = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\ndata: [DONE]\n\n";
        let out = run(input, false).await;
        assert_eq!(
            out,
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n"
        );
        let out = run(input, true).await;
        assert!(out.contains("\"usage\""));
    }

    #[tokio::test]
    async fn truncated_stream_ends_with_error_event() {
        let out = run("data: {\"choices\":[]}\n\n", false).await;
        assert!(out.ends_with("\n\n"));
        assert!(out.contains("closed the stream early"), "{out}");
    }
}
