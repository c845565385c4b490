//! The rule engine: an ordered list of rules, first match wins, with a default.
//!
//! [`PolicySet::compile`] validates a [`PoliciesConfig`] against the targets that exist and
//! pre-compiles regexes, globs and time windows; [`PolicySet::evaluate`] then maps the
//! [`RequestFacts`] of one request to an [`Outcome`] without allocating (beyond reference
//! counts) and without reading the clock or any other global state.
//!
//! ```
//! use slmgate_policies::{KnownTargets, PoliciesConfig, PolicySet, RequestFacts};
//!
//! let cfg: PoliciesConfig = serde_norway::from_str(r#"
//! rules:
//!   - name: eu-no-gpt4
//!     when: { team: eu, model: "gpt-4*" }
//!     then: { deny: { status: 403, message: "EU team may not use GPT-4" } }
//!   - name: free-tier-local
//!     when: { tags: [free] }
//!     then: { route: local, set: { max_tokens: { max: 256 } } }
//! "#).unwrap();
//! let known = KnownTargets::new(["local", "remote", "auto"]);
//! let set = PolicySet::compile(&cfg, &known).unwrap();
//!
//! let tags = vec!["free".to_string()];
//! let facts = RequestFacts { model: "auto", tags: &tags, ..RequestFacts::default() };
//! let out = set.evaluate(&facts);
//! assert_eq!(out.rule_name(), "free-tier-local");
//! assert_eq!(out.route(), Some(&["local".to_string()][..]));
//! assert_eq!(out.params().max_tokens.and_then(|a| a.apply(Some(1000.0))), Some(256.0));
//! ```

mod compile;
mod config;
mod eval;
mod window;

pub use config::{
    Actions, CacheSetting, Conditions, Deny, HeaderMatch, OneOrMany, ParamAction, PoliciesConfig,
    Range, RedactSetting, Rule, SetParams, SplitArm, TimeWindow,
};
pub use eval::{CacheDirective, DenyAction, Outcome, RedactDirective, RequestFacts};

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::pii::PiiDetector;
use crate::PolicyError;

/// The names a `route`, `split` or `target` may use: model aliases and backend names. The
/// caller decides what is routable (including `auto`, if the router exposes it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownTargets {
    names: BTreeSet<String>,
}

impl KnownTargets {
    /// The set of `names`.
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        KnownTargets {
            names: names.into_iter().map(Into::into).collect(),
        }
    }

    /// Adds a name.
    pub fn insert(&mut self, name: impl Into<String>) {
        self.names.insert(name.into());
    }

    /// Returns true if and only if `name` is known.
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// The names, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
}

impl<S: Into<String>> FromIterator<S> for KnownTargets {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        KnownTargets::new(iter)
    }
}

/// A validated, compiled policy: rules, default and the PII detector they use.
///
/// Immutable and `Send + Sync`: the gateway builds one per config and swaps it on reload.
#[derive(Debug, Clone)]
pub struct PolicySet {
    rules: Vec<compile::CompiledRule>,
    default: Arc<eval::Effect>,
    pii: PiiDetector,
    needs_pii: bool,
    needs_decision: bool,
    headers: Vec<String>,
}

impl PolicySet {
    /// Validates `cfg` and compiles it. On failure returns **every** problem found, each with
    /// its path under `policies` (e.g. `policies.rules[3].when.header.x-foo`).
    ///
    /// Checks: rule names (present, unique, not `default`); targets in `route`, `split` and
    /// `when.target` exist in `known`; no rule is unreachable (after a rule without conditions,
    /// or after a rule with the same conditions) and the default is not shadowed by a
    /// catch-all rule; regexes, header names, ranges, PII kinds and time windows are valid;
    /// `deny` has a 4xx/5xx status and stands alone; `route` and `split` are not combined;
    /// split weights do not sum to 0; `restore` comes with `redact`; parameter values are in
    /// range; cache TTLs parse.
    pub fn compile(
        cfg: &PoliciesConfig,
        known: &KnownTargets,
    ) -> Result<PolicySet, Vec<PolicyError>> {
        compile::compile(cfg, known)
    }

    /// A policy with no rules and no default: every request gets "no change".
    pub fn empty() -> PolicySet {
        PolicySet {
            rules: Vec::new(),
            default: Arc::new(eval::Effect::default()),
            pii: PiiDetector::new(&crate::pii::PiiConfig::default())
                .unwrap_or_else(|_| PiiDetector::none()),
            needs_pii: false,
            needs_decision: false,
            headers: Vec::new(),
        }
    }

    /// The outcome for one request: the first rule whose conditions all hold, else the
    /// default. Pure: the same facts always give the same outcome.
    pub fn evaluate(&self, facts: &RequestFacts<'_>) -> Outcome {
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.conds.iter().all(|c| c.holds(facts)) {
                return Outcome::new(
                    Some((i, rule.name.clone())),
                    rule.effect.clone(),
                    facts.split_hash,
                );
            }
        }
        Outcome::new(None, self.default.clone(), facts.split_hash)
    }

    /// The PII detector configured by `policies.pii`.
    pub fn pii(&self) -> &PiiDetector {
        &self.pii
    }

    /// Returns true if and only if some rule looks at PII (`when.pii`) or redacts, i.e. the
    /// gateway must scan the prompt before evaluating.
    pub fn needs_pii(&self) -> bool {
        self.needs_pii
    }

    /// Returns true if and only if some rule looks at the router's decision (`target`,
    /// `category`, `score`), i.e. the gateway must route before evaluating.
    pub fn needs_decision(&self) -> bool {
        self.needs_decision
    }

    /// Lower-case names of the headers rules look at; the gateway need only pass these.
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Returns true if and only if there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

impl Default for PolicySet {
    fn default() -> Self {
        PolicySet::empty()
    }
}
