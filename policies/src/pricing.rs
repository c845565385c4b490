//! Model prices and the cost of a request.
//!
//! ```yaml
//! pricing:                       # USD per 1M tokens
//!   gpt-4o:      { input: 2.50, output: 10.00, cached_input: 1.25 }
//!   gpt-4o-mini: { input: 0.15, output: 0.60 }
//!   "claude-*":  { input: 3.00, output: 15.00 }   # globs: the most specific pattern wins
//!   local:       { input: 0, output: 0 }
//! ```
//!
//! A model with no price costs 0 (the embedded model is free unless priced).
//!
//! ```
//! use slmgate_policies::pricing::PriceTable;
//!
//! let table: PriceTable = serde_norway::from_str("gpt-4o: { input: 2.5, output: 10 }").unwrap();
//! assert_eq!(table.cost("gpt-4o", 1_000_000, 100_000), 3.5);
//! assert_eq!(table.cost("unknown", 1_000, 1_000), 0.0);
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Errors, Path};
use crate::glob::{glob_match, is_glob};
use crate::{PathSeg, PolicyError};

/// Prices of one model, USD per 1M tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Prompt tokens.
    pub input: f64,
    /// Completion tokens.
    pub output: f64,
    /// Prompt tokens served from the provider's prompt cache (default: `input`).
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Prompt tokens written to the provider's prompt cache (Anthropic bills them above
    /// `input`; default: `input`).
    #[serde(default)]
    pub cache_write: Option<f64>,
}

impl Price {
    /// USD for `prompt` tokens in (of which `cached` read from and `written` written to the
    /// provider's prompt cache) and `completion` tokens out.
    pub fn cost(&self, prompt: u64, cached: u64, written: u64, completion: u64) -> f64 {
        let cached = cached.min(prompt);
        let written = written.min(prompt - cached);
        let fresh = prompt - cached - written;
        ((fresh as f64 * self.input
            + cached as f64 * self.cached_input.unwrap_or(self.input)
            + written as f64 * self.cache_write.unwrap_or(self.input)
            + completion as f64 * self.output)
            / 1e6)
            .max(0.0)
    }
}

/// Prices by model name (exact names or globs).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct PriceTable {
    /// Model name or glob → price.
    pub models: BTreeMap<String, Price>,
}

impl PriceTable {
    /// Checks that every price is finite and not negative; `path` is where the table sits
    /// (e.g. `pricing`).
    pub fn validate(&self, path: &[PathSeg]) -> Vec<PolicyError> {
        let base = Path::from_segs(path);
        let mut errs = Errors::default();
        for (model, p) in &self.models {
            let mp = base.key(model);
            for (name, v) in [
                ("input", Some(p.input)),
                ("output", Some(p.output)),
                ("cached_input", p.cached_input),
                ("cache_write", p.cache_write),
            ] {
                if let Some(v) = v.filter(|v| !v.is_finite() || *v < 0.0) {
                    errs.push(&mp.key(name), format!("{v} is not a price ≥ 0"));
                }
            }
        }
        errs.0
    }

    /// The price of `model`: its exact entry, else the matching glob with the most literal
    /// characters (ties: the alphabetically first pattern).
    pub fn price(&self, model: &str) -> Option<&Price> {
        if let Some(p) = self.models.get(model) {
            return Some(p);
        }
        self.models
            .iter()
            .filter(|(pat, _)| is_glob(pat) && glob_match(pat, model))
            .max_by_key(|(pat, _)| {
                (
                    pat.chars().filter(|c| !matches!(c, '*' | '?')).count(),
                    std::cmp::Reverse(pat.as_str()),
                )
            })
            .map(|(_, p)| p)
    }

    /// USD for `prompt_tokens` in and `completion_tokens` out (0 for an unpriced model).
    pub fn cost(&self, model: &str, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        self.cost_cached(model, prompt_tokens, 0, completion_tokens)
    }

    /// Like [`cost`](Self::cost), with `cached_tokens` of the prompt billed at the cached
    /// rate (`cached_tokens` is part of `prompt_tokens`, as in OpenAI's usage).
    pub fn cost_cached(
        &self,
        model: &str,
        prompt_tokens: u64,
        cached_tokens: u64,
        completion_tokens: u64,
    ) -> f64 {
        self.price(model).map_or(0.0, |p| {
            p.cost(prompt_tokens, cached_tokens, 0, completion_tokens)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> PriceTable {
        let mut models = BTreeMap::new();
        models.insert(
            "gpt-4o".to_string(),
            Price {
                input: 2.5,
                output: 10.0,
                cached_input: Some(1.25),
                cache_write: None,
            },
        );
        models.insert(
            "gpt-4*".to_string(),
            Price {
                input: 30.0,
                output: 60.0,
                cached_input: None,
                cache_write: None,
            },
        );
        models.insert(
            "gpt-*".to_string(),
            Price {
                input: 1.0,
                output: 2.0,
                cached_input: None,
                cache_write: None,
            },
        );
        PriceTable { models }
    }

    #[test]
    fn exact_then_most_specific_glob() {
        let t = table();
        assert_eq!(t.price("gpt-4o").map(|p| p.input), Some(2.5));
        assert_eq!(t.price("gpt-4-turbo").map(|p| p.input), Some(30.0));
        assert_eq!(t.price("gpt-3.5").map(|p| p.input), Some(1.0));
        assert_eq!(t.price("llama"), None);
    }

    #[test]
    fn costs() {
        let t = table();
        assert!((t.cost("gpt-4o", 1000, 500) - (0.0025 + 0.005)).abs() < 1e-12);
        assert!(
            (t.cost_cached("gpt-4o", 1000, 400, 0) - (600.0 * 2.5 + 400.0 * 1.25) / 1e6).abs()
                < 1e-12
        );
        assert_eq!(t.cost("nope", 1000, 1000), 0.0);
        // More cached than prompt is clamped.
        assert!(t.cost_cached("gpt-4o", 10, 99, 0) > 0.0);
    }

    #[test]
    fn validates() {
        let mut t = table();
        t.models.insert(
            "bad".into(),
            Price {
                input: -1.0,
                output: f64::NAN,
                cached_input: None,
                cache_write: None,
            },
        );
        let errs = t.validate(&[PathSeg::Key("pricing".into())]);
        let paths: Vec<String> = errs.iter().map(PolicyError::path_string).collect();
        assert_eq!(paths, ["pricing.bad.input", "pricing.bad.output"]);
    }
}
