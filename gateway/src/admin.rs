//! Operator endpoints for the configuration: `POST /admin/reload` and `GET /admin/status`.
//!
//! Both sit behind [`AdminAuthLayer`] (the admin key, or loopback clients only when none is
//! configured); [`routes`] returns them ready to merge into the app, inside the snapshot
//! layer.
//!
//! - `POST /admin/reload` reloads now ([`Reloader::reload`]). 200 with the status when the
//!   new config serves; 422 with an OpenAI-shaped error listing every problem (with
//!   line:column in `error.errors[]`) when it is rejected, the old config still serving
//!   (code `config_invalid`; `config_refused` when it would drop every client key, the admin
//!   key or every model without saying so, see [`crate::reload`]); 409 when the gateway has
//!   no config file to read.
//! - `GET /admin/status` answers the version, the config source, start time, the serving
//!   snapshot (created, generation), the last reload (when, ok, error), models available and
//!   unavailable (with reasons), backends and loaded models.

use std::sync::Arc;

use axum::extract::Extension;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::{Json, Router};
use http::StatusCode;
use serde_json::{json, Value};

use crate::handlers;
use crate::layers::admin_auth::AdminAuthLayer;
use crate::reload::{ReloadError, Reloader, Trigger};
use crate::runtime::{unix_now, Gateway};
use crate::upstream::Backend;

/// The configuration endpoints, behind the admin check. The app must put the
/// [`crate::layers::snapshot::Snapshot`] extension on requests first (the snapshot layer), as [`AdminAuthLayer`]
/// reads the admin key from it.
pub fn routes<S: Clone + Send + Sync + 'static>(reloader: Arc<Reloader>) -> Router<S> {
    Router::new()
        .route(
            "/admin/reload",
            MethodRouter::new()
                .post(reload)
                .fallback(handlers::method_not_allowed),
        )
        .route(
            "/admin/status",
            MethodRouter::new()
                .get(status)
                .fallback(handlers::method_not_allowed),
        )
        .route_layer(AdminAuthLayer)
        .layer(Extension(reloader))
}

/// `POST /admin/reload`.
async fn reload(Extension(reloader): Extension<Arc<Reloader>>) -> Response {
    match reloader.reload(Trigger::Admin).await {
        Ok(_) => Json(status_report(&reloader, &reloader.shared().load())).into_response(),
        Err(err) => rejection(&reloader, err),
    }
}

/// `GET /admin/status`. Reports the live snapshot (not the request's), so a status read
/// right after a reload shows the new one.
async fn status(Extension(reloader): Extension<Arc<Reloader>>) -> Response {
    Json(status_report(&reloader, &reloader.shared().load())).into_response()
}

/// The OpenAI error shape, plus `errors` (each problem with its position) and the status.
fn rejection(reloader: &Reloader, err: ReloadError) -> Response {
    let (status, code, kind) = match &err {
        ReloadError::Invalid(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "config_invalid",
            "invalid_request_error",
        ),
        ReloadError::Refused(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "config_refused",
            "invalid_request_error",
        ),
        ReloadError::Unusable(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "config_unusable",
            "invalid_request_error",
        ),
        ReloadError::NoSource => (
            StatusCode::CONFLICT,
            "no_config_source",
            "invalid_request_error",
        ),
        ReloadError::Internal(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "server_error",
        ),
    };
    let message = match &err {
        ReloadError::NoSource => err.to_string(),
        _ => format!("config rejected; the previous configuration keeps serving. {err}"),
    };
    let body = json!({
        "error": {
            "message": message,
            "type": kind,
            "param": null,
            "code": code,
            "errors": err.issues(),
        },
        "status": status_report(reloader, &reloader.shared().load()),
    });
    (status, Json(body)).into_response()
}

fn backend_kind(b: &Backend) -> &'static str {
    match b {
        Backend::OpenAi(o) => o.dialect.kind(),
        #[cfg(feature = "local")]
        Backend::Local(_) => "local",
    }
}

/// The `GET /admin/status` document.
pub fn status_report(reloader: &Reloader, gw: &Gateway) -> Value {
    let reload = reloader.status();
    let available: Vec<Value> = gw
        .model_order
        .iter()
        .filter_map(|alias| {
            if let Some(route) = gw.models.get(alias) {
                let targets: Vec<String> = route
                    .targets
                    .iter()
                    .map(|t| format!("{}/{}", t.backend.name(), t.model))
                    .collect();
                Some(json!({"name": alias, "targets": targets}))
            } else {
                gw.router
                    .as_ref()
                    .filter(|r| r.router.routes(alias))
                    .map(|_| json!({"name": alias, "targets": ["slmgate-router"]}))
            }
        })
        .collect();
    let mut unavailable: Vec<(&String, &String)> = gw.unavailable.iter().collect();
    unavailable.sort();
    let unavailable: Vec<Value> = unavailable
        .into_iter()
        .map(|(name, reason)| json!({"name": name, "reason": reason}))
        .collect();
    let mut backends: Vec<Value> = gw
        .policies
        .backends
        .iter()
        .map(|(name, b)| match &**b {
            Backend::OpenAi(o) => {
                json!({"name": name, "kind": backend_kind(b), "circuit": o.breaker.status()})
            }
            #[allow(unreachable_patterns)]
            _ => json!({"name": name, "kind": backend_kind(b)}),
        })
        .collect();
    backends.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "config": {
            "source": reloader.source().kind(),
            "path": reloader.source().path().map(|p| p.display().to_string()),
            "watching": reload.watching.as_ref().map(|p| p.display().to_string()),
            "watch_error": reload.watch_error,
        },
        "started": reloader.started(),
        "uptime_seconds": unix_now().saturating_sub(reloader.started()),
        "snapshot": {
            "created": gw.created,
            "generation": reload.generation,
        },
        "reloads": {"succeeded": reload.succeeded, "failed": reload.failed},
        "last_reload": reload.last_reload,
        "models": {"available": available, "unavailable": unavailable},
        "embedder": gw.embedder.as_ref().map(|e| e.name.clone()),
        "backends": backends,
        "loaded": gw.loaded.describe(),
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicBool;

    use arc_swap::ArcSwap;
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::reload::ConfigSource;

    async fn status_from(yaml: &str, peer: &str, key: Option<&str>) -> (StatusCode, Value) {
        let cfg = slmgate_config::load_str_with_env(yaml, "t.yaml", &|_| None).expect("valid");
        let gw = crate::build::build_gateway(&cfg).expect("builds");
        let limits = gw.limits;
        let shared = Arc::new(ArcSwap::from_pointee(gw));
        let reloader = Arc::new(Reloader::new(shared.clone(), &cfg, ConfigSource::Memory));
        let app = crate::stack::build(shared, limits, Arc::new(AtomicBool::new(false)), reloader);
        let mut req = Request::get("/admin/status");
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let mut req = req.body(Body::empty()).expect("request");
        let peer: SocketAddr = peer.parse().expect("addr");
        req.extensions_mut().insert(ConnectInfo(peer));
        let resp = app.oneshot(req).await.expect("infallible");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, serde_json::from_slice(&bytes).expect("json"))
    }

    #[tokio::test]
    async fn loopback_only_without_an_admin_key() {
        let (status, v) = status_from("{}", "127.0.0.1:5000", None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["config"]["source"], "memory");
        let (status, v) = status_from("{}", "[::1]:5000", None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let (status, v) = status_from("{}", "10.1.2.3:5000", Some("anything")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        assert_eq!(v["error"]["code"], "admin_only", "{v}");
    }

    #[tokio::test]
    async fn the_admin_key_opens_it_from_anywhere() {
        let yaml = "admin:\n  key: adm\n";
        let (status, v) = status_from(yaml, "10.1.2.3:5000", Some("adm")).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let (status, v) = status_from(yaml, "127.0.0.1:5000", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    }
}
