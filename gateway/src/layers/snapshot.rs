//! Pins the current configuration snapshot to the request.
//!
//! The request carries `Arc<Gateway>` as an extension from here on, so a reload in the middle
//! of a request never changes the rules it is served under: in-flight requests finish on the
//! config they started with.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::response::Response;
use http::Request;
use tower::{Layer, Service};

use crate::runtime::Gateway;

/// The live configuration, swapped atomically on reload.
pub type SharedGateway = Arc<ArcSwap<Gateway>>;

/// The snapshot a request runs under.
#[derive(Clone)]
pub struct Snapshot(pub Arc<Gateway>);

/// Inserts [`Snapshot`] into each request.
#[derive(Clone)]
pub struct SnapshotLayer {
    shared: SharedGateway,
}

impl SnapshotLayer {
    /// A layer reading from `shared`.
    pub fn new(shared: SharedGateway) -> Self {
        SnapshotLayer { shared }
    }
}

impl<S> Layer<S> for SnapshotLayer {
    type Service = SnapshotService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        SnapshotService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// See [`SnapshotLayer`].
#[derive(Clone)]
pub struct SnapshotService<S> {
    inner: S,
    shared: SharedGateway,
}

impl<S> Service<Request<Body>> for SnapshotService<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        req.extensions_mut()
            .insert(Snapshot(self.shared.load_full()));
        self.inner.call(req)
    }
}
