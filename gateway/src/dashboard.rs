//! The cost dashboard at `/dashboard`: a static page embedded in the binary (no CDN, works
//! offline) that polls `GET /v1/usage` (grouped by time) and `GET /v1/usage/recent` every
//! two seconds and redraws: the numbers it shows are exactly the API's.
//!
//! Every route here sits behind [`AdminAuthLayer`](crate::layers::admin_auth::AdminAuthLayer)
//! except the sign-in form's `POST /dashboard/login`, which checks the key itself (throttled
//! like the layer's checks) and opens a session whose token it sets as an `HttpOnly` cookie,
//! so the browser can navigate (see [`crate::layers::admin_auth`]).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use http::{header, HeaderValue, StatusCode};
use serde::Deserialize;

use crate::layers::admin_auth::{login_page, throttled_response, ADMIN_COOKIE, SESSION_TTL};
use crate::layers::snapshot::Snapshot;

const INDEX_HTML: &str = include_str!("../assets/dashboard/index.html");
const APP_JS: &str = include_str!("../assets/dashboard/app.js");
const APP_CSS: &str = include_str!("../assets/dashboard/app.css");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = Response::new(Body::from(body));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // The page loads nothing from elsewhere; say so to the browser.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// `GET /dashboard`.
pub async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

/// `GET /dashboard/app.js`.
pub async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

/// `GET /dashboard/app.css`.
pub async fn app_css() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

/// The sign-in form's fields.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    key: String,
}

/// `POST /dashboard/login`: a valid admin key opens a session, whose token becomes an
/// `HttpOnly`, `SameSite=Strict` cookie, and the browser is sent to `/dashboard`; a wrong one
/// gets the form again (401), and too many wrong ones from one address a 429.
pub async fn login(
    Extension(Snapshot(gw)): Extension<Snapshot>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    // A malformed post gets OpenAI's error shape like every other endpoint, not axum's text.
    let Form(form) = match form {
        Ok(f) => f,
        Err(e) => {
            return slmgate_openai::error::GatewayError::bad_param(
                "key",
                format!(
                    "expected a form with the admin key (`key=...`): {}",
                    e.body_text()
                ),
            )
            .into_response()
        }
    };
    let key = form.key.trim();
    // With no admin key configured there is nothing to sign in with (loopback clients get
    // the dashboard directly); the peer address does not matter once a key is set.
    let Some(admin_key) = gw.admin.sha256 else {
        return login_page(Some("wrong admin key"));
    };
    let ip = peer.map(|Extension(ConnectInfo(p))| p.ip());
    if let Some(wait) = ip.and_then(|ip| gw.admin.sessions.throttled(ip)) {
        return throttled_response(wait);
    }
    if !gw.admin.allows(Some(key), None) {
        if let Some(ip) = ip {
            gw.admin.sessions.failed(ip);
        }
        return login_page(Some("wrong admin key"));
    }
    if let Some(ip) = ip {
        gw.admin.sessions.succeeded(ip);
    }
    // The cookie holds a fresh random token, never the key (hex: always a valid cookie).
    let token = gw.admin.sessions.open(admin_key);
    let cookie = format!(
        "{ADMIN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/dashboard"));
    match HeaderValue::from_str(&cookie) {
        Ok(mut v) => {
            v.set_sensitive(true);
            r.headers_mut().insert(header::SET_COOKIE, v);
            r
        }
        Err(_) => {
            slmgate_openai::error::GatewayError::Internal("session cookie".into()).into_response()
        }
    }
}

/// The dashboard's routes: the page and its assets behind the admin key, and the sign-in
/// form's `POST /dashboard/login` (which checks the key itself).
pub fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    use axum::routing::{get, post};
    let pages = axum::Router::new()
        .route("/dashboard", get(index))
        .route("/dashboard/", get(index))
        .route("/dashboard/app.js", get(app_js))
        .route("/dashboard/app.css", get(app_css))
        .route_layer(crate::layers::admin_auth::AdminAuthLayer);
    pages.route("/dashboard/login", post(login))
}
