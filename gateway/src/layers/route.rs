//! The route step: decides where a parsed chat request goes.
//!
//! A plain alias resolves to its primary target and ordered fallbacks, after checking the
//! caller may use it. A routed alias (`auto`) asks the router ([`slmgate_routing::engine`]),
//! which classifies the query and picks the local or the remote side; the caller's key must
//! be allowed that side's alias too ([`allowed_side`]). Either way the output
//! is a [`Decision`] extension that the forwarding service executes; the response carries it
//! back (`Arc<Decision>`, see [`crate::facts`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};
use tracing::Instrument as _;

use super::BoxFuture;
use crate::call::{ChatCall, Decision, RoutedCall};
use crate::keys::{Caller, ClientKey};
use crate::telemetry;
use slmgate_config::routing::Side;
use slmgate_openai::chat::ChatRequest;
use slmgate_openai::error::GatewayError;
use slmgate_routing::engine::{Availability, Routed};
use slmgate_routing::query::Query;

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

/// The decision function (no upstream IO; the router may embed the query), shared by the
/// chat endpoint and the `/v1/route` dry run.
pub async fn decide(
    gw: &crate::runtime::Gateway,
    caller: Option<&Caller>,
    req: &ChatRequest,
) -> Result<Decision, GatewayError> {
    if let Some(key) = caller.and_then(|c| c.key.as_ref()) {
        if !key_allows(key, &req.model) {
            return Err(GatewayError::Forbidden(format!(
                "key `{}` may not use the model `{}`",
                key.name, req.model
            )));
        }
    }
    if let Some(router) = gw.router.as_ref().filter(|r| r.router.routes(&req.model)) {
        let query = Query::from_chat(req)?;
        let routed = router.router.decide(&query, Availability::Respect).await?;
        let key = caller.and_then(|c| c.key.as_deref());
        let routed = allowed_side(&router.router, routed, key)?;
        let route = router.chain(routed.side).cloned().ok_or_else(|| {
            GatewayError::Unavailable(format!("the model `{}` cannot serve", routed.target))
        })?;
        tracing::info!(
            model = %req.model,
            target = %routed.target,
            strategy = routed.strategy,
            category = routed.category.as_deref().unwrap_or(""),
            score = routed.score.unwrap_or(f32::NAN),
            threshold = routed.threshold.unwrap_or(f32::NAN),
            reason = %routed.reason,
            "routed"
        );
        let escalate_to = router.router.alias(Side::Remote).to_string();
        return Ok(Decision {
            route,
            target: routed.target,
            strategy: routed.strategy,
            category: routed.category,
            score: routed.score,
            threshold: routed.threshold,
            reason: routed.reason,
            cascade: routed.cascade.map(|c| (c, escalate_to)),
        });
    }
    let route = gw
        .resolve(&req.model)
        .map_err(|message| GatewayError::ModelNotFound { message })?;
    Ok(Decision {
        route: route.clone(),
        target: req.model.clone(),
        strategy: "alias",
        category: None,
        score: None,
        threshold: None,
        reason: format!("alias `{}` -> {:?}", req.model, route.targets[0]),
        cascade: None,
    })
}

/// Returns true if and only if `key` may use the alias `alias` (an empty list allows all).
pub fn key_allows(key: &ClientKey, alias: &str) -> bool {
    key.models.is_empty() || key.models.iter().any(|m| m == alias)
}

/// Applies a key's model allow-list to what a routed alias (`auto`) decided: the allow-list
/// names aliases, and `auto` resolves to the `local` or `remote` alias, so a key allowed
/// `auto` but not `remote` must not reach the remote model through it. A decided side the
/// key may not use is swapped for the other side when the key may use that one and it can
/// serve; otherwise the request is refused (403). A local decision whose cascade would
/// escalate to a side the key may not use keeps its answer local (no cascade).
pub fn allowed_side(
    router: &slmgate_routing::engine::Router,
    mut routed: Routed,
    key: Option<&ClientKey>,
) -> Result<Routed, GatewayError> {
    let Some(key) = key.filter(|k| !k.models.is_empty()) else {
        return Ok(routed);
    };
    let other = match routed.side {
        Side::Local => Side::Remote,
        Side::Remote => Side::Local,
    };
    if !key_allows(key, router.alias(Side::Remote)) {
        routed.cascade = None;
    }
    if key_allows(key, router.alias(routed.side)) {
        return Ok(routed);
    }
    let (denied, instead) = (router.alias(routed.side), router.alias(other));
    if !key_allows(key, instead) || !router.serves(other) {
        return Err(GatewayError::Forbidden(format!(
            "key `{}` may not use the model `{denied}`, where the router sent this request, and `{instead}` {}",
            key.name,
            if key_allows(key, instead) {
                "cannot serve it"
            } else {
                "is not allowed either"
            }
        )));
    }
    routed.reason = format!(
        "{}; key `{}` may not use `{denied}`: sent to `{instead}`",
        routed.reason, key.name
    );
    routed.side = other;
    routed.target = instead.to_string();
    routed.strategy = "allow-list";
    routed.cascade = None;
    Ok(routed)
}

impl<S> Service<ChatCall> for Route<S>
where
    S: Service<RoutedCall, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: ChatCall) -> Self::Future {
        // Take the service that was polled ready; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let span = telemetry::classify_span();
            let decided = decide(&call.gw, call.caller.as_ref(), &call.chat)
                .instrument(span.clone())
                .await;
            match decided {
                Ok(d) => {
                    telemetry::record_decision(&span, &d);
                    // Ends the classify span here: the steps below are not part of it.
                    drop(span);
                    let mut resp = inner.call(RoutedCall::new(call, d.clone())).await?;
                    // A refusal below (policy, limits) or an error before any target answered
                    // still says what the router decided (for the client and the usage row);
                    // answers carry the decision they were served under already.
                    if resp.extensions().get::<Arc<Decision>>().is_none() {
                        resp.extensions_mut().insert(Arc::new(d));
                    }
                    Ok(resp)
                }
                Err(e) => {
                    telemetry::record_error(&span, e.code());
                    Ok(e.into_response())
                }
            }
        })
    }
}
