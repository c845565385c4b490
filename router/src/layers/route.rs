//! The route step: decides where a parsed chat request goes.
//!
//! Today the decision is the configured alias: its primary target and ordered fallbacks,
//! after checking the caller may use it. The router issue replaces this step's body with
//! classification (`auto`) and the policy issue adds rules; both keep the same output, a
//! [`Decision`] extension that the forwarding service executes.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::Request;
use tower::{Layer, Service};

use super::snapshot::Snapshot;
use super::BoxFuture;
use crate::api::ChatRequest;
use crate::error::GatewayError;
use crate::runtime::{Caller, ModelRoute};

/// Where a request goes, and why.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The alias and its ordered targets.
    pub route: Arc<ModelRoute>,
    /// Which step decided (`alias` for a plain alias lookup).
    pub strategy: &'static str,
    /// Human-readable reason (returned in `x-slmgate-reason`).
    pub reason: String,
}

/// Resolves the requested model into a [`Decision`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RouteLayer;

impl<S> Layer<S> for RouteLayer {
    type Service = Route<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Route { inner }
    }
}

/// See [`RouteLayer`].
#[derive(Clone, Debug)]
pub struct Route<S> {
    inner: S,
}

/// The pure decision function (no IO), shared with dry runs.
pub fn decide(
    gw: &crate::runtime::Gateway,
    caller: Option<&Caller>,
    req: &ChatRequest,
) -> Result<Decision, GatewayError> {
    if let Some(key) = caller.and_then(|c| c.key.as_ref()) {
        if !key.models.is_empty() && !key.models.iter().any(|m| m == &req.model) {
            return Err(GatewayError::Forbidden(format!(
                "key `{}` may not use the model `{}`",
                key.name, req.model
            )));
        }
    }
    let route = gw
        .resolve(&req.model)
        .map_err(|message| GatewayError::ModelNotFound { message })?;
    Ok(Decision {
        route: route.clone(),
        strategy: "alias",
        reason: format!("alias `{}` → {:?}", req.model, route.targets[0]),
    })
}

impl<S> Service<Request<Body>> for Route<S>
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
        let ext = req.extensions();
        let (Some(Snapshot(gw)), Some(chat)) = (ext.get::<Snapshot>(), ext.get::<ChatRequest>())
        else {
            return Box::pin(async {
                Ok(GatewayError::Internal("route step without request".into()).into_response())
            });
        };
        match decide(gw, ext.get::<Caller>(), chat) {
            Ok(d) => {
                req.extensions_mut().insert(d);
                Box::pin(self.inner.call(req))
            }
            Err(e) => Box::pin(async move { Ok(e.into_response()) }),
        }
    }
}
