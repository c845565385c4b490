//! Training and evaluating the complexity scorer.
//!
//! [`train`] fits the [`Scorer`]'s logistic regression on embedded, labelled prompts: inputs
//! standardised with the training rows' means and standard deviations, cross-entropy with
//! soft targets ([`Target`]) and an L2 penalty chosen by k-fold cross-validation **on the
//! training rows only** (folds by a hash of the prompt id, objective: mean APGR over the data
//! sets), solved exactly by Newton's method (IRLS), so the result is deterministic and takes
//! well under a second.
//!
//! [`evaluate`] computes the RouteLLM metrics of any score on labelled prompts, next to the
//! baselines: random routing (its expected value), prompt length (score = characters) and the
//! oracle, per data set and for all of them together. `train_command` (feature `local`: it
//! embeds the prompts) and [`eval_command`] are what `slmgate train` and `slmgate eval` run.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::data::{self, by_dataset, DataError, Example, FileSummary, LoadOptions};
use super::features::{features, NUM_FEATURES};
use super::metrics::{fmt_num, fmt_pct, Curve, RouteMetrics, Routed};
use super::scorer::{EmbedderSpec, NamedMetrics, Scorer, ScorerError, TrainingInfo};

/// Errors of training and evaluation.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading the data failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Building or saving the scorer failed.
    #[error(transparent)]
    Scorer(#[from] ScorerError),
    /// The inputs cannot be trained or evaluated on.
    #[error("{0}")]
    Invalid(String),
    /// Computing embeddings failed.
    #[error("computing embeddings: {0}")]
    Embed(String),
    /// Writing an output file failed.
    #[error("writing {path}: {message}", path = .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// How a prompt's (weak, strong) qualities become the training target in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// `(1 + strong − weak) / 2`: the strong model's advantage mapped to `[0, 1]` (0.5 = no
    /// difference). The ordering it teaches is the one PGR rewards: by expected gain.
    Gain,
    /// `max(0, strong − weak)`: only the advantage counts; prompts where the weak model is as
    /// good or better are all 0.
    PositiveGain,
    /// 1 if `strong − weak ≥ margin`, else 0 (a hard label).
    Margin {
        /// The smallest gain (on the 0–1 quality scale) that counts as "needs the large model".
        margin: f64,
    },
    /// `(1 − alpha)·(1 + strong − weak)/2 + alpha·(1 − weak)`: the gain, mixed with how badly
    /// the weak model does (a difficulty signal that transfers to other model pairs).
    Mixed {
        /// Weight of the weak model's failure, in `[0, 1]`.
        alpha: f64,
    },
}

impl Target {
    /// The target of one example.
    /// Rows read from `{"prompt","label"}` lines train on their label whatever the kind.
    pub fn of(&self, e: &Example) -> f64 {
        if let Some(label) = e.label {
            return label.clamp(0.0, 1.0);
        }
        let g = e.gain();
        match *self {
            Target::Gain => ((1.0 + g) / 2.0).clamp(0.0, 1.0),
            Target::PositiveGain => g.clamp(0.0, 1.0),
            Target::Margin { margin } => f64::from(u8::from(g >= margin)),
            Target::Mixed { alpha } => {
                ((1.0 - alpha) * (1.0 + g) / 2.0 + alpha * (1.0 - e.weak)).clamp(0.0, 1.0)
            }
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Gain => write!(f, "soft label (1 + strong − weak)/2, qualities in 0–1"),
            Target::PositiveGain => write!(f, "soft label max(0, strong − weak), qualities in 0–1"),
            Target::Margin { margin } => write!(f, "label 1 if strong − weak ≥ {margin}"),
            Target::Mixed { alpha } => write!(
                f,
                "soft label (1 − {alpha})·(1 + strong − weak)/2 + {alpha}·(1 − weak), qualities in 0–1"
            ),
        }
    }
}

/// How the embedding block is scaled before the L2 penalty sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddingScaling {
    /// Each dimension standardised on its own.
    PerDim,
    /// Centred, and every dimension divided by the same root-mean-square deviation (keeps the
    /// embedding's geometry: directions that vary little stay small).
    Shared,
}

/// Training options. [`TrainOptions::default`] is what built the shipped scorer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainOptions {
    /// Seed of the train/test split by prompt id.
    pub split_seed: u64,
    /// Share of prompts held out for testing (0 trains on everything).
    pub test_fraction: f64,
    /// How the data files are read.
    pub load: LoadOptions,
    /// The training target.
    pub target: Target,
    /// Candidate L2 penalties (on the mean loss); cross-validation picks one. A single value
    /// skips cross-validation.
    pub l2_grid: Vec<f64>,
    /// Cross-validation folds.
    pub folds: usize,
    /// Seed of the fold assignment (repeat `r` uses `cv_seed + r`).
    pub cv_seed: u64,
    /// Cross-validation repeats with different fold assignments, averaged (less noise in the
    /// choice of penalty).
    pub cv_repeats: usize,
    /// Among penalties whose CV APGR is within this of the best, the strongest is chosen
    /// (prefers the simpler model when the difference is noise).
    pub cv_tolerance: f64,
    /// Use the query embedding.
    pub use_embedding: bool,
    /// Use the cheap features.
    pub use_features: bool,
    /// Scaling of the embedding block.
    pub embedding_scaling: EmbeddingScaling,
    /// Weight examples so that every data set has the same total weight.
    pub balance_datasets: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            split_seed: 1,
            test_fraction: 0.3,
            load: LoadOptions::default(),
            target: Target::Mixed { alpha: 0.25 },
            l2_grid: vec![0.03, 0.1, 0.3, 1.0],
            folds: 5,
            cv_seed: 2,
            cv_repeats: 3,
            cv_tolerance: 0.005,
            use_embedding: true,
            use_features: true,
            embedding_scaling: EmbeddingScaling::PerDim,
            balance_datasets: true,
        }
    }
}

/// A labelled prompt with its model inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The prompt and its qualities.
    pub example: Example,
    /// Its embedding (empty when embeddings are not used).
    pub embedding: Vec<f32>,
    /// Its [`features`] (single turn).
    pub features: Vec<f32>,
}

impl Sample {
    /// A sample with features computed from the prompt.
    pub fn new(example: Example, embedding: Vec<f32>) -> Sample {
        let features = features(&example.prompt, 1);
        Sample {
            example,
            embedding,
            features,
        }
    }
}

/// What fitting found.
#[derive(Debug, Clone, PartialEq)]
pub struct FitReport {
    /// The chosen L2 penalty.
    pub l2: f64,
    /// Cross-validation: (L2 penalty, mean APGR over data sets of the out-of-fold scores).
    pub cv: Vec<(f64, f64)>,
    /// Newton iterations of the final fit.
    pub iterations: usize,
}

/// Fits a scorer on `train` (every sample must have the same embedding length: 0, or
/// `embedder.dim`). Deterministic.
pub fn train(
    train: &[Sample],
    embedder: Option<EmbedderSpec>,
    opts: &TrainOptions,
) -> Result<(Scorer, FitReport), TrainError> {
    if train.is_empty() {
        return Err(TrainError::Invalid("no training examples".into()));
    }
    let dim = if opts.use_embedding {
        embedder.as_ref().map_or(0, |e| e.dim)
    } else {
        0
    };
    if opts.use_embedding && embedder.is_none() {
        return Err(TrainError::Invalid(
            "use_embedding is set but no embedder was given".into(),
        ));
    }
    if let Some(bad) = train
        .iter()
        .find(|s| opts.use_embedding && s.embedding.len() != dim)
    {
        return Err(TrainError::Invalid(format!(
            "prompt {} has a {}-dimensional embedding, expected {dim}",
            bad.example.id,
            bad.embedding.len()
        )));
    }
    if !opts.use_embedding && !opts.use_features {
        return Err(TrainError::Invalid(
            "neither embeddings nor features enabled".into(),
        ));
    }
    if opts.l2_grid.is_empty() || opts.l2_grid.iter().any(|l| !l.is_finite() || *l <= 0.0) {
        return Err(TrainError::Invalid(
            "the L2 grid needs at least one positive value".into(),
        ));
    }

    let rows: Vec<Vec<f32>> = train.iter().map(|s| input_row(s, opts)).collect();
    let targets: Vec<f64> = train.iter().map(|s| opts.target.of(&s.example)).collect();
    let weights = example_weights(train, opts.balance_datasets);

    // Cross-validation over the L2 grid.
    let mut cv = Vec::new();
    let l2 = if opts.l2_grid.len() == 1 || opts.folds < 2 {
        opts.l2_grid[0]
    } else {
        let repeats = opts.cv_repeats.max(1);
        for &l2 in &opts.l2_grid {
            let mut score = 0.0;
            for r in 0..repeats {
                let o = TrainOptions {
                    cv_seed: opts.cv_seed.wrapping_add(r as u64),
                    ..opts.clone()
                };
                let oof = oof_scores(train, &rows, &targets, &weights, dim, l2, &o)?;
                score += mean_dataset_apgr(train.iter().map(|s| &s.example), &oof);
            }
            cv.push((l2, score / repeats as f64));
        }
        let best = cv.iter().map(|c| c.1).fold(f64::NEG_INFINITY, f64::max);
        cv.iter()
            .filter(|c| c.1 >= best - opts.cv_tolerance)
            .map(|c| c.0)
            .fold(f64::NEG_INFINITY, f64::max)
    };

    let all: Vec<usize> = (0..train.len()).collect();
    let model = fit_linear(&rows, &targets, &weights, &all, dim, l2, opts)?;
    let iterations = model.iterations;
    let (mean, std, w, b) = model.into_parts();
    let info = TrainingInfo {
        command: "slmgate train".into(),
        target: opts.target.to_string(),
        l2,
        cv: cv.clone(),
        train_rows: train.len(),
        ..TrainingInfo::default()
    };
    let spec = if opts.use_embedding { embedder } else { None };
    let scorer = Scorer::logistic(spec, opts.use_features, mean, std, w, b, info)?;
    Ok((scorer, FitReport { l2, cv, iterations }))
}

/// Out-of-fold scores of the training samples: `opts.folds` folds by a hash of the prompt
/// id (seed `opts.cv_seed`), each scored by a model fitted on the other folds with penalty
/// `l2`.
pub fn cross_validate(
    train: &[Sample],
    l2: f64,
    opts: &TrainOptions,
) -> Result<Vec<f32>, TrainError> {
    let dim = if opts.use_embedding {
        train.first().map_or(0, |s| s.embedding.len())
    } else {
        0
    };
    let rows: Vec<Vec<f32>> = train.iter().map(|s| input_row(s, opts)).collect();
    let targets: Vec<f64> = train.iter().map(|s| opts.target.of(&s.example)).collect();
    let weights = example_weights(train, opts.balance_datasets);
    oof_scores(train, &rows, &targets, &weights, dim, l2, opts)
}

#[allow(clippy::too_many_arguments)]
fn oof_scores(
    train: &[Sample],
    rows: &[Vec<f32>],
    targets: &[f64],
    weights: &[f64],
    dim: usize,
    l2: f64,
    opts: &TrainOptions,
) -> Result<Vec<f32>, TrainError> {
    let folds = opts.folds.max(2);
    let fold_of: Vec<usize> = train
        .iter()
        .map(|s| {
            ((data::unit_hash(opts.cv_seed, &s.example.id) * folds as f64) as usize).min(folds - 1)
        })
        .collect();
    let mut oof = vec![0f32; train.len()];
    for k in 0..folds {
        let fit_idx: Vec<usize> = (0..train.len()).filter(|&i| fold_of[i] != k).collect();
        let held: Vec<usize> = (0..train.len()).filter(|&i| fold_of[i] == k).collect();
        if fit_idx.is_empty() || held.is_empty() {
            continue;
        }
        let model = fit_linear(rows, targets, weights, &fit_idx, dim, l2, opts)?;
        for &i in &held {
            oof[i] = model.apply(&rows[i]);
        }
    }
    Ok(oof)
}

/// The model input of a sample: embedding (if used) then features (if used).
fn input_row(s: &Sample, opts: &TrainOptions) -> Vec<f32> {
    let mut row = Vec::with_capacity(s.embedding.len() + NUM_FEATURES);
    if opts.use_embedding {
        row.extend_from_slice(&s.embedding);
    }
    if opts.use_features {
        row.extend_from_slice(&s.features);
    }
    row
}

/// Per-example weights with mean 1; with `balance`, each data set gets the same total.
fn example_weights(train: &[Sample], balance: bool) -> Vec<f64> {
    if !balance {
        return vec![1.0; train.len()];
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in train {
        *counts.entry(s.example.dataset.as_str()).or_default() += 1;
    }
    let k = counts.len() as f64;
    let n = train.len() as f64;
    train
        .iter()
        .map(|s| n / (k * counts[s.example.dataset.as_str()] as f64))
        .collect()
}

/// The mean over data sets of the APGR of `scores` (degenerate data sets count as 0.5).
pub fn mean_dataset_apgr<'a>(examples: impl Iterator<Item = &'a Example>, scores: &[f32]) -> f64 {
    let mut groups: BTreeMap<&str, Vec<Routed>> = BTreeMap::new();
    for (e, &score) in examples.zip(scores) {
        groups.entry(e.dataset.as_str()).or_default().push(Routed {
            score,
            weak: e.weak,
            strong: e.strong,
        });
    }
    if groups.is_empty() {
        return 0.0;
    }
    groups
        .values()
        .map(|rows| Curve::new(rows).apgr().unwrap_or(0.5))
        .sum::<f64>()
        / groups.len() as f64
}

/// A fitted linear model on raw inputs (standardisation folded in for fast application).
struct Linear {
    mean: Vec<f64>,
    scale: Vec<f64>,
    /// Weights on standardised inputs.
    w: Vec<f64>,
    b: f64,
    iterations: usize,
}

impl Linear {
    fn apply(&self, x: &[f32]) -> f32 {
        let mut z = self.b;
        for (((w, x), m), s) in self.w.iter().zip(x).zip(&self.mean).zip(&self.scale) {
            z += w * (f64::from(*x) - m) / s;
        }
        super::scorer::sigmoid(z as f32)
    }

    /// The scorer's (mean, std, weights, bias), in its input layout.
    fn into_parts(self) -> (Vec<f32>, Vec<f32>, Vec<f32>, f32) {
        let f32v = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<f32>>();
        (
            f32v(&self.mean),
            f32v(&self.scale),
            f32v(&self.w),
            self.b as f32,
        )
    }
}

/// Fits logistic regression with soft targets and an L2 penalty on the rows `idx`.
fn fit_linear(
    rows: &[Vec<f32>],
    targets: &[f64],
    weights: &[f64],
    idx: &[usize],
    dim: usize,
    l2: f64,
    opts: &TrainOptions,
) -> Result<Linear, TrainError> {
    let d = rows.first().map_or(0, Vec::len);
    let n = idx.len() as f64;
    // Standardisation from the fitted rows.
    let mut mean = vec![0f64; d];
    for &i in idx {
        for (m, x) in mean.iter_mut().zip(&rows[i]) {
            *m += f64::from(*x);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut var = vec![0f64; d];
    for &i in idx {
        for ((v, x), m) in var.iter_mut().zip(&rows[i]).zip(&mean) {
            let dx = f64::from(*x) - m;
            *v += dx * dx;
        }
    }
    var.iter_mut().for_each(|v| *v /= n);
    let mut scale: Vec<f64> = var
        .iter()
        .map(|v| if *v > 1e-12 { v.sqrt() } else { 1.0 })
        .collect();
    if opts.use_embedding && opts.embedding_scaling == EmbeddingScaling::Shared && dim > 0 {
        let rms = (var[..dim].iter().sum::<f64>() / dim as f64)
            .sqrt()
            .max(1e-12);
        scale[..dim].iter_mut().for_each(|s| *s = rms);
    }
    let x: Vec<Vec<f64>> = idx
        .iter()
        .map(|&i| {
            rows[i]
                .iter()
                .zip(&mean)
                .zip(&scale)
                .map(|((x, m), s)| (f64::from(*x) - m) / s)
                .collect()
        })
        .collect();
    let y: Vec<f64> = idx.iter().map(|&i| targets[i]).collect();
    let sw: Vec<f64> = idx.iter().map(|&i| weights[i]).collect();
    let (w, b, iterations) = logistic_newton(&x, &y, &sw, l2)?;
    Ok(Linear {
        mean,
        scale,
        w,
        b,
        iterations,
    })
}

/// Minimises `Σᵢ sᵢ·CE(yᵢ, σ(b + w·xᵢ)) / Σ sᵢ + l2/2·|w|²` by Newton's method with step
/// halving. Returns (w, b, iterations).
fn logistic_newton(
    x: &[Vec<f64>],
    y: &[f64],
    sw: &[f64],
    l2: f64,
) -> Result<(Vec<f64>, f64, usize), TrainError> {
    let n = x.len();
    let d = x.first().map_or(0, Vec::len);
    let total: f64 = sw.iter().sum();
    if n == 0 || total <= 0.0 {
        return Err(TrainError::Invalid("no examples to fit".into()));
    }
    // Parameters: θ = [w (d), b].
    let p = d + 1;
    let mut theta = vec![0f64; p];
    let ybar = y.iter().zip(sw).map(|(y, s)| y * s).sum::<f64>() / total;
    theta[d] = logit(ybar.clamp(1e-6, 1.0 - 1e-6));

    let loss = |theta: &[f64]| -> f64 {
        let mut l = 0.0;
        for i in 0..n {
            let z = theta[d] + dot64(&theta[..d], &x[i]);
            // CE with soft target: softplus(z) − y·z.
            l += sw[i] * (softplus(z) - y[i] * z);
        }
        l / total + 0.5 * l2 * theta[..d].iter().map(|w| w * w).sum::<f64>()
    };
    let mut current = loss(&theta);
    let mut iterations = 0;
    for it in 0..100 {
        iterations = it + 1;
        let mut grad = vec![0f64; p];
        let mut hess = vec![0f64; p * p];
        for i in 0..n {
            let z = theta[d] + dot64(&theta[..d], &x[i]);
            let pr = sigmoid64(z);
            let r = sw[i] * (pr - y[i]) / total;
            let h = sw[i] * pr * (1.0 - pr) / total;
            for j in 0..d {
                grad[j] += r * x[i][j];
            }
            grad[d] += r;
            // Upper triangle (row-major), x extended with a trailing 1.
            for a in 0..d {
                let ha = h * x[i][a];
                if ha == 0.0 {
                    continue;
                }
                let row = &mut hess[a * p..(a + 1) * p];
                for (bb, v) in row[a..d].iter_mut().enumerate() {
                    *v += ha * x[i][a + bb];
                }
                row[d] += ha;
            }
            hess[d * p + d] += h;
        }
        for j in 0..d {
            grad[j] += l2 * theta[j];
            hess[j * p + j] += l2;
        }
        hess[d * p + d] += 1e-9;
        for a in 0..p {
            for bb in 0..a {
                hess[a * p + bb] = hess[bb * p + a];
            }
        }
        let step = cholesky_solve(&mut hess, &grad, p).ok_or_else(|| {
            TrainError::Invalid("the Newton system is singular (increase the L2 penalty)".into())
        })?;
        // Step halving until the loss does not increase.
        let mut t = 1.0;
        let mut improved = false;
        for _ in 0..30 {
            let cand: Vec<f64> = theta.iter().zip(&step).map(|(a, s)| a - t * s).collect();
            let l = loss(&cand);
            if l <= current + 1e-12 {
                theta = cand;
                let gain = current - l;
                current = l;
                improved = gain > 1e-10;
                break;
            }
            t *= 0.5;
        }
        let step_norm = step.iter().map(|s| s * s).sum::<f64>().sqrt() * t;
        if !improved || step_norm < 1e-7 {
            break;
        }
    }
    let b = theta[d];
    theta.truncate(d);
    Ok((theta, b, iterations))
}

/// Solves `A x = b` for symmetric positive definite `A` (overwritten by its Cholesky factor).
fn cholesky_solve(a: &mut [f64], b: &[f64], n: usize) -> Option<Vec<f64>> {
    for j in 0..n {
        let mut s = a[j * n + j];
        for k in 0..j {
            s -= a[j * n + k] * a[j * n + k];
        }
        if s.is_nan() || s <= 0.0 {
            return None;
        }
        let l = s.sqrt();
        a[j * n + j] = l;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / l;
        }
    }
    let mut z = vec![0f64; n];
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= a[i * n + k] * z[k];
        }
        z[i] = s / a[i * n + i];
    }
    let mut x = vec![0f64; n];
    for i in (0..n).rev() {
        let mut s = z[i];
        for k in i + 1..n {
            s -= a[k * n + i] * x[k];
        }
        x[i] = s / a[i * n + i];
    }
    Some(x)
}

fn dot64(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn sigmoid64(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

fn softplus(z: f64) -> f64 {
    if z > 30.0 {
        z
    } else {
        z.exp().ln_1p()
    }
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

// ---------------------------------------------------------------------------------------------
// Evaluation

/// The routers an evaluation reports, in table order.
pub const ROUTERS: [&str; 4] = ["scorer", "length", "random", "oracle"];

/// Metrics and curves of the scorer and the baselines, per data set and for all together.
#[derive(Debug, Clone)]
pub struct EvalReport {
    /// What was evaluated (e.g. "held-out test split, seed 1").
    pub title: String,
    /// One entry per (data set, router); data sets sorted, `all` last.
    pub rows: Vec<NamedMetrics>,
    /// The curves of `all` (every data set together), per router: (router, curve).
    pub curves: Vec<(String, Curve)>,
}

impl EvalReport {
    /// The metrics of `router` on `dataset`.
    pub fn get(&self, dataset: &str, router: &str) -> Option<&RouteMetrics> {
        self.rows
            .iter()
            .find(|r| r.dataset == dataset && r.router == router)
            .map(|r| &r.metrics)
    }
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.title)?;
        writeln!(
            f,
            "| data set | n | router | APGR | CPT(50%) | CPT(80%) | AUC |"
        )?;
        writeln!(f, "|---|---:|---|---:|---:|---:|---:|")?;
        for r in &self.rows {
            let m = &r.metrics;
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.dataset,
                m.n,
                r.router,
                fmt_num(m.apgr),
                fmt_pct(m.cpt50),
                fmt_pct(m.cpt80),
                fmt_num(m.auc)
            )?;
        }
        Ok(())
    }
}

/// Evaluates `scores` (one per example, higher = more need for the strong model) against the
/// baselines, per data set and for all examples together (`all`, only when there are several
/// data sets).
pub fn evaluate(
    title: &str,
    examples: &[Example],
    scores: &[f32],
) -> Result<EvalReport, TrainError> {
    if examples.len() != scores.len() {
        return Err(TrainError::Invalid(format!(
            "{} examples but {} scores",
            examples.len(),
            scores.len()
        )));
    }
    if examples.is_empty() {
        return Err(TrainError::Invalid(
            "nothing to evaluate: no examples".into(),
        ));
    }
    let routed = |pick: &dyn Fn(usize) -> f32, which: &[usize]| -> Vec<Routed> {
        which
            .iter()
            .map(|&i| Routed {
                score: pick(i),
                weak: examples[i].weak,
                strong: examples[i].strong,
            })
            .collect()
    };
    let lengths: Vec<f32> = examples
        .iter()
        .map(|e| e.prompt.chars().count() as f32)
        .collect();
    let mut groups: Vec<(String, Vec<usize>)> = by_dataset(examples)
        .into_keys()
        .map(|name| {
            let idx = (0..examples.len())
                .filter(|&i| examples[i].dataset == name)
                .collect();
            (name, idx)
        })
        .collect();
    if groups.len() > 1 {
        groups.push(("all".to_string(), (0..examples.len()).collect()));
    }
    let mut rows = Vec::new();
    let mut curves = Vec::new();
    let last = groups.len() - 1;
    for (gi, (name, idx)) in groups.iter().enumerate() {
        let scorer_rows = routed(&|i| scores[i], idx);
        let length_rows = routed(&|i| lengths[i], idx);
        let random_rows = routed(&|_| 0.0, idx);
        let oracle_rows = routed(&|i| examples[i].gain() as f32, idx);
        for (router, r) in [
            ("scorer", &scorer_rows),
            ("length", &length_rows),
            ("random", &random_rows),
            ("oracle", &oracle_rows),
        ] {
            let curve = Curve::new(r);
            rows.push(NamedMetrics {
                dataset: name.clone(),
                router: router.to_string(),
                metrics: curve.metrics(),
            });
            if gi == last {
                curves.push((router.to_string(), curve));
            }
        }
    }
    Ok(EvalReport {
        title: title.to_string(),
        rows,
        curves,
    })
}

/// What `slmgate train` did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// The data files read.
    pub files: Vec<FileSummary>,
    /// Training and test rows.
    pub train_rows: usize,
    /// Held-out rows.
    pub test_rows: usize,
    /// The fit (chosen penalty, cross-validation).
    pub fit: FitReport,
    /// Held-out evaluation (`None` when nothing was held out).
    pub test: Option<EvalReport>,
    /// Where the scorer was written.
    pub out: PathBuf,
    /// Where the curve was plotted, if requested.
    pub svg: Option<PathBuf>,
}

impl fmt::Display for TrainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.files {
            writeln!(
                f,
                "data: {s} (sha256 {})",
                &s.sha256[..16.min(s.sha256.len())]
            )?;
        }
        writeln!(
            f,
            "split by prompt id: {} train, {} held out",
            self.train_rows, self.test_rows
        )?;
        let cv: Vec<String> = self
            .fit
            .cv
            .iter()
            .map(|(l, a)| format!("{l}: {a:.3}"))
            .collect();
        if !cv.is_empty() {
            writeln!(
                f,
                "cross-validation on train (L2: mean APGR): {}",
                cv.join(", ")
            )?;
        }
        writeln!(f, "chosen L2 penalty: {}", self.fit.l2)?;
        if let Some(test) = &self.test {
            write!(f, "{test}")?;
        }
        writeln!(f, "scorer written to {}", self.out.display())?;
        if let Some(svg) = &self.svg {
            writeln!(f, "curve plotted to {}", svg.display())?;
        }
        Ok(())
    }
}

/// Trains on the train split of already embedded samples, evaluates on the test split, and
/// returns the scorer with its training info filled in. `samples` must hold every loaded
/// example (both splits); the split is recomputed from `opts`.
pub fn train_and_evaluate(
    samples: Vec<Sample>,
    files: Vec<FileSummary>,
    embedder: Option<EmbedderSpec>,
    opts: &TrainOptions,
) -> Result<(Scorer, FitReport, Option<EvalReport>, usize, usize), TrainError> {
    let (train_set, test_set): (Vec<Sample>, Vec<Sample>) = samples
        .into_iter()
        .partition(|s| !data::is_test(&s.example.id, opts.split_seed, opts.test_fraction));
    let (scorer, fit) = train(&train_set, embedder, opts)?;
    let all_scores: Vec<f32> = score_samples(&scorer, &train_set)?
        .into_iter()
        .chain(score_samples(&scorer, &test_set)?)
        .collect();
    let scorer = scorer.with_calibration(&all_scores);
    let test = if test_set.is_empty() {
        None
    } else {
        let scores = score_samples(&scorer, &test_set)?;
        let examples: Vec<Example> = test_set.iter().map(|s| s.example.clone()).collect();
        Some(evaluate(
            &format!(
                "held-out test split ({} prompts, split seed {}, test fraction {})",
                test_set.len(),
                opts.split_seed,
                opts.test_fraction
            ),
            &examples,
            &scores,
        )?)
    };
    let mut info = scorer.training().clone();
    info.data = files;
    info.split_seed = opts.split_seed;
    info.test_fraction = opts.test_fraction;
    info.load = opts.load.clone();
    info.train_rows = train_set.len();
    info.test_rows = test_set.len();
    info.test_metrics = test.as_ref().map(|t| t.rows.clone()).unwrap_or_default();
    let scorer = scorer.with_training(info);
    Ok((scorer, fit, test, train_set.len(), test_set.len()))
}

/// Scores samples with a scorer (embedding and features from the sample).
pub fn score_samples(scorer: &Scorer, samples: &[Sample]) -> Result<Vec<f32>, TrainError> {
    samples
        .iter()
        .map(|s| {
            let emb: &[f32] = if scorer.embedding_dim() > 0 {
                &s.embedding
            } else {
                &[]
            };
            let feats: &[f32] = if scorer.uses_features() {
                &s.features
            } else {
                &[]
            };
            Ok(scorer.score(emb, feats)?)
        })
        .collect()
}

/// Which rows of each file an evaluation reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalSplit {
    /// The held-out test split for files the scorer was trained on (matched by sha256), every
    /// row of any other file.
    #[default]
    Auto,
    /// Every row.
    All,
    /// Only the test split.
    Test,
    /// Only the train split (to compare with the held-out figures).
    Train,
}

/// Options of [`eval_command`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalOptions {
    /// How the files are read.
    pub load: LoadOptions,
    /// Which rows to evaluate.
    pub split: EvalSplit,
    /// The split seed (as in training).
    pub split_seed: u64,
    /// The test fraction (as in training).
    pub test_fraction: f64,
    /// sha256 of the files the scorer was trained on (for [`EvalSplit::Auto`]).
    pub trained_on: Vec<String>,
}

impl EvalOptions {
    /// Options matching how `scorer` was trained: its split seed, test fraction, load options
    /// and training files, with [`EvalSplit::Auto`] (so its own training rows are never
    /// evaluated on).
    pub fn for_scorer(scorer: &Scorer) -> EvalOptions {
        let t = scorer.training();
        EvalOptions {
            load: t.load.clone(),
            split: EvalSplit::Auto,
            split_seed: t.split_seed,
            test_fraction: t.test_fraction,
            trained_on: t.data.iter().map(|d| d.sha256.clone()).collect(),
        }
    }
}

/// Scores a batch of prompts (one score per prompt, higher = more need for the large model),
/// or says why it cannot.
pub type PromptScorer<'a> = dyn FnMut(&[&str]) -> Result<Vec<f32>, String> + 'a;

/// `slmgate eval`: loads labelled files, keeps the rows [`EvalOptions::split`] selects, scores
/// their prompts with `score` (one call with every prompt, returning one score per prompt,
/// higher = more need for the large model), and reports the RouteLLM metrics of the scores and
/// the baselines per data set and for all together; with `svg_out`, plots the curves of all
/// rows together.
pub fn eval_command(
    data_files: &[PathBuf],
    opts: &EvalOptions,
    score: &mut PromptScorer<'_>,
    svg_out: Option<&Path>,
) -> Result<EvalReport, TrainError> {
    let mut examples = Vec::new();
    let mut parts = Vec::new();
    for path in data_files {
        let (ex, summary) = data::load_file(path, &opts.load)?;
        let split = match opts.split {
            EvalSplit::Auto if opts.trained_on.contains(&summary.sha256) => EvalSplit::Test,
            EvalSplit::Auto => EvalSplit::All,
            other => other,
        };
        let keep = |e: &Example| match split {
            EvalSplit::Test => data::is_test(&e.id, opts.split_seed, opts.test_fraction),
            EvalSplit::Train => !data::is_test(&e.id, opts.split_seed, opts.test_fraction),
            EvalSplit::All | EvalSplit::Auto => true,
        };
        let before = examples.len();
        examples.extend(ex.into_iter().filter(keep));
        let which = match split {
            EvalSplit::Test => "test split",
            EvalSplit::Train => "train split",
            EvalSplit::All | EvalSplit::Auto => "all rows",
        };
        parts.push(format!(
            "{} ({which}, {})",
            summary.dataset,
            examples.len() - before
        ));
    }
    if examples.is_empty() {
        return Err(TrainError::Invalid(
            "no rows to evaluate (the selected split is empty)".into(),
        ));
    }
    let prompts: Vec<&str> = examples.iter().map(|e| e.prompt.as_str()).collect();
    let scores = score(&prompts).map_err(TrainError::Invalid)?;
    let title = format!(
        "{}; split seed {}, test fraction {}",
        parts.join(", "),
        opts.split_seed,
        opts.test_fraction
    );
    let report = evaluate(&title, &examples, &scores)?;
    if let Some(path) = svg_out {
        write_svg(path, &report)?;
    }
    Ok(report)
}

/// Plots the report's curves (all data sets together) to `path`.
fn write_svg(path: &Path, report: &EvalReport) -> Result<(), TrainError> {
    super::plot::write_curves_svg(path, "Quality vs calls to the strong model", &report.curves)
        .map_err(|e| TrainError::Write {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

#[cfg(feature = "local")]
pub use local::{embed_prompts, score_prompts, train_command};

#[cfg(feature = "local")]
mod local {
    use std::collections::HashMap;
    use std::io::Write;
    use std::path::{Path, PathBuf};

    use sha2::{Digest, Sha256};
    use slmgate_local_model::embed::Embedder;

    use super::*;

    /// Texts per [`Embedder::embed`] call (progress is logged between calls).
    const CHUNK: usize = 64;

    /// Embeds prompts with `embedder`, in input order. With `cache` (a JSONL file of
    /// `{"k": sha256(embedder name, prompt), "v": [...]}` lines), known prompts are read from
    /// it and new ones appended.
    pub fn embed_prompts(
        embedder: &Embedder,
        prompts: &[&str],
        cache: Option<&Path>,
    ) -> Result<Vec<Vec<f32>>, TrainError> {
        let key = |p: &str| {
            let mut h = Sha256::new();
            h.update(embedder.model_name().as_bytes());
            h.update([0u8]);
            h.update(p.as_bytes());
            hex::encode(h.finalize())
        };
        let mut known: HashMap<String, Vec<f32>> = HashMap::new();
        if let Some(path) = cache.filter(|p| p.exists()) {
            let text = std::fs::read_to_string(path).map_err(|e| TrainError::Write {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            for line in text.lines() {
                #[derive(serde::Deserialize)]
                struct Entry {
                    k: String,
                    v: Vec<f32>,
                }
                if let Ok(e) = serde_json::from_str::<Entry>(line) {
                    if e.v.len() == embedder.dim() {
                        known.insert(e.k, e.v);
                    }
                }
            }
        }
        let keys: Vec<String> = prompts.iter().map(|p| key(p)).collect();
        let missing: Vec<usize> = (0..prompts.len())
            .filter(|&i| !known.contains_key(&keys[i]))
            .collect();
        let mut fresh: Vec<(usize, Vec<f32>)> = Vec::with_capacity(missing.len());
        for (c, chunk) in missing.chunks(CHUNK).enumerate() {
            let texts: Vec<&str> = chunk.iter().map(|&i| prompts[i]).collect();
            let vecs = embedder
                .embed(&texts)
                .map_err(|e| TrainError::Embed(e.to_string()))?;
            fresh.extend(chunk.iter().copied().zip(vecs));
            tracing::info!(
                done = (c * CHUNK + chunk.len()),
                total = missing.len(),
                "embedding prompts"
            );
        }
        if let Some(path) = cache {
            if !fresh.is_empty() {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| TrainError::Write {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    })?;
                let mut buf = String::new();
                for (i, v) in &fresh {
                    buf.push_str(&serde_json::json!({"k": keys[*i], "v": v}).to_string());
                    buf.push('\n');
                }
                f.write_all(buf.as_bytes()).map_err(|e| TrainError::Write {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
            }
        }
        for (i, v) in fresh {
            known.insert(keys[i].clone(), v);
        }
        Ok(keys
            .iter()
            .map(|k| known.get(k).cloned().unwrap_or_default())
            .collect())
    }

    /// Scores prompts with a scorer, computing embeddings (if the scorer uses them) with
    /// `embedder` and single-turn features. The shape [`eval_command`] takes:
    /// `&mut |p| score_prompts(&embedder, &scorer, p).map_err(|e| e.to_string())`.
    pub fn score_prompts(
        embedder: &Embedder,
        scorer: &Scorer,
        prompts: &[&str],
    ) -> Result<Vec<f32>, TrainError> {
        scorer.check_embedder(embedder.model_name(), embedder.dim())?;
        let embeddings = if scorer.embedding_dim() > 0 {
            embed_prompts(embedder, prompts, None)?
        } else {
            vec![Vec::new(); prompts.len()]
        };
        prompts
            .iter()
            .zip(&embeddings)
            .map(|(p, e)| Ok(scorer.score_text(e, p, 1)?))
            .collect()
    }

    /// `slmgate train`: loads `data_files`, splits them by prompt id, embeds every prompt,
    /// fits the scorer on the train split (penalty by cross-validation on it), evaluates it
    /// and the baselines on the held-out split, writes the scorer (with its training info and
    /// held-out metrics) to `out` and, with `svg_out`, the held-out curves.
    pub fn train_command(
        data_files: &[PathBuf],
        embedder: &Embedder,
        out: &Path,
        svg_out: Option<&Path>,
        opts: &TrainOptions,
    ) -> Result<TrainReport, TrainError> {
        if data_files.is_empty() {
            return Err(TrainError::Invalid("no data files given".into()));
        }
        let (examples, files) = data::load_files(data_files, &opts.load)?;
        let prompts: Vec<&str> = examples.iter().map(|e| e.prompt.as_str()).collect();
        let embeddings = if opts.use_embedding {
            embed_prompts(embedder, &prompts, None)?
        } else {
            vec![Vec::new(); examples.len()]
        };
        let samples: Vec<Sample> = examples
            .into_iter()
            .zip(embeddings)
            .map(|(e, v)| Sample::new(e, v))
            .collect();
        let spec = EmbedderSpec {
            name: embedder.model_name().to_string(),
            dim: embedder.dim(),
        };
        let (scorer, fit, test, train_rows, test_rows) =
            train_and_evaluate(samples, files.clone(), Some(spec), opts)?;
        scorer.save(out)?;
        if let (Some(path), Some(report)) = (svg_out, &test) {
            write_svg(path, report)?;
        }
        Ok(TrainReport {
            files,
            train_rows,
            test_rows,
            fit,
            test,
            out: out.to_path_buf(),
            svg: svg_out.filter(|_| test_rows > 0).map(Path::to_path_buf),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic task: the strong model is needed iff embedding dim 0 is positive; length
    /// is noise.
    fn synthetic(n: usize) -> Vec<Sample> {
        let mut state = 12345u64;
        let mut rnd = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f64 / (1u64 << 31) as f64) as f32 - 0.5
        };
        (0..n)
            .map(|i| {
                let e: Vec<f32> = (0..8).map(|_| rnd()).collect();
                let hard = e[0] > 0.0;
                let words = 1 + ((rnd() + 0.5) * 30.0) as usize;
                let example = Example {
                    id: format!("s{i}"),
                    prompt: "word ".repeat(words),
                    dataset: if i % 2 == 0 { "a" } else { "b" }.into(),
                    group: if i % 2 == 0 { "a" } else { "b" }.into(),
                    weak: if hard { 0.0 } else { 1.0 },
                    strong: 1.0,
                    label: None,
                };
                Sample::new(example, e)
            })
            .collect()
    }

    fn spec() -> Option<EmbedderSpec> {
        Some(EmbedderSpec {
            name: "synthetic".into(),
            dim: 8,
        })
    }

    #[test]
    fn learns_a_synthetic_rule_and_beats_length() {
        let samples = synthetic(400);
        let opts = TrainOptions {
            l2_grid: vec![0.01, 0.1],
            folds: 3,
            ..TrainOptions::default()
        };
        let (scorer, fit, test, ntrain, ntest) =
            train_and_evaluate(samples.clone(), Vec::new(), spec(), &opts).expect("train");
        assert_eq!(ntrain + ntest, 400);
        assert_eq!(fit.cv.len(), 2);
        let test = test.expect("test split");
        let s = test
            .get("all", "scorer")
            .and_then(|m| m.apgr)
            .expect("apgr");
        let l = test
            .get("all", "length")
            .and_then(|m| m.apgr)
            .expect("apgr");
        assert!(s > 0.7 && s > l + 0.1, "scorer {s} length {l}\n{test}");
        let r = test
            .get("all", "random")
            .and_then(|m| m.apgr)
            .expect("apgr");
        assert!((r - 0.5).abs() < 1e-9);
        assert!(test.to_string().contains("| all |"));
        // Deterministic, and the file round-trips with its training info.
        let (again, ..) = train_and_evaluate(samples, Vec::new(), spec(), &opts).expect("train");
        let json = scorer.to_json().expect("json");
        assert_eq!(json, again.to_json().expect("json"));
        let back = Scorer::from_json(&json).expect("parse");
        assert_eq!(back.training().train_rows, ntrain);
        assert!(!back.training().test_metrics.is_empty());
    }

    #[test]
    fn features_only_and_errors() {
        let samples = synthetic(60);
        let opts = TrainOptions {
            use_embedding: false,
            l2_grid: vec![0.1],
            ..TrainOptions::default()
        };
        let (scorer, _) = train(&samples, None, &opts).expect("features only");
        assert_eq!(scorer.embedding_dim(), 0);
        assert!(train(&[], spec(), &TrainOptions::default()).is_err());
        let mut bad = samples.clone();
        bad[3].embedding.pop();
        let e = train(&bad, spec(), &TrainOptions::default()).expect_err("dim");
        assert!(e.to_string().contains("7-dimensional"), "{e}");
        assert!(evaluate("x", &[], &[]).is_err());
    }

    /// Retrains the built-in scorer from `shared/data` and prints the held-out table. Run from
    /// anywhere (it works in the workspace root):
    /// `cargo test --release -p slmgate-router --lib reproduce_builtin_scorer -- --ignored --nocapture`
    /// Writes `target/scorer.json` and `target/scorer-curve.svg` (copy the former to
    /// `router/assets/scorer.json` to ship it).
    #[cfg(feature = "local")]
    #[test]
    #[ignore = "needs models/all-MiniLM-L6-v2 and ../shared/data; takes a minute or two"]
    fn reproduce_builtin_scorer() {
        use slmgate_local_model::embed::{Embedder, EmbedderOptions};
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        std::env::set_current_dir(&root).expect("cd to the workspace root");
        let embedder = Embedder::load(&EmbedderOptions::new("models/all-MiniLM-L6-v2"))
            .expect("embedder (run scripts/fetch-models.sh)");
        let data = [
            PathBuf::from("../shared/data/arena-bench-v1.jsonl"),
            PathBuf::from("../shared/data/routerarena-809.jsonl"),
        ];
        std::fs::create_dir_all("target").expect("target dir");
        let out = Path::new("target/scorer.json");
        let svg = Path::new("target/scorer-curve.svg");
        let report = train_command(&data, &embedder, out, Some(svg), &TrainOptions::default())
            .expect("train");
        println!("{report}");
        let trained = Scorer::load(out).expect("load trained");
        let builtin = Scorer::default_builtin().expect("builtin");
        let apgr = |s: &Scorer| {
            s.training()
                .test_metrics
                .iter()
                .find(|m| m.dataset == "all" && m.router == "scorer")
                .and_then(|m| m.metrics.apgr)
        };
        println!(
            "held-out APGR (all): retrained {:?}, built-in {:?}",
            apgr(&trained),
            apgr(&builtin)
        );
    }

    #[test]
    fn label_rows_train_on_their_label() {
        let mut e = synthetic(1).remove(0).example;
        e.label = Some(1.0);
        for t in [
            Target::Gain,
            Target::PositiveGain,
            Target::Mixed { alpha: 0.25 },
            Target::Margin { margin: 0.5 },
        ] {
            assert_eq!(t.of(&e), 1.0, "{t}");
        }
        e.label = None;
        e.weak = 0.0;
        e.strong = 1.0;
        assert_eq!(Target::Gain.of(&e), 1.0);
        assert_eq!(Target::Mixed { alpha: 0.25 }.of(&e), 1.0);
        e.weak = 1.0;
        assert_eq!(Target::Gain.of(&e), 0.5);
        assert_eq!(Target::Mixed { alpha: 0.25 }.of(&e), 0.375);
        e.strong = 0.0;
        assert_eq!(Target::Mixed { alpha: 0.25 }.of(&e), 0.0);
    }

    #[test]
    fn eval_command_reads_files_and_picks_the_split() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pairs.jsonl");
        let mut text = String::new();
        for i in 0..40 {
            // Long prompts need the strong model: length is a perfect router here.
            let long = i % 2 == 0;
            let prompt = if long {
                "word ".repeat(50)
            } else {
                format!("hi {i}")
            };
            let weak = if long { 1 } else { 9 };
            text.push_str(&format!(
                "{{\"id\":\"p{i}\",\"prompt\":\"{prompt}\",\"weak\":{weak},\"strong\":10}}\n"
            ));
        }
        std::fs::write(&path, text).expect("write");
        let sha = data::load_file(&path, &LoadOptions::default())
            .expect("load")
            .1
            .sha256;
        let mut by_length = |p: &[&str]| -> Result<Vec<f32>, String> {
            Ok(p.iter().map(|s| s.len() as f32).collect())
        };
        let svg = dir.path().join("curve.svg");
        let opts = EvalOptions {
            split_seed: 1,
            test_fraction: 0.3,
            ..EvalOptions::default()
        };
        let all = eval_command(
            std::slice::from_ref(&path),
            &opts,
            &mut by_length,
            Some(&svg),
        )
        .expect("eval");
        let m = all.get("pairs", "scorer").expect("row");
        assert_eq!(m.n, 40);
        assert!(m.apgr.is_some_and(|a| a > 0.7), "{all}");
        assert!(std::fs::read_to_string(&svg).is_ok_and(|s| s.contains("scorer")));
        assert!(
            all.get("all", "scorer").is_none(),
            "one data set: no `all` row"
        );

        // A file the scorer was trained on: only its test split.
        let trained = EvalOptions {
            trained_on: vec![sha],
            ..opts.clone()
        };
        let held = eval_command(std::slice::from_ref(&path), &trained, &mut by_length, None)
            .expect("eval");
        let n = held.get("pairs", "scorer").expect("row").n;
        assert!(n > 0 && n < 40, "{n}");
        assert!(held.title.contains("test split"), "{}", held.title);

        let mut failing = |_: &[&str]| -> Result<Vec<f32>, String> { Err("no model".into()) };
        let e = eval_command(&[path], &opts, &mut failing, None).expect_err("score error");
        assert!(e.to_string().contains("no model"));
    }

    #[test]
    fn newton_matches_a_known_solution() {
        // One feature, targets equal to σ(2x): the unpenalised optimum is w = 2, b = 0.
        let xs: Vec<Vec<f64>> = (-10..=10).map(|i| vec![f64::from(i) / 5.0]).collect();
        let ys: Vec<f64> = xs.iter().map(|x| sigmoid64(2.0 * x[0])).collect();
        let (w, b, _) = logistic_newton(&xs, &ys, &vec![1.0; xs.len()], 1e-9).expect("fit");
        assert!((w[0] - 2.0).abs() < 1e-4 && b.abs() < 1e-6, "{w:?} {b}");
    }
}
