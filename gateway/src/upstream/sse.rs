//! Server-sent-events pass-through for streamed completions.
//!
//! Upstream bytes are decoded as UTF-8 (an invalid byte becomes U+FFFD at once, so it cannot
//! hold the rest of the stream back), split into events by `eventsource-stream`, and each
//! event is written to the client the moment it is complete: nothing is buffered beyond one
//! event. Only `data:` events carrying a JSON object (and the final `[DONE]`) are passed on;
//! foreign event types, comments and non-JSON `data:` lines are dropped. On the way the
//! gateway reads the usage chunk (which it asked for with `stream_options.include_usage`) and
//! drops it again when the client did not ask for it itself, so naive clients that index
//! `choices[0]` of every chunk never see the extra chunk.
//!
//! **Before the first token** ([`open`]) nothing has reached the client: the events so far
//! (the role chunk) are held, and a stream that breaks, idles past the timeout, closes or
//! sends an error event is a failed attempt like a 5xx, retried and then handed to the next
//! target. **After it**, a failure ends the stream with an error event in OpenAI's shape,
//! `code: "stream_incomplete"`, then `data: [DONE]`, so clients see a well-formed end; the
//! usage record says `stream_incomplete`. An upstream's own error event is never relayed (it
//! may quote secrets): its text is logged at debug level, masked.
//!
//! Dropping the returned body (the client went away) drops the upstream response, which
//! closes the upstream connection: the upstream stops generating.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use http::{header, HeaderValue, StatusCode};
use serde_json::json;

use super::redact::Secrets;
use crate::layers::account::carries_token;
use crate::telemetry::{self, InSpan, StreamTrace};
use slmgate_openai::chat::{extract_usage, Usage};
use slmgate_openai::error::GatewayError;

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

/// The `error.code` of the event that ends a stream broken after its first token.
pub const STREAM_INCOMPLETE: &str = "stream_incomplete";

/// An SSE error event in OpenAI's shape, sent when a stream breaks after it started.
pub fn error_event(message: &str, code: &str) -> Bytes {
    let v = json!({"error": {"message": message, "type": "upstream_error", "param": null, "code": code}});
    Bytes::from(format!("data: {v}\n\n"))
}

const DONE: &[u8] = b"data: [DONE]\n\n";

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

/// What one event read from upstream means for the client.
enum Next {
    /// One event to write; `token` when it carries generated output.
    Event { bytes: Bytes, token: bool },
    /// Nothing to write (a dropped or hidden event).
    Skip,
    /// `[DONE]`.
    Done,
    /// The stream failed; why, in the gateway's own words (never upstream text).
    Failed(String),
}

/// Reads a stream's events, one [`Next`] at a time.
struct Reader<S> {
    events: S,
    idle_timeout: Duration,
    client_wants_usage: bool,
    secrets: Arc<Secrets>,
    log: StreamLog,
}

impl<S, E> Reader<S>
where
    S: Stream<Item = Result<eventsource_stream::Event, E>> + Send + Unpin + 'static,
    E: std::fmt::Display + Send,
{
    async fn next(&mut self) -> Next {
        let ev = match tokio::time::timeout(self.idle_timeout, self.events.next()).await {
            Err(_) => return Next::Failed(format!("sent nothing for {:?}", self.idle_timeout)),
            Ok(None) => return Next::Failed("closed the stream before `[DONE]`".into()),
            Ok(Some(Err(e))) => return Next::Failed(format!("stream broke: {e}")),
            Ok(Some(Ok(ev))) => ev,
        };
        if !ev.event.is_empty() && ev.event != "message" {
            tracing::debug!(backend = %self.log.backend, event = %ev.event, "dropped a foreign stream event");
            return Next::Skip;
        }
        if ev.data == "[DONE]" {
            self.log.finished = true;
            return Next::Done;
        }
        // One parse checks the event is a JSON object and finds an upstream error in it.
        #[derive(serde::Deserialize)]
        struct Probe {
            #[serde(default)]
            error: Option<serde::de::IgnoredAny>,
        }
        let probe = if ev.data.trim_start().starts_with('{') {
            serde_json::from_str::<Probe>(&ev.data).ok()
        } else {
            None
        };
        let Some(probe) = probe else {
            tracing::debug!(backend = %self.log.backend, "dropped a stream event that is not a JSON object");
            return Next::Skip;
        };
        if probe.error.is_some() {
            if tracing::enabled!(tracing::Level::DEBUG) {
                tracing::debug!(backend = %self.log.backend, event = %self.secrets.redact(&ev.data), "upstream error event");
            }
            return Next::Failed("sent an error event".into());
        }
        if let Some(t) = &mut self.log.trace {
            t.observe(&ev.data);
        }
        if ev.data.contains("\"usage\"") {
            if let Some(u) = extract_usage(ev.data.as_bytes()) {
                self.log.usage = Some(u);
                if !self.client_wants_usage && is_usage_only(&ev.data) {
                    return Next::Skip;
                }
            }
        }
        self.log.chunks += 1;
        let token = carries_token(&ev.data);
        let mut out = String::with_capacity(ev.data.len() + 16);
        for line in ev.data.split('\n') {
            out.push_str("data: ");
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
        Next::Event {
            bytes: Bytes::from(out),
            token,
        }
    }
}

/// Turns an upstream SSE response into the client's streaming response, once the stream has
/// produced its first token (or ended cleanly without one). A stream that fails before that
/// is an error: nothing was sent, so the caller may retry or fall back.
pub async fn open(
    resp: reqwest::Response,
    idle_timeout: Duration,
    client_wants_usage: bool,
    backend: String,
    secrets: Arc<Secrets>,
) -> Result<Response, GatewayError> {
    let bytes = lossy_utf8(bounded_events(resp.bytes_stream(), MAX_EVENT_BYTES));
    open_bytes(bytes, idle_timeout, client_wants_usage, backend, secrets).await
}

/// [`open`] for an Anthropic Messages stream (`kind: anthropic`): the body is translated to
/// OpenAI chunks as it arrives (see [`anthropic_to_openai_sse`]), then relayed with the same
/// checks. The usage chunk is always made, and hidden again when the client did not ask
/// for it, as with OpenAI backends.
pub async fn open_anthropic(
    resp: reqwest::Response,
    idle_timeout: Duration,
    client_wants_usage: bool,
    backend: String,
    secrets: Arc<Secrets>,
) -> Result<Response, GatewayError> {
    let bytes = Box::pin(anthropic_to_openai_sse(
        bounded_events(resp.bytes_stream(), MAX_EVENT_BYTES),
        backend.clone(),
    ));
    open_bytes(bytes, idle_timeout, client_wants_usage, backend, secrets).await
}

/// Translates an Anthropic SSE body to OpenAI's: every event through one
/// [`slmgate_anthropic::AnthropicToOpenAiStream`] (with its usage chunk), `data: [DONE]` after
/// `message_stop`. An Anthropic `error` event becomes an OpenAI error chunk (which the relay
/// treats as a failed stream, never relaying its text); an event that is not Anthropic JSON
/// is dropped; a body that ends without `message_stop` ends without `[DONE]` (a broken
/// stream).
pub fn anthropic_to_openai_sse<S, E>(
    stream: S,
    backend: String,
) -> impl Stream<Item = Result<Bytes, E>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Send + 'static,
{
    use slmgate_anthropic::{AnthropicToOpenAiStream, SseDecoder, StreamEvent};
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    let state = (
        SseDecoder::new(),
        AnthropicToOpenAiStream::new(created, true),
        false,
    );
    stream
        .map(Some)
        .chain(futures::stream::once(futures::future::ready(None)))
        .scan(state, move |(decoder, translator, ended), item| {
            let events = match item {
                Some(Ok(chunk)) => decoder.push(&chunk),
                Some(Err(e)) => return futures::future::ready(Some(Some(Err(e)))),
                None => decoder.finish(),
            };
            let mut out = String::new();
            for event in events {
                let event = match event {
                    Ok(ev) => ev,
                    Err(e) => {
                        tracing::debug!(backend = %backend, error = %e, "dropped a stream event that is not an Anthropic event");
                        continue;
                    }
                };
                if *ended {
                    continue;
                }
                for chunk in translator.push(&event) {
                    out.push_str(&slmgate_anthropic::chunk_to_sse(&chunk));
                }
                if matches!(event, StreamEvent::MessageStop) {
                    out.push_str(slmgate_anthropic::OPENAI_SSE_DONE);
                }
                *ended |= translator.is_done();
            }
            let item = (!out.is_empty()).then(|| Ok(Bytes::from(out)));
            futures::future::ready(Some(item))
        })
        .filter_map(futures::future::ready)
}

/// [`open`] over a stream of OpenAI SSE bytes.
async fn open_bytes<S, E>(
    bytes: S,
    idle_timeout: Duration,
    client_wants_usage: bool,
    backend: String,
    secrets: Arc<Secrets>,
) -> Result<Response, GatewayError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let events = bytes.eventsource();
    // `open` runs inside the forwarding service's model-call span.
    let trace = StreamTrace::new(telemetry::current_model_span());
    let span = trace.as_ref().map(|t| t.span().clone());
    let body = start(
        events,
        idle_timeout,
        client_wants_usage,
        backend,
        secrets,
        trace,
    )
    .await?;
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
    Ok(out)
}

/// Reads events up to the first token (see [`open`]), then relays the rest.
async fn start<S, E>(
    events: S,
    idle_timeout: Duration,
    client_wants_usage: bool,
    backend: String,
    secrets: Arc<Secrets>,
    trace: Option<StreamTrace>,
) -> Result<impl Stream<Item = Result<Bytes, std::io::Error>> + Send, GatewayError>
where
    S: Stream<Item = Result<eventsource_stream::Event, E>> + Send + Unpin + 'static,
    E: std::fmt::Display + Send,
{
    let mut reader = Reader {
        events,
        idle_timeout,
        client_wants_usage,
        secrets,
        log: StreamLog {
            backend,
            usage: None,
            chunks: 0,
            finished: false,
            trace,
        },
    };
    let mut held: Vec<Bytes> = Vec::new();
    let mut ended = false;
    loop {
        match reader.next().await {
            Next::Event { bytes, token } => {
                held.push(bytes);
                if token {
                    break;
                }
            }
            Next::Skip => {}
            Next::Done => {
                // A complete answer without a token (an empty reply): nothing to fall back for.
                held.push(Bytes::from_static(DONE));
                ended = true;
                break;
            }
            Next::Failed(why) => {
                return Err(GatewayError::Upstream(format!(
                    "backend `{}` {why} before its first token",
                    reader.log.backend
                )));
            }
        }
    }
    let held = futures::stream::iter(held.into_iter().map(Ok));
    let rest = futures::stream::unfold((reader, ended), |(mut reader, ended)| async move {
        if ended {
            return None;
        }
        loop {
            match reader.next().await {
                Next::Event { bytes, .. } => return Some((Ok(bytes), (reader, false))),
                Next::Skip => {}
                // The end: nothing after `[DONE]` is for the client.
                Next::Done => return Some((Ok(Bytes::from_static(DONE)), (reader, true))),
                Next::Failed(why) => {
                    tracing::warn!(backend = %reader.log.backend, %why, "stream broke after its first token");
                    let msg = format!(
                        "backend `{}` {why}; the answer is incomplete",
                        reader.log.backend
                    );
                    let mut end = error_event(&msg, STREAM_INCOMPLETE).to_vec();
                    end.extend_from_slice(DONE);
                    return Some((Ok(Bytes::from(end)), (reader, true)));
                }
            }
        }
    });
    Ok(held.chain(rest))
}

/// The largest SSE event read from an upstream (a chat chunk is a few hundred bytes): the
/// event parser buffers an event until its blank line, so a hostile or broken upstream must
/// not send one without end.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// A failed read of an upstream stream.
#[derive(Debug)]
pub enum ReadError<E> {
    /// The transport failed.
    Transport(E),
    /// An event grew past the limit before its blank line.
    EventTooLarge(usize),
}

impl<E: std::fmt::Display> std::fmt::Display for ReadError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Transport(e) => e.fmt(f),
            ReadError::EventTooLarge(n) => write!(f, "an event is larger than {n} bytes"),
        }
    }
}

/// Passes `stream` through, failing once an event (the bytes between blank lines, line ends
/// and `\r` not counted) passes `limit` bytes.
pub fn bounded_events<S, E>(
    stream: S,
    limit: usize,
) -> impl Stream<Item = Result<Bytes, ReadError<E>>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Send + 'static,
{
    // (bytes of the current event, bytes of the current line, failed)
    stream.scan(
        (0usize, 0usize, false),
        move |(since, line, failed), item| {
            if *failed {
                return futures::future::ready(None);
            }
            let out = match item {
                Err(e) => Err(ReadError::Transport(e)),
                Ok(chunk) => {
                    // Line by line (memchr): a line with nothing but an optional `\r` ends the
                    // event.
                    let mut over = false;
                    let mut start = 0;
                    for end in
                        memchr::memchr_iter(b'\n', &chunk).chain(std::iter::once(chunk.len()))
                    {
                        let seg = &chunk[start..end];
                        let content = seg.len() - usize::from(seg.last() == Some(&b'\r'));
                        *line += content;
                        *since += content;
                        over |= *since > limit;
                        if end < chunk.len() {
                            if *line == 0 {
                                *since = 0;
                            }
                            *line = 0;
                        }
                        start = end + 1;
                    }
                    if over {
                        *failed = true;
                        Err(ReadError::EventTooLarge(limit))
                    } else {
                        Ok(chunk)
                    }
                }
            };
            futures::future::ready(Some(out))
        },
    )
}

/// `stream` with invalid UTF-8 replaced by U+FFFD as the bytes arrive. Only an incomplete
/// sequence at the end of a chunk (at most 3 bytes) waits for the next chunk; a chunk that
/// is valid as it is passes through without a copy.
pub fn lossy_utf8<S, E>(stream: S) -> impl Stream<Item = Result<Bytes, E>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Send + 'static,
{
    let carry: Vec<u8> = Vec::new();
    stream
        .map(Some)
        .chain(futures::stream::once(futures::future::ready(None)))
        .scan(carry, |carry, item| {
            let out = match item {
                Some(Ok(chunk)) => Some(Ok(decode(carry, chunk))),
                Some(Err(e)) => Some(Err(e)),
                // The end: an incomplete sequence left over is invalid too.
                None if !carry.is_empty() => {
                    carry.clear();
                    Some(Ok(Bytes::from("\u{FFFD}")))
                }
                None => None,
            };
            futures::future::ready(Some(out))
        })
        .filter_map(futures::future::ready)
}

/// The valid UTF-8 of `carry` + `chunk`, invalid bytes replaced; an incomplete sequence at
/// the end stays in `carry`.
fn decode(carry: &mut Vec<u8>, chunk: Bytes) -> Bytes {
    if carry.is_empty() && std::str::from_utf8(&chunk).is_ok() {
        return chunk;
    }
    carry.extend_from_slice(&chunk);
    let mut out = String::with_capacity(carry.len() + 3);
    let mut rest: &[u8] = carry;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                rest = &[];
                break;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                out.push_str(&String::from_utf8_lossy(valid));
                match e.error_len() {
                    Some(n) => {
                        out.push('\u{FFFD}');
                        rest = &after[n..];
                    }
                    None => {
                        rest = after;
                        break;
                    }
                }
            }
        }
    }
    let keep = rest.to_vec();
    *carry = keep;
    Bytes::from(out)
}

#[cfg(test)]
mod tests {

    /// The translated text of an Anthropic body split into `pieces`.
    async fn translated(pieces: &[&str]) -> String {
        let input: Vec<Result<Bytes, std::convert::Infallible>> = pieces
            .iter()
            .map(|p| Ok(Bytes::from(p.to_string())))
            .collect();
        let out: Vec<_> = anthropic_to_openai_sse(futures::stream::iter(input), "b".into())
            .collect()
            .await;
        out.into_iter()
            .map(|r| String::from_utf8(r.unwrap_or_default().to_vec()).unwrap_or_default())
            .collect()
    }

    #[tokio::test]
    async fn anthropic_streams_end_with_done_only_after_message_stop() {
        let start = r#"data: {"type":"message_start","message":{"id":"m","type":"message","role":"assistant","model":"c","content":[],"usage":{"input_tokens":2,"output_tokens":1}}}"#;
        let delta = r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#;
        // Split mid-line, message_stop without its blank line: still complete.
        let full = format!(
            "{start}\n\n{delta}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}"
        );
        let (a, b) = full.split_at(40);
        let out = translated(&[a, b]).await;
        assert!(out.contains(r#""content":"Hi""#), "{out}");
        assert!(out.contains(r#""prompt_tokens":2"#), "{out}");
        assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
        // Cut before message_stop: no [DONE] (the relay calls it a broken stream).
        let out = translated(&[&format!("{start}\n\n{delta}\n\n")]).await;
        assert!(out.contains("Hi") && !out.contains("[DONE]"), "{out}");
        // An error event becomes an OpenAI error chunk; nothing after it.
        let err =
            r#"data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let out = translated(&[&format!("{start}\n\n{err}\n\n{delta}\n\n")]).await;
        assert!(out.contains(r#"{"error":"#) && !out.contains("Hi"), "{out}");
        // Garbage is dropped.
        let out = translated(&["data: not json\n\n"]).await;
        assert!(out.is_empty(), "{out}");
    }
    use super::*;

    fn bounded(chunks: Vec<&'static [u8]>, limit: usize) -> Vec<Result<usize, String>> {
        let src = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))),
        );
        futures::executor::block_on(
            bounded_events(src, limit)
                .map(|r| r.map(|b| b.len()).map_err(|e| e.to_string()))
                .collect(),
        )
    }

    #[test]
    fn an_event_is_bounded_between_blank_lines() {
        // Blank lines (LF or CRLF, also split across chunks) start a new event.
        let ok = bounded(
            vec![b"data: 12345\n", b"\ndata: 12345\r\n", b"\r\ndata: 1"],
            11,
        );
        assert!(ok.iter().all(Result::is_ok), "{ok:?}");
        // One event past the limit fails, and nothing follows the failure.
        let cut = bounded(vec![b"data: 12345\n", b"data: 6\n\n", b"data: 1\n\n"], 11);
        assert_eq!(cut.len(), 2, "{cut:?}");
        assert!(cut[1]
            .as_ref()
            .unwrap_err()
            .contains("larger than 11 bytes"));
    }

    async fn run_chunks(chunks: Vec<&'static [u8]>, wants_usage: bool) -> Result<String, String> {
        let src = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))),
        );
        let s = start(
            lossy_utf8(src).eventsource(),
            Duration::from_secs(5),
            wants_usage,
            "b".into(),
            Arc::new(Secrets::new(["sk-secret"])),
            None,
        )
        .await
        .map_err(|e| e.to_string())?;
        let parts: Vec<_> = s.collect().await;
        Ok(parts
            .into_iter()
            .map(|r| String::from_utf8(r.unwrap().to_vec()).unwrap())
            .collect())
    }

    async fn run(input: &'static str, wants_usage: bool) -> Result<String, String> {
        run_chunks(vec![input.as_bytes()], wants_usage).await
    }

    #[tokio::test]
    async fn relays_events_and_hides_unrequested_usage() {
        let input = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\ndata: [DONE]\n\n";
        let out = run(input, false).await.unwrap();
        assert_eq!(
            out,
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n"
        );
        let out = run(input, true).await.unwrap();
        assert!(out.contains("\"usage\""));
    }

    #[tokio::test]
    async fn a_stream_failing_before_its_first_token_is_an_error() {
        let role = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n";
        let e = run(role, false).await.unwrap_err();
        assert!(e.contains("before its first token"), "{e}");
        let e = run_chunks(
            vec![
                role.as_bytes(),
                b"data: {\"error\":{\"message\":\"key sk-secret\"}}\n\n",
            ],
            false,
        )
        .await
        .unwrap_err();
        assert!(e.contains("error event") && !e.contains("sk-secret"), "{e}");
    }

    #[tokio::test]
    async fn a_stream_broken_after_its_first_token_ends_well_formed() {
        let out = run(
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
            false,
        )
        .await
        .unwrap();
        assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
        assert!(out.contains("\"code\":\"stream_incomplete\""), "{out}");
        assert!(out.contains("closed the stream"), "{out}");
    }

    #[tokio::test]
    async fn foreign_events_and_non_json_lines_are_dropped() {
        let out = run(
            "event: ping\ndata: {}\n\n: comment\n\ndata: not json\n\ndata: [1]\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n",
            false,
        )
        .await
        .unwrap();
        assert_eq!(
            out,
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n"
        );
    }

    #[tokio::test]
    async fn an_invalid_byte_does_not_hold_the_stream_back() {
        let out = run_chunks(
            vec![
                b"data: {\"choices\":[{\"delta\":{\"content\":\"a\xff\"}}]}\n\n",
                b"data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\ndata: [DONE]\n\n",
            ],
            false,
        )
        .await
        .unwrap();
        assert!(out.contains("a\u{FFFD}") && out.contains("\"b\""), "{out}");
        assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
    }

    #[test]
    fn decoding_keeps_split_characters_and_replaces_bad_bytes() {
        let mut carry = Vec::new();
        // "é" is 0xC3 0xA9, split across two chunks.
        assert_eq!(&decode(&mut carry, Bytes::from_static(b"x\xc3"))[..], b"x");
        assert_eq!(carry, b"\xc3");
        assert_eq!(decode(&mut carry, Bytes::from_static(b"\xa9y")), "éy");
        assert_eq!(
            decode(&mut carry, Bytes::from_static(b"a\xffb\xfe")),
            "a\u{FFFD}b\u{FFFD}"
        );
        assert!(carry.is_empty());
    }
}
