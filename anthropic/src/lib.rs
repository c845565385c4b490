//! Anthropic's Messages API as slmgate speaks it: the wire types and a pure translation layer
//! to and from OpenAI's chat completions. No IO: the gateway reads bodies and hands JSON here.
//!
//! The OpenAI side is raw JSON ([`serde_json::Value`]), because the gateway forwards raw JSON;
//! the Anthropic side is typed ([`types`]).
//!
//! Two directions, four uses:
//!
//! | Use | Request | Answer | Stream |
//! |---|---|---|---|
//! | inbound `POST /v1/messages` (Anthropic client, OpenAI-shaped gateway) | [`messages_to_openai`] | [`openai_response_to_messages`] | [`OpenAiToAnthropicStream`] |
//! | outbound `kind: anthropic` backend (OpenAI client, Anthropic backend) | [`openai_to_messages`] | [`messages_response_to_openai`] | [`AnthropicToOpenAiStream`] |
//!
//! Errors: [`TranslateError`] (a 400 either way: [`TranslateError::to_anthropic_body`],
//! [`TranslateError::to_openai_body`]); [`anthropic_error_body`] and [`ErrorKind`] for
//! Anthropic's error shape and statuses; [`openai_error_to_anthropic`] and
//! [`anthropic_error_to_openai`] re-shape a failed answer.
//!
//! # Requests
//!
//! | Anthropic | OpenAI | Notes |
//! |---|---|---|
//! | `model` | `model` | inbound: replaced by `model_override` when given |
//! | `system` (string or text blocks) | first `system` message | blocks joined with `"\n\n"`; outbound, every `system` and `developer` message (wherever it stands) becomes one system block, a single one a string |
//! | user turn, string | `user` message, string | |
//! | user turn, text blocks | `user` message, string | joined with `"\n\n"` |
//! | user turn with `image` blocks | `user` message, content parts | `base64` ⇄ `data:<type>;base64,` URL, `url` ⇄ URL |
//! | `tool_result` blocks of a user turn | `tool` messages (`tool_call_id`, text content) | inbound: placed before the turn's other content, in order; outbound: consecutive tool messages make one user turn |
//! | assistant turn, text blocks | `assistant` `content` | concatenated (`null` when only tool calls) |
//! | `tool_use` blocks (`id`, `name`, `input`) | `tool_calls` (`id`, `function.name`, `function.arguments` as JSON text) | outbound: arguments must be a JSON object (empty text is `{}`) |
//! | `tools` (`name`, `description`, `input_schema`) | `tools` (`type: function`, `parameters`) | outbound: no `parameters` gives `{"type":"object","properties":{}}` |
//! | `tool_choice` `auto` / `any` / `tool` / `none` | `auto` / `required` / `{type: function, function: {name}}` / `none` | `disable_parallel_tool_use: true` ⇄ `parallel_tool_calls: false`; inbound drops both without tools |
//! | `stop_sequences` | `stop` | outbound: a string or a list |
//! | `max_tokens` (required) | `max_tokens` | outbound: `max_completion_tokens`, else `max_tokens`, else [`DEFAULT_MAX_TOKENS`] (4096) |
//! | `temperature`, `top_p` | `temperature`, `top_p` | passed unchanged (Anthropic's temperature range is 0–1: a larger OpenAI value is the backend's to refuse) |
//! | `top_k` | — | inbound: dropped (OpenAI has none); outbound: a `top_k` extension field (vLLM) is forwarded |
//! | `metadata.user_id` | `user` | |
//! | `stream` | `stream` (+ `stream_options.include_usage: true` inbound) | |
//!
//! Refused (a [`TranslateError`] with `unsupported: true`, answered 400): outbound `n` other
//! than 1, `logprobs: true`, `response_format` other than `text` (`json_object`,
//! `json_schema`: refused rather than ignored, since ignoring it would return prose to a
//! client parsing JSON), legacy `functions` / `function_call` / `function` messages,
//! non-function tools, `input_audio` / `file` parts, non-base64 `data:` URLs; inbound
//! `document` (PDF, text) blocks, Anthropic server tools (`web_search_…`, …), unknown block
//! types, `file` image sources and images inside tool results.
//!
//! Dropped silently: inbound `thinking`, `top_k`, `cache_control`, `is_error` on tool
//! results, thinking and redacted-thinking blocks in the history, and unknown top-level
//! fields (`service_tier`, `container`, `mcp_servers`, …); outbound
//! `frequency_penalty`, `presence_penalty`, `seed`, `logit_bias`, `top_logprobs`,
//! `stream_options` (Anthropic always streams usage), `reasoning_effort`, `store`,
//! `metadata`, `modalities`, `audio`, `prediction`, message `name`s, assistant `refusal`
//! (its text is kept as content) and tools' `strict`.
//!
//! # Answers
//!
//! | Anthropic | OpenAI |
//! |---|---|
//! | `id`, `model` | `id`, `model` (`object: chat.completion`, one choice) |
//! | text blocks | `message.content`, concatenated |
//! | `tool_use` blocks | `message.tool_calls` |
//! | `stop_reason` `end_turn`, `stop_sequence`, `pause_turn` | `finish_reason` `stop` (back: `end_turn`) |
//! | `max_tokens`, `model_context_window_exceeded` | `length` (back: `max_tokens`) |
//! | `tool_use` | `tool_calls` (and `function_call`; back: `tool_use`, also when a backend says `stop` after tool calls) |
//! | `refusal` | `content_filter` (an OpenAI `refusal` text becomes a text block) |
//! | `usage.input_tokens + cache_creation_input_tokens + cache_read_input_tokens` | `usage.prompt_tokens` |
//! | `usage.cache_read_input_tokens` | `usage.prompt_tokens_details.cached_tokens` |
//! | `usage.output_tokens` | `usage.completion_tokens` (`total_tokens` = prompt + completion) |
//! | `usage.cache_creation_input_tokens` | nonstandard `usage.cache_creation_input_tokens` ([`CACHE_CREATION_KEY`], the LiteLLM convention), so usage is exact both ways |
//!
//! Dropped from answers: thinking blocks, citations, server-tool blocks, `stop_sequence`,
//! OpenAI choices after the first, `logprobs`, `reasoning_content`, `system_fingerprint`.
//! Tool-call arguments that are not a JSON object make [`openai_response_to_messages`]
//! fail (Anthropic's `input` is an object).
//!
//! # Streams
//!
//! See [`stream`]: each state machine takes one side's units (OpenAI chunk JSON, Anthropic
//! [`StreamEvent`]) and returns the other side's, with the same mappings as answers. Thinking
//! deltas, signature and citation deltas are dropped; `ping` makes nothing.
//!
//! # Wiring (for the gateway)
//!
//! Inbound `POST /v1/messages`: [`parse_messages_request`] (a failure is a 400
//! `invalid_request_error`: [`TranslateError::to_anthropic_body`]), [`messages_to_openai`],
//! then the usual chat pipeline. A JSON answer goes back through
//! [`openai_response_to_messages`]; a stream through one [`OpenAiToAnthropicStream`] per
//! request (feed every backend `data:` to [`OpenAiToAnthropicStream::push_sse_data`], write
//! every event with [`event_to_sse`], call [`OpenAiToAnthropicStream::finish`] if the body
//! ends without `[DONE]`; answer with `content-type: text/event-stream`). Gateway errors go
//! out as [`openai_error_to_anthropic`] (or [`anthropic_error_body`] with
//! [`ErrorKind::status`]).
//!
//! Outbound `kind: anthropic`: [`openai_to_messages`] (a failure is a 400 for the OpenAI
//! client: [`TranslateError::to_openai_body`]), `POST {base}`[`MESSAGES_PATH`] with headers
//! `x-api-key: <key>`, `anthropic-version:` [`ANTHROPIC_VERSION`] and
//! `content-type: application/json`. A 2xx JSON answer: [`parse_messages_response`] then
//! [`messages_response_to_openai`]; an error answer: [`anthropic_error_to_openai`]; a stream:
//! [`SseDecoder`] over the body bytes into one [`AnthropicToOpenAiStream`] (its
//! `include_usage` = the client's `stream_options.include_usage`; usage for accounting is
//! [`AnthropicToOpenAiStream::usage`] whatever the client asked), each chunk written with
//! [`chunk_to_sse`], then [`OPENAI_SSE_DONE`].
//!
//! ```
//! use slmgate_anthropic::*;
//! use serde_json::json;
//!
//! // Inbound: an Anthropic client, an OpenAI-shaped backend.
//! let req = parse_messages_request(
//!     br#"{"model":"claude-x","max_tokens":64,"stream":true,
//!          "messages":[{"role":"user","content":"Hi"}]}"#,
//! )
//! .unwrap();
//! let openai = messages_to_openai(&req, Some("gpt-4.1-mini")).unwrap();
//! assert_eq!(openai["stream_options"]["include_usage"], true);
//! let mut stream = OpenAiToAnthropicStream::new(&req.model);
//! let mut sse = String::new();
//! for data in [
//!     r#"{"id":"c1","model":"gpt-4.1-mini","choices":[{"index":0,"delta":{"content":"Hello"}}]}"#,
//!     r#"{"id":"c1","model":"gpt-4.1-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
//!     r#"{"id":"c1","model":"gpt-4.1-mini","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1}}"#,
//!     "[DONE]",
//! ] {
//!     for event in stream.push_sse_data(data).unwrap() {
//!         sse.push_str(&event_to_sse(&event));
//!     }
//! }
//! assert!(sse.starts_with("event: message_start\n"));
//! assert!(sse.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
//!
//! // Outbound: an OpenAI client, an Anthropic backend.
//! let body = openai_to_messages(&json!({
//!     "model": "claude-sonnet-4-5",
//!     "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
//! }))
//! .unwrap();
//! assert_eq!(body.max_tokens, DEFAULT_MAX_TOKENS);
//! let answer = parse_messages_response(br#"{"id":"msg_1","type":"message","role":"assistant",
//!     "model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hello"}],
//!     "stop_reason":"end_turn","usage":{"input_tokens":5,"output_tokens":1,
//!     "cache_read_input_tokens":4}}"#).unwrap();
//! let chat = messages_response_to_openai(&answer, 1_700_000_000);
//! assert_eq!(chat["usage"]["prompt_tokens"], 9);
//! assert_eq!(chat["choices"][0]["finish_reason"], "stop");
//! ```

#![warn(missing_docs)]

pub mod error;
pub mod request;
pub mod response;
pub mod stream;
pub mod types;

pub use error::{
    anthropic_error_body, anthropic_error_to_openai, error_kind_for_status,
    openai_error_to_anthropic, TranslateError,
};
pub use request::{
    messages_to_openai, openai_to_messages, parse_messages_request, BLOCK_SEPARATOR,
    DEFAULT_MAX_TOKENS,
};
pub use response::{
    finish_reason, messages_response_to_openai, openai_response_to_messages,
    parse_messages_response, stop_reason, usage_from_openai, usage_to_openai, CACHE_CREATION_KEY,
};
pub use stream::{
    chunk_to_sse, event_to_sse, event_to_sse_bytes, parse_event, AnthropicToOpenAiStream,
    OpenAiToAnthropicStream, SseDecoder, OPENAI_SSE_DONE,
};
pub use types::{
    BlockDelta, ContentBlock, DeltaUsage, ErrorBody, ErrorDetail, ErrorKind, ImageSource, Message,
    MessageContent, MessageDelta, MessagesRequest, MessagesResponse, Metadata, Role, StopReason,
    StreamEvent, SystemPrompt, Tool, ToolChoice, ToolResultContent, Usage,
};

/// The path of the Messages endpoint, inbound and outbound.
pub const MESSAGES_PATH: &str = "/v1/messages";

/// The `anthropic-version` header value sent to Anthropic backends.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
