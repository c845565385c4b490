//! Client authentication: `Authorization: Bearer <key>` or `x-api-key: <key>` (what the
//! Anthropic SDKs send) checked against `keys`.
//!
//! With no keys configured (in `keys:` or created at run time, see [`crate::admin_keys`]) the
//! gateway is open and every caller is anonymous; `auth: none` keeps it open even when runtime
//! keys exist (a presented runtime key is then recognized, for accounting). Keys are
//! looked up by the sha256 digest of the presented secret ([`crate::keys::Keys::find`]). The matched
//! key becomes a [`Caller`] extension, and its model allow-list is enforced by the route step.
//! The client's `Authorization` header never travels further than this: upstream calls carry
//! the backend's own key.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{header, Request};
use tower::{Layer, Service};

use super::snapshot::Snapshot;
use super::BoxFuture;
use crate::keys::Caller;
use crate::telemetry;
use slmgate_openai::error::GatewayError;

/// Requires a valid client key when keys are configured.
#[derive(Clone, Copy, Debug, Default)]
pub struct AuthLayer;

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Auth { inner }
    }
}

/// See [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
}

/// Extracts the bearer token (also accepts `x-api-key`, as some SDKs send).
pub(crate) fn presented_key(req: &Request<Body>) -> Option<&str> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        let s = v.to_str().ok()?.trim();
        let (scheme, rest) = s.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim())
            .filter(|k| !k.is_empty());
    }
    req.headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

impl<S> Service<Request<Body>> for Auth<S>
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
        let Some(Snapshot(gw)) = req.extensions().get::<Snapshot>().cloned() else {
            return Box::pin(async {
                Ok(GatewayError::Internal("auth layer without snapshot".into()).into_response())
            });
        };
        // Runtime keys close an open gateway too, unless it says `auth: none`.
        let required = !gw.keys.is_open() || (!gw.open_on_purpose && !gw.runtime_keys.is_empty());
        let caller = if !required && gw.runtime_keys.is_empty() {
            Caller { key: None }
        } else {
            // Only an actual check gets a span (an open gateway checks nothing).
            let span = telemetry::auth_span();
            let _in = span.enter();
            // The config's keys first, then the ones created at run time.
            let found = presented_key(&req)
                .and_then(|k| gw.keys.find(k).or_else(|| gw.runtime_keys.find(k)));
            match found {
                Some(key) => {
                    telemetry::record_auth(&span, "key", Some(&key.name));
                    Caller { key: Some(key) }
                }
                None if !required => Caller { key: None },
                None => {
                    let (result, msg) = if presented_key(&req).is_some() {
                        ("invalid", "invalid API key")
                    } else {
                        (
                            "missing",
                            "missing API key: send `Authorization: Bearer <key>`",
                        )
                    };
                    telemetry::record_auth(&span, result, None);
                    return Box::pin(async move {
                        Ok(GatewayError::Unauthorized(msg.into()).into_response())
                    });
                }
            }
            // The span ends here: the rest of the request is not part of the check.
        };
        req.extensions_mut().insert(caller);
        Box::pin(self.inner.call(req))
    }
}
