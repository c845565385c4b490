//! The router: composes the strategies of the `router:` config into one decision per query.
//!
//! Strategies run in the configured order and the first that decides wins:
//! - `rules`: deterministic overrides (tools, images, prompts over the local context);
//! - `semantic`: the nearest named route, when its similarity clears the route's threshold;
//! - `complexity`: the learned scorer's P(large model needed) against the threshold;
//! - `cascade`: when the decision is local, the local answer is checked (see
//!   [`crate::cascade`]) and escalated to the remote model if it is not confident.
//!
//! Nothing decided → `router.default`. Availability comes before all of it: while one side
//! cannot serve (no API key, no model file), everything goes to the other, and the reason
//! says why.
//!
//! The query is embedded at most once per request, for the semantic routes (through the
//! embedder's micro-batcher and cache); the complexity scorer reads only cheap text features.

use std::sync::Arc;

use serde::Serialize;
use slmgate_config::routing::{RuleTarget, Side, Strategy};

use slmgate_openai::error::GatewayError;

use crate::cascade::CascadeCheck;
use crate::query::Query;

/// Embeds query text for the semantic routes. The gateway implements it with its batched,
/// cached local sentence embedder; tests and tools may plug in anything.
#[async_trait::async_trait]
pub trait QueryEmbedder: Send + Sync {
    /// The L2-normalised embedding of `text` (at most [`crate::query::MAX_EMBED_CHARS`]
    /// characters, see [`Query::embed_text`]).
    async fn embed(&self, text: &str) -> Result<Arc<[f32]>, GatewayError>;
}

/// P(large model needed) of a query.
pub type ComplexityFn = dyn Fn(&Query) -> f32 + Send + Sync;

/// One side of the router (local or remote).
#[derive(Debug, Clone)]
pub struct RouterSide {
    /// The model alias (e.g. `local`).
    pub alias: String,
    /// Whether the side can serve (it has a backend that is configured and loaded, or a
    /// fallback that is).
    pub serves: bool,
    /// Why the side cannot serve (or serves only through a fallback).
    pub unavailable: Option<String>,
}

/// Deterministic rules, resolved.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Requests with tools.
    pub tools: RuleTarget,
    /// Requests with media parts.
    pub images: RuleTarget,
    /// Token limit (prompt + completion budget) for local.
    pub max_local_prompt_tokens: Option<usize>,
    /// The completion budget assumed when the request sets no `max_tokens` (the local
    /// backend's default).
    pub default_max_tokens: usize,
    /// User-turn limit for local.
    pub max_local_turns: Option<usize>,
}

/// One semantic route, its examples embedded.
pub struct SemanticRoute {
    /// Category label.
    pub name: String,
    /// Where it goes.
    pub target: Side,
    /// Similarity needed.
    pub threshold: f32,
    /// L2-normalised example embeddings, row-major `examples × dim`.
    pub examples: Vec<f32>,
    /// Embedding dimension.
    pub dim: usize,
}

impl SemanticRoute {
    /// Highest cosine similarity between `v` (normalised) and the route's examples.
    pub fn similarity(&self, v: &[f32]) -> f32 {
        if self.dim == 0 || v.len() != self.dim {
            return f32::NEG_INFINITY;
        }
        self.examples
            .chunks_exact(self.dim)
            .map(|e| e.iter().zip(v).map(|(a, b)| a * b).sum::<f32>())
            .fold(f32::NEG_INFINITY, f32::max)
    }
}

/// The complexity strategy, resolved.
pub struct Complexity {
    /// The scorer.
    pub score: Arc<ComplexityFn>,
    /// Scores at or above go remote.
    pub threshold: f32,
    /// How the threshold was set (for logs and `/v1/route`).
    pub threshold_source: String,
}

/// A routing decision, before it is turned into targets.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Routed {
    /// Chosen side.
    #[serde(serialize_with = "ser_side")]
    pub side: Side,
    /// The alias of the chosen side.
    pub target: String,
    /// Strategy that decided.
    pub strategy: &'static str,
    /// Category label (semantic route, or the complexity class).
    pub category: Option<String>,
    /// The complexity score, when computed.
    pub score: Option<f32>,
    /// The threshold the score was compared with.
    pub threshold: Option<f32>,
    /// Why, in one line.
    pub reason: String,
    /// The cascade check to run on the local answer, if any.
    #[serde(skip)]
    pub cascade: Option<CascadeCheck>,
}

fn ser_side<S: serde::Serializer>(s: &Side, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

/// The router of one configuration.
pub struct Router {
    /// Routed aliases (e.g. `auto`).
    pub aliases: Vec<String>,
    /// The local side.
    pub local: RouterSide,
    /// The remote side.
    pub remote: RouterSide,
    /// Strategies in order.
    pub strategies: Vec<Strategy>,
    /// Target when nothing decides.
    pub default: Side,
    /// Rules.
    pub rules: Rules,
    /// Semantic routes (empty when not configured).
    pub semantic: Vec<SemanticRoute>,
    /// Complexity scorer, when configured.
    pub complexity: Option<Complexity>,
    /// Cascade check, when `cascade` is among the strategies.
    pub cascade: Option<CascadeCheck>,
    /// The embedder (the semantic routes need it).
    pub embedder: Option<Arc<dyn QueryEmbedder>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("aliases", &self.aliases)
            .field("strategies", &self.strategies)
            .finish_non_exhaustive()
    }
}

/// How [`Router::decide`] treats an unavailable side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Route around a side that cannot serve (serving).
    Respect,
    /// Decide as if both sides could serve (offline scoring and evaluation).
    Ignore,
}

impl Router {
    /// Whether `model` is one of the routed aliases.
    pub fn routes(&self, model: &str) -> bool {
        self.aliases.iter().any(|a| a == model)
    }

    /// The side's alias.
    pub fn alias(&self, side: Side) -> &str {
        match side {
            Side::Local => &self.local.alias,
            Side::Remote => &self.remote.alias,
        }
    }

    /// Whether a side can serve.
    pub fn serves(&self, side: Side) -> bool {
        match side {
            Side::Local => self.local.serves,
            Side::Remote => self.remote.serves,
        }
    }

    fn routed(&self, side: Side, strategy: &'static str, reason: String) -> Routed {
        Routed {
            side,
            target: self.alias(side).to_string(),
            strategy,
            category: None,
            score: None,
            threshold: None,
            reason,
            cascade: None,
        }
    }

    /// The query's embedding (once; cached by the embedder).
    async fn embed(&self, q: &Query) -> Result<Option<Arc<[f32]>>, GatewayError> {
        let Some(e) = &self.embedder else {
            return Ok(None);
        };
        e.embed(q.embed_text()).await.map(Some)
    }

    /// The complexity score alone (for `slmgate score` and evaluation). `None` when the
    /// complexity strategy is not configured.
    pub fn score(&self, q: &Query) -> Option<f32> {
        self.complexity.as_ref().map(|c| (c.score)(q))
    }

    /// Decides where `q` goes.
    pub async fn decide(&self, q: &Query, avail: Availability) -> Result<Routed, GatewayError> {
        if avail == Availability::Respect {
            match (self.local.serves, self.remote.serves) {
                (false, false) => {
                    return Err(GatewayError::Unavailable(format!(
                        "neither side of the router can serve: {}: {}; {}: {}",
                        self.local.alias,
                        self.local.unavailable.as_deref().unwrap_or("unavailable"),
                        self.remote.alias,
                        self.remote.unavailable.as_deref().unwrap_or("unavailable"),
                    )))
                }
                (true, false) => {
                    return Ok(self.routed(
                        Side::Local,
                        "availability",
                        format!(
                            "remote model `{}` unavailable ({}); everything goes local",
                            self.remote.alias,
                            self.remote.unavailable.as_deref().unwrap_or("no backend")
                        ),
                    ))
                }
                (false, true) => {
                    return Ok(self.routed(
                        Side::Remote,
                        "availability",
                        format!(
                            "local model `{}` unavailable ({}); everything goes remote",
                            self.local.alias,
                            self.local.unavailable.as_deref().unwrap_or("no backend")
                        ),
                    ))
                }
                (true, true) => {}
            }
        }
        let mut embedding: Option<Arc<[f32]>> = None;
        let mut embedded = false;
        let mut skipped: Vec<String> = Vec::new();
        let mut decided: Option<Routed> = None;
        for s in &self.strategies {
            match s {
                Strategy::Rules => decided = self.rules(q),
                Strategy::Cascade => {}
                Strategy::Semantic | Strategy::Complexity => {
                    if q.text.trim().is_empty() {
                        // Nothing to classify (only a system prompt, or an empty message):
                        // trivially local.
                        skipped.push(format!("{}: empty query", s.as_str()));
                        continue;
                    }
                    if *s == Strategy::Complexity {
                        decided = match &self.complexity {
                            Some(c) => Some(self.complexity(c, q)),
                            None => {
                                skipped.push("complexity: no scorer loaded".into());
                                None
                            }
                        };
                    } else {
                        if !embedded {
                            embedding = self.embed(q).await?;
                            embedded = true;
                        }
                        let Some(v) = embedding.as_deref() else {
                            skipped.push("semantic: no embedder loaded".into());
                            continue;
                        };
                        decided = self.semantic(v);
                    }
                }
            }
            if decided.is_some() {
                break;
            }
        }
        let mut d = decided.unwrap_or_else(|| {
            let why = if skipped.is_empty() {
                "no strategy decided".to_string()
            } else {
                format!("no strategy decided ({})", skipped.join("; "))
            };
            self.routed(
                self.default,
                "default",
                format!("{why}; default {}", self.default.as_str()),
            )
        });
        if d.side == Side::Local && d.strategy != "rules" {
            if let Some(c) = self.cascade {
                if avail == Availability::Ignore || self.remote.serves {
                    d.cascade = Some(c);
                }
            }
        }
        Ok(d)
    }

    fn rules(&self, q: &Query) -> Option<Routed> {
        let r = &self.rules;
        let force = |t: RuleTarget| match t {
            RuleTarget::Local => Some(Side::Local),
            RuleTarget::Remote => Some(Side::Remote),
            RuleTarget::None => None,
        };
        if q.has_tools {
            if let Some(side) = force(r.tools) {
                return Some(self.routed(side, "rules", "the request uses tools".into()));
            }
        }
        if q.has_media {
            if let Some(side) = force(r.images) {
                return Some(self.routed(
                    side,
                    "rules",
                    "the request has image, audio or file parts".into(),
                ));
            }
        }
        if let Some(max) = r.max_local_turns {
            if q.user_turns > max {
                return Some(self.routed(
                    Side::Remote,
                    "rules",
                    format!("{} user turns > {max}", q.user_turns),
                ));
            }
        }
        if let Some(limit) = r.max_local_prompt_tokens {
            // An estimate that leans high: a prompt near the limit goes remote rather than
            // risk the local context (which would also fail over to remote, later).
            let tokens = q.estimated_tokens() + q.max_tokens.unwrap_or(r.default_max_tokens);
            if tokens > limit {
                let mut d = self.routed(
                    Side::Remote,
                    "rules",
                    format!(
                        "prompt (+ max_tokens) of ~{tokens} tokens exceeds the local limit of {limit}"
                    ),
                );
                d.category = Some("long-context".into());
                return Some(d);
            }
        }
        None
    }

    fn semantic(&self, v: &[f32]) -> Option<Routed> {
        let best = self
            .semantic
            .iter()
            .map(|r| (r, r.similarity(v)))
            .filter(|(r, s)| *s >= r.threshold)
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        let (route, sim) = best;
        let mut d = self.routed(
            route.target,
            "semantic",
            format!(
                "matches route `{}` (similarity {sim:.3} >= {:.3})",
                route.name, route.threshold
            ),
        );
        d.category = Some(route.name.clone());
        d.score = Some(sim);
        d.threshold = Some(route.threshold);
        Some(d)
    }

    fn complexity(&self, c: &Complexity, q: &Query) -> Routed {
        let score = (c.score)(q);
        let side = if score >= c.threshold {
            Side::Remote
        } else {
            Side::Local
        };
        let cmp = if side == Side::Remote { ">=" } else { "<" };
        let mut d = self.routed(
            side,
            "complexity",
            format!(
                "P(large model needed) {score:.3} {cmp} threshold {:.3} ({})",
                c.threshold, c.threshold_source
            ),
        );
        d.category = Some(
            if side == Side::Remote {
                "complex"
            } else {
                "simple"
            }
            .into(),
        );
        d.score = Some(score);
        d.threshold = Some(c.threshold);
        d
    }
}

/// The threshold under which `share` of `scores` fall (RouteLLM's calibration): queries
/// scoring below it go local. Equal scores always get the same decision, so with repeated
/// scores the realised share can differ from the request by the size of a tie.
pub fn calibrate_threshold(scores: &[f32], share: f32) -> Option<f32> {
    let mut s: Vec<f32> = scores.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f32::total_cmp);
    let share = share.clamp(0.0, 1.0);
    let k = ((share * s.len() as f32).round() as usize).min(s.len());
    Some(if k == s.len() {
        // Everything local: just above the largest score.
        s[s.len() - 1] + f32::EPSILON.max(s[s.len() - 1].abs() * 1e-6)
    } else {
        s[k]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_yields_the_requested_share() {
        // A synthetic sample: 1000 scores spread over [0, 1).
        let mut x = 12345u64;
        let scores: Vec<f32> = (0..1000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 40) as f32 / (1u64 << 24) as f32
            })
            .collect();
        for share in [0.0f32, 0.1, 0.25, 0.6, 0.9, 1.0] {
            let t = calibrate_threshold(&scores, share).unwrap();
            let local = scores.iter().filter(|&&s| s < t).count() as f32 / 1000.0;
            assert!((local - share).abs() <= 0.002, "share {share}: got {local}");
        }
        assert_eq!(calibrate_threshold(&[], 0.5), None);
        assert_eq!(calibrate_threshold(&[f32::NAN], 0.5), None);
    }
}
