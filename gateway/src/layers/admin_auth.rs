//! Operator access: `/admin/*`, `/v1/usage`, `/dashboard` (and `/metrics` when
//! `admin.protect_metrics` is set).
//!
//! With an admin key configured (`admin.key`, embedded default `${SLMGATE_ADMIN_KEY}`), the
//! caller must present it as `Authorization: Bearer <key>` (or `x-api-key`); the digest is
//! compared in constant time. With none configured, only loopback clients get in: an operator
//! on the box can look, the network cannot. Client keys never open these endpoints.
//!
//! Browsers cannot send a bearer header when navigating, so the dashboard's sign-in form
//! (`POST /dashboard/login`, [`crate::dashboard`]) opens a *session*: a random token set as
//! an `HttpOnly`, `SameSite=Strict` cookie named [`ADMIN_COOKIE`] and accepted here like the
//! key, for [`SESSION_TTL`]. The cookie never holds the admin key itself, so a leaked cookie
//! (a browser profile, a proxy log) expires and does not reveal the key. Sessions live in
//! memory ([`AdminSessions`]): they survive reloads, end with the process, and end when the
//! admin key changes. An unauthenticated browser asking for a `/dashboard` page gets the
//! sign-in form (401).
//!
//! Guessing the admin key is throttled per client address: after [`MAX_FAILED_LOGINS`]
//! wrong keys (sign-in form or header) within [`FAILED_LOGIN_WINDOW`], further key checks
//! from that address are answered 429 with `Retry-After` until the window ends, whatever
//! key they present (an IPv6 client counts by its /64). A valid session keeps working
//! meanwhile. Behind a reverse proxy every client shares the proxy's address, and so its
//! throttle.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, Request, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower::{Layer, Service};

use super::auth::presented_key;
use super::snapshot::Snapshot;
use super::BoxFuture;
use slmgate_openai::error::GatewayError;

/// The cookie the dashboard's sign-in form sets: it holds a session token (see the module
/// docs).
pub const ADMIN_COOKIE: &str = "slmgate_admin";

/// How long a dashboard session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Sessions kept at most; beyond that the one closest to expiry is ended.
pub const MAX_SESSIONS: usize = 1024;

/// Wrong admin keys one client address may present within [`FAILED_LOGIN_WINDOW`].
pub const MAX_FAILED_LOGINS: u32 = 5;

/// The window [`MAX_FAILED_LOGINS`] counts in; it starts at an address's first failure.
pub const FAILED_LOGIN_WINDOW: Duration = Duration::from_secs(60);

/// Client addresses whose failures are tracked at most (an attacker with many addresses
/// must not grow the table without bound); past it, addresses whose window ended are
/// forgotten, then the oldest.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// The session token a request presents in the [`ADMIN_COOKIE`] cookie.
fn session_cookie(req: &Request<Body>) -> Option<&str> {
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

/// The address a failure counts against: an IPv4 address, or an IPv6 address's /64 (one
/// host usually holds a whole /64 and could otherwise try each of its addresses in turn).
fn throttle_bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
        v4 => v4,
    }
}

/// One dashboard session.
#[derive(Debug, Clone, Copy)]
struct Session {
    expires: Instant,
    /// The admin key's digest when the session was opened: a new key ends old sessions.
    key: [u8; 32],
}

/// Wrong keys from one address.
#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

#[derive(Debug, Default)]
struct SessionState {
    /// By the sha256 of the token (the token itself is never stored).
    sessions: HashMap<[u8; 32], Session>,
    failures: HashMap<IpAddr, Failures>,
}

/// Dashboard sessions and the failed-key throttle (see the module docs). Process state: a
/// cheap `Clone` handle that each configuration snapshot takes over from the previous one.
#[derive(Debug, Clone, Default)]
pub struct AdminSessions(Arc<Mutex<SessionState>>);

impl AdminSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, SessionState> {
        // Every update is a map insert or removal: a panic cannot leave one half-done.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens a session under the admin key `key` (its digest) and returns its token.
    pub fn open(&self, key: [u8; 32]) -> String {
        let token = hex::encode(rand::random::<[u8; 32]>());
        let now = Instant::now();
        let mut st = self.lock();
        st.sessions.retain(|_, s| s.expires > now);
        if st.sessions.len() >= MAX_SESSIONS {
            let oldest = st
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                st.sessions.remove(&k);
            }
        }
        st.sessions.insert(
            Sha256::digest(token.as_bytes()).into(),
            Session {
                expires: now + SESSION_TTL,
                key,
            },
        );
        token
    }

    /// Returns true if and only if `token` is a live session opened under the admin key
    /// whose digest is `key`.
    pub fn is_valid(&self, token: &str, key: &[u8; 32]) -> bool {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.lock()
            .sessions
            .get(&digest)
            .is_some_and(|s| s.expires > Instant::now() && bool::from(s.key.ct_eq(key)))
    }

    /// How long `ip` must wait before its next key is checked, when it is throttled.
    pub fn throttled(&self, ip: IpAddr) -> Option<Duration> {
        let st = self.lock();
        let f = st.failures.get(&throttle_bucket(ip))?;
        let left = FAILED_LOGIN_WINDOW.checked_sub(f.since.elapsed())?;
        (f.count >= MAX_FAILED_LOGINS && !left.is_zero()).then_some(left)
    }

    /// Counts a wrong key presented by `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let ip = throttle_bucket(ip);
        let now = Instant::now();
        let mut st = self.lock();
        if st.failures.len() >= MAX_TRACKED_ADDRESSES && !st.failures.contains_key(&ip) {
            st.failures
                .retain(|_, f| now.duration_since(f.since) < FAILED_LOGIN_WINDOW);
            if st.failures.len() >= MAX_TRACKED_ADDRESSES {
                let oldest = st
                    .failures
                    .iter()
                    .min_by_key(|(_, f)| f.since)
                    .map(|(ip, _)| *ip);
                if let Some(old) = oldest {
                    st.failures.remove(&old);
                }
            }
        }
        let f = st.failures.entry(ip).or_insert(Failures {
            since: now,
            count: 0,
        });
        if now.duration_since(f.since) >= FAILED_LOGIN_WINDOW {
            *f = Failures {
                since: now,
                count: 0,
            };
        }
        f.count = f.count.saturating_add(1);
        if f.count == MAX_FAILED_LOGINS {
            tracing::warn!(client = %ip, window = ?FAILED_LOGIN_WINDOW, "too many wrong admin keys: throttling this address");
        }
    }

    /// Forgets `ip`'s failures (it presented the right key).
    pub fn succeeded(&self, ip: IpAddr) {
        self.lock().failures.remove(&throttle_bucket(ip));
    }
}

/// The answer to a throttled key check: 429 with `Retry-After`, in OpenAI's shape.
pub fn throttled_response(wait: Duration) -> Response {
    GatewayError::RateLimited {
        message: "too many wrong admin keys from this address; try again later".into(),
        retry_after: Some(wait),
    }
    .into_response()
}

/// Who may use the operator endpoints (built from `admin:`).
#[derive(Debug, Clone, Default)]
pub struct AdminAccess {
    /// sha256 of the admin key; `None` = loopback clients only.
    pub sha256: Option<[u8; 32]>,
    /// `/metrics` needs the admin key too.
    pub protect_metrics: bool,
    /// Dashboard sessions and the failed-key throttle (process state, kept across reloads).
    pub sessions: AdminSessions,
}

impl AdminAccess {
    /// Returns true if and only if `token` is a live dashboard session under the current
    /// admin key.
    pub fn session_valid(&self, token: &str) -> bool {
        self.sha256
            .as_ref()
            .is_some_and(|key| self.sessions.is_valid(token, key))
    }

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
        if session_cookie(&req).is_some_and(|t| gw.admin.session_valid(t)) {
            return Box::pin(self.inner.call(req));
        }
        let presented = presented_key(&req);
        // Only a key is a guess worth throttling: a stale session cookie (after a restart)
        // is a 256-bit random token, and counting it would lock out the browser polling
        // with it.
        let ip = peer.map(|p| p.ip());
        let guarded = gw.admin.sha256.is_some() && presented.is_some();
        if let Some(wait) = ip
            .filter(|_| guarded)
            .and_then(|ip| gw.admin.sessions.throttled(ip))
        {
            return Box::pin(async move { Ok(throttled_response(wait)) });
        }
        if gw.admin.allows(presented, peer) {
            if let Some(ip) = ip.filter(|_| guarded) {
                gw.admin.sessions.succeeded(ip);
            }
            return Box::pin(self.inner.call(req));
        }
        if let Some(ip) = ip.filter(|_| guarded) {
            gw.admin.sessions.failed(ip);
        }
        if gw.admin.sha256.is_some() && wants_login_page(&req) {
            return Box::pin(async { Ok(login_page(None)) });
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

/// The dashboard's sign-in form.
const LOGIN_HTML: &str = include_str!("../../assets/dashboard/login.html");

/// Returns true if and only if the request is a browser navigating to a dashboard page
/// (which then gets the sign-in form instead of a JSON error).
pub fn wants_login_page(req: &Request<Body>) -> bool {
    let path = req.uri().path();
    req.method() == http::Method::GET
        && (path == "/dashboard" || path == "/dashboard/")
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
}

/// The sign-in form (401), with an optional error line.
pub fn login_page(error: Option<&str>) -> Response {
    let html = match error {
        Some(e) => LOGIN_HTML.replace(
            "<!--ERROR-->",
            &format!("<p class=\"t-err\">{}</p>", html_escape(e)),
        ),
        None => LOGIN_HTML.to_string(),
    };
    let mut r = Response::new(Body::from(html));
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
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
            sessions: AdminSessions::default(),
        };
        assert!(a.allows(Some("s3cret"), peer("10.0.0.1:1")));
        assert!(!a.allows(Some("wrong"), peer("127.0.0.1:1")));
        assert!(!a.allows(None, peer("127.0.0.1:1")));
    }

    #[test]
    fn the_cookie_carries_a_session_token() {
        let req = Request::get("/dashboard")
            .header("cookie", "a=b; slmgate_admin=t0ken; c=d")
            .body(Body::empty())
            .expect("request");
        assert_eq!(session_cookie(&req), Some("t0ken"));
        let req = Request::get("/dashboard")
            .header("cookie", "other=x")
            .body(Body::empty())
            .expect("request");
        assert_eq!(session_cookie(&req), None);
    }

    #[test]
    fn sessions_belong_to_the_key_they_were_opened_under() {
        let key: [u8; 32] = Sha256::digest(b"s3cret").into();
        let other: [u8; 32] = Sha256::digest(b"new").into();
        let s = AdminSessions::default();
        let token = s.open(key);
        assert_eq!(token.len(), 64);
        assert_ne!(token, s.open(key), "tokens are random");
        assert!(s.is_valid(&token, &key));
        assert!(
            !s.is_valid(&token, &other),
            "a new admin key ends old sessions"
        );
        assert!(!s.is_valid("s3cret", &key), "the key is not a session");
        for _ in 0..MAX_SESSIONS + 5 {
            s.open(key);
        }
        assert!(s.lock().sessions.len() <= MAX_SESSIONS);
    }

    #[test]
    fn wrong_keys_are_throttled_per_address() {
        let s = AdminSessions::default();
        let (a, b): (IpAddr, IpAddr) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        );
        for _ in 0..MAX_FAILED_LOGINS - 1 {
            s.failed(a);
        }
        assert_eq!(s.throttled(a), None);
        s.failed(a);
        let wait = s.throttled(a).expect("throttled");
        assert!(wait <= FAILED_LOGIN_WINDOW && wait > Duration::ZERO);
        assert_eq!(s.throttled(b), None, "per address");
        let (v6, same_64): (IpAddr, IpAddr) = (
            "2001:db8:1:2::1".parse().expect("ip"),
            "2001:db8:1:2:ffff::9".parse().expect("ip"),
        );
        for _ in 0..MAX_FAILED_LOGINS {
            s.failed(v6);
        }
        assert!(s.throttled(same_64).is_some(), "an IPv6 /64 is one client");
        s.succeeded(a);
        assert_eq!(s.throttled(a), None);
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
