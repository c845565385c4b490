//! Small endpoints: `/v1/models`, `/healthz`, `/readyz`, and the 404/405 fallbacks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{StatusCode, Uri};
use serde_json::json;

use crate::keys::Caller;
use crate::layers::snapshot::Snapshot;
use slmgate_openai::chat::{ModelCard, ModelList};
use slmgate_openai::error::GatewayError;

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
    Json(ModelList {
        object: "list",
        data: model_cards(&gw, caller.as_ref().map(|c| &c.0)),
    })
    .into_response()
}

/// `GET /v1/models/{id}`: one model of [`models`]; 404 in OpenAI's shape when it is not
/// served here or the caller's key may not use it.
pub async fn model(
    Extension(Snapshot(gw)): Extension<Snapshot>,
    caller: Option<Extension<Caller>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    match model_cards(&gw, caller.as_ref().map(|c| &c.0))
        .into_iter()
        .find(|c| c.id == id)
    {
        Some(card) => Json(card).into_response(),
        None => GatewayError::ModelNotFound {
            message: format!("The model `{id}` does not exist or you do not have access to it."),
        }
        .into_response(),
    }
}

/// The models `caller` may use: configured aliases in config order, routed aliases, and the
/// embedder.
fn model_cards(gw: &crate::runtime::Gateway, caller: Option<&Caller>) -> Vec<ModelCard> {
    let allowed = caller
        .and_then(|c| c.key.as_ref())
        .map(|k| k.models.clone())
        .unwrap_or_default();
    let mut data: Vec<ModelCard> = gw
        .model_order
        .iter()
        .filter(|alias| allowed.is_empty() || allowed.contains(alias))
        .filter_map(|alias| match gw.models.get(alias) {
            Some(route) => Some(ModelCard {
                id: route.alias.clone(),
                object: "model",
                created: gw.created,
                owned_by: route.targets[0].backend.name().to_string(),
            }),
            None => gw
                .router
                .as_ref()
                .filter(|r| r.router.routes(alias))
                .map(|_| ModelCard {
                    id: alias.clone(),
                    object: "model",
                    created: gw.created,
                    owned_by: "slmgate-router".to_string(),
                }),
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
    data
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

/// `POST /v1/route`: the routing decision for a chat request, without executing it.
///
/// Runs after the chat parser, so it sees exactly what `/v1/chat/completions` would see and
/// calls the same [`crate::layers::route::decide`].
pub async fn route_dry_run(
    call: crate::call::ChatCall,
) -> Result<Response, std::convert::Infallible> {
    match dry_run(
        &call.gw,
        &call.chat,
        call.caller.as_ref(),
        &call.head.headers,
    )
    .await
    {
        Ok((body, d)) => {
            let mut resp = Json(body).into_response();
            resp.extensions_mut().insert(std::sync::Arc::new(d));
            Ok(resp)
        }
        Err(e) => Ok(e.into_response()),
    }
}

/// What `/v1/chat/completions` would do with `chat`, without doing it: the router's decision
/// with the policy rules applied as the chat endpoint applies them (its path, these headers,
/// this key; a route a rule forces replaces the router's), as the `route.decision` JSON of
/// `POST /v1/route` and `slmgate classify`.
pub async fn dry_run(
    gw: &crate::runtime::Gateway,
    chat: &slmgate_openai::chat::ChatRequest,
    caller: Option<&Caller>,
    headers: &http::HeaderMap,
) -> Result<(serde_json::Value, crate::call::Decision), GatewayError> {
    let mut d = crate::layers::route::decide(gw, caller, chat).await?;
    let mut policy = serde_json::Value::Null;
    if gw.policies.active {
        let ev = crate::layers::policy::evaluate(
            gw,
            chat,
            &d,
            caller,
            headers,
            "/v1/chat/completions",
            || crate::layers::policy::split_hash(headers),
        )
        .await?;
        policy = json!({
            "rule": ev.rule(),
            "action": ev.action(),
            "pii": ev.pii.iter().map(|k| k.name().to_string()).collect::<Vec<_>>(),
            "redact": ev.outcome.redact().is_some(),
            "deny": ev.outcome.deny().map(|x| json!({"status": x.status, "message": x.message})),
        });
        if let Some(nd) = ev.decision {
            d = nd;
        }
    }
    let body = json!({
        "object": "route.decision",
        "model": chat.model,
        "target": d.target,
        "strategy": d.strategy,
        "category": d.category,
        "score": d.score,
        "threshold": d.threshold,
        "reason": d.reason,
        "policy": policy,
        "backends": d.route.targets.iter().map(|t| json!({"backend": t.backend.name(), "model": t.model})).collect::<Vec<_>>(),
        "cascade": d.cascade.as_ref().map(|(c, to)| json!({
            "tokens": c.tokens,
            "min_mean_logprob": c.min_mean_logprob,
            "min_logprob": c.min_logprob,
            "escalate_to": to,
        })),
    });
    Ok((body, d))
}
