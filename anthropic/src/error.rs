//! Translation failures, and Anthropic's error shape.

use serde_json::Value;

use crate::types::{ErrorBody, ErrorKind};

/// Why a request or answer cannot be translated.
///
/// Every one is the caller's fault or a feature the other API lacks, so the gateway answers
/// it as a 400 (`invalid_request_error` for an Anthropic client, OpenAI's
/// `invalid_request_error` for an OpenAI client) naming [`TranslateError::field`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TranslateError {
    /// The offending field, as a JSON path (`messages[2].content[0].type`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
    /// True when the input is valid but uses a feature the other API lacks (`n > 1`,
    /// `response_format`, a document block); false when it is malformed.
    pub unsupported: bool,
}

impl TranslateError {
    /// A malformed field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        TranslateError {
            field: field.into(),
            message: message.into(),
            unsupported: false,
        }
    }

    /// A valid field the other API cannot express.
    pub fn unsupported(field: impl Into<String>, message: impl Into<String>) -> Self {
        TranslateError {
            field: field.into(),
            message: message.into(),
            unsupported: true,
        }
    }

    /// The error as Anthropic's body (`invalid_request_error`, status 400).
    pub fn to_anthropic_body(&self) -> Value {
        anthropic_error_body(ErrorKind::InvalidRequest, &self.to_string())
    }

    /// The error as OpenAI's body (`invalid_request_error` with `param`, status 400).
    pub fn to_openai_body(&self) -> Value {
        serde_json::json!({
            "error": {
                "message": self.to_string(),
                "type": "invalid_request_error",
                "param": self.field,
                "code": if self.unsupported { "unsupported_parameter" } else { "invalid_value" },
            }
        })
    }
}

/// Anthropic's error body: `{"type":"error","error":{"type":kind,"message":message}}`.
/// Answer it with [`ErrorKind::status`].
pub fn anthropic_error_body(kind: ErrorKind, message: &str) -> Value {
    serde_json::to_value(ErrorBody::new(kind, message)).unwrap_or(Value::Null)
}

/// The [`ErrorKind`] for an HTTP status (see [`ErrorKind::from_status`]).
pub fn error_kind_for_status(status: u16) -> ErrorKind {
    ErrorKind::from_status(status)
}

/// Re-shape an OpenAI error answer (the gateway's own, or an OpenAI backend's) with HTTP
/// `status` as Anthropic's. The kind follows the status; the message is `error.message` when
/// the body has one, else the body's text (a non-JSON body is passed as `raw`).
pub fn openai_error_to_anthropic(status: u16, body: &[u8]) -> (u16, Value) {
    let kind = ErrorKind::from_status(status);
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| v.get("error").and_then(Value::as_str).map(str::to_owned))
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    (kind.status(), anthropic_error_body(kind, &message))
}

/// Re-shape an Anthropic backend's error answer with HTTP `status` as OpenAI's body
/// `{"error":{"message","type","param":null,"code"}}`. The status is kept, except 529
/// (`overloaded_error`, unknown to OpenAI clients) which becomes 503.
pub fn anthropic_error_to_openai(status: u16, body: &[u8]) -> (u16, Value) {
    let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
    let kind = parsed
        .as_ref()
        .and_then(|b| ErrorKind::from_type(&b.error.kind))
        .unwrap_or_else(|| ErrorKind::from_status(status));
    let message = parsed
        .map(|b| b.error.message)
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    let (openai_type, code) = match kind {
        ErrorKind::InvalidRequest | ErrorKind::RequestTooLarge => ("invalid_request_error", None),
        ErrorKind::Authentication => ("authentication_error", Some("invalid_api_key")),
        ErrorKind::Permission => ("permission_error", None),
        ErrorKind::NotFound => ("not_found_error", Some("model_not_found")),
        ErrorKind::RateLimit => ("rate_limit_error", Some("rate_limit_exceeded")),
        ErrorKind::Api => ("api_error", None),
        ErrorKind::Overloaded => ("server_error", Some("overloaded")),
    };
    let status = if status == 529 { 503 } else { status };
    (
        status,
        serde_json::json!({
            "error": { "message": message, "type": openai_type, "param": null, "code": code }
        }),
    )
}
