//! Operator access: `/admin/*`, `/v1/usage`, `/dashboard` (and `/metrics` when
//! `admin.protect_metrics` is set).
//!
//! With an admin key configured (`admin.key`, embedded default `${SLMGATE_ADMIN_KEY}`), the
//! caller must present it as `Authorization: Bearer <key>` (or `x-api-key`); the digest is
//! compared in constant time. With none configured, only loopback clients get in: an operator
//! on the box can look, the network cannot. Client keys never open these endpoints.
//!
//! Browsers cannot send a bearer header when navigating, so the dashboard's sign-in form
//! (`POST /dashboard/login`, [`crate::dashboard`]) sets the key as an `HttpOnly`,
//! `SameSite=Strict` cookie named [`ADMIN_COOKIE`], accepted here like the header. An
//! unauthenticated browser asking for a `/dashboard` page gets the sign-in form (401).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use http::Request;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower::{Layer, Service};

use super::auth::presented_key;
use super::snapshot::Snapshot;
use super::BoxFuture;
use crate::error::GatewayError;

/// The cookie the dashboard's sign-in form sets.
pub const ADMIN_COOKIE: &str = "slmgate_admin";

/// The admin key presented by a request: the bearer header, `x-api-key`, or the
/// [`ADMIN_COOKIE`] cookie.
fn presented_admin_key(req: &Request<Body>) -> Option<&str> {
    if let Some(k) = presented_key(req) {
        return Some(k);
    }
    req.headers()
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == ADMIN_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// Who may use the operator endpoints (built from `admin:`).
#[derive(Debug, Clone, Default)]
pub struct AdminAccess {
    /// sha256 of the admin key; `None` = loopback clients only.
    pub sha256: Option<[u8; 32]>,
    /// `/metrics` needs the admin key too.
    pub protect_metrics: bool,
}

impl AdminAccess {
    /// Returns true if and only if a request presenting `key` from `peer` may use the
    /// operator endpoints.
    pub fn allows(&self, key: Option<&str>, peer: Option<SocketAddr>) -> bool {
        match &self.sha256 {
            Some(want) => key.is_some_and(|k| {
                let got: [u8; 32] = Sha256::digest(k.as_bytes()).into();
                bool::from(got.ct_eq(want))
            }),
            None => peer.is_some_and(|p| p.ip().is_loopback()),
        }
    }
}

/// Admits only operators (see the module docs). Needs the [`Snapshot`] extension and
/// axum's `ConnectInfo<SocketAddr>` (served with `into_make_service_with_connect_info`).
#[derive(Clone, Copy, Debug, Default)]
pub struct AdminAuthLayer;

impl<S> Layer<S> for AdminAuthLayer {
    type Service = AdminAuth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AdminAuth { inner }
    }
}

/// See [`AdminAuthLayer`].
#[derive(Clone, Debug)]
pub struct AdminAuth<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for AdminAuth<S>
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
        let Some(Snapshot(gw)) = req.extensions().get::<Snapshot>().cloned() else {
            return Box::pin(async {
                Ok(GatewayError::Internal("admin auth without snapshot".into()).into_response())
            });
        };
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let presented = presented_admin_key(&req);
        if gw.admin.allows(presented, peer) {
            return Box::pin(self.inner.call(req));
        }
        if gw.admin.sha256.is_some() && crate::dashboard::wants_login_page(&req) {
            return Box::pin(async { Ok(crate::dashboard::login_page(None)) });
        }
        let msg = if gw.admin.sha256.is_some() {
            if presented.is_some() {
                "invalid admin key"
            } else {
                "this endpoint needs the admin key: send `Authorization: Bearer <admin key>`"
            }
        } else {
            "no admin key is configured (admin.key / SLMGATE_ADMIN_KEY): this endpoint answers only to loopback clients"
        };
        let err = if gw.admin.sha256.is_some() {
            GatewayError::Unauthorized(msg.into())
        } else {
            GatewayError::AdminOnly(msg.into())
        };
        Box::pin(async move { Ok(err.into_response()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> Option<SocketAddr> {
        Some(s.parse().expect("addr"))
    }

    #[test]
    fn key_required_when_configured() {
        let a = AdminAccess {
            sha256: Some(Sha256::digest(b"s3cret").into()),
            protect_metrics: false,
        };
        assert!(a.allows(Some("s3cret"), peer("10.0.0.1:1")));
        assert!(!a.allows(Some("wrong"), peer("127.0.0.1:1")));
        assert!(!a.allows(None, peer("127.0.0.1:1")));
    }

    #[test]
    fn cookie_carries_the_key() {
        let req = Request::get("/dashboard")
            .header("cookie", "a=b; slmgate_admin=s3cret; c=d")
            .body(Body::empty())
            .expect("request");
        assert_eq!(presented_admin_key(&req), Some("s3cret"));
        let req = Request::get("/dashboard")
            .header("cookie", "other=x")
            .body(Body::empty())
            .expect("request");
        assert_eq!(presented_admin_key(&req), None);
    }

    #[test]
    fn loopback_only_without_key() {
        let a = AdminAccess::default();
        assert!(a.allows(None, peer("127.0.0.1:5")));
        assert!(a.allows(Some("anything"), peer("[::1]:5")));
        assert!(!a.allows(None, peer("192.168.1.2:5")));
        assert!(!a.allows(None, None));
    }
}
