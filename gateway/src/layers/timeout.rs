//! Whole-request timeout (`limits.request_timeout`): 504 in OpenAI's error shape.
//!
//! The deadline covers everything up to the response head (queueing, retries, fallbacks).
//! A stream that has started is bounded by each backend's idle timeout instead, so a long
//! answer is not cut at an arbitrary point.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::Request;
use tower::{Layer, Service};

use super::BoxFuture;
use slmgate_openai::error::GatewayError;

/// When the request's deadline passes (a request extension): a step that is dropped
/// unanswered can tell a timeout from a client that left (see
/// [`crate::layers::account`]).
#[derive(Clone, Copy, Debug)]
pub struct RequestDeadline(pub Instant);

/// Answers 504 when the inner service takes longer than the timeout.
#[derive(Clone, Copy, Debug)]
pub struct RequestTimeoutLayer {
    timeout: Duration,
}

impl RequestTimeoutLayer {
    /// A layer with this deadline.
    pub fn new(timeout: Duration) -> Self {
        RequestTimeoutLayer { timeout }
    }
}

impl<S> Layer<S> for RequestTimeoutLayer {
    type Service = RequestTimeout<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestTimeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// See [`RequestTimeoutLayer`].
#[derive(Clone, Debug)]
pub struct RequestTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Service<Request<Body>> for RequestTimeout<S>
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

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let timeout = self.timeout;
        req.extensions_mut()
            .insert(RequestDeadline(Instant::now() + timeout));
        let fut = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r,
                Err(_) => Ok(GatewayError::GatewayTimeout(timeout).into_response()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{service_fn, ServiceExt};

    #[tokio::test]
    async fn slow_handlers_get_504() {
        let slow = service_fn(|_req: Request<Body>| async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok::<_, Infallible>(Response::new(Body::empty()))
        });
        let svc = RequestTimeoutLayer::new(Duration::from_millis(20)).layer(slow);
        let resp = svc.oneshot(Request::new(Body::empty())).await.unwrap();
        assert_eq!(resp.status(), http::StatusCode::GATEWAY_TIMEOUT);
    }
}
