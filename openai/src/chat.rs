//! OpenAI API types, parsed no deeper than the gateway needs.
//!
//! A chat request is kept as its original bytes plus the byte range of each top-level field.
//! The gateway reads the few fields it acts on (`model`, `stream`, `stream_options`) and
//! rewrites only `model` (and `stream_options` when it asks upstream for usage). Every other
//! field — known or unknown to us — is copied to the upstream byte for byte. That keeps the
//! proxy exact (no float or key-order drift) and cheap (no `Value` tree per request).

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::error::GatewayError;

/// A parsed `POST /v1/chat/completions` body.
#[derive(Clone)]
pub struct ChatRequest {
    body: Bytes,
    /// Each top-level field's name and the byte range of its raw value in `body`. Shared, so
    /// the steps that keep a copy of the request clone it without allocating.
    fields: Arc<Fields>,
    /// The requested model (alias).
    pub model: String,
    /// `stream: true`.
    pub stream: bool,
    /// The client itself asked for `stream_options.include_usage`.
    pub client_wants_usage: bool,
}

impl fmt::Debug for ChatRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatRequest")
            .field("model", &self.model)
            .field("stream", &self.stream)
            .field("bytes", &self.body.len())
            .finish()
    }
}

/// Where a request's parts sit in its body, found by the one parse in [`ChatRequest::parse`].
struct Fields {
    /// Each top-level field's name and the byte range of its raw value.
    top: Vec<(Box<str>, Range<usize>)>,
    /// Each message's raw `content` (`None` when absent), in order: the policy step's PII
    /// scan and prompt estimate read them without parsing `messages` again.
    contents: Vec<Option<Range<usize>>>,
}

/// An object whose values stay raw, in document order.
struct RawObject<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                    let v: &'de RawValue = map.next_value()?;
                    out.push((k, v));
                }
                Ok(RawObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// The least we check of each message: it is an object with a string role. Its content
/// is kept raw (see [`Fields::contents`]).
#[derive(Deserialize)]
struct MessageShape<'a> {
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

/// Most choices one request may ask for (`n`), as OpenAI allows.
pub const MAX_CHOICES: i64 = 128;

/// The largest `max_tokens` accepted: far above any model's context, and small enough that
/// `n` × `max_tokens` never overflows an estimate.
pub const MAX_COMPLETION_TOKENS: i64 = u32::MAX as i64;

/// What a top-level parameter must be. Checked for the parameters whose wrong values would
/// otherwise reach an upstream (and fail there, after a budget was reserved and a retry or
/// fallback tried) or mislead the gateway's own estimates; OpenAI's documented bounds.
#[derive(Clone, Copy)]
enum Expect {
    /// A JSON integer in `min..=max`.
    Integer(i64, i64),
    /// A JSON number in `min..=max`.
    Number(f64, f64),
    Boolean,
    String,
    /// A string or an object (`tool_choice`).
    StringOrObject,
    /// A string or an array of strings (`stop`).
    StringOrStrings,
    /// An array of objects (`tools`).
    Objects,
}

fn expected(name: &str) -> Option<Expect> {
    Some(match name {
        "n" => Expect::Integer(1, MAX_CHOICES),
        "max_tokens" | "max_completion_tokens" => Expect::Integer(1, MAX_COMPLETION_TOKENS),
        "top_logprobs" => Expect::Integer(0, 20),
        "temperature" => Expect::Number(0.0, 2.0),
        "top_p" => Expect::Number(0.0, 1.0),
        "presence_penalty" | "frequency_penalty" => Expect::Number(-2.0, 2.0),
        "logprobs" | "parallel_tool_calls" => Expect::Boolean,
        "user" => Expect::String,
        "tool_choice" | "function_call" => Expect::StringOrObject,
        "stop" => Expect::StringOrStrings,
        "tools" | "functions" => Expect::Objects,
        _ => return None,
    })
}

/// The JSON type of a raw value, from its first byte (the value is valid JSON).
fn json_kind(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// Checks one top-level parameter against [`expected`]; `null` is as good as absent.
fn check_param(name: &str, raw: &str) -> Result<(), GatewayError> {
    let Some(want) = expected(name) else {
        return Ok(());
    };
    if raw == "null" {
        return Ok(());
    }
    let kind = json_kind(raw);
    let bad = |what: String| Err(GatewayError::bad_param(name, format!("`{name}` {what}")));
    let is = |k: &str| kind == k;
    match want {
        Expect::Integer(min, max) => match serde_json::from_str::<i64>(raw) {
            Ok(v) if (min..=max).contains(&v) => Ok(()),
            Ok(v) => bad(format!("must be between {min} and {max}, got {v}")),
            Err(_) => bad(format!("must be an integer, got {}", describe(raw, kind))),
        },
        Expect::Number(min, max) => match serde_json::from_str::<f64>(raw) {
            Ok(v) if (min..=max).contains(&v) => Ok(()),
            Ok(v) => bad(format!("must be between {min} and {max}, got {v}")),
            Err(_) => bad(format!("must be a number, got {}", describe(raw, kind))),
        },
        Expect::Boolean if is("a boolean") => Ok(()),
        Expect::Boolean => bad(format!("must be a boolean, got {kind}")),
        Expect::String if is("a string") => Ok(()),
        Expect::String => bad(format!("must be a string, got {kind}")),
        Expect::StringOrObject if is("a string") || is("an object") => Ok(()),
        Expect::StringOrObject => bad(format!("must be a string or an object, got {kind}")),
        Expect::StringOrStrings if is("a string") => Ok(()),
        Expect::StringOrStrings | Expect::Objects => {
            let (item, what) = match want {
                Expect::Objects => ("an object", "an array of objects"),
                _ => ("a string", "a string or an array of strings"),
            };
            match serde_json::from_str::<Vec<&RawValue>>(raw) {
                Ok(items) => match items.iter().position(|v| json_kind(v.get()) != item) {
                    None => Ok(()),
                    Some(i) => bad(format!(
                        "must be {what}: item {i} is {}",
                        json_kind(items[i].get())
                    )),
                },
                Err(_) => bad(format!("must be {what}, got {kind}")),
            }
        }
    }
}

/// A wrong value for a message: short values are quoted, long ones only named by type.
fn describe(raw: &str, kind: &str) -> String {
    if raw.len() <= 32 {
        format!("{kind} ({raw})")
    } else {
        kind.to_string()
    }
}

/// Returns true if and only if `text` holds a `\uD800`–`\uDFFF` escape: a UTF-16
/// surrogate, which is valid JSON only as half of a pair. The request parse keeps values raw
/// and so does not decode escapes; this cheap scan decides whether a decoding pass is needed
/// (most bodies have no surrogate escape at all: they are only how an ASCII-only encoder
/// writes characters beyond the BMP, such as emoji).
fn has_surrogate_escape(text: &str) -> bool {
    memchr::memmem::find_iter(text.as_bytes(), b"\\u").any(|i| {
        let b = text.as_bytes();
        matches!(b.get(i + 2), Some(b'd' | b'D'))
            && matches!(b.get(i + 3), Some(b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F'))
    })
}

/// One message of a chat request as the gateway reads it: the router, the local model and
/// the usage estimates all read messages through [`ChatRequest::messages`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// `system`, `developer`, `user`, `assistant`, `tool`, `function`; empty when absent.
    pub role: String,
    /// The text: string content, or the text parts joined by newlines; empty for `null`.
    pub text: String,
    /// The kinds of the non-text parts (`image_url`, `input_audio`, `file`, …), in order.
    pub media: Vec<String>,
    /// The message carries `tool_calls` or a `function_call`.
    pub tool_calls: bool,
}

#[derive(Deserialize)]
struct RawMessage<'a> {
    #[serde(default)]
    role: Option<String>,
    #[serde(default, borrow)]
    content: Option<&'a RawValue>,
    #[serde(default)]
    tool_calls: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    function_call: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawContent {
    Text(String),
    Parts(Vec<RawPart>),
}

#[derive(Deserialize)]
struct RawPart {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

impl ChatRequest {
    /// Reads `messages`. Every message shape OpenAI accepts reads without error: string
    /// content, arrays of parts (a part without `type` counts as text), `null` content with
    /// `tool_calls`, `tool` and `function` messages. Fails (400, `param: messages`) only
    /// when `messages` is missing, is not a list of objects, or a `content` is neither a
    /// string, a list of parts nor `null`.
    pub fn messages(&self) -> Result<Vec<Message>, GatewayError> {
        let raw = self
            .raw_field("messages")
            .ok_or_else(|| GatewayError::bad_param("messages", "`messages` is required"))?;
        let msgs: Vec<RawMessage<'_>> = serde_json::from_str(raw).map_err(|e| {
            GatewayError::bad_param(
                "messages",
                format!("`messages` must be an array of message objects: {e}"),
            )
        })?;
        msgs.into_iter()
            .map(|m| {
                let mut out = Message {
                    role: m.role.unwrap_or_default(),
                    tool_calls: m.tool_calls.is_some() || m.function_call.is_some(),
                    ..Message::default()
                };
                match m.content.map(RawValue::get) {
                    None | Some("null") => {}
                    Some(raw) => match serde_json::from_str::<RawContent>(raw) {
                        Ok(RawContent::Text(t)) => out.text = t,
                        Ok(RawContent::Parts(parts)) => {
                            for p in parts {
                                match p.kind {
                                    Some(k) if k != "text" => out.media.push(k),
                                    _ => {
                                        if let Some(t) = p.text {
                                            if !out.text.is_empty() {
                                                out.text.push('\n');
                                            }
                                            out.text.push_str(&t);
                                        }
                                    }
                                }
                            }
                        }
                        Err(_) => {
                            return Err(GatewayError::bad_param(
                                "messages",
                                "message `content` must be a string, an array of parts or null",
                            ))
                        }
                    },
                }
                Ok(out)
            })
            .collect()
    }
}

impl ChatRequest {
    /// Parses and validates a chat completion body.
    ///
    /// Besides the shape of `model`, `messages` and `stream`, the parameters the gateway
    /// knows are checked against OpenAI's types and bounds (`n` 1–128, `max_tokens` ≥ 1,
    /// `temperature` 0–2, `tools` an array of objects, ...; see [`check_param`]), each
    /// message's `content` must be a string, an array of content parts or null, and no string
    /// may hold a lone UTF-16 surrogate: every such request is a 400 before any upstream call.
    pub fn parse(body: Bytes) -> Result<Self, GatewayError> {
        let text = std::str::from_utf8(&body)
            .map_err(|e| GatewayError::bad_request(format!("request body is not UTF-8: {e}")))?;
        let obj: RawObject<'_> = serde_json::from_str(text).map_err(|e| {
            GatewayError::bad_request(format!("request body is not a valid JSON object: {e}"))
        })?;
        if has_surrogate_escape(text) {
            // Decoding every string finds a lone surrogate (which no upstream can read).
            serde_json::from_str::<serde_json::Value>(text).map_err(|e| {
                GatewayError::bad_request(format!("request body has an invalid string: {e}"))
            })?;
        }
        let base = text.as_ptr() as usize;
        let mut fields = Vec::with_capacity(obj.0.len());
        let mut model = None;
        let mut stream = false;
        let mut client_wants_usage = false;
        let mut has_messages = false;
        let mut contents = Vec::new();
        for (k, v) in &obj.0 {
            let raw = v.get();
            let start = raw.as_ptr() as usize - base;
            fields.push((Box::<str>::from(k.as_ref()), start..start + raw.len()));
            match k.as_ref() {
                "model" => {
                    let m: String = serde_json::from_str(raw).map_err(|_| {
                        GatewayError::bad_param("model", "`model` must be a string")
                    })?;
                    model = Some(m);
                }
                "stream" => {
                    stream = match raw {
                        "null" => false,
                        _ => serde_json::from_str(raw).map_err(|_| {
                            GatewayError::bad_param("stream", "`stream` must be a boolean")
                        })?,
                    }
                }
                "stream_options" if raw != "null" => {
                    let so: StreamOptions = serde_json::from_str(raw).map_err(|_| {
                        GatewayError::bad_param(
                            "stream_options",
                            "`stream_options` must be an object",
                        )
                    })?;
                    client_wants_usage = so.include_usage.unwrap_or(false);
                }
                "messages" => {
                    let msgs: Vec<MessageShape<'_>> = serde_json::from_str(raw).map_err(|_| {
                        GatewayError::bad_param(
                            "messages",
                            "`messages` must be an array of message objects",
                        )
                    })?;
                    if msgs.is_empty() {
                        return Err(GatewayError::bad_param(
                            "messages",
                            "`messages` must contain at least one message",
                        ));
                    }
                    if let Some(i) = msgs.iter().position(|m| m.role.is_none()) {
                        return Err(GatewayError::bad_param(
                            "messages",
                            format!("messages[{i}] has no `role`"),
                        ));
                    }
                    for (i, m) in msgs.iter().enumerate() {
                        let Some(c) = m.content.map(RawValue::get) else {
                            continue;
                        };
                        let ok = match json_kind(c) {
                            "a string" | "null" => true,
                            "an array" => {
                                serde_json::from_str::<Vec<&RawValue>>(c).is_ok_and(|parts| {
                                    parts.iter().all(|p| json_kind(p.get()) == "an object")
                                })
                            }
                            _ => false,
                        };
                        if !ok {
                            return Err(GatewayError::bad_param(
                                "messages",
                                format!(
                                    "messages[{i}].content must be a string or an array of content parts (objects), got {}",
                                    json_kind(c)
                                ),
                            ));
                        }
                    }
                    has_messages = true;
                    contents = msgs
                        .iter()
                        .map(|m| {
                            m.content.map(|c| {
                                let start = c.get().as_ptr() as usize - base;
                                start..start + c.get().len()
                            })
                        })
                        .collect();
                }
                other => check_param(other, raw)?,
            }
        }
        let model = model
            .filter(|m| !m.is_empty())
            .ok_or_else(|| GatewayError::bad_param("model", "`model` is required"))?;
        if !has_messages {
            return Err(GatewayError::bad_param(
                "messages",
                "`messages` is required",
            ));
        }
        Ok(ChatRequest {
            body,
            fields: Arc::new(Fields {
                top: fields,
                contents,
            }),
            model,
            stream,
            client_wants_usage,
        })
    }

    /// The names of the top-level fields, in document order.
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.top.iter().map(|(k, _)| k.as_ref())
    }

    /// The raw JSON text of a top-level field.
    pub fn raw_field(&self, name: &str) -> Option<&str> {
        let (_, r) = self.fields.top.iter().find(|(k, _)| k.as_ref() == name)?;
        // The ranges were cut from valid UTF-8 at value boundaries.
        std::str::from_utf8(&self.body[r.clone()]).ok()
    }

    /// The raw JSON of each message's `content` (`None` when a message has none), in order:
    /// one item per message.
    pub fn message_contents(&self) -> impl Iterator<Item = Option<&str>> {
        self.fields.contents.iter().map(|r| {
            r.as_ref()
                .and_then(|r| std::str::from_utf8(&self.body[r.clone()]).ok())
        })
    }

    /// Deserialises one top-level field; `Ok(None)` when absent or null.
    pub fn field<T: for<'de> Deserialize<'de>>(
        &self,
        name: &str,
    ) -> Result<Option<T>, GatewayError> {
        match self.raw_field(name) {
            None | Some("null") => Ok(None),
            Some(raw) => serde_json::from_str(raw)
                .map(Some)
                .map_err(|e| GatewayError::bad_param(name, format!("invalid `{name}`: {e}"))),
        }
    }

    /// The original body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The body to send upstream: `model` replaced by `upstream_model`; for streams with
    /// `ask_usage`, `stream_options.include_usage` set to true. All else is copied verbatim.
    pub fn upstream_body(&self, upstream_model: &str, ask_usage: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + upstream_model.len() + 48);
        out.push(b'{');
        let mut first = true;
        let mut push_key = |out: &mut Vec<u8>, k: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            // Keys are re-escaped by serde_json, so unusual keys survive.
            let _ = serde_json::to_writer(&mut *out, k);
            out.push(b':');
        };
        let fix_usage = self.stream && ask_usage && !self.client_wants_usage;
        let mut wrote_stream_options = false;
        for (k, r) in &self.fields.top {
            match k.as_ref() {
                "model" => {
                    push_key(&mut out, k);
                    let _ = serde_json::to_writer(&mut out, upstream_model);
                }
                "stream_options" if fix_usage => {
                    push_key(&mut out, k);
                    let merged = self
                        .raw_field("stream_options")
                        .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw).ok())
                        .and_then(|v| match v {
                            serde_json::Value::Object(mut m) => {
                                m.insert("include_usage".into(), serde_json::Value::Bool(true));
                                Some(serde_json::Value::Object(m))
                            }
                            _ => None,
                        })
                        .unwrap_or_else(|| serde_json::json!({"include_usage": true}));
                    let _ = serde_json::to_writer(&mut out, &merged);
                    wrote_stream_options = true;
                }
                _ => {
                    push_key(&mut out, k);
                    out.extend_from_slice(&self.body[r.clone()]);
                }
            }
        }
        if fix_usage && !wrote_stream_options {
            push_key(&mut out, "stream_options");
            out.extend_from_slice(br#"{"include_usage":true}"#);
        }
        out.push(b'}');
        out
    }

    /// A copy that asks a streaming upstream for its final usage chunk
    /// (`stream_options.include_usage: true`, other stream options kept). The limits, cache
    /// and account steps need the usage of streams the client did not ask it for; they hide
    /// the chunk again with [`is_usage_only_chunk`].
    pub fn with_stream_usage(&self) -> Result<Self, GatewayError> {
        let mut so = self
            .field::<serde_json::Map<String, serde_json::Value>>("stream_options")
            .ok()
            .flatten()
            .unwrap_or_default();
        so.insert("include_usage".into(), serde_json::Value::Bool(true));
        self.with_fields(&[(
            "stream_options",
            Some(serde_json::Value::Object(so).to_string()),
        )])
    }

    /// A copy with top-level fields changed: each `(name, Some(raw JSON))` replaces the field
    /// in place (or is appended), each `(name, None)` removes it. Every other field is kept
    /// byte for byte. Used by the policy step (parameter caps, redaction) and the limits step
    /// (asking for usage on streams); the result is re-validated like a client body.
    pub fn with_fields(&self, changes: &[(&str, Option<String>)]) -> Result<Self, GatewayError> {
        let mut out = Vec::with_capacity(self.body.len() + 64);
        out.push(b'{');
        let mut first = true;
        let mut push = |out: &mut Vec<u8>, k: &str, v: &[u8]| {
            if !first {
                out.push(b',');
            }
            first = false;
            let _ = serde_json::to_writer(&mut *out, k);
            out.push(b':');
            out.extend_from_slice(v);
        };
        for (k, r) in &self.fields.top {
            match changes.iter().find(|(n, _)| *n == k.as_ref()) {
                Some((_, Some(v))) => push(&mut out, k, v.as_bytes()),
                Some((_, None)) => {}
                None => push(&mut out, k, &self.body[r.clone()]),
            }
        }
        for (n, v) in changes {
            if let Some(v) = v {
                if !self.fields.top.iter().any(|(k, _)| k.as_ref() == *n) {
                    push(&mut out, n, v.as_bytes());
                }
            }
        }
        out.push(b'}');
        ChatRequest::parse(Bytes::from(out))
    }
}

/// Token usage as OpenAI reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Tokens generated.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Sum of both.
    #[serde(default)]
    pub total_tokens: u64,
    /// Prompt tokens read from the provider's prompt cache
    /// (`prompt_tokens_details.cached_tokens`); part of `prompt_tokens`.
    #[serde(
        default,
        rename = "prompt_tokens_details",
        deserialize_with = "cached_tokens",
        skip_serializing
    )]
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's prompt cache (Anthropic's
    /// `cache_creation_input_tokens`, which the `kind: anthropic` backend reports in
    /// `usage`); part of `prompt_tokens`.
    #[serde(
        default,
        rename = "cache_creation_input_tokens",
        skip_serializing_if = "is_zero"
    )]
    pub cache_write_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `prompt_tokens_details` → its `cached_tokens` (0 when absent or `null`).
fn cached_tokens<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    struct Details {
        #[serde(default)]
        cached_tokens: Option<u64>,
    }
    Ok(Option::<Details>::deserialize(d)?
        .and_then(|x| x.cached_tokens)
        .unwrap_or(0))
}

/// True when a stream chunk carries usage and no choices: the chunk a step asked for with
/// [`ChatRequest::with_stream_usage`] and hides from a client that did not.
pub fn is_usage_only_chunk(data: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct C<'a> {
        #[serde(borrow)]
        choices: Option<Vec<&'a serde_json::value::RawValue>>,
        #[serde(borrow)]
        usage: Option<&'a serde_json::value::RawValue>,
    }
    serde_json::from_str::<C>(data)
        .ok()
        .is_some_and(|c| c.usage.is_some() && c.choices.is_none_or(|c| c.is_empty()))
}

/// The `usage` of a complete JSON answer, kept as a response extension by the first step
/// that reads it (see [`answer_usage`]), so the steps above do not parse the answer again.
#[derive(Debug, Clone, Copy)]
pub struct AnswerUsage(pub Option<Usage>);

/// The `usage` of the JSON answer `json` whose head is `parts`: the one a step below already
/// read ([`AnswerUsage`]), else read now and kept for the steps above.
pub fn answer_usage(parts: &mut http::response::Parts, json: &[u8]) -> Option<Usage> {
    if let Some(u) = parts.extensions.get::<AnswerUsage>() {
        return u.0;
    }
    let u = extract_usage(json);
    parts.extensions.insert(AnswerUsage(u));
    u
}

/// Reads `usage` out of a completion (or final chunk) without building a tree.
pub fn extract_usage(json: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct WithUsage {
        usage: Option<Usage>,
    }
    serde_json::from_slice::<WithUsage>(json).ok()?.usage
}

/// What the steps read from a JSON answer, in one parse, without building its value tree
/// (the message contents are skipped, not copied): whether it is complete
/// ([`crate::layers::cache::replay::is_complete`]) and its `usage` (what [`extract_usage`]
/// reads). The upstream client reads both as it receives the answer and leaves them for
/// the steps above ([`AnswerUsage`], [`JsonAnswer`]), so an answer is parsed once, not
/// once per step.
pub fn read_json_answer(json: &[u8]) -> (bool, Option<Usage>) {
    // Not an answer this shape reads (an odd `choices`, not JSON): not complete, and the
    // usage as the limits step would read it on its own.
    check_json_answer(json).unwrap_or_else(|| (false, extract_usage(json)))
}

/// [`read_json_answer`] for a body that must be a chat completion: `None` when it is not one
/// at all (not JSON, no `choices` list of objects, or an `error` object instead). The
/// upstream client treats such a 200 as a broken upstream, not as an answer.
pub fn check_json_answer(json: &[u8]) -> Option<(bool, Option<Usage>)> {
    use serde::de::IgnoredAny;
    #[derive(serde::Deserialize)]
    struct Choice<'a> {
        #[serde(default, borrow)]
        finish_reason: Option<Cow<'a, str>>,
    }
    #[derive(serde::Deserialize)]
    struct Answer<'a> {
        #[serde(default)]
        error: Option<IgnoredAny>,
        #[serde(default, borrow)]
        choices: Option<Vec<Choice<'a>>>,
        #[serde(default, borrow)]
        usage: Option<&'a RawValue>,
    }
    let a = serde_json::from_slice::<Answer<'_>>(json).ok()?;
    if a.error.is_some() {
        return None;
    }
    let choices = a.choices?;
    let usage = a.usage.and_then(|raw| {
        serde_json::from_str::<Option<Usage>>(raw.get())
            .ok()
            .flatten()
    });
    let complete = !choices.is_empty()
        && choices.iter().all(|c| {
            matches!(
                c.finish_reason.as_deref(),
                Some("stop" | "length" | "tool_calls" | "function_call")
            )
        });
    Some((complete, usage))
}

/// A JSON answer the upstream client read whole, kept as a response extension for the cache
/// step: whether it finished ([`read_json_answer`]) and its bytes, the response body itself
/// (shared, not copied), so the cache stores a complete answer without collecting and
/// re-wrapping the body. Nothing between the upstream client and the cache step rewrites a
/// JSON body; a step that did would have to remove this.
#[derive(Debug, Clone)]
pub struct JsonAnswer {
    /// The answer finished (every choice has a finish reason).
    pub complete: bool,
    /// The response body.
    pub body: bytes::Bytes,
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelCard {
    /// The alias clients use.
    pub id: String,
    /// Always `"model"`.
    pub object: &'static str,
    /// Unix seconds (gateway start).
    pub created: u64,
    /// Who serves it (the backend name).
    pub owned_by: String,
}

/// `GET /v1/models` body.
#[derive(Debug, Clone, Serialize)]
pub struct ModelList {
    /// Always `"list"`.
    pub object: &'static str,
    /// The models.
    pub data: Vec<ModelCard>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ChatRequest, GatewayError> {
        ChatRequest::parse(Bytes::from(s.to_string()))
    }

    #[test]
    fn rewrites_model_and_keeps_everything_else_verbatim() {
        let r = parse(r#"{"model":"remote","messages":[{"role":"user","content":"hi"}],"temperature":0.10000000000000001,"x_custom":{"a":[1,2]}}"#).unwrap();
        assert_eq!(r.model, "remote");
        let out = String::from_utf8(r.upstream_body("gpt-4o-mini", true)).unwrap();
        assert_eq!(
            out,
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"temperature":0.10000000000000001,"x_custom":{"a":[1,2]}}"#
        );
    }

    #[test]
    fn stream_asks_for_usage() {
        let r = parse(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#)
            .unwrap();
        assert!(r.stream && !r.client_wants_usage);
        let out: serde_json::Value = serde_json::from_slice(&r.upstream_body("u", true)).unwrap();
        assert_eq!(out["stream_options"]["include_usage"], true);
        let r = parse(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"foo":1}}"#).unwrap();
        let out: serde_json::Value = serde_json::from_slice(&r.upstream_body("u", true)).unwrap();
        assert_eq!(out["stream_options"]["include_usage"], true);
        assert_eq!(out["stream_options"]["foo"], 1);
    }

    #[test]
    fn bad_inputs_are_400_with_param() {
        for (body, param) in [
            (r#"{"model":1,"messages":[]}"#, Some("model")),
            (
                r#"{"messages":[{"role":"user","content":"x"}]}"#,
                Some("model"),
            ),
            (r#"{"model":"m"}"#, Some("messages")),
            (r#"{"model":"m","messages":[]}"#, Some("messages")),
            (r#"{"model":"m","messages":"hi"}"#, Some("messages")),
            (
                r#"{"model":"m","messages":[{"content":"x"}]}"#,
                Some("messages"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#,
                Some("stream"),
            ),
            (r#"[1,2]"#, None),
            (r#"{"model":"m","#, None),
            ("", None),
        ] {
            match parse(body) {
                Err(GatewayError::BadRequest { param: p, .. }) => {
                    assert_eq!(p.as_deref(), param, "{body}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        assert!(ChatRequest::parse(Bytes::from_static(b"{\"model\":\"\xff\"}")).is_err());
    }

    #[test]
    fn bad_parameters_are_400_naming_the_parameter() {
        let m = r#""model":"m","messages":[{"role":"user","content":"hi"}]"#;
        for (extra, want_param, says) in [
            (r#""n":1000"#, "n", "between 1 and 128, got 1000"),
            (r#""n":0"#, "n", "between 1 and 128"),
            (r#""n":2.5"#, "n", "must be an integer"),
            (r#""max_tokens":-1"#, "max_tokens", "between 1 and"),
            (
                r#""max_tokens":"ten""#,
                "max_tokens",
                "must be an integer, got a string",
            ),
            (r#""max_tokens":1e3"#, "max_tokens", "must be an integer"),
            (
                r#""max_completion_tokens":0"#,
                "max_completion_tokens",
                "between",
            ),
            (
                r#""temperature":"hot""#,
                "temperature",
                "must be a number, got a string",
            ),
            (r#""temperature":2.5"#, "temperature", "between 0 and 2"),
            (r#""top_p":-0.1"#, "top_p", "between 0 and 1"),
            (
                r#""presence_penalty":[1]"#,
                "presence_penalty",
                "must be a number",
            ),
            (
                r#""tools":"nope""#,
                "tools",
                "must be an array of objects, got a string",
            ),
            (r#""tools":[1]"#, "tools", "item 0 is a number"),
            (r#""tool_choice":3"#, "tool_choice", "a string or an object"),
            (r#""stop":[1]"#, "stop", "item 0 is a number"),
            (r#""logprobs":"yes""#, "logprobs", "must be a boolean"),
            (r#""user":{}"#, "user", "must be a string, got an object"),
        ] {
            let body = format!("{{{m},{extra}}}");
            match parse(&body) {
                Err(GatewayError::BadRequest { param, message }) => {
                    assert_eq!(param.as_deref(), Some(want_param), "{body}");
                    assert!(message.contains(says), "{body}: {message}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        // Good values, and null for absent, pass.
        for extra in [
            r#""n":128,"max_tokens":1,"temperature":0,"top_p":1,"stop":"x""#,
            r#""n":null,"max_tokens":null,"tools":[{"type":"function"}],"tool_choice":"auto""#,
            r#""stop":["a","b"],"logprobs":true,"top_logprobs":5,"user":"u""#,
            r#""frequency_penalty":-2,"presence_penalty":2.0,"seed":-1,"x_other":"anything""#,
        ] {
            let body = format!("{{{m},{extra}}}");
            assert!(parse(&body).is_ok(), "{body}");
        }
    }

    #[test]
    fn message_content_must_be_text_parts_or_null() {
        for content in [r#"{"text":"x"}"#, "1", "true", r#"["x"]"#] {
            let body =
                format!(r#"{{"model":"m","messages":[{{"role":"user","content":{content}}}]}}"#);
            match parse(&body) {
                Err(GatewayError::BadRequest { param, message }) => {
                    assert_eq!(param.as_deref(), Some("messages"), "{body}");
                    assert!(message.contains("messages[0].content"), "{message}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        for content in [r#""x""#, "null", r#"[{"type":"text","text":"x"}]"#, "[]"] {
            let body =
                format!(r#"{{"model":"m","messages":[{{"role":"user","content":{content}}}]}}"#);
            assert!(parse(&body).is_ok(), "{body}");
        }
    }

    #[test]
    fn lone_surrogates_are_refused_and_pairs_kept() {
        for s in [r"\ud800", r"\uDFFF x", r"a\udbff\u0041"] {
            let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{s}"}}]}}"#);
            match parse(&body) {
                Err(GatewayError::BadRequest { message, .. }) => {
                    assert!(message.contains("invalid string"), "{message}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        // Anywhere in the body, not only in messages.
        let body = r#"{"model":"m","messages":[{"role":"user"}],"metadata":{"k":"\udc00"}}"#;
        assert!(parse(body).is_err());
        // A pair (an emoji), an escaped backslash before `ud800`, other escapes: fine.
        for s in [r"\ud83d\ude00", r"\\ud800", r"\u00e9t\u00e9"] {
            let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{s}"}}]}}"#);
            assert!(parse(&body).is_ok(), "{body}");
        }
    }

    #[test]
    fn escaped_keys_survive() {
        let r = parse(r#"{"model":"m","messages":[{"role":"user"}],"we\"ird":1}"#).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.upstream_body("u", false)).unwrap();
        assert_eq!(v["we\"ird"], 1);
    }

    #[test]
    fn usage_extraction() {
        assert_eq!(
            extract_usage(br#"{"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#),
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
                total_tokens: 7,
                ..Usage::default()
            })
        );
        assert_eq!(extract_usage(br#"{"usage":null}"#), None);
        assert_eq!(extract_usage(b"nope"), None);
    }
}
