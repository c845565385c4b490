//! Streamed answers: OpenAI `chat.completion.chunk`s ⇄ Anthropic stream events.
//!
//! - [`OpenAiToAnthropicStream`] (inbound `POST /v1/messages` with `stream: true`, an
//!   OpenAI-shaped backend): feed each chunk's JSON, write each returned event with
//!   [`event_to_sse`]; call [`OpenAiToAnthropicStream::finish`] at `[DONE]` or at the end of
//!   the body.
//! - [`AnthropicToOpenAiStream`] (outbound `kind: anthropic` backend, an OpenAI client):
//!   decode the backend's body with [`SseDecoder`], feed each event, write each returned
//!   chunk with [`chunk_to_sse`], then [`OPENAI_SSE_DONE`].

use bytes::{Buf, Bytes, BytesMut};
use serde_json::{json, Map, Value};

use crate::error::TranslateError;
use crate::response::{finish_reason, stop_reason, usage_from_openai, usage_to_openai};
use crate::types::{
    BlockDelta, ContentBlock, DeltaUsage, ErrorDetail, ErrorKind, MessageDelta, MessagesResponse,
    Role, StopReason, StreamEvent, Usage,
};

/// The SSE frame of an Anthropic event: `event: <type>\ndata: <json>\n\n`.
pub fn event_to_sse(event: &StreamEvent) -> String {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned());
    format!("event: {}\ndata: {data}\n\n", event.name())
}

/// [`event_to_sse`] as bytes, ready for a body stream.
pub fn event_to_sse_bytes(event: &StreamEvent) -> Bytes {
    Bytes::from(event_to_sse(event))
}

/// The SSE frame of an OpenAI chunk: `data: <json>\n\n`.
pub fn chunk_to_sse(chunk: &Value) -> String {
    format!("data: {chunk}\n\n")
}

/// The frame that ends an OpenAI stream.
pub const OPENAI_SSE_DONE: &str = "data: [DONE]\n\n";

// ---------------------------------------------------------------------------------------------
// OpenAI chunks → Anthropic events.
// ---------------------------------------------------------------------------------------------

/// Turns an OpenAI chunk stream into Anthropic's event sequence: `message_start` (at the
/// first chunk), `content_block_start` / `ping` (once) / `content_block_delta` /
/// `content_block_stop` for the text and for each tool call (`input_json_delta` carrying the
/// argument fragments as they come), then at [`finish`](Self::finish) `message_delta` (stop
/// reason, usage from the chunk that carried it) and `message_stop`.
///
/// Only choice 0 is read. `message_start` reports the input tokens given to
/// [`with_input_tokens`](Self::with_input_tokens) (else 0) since OpenAI reports usage last;
/// the final `message_delta` carries the exact input, cache and output counts (ask the
/// backend for them with `stream_options.include_usage`, which
/// [`crate::messages_to_openai`] sets). A chunk with an `error` object becomes an `error`
/// event that ends the stream.
#[derive(Debug, Clone, Default)]
pub struct OpenAiToAnthropicStream {
    model: String,
    input_tokens: u64,
    started: bool,
    pinged: bool,
    finished: bool,
    next_index: usize,
    open: Option<(usize, bool)>,
    tools: Vec<(u64, usize)>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
}

impl OpenAiToAnthropicStream {
    /// A stream that reports `model` (the name the client asked for; empty: the chunks'
    /// `model`).
    pub fn new(model: impl Into<String>) -> Self {
        OpenAiToAnthropicStream {
            model: model.into(),
            ..Self::default()
        }
    }

    /// Report `n` input tokens in `message_start` (the gateway's own count of the prompt);
    /// the final `message_delta` still carries the backend's exact count.
    #[must_use]
    pub fn with_input_tokens(mut self, n: u64) -> Self {
        self.input_tokens = n;
        self
    }

    /// The usage reported by the backend so far (Anthropic-shaped), for accounting.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// True once the stream has ended ([`finish`](Self::finish) or an error chunk).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Feed the `data:` of one SSE frame of the backend: `[DONE]` finishes the stream, JSON
    /// is a chunk ([`push`](Self::push)), anything else is an error.
    pub fn push_sse_data(&mut self, data: &str) -> Result<Vec<StreamEvent>, TranslateError> {
        let data = data.trim();
        if data == "[DONE]" {
            return Ok(self.finish());
        }
        let chunk: Value = serde_json::from_str(data)
            .map_err(|e| TranslateError::invalid("stream", format!("a chunk is not JSON: {e}")))?;
        Ok(self.push(&chunk))
    }

    /// Feed one `chat.completion.chunk`; returns the events it makes.
    pub fn push(&mut self, chunk: &Value) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.start(chunk, &mut out);
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .or_else(|| error.as_str())
                .unwrap_or("the backend failed");
            out.push(StreamEvent::Error {
                error: ErrorDetail {
                    kind: ErrorKind::Api.as_str().to_owned(),
                    message: message.to_owned(),
                },
            });
            self.finished = true;
            return out;
        }
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| {
                c.iter()
                    .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
            });
        if let Some(choice) = choice {
            let delta = choice.get("delta");
            if let Some(text) = delta.and_then(|d| d.get("content")).and_then(Value::as_str) {
                if !text.is_empty() {
                    let index = self.text_block(&mut out);
                    out.push(StreamEvent::ContentBlockDelta {
                        index,
                        delta: BlockDelta::TextDelta {
                            text: text.to_owned(),
                        },
                    });
                }
            }
            if let Some(calls) = delta
                .and_then(|d| d.get("tool_calls"))
                .and_then(Value::as_array)
            {
                for (k, call) in calls.iter().enumerate() {
                    self.tool_call_delta(k, call, &mut out);
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish_reason = Some(reason.to_owned());
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage_from_openai(usage));
        }
        out
    }

    /// End the stream (at `[DONE]` or the end of the body): closes the open block, then
    /// `message_delta` and `message_stop`. Later calls return nothing.
    pub fn finish(&mut self) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.start(&Value::Null, &mut out);
        self.close(&mut out);
        let mut stop = stop_reason(self.finish_reason.as_deref());
        if !self.tools.is_empty() && stop == StopReason::EndTurn {
            stop = StopReason::ToolUse;
        }
        let usage = self.usage.unwrap_or_default();
        out.push(StreamEvent::MessageDelta {
            delta: MessageDelta {
                stop_reason: Some(stop),
                stop_sequence: None,
            },
            usage: DeltaUsage {
                output_tokens: usage.output_tokens,
                input_tokens: self.usage.map(|u| u.input_tokens),
                cache_creation_input_tokens: usage.cache_creation_input_tokens,
                cache_read_input_tokens: usage.cache_read_input_tokens,
            },
        });
        out.push(StreamEvent::MessageStop);
        self.finished = true;
        out
    }

    fn start(&mut self, chunk: &Value, out: &mut Vec<StreamEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        let id = chunk
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("msg_slmgate");
        let model = if self.model.is_empty() {
            chunk
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        } else {
            self.model.clone()
        };
        out.push(StreamEvent::MessageStart {
            message: MessagesResponse {
                id: id.to_owned(),
                object_type: "message".to_owned(),
                role: Role::Assistant,
                content: Vec::new(),
                model,
                stop_reason: None,
                stop_sequence: None,
                usage: Usage {
                    input_tokens: self.input_tokens,
                    ..Usage::default()
                },
            },
        });
    }

    fn close(&mut self, out: &mut Vec<StreamEvent>) {
        if let Some((index, _)) = self.open.take() {
            out.push(StreamEvent::ContentBlockStop { index });
        }
    }

    fn open_block(&mut self, block: ContentBlock, is_text: bool, out: &mut Vec<StreamEvent>) {
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((index, is_text));
        out.push(StreamEvent::ContentBlockStart {
            index,
            content_block: block,
        });
        if !self.pinged {
            self.pinged = true;
            out.push(StreamEvent::Ping);
        }
    }

    /// The index of the open text block, opening one if needed.
    fn text_block(&mut self, out: &mut Vec<StreamEvent>) -> usize {
        match self.open {
            Some((index, true)) => index,
            _ => {
                self.open_block(ContentBlock::text(""), true, out);
                self.next_index - 1
            }
        }
    }

    fn tool_call_delta(&mut self, k: usize, call: &Value, out: &mut Vec<StreamEvent>) {
        let openai_index = call
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(k as u64);
        let index = match self.tools.iter().find(|(i, _)| *i == openai_index) {
            Some(&(_, index)) => index,
            None => {
                let index = self.next_index;
                let id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map_or_else(|| format!("toolu_slmgate_{index}"), str::to_owned);
                let name = call
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                self.open_block(
                    ContentBlock::tool_use(id, name, Value::Object(Map::new())),
                    false,
                    out,
                );
                self.tools.push((openai_index, index));
                index
            }
        };
        if let Some(args) = call.pointer("/function/arguments").and_then(Value::as_str) {
            if !args.is_empty() {
                // OpenAI backends stream tool calls one after the other; a fragment for an
                // earlier call keeps its block index (SDKs accumulate by index).
                out.push(StreamEvent::ContentBlockDelta {
                    index,
                    delta: BlockDelta::InputJsonDelta {
                        partial_json: args.to_owned(),
                    },
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Anthropic events → OpenAI chunks.
// ---------------------------------------------------------------------------------------------

/// Turns Anthropic's event stream into OpenAI chunks: a role chunk (at `message_start`),
/// `content` deltas for text, `tool_calls` deltas (index, id, type and name at the block's
/// start, then argument fragments), a chunk with `finish_reason` (at `message_delta`) and,
/// when the client asked for `stream_options.include_usage`, a usage chunk with no choices
/// (at `message_stop`). Thinking deltas, citations and `ping` make no chunk; an `error`
/// event becomes an OpenAI error chunk `{"error":{…}}` and ends the stream.
#[derive(Debug, Clone)]
pub struct AnthropicToOpenAiStream {
    created: i64,
    include_usage: bool,
    model_override: Option<String>,
    id: String,
    model: String,
    role_sent: bool,
    tools: Vec<(usize, usize)>,
    stop: Option<StopReason>,
    usage: Option<Usage>,
    finish_sent: bool,
    done: bool,
}

impl AnthropicToOpenAiStream {
    /// A stream whose chunks say `created` (Unix seconds) and end with a usage chunk when
    /// `include_usage`.
    pub fn new(created: i64, include_usage: bool) -> Self {
        AnthropicToOpenAiStream {
            created,
            include_usage,
            model_override: None,
            id: "chatcmpl-slmgate".to_owned(),
            model: String::new(),
            role_sent: false,
            tools: Vec::new(),
            stop: None,
            usage: None,
            finish_sent: false,
            done: false,
        }
    }

    /// Report `model` in the chunks instead of the backend's model name.
    #[must_use]
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model_override = Some(model.into());
        self
    }

    /// The usage so far (Anthropic-shaped): input and cache counts from `message_start`,
    /// output (and any final input counts) from `message_delta`.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// [`usage`](Self::usage) OpenAI-shaped (see [`usage_to_openai`]).
    pub fn openai_usage(&self) -> Option<Value> {
        self.usage.as_ref().map(usage_to_openai)
    }

    /// The finish reason, once `message_delta` has said it.
    pub fn finish_reason(&self) -> Option<&'static str> {
        self.stop.map(|s| finish_reason(Some(s)))
    }

    /// True once the stream has ended (`message_stop`, an error, or
    /// [`finish`](Self::finish)).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feed one event; returns the chunks it makes.
    pub fn push(&mut self, event: &StreamEvent) -> Vec<Value> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        match event {
            StreamEvent::MessageStart { message } => {
                self.id.clone_from(&message.id);
                self.model = self
                    .model_override
                    .clone()
                    .unwrap_or_else(|| message.model.clone());
                self.usage = Some(message.usage);
                self.role(&mut out);
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                ContentBlock::Text { text, .. } => self.text(text, &mut out),
                ContentBlock::ToolUse {
                    id, name, input, ..
                } => {
                    self.role(&mut out);
                    let tool_index = self.tools.len();
                    self.tools.push((*index, tool_index));
                    let arguments = match input {
                        Value::Object(m) if m.is_empty() => String::new(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    out.push(self.chunk(
                        json!({ "tool_calls": [{
                            "index": tool_index,
                            "id": id,
                            "type": "function",
                            "function": { "name": name, "arguments": arguments },
                        }] }),
                        None,
                    ));
                }
                _ => {}
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => self.text(text, &mut out),
                BlockDelta::InputJsonDelta { partial_json } => {
                    let tool = self.tools.iter().find(|(i, _)| i == index).map(|&(_, t)| t);
                    if let Some(tool_index) = tool.filter(|_| !partial_json.is_empty()) {
                        out.push(self.chunk(
                            json!({ "tool_calls": [{
                                "index": tool_index,
                                "function": { "arguments": partial_json },
                            }] }),
                            None,
                        ));
                    }
                }
                _ => {}
            },
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(stop) = delta.stop_reason {
                    self.stop = Some(stop);
                }
                let u = self.usage.get_or_insert_with(Usage::default);
                u.output_tokens = usage.output_tokens;
                if let Some(n) = usage.input_tokens {
                    u.input_tokens = n;
                }
                if let Some(n) = usage.cache_creation_input_tokens {
                    u.cache_creation_input_tokens = Some(n);
                }
                if let Some(n) = usage.cache_read_input_tokens {
                    u.cache_read_input_tokens = Some(n);
                }
                if self.stop.is_some() {
                    self.finish_chunk(&mut out);
                }
            }
            StreamEvent::MessageStop => out = self.finish(),
            StreamEvent::Error { error } => {
                out.push(json!({
                    "error": { "message": error.message, "type": error.kind, "param": null, "code": null }
                }));
                self.done = true;
            }
            StreamEvent::Ping | StreamEvent::ContentBlockStop { .. } | StreamEvent::Unknown => {}
        }
        out
    }

    /// End the stream (at `message_stop`, or when the backend's body ends without one): the
    /// finish chunk if not yet sent, then the usage chunk when asked for. Later calls return
    /// nothing. The caller then writes [`OPENAI_SSE_DONE`].
    pub fn finish(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        self.role(&mut out);
        self.finish_chunk(&mut out);
        if self.include_usage {
            let usage = usage_to_openai(&self.usage.unwrap_or_default());
            out.push(json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage,
            }));
        }
        self.done = true;
        out
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
        })
    }

    fn role(&mut self, out: &mut Vec<Value>) {
        if !self.role_sent {
            self.role_sent = true;
            if self.model.is_empty() {
                self.model = self.model_override.clone().unwrap_or_default();
            }
            out.push(self.chunk(json!({ "role": "assistant", "content": "" }), None));
        }
    }

    fn text(&mut self, text: &str, out: &mut Vec<Value>) {
        self.role(out);
        if !text.is_empty() {
            out.push(self.chunk(json!({ "content": text }), None));
        }
    }

    fn finish_chunk(&mut self, out: &mut Vec<Value>) {
        if !self.finish_sent {
            self.finish_sent = true;
            let reason = finish_reason(self.stop);
            out.push(self.chunk(json!({}), Some(reason)));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SSE decoding of an Anthropic body.
// ---------------------------------------------------------------------------------------------

/// Splits an Anthropic backend's SSE body into [`StreamEvent`]s, whatever the chunking of
/// the bytes. The JSON `type` decides the event (the `event:` line is redundant and
/// ignored); comments are skipped. Lines end with `\n` or `\r\n`.
#[derive(Debug, Clone, Default)]
pub struct SseDecoder {
    buf: BytesMut,
    data: String,
    has_data: bool,
}

impl SseDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed bytes; returns the events completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Result<StreamEvent, TranslateError>> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let line = self.buf.split_to(end + 1);
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            self.line(&String::from_utf8_lossy(line), &mut out);
        }
        out
    }

    /// The end of the body: the last event, when it lacked its blank line.
    pub fn finish(&mut self) -> Vec<Result<StreamEvent, TranslateError>> {
        let mut out = Vec::new();
        if self.buf.has_remaining() {
            let rest = self.buf.split();
            self.line(&String::from_utf8_lossy(&rest), &mut out);
        }
        self.line("", &mut out);
        out
    }

    fn line(&mut self, line: &str, out: &mut Vec<Result<StreamEvent, TranslateError>>) {
        if line.is_empty() {
            if self.has_data {
                self.has_data = false;
                let data = std::mem::take(&mut self.data);
                out.push(parse_event(&data));
            }
        } else if let Some(value) = line.strip_prefix("data:") {
            if self.has_data {
                self.data.push('\n');
            }
            self.has_data = true;
            self.data.push_str(value.strip_prefix(' ').unwrap_or(value));
        }
    }
}

/// Parse the `data:` of one Anthropic SSE frame.
pub fn parse_event(data: &str) -> Result<StreamEvent, TranslateError> {
    serde_json::from_str(data)
        .map_err(|e| TranslateError::invalid("stream", format!("not an Anthropic event: {e}")))
}
