//! `slmgate_requests_total` and `slmgate_request_duration_seconds` for every request.
//!
//! Labels: `route` (the path, bounded by [`crate::metrics::route_label`]), `target` (the
//! chat decision's `x-slmgate-route`, empty elsewhere) and `status`. The duration runs to the
//! last byte of the body: the body is wrapped, and the sample is taken when it is dropped
//! (sent in full, or abandoned by the client), so streamed answers count their whole length.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::Request;
use http_body::{Frame, SizeHint};
use tower::{Layer, Service};

use super::BoxFuture;
use crate::metrics as m;

/// Counts and times every request (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpMetricsLayer;

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HttpMetrics { inner }
    }
}

/// See [`HttpMetricsLayer`].
#[derive(Clone, Debug)]
pub struct HttpMetrics<S> {
    inner: S,
}

/// Takes the sample when dropped.
struct Sample {
    start: Instant,
    route: &'static str,
    target: String,
    status: String,
}

impl Drop for Sample {
    fn drop(&mut self) {
        let (route, target, status) = (
            self.route,
            std::mem::take(&mut self.target),
            std::mem::take(&mut self.status),
        );
        static SERIES: m::HandleCache<
            (&'static str, String, String),
            (metrics::Counter, metrics::Histogram),
        > = m::HandleCache::new();
        let (requests, duration) = SERIES.get((route, target, status), |(r, t, s)| {
            (
                metrics::counter!(m::REQUESTS, "route" => *r, "target" => t.clone(), "status" => s.clone()),
                metrics::histogram!(m::REQUEST_DURATION, "route" => *r, "target" => t.clone(), "status" => s.clone()),
            )
        });
        requests.increment(1);
        duration.record(self.start.elapsed().as_secs_f64());
    }
}

pin_project_lite::pin_project! {
    struct Timed {
        #[pin]
        inner: Body,
        sample: Sample,
    }
}

impl http_body::Body for Timed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<S> Service<Request<Body>> for HttpMetrics<S>
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
        let start = Instant::now();
        let route = m::route_label(req.uri().path());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let Ok(resp) = fut.await;
            let target = resp
                .extensions()
                .get::<std::sync::Arc<crate::call::Decision>>()
                .map(|d| d.target.clone())
                .unwrap_or_default();
            let sample = Sample {
                start,
                route,
                target,
                status: resp.status().as_u16().to_string(),
            };
            Ok(resp.map(|inner| Body::new(Timed { inner, sample })))
        })
    }
}
