//! The `router:` section: how routed aliases (`auto`) choose, query by query, between the
//! local model and the remote one.
//!
//! ```yaml
//! router:
//!   aliases: [auto]          # model names that are routed (default [auto])
//!   local: local             # the alias that answers locally
//!   remote: remote           # the alias of the large model
//!   strategies: [rules, semantic, complexity]   # tried in order; the first that decides wins
//!   rules: { tools: remote, images: remote, max_local_prompt_tokens: 1500 }
//!   semantic:
//!     threshold: 0.6
//!     routes:
//!       - { name: greeting, target: local, examples: ["hi", "thanks!"] }
//!   complexity: { scorer: builtin, target_local_share: 0.6 }
//!   cascade: { tokens: 8, min_mean_logprob: -1.5, min_logprob: -7.0 }
//! ```

use serde::Deserialize;

use crate::ctx::{key, Ctx};
use crate::positions::Seg;
use crate::validate::did_you_mean;
use crate::Config;

/// The router section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Router {
    /// Model names whose requests are routed. Default `[auto]`.
    #[serde(default = "default_aliases")]
    pub aliases: Vec<String>,
    /// The model (alias) that answers locally. Default `local`.
    #[serde(default = "default_local")]
    pub local: String,
    /// The model (alias) of the large remote model. Default `remote`.
    #[serde(default = "default_remote")]
    pub remote: String,
    /// Strategies, tried in order; the first that decides wins (`cascade` instead checks the
    /// local answer when the decision is local). Default `[rules, semantic, complexity]`.
    #[serde(default = "default_strategies")]
    pub strategies: Vec<Strategy>,
    /// Target when no strategy decides. Default `local`.
    #[serde(default)]
    pub default: Side,
    /// Deterministic overrides.
    #[serde(default)]
    pub rules: RulesStrategy,
    /// Named routes with example utterances.
    #[serde(default)]
    pub semantic: SemanticStrategy,
    /// The learned complexity scorer.
    #[serde(default)]
    pub complexity: ComplexityStrategy,
    /// Answer locally, escalate when the local answer is not confident.
    #[serde(default)]
    pub cascade: CascadeStrategy,
}

fn default_aliases() -> Vec<String> {
    vec!["auto".into()]
}
fn default_local() -> String {
    "local".into()
}
fn default_remote() -> String {
    "remote".into()
}
fn default_strategies() -> Vec<Strategy> {
    vec![Strategy::Rules, Strategy::Semantic, Strategy::Complexity]
}

impl Default for Router {
    fn default() -> Self {
        Router {
            aliases: default_aliases(),
            local: default_local(),
            remote: default_remote(),
            strategies: default_strategies(),
            default: Side::Local,
            rules: RulesStrategy::default(),
            semantic: SemanticStrategy::default(),
            complexity: ComplexityStrategy::default(),
            cascade: CascadeStrategy::default(),
        }
    }
}

/// A routing strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Deterministic overrides (`rules-first` is accepted too).
    #[serde(alias = "rules-first")]
    Rules,
    /// Nearest named route by embedding similarity.
    Semantic,
    /// Learned P(large model needed) against a threshold.
    Complexity,
    /// Local first, escalate on low confidence.
    Cascade,
}

impl Strategy {
    /// The name used in headers and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Rules => "rules",
            Strategy::Semantic => "semantic",
            Strategy::Complexity => "complexity",
            Strategy::Cascade => "cascade",
        }
    }
}

/// Local or remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The router's `local` alias.
    #[default]
    Local,
    /// The router's `remote` alias.
    Remote,
}

impl Side {
    /// `local` or `remote`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Local => "local",
            Side::Remote => "remote",
        }
    }
}

/// What a deterministic rule does with a request: send it to a side, or let later
/// strategies decide (`none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleTarget {
    /// Force local.
    Local,
    /// Force remote.
    Remote,
    /// No override.
    None,
}

/// `router.rules`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesStrategy {
    /// Requests carrying `tools`/`functions` or tool messages. Default `remote` (the local
    /// model does not call tools).
    #[serde(default = "remote_rule")]
    pub tools: RuleTarget,
    /// Requests with image, audio or file parts. Default `remote` (the local model reads
    /// text only).
    #[serde(default = "remote_rule")]
    pub images: RuleTarget,
    /// Requests whose prompt tokens plus completion budget (`max_tokens`, or the local
    /// backend's default) exceed this go remote. Default: the local model's context length,
    /// so the local model never has to truncate.
    #[serde(default)]
    pub max_local_prompt_tokens: Option<usize>,
    /// Conversations with more than this many user turns go remote. Default: no limit.
    #[serde(default)]
    pub max_local_turns: Option<usize>,
}

fn remote_rule() -> RuleTarget {
    RuleTarget::Remote
}

impl Default for RulesStrategy {
    fn default() -> Self {
        RulesStrategy {
            tools: RuleTarget::Remote,
            images: RuleTarget::Remote,
            max_local_prompt_tokens: None,
            max_local_turns: None,
        }
    }
}

/// `router.semantic`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticStrategy {
    /// Cosine similarity a route's best example must reach. Default 0.6.
    #[serde(default = "default_semantic_threshold")]
    pub threshold: f32,
    /// The routes.
    #[serde(default)]
    pub routes: Vec<SemanticRoute>,
}

fn default_semantic_threshold() -> f32 {
    0.6
}

impl Default for SemanticStrategy {
    fn default() -> Self {
        SemanticStrategy {
            threshold: default_semantic_threshold(),
            routes: Vec::new(),
        }
    }
}

/// One named route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticRoute {
    /// The category label reported with the decision.
    pub name: String,
    /// Where queries like these go.
    pub target: Side,
    /// Overrides `semantic.threshold` for this route.
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Example utterances.
    #[serde(default)]
    pub examples: Vec<String>,
    /// A file of more examples: one per line, or JSONL lines with a `text` or `prompt` field.
    /// Relative paths resolve against the working directory.
    #[serde(default)]
    pub examples_file: Option<String>,
}

/// `router.complexity`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComplexityStrategy {
    /// `builtin` (trained on the project's data by `slmgate train`) or a path to a scorer
    /// JSON file written by `slmgate train`.
    #[serde(default = "builtin")]
    pub scorer: String,
    /// Scores at or above this go remote. Set this or `target_local_share`.
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Calibrates the threshold so that this share of a query sample goes local
    /// (RouteLLM's calibration). Default 0.6 when `threshold` is not set.
    #[serde(default)]
    pub target_local_share: Option<f32>,
    /// The query sample for calibration: `builtin` (the scores of the everyday prompts the
    /// scorer was calibrated on, stored in the scorer file) or a JSONL file with a `prompt`
    /// field per line.
    #[serde(default = "builtin")]
    pub calibration: String,
}

fn builtin() -> String {
    "builtin".into()
}

impl Default for ComplexityStrategy {
    fn default() -> Self {
        ComplexityStrategy {
            scorer: builtin(),
            threshold: None,
            target_local_share: None,
            calibration: builtin(),
        }
    }
}

/// The default share of queries the calibrated threshold sends local.
pub const DEFAULT_TARGET_LOCAL_SHARE: f32 = 0.6;

/// `router.cascade`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeStrategy {
    /// Tokens generated (and held back when streaming) before the confidence check. Default 8.
    #[serde(default = "default_cascade_tokens")]
    pub tokens: usize,
    /// Escalate when the mean token log-probability is below this. Default -1.5.
    #[serde(default = "default_min_mean")]
    pub min_mean_logprob: f32,
    /// Escalate when any token's log-probability is below this. Default -7.0.
    #[serde(default = "default_min_token")]
    pub min_logprob: f32,
}

fn default_cascade_tokens() -> usize {
    8
}
fn default_min_mean() -> f32 {
    -1.5
}
fn default_min_token() -> f32 {
    -7.0
}

impl Default for CascadeStrategy {
    fn default() -> Self {
        CascadeStrategy {
            tokens: default_cascade_tokens(),
            min_mean_logprob: default_min_mean(),
            min_logprob: default_min_token(),
        }
    }
}

pub(crate) fn validate(cfg: &Config, ctx: &mut Ctx) {
    let Some(r) = &cfg.router else { return };
    let base = [key("router")];
    let p = |rest: &[Seg]| -> Vec<Seg> {
        let mut v = base.to_vec();
        v.extend_from_slice(rest);
        v
    };
    let models: Vec<&str> = cfg.models.iter().map(|m| m.name.as_str()).collect();
    for (field, name) in [("local", &r.local), ("remote", &r.remote)] {
        if !models.contains(&name.as_str()) {
            let hint = did_you_mean(name, models.iter().copied());
            ctx.err(
                &p(&[key(field)]),
                format!("unknown model `{name}`{hint} (the router's {field} side must be a model in `models`)"),
            );
        }
    }
    if r.aliases.is_empty() {
        ctx.err(&p(&[key("aliases")]), "needs at least one name (e.g. auto)");
    }
    let mut seen = std::collections::HashSet::new();
    for (i, a) in r.aliases.iter().enumerate() {
        if a.is_empty() {
            ctx.err(&p(&[key("aliases"), Seg::Index(i)]), "must not be empty");
        } else if models.contains(&a.as_str()) {
            ctx.err(
                &p(&[key("aliases"), Seg::Index(i)]),
                format!("`{a}` is also a model in `models`; a routed alias needs its own name"),
            );
        } else if !seen.insert(a.as_str()) {
            ctx.err(
                &p(&[key("aliases"), Seg::Index(i)]),
                format!("duplicate alias `{a}`"),
            );
        }
    }
    if r.strategies.is_empty() {
        ctx.err(
            &p(&[key("strategies")]),
            "needs at least one of rules, semantic, complexity, cascade",
        );
    }
    let mut strat_seen = std::collections::HashSet::new();
    for (i, s) in r.strategies.iter().enumerate() {
        if !strat_seen.insert(*s) {
            ctx.err(
                &p(&[key("strategies"), Seg::Index(i)]),
                format!("`{}` is listed twice", s.as_str()),
            );
        }
    }
    let unit = |v: f32| (0.0..=1.0).contains(&v);
    if !(-1.0..=1.0).contains(&r.semantic.threshold) {
        ctx.err(
            &p(&[key("semantic"), key("threshold")]),
            "a cosine similarity, between -1 and 1",
        );
    }
    let mut route_names = std::collections::HashSet::new();
    for (i, route) in r.semantic.routes.iter().enumerate() {
        let rp = |f: &str| p(&[key("semantic"), key("routes"), Seg::Index(i), key(f)]);
        if route.name.is_empty() {
            ctx.err(&rp("name"), "must not be empty");
        } else if !route_names.insert(route.name.as_str()) {
            ctx.err(&rp("name"), format!("duplicate route `{}`", route.name));
        }
        if route.examples.is_empty() && route.examples_file.is_none() {
            ctx.err(
                &p(&[key("semantic"), key("routes"), Seg::Index(i)]),
                "needs `examples` or `examples_file`",
            );
        }
        if let Some(file) = &route.examples_file {
            if !std::path::Path::new(file).is_file() {
                ctx.err(
                    &rp("examples_file"),
                    format!("file `{file}` does not exist"),
                );
            }
        }
        if route.threshold.is_some_and(|t| !(-1.0..=1.0).contains(&t)) {
            ctx.err(&rp("threshold"), "a cosine similarity, between -1 and 1");
        }
    }
    if r.strategies.contains(&Strategy::Semantic) && r.semantic.routes.is_empty() {
        ctx.err(
            &p(&[key("semantic"), key("routes")]),
            "the semantic strategy is listed but has no routes",
        );
    }
    let c = &r.complexity;
    match (c.threshold, c.target_local_share) {
        (Some(_), Some(_)) => ctx.err(
            &p(&[key("complexity")]),
            "set either `threshold` or `target_local_share`, not both",
        ),
        (Some(t), None) if !unit(t) => ctx.err(
            &p(&[key("complexity"), key("threshold")]),
            "a probability, between 0 and 1",
        ),
        (None, Some(s)) if !unit(s) => ctx.err(
            &p(&[key("complexity"), key("target_local_share")]),
            "a share, between 0 and 1",
        ),
        _ => {}
    }
    for (field, v) in [("scorer", &c.scorer), ("calibration", &c.calibration)] {
        if v != "builtin" && !std::path::Path::new(v).is_file() {
            ctx.err(
                &p(&[key("complexity"), key(field)]),
                format!("`{v}` is neither `builtin` nor an existing file"),
            );
        }
    }
    if r.cascade.tokens == 0 {
        ctx.err(&p(&[key("cascade"), key("tokens")]), "must be at least 1");
    }
    for (field, v) in [
        ("min_mean_logprob", r.cascade.min_mean_logprob),
        ("min_logprob", r.cascade.min_logprob),
    ] {
        if v > 0.0 || !v.is_finite() {
            ctx.err(
                &p(&[key("cascade"), key(field)]),
                "a log-probability: zero or negative",
            );
        }
    }
}
