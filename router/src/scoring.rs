//! The complexity strategy: the learned scorer and its threshold, set directly or calibrated
//! so that a target share of queries goes local (RouteLLM's calibration).

use std::io::BufRead;
use std::sync::Arc;

use anyhow::Context as _;
use slmgate_config::routing as cfg;

use crate::engine::{calibrate_threshold, Complexity};
use crate::query::Query;
use crate::scorer::Scorer;

/// Loads the configured scorer (`builtin` or a file).
pub fn load_scorer(spec: &str) -> anyhow::Result<Scorer> {
    if spec == "builtin" {
        Scorer::default_builtin().context("the builtin scorer")
    } else {
        Scorer::load(std::path::Path::new(spec)).with_context(|| format!("scorer `{spec}`"))
    }
}

/// Reads the `prompt` of each JSONL line of a calibration sample.
fn read_prompts(path: &str) -> anyhow::Result<Vec<String>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening `{path}`"))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("`{path}`: reading line {}", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("`{path}`:{}: not JSON", n + 1))?;
        let p = v
            .get("prompt")
            .and_then(|p| p.as_str())
            .with_context(|| format!("`{path}`:{}: no string `prompt`", n + 1))?;
        out.push(p.to_string());
    }
    anyhow::ensure!(!out.is_empty(), "`{path}` holds no prompts");
    Ok(out)
}

/// The scorer as a routing function over the query's text.
pub fn score_fn(scorer: Arc<Scorer>) -> Arc<crate::engine::ComplexityFn> {
    Arc::new(move |q: &Query| match scorer.score_text(&q.text) {
        Ok(s) => s,
        Err(e) => {
            // Features are always finite; what is left is a scorer file whose numbers
            // overflow: treated as "unsure", remote.
            tracing::warn!(error = %e, "complexity scorer failed; routing remote");
            1.0
        }
    })
}

/// Builds the complexity strategy: the scorer and its threshold.
pub fn complexity(c: &cfg::ComplexityStrategy) -> anyhow::Result<Complexity> {
    let scorer = Arc::new(load_scorer(&c.scorer)?);
    let score = score_fn(scorer.clone());
    let (threshold, source) = match (c.threshold, c.target_local_share) {
        (Some(t), _) => (t, "configured".to_string()),
        (None, share) => {
            let share = share.unwrap_or(cfg::DEFAULT_TARGET_LOCAL_SHARE);
            let sample: Vec<f32> = if c.calibration == "builtin" {
                scorer.sample().to_vec()
            } else {
                read_prompts(&c.calibration)?
                    .iter()
                    .map(|p| score(&Query::from_text(p)))
                    .collect()
            };
            let t = calibrate_threshold(&sample, share).with_context(|| {
                format!(
                    "calibrating the complexity threshold: the sample `{}` has no scores",
                    c.calibration
                )
            })?;
            (
                t,
                format!(
                    "calibrated: {:.0}% of {} `{}` prompts local",
                    share * 100.0,
                    sample.len(),
                    c.calibration
                ),
            )
        }
    };
    Ok(Complexity {
        score,
        threshold,
        threshold_source: source,
    })
}
