//! The whole request path, assembled in one place.
//!
//! Outermost first. Every layer is its own module in [`crate::layers`]; the chat endpoint's
//! own pipeline (parse → route → forward) sits below the shared stack.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;
use http::Request;
use tower::{Layer, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::handlers::{self, AppState};
use crate::layers::account::AccountLayer;
use crate::layers::auth::AuthLayer;
use crate::layers::body_limit::BodyLimitLayer;
use crate::layers::cache::CacheLayer;
use crate::layers::http_metrics::HttpMetricsLayer;
use crate::layers::limits::LimitsLayer;
use crate::layers::load_shed::LoadShedLayer;
use crate::layers::overhead::OverheadLayer;
use crate::layers::parse::ParseChatLayer;
use crate::layers::policy::PolicyLayer;
use crate::layers::route::RouteLayer;
use crate::layers::snapshot::{SharedGateway, SnapshotLayer};
use crate::layers::timeout::RequestTimeoutLayer;
use crate::reload::Reloader;
use crate::runtime::Limits;
use crate::upstream::forward::ForwardService;
use slmgate_openai::error::GatewayError;

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    GatewayError::Internal("handler panicked".into()).into_response()
}

/// The longest client `x-request-id` the gateway keeps.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Returns true if and only if `id` is a request id the gateway keeps: 1 to
/// [`MAX_REQUEST_ID_LEN`] ASCII letters, digits and `-_.:` (UUIDs, ULIDs, trace ids).
pub fn valid_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Drops a client `x-request-id` that [`valid_request_id`] refuses (or that is sent more
/// than once), so the next layer generates one. The id is echoed, logged, stored in usage
/// rows and sent upstream: an unbounded client value would be copied into all of them.
fn sanitize_request_id(mut req: Request<Body>) -> Request<Body> {
    let headers = req.headers_mut();
    let mut ids = headers.get_all("x-request-id").iter();
    let keep = match (ids.next(), ids.next()) {
        (None, _) => true,
        (Some(id), None) => valid_request_id(id.as_bytes()),
        (Some(_), Some(_)) => false,
    };
    if !keep {
        tracing::debug!("client x-request-id refused (length or characters); generating one");
        headers.remove("x-request-id");
    }
    req
}

fn request_span(req: &Request<Body>) -> tracing::Span {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // When traces are exported, also a server span joined to the caller's `traceparent`.
    crate::telemetry::request_span(req.method(), req.uri().path(), id, req.headers())
}

/// Builds the gateway's HTTP service. `reloader` serves `/admin/reload` and `/admin/status`.
pub fn build(
    shared: SharedGateway,
    limits: Limits,
    draining: Arc<AtomicBool>,
    reloader: Arc<Reloader>,
) -> Router {
    build_with_usage(shared, limits, draining, reloader, None)
}

/// [`build`], recording usage into `usage` (the process-wide writer, see [`slmgate_usage`]).
pub fn build_with_usage(
    shared: SharedGateway,
    limits: Limits,
    draining: Arc<AtomicBool>,
    reloader: Arc<Reloader>,
    usage: Option<slmgate_usage::UsageWriter>,
) -> Router {
    // POST /v1/chat/completions: its own small pipeline, innermost last.
    let chat = ServiceBuilder::new()
        // The steps below report what they learned as typed response extensions (the
        // decision, who served, the cache outcome, the policy rule); written as `x-slmgate-*`
        // headers here, once.
        .map_response(crate::facts::write_headers)
        // Body → typed request; 400/413 for bad input. Everything below sees a valid request.
        .layer(ParseChatLayer)
        // One usage record per valid request, above every step that may refuse it, so
        // refusals are recorded too; asks streams for their usage chunk.
        .layer(AccountLayer::new(usage.as_ref().map(|u| u.sink.clone())))
        // Alias → Decision (targets + reason); 403/404; the router classifies `auto`.
        .layer(RouteLayer)
        // Policy rules, after routing because rules may look at the decision (target,
        // category, score): deny, re-route, cap parameters, redact PII (restored on the way
        // back).
        .layer(PolicyLayer)
        // Rate limits and budgets, after the policy because its caps and routes change the
        // cost; last before the upstream, so every admitted request is settled.
        .layer(LimitsLayer)
        // Response cache, below the limits (a hit is still admitted and rate-counted, and
        // settled at cost 0) and right above forwarding: the key is the request as policy
        // and routing shaped it.
        .layer(CacheLayer)
        // Decision → upstream call with retries and fallbacks.
        .service(ForwardService);

    // POST /v1/messages: Anthropic's Messages API, translated to and from the same pipeline.
    let messages = crate::anthropic::MessagesLayer.layer(chat.clone());
    // POST /v1/completions: the legacy Completions API, passed through to an alias's OpenAI
    // backend, else the prompt as one user turn of the chat pipeline.
    let completions =
        crate::completions::CompletionsLayer::new(usage.as_ref().map(|u| u.sink.clone()))
            .layer(chat.clone());

    // POST /v1/route: the same parse and decision, answered as JSON instead of executed.
    let dry_run = ServiceBuilder::new()
        .map_response(crate::facts::write_headers)
        .layer(ParseChatLayer)
        .service(tower::service_fn(handlers::route_dry_run));

    // POST /v1/responses: passed through to an OpenAI backend (no chat pipeline).
    let sink = usage.as_ref().map(|u| u.sink.clone());
    let responses = tower::service_fn(move |req: Request<Body>| {
        let sink = sink.clone();
        async move { Ok::<_, std::convert::Infallible>(crate::passthrough::handle(sink, req).await) }
    });

    let api = Router::new()
        .route_service("/v1/chat/completions", chat)
        .route_service("/v1/route", dry_run)
        .route_service(crate::anthropic::MESSAGES_PATH, messages)
        .route_service(crate::completions::COMPLETIONS_PATH, completions)
        .route_service(crate::passthrough::RESPONSES_PATH, responses)
        .route(
            crate::anthropic::COUNT_TOKENS_PATH,
            MethodRouter::new()
                .post(crate::anthropic::count_tokens)
                .fallback(handlers::method_not_allowed),
        )
        .route(
            "/v1/models",
            MethodRouter::new()
                .get(handlers::models)
                .fallback(handlers::method_not_allowed),
        )
        .route(
            "/v1/models/{*id}",
            MethodRouter::new()
                .get(handlers::model)
                .fallback(handlers::method_not_allowed),
        )
        .route(
            "/v1/embeddings",
            MethodRouter::new()
                .post(crate::embeddings::handler)
                .fallback(handlers::method_not_allowed),
        )
        // Only the API needs a client key; probes stay open.
        .route_layer(AuthLayer);

    Router::new()
        .merge(api)
        // Operator endpoints: admin key (or loopback only), inside the snapshot layer.
        .merge(crate::admin::routes(reloader))
        // Client keys created at run time (stored in the usage database).
        .merge(crate::admin_keys::routes(
            usage.as_ref().map(|u| u.store.clone()),
        ))
        .merge(crate::usage_http::router(usage.map(|u| u.store)))
        // The cost dashboard (admin key; its sign-in form sets it as a cookie).
        .merge(crate::dashboard::routes())
        // Open unless `admin.protect_metrics`.
        .route("/metrics", get(crate::usage_http::metrics))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .fallback(handlers::not_found)
        .with_state(AppState { draining })
        .layer(
            ServiceBuilder::new()
                // Request id first, so every later layer, log line and upstream call sees it;
                // a client id that is too long or odd is replaced by a generated one.
                .map_request(sanitize_request_id)
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                // One span per request, carrying the id.
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(crate::telemetry::on_response),
                )
                // Measures everything below, minus upstream waits.
                .layer(OverheadLayer)
                .map_response(|r: Response<_>| r.map(Body::new))
                // A bug answers 500 in OpenAI's shape instead of dropping the connection.
                .layer(CatchPanicLayer::custom(panic_response))
                // Errors on the Anthropic paths (`/v1/messages…`) in Anthropic's shape,
                // whichever layer below answered them.
                .layer(crate::anthropic::AnthropicErrorsLayer)
                // Request counts and durations (to the last byte) by route/target/status.
                .layer(HttpMetricsLayer)
                // Shed before doing any work for a request we cannot take.
                .layer(LoadShedLayer::new(limits.max_concurrent_requests))
                // Deadline for the whole request (to the response head).
                .layer(RequestTimeoutLayer::new(limits.request_timeout))
                // Pin the config snapshot this request runs under.
                .layer(SnapshotLayer::new(shared))
                // Refuse oversized bodies before anyone reads them.
                .layer(BodyLimitLayer::new(limits.max_body_bytes)),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_bounded_in_length_and_characters() {
        for ok in [
            "a",
            "0b8f6a1e-4c7d-4f0e-9a55-2f1f8a0c9d31",
            "req_1.2:3",
            &"x".repeat(128),
        ] {
            assert!(valid_request_id(ok.as_bytes()), "{ok}");
        }
        for bad in ["", &"x".repeat(129), "a b", "a\"b", "<script>", "é", "a\tb"] {
            assert!(!valid_request_id(bad.as_bytes()), "{bad:?}");
        }
    }
}
