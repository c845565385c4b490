//! What the chat pipeline learns about a request, carried as typed response extensions.
//!
//! The steps below put what they know into the response they return: the route step and
//! forwarding the [`Decision`] (as `Arc<Decision>`, the one the answer was served under),
//! forwarding and the cache [`Served`] (who answered), the cache its [`CacheOutcome`], the
//! policy step the [`PolicyRule`] that matched, and the answer's token usage
//! ([`slmgate_openai::chat::AnswerUsage`]). The account step, the limits' settlement and
//! the HTTP metrics read these types; nothing reads a header back.
//!
//! [`write_headers`] turns them into the `x-slmgate-*` response headers once, at the edge
//! of the chat endpoint and of the `/v1/route` dry run.

use std::sync::Arc;

use axum::response::Response;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::call::Decision;
use crate::targets::Target;

/// `x-slmgate-route`: the chosen target's alias.
pub static ROUTE_HEADER: HeaderName = HeaderName::from_static("x-slmgate-route");
/// `x-slmgate-strategy`: the step that decided.
pub static STRATEGY_HEADER: HeaderName = HeaderName::from_static("x-slmgate-strategy");
/// `x-slmgate-category`: the category label, when the strategy gives one.
pub static CATEGORY_HEADER: HeaderName = HeaderName::from_static("x-slmgate-category");
/// `x-slmgate-score`: the score behind the decision.
pub static SCORE_HEADER: HeaderName = HeaderName::from_static("x-slmgate-score");
/// `x-slmgate-threshold`: the threshold the score was compared with.
pub static THRESHOLD_HEADER: HeaderName = HeaderName::from_static("x-slmgate-threshold");
/// `x-slmgate-reason`: why, in one line.
pub static REASON_HEADER: HeaderName = HeaderName::from_static("x-slmgate-reason");
/// `x-slmgate-backend`: the backend that produced the answer.
pub static BACKEND_HEADER: HeaderName = HeaderName::from_static("x-slmgate-backend");
/// `x-slmgate-cache`: `hit`, `semantic-hit`, `miss` or `bypass`.
pub static CACHE_HEADER: HeaderName = HeaderName::from_static("x-slmgate-cache");
/// `x-slmgate-policy`: the policy rule that matched the request.
pub static POLICY_HEADER: HeaderName = HeaderName::from_static("x-slmgate-policy");

/// Who answered: the backend's name and, when it is still configured, the target (backend
/// and upstream model) it was called as. A cache hit names the backend that produced the
/// stored answer.
#[derive(Debug, Clone)]
pub struct Served {
    /// The backend's name (`backends[].name`).
    pub backend: String,
    /// The target called, when known.
    pub target: Option<Target>,
}

impl Served {
    /// The target that answered.
    pub fn target(target: &Target) -> Self {
        Served {
            backend: target.backend.name().to_string(),
            target: Some(target.clone()),
        }
    }
}

/// What the response cache did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Answered from the exact cache.
    Hit,
    /// Answered from the semantic cache.
    SemanticHit,
    /// Looked up, not found; the answer went upstream (and may be stored).
    Miss,
    /// Not looked up (the request or the client opted out, or the cache does not apply).
    Bypass,
}

impl CacheOutcome {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::SemanticHit => "semantic-hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Bypass => "bypass",
        }
    }

    /// Whether the answer came from the cache (not from a model).
    pub fn is_hit(self) -> bool {
        matches!(self, CacheOutcome::Hit | CacheOutcome::SemanticHit)
    }
}

/// The name of the policy rule that matched the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule(pub Arc<str>);

/// Writes the facts of `resp`'s extensions as `x-slmgate-*` headers. Used once per
/// response, at the edge (see [`crate::stack`]).
pub fn write_headers(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let (ext, headers) = (&parts.extensions, &mut parts.headers);
    if let Some(d) = ext.get::<Arc<Decision>>() {
        decision_headers(d, headers);
    }
    if let Some(s) = ext.get::<Served>() {
        put(headers, &BACKEND_HEADER, &s.backend);
    }
    if let Some(c) = ext.get::<CacheOutcome>() {
        headers.insert(&CACHE_HEADER, HeaderValue::from_static(c.as_str()));
    }
    if let Some(PolicyRule(rule)) = ext.get::<PolicyRule>() {
        put(headers, &POLICY_HEADER, rule);
    }
    Response::from_parts(parts, body)
}

/// Puts a decision into headers: `x-slmgate-route`, `-strategy`, `-category`, `-score`,
/// `-threshold`, `-reason`.
pub fn decision_headers(d: &Decision, h: &mut HeaderMap) {
    put(h, &ROUTE_HEADER, &d.target);
    put(h, &STRATEGY_HEADER, d.strategy);
    if let Some(c) = &d.category {
        put(h, &CATEGORY_HEADER, c);
    }
    if let Some(s) = d.score {
        put(h, &SCORE_HEADER, &format!("{s:.4}"));
    }
    if let Some(t) = d.threshold {
        put(h, &THRESHOLD_HEADER, &format!("{t:.4}"));
    }
    put(h, &REASON_HEADER, &d.reason);
}

/// Header values are visible ASCII: anything else is replaced, never an error.
fn put(h: &mut HeaderMap, name: &HeaderName, value: &str) {
    let clean: String = value
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&clean) {
        h.insert(name, v);
    }
}
