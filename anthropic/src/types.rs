//! Anthropic's Messages API wire types: the request, the answer, content blocks, tools, usage,
//! stream events and the error shape.
//!
//! The types follow <https://docs.anthropic.com/en/api/messages> and
//! <https://docs.anthropic.com/en/api/messages-streaming>. Fields this crate does not translate
//! are either kept opaque ([`serde_json::Value`]) or ignored when deserializing; the crate
//! documentation lists which.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The body of `POST /v1/messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagesRequest {
    /// The model name.
    pub model: String,
    /// The conversation: alternating (or consecutive, which Anthropic merges) user and
    /// assistant turns.
    pub messages: Vec<Message>,
    /// The maximum number of tokens to generate (required by Anthropic).
    pub max_tokens: u64,
    /// The system prompt: a string or text blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemPrompt>,
    /// Custom sequences that stop generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    /// Sampling temperature (0 to 1 on Anthropic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Top-k sampling (no OpenAI equivalent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u64>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// How the model may use the tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Request metadata (the end user's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// Stream the answer as server-sent events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Extended thinking configuration: accepted and kept, never translated (OpenAI has no
    /// equivalent); dropped by [`crate::messages_to_openai`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<Value>,
}

/// `metadata` of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Metadata {
    /// An opaque id of the end user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// The `system` prompt: a string or a list of text blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SystemPrompt {
    /// A plain string.
    Text(String),
    /// Text blocks (other block types are refused when translating).
    Blocks(Vec<ContentBlock>),
}

/// The role of a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The user (also carries tool results).
    User,
    /// The model (also carries tool calls).
    Assistant,
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: MessageContent,
}

/// The content of a turn: a string (one text block) or blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Shorthand for one text block.
    Text(String),
    /// Content blocks.
    Blocks(Vec<ContentBlock>),
}

impl MessageContent {
    /// The content as blocks (a string becomes one text block).
    pub fn blocks(&self) -> Vec<ContentBlock> {
        match self {
            MessageContent::Text(t) => vec![ContentBlock::text(t.clone())],
            MessageContent::Blocks(b) => b.clone(),
        }
    }
}

/// A content block of a message, an answer or a system prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    /// Text.
    Text {
        /// The text.
        text: String,
        /// Prompt-caching marker (dropped when translating to OpenAI).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
        /// Citations of an answer's text (dropped when translating to OpenAI).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        citations: Option<Value>,
    },
    /// An image.
    Image {
        /// Where the image comes from.
        source: ImageSource,
        /// Prompt-caching marker (dropped when translating to OpenAI).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    /// A tool call by the model.
    ToolUse {
        /// The call id (`toolu_…`), echoed by the matching tool result.
        id: String,
        /// The tool name.
        name: String,
        /// The arguments, a JSON object.
        input: Value,
        /// Prompt-caching marker (dropped when translating to OpenAI).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    /// The result of a tool call, in a user turn.
    ToolResult {
        /// The id of the [`ContentBlock::ToolUse`] it answers.
        tool_use_id: String,
        /// The result: a string or text blocks.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<ToolResultContent>,
        /// Whether the tool failed (no OpenAI equivalent: dropped).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
        /// Prompt-caching marker (dropped when translating to OpenAI).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    /// A document (PDF, plain text): refused when translating to OpenAI.
    Document {
        /// The document source, kept opaque.
        source: Value,
    },
    /// Extended-thinking output: dropped when translating to OpenAI.
    Thinking {
        /// The reasoning text.
        thinking: String,
        /// Anthropic's signature over it.
        #[serde(default)]
        signature: String,
    },
    /// Redacted extended-thinking output: dropped when translating to OpenAI.
    RedactedThinking {
        /// Encrypted reasoning.
        data: String,
    },
    /// Any other block type (server tools, search results, …): refused in requests, dropped
    /// in answers.
    #[serde(other)]
    Unknown,
}

impl ContentBlock {
    /// A text block without cache control or citations.
    pub fn text(text: impl Into<String>) -> Self {
        ContentBlock::Text {
            text: text.into(),
            cache_control: None,
            citations: None,
        }
    }

    /// A tool-use block without cache control.
    pub fn tool_use(id: impl Into<String>, name: impl Into<String>, input: Value) -> Self {
        ContentBlock::ToolUse {
            id: id.into(),
            name: name.into(),
            input,
            cache_control: None,
        }
    }

    /// The block's `type` tag.
    pub fn type_name(&self) -> &'static str {
        match self {
            ContentBlock::Text { .. } => "text",
            ContentBlock::Image { .. } => "image",
            ContentBlock::ToolUse { .. } => "tool_use",
            ContentBlock::ToolResult { .. } => "tool_result",
            ContentBlock::Document { .. } => "document",
            ContentBlock::Thinking { .. } => "thinking",
            ContentBlock::RedactedThinking { .. } => "redacted_thinking",
            ContentBlock::Unknown => "unknown",
        }
    }
}

/// The source of an image block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource {
    /// Inline base64 data.
    Base64 {
        /// The MIME type (`image/png`, `image/jpeg`, `image/gif`, `image/webp`).
        media_type: String,
        /// The base64-encoded bytes.
        data: String,
    },
    /// An image Anthropic fetches.
    Url {
        /// The URL.
        url: String,
    },
    /// Any other source (the Files API): refused when translating.
    #[serde(other)]
    Unknown,
}

/// The content of a tool result: a string or blocks (text, image).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolResultContent {
    /// A string.
    Text(String),
    /// Blocks (only text blocks translate to OpenAI).
    Blocks(Vec<ContentBlock>),
}

/// A tool definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// The tool name.
    pub name: String,
    /// What the tool does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON schema of the input (required for client tools; server tools such as
    /// `web_search_20250305` have none and are refused when translating).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub input_schema: Value,
    /// `custom` or absent for client tools; a versioned type for Anthropic's server tools.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub tool_type: Option<String>,
    /// Prompt-caching marker (dropped when translating to OpenAI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<Value>,
}

/// How the model may use the tools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides.
    Auto {
        /// At most one tool call per answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    /// The model must call some tool.
    Any {
        /// At most one tool call per answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    /// The model must call this tool.
    Tool {
        /// The tool name.
        name: String,
        /// At most one tool call per answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    /// The model must not call tools.
    None,
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// A natural end.
    EndTurn,
    /// `max_tokens` reached.
    MaxTokens,
    /// One of `stop_sequences` generated.
    StopSequence,
    /// The model called tools.
    ToolUse,
    /// A long-running server-tool turn paused.
    PauseTurn,
    /// The model refused (safety).
    Refusal,
    /// The context window is full.
    ModelContextWindowExceeded,
    /// A stop reason this crate does not know (translated like `end_turn`).
    #[serde(other)]
    Other,
}

/// A complete (non-streamed) answer; also the `message` of a `message_start` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagesResponse {
    /// The message id (`msg_…`).
    pub id: String,
    /// Always `message`.
    #[serde(rename = "type", default = "message_type")]
    pub object_type: String,
    /// Always [`Role::Assistant`].
    pub role: Role,
    /// The answer's blocks.
    #[serde(default)]
    pub content: Vec<ContentBlock>,
    /// The model that answered.
    pub model: String,
    /// Why it stopped (`null` in `message_start`).
    #[serde(default)]
    pub stop_reason: Option<StopReason>,
    /// The stop sequence generated, if any.
    #[serde(default)]
    pub stop_sequence: Option<String>,
    /// Token usage.
    pub usage: Usage,
}

fn message_type() -> String {
    "message".to_owned()
}

/// Token usage.
///
/// Anthropic's `input_tokens` excludes cached tokens: the whole prompt is
/// `input_tokens + cache_creation_input_tokens + cache_read_input_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Usage {
    /// Prompt tokens neither written to nor read from the cache.
    #[serde(default)]
    pub input_tokens: u64,
    /// Generated tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Prompt tokens written to the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    /// Prompt tokens read from the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
}

impl Usage {
    /// All prompt tokens: input plus cache writes plus cache reads (OpenAI's `prompt_tokens`).
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens
            + self.cache_creation_input_tokens.unwrap_or(0)
            + self.cache_read_input_tokens.unwrap_or(0)
    }
}

/// The `usage` of a `message_delta` event: cumulative output tokens, and (in recent API
/// versions) the final input and cache counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DeltaUsage {
    /// Generated tokens so far (cumulative).
    #[serde(default)]
    pub output_tokens: u64,
    /// Prompt tokens neither written to nor read from the cache, when reported here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    /// Prompt tokens written to the cache, when reported here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    /// Prompt tokens read from the cache, when reported here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
}

/// The `delta` of a `message_delta` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MessageDelta {
    /// Why the model stopped.
    #[serde(default)]
    pub stop_reason: Option<StopReason>,
    /// The stop sequence generated, if any.
    #[serde(default)]
    pub stop_sequence: Option<String>,
}

/// The `delta` of a `content_block_delta` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta {
    /// More text of a text block.
    TextDelta {
        /// The fragment.
        text: String,
    },
    /// More of a tool-use block's input, a fragment of JSON text.
    InputJsonDelta {
        /// The fragment.
        partial_json: String,
    },
    /// More of a thinking block (dropped when translating).
    ThinkingDelta {
        /// The fragment.
        thinking: String,
    },
    /// The signature of a thinking block (dropped when translating).
    SignatureDelta {
        /// The signature.
        signature: String,
    },
    /// Any other delta (citations, …): dropped when translating.
    #[serde(other)]
    Unknown,
}

/// One server-sent event of a streamed answer, tagged by `type` (also the SSE `event:` name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// The answer starts: a message with empty content and no stop reason.
    MessageStart {
        /// The message so far.
        message: MessagesResponse,
    },
    /// A content block starts.
    ContentBlockStart {
        /// The block's index in the answer's content.
        index: usize,
        /// The block, empty (`text: ""`, `input: {}`).
        content_block: ContentBlock,
    },
    /// Keep-alive.
    Ping,
    /// More of a content block.
    ContentBlockDelta {
        /// The block's index.
        index: usize,
        /// The fragment.
        delta: BlockDelta,
    },
    /// A content block ends.
    ContentBlockStop {
        /// The block's index.
        index: usize,
    },
    /// Top-level changes: the stop reason and the final usage.
    MessageDelta {
        /// Stop reason and sequence.
        delta: MessageDelta,
        /// Cumulative usage.
        #[serde(default)]
        usage: DeltaUsage,
    },
    /// The answer is complete.
    MessageStop,
    /// An error in the middle of the stream.
    Error {
        /// What went wrong.
        error: ErrorDetail,
    },
    /// Any other event type (Anthropic may add some): ignored when translating.
    #[serde(other)]
    Unknown,
}

impl StreamEvent {
    /// The event's `type`, which is also its SSE `event:` name.
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::MessageStart { .. } => "message_start",
            StreamEvent::ContentBlockStart { .. } => "content_block_start",
            StreamEvent::Ping => "ping",
            StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            StreamEvent::ContentBlockStop { .. } => "content_block_stop",
            StreamEvent::MessageDelta { .. } => "message_delta",
            StreamEvent::MessageStop => "message_stop",
            StreamEvent::Error { .. } => "error",
            StreamEvent::Unknown => "unknown",
        }
    }
}

/// The category of an Anthropic error, with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// 400: the request is malformed or unsupported.
    #[serde(rename = "invalid_request_error")]
    InvalidRequest,
    /// 401: bad or missing API key.
    #[serde(rename = "authentication_error")]
    Authentication,
    /// 403: the key may not use this resource.
    #[serde(rename = "permission_error")]
    Permission,
    /// 404: unknown resource (model, path).
    #[serde(rename = "not_found_error")]
    NotFound,
    /// 413: the request body is too large.
    #[serde(rename = "request_too_large")]
    RequestTooLarge,
    /// 429: rate or budget limit reached.
    #[serde(rename = "rate_limit_error")]
    RateLimit,
    /// 500: an internal error.
    #[serde(rename = "api_error")]
    Api,
    /// 529: the service is overloaded.
    #[serde(rename = "overloaded_error")]
    Overloaded,
}

impl ErrorKind {
    /// Every kind, in status order.
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::InvalidRequest,
        ErrorKind::Authentication,
        ErrorKind::Permission,
        ErrorKind::NotFound,
        ErrorKind::RequestTooLarge,
        ErrorKind::RateLimit,
        ErrorKind::Api,
        ErrorKind::Overloaded,
    ];

    /// The HTTP status Anthropic answers with.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::Authentication => 401,
            ErrorKind::Permission => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::RequestTooLarge => 413,
            ErrorKind::RateLimit => 429,
            ErrorKind::Api => 500,
            ErrorKind::Overloaded => 529,
        }
    }

    /// The `error.type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::Permission => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::RequestTooLarge => "request_too_large",
            ErrorKind::RateLimit => "rate_limit_error",
            ErrorKind::Api => "api_error",
            ErrorKind::Overloaded => "overloaded_error",
        }
    }

    /// The kind for an HTTP status (the gateway's own errors, a backend's answers): 400, 401,
    /// 403, 404, 413, 429 and 529 map to their kinds, 503 to `overloaded_error`, any other
    /// 4xx to `invalid_request_error` and anything else to `api_error`.
    pub fn from_status(status: u16) -> Self {
        match status {
            401 => ErrorKind::Authentication,
            403 => ErrorKind::Permission,
            404 => ErrorKind::NotFound,
            413 => ErrorKind::RequestTooLarge,
            429 => ErrorKind::RateLimit,
            503 | 529 => ErrorKind::Overloaded,
            400..=499 => ErrorKind::InvalidRequest,
            _ => ErrorKind::Api,
        }
    }

    /// The kind named by an `error.type` string, if it is one of Anthropic's.
    pub fn from_type(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// The `error` object of Anthropic's error shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The category: one of [`ErrorKind`]'s strings (kept as a string so unknown categories
    /// parse).
    #[serde(rename = "type")]
    pub kind: String,
    /// A human-readable message.
    #[serde(default)]
    pub message: String,
}

/// Anthropic's error body: `{"type":"error","error":{"type":…,"message":…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Always `error`.
    #[serde(rename = "type")]
    pub object_type: String,
    /// What went wrong.
    pub error: ErrorDetail,
}

impl ErrorBody {
    /// The body for `kind` and `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorBody {
            object_type: "error".to_owned(),
            error: ErrorDetail {
                kind: kind.as_str().to_owned(),
                message: message.into(),
            },
        }
    }
}
