//! The one error type of the request path, always answered in OpenAI's error shape.
//!
//! `{"error": {"message", "type", "param", "code"}}` with the HTTP status clients expect:
//! malformed input 400, bad key 401, unknown model 404, oversized body 413, the client's pace
//! 429 (rate limits, budgets) and the gateway's capacity 503 (overload: the concurrency
//! limit, a full local queue), both with `Retry-After`, upstream failure 502, upstream or
//! gateway timeout 504. Messages about
//! the client's input echo the problem; internal failures stay generic in the body and are
//! logged in full.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use serde_json::json;

/// Every way a request can fail inside the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request body is not valid JSON or not a valid request.
    #[error("{message}")]
    BadRequest {
        /// What is wrong, for the client.
        message: String,
        /// The offending parameter, if one is to blame.
        param: Option<String>,
    },
    /// Missing or unknown API key.
    #[error("{0}")]
    Unauthorized(String),
    /// The key is valid but may not use this model.
    #[error("{0}")]
    Forbidden(String),
    /// An operator endpoint was called from the network while no admin key is configured.
    #[error("{0}")]
    AdminOnly(String),
    /// The requested model is not served here.
    #[error("{message}")]
    ModelNotFound {
        /// Explanation naming the model.
        message: String,
    },
    /// The path is not an endpoint of the gateway.
    #[error("unknown path {0}")]
    NotFound(String),
    /// The method is not allowed on this path.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The body is larger than `limits.max_body_bytes`.
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The client stalled sending its request body for `limits.body_read_timeout`.
    #[error("the request body stalled: no data for {0:?}")]
    BodyTimeout(Duration),
    /// The gateway is out of capacity: at `limits.max_concurrent_requests` (or shutting
    /// down), or a local model's queue is full. The server's state, not the caller's pace:
    /// 503, `server_error`, with `Retry-After`.
    #[error("{message}")]
    Overloaded {
        /// Why.
        message: String,
        /// Suggested wait.
        retry_after: Duration,
    },
    /// Too many requests from this caller (a rate limit, or the upstream said so and retries
    /// ran out).
    #[error("{message}")]
    RateLimited {
        /// Why.
        message: String,
        /// Suggested wait, if known.
        retry_after: Option<Duration>,
    },
    /// The upstream failed (connect error, 5xx after retries, broken response).
    #[error("{0}")]
    Upstream(String),
    /// The upstream did not answer within the backend timeout.
    #[error("{0}")]
    UpstreamTimeout(String),
    /// The whole request exceeded `limits.request_timeout`.
    #[error("request exceeded the gateway timeout of {0:?}")]
    GatewayTimeout(Duration),
    /// The target exists but cannot serve now (e.g. local model not loaded).
    #[error("{0}")]
    Unavailable(String),
    /// The backend is ejected after repeated failures (see [`crate::upstream::breaker`]).
    #[error("{message}")]
    Ejected {
        /// Which backend.
        message: String,
        /// When it will be tried again.
        retry_after: Duration,
    },
    /// A bug or an unexpected internal failure; details are logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    /// A 400 with a message and no parameter.
    pub fn bad_request(message: impl Into<String>) -> Self {
        GatewayError::BadRequest {
            message: message.into(),
            param: None,
        }
    }

    /// A 400 blaming one parameter.
    pub fn bad_param(param: &str, message: impl Into<String>) -> Self {
        GatewayError::BadRequest {
            message: message.into(),
            param: Some(param.to_string()),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status_code(&self) -> StatusCode {
        match self {
            GatewayError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            GatewayError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden(_) | GatewayError::AdminOnly(_) => StatusCode::FORBIDDEN,
            GatewayError::ModelNotFound { .. } | GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            GatewayError::Overloaded { .. }
            | GatewayError::Unavailable(_)
            | GatewayError::Ejected { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::Upstream(_) => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout(_) | GatewayError::GatewayTimeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `error.type` value.
    pub fn error_type(&self) -> &'static str {
        match self {
            GatewayError::BadRequest { .. }
            | GatewayError::ModelNotFound { .. }
            | GatewayError::NotFound(_)
            | GatewayError::MethodNotAllowed
            | GatewayError::PayloadTooLarge { .. }
            | GatewayError::BodyTimeout(_) => "invalid_request_error",
            GatewayError::Unauthorized(_)
            | GatewayError::Forbidden(_)
            | GatewayError::AdminOnly(_) => "authentication_error",
            GatewayError::RateLimited { .. } => "rate_limit_error",
            GatewayError::Upstream(_)
            | GatewayError::UpstreamTimeout(_)
            | GatewayError::GatewayTimeout(_) => "upstream_error",
            // A target that cannot serve, or no capacity left, is the server's state, not
            // the caller's pace.
            GatewayError::Overloaded { .. }
            | GatewayError::Unavailable(_)
            | GatewayError::Ejected { .. }
            | GatewayError::Internal(_) => "server_error",
        }
    }

    /// OpenAI's `error.code` value.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::BadRequest { .. } => "invalid_request",
            GatewayError::Unauthorized(_) => "invalid_api_key",
            GatewayError::Forbidden(_) => "model_not_allowed",
            GatewayError::AdminOnly(_) => "admin_only",
            GatewayError::ModelNotFound { .. } => "model_not_found",
            GatewayError::NotFound(_) => "unknown_url",
            GatewayError::MethodNotAllowed => "method_not_allowed",
            GatewayError::PayloadTooLarge { .. } => "request_too_large",
            GatewayError::BodyTimeout(_) => "request_timeout",
            GatewayError::Overloaded { .. } => "overloaded",
            GatewayError::RateLimited { .. } => "rate_limit_exceeded",
            GatewayError::Upstream(_) => "upstream_error",
            GatewayError::UpstreamTimeout(_) => "upstream_timeout",
            GatewayError::GatewayTimeout(_) => "gateway_timeout",
            GatewayError::Unavailable(_) => "unavailable",
            GatewayError::Ejected { .. } => "backend_ejected",
            GatewayError::Internal(_) => "internal_error",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            GatewayError::Overloaded { retry_after, .. } => Some(*retry_after),
            GatewayError::RateLimited { retry_after, .. } => *retry_after,
            GatewayError::Ejected { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The public message: internal errors are not echoed.
    fn public_message(&self) -> String {
        match self {
            GatewayError::Internal(_) => "internal gateway error".to_string(),
            other => other.to_string(),
        }
    }
}

/// Builds an OpenAI-shaped JSON error response.
pub fn openai_error(
    status: StatusCode,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: &str,
) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        // Shed load is expected under overload and counted by the metrics: a warning per
        // shed request would flood the log exactly when the gateway is busiest.
        if status.is_server_error() && !matches!(self, GatewayError::Overloaded { .. }) {
            tracing::warn!(error = %self, status = status.as_u16(), "request failed");
        } else {
            tracing::debug!(error = %self, status = status.as_u16(), "request rejected");
        }
        let param = match &self {
            GatewayError::BadRequest { param, .. } => param.as_deref(),
            GatewayError::ModelNotFound { .. } | GatewayError::Forbidden(_) => Some("model"),
            _ => None,
        };
        let mut resp = openai_error(
            status,
            &self.public_message(),
            self.error_type(),
            param,
            self.code(),
        );
        if let Some(d) = self.retry_after() {
            let secs = d.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn errors_have_openai_shape_and_status() {
        let cases = [
            (
                GatewayError::bad_param("messages", "bad"),
                400,
                "invalid_request_error",
            ),
            (
                GatewayError::Unauthorized("no key".into()),
                401,
                "authentication_error",
            ),
            (
                GatewayError::ModelNotFound {
                    message: "x".into(),
                },
                404,
                "invalid_request_error",
            ),
            (
                GatewayError::PayloadTooLarge { limit: 1 },
                413,
                "invalid_request_error",
            ),
            (GatewayError::Upstream("boom".into()), 502, "upstream_error"),
            (
                GatewayError::UpstreamTimeout("slow".into()),
                504,
                "upstream_error",
            ),
            (
                GatewayError::Unavailable("local model not loaded".into()),
                503,
                "server_error",
            ),
            (
                GatewayError::Internal("secret detail".into()),
                500,
                "server_error",
            ),
        ];
        for (err, status, kind) in cases {
            let resp = err.into_response();
            assert_eq!(resp.status().as_u16(), status);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"]["type"], kind);
            assert!(v["error"]["message"].is_string());
            assert!(!v["error"]["message"].as_str().unwrap().contains("secret"));
        }
    }

    #[tokio::test]
    async fn overload_sets_retry_after() {
        let resp = GatewayError::Overloaded {
            message: "busy".into(),
            retry_after: Duration::from_millis(1500),
        }
        .into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["type"], "server_error");
        assert_eq!(v["error"]["code"], "overloaded");
        // A target that cannot serve does not invite a retry within the second.
        let resp = GatewayError::Unavailable("not loaded".into()).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(resp.headers().get(header::RETRY_AFTER).is_none());
    }
}
