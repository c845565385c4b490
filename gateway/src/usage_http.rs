//! The operator endpoints on usage, and `GET /metrics`.
//!
//! - `GET /v1/usage?from=&to=&group_by=` — a [`Report`](slmgate_usage::report::Report): totals,
//!   cost, savings, local share, cache hit rate, latency and TTFT percentiles, the top keys
//!   by spend, requests per category, and the groups asked for
//!   (`key|team|model|target|backend|category|day|hour|minute`; `bucket=hour|minute` is an
//!   alias for the time groupings).
//! - `GET /v1/usage/recent?limit=50` — the latest records with their decisions and reasons.
//!
//! Both need the admin key (the caller mounts them behind
//! [`AdminAuthLayer`](crate::layers::admin_auth::AdminAuthLayer)). `/metrics` is open unless
//! `admin.protect_metrics` is set.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::{header, HeaderValue, Request};
use tower::{Layer, ServiceExt};

use crate::layers::admin_auth::AdminAuthLayer;
use crate::layers::snapshot::Snapshot;
use slmgate_openai::error::GatewayError;
use slmgate_usage::report;
use slmgate_usage::Store;

/// Largest `limit` of `/v1/usage/recent`.
pub const MAX_RECENT: i64 = 1000;

/// The usage routes (`/v1/usage`, `/v1/usage/recent`), admin only. `store` is `None` when
/// usage records are off: the routes then answer 503 saying so.
pub fn router<S: Clone + Send + Sync + 'static>(store: Option<Store>) -> Router<S> {
    Router::new()
        .route("/v1/usage", get(usage))
        .route("/v1/usage/recent", get(recent))
        .route_layer(AdminAuthLayer)
        .with_state(store)
}

fn no_store() -> Response {
    GatewayError::Unavailable(
        "usage records are off: configure a `usage:` section (see README \"Usage and cost accounting\")"
            .into(),
    )
    .into_response()
}

fn db_error(e: sqlx::Error) -> Response {
    tracing::error!(error = %e, "usage query failed");
    GatewayError::Internal("the usage query failed (see the gateway log)".into()).into_response()
}

/// Parses the report parameters; a bad one is a 400 naming it.
pub fn parse_query(p: &HashMap<String, String>) -> Result<report::Query, GatewayError> {
    report::Query::from_params(p).map_err(|e| GatewayError::bad_param(e.param, e.message))
}

async fn usage(
    State(store): State<Option<Store>>,
    Query(p): Query<HashMap<String, String>>,
) -> Response {
    let Some(store) = store else {
        return no_store();
    };
    let q = match parse_query(&p) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    match report::report(&store, &q).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => db_error(e),
    }
}

async fn recent(
    State(store): State<Option<Store>>,
    Query(p): Query<HashMap<String, String>>,
) -> Response {
    let Some(store) = store else {
        return no_store();
    };
    let limit = match p.get("limit").map(|l| l.parse::<i64>()) {
        None => 50,
        Some(Ok(l)) if (1..=MAX_RECENT).contains(&l) => l,
        Some(_) => {
            return GatewayError::bad_param(
                "limit",
                format!("`limit` must be a number from 1 to {MAX_RECENT}"),
            )
            .into_response()
        }
    };
    match store.recent(limit).await {
        Ok(rows) => Json(serde_json::json!({"object": "list", "data": rows})).into_response(),
        Err(e) => db_error(e),
    }
}

async fn render(req: Request<Body>) -> Result<Response, Infallible> {
    let Some(Snapshot(gw)) = req.extensions().get::<Snapshot>() else {
        return Ok(GatewayError::Internal("metrics without snapshot".into()).into_response());
    };
    let mut resp = crate::metrics::render(gw).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(resp)
}

/// `GET /metrics`: Prometheus text format; behind the admin key when
/// `admin.protect_metrics` is set.
pub async fn metrics(req: Request<Body>) -> Response {
    let protect = req
        .extensions()
        .get::<Snapshot>()
        .is_some_and(|Snapshot(gw)| gw.admin.protect_metrics);
    let svc = tower::service_fn(render);
    let result = if protect {
        AdminAuthLayer.layer(svc).oneshot(req).await
    } else {
        svc.oneshot(req).await
    };
    match result {
        Ok(r) => r,
        Err(e) => match e {},
    }
}
