//! Evaluation input ([`RequestFacts`]) and output ([`Outcome`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use regex::Regex;

use super::config::{Range, SetParams};
use super::window::Window;
use crate::glob::Matcher;
use crate::pii::PiiKind;

/// What the gateway knows about a request when it evaluates policies. Every field is
/// borrowed, so filling it allocates nothing.
///
/// Facts the gateway does not have are `None` (or empty); a condition on a missing fact does
/// not hold.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The `model` the client sent.
    pub model: &'a str,
    /// The client key's name (`None` when the gateway is open).
    pub key: Option<&'a str>,
    /// The key's team.
    pub team: Option<&'a str>,
    /// The key's tags.
    pub tags: &'a [String],
    /// Request headers as (name, value); names compare case-insensitively. Only the names in
    /// [`PolicySet::headers`](crate::PolicySet::headers) matter.
    pub headers: &'a [(&'a str, &'a str)],
    /// The request path, e.g. `/v1/chat/completions`.
    pub path: &'a str,
    /// The router's target, when it has decided.
    pub target: Option<&'a str>,
    /// The router's category label.
    pub category: Option<&'a str>,
    /// The router's score.
    pub score: Option<f64>,
    /// Estimated prompt tokens.
    pub prompt_tokens: u64,
    /// PII kinds found in the prompt (duplicates allowed).
    pub pii: &'a [PiiKind],
    /// The current time, passed in so that evaluation is deterministic.
    pub now: SystemTime,
    /// A per-request hash or random number; chooses the arm of a `split`
    /// (`split_hash % total weight`). Hash a stable id (user, conversation) for sticky A/B
    /// assignment, or pass a random number.
    pub split_hash: u64,
}

impl Default for RequestFacts<'_> {
    fn default() -> Self {
        RequestFacts {
            model: "",
            key: None,
            team: None,
            tags: &[],
            headers: &[],
            path: "",
            target: None,
            category: None,
            score: None,
            prompt_tokens: 0,
            pii: &[],
            now: UNIX_EPOCH,
            split_hash: 0,
        }
    }
}

impl<'a> RequestFacts<'a> {
    fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub(crate) enum Cond {
    Model(Matcher),
    Key(Matcher),
    Team(Matcher),
    Tags(Matcher),
    Path(Matcher),
    Target(Matcher),
    Category(Matcher),
    Header(Box<str>, HeaderCond),
    Score(Range),
    PromptTokens(Range),
    /// `None` = any kind.
    Pii(Option<Vec<PiiKind>>),
    Time(Window),
}

#[derive(Debug, Clone)]
pub(crate) enum HeaderCond {
    Equals(Vec<String>),
    Regex(Regex),
    Present(bool),
}

impl Cond {
    /// Returns true if and only if the condition holds for `f`.
    pub(crate) fn holds(&self, f: &RequestFacts<'_>) -> bool {
        match self {
            Cond::Model(m) => m.matches(f.model),
            Cond::Key(m) => f.key.is_some_and(|k| m.matches(k)),
            Cond::Team(m) => f.team.is_some_and(|t| m.matches(t)),
            Cond::Tags(m) => f.tags.iter().any(|t| m.matches(t)),
            Cond::Path(m) => m.matches(f.path),
            Cond::Target(m) => f.target.is_some_and(|t| m.matches(t)),
            Cond::Category(m) => f.category.is_some_and(|c| m.matches(c)),
            Cond::Header(name, h) => match (h, f.header(name)) {
                (HeaderCond::Present(p), v) => v.is_some() == *p,
                (HeaderCond::Equals(vals), Some(v)) => vals.iter().any(|x| x == v),
                (HeaderCond::Regex(re), Some(v)) => re.is_match(v),
                (_, None) => false,
            },
            Cond::Score(r) => f.score.is_some_and(|s| r.contains(s)),
            Cond::PromptTokens(r) => r.contains(f.prompt_tokens as f64),
            Cond::Pii(None) => !f.pii.is_empty(),
            Cond::Pii(Some(kinds)) => f.pii.iter().any(|k| kinds.contains(k)),
            Cond::Time(w) => w.contains(f.now),
        }
    }
}

/// A `deny` action, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyAction {
    /// HTTP status (400–599).
    pub status: u16,
    /// Message for the client.
    pub message: String,
}

/// A `cache` action, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheDirective {
    /// Use the response cache.
    pub enabled: bool,
    /// Entry lifetime (`None` = the cache's own).
    pub ttl: Option<Duration>,
    /// Semantic cache on/off (`None` = the cache's own setting).
    pub semantic: Option<bool>,
}

/// A `redact` action, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedactDirective {
    /// Kinds to redact (`None` = every kind the detector finds).
    pub kinds: Option<Vec<PiiKind>>,
    /// Put the values back into the response.
    pub restore: bool,
}

/// The compiled actions of one rule (or of the default).
#[derive(Debug, Clone, Default)]
pub(crate) struct Effect {
    pub(crate) route: Option<Vec<String>>,
    /// Arms: (targets, cumulative weight); the last cumulative weight is the total (> 0).
    pub(crate) split: Option<Vec<(Vec<String>, u64)>>,
    pub(crate) deny: Option<DenyAction>,
    pub(crate) params: SetParams,
    pub(crate) cache: Option<CacheDirective>,
    pub(crate) redact: Option<RedactDirective>,
}

impl Effect {
    fn pick(&self, hash: u64) -> Option<usize> {
        let arms = self.split.as_ref()?;
        let total = arms.last().map(|(_, c)| *c).filter(|t| *t > 0)?;
        let r = hash % total;
        arms.iter().position(|(_, cum)| r < *cum)
    }
}

/// The result of [`PolicySet::evaluate`](crate::PolicySet::evaluate): which rule decided
/// and what to do. Cheap to clone (reference counts), `'static`, so it can travel in a
/// request extension.
#[derive(Debug, Clone)]
pub struct Outcome {
    rule: Option<(usize, Arc<str>)>,
    effect: Arc<Effect>,
    arm: Option<usize>,
}

impl Outcome {
    pub(crate) fn new(rule: Option<(usize, Arc<str>)>, effect: Arc<Effect>, hash: u64) -> Self {
        let arm = effect.pick(hash);
        Outcome { rule, effect, arm }
    }

    /// The matching rule's name, or `default`.
    pub fn rule_name(&self) -> &str {
        self.rule.as_ref().map_or("default", |(_, n)| n)
    }

    /// The matching rule's index in `policies.rules`, or `None` for the default.
    pub fn rule_index(&self) -> Option<usize> {
        self.rule.as_ref().map(|(i, _)| *i)
    }

    /// Returns true if and only if no rule matched.
    pub fn is_default(&self) -> bool {
        self.rule.is_none()
    }

    /// Where to send the request: one target or a fallback chain, from `route` or from the
    /// chosen `split` arm. `None` = no change (the router's or the client's choice stands).
    pub fn route(&self) -> Option<&[String]> {
        if let (Some(arms), Some(i)) = (&self.effect.split, self.arm) {
            return arms.get(i).map(|(t, _)| t.as_slice());
        }
        self.effect.route.as_deref()
    }

    /// The index of the chosen `split` arm, if the actions have a split.
    pub fn split_arm(&self) -> Option<usize> {
        self.arm
    }

    /// Returns true if and only if the actions have a `split`: the only outcomes whose
    /// arm depends on [`RequestFacts::split_hash`].
    pub fn splits(&self) -> bool {
        self.effect.split.is_some()
    }

    /// The same outcome with its `split` arm picked for `hash`: exactly what evaluating
    /// with `split_hash: hash` gives. Lets a caller hash its request id only for the
    /// outcomes that split.
    pub fn with_split_hash(mut self, hash: u64) -> Self {
        self.arm = self.effect.pick(hash);
        self
    }

    /// The refusal, if the request must be denied.
    pub fn deny(&self) -> Option<&DenyAction> {
        self.effect.deny.as_ref()
    }

    /// Parameters to set or cap (all `None` = no change).
    pub fn params(&self) -> &SetParams {
        &self.effect.params
    }

    /// Cache behaviour, if the actions say anything about it.
    pub fn cache(&self) -> Option<&CacheDirective> {
        self.effect.cache.as_ref()
    }

    /// Redaction, if the prompt must be redacted before forwarding.
    pub fn redact(&self) -> Option<&RedactDirective> {
        self.effect.redact.as_ref()
    }

    /// Returns true if and only if the outcome changes nothing.
    pub fn is_no_change(&self) -> bool {
        let e = &*self.effect;
        e.route.is_none()
            && e.split.is_none()
            && e.deny.is_none()
            && e.params.is_empty()
            && e.cache.is_none()
            && e.redact.is_none()
    }
}
