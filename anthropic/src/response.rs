//! Complete (non-streamed) answers: Anthropic message ⇄ OpenAI chat completion, and usage.

use serde_json::{json, Map, Value};

use crate::error::TranslateError;
use crate::request::parse_arguments;
use crate::types::{ContentBlock, MessagesResponse, Role, StopReason, Usage};

/// The nonstandard key of OpenAI-shaped `usage` carrying Anthropic's cache writes (the
/// LiteLLM convention): [`usage_to_openai`] sets it when there were cache writes and
/// [`usage_from_openai`] reads it, so usage survives both directions exactly.
pub const CACHE_CREATION_KEY: &str = "cache_creation_input_tokens";

/// Parse an Anthropic backend's JSON answer.
pub fn parse_messages_response(body: &[u8]) -> Result<MessagesResponse, TranslateError> {
    serde_json::from_slice(body)
        .map_err(|e| TranslateError::invalid("body", format!("not a valid Messages answer: {e}")))
}

/// OpenAI's `finish_reason` for an Anthropic stop reason: `end_turn`, `stop_sequence`,
/// `pause_turn` (and none) → `stop`; `max_tokens`, `model_context_window_exceeded` →
/// `length`; `tool_use` → `tool_calls`; `refusal` → `content_filter`.
pub fn finish_reason(stop: Option<StopReason>) -> &'static str {
    match stop {
        Some(StopReason::MaxTokens | StopReason::ModelContextWindowExceeded) => "length",
        Some(StopReason::ToolUse) => "tool_calls",
        Some(StopReason::Refusal) => "content_filter",
        Some(
            StopReason::EndTurn
            | StopReason::StopSequence
            | StopReason::PauseTurn
            | StopReason::Other,
        )
        | None => "stop",
    }
}

/// Anthropic's stop reason for an OpenAI `finish_reason`: `length` → `max_tokens`,
/// `tool_calls`/`function_call` → `tool_use`, `content_filter` → `refusal`, anything else
/// (`stop`, none) → `end_turn` (OpenAI does not say whether a stop sequence matched).
pub fn stop_reason(finish: Option<&str>) -> StopReason {
    match finish {
        Some("length") => StopReason::MaxTokens,
        Some("tool_calls" | "function_call") => StopReason::ToolUse,
        Some("content_filter") => StopReason::Refusal,
        _ => StopReason::EndTurn,
    }
}

/// OpenAI's `usage` for Anthropic's: `prompt_tokens` = input + cache writes + cache reads,
/// `completion_tokens` = output, `prompt_tokens_details.cached_tokens` = cache reads, and
/// [`CACHE_CREATION_KEY`] = cache writes when there were any.
pub fn usage_to_openai(usage: &Usage) -> Value {
    let prompt = usage.prompt_tokens();
    let mut out = json!({
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
        "prompt_tokens_details": { "cached_tokens": usage.cache_read_input_tokens.unwrap_or(0) },
    });
    if let Some(cc) = usage.cache_creation_input_tokens.filter(|&n| n > 0) {
        out[CACHE_CREATION_KEY] = cc.into();
    }
    out
}

/// Anthropic's `usage` for OpenAI's: cache reads = `prompt_tokens_details.cached_tokens`,
/// cache writes = [`CACHE_CREATION_KEY`] (0 when absent), input = `prompt_tokens` minus both,
/// output = `completion_tokens`. Missing numbers count 0.
pub fn usage_from_openai(usage: &Value) -> Usage {
    let n = |p: &str| usage.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let prompt = n("/prompt_tokens");
    let cached = n("/prompt_tokens_details/cached_tokens");
    let created = n(&format!("/{CACHE_CREATION_KEY}"));
    Usage {
        input_tokens: prompt.saturating_sub(cached.saturating_add(created)),
        output_tokens: n("/completion_tokens"),
        cache_creation_input_tokens: Some(created),
        cache_read_input_tokens: Some(cached),
    }
}

/// Translate an Anthropic answer into an OpenAI `chat.completion` created at `created`
/// (Unix seconds): one choice whose content is the text blocks concatenated (`null` when
/// there is none but tool calls), `tool_use` blocks as `tool_calls` (arguments as JSON
/// text), the finish reason per [`finish_reason`] and usage per [`usage_to_openai`].
/// Thinking blocks, citations, server-tool blocks and `stop_sequence` are dropped.
pub fn messages_response_to_openai(resp: &MessagesResponse, created: i64) -> Value {
    let mut text = String::new();
    let mut has_text = false;
    let mut tool_calls = Vec::new();
    for block in &resp.content {
        match block {
            ContentBlock::Text { text: t, .. } => {
                has_text = true;
                text.push_str(t);
            }
            ContentBlock::ToolUse {
                id, name, input, ..
            } => tool_calls.push(json!({
                "id": id,
                "type": "function",
                "function": { "name": name, "arguments": input.to_string() },
            })),
            _ => {}
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    message.insert(
        "content".into(),
        if has_text || tool_calls.is_empty() {
            Value::String(text)
        } else {
            Value::Null
        },
    );
    if !tool_calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    json!({
        "id": resp.id,
        "object": "chat.completion",
        "created": created,
        "model": resp.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(resp.stop_reason),
        }],
        "usage": usage_to_openai(&resp.usage),
    })
}

/// Translate an OpenAI `chat.completion` (JSON) into an Anthropic answer: the first choice's
/// content (or refusal) as a text block, its `tool_calls` (or legacy `function_call`) as
/// `tool_use` blocks, the stop reason per [`stop_reason`] (`tool_use` whenever there are tool
/// calls) and usage per [`usage_from_openai`]. Other choices and `reasoning_content` are
/// dropped; tool-call arguments that are not a JSON object are an error.
pub fn openai_response_to_messages(resp: &Value) -> Result<MessagesResponse, TranslateError> {
    let choice = resp
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| TranslateError::invalid("choices", "the answer has no choice"))?;
    let message = choice
        .get("message")
        .ok_or_else(|| TranslateError::invalid("choices[0].message", "missing"))?;

    let mut content = Vec::new();
    let text = match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| {
                p.get("text")
                    .or_else(|| p.get("refusal"))
                    .and_then(Value::as_str)
            })
            .collect(),
        _ => String::new(),
    };
    let text = if text.is_empty() {
        message
            .get("refusal")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    } else {
        text
    };
    if !text.is_empty() {
        content.push(ContentBlock::text(text));
    }
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for (k, call) in calls.iter().enumerate() {
            let path = format!("choices[0].message.tool_calls[{k}]");
            let id = call.get("id").and_then(Value::as_str).unwrap_or_default();
            let name = call
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    TranslateError::invalid(format!("{path}.function.name"), "missing")
                })?;
            let args = call
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .unwrap_or("");
            let input = parse_arguments(args, &format!("{path}.function.arguments"))?;
            let id = if id.is_empty() {
                format!("call_{k}")
            } else {
                id.to_owned()
            };
            content.push(ContentBlock::tool_use(id, name, input));
        }
    } else if let Some(call) = message.get("function_call").filter(|c| c.is_object()) {
        let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
        let args = call.get("arguments").and_then(Value::as_str).unwrap_or("");
        let input = parse_arguments(args, "choices[0].message.function_call.arguments")?;
        content.push(ContentBlock::tool_use("call_0", name, input));
    }

    let has_tool_use = content
        .iter()
        .any(|b| matches!(b, ContentBlock::ToolUse { .. }));
    let mut stop = stop_reason(choice.get("finish_reason").and_then(Value::as_str));
    if has_tool_use && stop == StopReason::EndTurn {
        // Some backends say `stop` after tool calls; Anthropic clients run tools on tool_use.
        stop = StopReason::ToolUse;
    }
    Ok(MessagesResponse {
        id: resp
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("msg_slmgate")
            .to_owned(),
        object_type: "message".to_owned(),
        role: Role::Assistant,
        content,
        model: resp
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        stop_reason: Some(stop),
        stop_sequence: None,
        usage: resp.get("usage").map(usage_from_openai).unwrap_or_default(),
    })
}
