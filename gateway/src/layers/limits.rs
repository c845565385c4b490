//! The limits step: per-key rate limits and per-key / per-team USD budgets.
//!
//! It runs after the policy step (whose caps and routes change what a request may cost) and
//! right before forwarding, so admission happens as late as possible and nothing after it
//! can refuse the request without going through settlement.
//!
//! - **Rate limits** (`keys[].rate_limit`): one request, and estimated prompt tokens +
//!   `max_tokens` (or [`DEFAULT_COMPLETION_TOKENS`]) per choice (`n`), are counted against
//!   the key's GCRA quotas; over → 429 with `Retry-After`.
//! - **Budgets** (`keys[].budget`, `teams[].budget`): the estimated cost — prompt estimate
//!   × input price + `n` × `max_tokens` × output price (every choice may use all of
//!   `max_tokens`; the prompt is paid once), for the most expensive target of the
//!   decision's chain — is reserved in every budget the request is subject to, atomically
//!   ([`BudgetLedger::admit`]); over → 429 `insufficient_quota` naming the budget. When the
//!   answer is complete the reservation is settled with the real cost from the answer's
//!   `usage` and the backend that answered (`pricing.local` for `kind: local` backends):
//!   for a JSON answer at once, for a stream when its last event has passed (the step asks
//!   upstream for the usage chunk and hides it again from clients that did not ask). An
//!   error answer releases the reservation without cost; an answer without usage (a stream
//!   cut short, a client that went away) is charged the estimated prompt plus one token per
//!   streamed chunk, at most the estimate.
//!
//! State lives in [`LimitState`], a cheap handle that [`crate::build::build_gateway_with`]
//! takes from the previous configuration, so spend and rate-limit cells survive a reload.
//! With `state.redis` configured, rate limits and budgets are checked in Redis, shared by
//! every instance ([`crate::state`]); when Redis fails, `on_error: open` uses the in-process
//! state for that request and `on_error: closed` answers 503 `server_error` with
//! `Retry-After`.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use slmgate_policies::budget::{BudgetLedger, BudgetLimits, Budgeted, Reservation};
use slmgate_policies::pricing::{Price, PriceTable};
use slmgate_policies::ratelimit::RateLimiters;
use slmgate_policies::NameMap;
use tower::{Layer, Service};

use super::sse_map::{map_events, EventFilter};
use super::BoxFuture;
use crate::call::RoutedCall;
use crate::facts::{CacheOutcome, Served};
use crate::keys::ClientKey;
use crate::state::{RedisReservation, RedisStore, StateError};
use crate::targets::Target;
use crate::upstream::Backend;
use slmgate_config::state::OnError;
use slmgate_openai::chat::{extract_usage, is_usage_only_chunk, AnswerUsage, ChatRequest, Usage};
use slmgate_openai::error::{openai_error, GatewayError};
use slmgate_routing::query::Query;

/// Completion tokens assumed for estimates when a request sets no `max_tokens`.
pub const DEFAULT_COMPLETION_TOKENS: u64 = 1024;

/// Budget and rate-limit state. Cloning gives another handle to the same state; keep one
/// across configuration reloads.
#[derive(Debug, Clone, Default)]
pub struct LimitState {
    /// Spend and reservations per key and team.
    pub budgets: BudgetLedger,
    /// GCRA cells per key.
    pub rates: RateLimiters,
    /// The shared state in Redis (`state.redis`), when configured; `budgets` and `rates`
    /// are then the fallback while Redis fails (`on_error: open`), and `budgets` mirrors
    /// this instance's spend.
    pub redis: Option<Arc<RedisStore>>,
}

/// A hold on budgets, in process or in Redis. Dropped unsettled, it releases the
/// reservation without cost.
#[derive(Debug)]
pub enum Hold {
    /// In this process's ledger.
    Local(Reservation),
    /// In Redis (`state.redis`).
    Redis(RedisReservation),
}

impl Hold {
    /// The USD reserved.
    pub fn estimate_usd(&self) -> f64 {
        match self {
            Hold::Local(r) => r.estimate_usd(),
            Hold::Redis(r) => r.estimate_usd(),
        }
    }

    /// Replaces the reservation with the real cost, `usd`.
    pub fn settle(self, usd: f64, now: SystemTime) {
        match self {
            Hold::Local(r) => r.settle(usd, now),
            Hold::Redis(r) => r.settle(usd, now),
        }
    }
}

/// Why [`check_rate`] or [`reserve`] refused a request.
#[derive(Debug)]
pub enum Refusal {
    /// Over a rate limit (429 with `Retry-After`).
    Rate(GatewayError),
    /// Over a budget (429 `insufficient_quota`).
    Budget(slmgate_policies::budget::BudgetExceeded),
    /// Redis failed under `on_error: closed` (503).
    State(StateError),
}

impl Refusal {
    /// The HTTP status it is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Rate(e) => e.status_code(),
            Refusal::Budget(_) => StatusCode::TOO_MANY_REQUESTS,
            Refusal::State(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The error code (the usage row's error class).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Rate(e) => e.code(),
            Refusal::Budget(_) => "budget_exceeded",
            Refusal::State(_) => "state_unavailable",
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Rate(e) => e.into_response(),
            Refusal::Budget(e) => budget_response(&e),
            Refusal::State(e) => state_unavailable(&e),
        }
    }
}

/// Counts one request and `tokens` against `key`'s rate limit (in Redis when configured).
///
/// # Errors
/// [`Refusal::Rate`] over the limit; [`Refusal::State`] when Redis fails under
/// `on_error: closed`.
pub async fn check_rate(acc: &Accounting, key: &ClientKey, tokens: u32) -> Result<(), Refusal> {
    let Some(rl) = &key.rate_limit else {
        return Ok(());
    };
    let checked = match &acc.state.redis {
        Some(r) => match r.check_rate(&key.name, rl, tokens).await {
            Ok(checked) => checked,
            Err(e) if r.on_error() == OnError::Closed => return Err(Refusal::State(e)),
            Err(_) => acc.state.rates.check(&key.name, rl, tokens),
        },
        None => acc.state.rates.check(&key.name, rl, tokens),
    };
    checked.map_err(|e| {
        // Debug, not info: refusals come as fast as a client sends them (184,000 info lines
        // in 20 s were seen); the metrics count them.
        tracing::debug!(key = %key.name, kind = %e.kind, "rate limited");
        Refusal::Rate(GatewayError::RateLimited {
            message: format!("key `{}`: {e}", key.name),
            retry_after: e.retry_after,
        })
    })
}

/// The budgets `key` is subject to: its own, then its team's (unlimited ones left out).
fn budgets<'a>(acc: &'a Accounting, key: &'a ClientKey) -> Vec<Budgeted<'a>> {
    let own = key
        .budget
        .as_ref()
        .filter(|b| !b.is_unlimited())
        .map(|b| Budgeted::key(&key.name, b));
    let team = key
        .team
        .as_deref()
        .and_then(|t| acc.teams.get(t).map(|b| (t, b)))
        .filter(|(_, b)| !b.is_unlimited())
        .map(|(t, b)| Budgeted::team(t, b));
    own.into_iter().chain(team).collect()
}

/// Reserves `estimate` USD in every budget `key` is subject to (in Redis when configured);
/// `None` when no budget applies.
///
/// # Errors
/// [`Refusal::Budget`] naming the budget that would be exceeded; [`Refusal::State`] when
/// Redis fails under `on_error: closed`.
pub async fn reserve(
    acc: &Accounting,
    key: &ClientKey,
    estimate: f64,
) -> Result<Option<Hold>, Refusal> {
    let subjects = budgets(acc, key);
    if subjects.is_empty() {
        return Ok(None);
    }
    let now = SystemTime::now();
    let ledger = &acc.state.budgets;
    let admitted = match &acc.state.redis {
        Some(r) => match r.admit(&subjects, estimate, now, ledger).await {
            Ok(admitted) => admitted.map(Hold::Redis),
            Err(e) if r.on_error() == OnError::Closed => return Err(Refusal::State(e)),
            Err(_) => ledger.admit(&subjects, estimate, now).map(Hold::Local),
        },
        None => ledger.admit(&subjects, estimate, now).map(Hold::Local),
    };
    admitted.map(Some).map_err(Refusal::Budget)
}

/// The answer when the shared state fails under `on_error: closed`.
fn state_unavailable(e: &StateError) -> Response {
    let mut resp = openai_error(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("{e}; limits cannot be checked (state.redis.on_error: closed)"),
        "server_error",
        None,
        "state_unavailable",
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// Prices, team budgets and the shared state, for one configuration.
#[derive(Debug, Default)]
pub struct Accounting {
    /// `pricing:`; the entry `local` prices `kind: local` backends.
    pub prices: PriceTable,
    /// Team budgets by team name.
    pub teams: NameMap<BudgetLimits>,
    /// The state (shared with earlier and later configurations).
    pub state: LimitState,
    /// [`PriceTable::price`] answers by model name: a model without an exact entry is
    /// matched against every glob of the table (the embedded defaults hold dozens), which
    /// the request path would otherwise repeat for every request.
    pub resolved: std::sync::RwLock<NameMap<Option<Price>>>,
}

impl Accounting {
    /// Models remembered by [`model_price`](Self::model_price) (configured targets and the
    /// reference model: a handful).
    const RESOLVED_MAX: usize = 1024;

    /// The price of an answer from `target` (`None` = free).
    pub fn price(&self, target: &Target) -> Option<Price> {
        match &*target.backend {
            Backend::OpenAi(_) => self.model_price(&target.model),
            #[cfg(feature = "local")]
            Backend::Local(_) => self.prices.models.get("local").copied(),
        }
    }

    /// The price of `model` in `pricing:` (see [`PriceTable::price`]), remembered.
    pub fn model_price(&self, model: &str) -> Option<Price> {
        if let Ok(m) = self.resolved.read() {
            if let Some(p) = m.get(model) {
                return *p;
            }
        }
        let p = self.prices.price(model).copied();
        if let Ok(mut m) = self.resolved.write() {
            if m.len() < Self::RESOLVED_MAX {
                m.insert(model.to_string(), p);
            }
        }
        p
    }
}

/// USD for `prompt` tokens in and `completion` tokens out at `price`.
pub fn cost(price: Option<Price>, prompt: u64, completion: u64) -> f64 {
    price.map_or(0.0, |p| p.cost(prompt, 0, 0, completion))
}

/// USD for an answer's `usage` at `price`: prompt-cache reads and writes at their own rates
/// (`cached_input`, `cache_write`; the input price when unset).
pub fn usage_cost(price: Option<Price>, u: &Usage) -> f64 {
    price.map_or(0.0, |p| {
        p.cost(
            u.prompt_tokens,
            u.cached_tokens,
            u.cache_write_tokens,
            u.completion_tokens,
        )
    })
}

/// A quick estimate of a request's prompt tokens (see [`Query::estimated_tokens`]).
pub fn prompt_estimate(chat: &ChatRequest) -> u64 {
    Query::from_chat(chat)
        .map(|q| q.estimated_tokens() as u64)
        .unwrap_or(chat.body().len() as u64 / 4)
}

/// The completion tokens the request may generate in all: `max_tokens` (or
/// `max_completion_tokens`, else [`DEFAULT_COMPLETION_TOKENS`]) for each of its `n`
/// choices. Parsing bounded both ([`ChatRequest::parse`]), so the product cannot overflow.
pub fn completion_estimate(chat: &ChatRequest) -> u64 {
    let per_choice = chat
        .field::<u64>("max_completion_tokens")
        .ok()
        .flatten()
        .or(chat.field::<u64>("max_tokens").ok().flatten())
        .unwrap_or(DEFAULT_COMPLETION_TOKENS);
    let choices = chat.field::<u64>("n").ok().flatten().unwrap_or(1).max(1);
    per_choice.saturating_mul(choices)
}

/// Enforces rate limits and budgets of the caller's key (and team).
#[derive(Clone, Copy, Debug, Default)]
pub struct LimitsLayer;

impl<S> Layer<S> for LimitsLayer {
    type Service = Limits<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Limits { inner }
    }
}

/// See [`LimitsLayer`].
#[derive(Clone, Debug)]
pub struct Limits<S> {
    inner: S,
}

fn budget_response(e: &slmgate_policies::budget::BudgetExceeded) -> Response {
    // Debug, not info: a client retrying in a tight loop would write a line per attempt.
    tracing::debug!(scope = %e.scope, name = %e.name, period = %e.period, "budget exhausted");
    let mut resp = openai_error(
        StatusCode::TOO_MANY_REQUESTS,
        &e.to_string(),
        "insufficient_quota",
        None,
        "budget_exceeded",
    );
    let wait = e
        .resets_at
        .duration_since(SystemTime::now())
        .map_or(1, |d| d.as_secs().max(1));
    if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

impl<S> Service<RoutedCall> for Limits<S>
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
            let Some(key) = req.call.caller.as_ref().and_then(|c| c.key.clone()) else {
                // An open gateway has no keys, so nothing to limit.
                return inner.call(req).await;
            };
            let acc = &gw.accounting;
            let budgeted = !budgets(acc, &key).is_empty();
            if key.rate_limit.is_none() && !budgeted {
                return inner.call(req).await;
            }
            let (chat, decision) = (&req.call.chat, &req.decision);
            let prompt = req.prompt_tokens.unwrap_or_else(|| prompt_estimate(chat));
            let completion = completion_estimate(chat);

            let tokens = u32::try_from(prompt.saturating_add(completion)).unwrap_or(u32::MAX);
            if let Err(r) = check_rate(acc, &key, tokens).await {
                return Ok(r.into_response());
            }
            if !budgeted {
                return inner.call(req).await;
            }

            let estimate = decision
                .route
                .targets
                .iter()
                .map(|t| cost(acc.price(t), prompt, completion))
                .fold(0.0, f64::max);
            let reservation = match reserve(acc, &key, estimate).await {
                Ok(Some(r)) => r,
                Ok(None) => return inner.call(req).await,
                Err(r) => return Ok(r.into_response()),
            };
            let route = decision.route.clone();
            // Streams: ask upstream for the usage chunk (hidden again below).
            let hide_usage = chat.stream && !chat.client_wants_usage;
            if hide_usage {
                match chat.with_stream_usage() {
                    Ok(c) => req.call.chat = c,
                    Err(e) => return Ok(e.into_response()),
                }
            }

            let resp = inner.call(req).await?;
            let settle = Settle {
                reservation: Some(reservation),
                price: None,
                prompt,
                completion,
                usage: None,
                chunks: 0,
            };
            Ok(settle_response(resp, settle, &gw.accounting, &route, hide_usage).await)
        })
    }
}

/// A reservation waiting for the answer's real cost. Settles when dropped.
struct Settle {
    reservation: Option<Hold>,
    price: Option<Price>,
    prompt: u64,
    completion: u64,
    usage: Option<Usage>,
    chunks: u64,
}

impl Drop for Settle {
    fn drop(&mut self) {
        let Some(r) = self.reservation.take() else {
            return;
        };
        let usd = match self.usage {
            Some(u) => usage_cost(self.price, &u),
            None => {
                let guess = cost(self.price, self.prompt, self.chunks.min(self.completion));
                guess.min(r.estimate_usd())
            }
        };
        r.settle(usd, SystemTime::now());
    }
}

async fn settle_response(
    resp: Response,
    mut settle: Settle,
    acc: &Accounting,
    route: &Arc<crate::targets::ModelRoute>,
    hide_usage: bool,
) -> Response {
    if !resp.status().is_success() {
        // Nothing was generated: release without cost.
        drop(settle.reservation.take());
        return resp;
    }
    if resp
        .extensions()
        .get::<CacheOutcome>()
        .is_some_and(|c| c.is_hit())
    {
        // Served from the response cache: nothing was generated, nothing is charged (the
        // stream's usage chunk is still hidden below from clients that did not ask).
        drop(settle.reservation.take());
    }
    let target = resp
        .extensions()
        .get::<Served>()
        .and_then(|s| s.target.as_ref())
        .or(route.targets.first());
    settle.price = target.and_then(|t| acc.price(t));
    let is_sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_sse {
        // A step below read the answer's usage already: settle with it, and leave the body
        // alone.
        if let Some(&AnswerUsage(usage)) = resp.extensions().get::<AnswerUsage>() {
            settle.usage = usage;
            if usage.is_none() {
                settle.chunks = settle.completion;
            }
            drop(settle);
            return resp;
        }
    }
    let (mut parts, body) = resp.into_parts();
    if is_sse {
        let filter = UsageFilter { settle, hide_usage };
        return Response::from_parts(parts, map_events(body, filter));
    }
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            return GatewayError::Upstream(format!("reading the answer failed: {e}"))
                .into_response()
        }
    };
    settle.usage = slmgate_openai::chat::answer_usage(&mut parts, &bytes);
    if settle.usage.is_none() {
        // No usage reported: charge what was reserved.
        settle.chunks = settle.completion;
    }
    drop(settle);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

/// Reads the usage chunk of a stream (hiding it from clients that did not ask for it) and
/// counts chunks; the reservation settles when the stream is dropped.
struct UsageFilter {
    settle: Settle,
    hide_usage: bool,
}

impl EventFilter for UsageFilter {
    fn event(&mut self, data: &str, out: &mut Vec<String>) {
        if data.contains("\"usage\"") {
            if let Some(u) = extract_usage(data.as_bytes()) {
                self.settle.usage = Some(u);
                if self.hide_usage && is_usage_only_chunk(data) {
                    return;
                }
            }
        }
        if data != "[DONE]" {
            self.settle.chunks += 1;
        }
        out.push(data.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_per_million() {
        let p = Price {
            input: 2.0,
            output: 10.0,
            cached_input: None,
            cache_write: None,
        };
        assert!((cost(Some(p), 1_000_000, 100_000) - 3.0).abs() < 1e-12);
        assert_eq!(cost(None, 10, 10), 0.0);
        // Prompt-cache reads and writes at their own rates; the rest at the input price.
        let p = Price {
            input: 3.0,
            output: 15.0,
            cached_input: Some(0.3),
            cache_write: Some(3.75),
        };
        let u: Usage = serde_json::from_str(
            r#"{"prompt_tokens":1000,"completion_tokens":100,"total_tokens":1100,
                "prompt_tokens_details":{"cached_tokens":400},"cache_creation_input_tokens":100}"#,
        )
        .unwrap();
        assert_eq!((u.cached_tokens, u.cache_write_tokens), (400, 100));
        let want = (500.0 * 3.0 + 400.0 * 0.3 + 100.0 * 3.75 + 100.0 * 15.0) / 1e6;
        assert!((usage_cost(Some(p), &u) - want).abs() < 1e-12);
        let plain: Usage = serde_json::from_str(
            r#"{"prompt_tokens":1000,"completion_tokens":100,"prompt_tokens_details":null}"#,
        )
        .unwrap();
        assert!((usage_cost(Some(p), &plain) - cost(Some(p), 1000, 100)).abs() < 1e-12);
    }

    fn chat(body: &str) -> ChatRequest {
        ChatRequest::parse(bytes::Bytes::from(body.to_string())).expect("valid request")
    }

    #[test]
    fn the_completion_estimate_counts_every_choice() {
        let m = r#""model":"m","messages":[{"role":"user","content":"hi"}]"#;
        assert_eq!(completion_estimate(&chat(&format!("{{{m}}}"))), 1024);
        assert_eq!(
            completion_estimate(&chat(&format!(r#"{{{m},"max_tokens":100}}"#))),
            100
        );
        assert_eq!(
            completion_estimate(&chat(&format!(r#"{{{m},"max_tokens":100,"n":4}}"#))),
            400
        );
        assert_eq!(
            completion_estimate(&chat(&format!(
                r#"{{{m},"max_completion_tokens":10,"max_tokens":100,"n":3}}"#
            ))),
            30
        );
    }

    /// An answer without usage (a stream cut short) is charged up to the whole estimate, all
    /// choices included.
    #[test]
    fn an_answer_without_usage_settles_per_choice() {
        use slmgate_policies::budget::{BudgetScope, Budgeted};
        let p = Price {
            input: 0.0,
            output: 1e6, // $1 a token
            cached_input: None,
            cache_write: None,
        };
        let ledger = BudgetLedger::new();
        let limits = BudgetLimits {
            daily_usd: Some(1000.0),
            monthly_usd: None,
        };
        let now = SystemTime::now();
        let completion = 4 * 10; // n: 4, max_tokens: 10
        let reservation = ledger
            .admit(
                &[Budgeted::key("k", &limits)],
                cost(Some(p), 0, completion),
                now,
            )
            .expect("admitted");
        // 25 chunks streamed over the four choices, then the stream broke.
        drop(Settle {
            reservation: Some(Hold::Local(reservation)),
            price: Some(p),
            prompt: 0,
            completion,
            usage: None,
            chunks: 25,
        });
        let spent = ledger.usage(BudgetScope::Key, "k", now).day_spent_usd;
        assert!((spent - 25.0).abs() < 1e-9, "{spent}");
    }

    #[test]
    fn usage_only_chunks() {
        assert!(is_usage_only_chunk(
            r#"{"choices":[],"usage":{"prompt_tokens":1}}"#
        ));
        assert!(!is_usage_only_chunk(
            r#"{"choices":[{"delta":{}}],"usage":{"prompt_tokens":1}}"#
        ));
    }
}
