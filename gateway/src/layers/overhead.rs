//! `x-slmgate-overhead-ms`: time spent inside the gateway, excluding upstream waits.
//!
//! The layer starts a clock, gives the request an [`UpstreamClock`] that upstream calls add
//! their wait (and retry back-off) to, and when the response head comes back sets the header
//! to `total - upstream`, in milliseconds with microsecond resolution. For streams the figure
//! covers the path to the response head: the body then flows straight through.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, Request};
use tower::{Layer, Service};

use super::BoxFuture;
use crate::upstream::UpstreamClock;

/// The response header name.
pub const OVERHEAD_HEADER: &str = "x-slmgate-overhead-ms";

/// Adds [`OVERHEAD_HEADER`] to every response.
#[derive(Clone, Copy, Debug, Default)]
pub struct OverheadLayer;

impl<S> Layer<S> for OverheadLayer {
    type Service = Overhead<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Overhead { inner }
    }
}

/// See [`OverheadLayer`].
#[derive(Clone, Debug)]
pub struct Overhead<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for Overhead<S>
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
        let start = Instant::now();
        let clock = UpstreamClock::default();
        req.extensions_mut().insert(clock.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let Ok(mut resp) = fut.await;
            let own = start.elapsed().saturating_sub(clock.total());
            let ms = own.as_secs_f64() * 1000.0;
            if let Ok(v) = HeaderValue::from_str(&format!("{ms:.3}")) {
                resp.headers_mut().insert(OVERHEAD_HEADER, v);
            }
            Ok(resp)
        })
    }
}
