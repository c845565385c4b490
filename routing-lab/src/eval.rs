//! Evaluating routers on labelled prompts with RouteLLM's metrics.
//!
//! - [`evaluate`] computes the metrics of any score next to the baselines — random routing
//!   (its expected value), prompt length (score = characters) and the oracle — per data set
//!   and for all of them together;
//! - [`loso`] is the evaluation that predicts how a router does on traffic it was not trained
//!   on: for every source group (RouterArena's benchmarks one by one, each other file as a
//!   whole) and for pooled homogeneous groups ([`POOLS`]: exam multiple-choice questions, math
//!   word problems), the scorer is trained on everything else by the same procedure as
//!   `slmgate train` and scores the group it never saw. A random split of the same files
//!   measures memory of their sources instead.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::data::{self, by_dataset, Example, LoadOptions};
use crate::train::{
    calibrated, fit_calibrator_with_ranks, fit_ranker, Extra, FittedRanker, Sample, TrainError,
    TrainOptions,
};
use slmgate_routing::metrics::{fmt_num, fmt_pct, Curve, RouteMetrics, Routed};
use slmgate_routing::scorer::{NamedMetrics, Scorer};

/// Pooled homogeneous groups, by source: a router must order the prompts of one kind by
/// difficulty, where topic and format cannot help.
pub const POOLS: [(&str, &[&str]); 2] = [
    (
        "pooled: exam multiple choice",
        &[
            "MMLUPro",
            "MMLU",
            "ArcMMLU",
            "MedMCQA",
            "OpenTDB",
            "GeoBench",
            "MusicTheoryBench",
        ],
    ),
    (
        "pooled: math word problems",
        &["MathQA", "AsDiv", "MATH", "AIME", "FinQA", "GSM8K"],
    ),
];

/// Metrics and curves of the scorer and the baselines, per data set and for all together.
#[derive(Debug, Clone)]
pub struct EvalReport {
    /// What was evaluated.
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

fn routed(examples: &[&Example], score: impl Fn(usize) -> f32) -> Vec<Routed> {
    examples
        .iter()
        .enumerate()
        .map(|(i, e)| Routed {
            score: score(i),
            weak: e.weak,
            strong: e.strong,
        })
        .collect()
}

/// The prompt-length baseline's score.
fn length(e: &Example) -> f32 {
    e.prompt.chars().count() as f32
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
        let ex: Vec<&Example> = idx.iter().map(|&i| &examples[i]).collect();
        let scorer_rows = routed(&ex, |k| scores[idx[k]]);
        let length_rows = routed(&ex, |k| length(ex[k]));
        let random_rows = routed(&ex, |_| 0.0);
        let oracle_rows = routed(&ex, |k| ex[k].gain() as f32);
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

/// `slmgate eval --data`: scores every row of the files with `scorer` and reports the metrics
/// per data set against the baselines; with `svg_out`, plots the curves of all rows. Files
/// the scorer was trained on are marked in-sample in the title: `--loso` measures how it does
/// on sources it did not see.
pub fn eval_command(
    data_files: &[PathBuf],
    load: &LoadOptions,
    scorer: &Scorer,
    svg_out: Option<&Path>,
) -> Result<EvalReport, TrainError> {
    let (examples, summaries) = data::load_files(data_files, load)?;
    let trained_on: Vec<&str> = scorer
        .training()
        .data
        .iter()
        .map(|d| d.sha256.as_str())
        .collect();
    let parts: Vec<String> = summaries
        .iter()
        .map(|s| {
            if trained_on.contains(&s.sha256.as_str()) {
                format!(
                    "{} ({} rows, in-sample: the scorer was trained on it)",
                    s.dataset, s.rows
                )
            } else {
                format!("{} ({} rows)", s.dataset, s.rows)
            }
        })
        .collect();
    let scores: Vec<f32> = examples
        .iter()
        .map(|e| scorer.score_text(&e.prompt))
        .collect::<Result<_, _>>()?;
    let report = evaluate(&parts.join(", "), &examples, &scores)?;
    if let Some(path) = svg_out {
        crate::plot::write_curves_svg(path, "Quality vs calls to the strong model", &report.curves)
            .map_err(|e| TrainError::Write {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
    }
    Ok(report)
}

/// Candidate signals per prompt, read from a JSONL file: `{"id": "<data set>:<prompt id>",
/// "<key>": number or [numbers], ...}` (what `local-model`'s `prompt_signals` example
/// writes). Only for measuring: leave-one-source-out evaluation adds them to the ranker as
/// extra inputs with a free sign.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// Column names (`key` or `key[i]` for arrays).
    pub names: Vec<String>,
    by_id: HashMap<String, Vec<f32>>,
}

impl Signals {
    /// Reads `keys` from every line of `path`.
    pub fn load(path: &Path, keys: &[String]) -> Result<Signals, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Write {
            path: path.to_path_buf(),
            message: format!("reading: {e}"),
        })?;
        let mut names: Option<Vec<String>> = None;
        let mut by_id = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = |m: String| TrainError::Invalid(format!("{}:{}: {m}", path.display(), n + 1));
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| at(format!("invalid JSON: {e}")))?;
            let id = v["id"]
                .as_str()
                .ok_or_else(|| at("no string `id`".into()))?
                .to_string();
            let mut row = Vec::new();
            let mut cols = Vec::new();
            for k in keys {
                match &v[k] {
                    serde_json::Value::Number(x) => {
                        row.push(x.as_f64().unwrap_or(f64::NAN) as f32);
                        cols.push(k.clone());
                    }
                    serde_json::Value::Array(xs) => {
                        for (i, x) in xs.iter().enumerate() {
                            row.push(x.as_f64().unwrap_or(f64::NAN) as f32);
                            cols.push(format!("{k}[{i}]"));
                        }
                    }
                    _ => return Err(at(format!("no number or array `{k}`"))),
                }
            }
            if row.iter().any(|x| !x.is_finite()) {
                return Err(at("a signal is not a finite number".into()));
            }
            match &names {
                None => names = Some(cols),
                Some(c) if *c != cols => {
                    return Err(at("the signals' shapes differ from the first line's".into()))
                }
                Some(_) => {}
            }
            by_id.insert(id, row);
        }
        Ok(Signals {
            names: names.unwrap_or_default(),
            by_id,
        })
    }

    /// The signals of `samples`, in order; an error names how many have none.
    pub fn extra(&self, samples: &[Sample]) -> Result<Extra, TrainError> {
        let mut rows = Vec::with_capacity(samples.len());
        let mut missing = Vec::new();
        for s in samples {
            let key = format!("{}:{}", s.example.dataset, s.example.id);
            match self.by_id.get(&key) {
                Some(r) => rows.push(r.clone()),
                None => missing.push(key),
            }
        }
        if !missing.is_empty() {
            return Err(TrainError::Invalid(format!(
                "{} prompts have no signals (first: {})",
                missing.len(),
                missing[0]
            )));
        }
        Ok(Extra {
            names: self.names.clone(),
            rows,
        })
    }
}

/// One left-out group of a [`LosoReport`].
#[derive(Debug, Clone, PartialEq)]
pub struct LosoRow {
    /// The source group (or pool).
    pub group: String,
    /// Its prompts.
    pub n: usize,
    /// Whether it is a pool of several sources.
    pub pooled: bool,
    /// The scorer trained without it.
    pub scorer: RouteMetrics,
    /// Prompt length.
    pub length: RouteMetrics,
    /// Random routing (expected).
    pub random: RouteMetrics,
}

impl LosoRow {
    /// Whether the scorer beats both random and length on APGR (false when undefined).
    pub fn beats_baselines(&self) -> bool {
        match (self.scorer.apgr, self.length.apgr, self.random.apgr) {
            (Some(s), Some(l), Some(r)) => s > l && s > r,
            _ => false,
        }
    }
}

/// Leave-one-source-out results.
#[derive(Debug, Clone)]
pub struct LosoReport {
    /// What was evaluated.
    pub title: String,
    /// Groups of at least `min_rows` prompts, then the pools.
    pub rows: Vec<LosoRow>,
    /// Every other group with a defined APGR (fewer prompts).
    pub small: Vec<LosoRow>,
    /// The size from which a group is reported on its own.
    pub min_rows: usize,
    /// Every prompt's score when its source group (or its pool) was left out: (left-out
    /// group or pool, sample index, score).
    pub scored: Vec<(String, usize, f32)>,
}

impl LosoReport {
    /// The reported groups and pools where the scorer does not beat both baselines.
    pub fn failures(&self) -> Vec<&LosoRow> {
        self.rows.iter().filter(|r| !r.beats_baselines()).collect()
    }

    /// The prompt-weighted mean APGR of the small groups: (scorer, length, prompts, groups).
    pub fn small_mean(&self) -> Option<(f64, f64, usize, usize)> {
        let mut n = 0usize;
        let (mut s, mut l) = (0.0, 0.0);
        for r in &self.small {
            if let (Some(a), Some(b)) = (r.scorer.apgr, r.length.apgr) {
                n += r.n;
                s += a * r.n as f64;
                l += b * r.n as f64;
            }
        }
        (n > 0).then(|| (s / n as f64, l / n as f64, n, self.small.len()))
    }
}

impl fmt::Display for LosoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.title)?;
        writeln!(
            f,
            "| left-out source | n | APGR scorer / length / random | CPT(50%) scorer / length | AUC scorer / length / random |"
        )?;
        writeln!(f, "|---|---:|---|---|---|")?;
        let line = |f: &mut fmt::Formatter<'_>, r: &LosoRow, name: &str| {
            writeln!(
                f,
                "| {name} | {} | {} / {} / {} | {} / {} | {} / {} / {} |",
                r.n,
                fmt_num(r.scorer.apgr),
                fmt_num(r.length.apgr),
                fmt_num(r.random.apgr),
                fmt_pct(r.scorer.cpt50),
                fmt_pct(r.length.cpt50),
                fmt_num(r.scorer.auc),
                fmt_num(r.length.auc),
                fmt_num(r.random.auc),
            )
        };
        for r in &self.rows {
            let mark = if r.beats_baselines() {
                ""
            } else {
                " (not above both)"
            };
            line(f, r, &format!("{}{mark}", r.group))?;
        }
        if let Some((s, l, n, g)) = self.small_mean() {
            writeln!(
                f,
                "| {g} smaller sources, each left out (prompt-weighted mean) | {n} | {s:.3} / {l:.3} / 0.500 | | |"
            )?;
        }
        writeln!(f)?;
        writeln!(f, "smaller sources, each left out:")?;
        for r in &self.small {
            writeln!(
                f,
                "  {:<28} n={:<4} APGR scorer {} length {}",
                r.group,
                r.n,
                fmt_num(r.scorer.apgr),
                fmt_num(r.length.apgr)
            )?;
        }
        Ok(())
    }
}

/// Leave-one-source-out evaluation of the training procedure: for every source group of
/// `samples` (and every pool of [`POOLS`] with at least two of its sources present), trains
/// the ranker on the other groups (plus `extra` inputs when given, for `samples` and
/// `calibration` alike) and the calibrator on `calibration`, and scores the left-out group.
pub fn loso(
    samples: &[Sample],
    calibration: &[Sample],
    extra: Option<(&Extra, &Extra)>,
    min_rows: usize,
    opts: &TrainOptions,
) -> Result<LosoReport, TrainError> {
    let mut by_group: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, s) in samples.iter().enumerate() {
        by_group.entry(&s.example.group).or_default().push(i);
    }
    let mut held: Vec<(String, Vec<usize>, bool)> = by_group
        .iter()
        .map(|(g, idx)| (g.to_string(), idx.clone(), false))
        .collect();
    for (name, sources) in POOLS {
        let present: Vec<&&str> = sources
            .iter()
            .filter(|s| by_group.contains_key(**s))
            .collect();
        if present.len() >= 2 {
            let idx: Vec<usize> = present.iter().flat_map(|s| by_group[**s].clone()).collect();
            held.push((name.to_string(), idx, true));
        }
    }
    let mut rows = Vec::new();
    let mut small = Vec::new();
    let mut scored = Vec::new();
    for (group, idx, pooled) in held {
        let out: std::collections::HashSet<usize> = idx.iter().copied().collect();
        let train: Vec<usize> = (0..samples.len()).filter(|i| !out.contains(i)).collect();
        let fitted = fit_ranker(samples, &train, extra.map(|e| e.0), opts)?;
        let scores = score_with(&fitted, samples, &idx, calibration, extra, opts)?;
        let ex: Vec<&Example> = idx.iter().map(|&i| &samples[i].example).collect();
        scored.extend(
            idx.iter()
                .zip(&scores)
                .map(|(&i, &score)| (group.clone(), i, score)),
        );
        let row = LosoRow {
            group,
            n: idx.len(),
            pooled,
            scorer: RouteMetrics::of(&routed(&ex, |k| scores[k])),
            length: RouteMetrics::of(&routed(&ex, |k| length(ex[k]))),
            random: RouteMetrics::random(&routed(&ex, |_| 0.0)),
        };
        if pooled || row.n >= min_rows {
            rows.push(row);
        } else if row.scorer.apgr.is_some() {
            small.push(row);
        }
    }
    rows.sort_by_key(|r| (r.pooled, std::cmp::Reverse(r.n)));
    let signals = extra.map_or_else(String::new, |(e, _)| {
        format!(", with {} extra signal columns", e.names.len())
    });
    Ok(LosoReport {
        title: format!(
            "leave-one-source-out: {} prompts in {} sources; each left-out group scored by a \
             scorer trained on the others{signals}",
            samples.len(),
            by_group.len()
        ),
        rows,
        small,
        min_rows,
        scored,
    })
}

/// Scores `samples[idx]` with `fitted` and a calibrator fitted on `calibration`.
fn score_with(
    fitted: &FittedRanker,
    samples: &[Sample],
    idx: &[usize],
    calibration: &[Sample],
    extra: Option<(&Extra, &Extra)>,
    opts: &TrainOptions,
) -> Result<Vec<f32>, TrainError> {
    let no_extra: Vec<f32> = Vec::new();
    let extra_of = |e: Option<&Extra>, i: usize| -> Vec<f32> {
        e.map_or_else(|| no_extra.clone(), |e| e.rows[i].clone())
    };
    // The calibrator sees the full rank (extra signals included) of its prompts.
    let cal_ranks: Vec<f64> = calibration
        .iter()
        .enumerate()
        .map(|(i, s)| fitted.rank(&s.features, &extra_of(extra.map(|e| e.1), i)))
        .collect();
    let calibrator = fit_calibrator_with_ranks(calibration, &cal_ranks, opts)?;
    Ok(idx
        .iter()
        .map(|&i| {
            let s = &samples[i];
            let rank = fitted.rank(&s.features, &extra_of(extra.map(|e| e.0), i));
            calibrated(&calibrator, rank, &s.features)
        })
        .collect())
}
