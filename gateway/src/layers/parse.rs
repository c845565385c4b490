//! Reads and parses the chat request body into a [`ChatCall`]: the first typed stage of the
//! chat pipeline (see [`crate::call`]).
//!
//! Malformed JSON, wrong types and missing fields are answered here with OpenAI-shaped 400s
//! (and an oversized chunked body with 413), so no later layer sees an invalid request.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{Method, Request};
use tower::{Layer, Service};

use super::body_limit::read_body;
use super::snapshot::Snapshot;
use super::BoxFuture;
use crate::call::ChatCall;
use crate::keys::Caller;
use slmgate_openai::chat::ChatRequest;
use slmgate_openai::error::GatewayError;

/// Parses chat completion bodies.
#[derive(Clone, Copy, Debug, Default)]
pub struct ParseChatLayer;

impl<S> Layer<S> for ParseChatLayer {
    type Service = ParseChat<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ParseChat { inner }
    }
}

/// See [`ParseChatLayer`].
#[derive(Clone, Debug)]
pub struct ParseChat<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for ParseChat<S>
where
    S: Service<ChatCall, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // Take the service that was polled ready; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            if req.method() != Method::POST {
                return Ok(GatewayError::MethodNotAllowed.into_response());
            }
            let (mut head, body) = req.into_parts();
            let Some(Snapshot(gw)) = head.extensions.remove::<Snapshot>() else {
                return Ok(
                    GatewayError::Internal("chat request without snapshot".into()).into_response(),
                );
            };
            let bytes = match read_body(&head, body).await {
                Ok(b) => b,
                Err(e) => return Ok(e.into_response()),
            };
            let caller = head.extensions.remove::<Caller>();
            match ChatRequest::parse(bytes) {
                Ok(chat) => {
                    inner
                        .call(ChatCall {
                            head,
                            gw,
                            caller,
                            chat,
                        })
                        .await
                }
                Err(e) => Ok(e.into_response()),
            }
        })
    }
}
