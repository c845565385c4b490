//! The `cache:` section: response caching of chat completions.
//!
//! ```yaml
//! cache:
//!   exact:                      # same request (canonical hash) → same answer
//!     enabled: true
//!     ttl: 1h
//!     max_bytes: 67108864       # 64 MiB of cached answers
//!     temperature_zero_only: true
//!     shared: false             # also keep answers in `state.redis` (every instance sees them)
//!   semantic:                   # a paraphrase of the last user message → same answer
//!     enabled: false            # needs the embedder
//!     threshold: 0.95           # cosine similarity needed for a hit
//!     ttl: 1h
//!     max_entries: 10000
//! ```
//!
//! Both caches are off when the section is absent; the embedded default config turns the
//! exact cache on. A policy's `cache` action overrides `enabled` and `ttl` per request.

use std::time::Duration;

use serde::Deserialize;

use crate::ctx::{key, Ctx};
use crate::Config;

/// `cache:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    /// The exact cache, keyed by a canonical hash of the request.
    #[serde(default)]
    pub exact: ExactCache,
    /// The semantic cache, keyed by the embedding of the last user message.
    #[serde(default)]
    pub semantic: SemanticCache,
}

/// `cache.exact`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExactCache {
    /// Whether requests use it (a policy `cache` action can still turn it on or off per
    /// request). Default false; the embedded default config sets true.
    #[serde(default)]
    pub enabled: bool,
    /// How long an answer is kept. Default 1h.
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// Bytes of cached answers kept (least recently used go first). Default 64 MiB.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Only requests with `temperature: 0` are cached (absent means OpenAI's default, 1),
    /// unless a policy says `cache: true`. Default true.
    #[serde(default = "yes")]
    pub temperature_zero_only: bool,
    /// Also keep answers in the Redis of `state.redis`, so an answer stored by one instance
    /// answers the same request on every instance (same key and scoping; each instance keeps
    /// its in-memory store in front). Default false.
    #[serde(default)]
    pub shared: bool,
}

impl Default for ExactCache {
    fn default() -> Self {
        ExactCache {
            enabled: false,
            ttl: default_ttl(),
            max_bytes: default_max_bytes(),
            temperature_zero_only: true,
            shared: false,
        }
    }
}

/// `cache.semantic`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticCache {
    /// Whether requests use it (needs `embedder:`). Default false.
    #[serde(default)]
    pub enabled: bool,
    /// Cosine similarity between the last user messages needed for a hit. Default 0.95.
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    /// How long an answer is kept. Default 1h.
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// Answers kept over all scopes (teams × models × conversations). Default 10000.
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
}

impl Default for SemanticCache {
    fn default() -> Self {
        SemanticCache {
            enabled: false,
            threshold: default_threshold(),
            ttl: default_ttl(),
            max_entries: default_max_entries(),
        }
    }
}

fn default_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_max_entries() -> u64 {
    10_000
}
fn default_threshold() -> f32 {
    0.95
}
fn yes() -> bool {
    true
}

pub(crate) fn validate(cfg: &Config, ctx: &mut Ctx) {
    let c = &cfg.cache;
    let at = |section: &str, field: &str| [key("cache"), key(section), key(field)];
    if c.exact.ttl.is_zero() {
        ctx.err(
            &at("exact", "ttl"),
            "must be greater than zero (use `enabled: false` to turn the cache off)",
        );
    }
    if c.exact.max_bytes == 0 {
        ctx.err(&at("exact", "max_bytes"), "must be greater than zero");
    }
    if c.exact.shared && cfg.state.redis.is_none() {
        ctx.err(
            &at("exact", "shared"),
            "a shared cache needs Redis: add `state: { redis: { url: ... } }`",
        );
    }
    if c.semantic.ttl.is_zero() {
        ctx.err(
            &at("semantic", "ttl"),
            "must be greater than zero (use `enabled: false` to turn the cache off)",
        );
    }
    if c.semantic.max_entries == 0 {
        ctx.err(&at("semantic", "max_entries"), "must be greater than zero");
    }
    let t = c.semantic.threshold;
    if !(t > 0.0 && t <= 1.0) {
        ctx.err(
            &at("semantic", "threshold"),
            format!("{t} is not a cosine similarity in (0, 1] (e.g. 0.95)"),
        );
    }
    if c.semantic.enabled && cfg.embedder.is_none() {
        ctx.err(
            &at("semantic", "enabled"),
            "the semantic cache needs the embedder: add an `embedder:` section",
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::load_str_with_env;

    fn load(yaml: &str) -> Result<crate::Config, crate::ConfigErrors> {
        load_str_with_env(yaml, "t.yaml", &|_| None)
    }

    #[test]
    fn absent_section_is_off_and_default_config_turns_exact_on() {
        let cfg = load("{}").unwrap();
        assert!(!cfg.cache.exact.enabled && !cfg.cache.semantic.enabled);
        assert!(cfg.cache.exact.temperature_zero_only);
        assert_eq!(cfg.cache.semantic.threshold, 0.95);
        let cfg =
            load_str_with_env(crate::DEFAULT_CONFIG_YAML, "<embedded default>", &|_| None).unwrap();
        assert!(cfg.cache.exact.enabled);
        assert!(!cfg.cache.semantic.enabled);
    }

    #[test]
    fn parses_every_field() {
        let cfg = load(
            "embedder: { model: nowhere }\ncache:\n  exact: { enabled: true, ttl: 5m, max_bytes: 1000, temperature_zero_only: false }\n  semantic: { enabled: true, threshold: 0.9, ttl: 30s, max_entries: 7 }\n",
        )
        .unwrap();
        let c = &cfg.cache;
        assert_eq!(c.exact.ttl, std::time::Duration::from_secs(300));
        assert_eq!(c.exact.max_bytes, 1000);
        assert!(!c.exact.temperature_zero_only);
        assert_eq!(c.semantic.threshold, 0.9);
        assert_eq!(c.semantic.max_entries, 7);
    }

    #[test]
    fn bad_values_point_at_their_line() {
        let errs = load(
            "cache:\n  exact:\n    ttl: 0s\n    max_bytes: 0\n  semantic:\n    enabled: true\n    threshold: 1.5\n    max_entries: 0\n",
        )
        .unwrap_err();
        let text: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "t.yaml:3:5: cache.exact.ttl: must be greater than zero (use `enabled: false` to turn the cache off)",
                "t.yaml:4:5: cache.exact.max_bytes: must be greater than zero",
                "t.yaml:6:5: cache.semantic.enabled: the semantic cache needs the embedder: add an `embedder:` section",
                "t.yaml:7:5: cache.semantic.threshold: 1.5 is not a cosine similarity in (0, 1] (e.g. 0.95)",
                "t.yaml:8:5: cache.semantic.max_entries: must be greater than zero",
            ]
        );
        let errs = load("cache:\n  exact:\n    enabled: true\n    shared: true\n").unwrap_err();
        assert_eq!(
            errs.0[0].to_string(),
            "t.yaml:4:5: cache.exact.shared: a shared cache needs Redis: add `state: { redis: { url: ... } }`"
        );
        let cfg = load(
            "state: { redis: { url: \"redis://127.0.0.1:6379\" } }\ncache: { exact: { enabled: true, shared: true } }\n",
        )
        .unwrap();
        assert!(cfg.cache.exact.shared);
        let errs = load("cache:\n  exact:\n    enable: true\n").unwrap_err();
        assert_eq!(errs.0[0].path, "cache.exact.enable");
        assert_eq!(errs.0[0].line, Some(3));
    }
}
