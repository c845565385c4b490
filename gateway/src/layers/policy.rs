//! The policy step: evaluates the `policies:` rules for a decided request and applies the
//! outcome.
//!
//! It sits after the route step, because rules may look at the router's decision
//! (`target`, `category`, `score`), and before the limits step, because what a rule changes
//! (the target, `max_tokens`) changes what the request may cost. For each request it
//! gathers the [`RequestFacts`] (model, key/team/tags, the headers rules name, path,
//! decision, estimated prompt tokens, PII kinds when a rule needs them, the time, and a split
//! hash of `x-request-id`), evaluates, and then:
//!
//! - `deny` answers the configured status and message (OpenAI error shape, code
//!   `policy_denied`);
//! - `route` / `split` replace the [`Decision`]'s targets: an alias contributes its targets
//!   (with its own fallbacks), a router alias (`auto`) is decided by the router, a backend
//!   name is that backend with the model the request already maps to there (else the
//!   requested model name); `x-slmgate-strategy: policy` and `x-slmgate-reason` name the rule;
//! - `set` rewrites `max_tokens` (and `max_completion_tokens`), `temperature`, `top_p`,
//!   `presence_penalty`, `frequency_penalty` in the body sent upstream;
//! - `redact` replaces PII in every message's text with placeholders (`[EMAIL_1]`) before
//!   any backend sees it, and with `restore` puts the values back into the answer (the JSON
//!   body, or each streamed `delta.content` through a [`StreamRestorer`]).
//!
//! Every response to a request a rule matched carries `x-slmgate-policy: <rule>`. The
//! outcome also travels on as a [`PolicyDecision`] extension (for the cache, later).
//!
//! Requests the route step refused (unknown model 404, model not allowed for the key 403)
//! never reach the rules.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::Value;
use slmgate_policies::pii::{PiiKind, Redactions, StreamRestorer};
use slmgate_policies::{Outcome, PolicySet, RequestFacts};
use tower::{Layer, Service};
use tracing::Instrument as _;

use super::limits::prompt_estimate;
use super::route::allowed_side;
use super::sse_map::{map_events, EventFilter};
use super::BoxFuture;
use crate::call::Decision;
use crate::call::{PolicyDecision, RoutedCall};
use crate::facts::PolicyRule;
use crate::keys::{Caller, ClientKey};
use crate::runtime::Gateway;
use crate::targets::{ModelRoute, Target};
use crate::telemetry;
use crate::upstream::Backend;
use slmgate_openai::chat::ChatRequest;
use slmgate_openai::error::{openai_error, GatewayError};
use slmgate_routing::engine::Availability;
use slmgate_routing::query::Query;

/// The compiled `policies:` of one config, and what their targets may name.
pub struct Policies {
    /// The rules; [`PolicySet::empty`] when the config has no `policies:`. Private (read
    /// with [`Policies::set`]) so that `header_names` always follows it.
    set: PolicySet,
    /// Whether the config has a `policies:` section at all (else the step is skipped).
    pub active: bool,
    /// Enabled backends by name, for rules that route to a backend directly.
    pub backends: HashMap<String, Arc<Backend>>,
    /// [`PolicySet::headers`] of `set` parsed once (`None` for a name HTTP cannot carry):
    /// looking a header up by a parsed name skips validating it on every request. Made by
    /// [`Policies::new`].
    header_names: Vec<Option<http::HeaderName>>,
}

impl Policies {
    /// The policies of `set`.
    pub fn new(set: PolicySet, active: bool, backends: HashMap<String, Arc<Backend>>) -> Self {
        let header_names = set
            .headers()
            .iter()
            .map(|n| http::HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        Policies {
            set,
            active,
            backends,
            header_names,
        }
    }

    /// The rules.
    pub fn set(&self) -> &PolicySet {
        &self.set
    }

    /// No policies: every request passes unchanged.
    pub fn none() -> Self {
        Policies::new(PolicySet::empty(), false, HashMap::new())
    }
}

/// Applies `policies:` between the route step and the limits step.
#[derive(Clone, Copy, Debug, Default)]
pub struct PolicyLayer;

impl<S> Layer<S> for PolicyLayer {
    type Service = Policy<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Policy { inner }
    }
}

/// See [`PolicyLayer`].
#[derive(Clone, Debug)]
pub struct Policy<S> {
    inner: S,
}

impl<S> Service<RoutedCall> for Policy<S>
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

    fn call(&mut self, mut req: RoutedCall) -> Self::Future {
        // Take the service that was polled ready; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let gw = req.call.gw.clone();
            if !gw.policies.active {
                return inner.call(req).await;
            }
            let span = telemetry::policy_span();
            let applied = apply(&gw, &mut req, &span).instrument(span.clone()).await;
            // The policy span covers the rules only, not the steps below.
            drop(span);
            let applied = match applied {
                Ok(a) => a,
                Err(resp) => return Ok(resp),
            };
            let mut resp = inner.call(req).await?;
            if let Some(rule) = &applied.rule {
                resp.extensions_mut()
                    .insert(PolicyRule(std::sync::Arc::from(rule.as_str())));
            }
            match applied.restore {
                Some(red) if resp.status().is_success() => Ok(restore_response(resp, red).await),
                _ => Ok(resp),
            }
        })
    }
}

/// What the request path must still do after the request went in.
struct Applied {
    /// The matching rule (for the response header), `None` for the default.
    rule: Option<String>,
    /// Placeholders to put back into the answer.
    restore: Option<Redactions>,
}

/// The message texts a request's rules look at, borrowed from the body where they need no
/// unescaping: the PII scan reads them and the prompt estimate counts them, with no value
/// tree built (only a redaction parses the messages into values, to rewrite them).
#[derive(Debug, Default)]
struct MessageTexts<'a> {
    /// String contents and the `text` of every part, in order.
    texts: Vec<std::borrow::Cow<'a, str>>,
    /// The prompt estimate: [`Query::estimated_tokens`] of the same messages.
    estimate: u64,
}

impl<'a> MessageTexts<'a> {
    /// Reads the raw `messages` array.
    #[cfg(test)]
    fn read(raw: &'a str) -> Result<Self, serde_json::Error> {
        use serde_json::value::RawValue;
        #[derive(serde::Deserialize)]
        struct Msg<'a> {
            #[serde(borrow, default)]
            content: Option<&'a RawValue>,
        }
        let msgs: Vec<Msg<'a>> = serde_json::from_str(raw)?;
        Self::of_contents(msgs.iter().map(|m| m.content.map(RawValue::get)))
    }

    /// Reads the request's messages from the contents its parse located (no second parse
    /// of `messages`).
    fn of_chat(chat: &'a ChatRequest) -> Result<Self, serde_json::Error> {
        Self::of_contents(chat.message_contents())
    }

    /// Reads each message's raw `content` (`None` when absent), one item per message.
    fn of_contents(
        contents: impl Iterator<Item = Option<&'a str>>,
    ) -> Result<Self, serde_json::Error> {
        use serde_json::value::RawValue;
        use std::borrow::Cow;
        #[derive(serde::Deserialize)]
        struct Part<'a> {
            #[serde(rename = "type", borrow, default)]
            kind: Option<&'a RawValue>,
            #[serde(borrow, default)]
            text: Option<&'a RawValue>,
        }
        fn string(t: &str) -> Option<Cow<'_, str>> {
            if !t.starts_with('"') {
                return None;
            }
            // A JSON string without escapes is its bytes between the quotes (serde_json
            // checked it when it captured the raw value): no deserializer needed.
            if t.len() >= 2 && t.ends_with('"') && !t.as_bytes().contains(&b'\\') {
                return Some(Cow::Borrowed(&t[1..t.len() - 1]));
            }
            serde_json::from_str::<&str>(t)
                .map(Cow::Borrowed)
                .or_else(|_| serde_json::from_str::<String>(t).map(Cow::Owned))
                .ok()
        }
        let mut out = MessageTexts::default();
        let mut chars = 0;
        let mut messages = 0;
        for content in contents {
            messages += 1;
            let Some(content) = content else { continue };
            match content.as_bytes().first() {
                Some(b'"') => {
                    if let Some(t) = string(content) {
                        chars += t.chars().count();
                        out.texts.push(t);
                    }
                }
                Some(b'[') => {
                    let parts: Vec<Part<'a>> = serde_json::from_str(content)?;
                    let mut any = false;
                    for p in &parts {
                        let Some(t) = p.text.map(RawValue::get).and_then(string) else {
                            continue;
                        };
                        let counted = match p.kind.map(RawValue::get) {
                            None | Some("\"text\"") => true,
                            Some(_) => false,
                        };
                        if counted {
                            if any {
                                chars += 1;
                            }
                            any |= !t.is_empty();
                            chars += t.chars().count();
                        }
                        out.texts.push(t);
                    }
                }
                _ => {}
            }
        }
        out.estimate = Query {
            total_chars: chars,
            messages,
            ..Query::default()
        }
        .estimated_tokens() as u64;
        Ok(out)
    }
}

/// The text of every message (string contents and text parts), in order.
#[cfg(test)]
fn message_texts(messages: &[Value]) -> Vec<&str> {
    let mut out = Vec::new();
    for m in messages {
        match m.get("content") {
            Some(Value::String(s)) => out.push(s.as_str()),
            Some(Value::Array(parts)) => {
                out.extend(parts.iter().filter_map(|p| p.get("text")?.as_str()));
            }
            _ => {}
        }
    }
    out
}

/// Redacts every message text in place; returns true if anything changed.
fn redact_messages(
    messages: &mut [Value],
    set: &PolicySet,
    kinds: Option<&[PiiKind]>,
    red: &mut Redactions,
) -> bool {
    let mut changed = false;
    let mut fix = |s: &mut String| {
        let out = set.pii().redact_kinds_into(s, kinds, red);
        if out != *s {
            *s = out;
            changed = true;
        }
    };
    for m in messages.iter_mut() {
        match m.get_mut("content") {
            Some(Value::String(s)) => fix(s),
            Some(Value::Array(parts)) => {
                for p in parts.iter_mut() {
                    if let Some(Value::String(s)) = p.get_mut("text") {
                        fix(s);
                    }
                }
            }
            _ => {}
        }
    }
    changed
}

/// The hash a `split` rule divides traffic by: of the request's `x-request-id`.
pub fn split_hash(headers: &http::HeaderMap) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    headers
        .get("x-request-id")
        .map(http::HeaderValue::as_bytes)
        .unwrap_or_default()
        .hash(&mut h);
    h.finish()
}

fn deny_response(rule: &str, status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    let kind = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    // Per request, and a client can send many: debug, like rate-limited requests (the
    // usage record and `x-slmgate-policy` keep the decision).
    tracing::debug!(rule, status = status.as_u16(), "denied by policy");
    let mut resp = openai_error(status, message, kind, None, "policy_denied");
    resp.extensions_mut()
        .insert(PolicyRule(std::sync::Arc::from(rule)));
    resp
}

/// A JSON number for a parameter: whole numbers without a fraction.
fn number(v: f64, integer: bool) -> String {
    if integer {
        return (v.round().max(1.0) as u64).to_string();
    }
    serde_json::Number::from_f64(v)
        .map(|n| n.to_string())
        .unwrap_or_else(|| "null".into())
}

/// Body changes for the `set` actions.
fn param_changes(
    chat: &ChatRequest,
    out: &Outcome,
) -> Result<Vec<(&'static str, Option<String>)>, GatewayError> {
    let mut changes = Vec::new();
    for (name, action) in out.params().iter() {
        let fields: &[&'static str] = match name {
            "max_tokens" => &["max_tokens", "max_completion_tokens"],
            "temperature" => &["temperature"],
            "top_p" => &["top_p"],
            "presence_penalty" => &["presence_penalty"],
            _ => &["frequency_penalty"],
        };
        let integer = name == "max_tokens";
        let mut present = false;
        for field in fields {
            let Some(cur) = chat.field::<f64>(field)? else {
                continue;
            };
            present = true;
            if let Some(v) = action.apply(Some(cur)).filter(|v| *v != cur) {
                changes.push((*field, Some(number(v, integer))));
            }
        }
        if !present {
            if let Some(v) = action.apply(None) {
                changes.push((fields[0], Some(number(v, integer))));
            }
        }
    }
    Ok(changes)
}

/// The targets a policy's chain names, resolved against this config.
async fn resolve_chain(
    gw: &Gateway,
    chat: &ChatRequest,
    decision: &Decision,
    chain: &[String],
    key: Option<&ClientKey>,
) -> Result<(Vec<Target>, String), GatewayError> {
    let mut targets: Vec<Target> = Vec::new();
    let mut first: Option<String> = None;
    let mut why_not = Vec::new();
    let mut push = |ts: &[Target], name: &str, targets: &mut Vec<Target>| {
        for t in ts {
            let dup = targets
                .iter()
                .any(|x| Arc::ptr_eq(&x.backend, &t.backend) && x.model == t.model);
            if !dup {
                targets.push(t.clone());
            }
        }
        if first.is_none() && !ts.is_empty() {
            first = Some(name.to_string());
        }
    };
    for name in chain {
        if let Some(r) = gw.models.get(name) {
            push(&r.targets, name, &mut targets);
        } else if let Some(router) = gw.router.as_ref().filter(|r| r.router.routes(name)) {
            if chat.model == *name && decision.strategy != "alias" {
                // The router already decided for this very alias.
                push(&decision.route.targets, &decision.target, &mut targets);
                continue;
            }
            let routed = router
                .router
                .decide(&Query::from_chat(chat)?, Availability::Respect)
                .await?;
            // The key's allow-list applies to what the router alias resolves to.
            let routed = match allowed_side(&router.router, routed, key) {
                Ok(r) => r,
                Err(e) => {
                    why_not.push(e.to_string());
                    continue;
                }
            };
            match router.chain(routed.side) {
                Some(r) => push(&r.targets, &routed.target, &mut targets),
                None => why_not.push(format!("`{name}` cannot serve")),
            }
        } else if let Some(b) = gw.policies.backends.get(name) {
            let model = decision
                .route
                .targets
                .iter()
                .find(|t| Arc::ptr_eq(&t.backend, b))
                .map_or_else(|| chat.model.clone(), |t| t.model.clone());
            push(
                &[Target {
                    backend: b.clone(),
                    model,
                }],
                name,
                &mut targets,
            );
        } else {
            why_not.push(
                gw.unavailable
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| format!("`{name}` is disabled")),
            );
        }
    }
    match first {
        Some(f) if !targets.is_empty() => Ok((targets, f)),
        _ => Err(GatewayError::Unavailable(format!(
            "no target of the policy route [{}] can serve: {}",
            chain.join(", "),
            why_not.join("; ")
        ))),
    }
}

/// What the rules make of a request: the outcome, the decision a `route`/`split` puts in
/// place of the router's, and what the rules read.
pub struct Evaluated {
    /// The rules' outcome.
    pub outcome: Outcome,
    /// The new decision of a `route` or `split`.
    pub decision: Option<Decision>,
    /// The prompt estimate the rules saw.
    pub prompt_tokens: u64,
    /// PII kinds found (when a rule needs them).
    pub pii: Vec<PiiKind>,
}

impl Evaluated {
    /// `deny`, `allow`, `route` or `modify`.
    pub fn action(&self) -> &'static str {
        if self.outcome.deny().is_some() {
            "deny"
        } else if self.outcome.is_no_change() {
            "allow"
        } else if self.outcome.route().is_some() {
            "route"
        } else {
            "modify"
        }
    }

    /// The matching rule's name, `None` for the default.
    pub fn rule(&self) -> Option<&str> {
        (!self.outcome.is_default()).then(|| self.outcome.rule_name())
    }
}

/// Evaluates the `policies:` rules for a routed request and resolves a `route`/`split`
/// outcome into a new [`Decision`], without changing anything: the policy step applies the
/// result, the `/v1/route` dry run and `slmgate classify` report it. `split_hash` is asked
/// for only when the outcome splits.
pub async fn evaluate(
    gw: &Gateway,
    chat: &ChatRequest,
    decision: &Decision,
    caller: Option<&Caller>,
    headers: &http::HeaderMap,
    path: &str,
    split_hash: impl FnOnce() -> u64,
) -> Result<Evaluated, GatewayError> {
    let set = &gw.policies.set;
    let key = caller.and_then(|c| c.key.clone());
    // Message texts are read only when PII is scanned.
    let texts =
        if set.needs_pii() {
            Some(MessageTexts::of_chat(chat).map_err(|e| {
                GatewayError::bad_param("messages", format!("invalid `messages`: {e}"))
            })?)
        } else {
            None
        };
    let mut pii: Vec<PiiKind> = Vec::new();
    for t in texts.iter().flat_map(|t| t.texts.iter()) {
        pii.extend(set.pii().kinds_in(t));
    }
    pii.sort();
    pii.dedup();
    let header_values: Vec<(&str, &str)> = set
        .headers()
        .iter()
        .zip(&gw.policies.header_names)
        .filter_map(|(n, h)| {
            let v = headers.get(h.as_ref()?)?.to_str().ok()?;
            Some((n.as_str(), v))
        })
        .collect();
    // The texts are at hand when PII is scanned: no second parse for the estimate.
    let prompt_tokens = texts
        .as_ref()
        .map_or_else(|| prompt_estimate(chat), |t| t.estimate);
    let facts = RequestFacts {
        model: &chat.model,
        key: key.as_ref().map(|k| k.name.as_str()),
        team: key.as_ref().and_then(|k| k.team.as_deref()),
        tags: key.as_ref().map_or(&[][..], |k| k.tags.as_slice()),
        headers: &header_values,
        path,
        target: Some(decision.target.as_str()),
        category: decision.category.as_deref(),
        score: decision.score.map(f64::from),
        prompt_tokens,
        pii: &pii,
        now: SystemTime::now(),
        // Only a `split` reads it: the request id is hashed below, for an outcome that
        // splits, not for every request.
        split_hash: 0,
    };
    let mut outcome = set.evaluate(&facts);
    if outcome.splits() {
        outcome = outcome.with_split_hash(split_hash());
    }
    tracing::debug!(rule = outcome.rule_name(), pii = ?pii, "policy evaluated");
    let mut new_decision = None;
    if outcome.deny().is_none() {
        if let Some(chain) = outcome.route() {
            let (targets, first) = resolve_chain(gw, chat, decision, chain, key.as_deref()).await?;
            let arm = outcome
                .split_arm()
                .map(|i| format!(" (split arm {i})"))
                .unwrap_or_default();
            let mut d = decision.clone();
            d.route = Arc::new(ModelRoute::new(first.clone(), targets));
            d.target = first;
            d.strategy = "policy";
            d.threshold = None;
            d.cascade = None;
            d.reason = format!(
                "policy `{}`: route [{}]{arm}; router said: {}",
                outcome.rule_name(),
                chain.join(", "),
                decision.reason
            );
            new_decision = Some(d);
        }
    }
    Ok(Evaluated {
        outcome,
        decision: new_decision,
        prompt_tokens,
        pii,
    })
}

/// Evaluates the rules and applies the outcome to the request; an `Err` is the response.
async fn apply(
    gw: &Gateway,
    req: &mut RoutedCall,
    span: &tracing::Span,
) -> Result<Applied, Response> {
    let set = &gw.policies.set;
    let (chat, decision) = (&req.call.chat, &req.decision);
    let (headers, path) = (&req.call.head.headers, req.call.head.uri.path());
    let ev = evaluate(
        gw,
        chat,
        decision,
        req.call.caller.as_ref(),
        headers,
        path,
        || split_hash(headers),
    )
    .await
    .map_err(IntoResponse::into_response)?;
    let rule = ev.rule().map(str::to_string);
    telemetry::record_policy(span, ev.outcome.rule_name(), ev.action());
    let Evaluated {
        outcome,
        decision: new_decision,
        prompt_tokens,
        ..
    } = ev;
    if let Some(d) = outcome.deny() {
        return Err(deny_response(outcome.rule_name(), d.status, &d.message));
    }
    if outcome.is_no_change() {
        req.prompt_tokens = Some(prompt_tokens);
        req.policy = Some(PolicyDecision(outcome));
        return Ok(Applied {
            rule,
            restore: None,
        });
    }
    if let Some(d) = &new_decision {
        tracing::debug!(rule = outcome.rule_name(), target = %d.target, "policy route");
    }

    // Parameters and redaction: one rewrite of the body.
    let mut changes = param_changes(chat, &outcome).map_err(IntoResponse::into_response)?;
    let mut restore = None;
    if let Some(r) = outcome.redact() {
        let mut red = Redactions::default();
        let mut messages: Vec<Value> = chat
            .field("messages")
            .map_err(IntoResponse::into_response)?
            .unwrap_or_default();
        if redact_messages(&mut messages, set, r.kinds.as_deref(), &mut red) {
            let json = serde_json::to_string(&messages).map_err(|e| {
                GatewayError::Internal(format!("re-encoding messages: {e}")).into_response()
            })?;
            changes.push(("messages", Some(json)));
            tracing::debug!(
                rule = outcome.rule_name(),
                values = red.len(),
                "PII redacted"
            );
            if r.restore {
                restore = Some(red);
            }
        }
    }
    let new_chat = if changes.is_empty() {
        None
    } else {
        Some(
            chat.with_fields(&changes)
                .map_err(IntoResponse::into_response)?,
        )
    };

    req.prompt_tokens = Some(prompt_tokens);
    if let Some(d) = new_decision {
        req.decision = d;
    }
    if let Some(c) = new_chat {
        req.call.chat = c;
    }
    req.policy = Some(PolicyDecision(outcome));
    Ok(Applied { rule, restore })
}

/// Puts redacted values back into a successful answer.
async fn restore_response(resp: Response, red: Redactions) -> Response {
    let is_sse = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let (mut parts, body) = resp.into_parts();
    if is_sse {
        let filter = RestoreFilter {
            red: Arc::new(red),
            per_choice: HashMap::new(),
            template: None,
        };
        return Response::from_parts(parts, map_events(body, filter));
    }
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            return GatewayError::Upstream(format!("reading the answer failed: {e}"))
                .into_response()
        }
    };
    // Most answers do not repeat a placeholder: pass them on untouched instead of parsing
    // and re-encoding them. (A placeholder is plain ASCII, so it is in the text as is unless
    // the upstream `\u`-escapes letters, which then takes the slow path.)
    let finder = |needle: &[u8]| memchr::memmem::find(&bytes, needle).is_some();
    if !finder(b"\\u") && !red.iter().any(|(p, _)| finder(p.as_bytes())) {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    if let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) {
        for c in choices {
            if let Some(Value::String(s)) = c.pointer_mut("/message/content") {
                *s = red.restore(s);
            }
        }
    }
    let out = v.to_string();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(out))
}

/// Restores `choices[i].delta.content` of each streamed chunk.
struct RestoreFilter {
    red: Arc<Redactions>,
    per_choice: HashMap<u64, StreamRestorer>,
    /// The last chunk, as a template for a chunk carrying held-back text at the end.
    template: Option<Value>,
}

impl RestoreFilter {
    fn restorer(&mut self, i: u64) -> &mut StreamRestorer {
        let red = &self.red;
        self.per_choice
            .entry(i)
            .or_insert_with(|| red.stream_restorer())
    }

    /// Chunks for whatever the restorers still hold.
    fn flush(&mut self, out: &mut Vec<String>) {
        let Some(template) = self.template.clone() else {
            return;
        };
        let mut held: Vec<(u64, StreamRestorer)> = self.per_choice.drain().collect();
        held.sort_by_key(|(i, _)| *i);
        for (i, r) in held {
            let text = r.finish();
            if text.is_empty() {
                continue;
            }
            let mut c = template.clone();
            if let Some(obj) = c.as_object_mut() {
                obj.remove("usage");
                obj.insert(
                    "choices".into(),
                    serde_json::json!([{"index": i, "delta": {"content": text}, "finish_reason": null}]),
                );
            }
            out.push(c.to_string());
        }
    }
}

impl EventFilter for RestoreFilter {
    fn event(&mut self, data: &str, out: &mut Vec<String>) {
        if data == "[DONE]" {
            self.flush(out);
            out.push(data.to_string());
            return;
        }
        let Ok(mut v) = serde_json::from_str::<Value>(data) else {
            out.push(data.to_string());
            return;
        };
        let mut finished = Vec::new();
        if let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) {
            for c in choices.iter_mut() {
                let i = c.get("index").and_then(Value::as_u64).unwrap_or(0);
                let finish = c.get("finish_reason").is_some_and(|f| !f.is_null());
                if let Some(Value::String(s)) = c.pointer_mut("/delta/content") {
                    let restored = self.restorer(i).push(s);
                    *s = restored;
                }
                if finish {
                    finished.push(i);
                }
            }
            // A choice that finished gets its held-back text in its last chunk.
            for c in choices.iter_mut() {
                let i = c.get("index").and_then(Value::as_u64).unwrap_or(0);
                if !finished.contains(&i) {
                    continue;
                }
                let Some(r) = self.per_choice.remove(&i) else {
                    continue;
                };
                let rest = r.finish();
                if rest.is_empty() {
                    continue;
                }
                if let Some(delta) = c.get_mut("delta").and_then(Value::as_object_mut) {
                    let cur = delta
                        .get("content")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    delta.insert("content".into(), Value::String(cur + &rest));
                }
            }
        }
        self.template = Some(v.clone());
        out.push(v.to_string());
    }

    fn end(&mut self, out: &mut Vec<String>) {
        self.flush(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slmgate_policies::pii::{PiiConfig, PiiDetector};
    use slmgate_policies::rules::ParamAction;

    async fn restored(answer: &str, red: Redactions) -> String {
        let mut resp = Response::new(Body::from(answer.to_string()));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        let out = restore_response(resp, red).await;
        let bytes = axum::body::to_bytes(out.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn answers_without_placeholders_pass_untouched() {
        let det = PiiDetector::new(&PiiConfig::default()).unwrap();
        let mut red = Redactions::default();
        let _ = det.redact_into("mail bob@example.com", &mut red);
        assert_eq!(red.len(), 1);
        // Untouched, byte for byte (a re-encoding would drop the spaces).
        let plain =
            r#"{ "choices": [ {"message": {"content": "Paris."}, "finish_reason": "stop"} ] }"#;
        assert_eq!(restored(plain, red.clone()).await, plain);
        // The placeholder as is, and \u-escaped: both restored.
        for content in ["Wrote to [EMAIL_1].", "Wrote to \\u005bEMAIL_1\\u005d."] {
            let answer = format!(r#"{{"choices":[{{"message":{{"content":"{content}"}}}}]}}"#);
            let v: Value = serde_json::from_str(&restored(&answer, red.clone()).await).unwrap();
            assert_eq!(
                v["choices"][0]["message"]["content"],
                "Wrote to bob@example.com."
            );
        }
    }

    #[test]
    fn borrowed_texts_match_the_parsed_messages() {
        for raw in [
            r#"[{"role":"system","content":"Be brief."},{"role":"user","content":"Héllo \"wörld\", mail a@b.co"}]"#,
            r#"[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"text":"bcd"},{"type":"input_text","text":"zz"}]},{"role":"assistant","content":null},{"role":"tool"}]"#,
            r#"[{"role":"user","content":[{"type":"text","text":""},{"type":"text","text":"x"}]}]"#,
        ] {
            let values: Vec<Value> = serde_json::from_str(raw).unwrap();
            let t = MessageTexts::read(raw).unwrap();
            let texts: Vec<&str> = t.texts.iter().map(std::convert::AsRef::as_ref).collect();
            assert_eq!(texts, message_texts(&values), "{raw}");
            let req = ChatRequest::parse(bytes::Bytes::from(format!(
                r#"{{"model":"m","messages":{raw}}}"#
            )))
            .unwrap();
            let want = Query::from_chat(&req).unwrap().estimated_tokens() as u64;
            assert_eq!(t.estimate, want, "{raw}");
            // The request path reads the contents the parse located: the same texts.
            let c = MessageTexts::of_chat(&req).unwrap();
            let located: Vec<&str> = c.texts.iter().map(std::convert::AsRef::as_ref).collect();
            assert_eq!(located, texts, "{raw}");
            assert_eq!(c.estimate, want, "{raw}");
        }
        assert!(MessageTexts::read(r#"{"not":"an array"}"#).is_err());
    }

    #[test]
    fn stream_restore_spans_chunks_and_flushes_at_finish() {
        let det = PiiDetector::new(&PiiConfig::default()).unwrap();
        let (_, red) = det.redact("mail ann@example.org");
        let mut f = RestoreFilter {
            red: Arc::new(red),
            per_choice: HashMap::new(),
            template: None,
        };
        let mut out = Vec::new();
        for piece in ["Hi [EMA", "IL_1", "] and [EMAIL_"] {
            let chunk = serde_json::json!({"choices":[{"index":0,"delta":{"content":piece},"finish_reason":null}]});
            f.event(&chunk.to_string(), &mut out);
        }
        f.event(
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            &mut out,
        );
        f.event("[DONE]", &mut out);
        let text: String = out
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| {
                v.pointer("/choices/0/delta/content")?
                    .as_str()
                    .map(String::from)
            })
            .collect();
        assert_eq!(text, "Hi ann@example.org and [EMAIL_");
        assert_eq!(out.last().map(String::as_str), Some("[DONE]"));
    }

    #[test]
    fn numbers_for_params() {
        assert_eq!(number(256.0, true), "256");
        assert_eq!(number(0.0, true), "1");
        assert_eq!(number(0.5, false), "0.5");
    }

    #[test]
    fn clamp_sets_max_when_absent() {
        let a = ParamAction::Clamp {
            min: None,
            max: Some(16.0),
        };
        assert_eq!(a.apply(None), Some(16.0));
    }
}
