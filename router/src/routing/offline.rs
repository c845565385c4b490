//! The router outside the server: `slmgate classify` and `slmgate score` build the same
//! [`Router`] as `serve` (from the same config) and run it on text.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::engine::{Availability, Router};
use super::query::Query;

/// Builds the gateway of `cfg` and returns its router.
pub fn load_router(cfg: &slmgate_config::Config) -> anyhow::Result<Arc<Router>> {
    let gw = crate::build::build_gateway(cfg)?;
    gw.router
        .clone()
        .context("the config has no `router:` section (the embedded default has one)")
}

/// The decision for one text, as JSON: what `serve` would do now, plus — when one side is
/// unavailable and availability decided — what the classification itself says.
pub async fn classify(router: &Router, text: &str) -> anyhow::Result<serde_json::Value> {
    let q = Query::from_text(text);
    let now = router.decide(&q, Availability::Respect).await?;
    let mut out = serde_json::to_value(&now)?;
    if now.strategy == "availability" {
        let ignoring = router.decide(&q, Availability::Ignore).await?;
        out["classification"] = serde_json::to_value(&ignoring)?;
    }
    if let Some(score) = router.score(&q).await? {
        out["complexity_score"] = json!(score);
    }
    Ok(out)
}

#[derive(Deserialize)]
struct ScoreLine {
    #[serde(default)]
    id: serde_json::Value,
    prompt: String,
}

/// `slmgate score`: reads `{"id","prompt"}` lines, writes `{"id","score","target"}` lines in
/// the same order. `score` is the complexity scorer's P(large model needed) (higher = more
/// need for the large model); `target` is the router's decision with both sides assumed
/// available. Returns the number of lines written.
pub async fn score_file(router: &Router, input: &Path, output: &Path) -> anyhow::Result<usize> {
    anyhow::ensure!(
        router.complexity.is_some(),
        "the router has no complexity scorer (add `complexity` to router.strategies)"
    );
    let file =
        std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let mut lines = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}: reading line {}", input.display(), n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ScoreLine = serde_json::from_str(&line).with_context(|| {
            format!(
                "{}:{}: expected a JSON object with a string `prompt`",
                input.display(),
                n + 1
            )
        })?;
        lines.push(parsed);
    }
    let results: Vec<anyhow::Result<serde_json::Value>> = futures::stream::iter(lines)
        .map(|l| async move {
            let q = Query::from_text(&l.prompt);
            let score = router.score(&q).await?.unwrap_or(f32::NAN);
            let d = router.decide(&q, Availability::Ignore).await?;
            Ok(json!({"id": l.id, "score": score, "target": d.target}))
        })
        // Concurrent requests share the embedder's forward passes.
        .buffered(32)
        .collect()
        .await;
    let out =
        std::fs::File::create(output).with_context(|| format!("creating {}", output.display()))?;
    let mut w = std::io::BufWriter::new(out);
    let mut n = 0;
    for r in results {
        writeln!(w, "{}", r?)?;
        n += 1;
    }
    w.flush()?;
    Ok(n)
}

/// Loads the embedder the config names (`embedder.model`), for training and evaluation:
/// with exact `f32` weights for training, or as routing embeds (`embedder.routing_weights`)
/// for evaluation, so `slmgate eval` measures what `serve` decides.
#[cfg(feature = "local")]
pub fn load_embedder(
    cfg: &slmgate_config::Config,
    as_routing: bool,
) -> anyhow::Result<slmgate_local_model::embed::Embedder> {
    use slmgate_local_model::{embed, hub};
    let e = cfg
        .embedder
        .as_ref()
        .context("the config has no `embedder:` section")?;
    let dir = hub::resolve_model_dir(&e.model, &embed::REQUIRED_FILES)
        .with_context(|| format!("embedder `{}` (run scripts/fetch-models.sh)", e.model))?;
    let mut opts = embed::EmbedderOptions::new(dir);
    if as_routing {
        opts.weights = e
            .routing_weights
            .parse()
            .map_err(|m: String| anyhow::anyhow!("embedder.routing_weights: {m}"))?;
    }
    Ok(embed::Embedder::load(&opts)?)
}

/// `slmgate train`: fits a scorer on labelled files and writes it (see
/// [`super::train::train_command`]); returns the report to print.
#[cfg(feature = "local")]
pub fn train(
    cfg: &slmgate_config::Config,
    data: &[std::path::PathBuf],
    out: &Path,
    svg: Option<&Path>,
    opts: &super::train::TrainOptions,
) -> anyhow::Result<String> {
    let embedder = load_embedder(cfg, false)?;
    let report = super::train::train_command(data, &embedder, out, svg, opts)?;
    Ok(report.to_string())
}

/// `slmgate eval`: RouteLLM metrics of the configured scorer (or `scorer`) on labelled
/// files, against the random and prompt-length baselines; rows the scorer was trained on are
/// left out. Returns the report to print.
#[cfg(feature = "local")]
pub fn eval(
    cfg: &slmgate_config::Config,
    scorer: Option<&str>,
    data: &[std::path::PathBuf],
    svg: Option<&Path>,
) -> anyhow::Result<String> {
    let spec = scorer.map(str::to_string).unwrap_or_else(|| {
        cfg.router
            .as_ref()
            .map(|r| r.complexity.scorer.clone())
            .unwrap_or_else(|| "builtin".into())
    });
    let scorer = super::scoring::load_scorer(&spec)?;
    let embedder = load_embedder(cfg, true)?;
    let opts = super::train::EvalOptions::for_scorer(&scorer);
    let report = super::train::eval_command(
        data,
        &opts,
        &mut |p| super::train::score_prompts(&embedder, &scorer, p).map_err(|e| e.to_string()),
        svg,
    )?;
    Ok(report.to_string())
}
