//! The router outside the server: `slmgate classify`, `score`, `train` and `eval`.
//! `classify` and `score` build the same gateway as `serve` (from the same config) and run
//! its router — and, for `classify`, its policy rules — on text.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use slmgate_routing::engine::{Availability, Router};
use slmgate_routing::query::Query;

/// Builds the gateway of `cfg` and returns its router.
pub fn load_router(
    cfg: &slmgate_config::Config,
) -> anyhow::Result<Arc<slmgate_gateway::auto::AutoRouter>> {
    let gw = slmgate_gateway::build::build_gateway(cfg)?;
    gw.router
        .clone()
        .context("the config has no `router:` section (the embedded default has one)")
}

/// `slmgate classify`: what `POST /v1/route` answers for a one-message request to `model`
/// (policy rules included), plus the complexity score and — when one side is unavailable and
/// availability decided — what the classification itself says.
pub async fn classify(
    gw: &slmgate_gateway::runtime::Gateway,
    model: &str,
    text: &str,
) -> anyhow::Result<serde_json::Value> {
    let body = json!({"model": model, "messages": [{"role": "user", "content": text}]});
    let chat = slmgate_openai::chat::ChatRequest::parse(bytes::Bytes::from(body.to_string()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (mut out, d) = slmgate_gateway::handlers::dry_run(gw, &chat, None, &http::HeaderMap::new())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(router) = gw.router.as_ref().map(|a| &a.router) {
        let q = Query::from_text(text);
        if d.strategy == "availability" {
            let ignoring = router.decide(&q, Availability::Ignore).await?;
            out["classification"] = serde_json::to_value(&ignoring)?;
        }
        if let Some(score) = router.score(&q) {
            out["complexity_score"] = json!(score);
        }
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
            let score = router.score(&q).unwrap_or(f32::NAN);
            let d = router.decide(&q, Availability::Ignore).await?;
            Ok(json!({"id": l.id, "score": score, "target": d.target}))
        })
        // The semantic strategy, when configured, batches concurrent embeddings.
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

/// `slmgate train`: fits a scorer on labelled files (calibrated on `calibration`, the
/// built-in everyday prompts when empty) and writes it; returns the report to print.
pub fn train(
    data: &[PathBuf],
    calibration: &[PathBuf],
    out: &Path,
    opts: &slmgate_routing_lab::train::TrainOptions,
) -> anyhow::Result<String> {
    let report = slmgate_routing_lab::train::train_command(data, calibration, out, opts)?;
    Ok(report.to_string())
}

/// What `slmgate eval` measures.
#[derive(Debug, Clone, Default)]
pub struct EvalArgs {
    /// Labelled files.
    pub data: Vec<PathBuf>,
    /// The scorer to evaluate (`builtin` or a file); default: the config's.
    pub scorer: Option<String>,
    /// Leave-one-source-out: evaluate the training procedure instead of one scorer.
    pub loso: bool,
    /// Calibration files for `--loso` (default: the built-in everyday prompts).
    pub calibration: Vec<PathBuf>,
    /// Groups with fewer rows are summarised, not listed (`--loso`).
    pub min_rows: usize,
    /// Extra per-prompt signals to try in `--loso` (file, keys).
    pub signals: Option<(PathBuf, Vec<String>)>,
    /// Plot the curves as SVG (not with `--loso`).
    pub svg: Option<PathBuf>,
    /// Write every prompt's left-out score as JSONL (`--loso`), for analysis.
    pub scores_out: Option<PathBuf>,
}

/// `slmgate eval`: RouteLLM metrics of a scorer on labelled files against the random and
/// prompt-length baselines, or (`loso`) of the training procedure on every source it was
/// not trained on. Returns the report to print and whether every listed group beat both
/// baselines (always true without `loso`).
pub fn eval(cfg: &slmgate_config::Config, args: &EvalArgs) -> anyhow::Result<(String, bool)> {
    use slmgate_routing_lab::{eval, train};
    let opts = train::TrainOptions::default();
    if args.loso {
        let (samples, _) = train::load_samples(&args.data, &opts.load)?;
        let (calibration, _) = train::load_calibration(&args.calibration, &opts.load)?;
        let extra = match &args.signals {
            Some((path, keys)) => {
                let signals = eval::Signals::load(path, keys)?;
                Some((signals.extra(&samples)?, signals.extra(&calibration)?))
            }
            None => None,
        };
        let report = eval::loso(
            &samples,
            &calibration,
            extra.as_ref().map(|(a, b)| (a, b)),
            args.min_rows,
            &opts,
        )?;
        if let Some(path) = &args.scores_out {
            write_loso_scores(path, &samples, &report.scored)?;
        }
        return Ok((report.to_string(), report.failures().is_empty()));
    }
    let spec = args.scorer.clone().unwrap_or_else(|| {
        cfg.router
            .as_ref()
            .map(|r| r.complexity.scorer.clone())
            .unwrap_or_else(|| "builtin".into())
    });
    let scorer = slmgate_routing::scoring::load_scorer(&spec)?;
    let report = eval::eval_command(&args.data, &opts.load, &scorer, args.svg.as_deref())?;
    Ok((report.to_string(), true))
}

/// Writes `{"left_out","dataset","id","group","score","difficulty","gain","chars"}` per
/// scored prompt (a prompt appears once for its source and once per pool it is in).
fn write_loso_scores(
    path: &Path,
    samples: &[slmgate_routing_lab::train::Sample],
    scored: &[(String, usize, f32)],
) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    for (left_out, i, score) in scored {
        let e = &samples[*i].example;
        let line = json!({
            "left_out": left_out, "dataset": e.dataset, "id": e.id, "group": e.group, "score": score,
            "difficulty": e.difficulty, "gain": e.gain(), "chars": e.prompt.chars().count(),
            "features": samples[*i].features.to_vec(),
        });
        writeln!(w, "{line}")?;
    }
    w.flush()?;
    Ok(())
}

/// The `kind: local` backend behind the router's `local` alias.
#[cfg(feature = "local")]
fn local_backend_of(
    cfg: &slmgate_config::Config,
) -> anyhow::Result<(String, slmgate_config::LocalBackend)> {
    let router = cfg
        .router
        .as_ref()
        .context("the config has no `router:` section")?;
    let model = cfg
        .models
        .iter()
        .find(|m| m.name == router.local)
        .with_context(|| format!("no model `{}` (router.local)", router.local))?;
    let backend = cfg
        .backends
        .iter()
        .find(|b| b.name == model.backend)
        .with_context(|| format!("no backend `{}`", model.backend))?;
    match &backend.kind {
        slmgate_config::BackendKind::Local(l) => Ok((backend.name.clone(), l.clone())),
        _ => anyhow::bail!(
            "`{}` is served by backend `{}`, which is not `kind: local`",
            router.local,
            backend.name
        ),
    }
}

/// The hybrid's quality on one data set.
#[derive(Debug, Clone, Default)]
pub struct HybridRow {
    /// What was measured.
    pub name: String,
    /// Prompts.
    pub n: usize,
    /// Share routed local.
    pub local_share: f64,
    /// Mean quality: all remote, the hybrid, all local.
    pub remote: f64,
    /// See `remote`.
    pub hybrid: f64,
    /// See `remote`.
    pub local: f64,
}

impl HybridRow {
    fn line(&self) -> String {
        let pct = |x: f64| format!("{:.1}%", 100.0 * x);
        let of_remote = if self.remote > 0.0 {
            pct(self.hybrid / self.remote)
        } else {
            "-".into()
        };
        format!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            self.name,
            self.n,
            pct(self.local_share),
            format_args!("{:.3}", self.remote),
            format_args!("{:.3}", self.hybrid),
            format_args!("{:.3}", self.local),
            of_remote
        )
    }
}

/// `slmgate eval --hybrid`: the router of `cfg` (both sides assumed available) with its
/// actual local model on the gold-answer set (a remote answer counts as correct, a local one
/// as the judge says), and on labelled data with the files' pair scores (weak = the local
/// side, strong = the remote side), against all-remote and all-local. Local answers use the
/// local backend's sampling defaults (`temperature`, `repetition_penalty`) with at most
/// `max_tokens` tokens. Returns the report.
#[cfg(feature = "local")]
pub async fn hybrid(
    cfg: &slmgate_config::Config,
    gold: &Path,
    data: &[PathBuf],
    max_tokens: usize,
) -> anyhow::Result<String> {
    use slmgate_local_model::{gold as g, sampling::SamplingParams};

    let auto = load_router(cfg)?;
    let router = &auto.router;
    let (_, local) = local_backend_of(cfg)?;
    // The model the gateway loaded for the local side (not a second copy).
    let generator = auto
        .local
        .iter()
        .flat_map(|c| c.targets.iter())
        .find_map(|t| match t.backend.as_ref() {
            slmgate_gateway::upstream::Backend::Local(l) => Some(l.pool.generator().clone()),
            _ => None,
        })
        .context("the router's local side has no loaded `kind: local` backend")?;
    let items = g::load(gold)?;
    let mut routed_local = Vec::with_capacity(items.len());
    for item in &items {
        let d = router
            .decide(&Query::from_text(&item.prompt), Availability::Ignore)
            .await?;
        routed_local.push(d.target == router.local.alias);
    }
    let params = SamplingParams {
        temperature: local.temperature,
        repetition_penalty: local.repetition_penalty,
        max_tokens: max_tokens.min(local.max_tokens),
        seed: Some(1),
        ..SamplingParams::default()
    };
    let max_tokens = params.max_tokens;
    let report = tokio::task::spawn_blocking(move || -> anyhow::Result<g::GoldReport> {
        Ok(g::run(&generator, &items, &params, |_| {})?)
    })
    .await??;
    let n = report.answers.len();
    let local_n = routed_local.iter().filter(|l| **l).count();
    let correct = |a: &g::GoldAnswer| if a.correct { 1.0 } else { 0.0 };
    let hybrid: f64 = report
        .answers
        .iter()
        .zip(&routed_local)
        .map(|(a, l)| if *l { correct(a) } else { 1.0 })
        .sum();
    let local_right = report
        .answers
        .iter()
        .zip(&routed_local)
        .filter(|(a, l)| **l && a.correct)
        .count();
    let mut rows = vec![HybridRow {
        name: format!("gold answers ({})", gold.display()),
        n,
        local_share: local_n as f64 / n.max(1) as f64,
        remote: 1.0,
        hybrid: hybrid / n.max(1) as f64,
        local: report.total.accuracy(),
    }];
    let opts = slmgate_routing_lab::train::TrainOptions::default();
    for file in data {
        let (examples, _) =
            slmgate_routing_lab::data::load_files(std::slice::from_ref(file), &opts.load)?;
        let mut row = HybridRow {
            name: file.display().to_string(),
            n: examples.len(),
            ..HybridRow::default()
        };
        let mut local_count = 0usize;
        for e in &examples {
            let d = router
                .decide(&Query::from_text(&e.prompt), Availability::Ignore)
                .await?;
            let is_local = d.target == router.local.alias;
            local_count += usize::from(is_local);
            row.remote += e.strong;
            row.local += e.weak;
            row.hybrid += if is_local { e.weak } else { e.strong };
        }
        let k = examples.len().max(1) as f64;
        row.local_share = local_count as f64 / k;
        row.remote /= k;
        row.local /= k;
        row.hybrid /= k;
        rows.push(row);
    }
    let mut out = String::new();
    out.push_str(&format!(
        "hybrid = this config's router + its local model `{}` (temperature {}, repetition \
         penalty {}, at most {} tokens) + a remote model\n",
        local.model,
        local.temperature,
        local
            .repetition_penalty
            .map_or("off".to_string(), |p| p.to_string()),
        max_tokens
    ));
    out.push_str(
        "| data | n | answered locally | quality all-remote | hybrid | all-local | hybrid / all-remote |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &rows {
        out.push_str(&r.line());
        out.push('\n');
    }
    out.push_str(&format!(
        "\ngold set: the local model answered {}/{} of all questions right, {}/{} of those the \
         router sent it; remote answers are counted correct. Labelled files: quality = the \
         files' scores of their weak (local side) and strong (remote side) models.\n",
        report.total.correct, n, local_right, local_n
    ));
    Ok(out)
}
