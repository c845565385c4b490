//! Requests: Anthropic Messages ⇄ OpenAI chat completions.
//!
//! [`messages_to_openai`] serves the inbound `POST /v1/messages` (an Anthropic client, an
//! OpenAI-shaped gateway); [`openai_to_messages`] serves the outbound `kind: anthropic`
//! backend (an OpenAI-shaped request, an Anthropic backend). The crate documentation lists
//! every field's fate.

use serde_json::{json, Map, Value};

use crate::error::TranslateError;
use crate::types::{
    ContentBlock, ImageSource, Message, MessageContent, MessagesRequest, Metadata, Role,
    SystemPrompt, Tool, ToolChoice, ToolResultContent,
};

/// The `max_tokens` sent to Anthropic (which requires one) when an OpenAI request sets
/// neither `max_completion_tokens` nor `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Separator between the text blocks of a system prompt, a user turn or a tool result when
/// they become one OpenAI content string.
pub const BLOCK_SEPARATOR: &str = "\n\n";

/// Parse the body of `POST /v1/messages`; a malformed body is a [`TranslateError`] whose
/// field is the JSON path serde stopped at (answer it as `invalid_request_error`).
pub fn parse_messages_request(body: &[u8]) -> Result<MessagesRequest, TranslateError> {
    serde_json::from_slice(body).map_err(|e| {
        TranslateError::invalid(
            "body",
            format!(
                "not a valid Messages request: {e} (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Inbound: Anthropic request → OpenAI request.
// ---------------------------------------------------------------------------------------------

/// Translate an Anthropic Messages request into an OpenAI chat-completions request (JSON),
/// for the model `model_override` when given, else the request's own model.
///
/// `system` becomes the first message (`system`); user turns become `user` messages (text
/// blocks joined with [`BLOCK_SEPARATOR`], or content parts when an image is present), their
/// `tool_result` blocks becoming `tool` messages placed before the rest of the turn;
/// assistant turns become `assistant` messages with `tool_calls`. `top_k`, `thinking`,
/// `cache_control`, citations, `is_error` and thinking blocks are dropped; documents, server
/// tools, file image sources and images in tool results are refused.
pub fn messages_to_openai(
    req: &MessagesRequest,
    model_override: Option<&str>,
) -> Result<Value, TranslateError> {
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    if let Some(system) = &req.system {
        let text = system_text(system)?;
        if !text.is_empty() {
            messages.push(json!({ "role": "system", "content": text }));
        }
    }
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::User => user_to_openai(i, &m.content, &mut messages)?,
            Role::Assistant => messages.push(assistant_to_openai(i, &m.content)?),
        }
    }

    let mut out = Map::new();
    out.insert("model".into(), model_override.unwrap_or(&req.model).into());
    out.insert("messages".into(), Value::Array(messages));
    out.insert("max_tokens".into(), req.max_tokens.into());
    if let Some(stop) = &req.stop_sequences {
        if !stop.is_empty() {
            out.insert("stop".into(), json!(stop));
        }
    }
    if let Some(t) = req.temperature {
        out.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        out.insert("top_p".into(), json!(p));
    }
    let has_tools = req.tools.as_ref().is_some_and(|t| !t.is_empty());
    if let Some(tools) = &req.tools {
        if has_tools {
            let tools = tools
                .iter()
                .enumerate()
                .map(|(i, t)| tool_to_openai(i, t))
                .collect::<Result<Vec<_>, _>>()?;
            out.insert("tools".into(), Value::Array(tools));
        }
    }
    if let Some(choice) = &req.tool_choice {
        let (value, disable_parallel) = match choice {
            ToolChoice::Auto {
                disable_parallel_tool_use,
            } => (json!("auto"), *disable_parallel_tool_use),
            ToolChoice::Any {
                disable_parallel_tool_use,
            } => (json!("required"), *disable_parallel_tool_use),
            ToolChoice::Tool {
                name,
                disable_parallel_tool_use,
            } => (
                json!({ "type": "function", "function": { "name": name } }),
                *disable_parallel_tool_use,
            ),
            ToolChoice::None => (json!("none"), None),
        };
        // OpenAI refuses tool_choice and parallel_tool_calls without tools.
        if has_tools {
            out.insert("tool_choice".into(), value);
            if disable_parallel == Some(true) {
                out.insert("parallel_tool_calls".into(), false.into());
            }
        }
    }
    if let Some(user) = req.metadata.as_ref().and_then(|m| m.user_id.as_ref()) {
        out.insert("user".into(), user.clone().into());
    }
    if req.stream == Some(true) {
        out.insert("stream".into(), true.into());
        out.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    Ok(Value::Object(out))
}

fn system_text(system: &SystemPrompt) -> Result<String, TranslateError> {
    match system {
        SystemPrompt::Text(t) => Ok(t.clone()),
        SystemPrompt::Blocks(blocks) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (j, b) in blocks.iter().enumerate() {
                match b {
                    ContentBlock::Text { text, .. } => texts.push(text.as_str()),
                    other => {
                        return Err(TranslateError::invalid(
                            format!("system[{j}].type"),
                            format!("system blocks must be text, not `{}`", other.type_name()),
                        ))
                    }
                }
            }
            Ok(texts.join(BLOCK_SEPARATOR))
        }
    }
}

fn user_to_openai(
    i: usize,
    content: &MessageContent,
    out: &mut Vec<Value>,
) -> Result<(), TranslateError> {
    let blocks = match content {
        MessageContent::Text(t) => {
            out.push(json!({ "role": "user", "content": t }));
            return Ok(());
        }
        MessageContent::Blocks(b) => b,
    };
    let mut parts: Vec<Value> = Vec::new();
    let mut has_image = false;
    let mut had_tool_result = false;
    for (j, b) in blocks.iter().enumerate() {
        let path = || format!("messages[{i}].content[{j}]");
        match b {
            ContentBlock::ToolResult {
                tool_use_id,
                content,
                ..
            } => {
                had_tool_result = true;
                let text = tool_result_text(content.as_ref(), &path())?;
                out.push(json!({ "role": "tool", "tool_call_id": tool_use_id, "content": text }));
            }
            ContentBlock::Text { text, .. } => {
                parts.push(json!({ "type": "text", "text": text }));
            }
            ContentBlock::Image { source, .. } => {
                has_image = true;
                parts.push(image_to_openai(source, &path())?);
            }
            ContentBlock::Thinking { .. } | ContentBlock::RedactedThinking { .. } => {}
            ContentBlock::ToolUse { .. } => {
                return Err(TranslateError::invalid(
                    format!("{}.type", path()),
                    "tool_use blocks belong in assistant turns",
                ))
            }
            ContentBlock::Document { .. } => {
                return Err(TranslateError::unsupported(
                    format!("{}.type", path()),
                    "document (PDF, text) blocks have no OpenAI chat-completions equivalent",
                ))
            }
            ContentBlock::Unknown => {
                return Err(TranslateError::unsupported(
                    format!("{}.type", path()),
                    "this content block type is not supported",
                ))
            }
        }
    }
    if parts.is_empty() {
        if !had_tool_result {
            out.push(json!({ "role": "user", "content": "" }));
        }
        return Ok(());
    }
    let content = if has_image {
        Value::Array(parts)
    } else {
        let texts: Vec<&str> = parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect();
        Value::String(texts.join(BLOCK_SEPARATOR))
    };
    out.push(json!({ "role": "user", "content": content }));
    Ok(())
}

fn tool_result_text(
    content: Option<&ToolResultContent>,
    path: &str,
) -> Result<String, TranslateError> {
    match content {
        None => Ok(String::new()),
        Some(ToolResultContent::Text(t)) => Ok(t.clone()),
        Some(ToolResultContent::Blocks(blocks)) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (k, b) in blocks.iter().enumerate() {
                match b {
                    ContentBlock::Text { text, .. } => texts.push(text.as_str()),
                    other => {
                        return Err(TranslateError::unsupported(
                            format!("{path}.content[{k}].type"),
                            format!(
                                "OpenAI tool messages carry text only, not `{}`",
                                other.type_name()
                            ),
                        ))
                    }
                }
            }
            Ok(texts.join(BLOCK_SEPARATOR))
        }
    }
}

fn image_to_openai(source: &ImageSource, path: &str) -> Result<Value, TranslateError> {
    let url = match source {
        ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        ImageSource::Url { url } => url.clone(),
        ImageSource::Unknown => {
            return Err(TranslateError::unsupported(
                format!("{path}.source.type"),
                "only base64 and url image sources are supported",
            ))
        }
    };
    Ok(json!({ "type": "image_url", "image_url": { "url": url } }))
}

fn assistant_to_openai(i: usize, content: &MessageContent) -> Result<Value, TranslateError> {
    let blocks = match content {
        MessageContent::Text(t) => return Ok(json!({ "role": "assistant", "content": t })),
        MessageContent::Blocks(b) => b,
    };
    let mut text = String::new();
    let mut has_text = false;
    let mut tool_calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        match b {
            ContentBlock::Text { text: t, .. } => {
                has_text = true;
                text.push_str(t);
            }
            ContentBlock::ToolUse {
                id, name, input, ..
            } => {
                tool_calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": { "name": name, "arguments": input.to_string() },
                }));
            }
            ContentBlock::Thinking { .. } | ContentBlock::RedactedThinking { .. } => {}
            other => {
                return Err(TranslateError::unsupported(
                    format!("messages[{i}].content[{j}].type"),
                    format!(
                        "assistant turns cannot carry `{}` blocks",
                        other.type_name()
                    ),
                ))
            }
        }
    }
    let mut msg = Map::new();
    msg.insert("role".into(), "assistant".into());
    msg.insert(
        "content".into(),
        if has_text || tool_calls.is_empty() {
            Value::String(text)
        } else {
            Value::Null
        },
    );
    if !tool_calls.is_empty() {
        msg.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    Ok(Value::Object(msg))
}

fn tool_to_openai(i: usize, tool: &Tool) -> Result<Value, TranslateError> {
    if let Some(kind) = tool.tool_type.as_deref() {
        if kind != "custom" {
            return Err(TranslateError::unsupported(
                format!("tools[{i}].type"),
                format!("Anthropic server tool `{kind}` has no OpenAI equivalent"),
            ));
        }
    }
    if !tool.input_schema.is_object() {
        return Err(TranslateError::invalid(
            format!("tools[{i}].input_schema"),
            "a JSON schema object is required",
        ));
    }
    let mut function = Map::new();
    function.insert("name".into(), tool.name.clone().into());
    if let Some(d) = &tool.description {
        function.insert("description".into(), d.clone().into());
    }
    function.insert("parameters".into(), tool.input_schema.clone());
    Ok(json!({ "type": "function", "function": function }))
}

// ---------------------------------------------------------------------------------------------
// Outbound: OpenAI request → Anthropic request.
// ---------------------------------------------------------------------------------------------

/// Translate an OpenAI chat-completions request (JSON) into an Anthropic Messages request.
///
/// `system` and `developer` messages (wherever they are) become `system`; consecutive `tool`
/// messages become one user turn of `tool_result` blocks; assistant `tool_calls` become
/// `tool_use` blocks with parsed JSON input; `max_completion_tokens` (else `max_tokens`,
/// else [`DEFAULT_MAX_TOKENS`]) becomes `max_tokens`; `stop` becomes `stop_sequences`; `user`
/// becomes `metadata.user_id`; `parallel_tool_calls: false` becomes
/// `disable_parallel_tool_use`. Refused: `n` > 1, `logprobs: true`, a `response_format`
/// other than `text`, legacy `functions`/`function_call`, `function` messages, non-function
/// tools, audio and file parts, non-base64 data URLs, and tool-call arguments that are not
/// JSON. Dropped: sampling penalties, `seed`, `logit_bias`, `top_logprobs`,
/// `stream_options`, `reasoning_effort`, `store`, `metadata`, message `name`s.
pub fn openai_to_messages(req: &Value) -> Result<MessagesRequest, TranslateError> {
    let obj = req
        .as_object()
        .ok_or_else(|| TranslateError::invalid("body", "not an object"))?;
    let model = obj
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid("model", "a model name is required"))?
        .to_owned();

    if let Some(n) = non_null(obj.get("n")) {
        if n.as_u64() != Some(1) {
            return Err(TranslateError::unsupported(
                "n",
                "Anthropic returns one choice per request: n must be 1",
            ));
        }
    }
    if non_null(obj.get("logprobs")).and_then(Value::as_bool) == Some(true) {
        return Err(TranslateError::unsupported(
            "logprobs",
            "Anthropic returns no logprobs",
        ));
    }
    if let Some(format) = non_null(obj.get("response_format")) {
        let kind = format.get("type").and_then(Value::as_str).unwrap_or("");
        if kind != "text" {
            return Err(TranslateError::unsupported(
                "response_format",
                format!("response_format `{kind}` is not supported by the Anthropic backend"),
            ));
        }
    }
    for legacy in ["functions", "function_call"] {
        if non_null(obj.get(legacy)).is_some() {
            return Err(TranslateError::unsupported(
                legacy,
                "legacy function calling is not supported: use tools",
            ));
        }
    }

    let raw_messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::invalid("messages", "an array of messages is required"))?;
    let mut system: Vec<ContentBlock> = Vec::new();
    let mut messages: Vec<Message> = Vec::with_capacity(raw_messages.len());
    let mut last_was_tool = false;
    for (i, m) in raw_messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).ok_or_else(|| {
            TranslateError::invalid(format!("messages[{i}].role"), "a role is required")
        })?;
        let content = non_null(m.get("content"));
        let content_path = format!("messages[{i}].content");
        let is_tool = role == "tool";
        match role {
            "system" | "developer" => {
                system.push(ContentBlock::text(text_of(content, &content_path)?));
            }
            "user" => {
                let content = match content {
                    None => {
                        return Err(TranslateError::invalid(content_path, "content is required"))
                    }
                    Some(Value::String(s)) => MessageContent::Text(s.clone()),
                    Some(Value::Array(parts)) => {
                        MessageContent::Blocks(user_parts_to_blocks(parts, &content_path)?)
                    }
                    Some(_) => {
                        return Err(TranslateError::invalid(
                            content_path,
                            "content must be a string or an array of parts",
                        ))
                    }
                };
                messages.push(Message {
                    role: Role::User,
                    content,
                });
            }
            "assistant" => messages.push(assistant_to_message(i, m, content)?),
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        TranslateError::invalid(
                            format!("messages[{i}].tool_call_id"),
                            "tool messages need a tool_call_id",
                        )
                    })?;
                let block = ContentBlock::ToolResult {
                    tool_use_id: id.to_owned(),
                    content: Some(ToolResultContent::Text(text_of(content, &content_path)?)),
                    is_error: None,
                    cache_control: None,
                };
                match messages.last_mut() {
                    Some(Message {
                        content: MessageContent::Blocks(blocks),
                        ..
                    }) if last_was_tool => {
                        blocks.push(block);
                    }
                    _ => messages.push(Message {
                        role: Role::User,
                        content: MessageContent::Blocks(vec![block]),
                    }),
                }
            }
            "function" => {
                return Err(TranslateError::unsupported(
                    format!("messages[{i}].role"),
                    "legacy function messages are not supported: use tool messages",
                ))
            }
            other => {
                return Err(TranslateError::invalid(
                    format!("messages[{i}].role"),
                    format!("unknown role `{other}`"),
                ))
            }
        }
        last_was_tool = is_tool;
    }

    let max_tokens = match non_null(obj.get("max_completion_tokens"))
        .map(|v| (v, "max_completion_tokens"))
        .or_else(|| non_null(obj.get("max_tokens")).map(|v| (v, "max_tokens")))
    {
        None => DEFAULT_MAX_TOKENS,
        Some((v, field)) => v
            .as_u64()
            .ok_or_else(|| TranslateError::invalid(field, "must be a non-negative integer"))?,
    };
    let stop_sequences = match non_null(obj.get("stop")) {
        None => None,
        Some(Value::String(s)) => Some(vec![s.clone()]),
        Some(Value::Array(items)) => {
            let stops = items
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| TranslateError::invalid("stop", "must be strings"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            (!stops.is_empty()).then_some(stops)
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                "stop",
                "a string or a list of strings",
            ))
        }
    };

    let tools = match non_null(obj.get("tools")) {
        None => None,
        Some(Value::Array(items)) => {
            let tools = items
                .iter()
                .enumerate()
                .map(tool_from_openai)
                .collect::<Result<Vec<_>, _>>()?;
            (!tools.is_empty()).then_some(tools)
        }
        Some(_) => return Err(TranslateError::invalid("tools", "must be an array")),
    };
    let disable_parallel = (non_null(obj.get("parallel_tool_calls")).and_then(Value::as_bool)
        == Some(false))
    .then_some(true);
    let tool_choice = match non_null(obj.get("tool_choice")) {
        None => disable_parallel
            .filter(|_| tools.is_some())
            .map(|_| ToolChoice::Auto {
                disable_parallel_tool_use: disable_parallel,
            }),
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto {
                disable_parallel_tool_use: disable_parallel,
            },
            "required" => ToolChoice::Any {
                disable_parallel_tool_use: disable_parallel,
            },
            "none" => ToolChoice::None,
            other => {
                return Err(TranslateError::invalid(
                    "tool_choice",
                    format!("unknown tool_choice `{other}`"),
                ))
            }
        }),
        Some(v) => {
            let name = v
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    TranslateError::invalid(
                        "tool_choice",
                        "expected {type: function, function: {name}}",
                    )
                })?;
            Some(ToolChoice::Tool {
                name: name.to_owned(),
                disable_parallel_tool_use: disable_parallel,
            })
        }
    };

    let number = |field: &str| -> Result<Option<f64>, TranslateError> {
        non_null(obj.get(field))
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| TranslateError::invalid(field, "must be a number"))
            })
            .transpose()
    };
    let top_k = non_null(obj.get("top_k"))
        .map(|v| {
            v.as_u64()
                .ok_or_else(|| TranslateError::invalid("top_k", "must be an integer"))
        })
        .transpose()?;
    let user = non_null(obj.get("user")).and_then(Value::as_str);

    Ok(MessagesRequest {
        model,
        messages,
        max_tokens,
        system: match system.len() {
            0 => None,
            1 => match system.pop() {
                Some(ContentBlock::Text { text, .. }) => Some(SystemPrompt::Text(text)),
                _ => None,
            },
            _ => Some(SystemPrompt::Blocks(system)),
        },
        stop_sequences,
        temperature: number("temperature")?,
        top_p: number("top_p")?,
        top_k,
        tools,
        tool_choice,
        metadata: user.map(|u| Metadata {
            user_id: Some(u.to_owned()),
        }),
        stream: non_null(obj.get("stream")).and_then(Value::as_bool),
        thinking: None,
    })
}

fn non_null(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

/// The text of a system, developer or tool message: a string or text parts (joined with
/// [`BLOCK_SEPARATOR`]); absent is empty.
fn text_of(content: Option<&Value>, path: &str) -> Result<String, TranslateError> {
    match content {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => texts.push(t),
                    _ => {
                        return Err(TranslateError::unsupported(
                            format!("{path}[{j}]"),
                            "only text parts are supported here",
                        ))
                    }
                }
            }
            Ok(texts.join(BLOCK_SEPARATOR))
        }
        Some(_) => Err(TranslateError::invalid(
            path,
            "a string or an array of text parts",
        )),
    }
}

fn user_parts_to_blocks(parts: &[Value], path: &str) -> Result<Vec<ContentBlock>, TranslateError> {
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        let kind = p.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "text" => {
                let text = p.get("text").and_then(Value::as_str).ok_or_else(|| {
                    TranslateError::invalid(format!("{path}[{j}].text"), "text is required")
                })?;
                blocks.push(ContentBlock::text(text));
            }
            "image_url" => {
                let image = p.get("image_url");
                let url = image
                    .and_then(|i| i.get("url").and_then(Value::as_str).or_else(|| i.as_str()))
                    .ok_or_else(|| {
                        TranslateError::invalid(
                            format!("{path}[{j}].image_url.url"),
                            "an image URL is required",
                        )
                    })?;
                blocks.push(ContentBlock::Image {
                    source: image_source(url, &format!("{path}[{j}].image_url.url"))?,
                    cache_control: None,
                });
            }
            other => {
                return Err(TranslateError::unsupported(
                    format!("{path}[{j}].type"),
                    format!("content part `{other}` is not supported by the Anthropic backend"),
                ))
            }
        }
    }
    Ok(blocks)
}

/// A `data:<media type>;base64,<data>` URL becomes a base64 source, any other URL a url
/// source.
fn image_source(url: &str, path: &str) -> Result<ImageSource, TranslateError> {
    let Some(rest) = url.strip_prefix("data:") else {
        return Ok(ImageSource::Url {
            url: url.to_owned(),
        });
    };
    match rest.split_once(',') {
        Some((header, data)) if header.ends_with(";base64") => Ok(ImageSource::Base64 {
            media_type: header.trim_end_matches(";base64").to_owned(),
            data: data.to_owned(),
        }),
        _ => Err(TranslateError::unsupported(
            path,
            "only base64 data: URLs are supported",
        )),
    }
}

fn assistant_to_message(
    i: usize,
    m: &Value,
    content: Option<&Value>,
) -> Result<Message, TranslateError> {
    if non_null(m.get("function_call")).is_some() {
        return Err(TranslateError::unsupported(
            format!("messages[{i}].function_call"),
            "legacy function calls are not supported: use tool_calls",
        ));
    }
    let path = format!("messages[{i}].content");
    let text = match content {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, p) in parts.iter().enumerate() {
                let t = p
                    .get("text")
                    .or_else(|| p.get("refusal"))
                    .and_then(Value::as_str);
                text.push_str(t.ok_or_else(|| {
                    TranslateError::unsupported(
                        format!("{path}[{j}]"),
                        "assistant content parts must be text or refusal",
                    )
                })?);
            }
            text
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                path,
                "a string or an array of parts",
            ))
        }
    };
    let calls = match non_null(m.get("tool_calls")) {
        None => &[][..],
        Some(Value::Array(calls)) => calls.as_slice(),
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("messages[{i}].tool_calls"),
                "must be an array",
            ))
        }
    };
    if calls.is_empty() {
        return Ok(Message {
            role: Role::Assistant,
            content: MessageContent::Text(text),
        });
    }
    let mut blocks = Vec::with_capacity(calls.len() + 1);
    if !text.is_empty() {
        blocks.push(ContentBlock::text(text));
    }
    for (k, call) in calls.iter().enumerate() {
        let path = format!("messages[{i}].tool_calls[{k}]");
        let field = |name: &str| {
            call.pointer(name).and_then(Value::as_str).ok_or_else(|| {
                TranslateError::invalid(format!("{path}{}", name.replace('/', ".")), "required")
            })
        };
        let id = field("/id")?;
        let name = field("/function/name")?;
        let arguments = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("");
        let input = parse_arguments(arguments, &format!("{path}.function.arguments"))?;
        blocks.push(ContentBlock::tool_use(id, name, input));
    }
    Ok(Message {
        role: Role::Assistant,
        content: MessageContent::Blocks(blocks),
    })
}

/// Tool-call arguments (JSON text) as Anthropic's `input` object: empty text is `{}`, text
/// that is not a JSON object is an error.
pub(crate) fn parse_arguments(arguments: &str, path: &str) -> Result<Value, TranslateError> {
    if arguments.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(TranslateError::invalid(
            path,
            "tool-call arguments must be a JSON object",
        )),
        Err(e) => Err(TranslateError::invalid(
            path,
            format!("tool-call arguments are not JSON: {e}"),
        )),
    }
}

fn tool_from_openai((i, t): (usize, &Value)) -> Result<Tool, TranslateError> {
    let kind = t.get("type").and_then(Value::as_str).unwrap_or("function");
    if kind != "function" {
        return Err(TranslateError::unsupported(
            format!("tools[{i}].type"),
            format!("tool type `{kind}` is not supported by the Anthropic backend"),
        ));
    }
    let f = t.get("function").ok_or_else(|| {
        TranslateError::invalid(format!("tools[{i}].function"), "a function is required")
    })?;
    let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
        TranslateError::invalid(format!("tools[{i}].function.name"), "a name is required")
    })?;
    let input_schema = match non_null(f.get("parameters")) {
        None => json!({ "type": "object", "properties": {} }),
        Some(p) if p.is_object() => p.clone(),
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("tools[{i}].function.parameters"),
                "must be a JSON schema object",
            ))
        }
    };
    Ok(Tool {
        name: name.to_owned(),
        description: non_null(f.get("description"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        input_schema,
        tool_type: None,
        cache_control: None,
    })
}
