//! Small endpoints: `/v1/models`, `/healthz`, `/readyz`, and the 404/405 fallbacks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{StatusCode, Uri};
use serde_json::json;

use crate::api::{ModelCard, ModelList};
use crate::error::GatewayError;
use crate::layers::snapshot::Snapshot;
use crate::runtime::Caller;

/// State shared by the small handlers.
#[derive(Clone)]
pub struct AppState {
    /// Set once shutdown has begun: `/readyz` then answers 503.
    pub draining: Arc<AtomicBool>,
}

/// `GET /v1/models`: the aliases this caller may use, in config order.
pub async fn models(
    Extension(Snapshot(gw)): Extension<Snapshot>,
    caller: Option<Extension<Caller>>,
) -> Response {
    let allowed = caller
        .as_ref()
        .and_then(|c| c.0.key.as_ref())
        .map(|k| k.models.clone())
        .unwrap_or_default();
    let mut data: Vec<ModelCard> = gw
        .model_order
        .iter()
        .filter(|alias| allowed.is_empty() || allowed.contains(alias))
        .filter_map(|alias| gw.models.get(alias))
        .map(|route| ModelCard {
            id: route.alias.clone(),
            object: "model",
            created: gw.created,
            owned_by: route.targets[0].backend.name().to_string(),
        })
        .collect();
    if let Some(e) = &gw.embedder {
        if allowed.is_empty() || allowed.contains(&e.name) {
            data.push(ModelCard {
                id: e.name.clone(),
                object: "model",
                created: gw.created,
                owned_by: "slmgate-embedder".to_string(),
            });
        }
    }
    Json(ModelList {
        object: "list",
        data,
    })
    .into_response()
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `GET /readyz`: ready to take traffic (not draining, at least one model servable).
pub async fn readyz(
    State(state): State<AppState>,
    Extension(Snapshot(gw)): Extension<Snapshot>,
) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        )
            .into_response();
    }
    if gw.models.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "no model available", "unavailable": gw.unavailable})),
        )
            .into_response();
    }
    Json(json!({"status": "ready", "models": gw.model_order})).into_response()
}

/// Any unknown path.
pub async fn not_found(uri: Uri) -> Response {
    GatewayError::NotFound(uri.path().to_string()).into_response()
}

/// A known path with the wrong method.
pub async fn method_not_allowed() -> Response {
    GatewayError::MethodNotAllowed.into_response()
}
