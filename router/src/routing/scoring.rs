//! The complexity strategy: the learned scorer and its threshold, set directly or calibrated
//! so that a target share of queries goes local (RouteLLM's calibration).

use std::io::BufRead;
use std::sync::Arc;

use anyhow::Context as _;
use slmgate_config::routing as cfg;

use super::engine::{calibrate_threshold, Complexity};
use super::query::Query;
use super::scorer::Scorer;
use crate::embeddings::LocalEmbedder;

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

/// The scorer as a routing function: embedding + the query's cheap features.
pub fn score_fn(scorer: Arc<Scorer>) -> Arc<super::engine::ComplexityFn> {
    Arc::new(move |embedding: &[f32], q: &Query| {
        // A features-only scorer reads no embedding.
        let embedding = if scorer.embedding_dim() == 0 {
            &[][..]
        } else {
            embedding
        };
        match scorer.score_text(embedding, &q.text, q.user_turns.max(1)) {
            Ok(s) => s,
            Err(e) => {
                // Shapes were checked when the router was built; what is left is a
                // non-finite input, treated as "unsure": remote.
                tracing::warn!(error = %e, "complexity scorer failed; routing remote");
                1.0
            }
        }
    })
}

/// Builds the complexity strategy: the scorer, checked against the embedder, and its
/// threshold. `None` (with a warning) when the embedder is not loaded.
pub fn complexity(
    c: &cfg::ComplexityStrategy,
    embedder: Option<&Arc<LocalEmbedder>>,
) -> anyhow::Result<Option<Complexity>> {
    let scorer = load_scorer(&c.scorer)?;
    let Some(e) = embedder else {
        tracing::warn!("router: the complexity strategy needs the embedder, which is not loaded; it will not decide");
        return Ok(None);
    };
    let dim = embedder_dim(e);
    if let Some(spec) = scorer.embedder() {
        anyhow::ensure!(
            spec.dim == dim,
            "scorer `{}` was trained on {}-dimensional embeddings ({}), the embedder gives {dim}; retrain it with `slmgate train`",
            c.scorer,
            spec.dim,
            spec.name
        );
    }
    let scorer = Arc::new(scorer);
    let score = score_fn(scorer.clone());
    let (threshold, source) = match (c.threshold, c.target_local_share) {
        (Some(t), _) => (t, "configured".to_string()),
        (None, share) => {
            let share = share.unwrap_or(cfg::DEFAULT_TARGET_LOCAL_SHARE);
            let sample: Vec<f32> = if c.calibration == "builtin" {
                scorer.calibration_scores().to_vec()
            } else {
                let prompts = read_prompts(&c.calibration)?;
                let texts: Vec<String> = prompts
                    .iter()
                    .map(|p| Query::from_text(p).embed_text().to_string())
                    .collect();
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let vectors = embed_all(e, &refs)?;
                prompts
                    .iter()
                    .zip(vectors)
                    .map(|(p, v)| score(&v, &Query::from_text(p)))
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
    Ok(Some(Complexity {
        score,
        threshold,
        threshold_source: source,
    }))
}

#[cfg(feature = "local")]
fn embedder_dim(e: &LocalEmbedder) -> usize {
    e.routing_model().dim()
}

#[cfg(not(feature = "local"))]
fn embedder_dim(_e: &LocalEmbedder) -> usize {
    0
}

#[cfg(feature = "local")]
fn embed_all(e: &LocalEmbedder, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
    e.routing_model()
        .embed(texts)
        .map_err(|err| anyhow::anyhow!("{err}"))
}

#[cfg(not(feature = "local"))]
fn embed_all(_e: &LocalEmbedder, _texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
    anyhow::bail!("slmgate was built without the `local` feature")
}
