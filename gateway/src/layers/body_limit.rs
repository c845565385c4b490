//! Request body size limit (`limits.max_body_bytes`): 413 in OpenAI's error shape.
//!
//! A declared `Content-Length` over the limit is refused before reading a byte; a chunked body
//! is wrapped in `http_body_util::Limited`, and whoever reads it gets an error that
//! [`is_too_large`] recognises (the parse layer turns it into the same 413).

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{header, Request};
use http_body_util::{LengthLimitError, Limited};
use tower::{Layer, Service};

use super::BoxFuture;
use slmgate_openai::error::GatewayError;

/// The configured limit, visible to inner layers.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// Limits request bodies.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimitLayer {
    limit: usize,
}

impl BodyLimitLayer {
    /// At most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        BodyLimitLayer { limit }
    }
}

impl<S> Layer<S> for BodyLimitLayer {
    type Service = BodyLimitService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BodyLimitService {
            inner,
            limit: self.limit,
        }
    }
}

/// See [`BodyLimitLayer`].
#[derive(Clone, Debug)]
pub struct BodyLimitService<S> {
    inner: S,
    limit: usize,
}

impl<S> Service<Request<Body>> for BodyLimitService<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let limit = self.limit;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Box::pin(
                async move { Ok(GatewayError::PayloadTooLarge { limit }.into_response()) },
            );
        }
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(BodyLimit(limit));
        let req = Request::from_parts(parts, Body::new(Limited::new(body, limit)));
        Box::pin(self.inner.call(req))
    }
}

/// Reads a whole request body under the limit the [`BodyLimitLayer`] recorded in `parts`:
/// 413 in OpenAI's shape when it is exceeded (a chunked body found too large while reading),
/// 408 when the client stalled past `limits.body_read_timeout` ([`BodyReadTimeout`]), 400
/// when the body cannot be read.
pub async fn read_body(
    parts: &http::request::Parts,
    body: Body,
) -> Result<bytes::Bytes, GatewayError> {
    let limit = parts
        .extensions
        .get::<BodyLimit>()
        .map_or(usize::MAX, |l| l.0);
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => Ok(b),
        Err(e) if is_too_large(&e) => Err(GatewayError::PayloadTooLarge { limit }),
        Err(e) if caused_by::<tower_http::timeout::TimeoutError>(&e) => {
            Err(GatewayError::BodyTimeout(
                parts
                    .extensions
                    .get::<BodyReadTimeout>()
                    .map_or(std::time::Duration::ZERO, |t| t.0),
            ))
        }
        Err(e) => Err(GatewayError::bad_request(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// True when `err` (from reading a limited body) means the body was too large.
pub fn is_too_large(err: &(dyn std::error::Error + 'static)) -> bool {
    caused_by::<LengthLimitError>(err)
}

/// True when `err` or one of its sources is a `T`.
fn caused_by<T: std::error::Error + 'static>(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<T>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// The body-read timeout the connection applies to this request's body (a request
/// extension set by [`crate::connections`]), for the 408's message.
#[derive(Clone, Copy, Debug)]
pub struct BodyReadTimeout(pub std::time::Duration);
