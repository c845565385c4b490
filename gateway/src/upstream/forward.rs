//! The innermost service: executes a [`Decision`] by trying its targets in order.
//!
//! Each target gets its own retries (inside the backend); when a target gives up with a
//! [`Fallback`], the next one is tried. The response carries the decision it was served
//! under and the target that answered ([`Served`]).

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use tower::Service;
use tracing::Instrument as _;

use super::openai::CallContext;
use super::{Backend, Fallback, UpstreamClock};
use crate::call::RoutedCall;
use crate::facts::Served;
use crate::layers::BoxFuture;
use crate::telemetry;
use slmgate_openai::error::GatewayError;

/// Sends decided requests upstream.
#[derive(Clone, Copy, Debug, Default)]
pub struct ForwardService;

impl Service<RoutedCall> for ForwardService {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: RoutedCall) -> Self::Future {
        Box::pin(async move { Ok(forward(req).await) })
    }
}

async fn forward(req: RoutedCall) -> Response {
    let RoutedCall {
        call, mut decision, ..
    } = req;
    let chat = call.chat;
    let clock = call
        .head
        .extensions
        .get::<UpstreamClock>()
        .cloned()
        .unwrap_or_default();
    let request_id = call.head.headers.get("x-request-id");
    let mut last = None;
    let route = decision.route.clone();
    let mut resp = None;
    for (i, k) in route.order().enumerate() {
        let target = &route.targets[k];
        // Balanced deployments: busy until this attempt ends; the latency is recorded.
        let in_flight = route.balance.as_ref().and_then(|b| b.start(k));
        // One model-call span per target tried (disabled, and free, unless exporting).
        let span;
        let result = match &*target.backend {
            Backend::OpenAi(b) => {
                span = telemetry::upstream_span(&b.name, &b.chat_url, &target.model, &chat);
                b.chat(CallContext {
                    req: &chat,
                    model: &target.model,
                    clock: &clock,
                    request_id,
                })
                .instrument(span.clone())
                .await
            }
            #[cfg(feature = "local")]
            Backend::Local(b) => {
                span = telemetry::local_span(&b.name, &target.model, &chat);
                // The cascade checks the first (local) target's answer only.
                let check = decision.cascade.as_ref().filter(|_| i == 0).map(|c| c.0);
                match b
                    .chat_checked(&chat, &clock, check)
                    .instrument(span.clone())
                    .await
                {
                    Ok(super::local::LocalAnswer::Answer(r)) => Ok(r),
                    Ok(super::local::LocalAnswer::Escalate(confidence)) => {
                        telemetry::record_escalated(&span);
                        let to = decision
                            .cascade
                            .as_ref()
                            .map(|c| c.1.clone())
                            .unwrap_or_default();
                        tracing::info!(alias = %route.alias, %confidence, escalate_to = %to, "cascade: escalating");
                        decision.reason = format!(
                            "cascade: local answer not confident ({confidence}); escalated after: {}",
                            decision.reason
                        );
                        decision.strategy = "cascade";
                        decision.target = to;
                        continue;
                    }
                    Err(e) => Err(e),
                }
            }
        };
        if let Some(f) = &in_flight {
            f.answered(result.is_ok());
        }
        match result {
            Ok(mut r) => {
                r.extensions_mut().insert(Served::target(target));
                if i > 0 {
                    tracing::info!(alias = %route.alias, backend = target.backend.name(), "served by fallback");
                }
                resp = Some(r);
                break;
            }
            Err(Fallback(e)) => {
                metrics::counter!(crate::metrics::UPSTREAM_ERRORS, "backend" => target.backend.name().to_string(), "type" => e.code())
                    .increment(1);
                telemetry::record_error(&span, e.code());
                let _in = span.enter();
                if matches!(e, GatewayError::Ejected { .. }) {
                    // Expected while a backend is ejected: one warning at the ejection is enough.
                    tracing::debug!(alias = %route.alias, backend = target.backend.name(), "target skipped: ejected");
                } else if matches!(e, GatewayError::Overloaded { .. }) {
                    // A full local queue under load is back-pressure, not a fault.
                    tracing::debug!(alias = %route.alias, backend = target.backend.name(), "target overloaded");
                } else {
                    tracing::warn!(alias = %route.alias, backend = target.backend.name(), error = %e, "target failed");
                }
                last = Some(e);
            }
        }
    }
    let mut resp = resp.unwrap_or_else(|| {
        last.unwrap_or_else(|| {
            GatewayError::Unavailable(format!(
                "no target could answer for `{}` ({})",
                route.alias, decision.reason
            ))
        })
        .into_response()
    });
    resp.extensions_mut().insert(Arc::new(decision));
    resp
}
