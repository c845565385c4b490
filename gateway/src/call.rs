//! The typed values the chat pipeline passes from stage to stage.
//!
//! `POST /v1/chat/completions` runs parse → account → route → policy → limits → cache →
//! forward ([`crate::stack`]). Parsing turns the HTTP request into a [`ChatCall`] (the parsed
//! request, the configuration snapshot, the caller); the route step turns a [`ChatCall`]
//! into a [`RoutedCall`] (plus the decision); the steps below take and pass on a
//! [`RoutedCall`]. Each step is a `tower::Service` of the value it needs, so a stack built
//! in the wrong order (policy above routing, say) does not compile.

use std::sync::Arc;

use http::request::Parts;
use slmgate_openai::chat::ChatRequest;
use slmgate_policies::Outcome;
use slmgate_routing::cascade::CascadeCheck;

use crate::keys::Caller;
use crate::runtime::Gateway;
use crate::targets::ModelRoute;

/// A parsed chat request.
pub struct ChatCall {
    /// The request head: method, URI, headers and what the shared stack put into the
    /// extensions (the deadline, the upstream clock).
    pub head: Parts,
    /// The configuration this request runs under (pinned by the snapshot layer).
    pub gw: Arc<Gateway>,
    /// Who is calling; `None` on an open gateway.
    pub caller: Option<Caller>,
    /// The request, as the steps above shaped it (the account and limits steps ask a stream
    /// for its usage chunk; the policy step may cap parameters or redact messages).
    pub chat: ChatRequest,
}

impl ChatCall {
    /// The request's `x-request-id` (set by the shared stack).
    pub fn request_id(&self) -> Option<&http::HeaderValue> {
        self.head.headers.get("x-request-id")
    }
}

/// A chat request with its routing decision.
pub struct RoutedCall {
    /// The request.
    pub call: ChatCall,
    /// Where it goes and why (the policy step may re-route it).
    pub decision: Decision,
    /// What the policy rules decided; `None` when no rules are configured.
    pub policy: Option<PolicyDecision>,
    /// The prompt's token count, when the policy step counted it (the limits step reuses
    /// it instead of estimating).
    pub prompt_tokens: Option<u64>,
}

impl RoutedCall {
    /// A call the route step just decided.
    pub fn new(call: ChatCall, decision: Decision) -> Self {
        RoutedCall {
            call,
            decision,
            policy: None,
            prompt_tokens: None,
        }
    }
}

/// Where a request goes, and why.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The ordered targets to try (primary first, then fallbacks).
    pub route: Arc<ModelRoute>,
    /// The alias of the chosen side (`local`, `remote`, or the requested alias itself).
    pub target: String,
    /// Which step decided (`alias` for a plain alias lookup; `rules`, `semantic`,
    /// `complexity`, `availability` or `default` for routed aliases).
    pub strategy: &'static str,
    /// Category label, when the strategy gives one.
    pub category: Option<String>,
    /// The score behind the decision (complexity probability or semantic similarity).
    pub score: Option<f32>,
    /// The threshold the score was compared with.
    pub threshold: Option<f32>,
    /// Human-readable reason (returned in `x-slmgate-reason`, see [`crate::facts`]).
    pub reason: String,
    /// The cascade check to run on a local answer, and the alias it escalates to.
    pub cascade: Option<(CascadeCheck, String)>,
}

/// The outcome of the `policies:` rules for a request.
#[derive(Debug, Clone)]
pub struct PolicyDecision(pub Outcome);
