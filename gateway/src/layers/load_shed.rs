//! Concurrency limit with load shedding (`limits.max_concurrent_requests`).
//!
//! Instead of queueing without bound, a request that finds every slot taken is answered at
//! once with 503 and `Retry-After: 1`: a client or load balancer can retry elsewhere, and the
//! requests already admitted keep their latency. A slot is held until the response *body* is
//! finished, so a long stream counts as in flight for as long as it runs.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::Request;
use http_body::Frame;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use super::BoxFuture;
use slmgate_openai::error::GatewayError;

/// Sheds load above a fixed number of in-flight requests.
#[derive(Clone, Debug)]
pub struct LoadShedLayer {
    slots: Arc<Semaphore>,
    max: usize,
}

impl LoadShedLayer {
    /// At most `max` requests in flight.
    pub fn new(max: usize) -> Self {
        LoadShedLayer {
            slots: Arc::new(Semaphore::new(max.max(1))),
            max: max.max(1),
        }
    }

    /// Requests in flight right now.
    pub fn in_flight(&self) -> usize {
        self.max - self.slots.available_permits()
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            slots: self.slots.clone(),
        }
    }
}

/// See [`LoadShedLayer`].
#[derive(Clone, Debug)]
pub struct LoadShed<S> {
    inner: S,
    slots: Arc<Semaphore>,
}

impl<S> Service<Request<Body>> for LoadShed<S>
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
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            return Box::pin(async {
                Ok(GatewayError::Overloaded {
                    message: "the gateway is at its concurrent request limit; retry shortly".into(),
                    retry_after: Duration::from_secs(1),
                }
                .into_response())
            });
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let Ok(resp) = fut.await;
            Ok(resp.map(|b| {
                Body::new(HoldPermit {
                    inner: b,
                    _permit: permit,
                })
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that releases its concurrency slot when dropped.
    struct HoldPermit {
        #[pin]
        inner: Body,
        _permit: OwnedSemaphorePermit,
    }
}

impl http_body::Body for HoldPermit {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::{service_fn, ServiceExt};

    #[tokio::test]
    async fn sheds_above_the_limit_and_releases_with_the_body() {
        let layer = LoadShedLayer::new(1);
        let svc = layer.layer(service_fn(|_req: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::from("ok")))
        }));
        let first = svc
            .clone()
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(first.status(), 200);
        assert_eq!(layer.in_flight(), 1, "slot held while the body is alive");
        let second = svc
            .clone()
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(second.status(), 503);
        assert_eq!(second.headers()["retry-after"], "1");
        let _ = first.into_body().collect().await.unwrap();
        assert_eq!(layer.in_flight(), 0);
        let third = svc.oneshot(Request::new(Body::empty())).await.unwrap();
        assert_eq!(third.status(), 200);
    }
}
