//! The complexity scorer: P(the large model is needed) from a query's cheap
//! [`features`](crate::features).
//!
//! Two stages, both linear:
//!
//! 1. the **ranker** orders prompts by difficulty: `rank = Σᵢ wᵢ·(xᵢ − meanᵢ)/stdᵢ` over the
//!    features, each weight constrained to its feature's [`SIGNS`] direction, trained on pairs
//!    of prompts from the same source (see the `slmgate-routing-lab` crate);
//! 2. the **calibrator** turns the rank into a probability:
//!    `score = σ(b + a·rank + Σⱼ cⱼ·xⱼ)` over the rank and a few features (the prompt's size,
//!    proof and code-task words), fitted on prompts labelled with how much they need the
//!    large model, so that `x-slmgate-score` reads as that probability.
//!
//! Stored as a small JSON file (format [`SCORER_FORMAT`]):
//!
//! ```json
//! {
//!   "format": "slmgate-scorer/2",
//!   "ranker": {"features": ["kw_proof", "..."], "mean": [...], "std": [...], "weights": [...]},
//!   "calibrator": {"inputs": ["rank", "size", "..."], "weights": [...], "bias": -2.1},
//!   "sample": [0.03, "... the scores of a traffic sample, sorted ..."],
//!   "training": {"command": "...", "data": [{"path": "...", "sha256": "..."}], "...": "..."}
//! }
//! ```
//!
//! The default scorer, trained on `shared/data` by `slmgate train`, is built in:
//! [`Scorer::default_builtin`].

use std::fmt;
use std::path::{Path, PathBuf};

use crate::features::{self, features, NUM_FEATURES, SIGNS};
use crate::metrics::RouteMetrics;
use crate::provenance::{FileSummary, LoadOptions};

/// The `format` value of scorer files this build reads and writes.
pub const SCORER_FORMAT: &str = "slmgate-scorer/2";

/// The calibrator input that stands for the ranker's output.
pub const RANK_INPUT: &str = "rank";

/// The built-in default scorer file (`router/assets/scorer.json`).
pub const BUILTIN_SCORER_JSON: &str = include_str!("../assets/scorer.json");

/// Errors loading or applying a scorer. Each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ScorerError {
    /// The file could not be read.
    #[error("reading scorer file {path}: {source}", path = .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The JSON does not parse as a scorer.
    #[error("invalid scorer file: {0}")]
    Json(#[from] serde_json::Error),
    /// The file parses but is inconsistent or of an unknown format.
    #[error("invalid scorer file: {0}")]
    Invalid(String),
    /// The scorer names features this build does not compute.
    #[error(
        "the scorer uses the feature `{0}`, which this build does not compute: retrain it with \
         `slmgate train`"
    )]
    UnknownFeature(String),
    /// The inputs produced a non-finite score.
    #[error("the scorer's inputs are not finite numbers")]
    NonFinite,
}

/// Stage 1: the difficulty ranker.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ranker {
    /// The features it reads, by name.
    pub features: Vec<String>,
    /// Their means on the training data.
    pub mean: Vec<f32>,
    /// Their standard deviations (positive).
    pub std: Vec<f32>,
    /// Weights on the standardised features; each has its feature's [`SIGNS`] sign (or is 0).
    pub weights: Vec<f32>,
}

/// Stage 2: rank (and a few features) → probability.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibrator {
    /// `rank` or feature names.
    pub inputs: Vec<String>,
    /// One weight per input.
    pub weights: Vec<f32>,
    /// The intercept.
    pub bias: f32,
}

/// How the scorer was trained, recorded in its file.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TrainingInfo {
    /// The command that produced the file.
    pub command: String,
    /// The labelled data files the ranker was trained on, with their sha256.
    pub data: Vec<FileSummary>,
    /// The labelled files the calibrator was fitted on.
    pub calibration: Vec<FileSummary>,
    /// How the data files were read.
    pub load: LoadOptions,
    /// What the ranker was trained to order.
    pub target: String,
    /// Prompts the ranker was trained on.
    pub train_rows: usize,
    /// Source groups among them.
    pub groups: usize,
    /// Prompt pairs of the ranking objective.
    pub pairs: usize,
    /// The L2 penalty of the ranker.
    pub l2: f64,
    /// Leave-one-source-out metrics, when the training ran them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub loso: Vec<NamedMetrics>,
}

/// Metrics of one router on one data set.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NamedMetrics {
    /// The data set or source group (`all` for every data set together).
    pub dataset: String,
    /// The router (`scorer`, `random`, `length`, `oracle`).
    pub router: String,
    /// Its metrics.
    pub metrics: RouteMetrics,
}

/// The serialised form.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ScorerFile {
    format: String,
    ranker: Ranker,
    calibrator: Calibrator,
    /// Scores of a sample of prompts (sorted ascending), for calibrating a threshold to a
    /// target share without scoring a sample at startup.
    #[serde(default)]
    sample: Vec<f32>,
    #[serde(default)]
    training: TrainingInfo,
}

/// Where a calibrator input comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Input {
    Rank,
    Feature(usize),
}

/// A loaded scorer. Cheap to apply (two short dot products); `Send + Sync`.
#[derive(Debug, Clone, PartialEq)]
pub struct Scorer {
    file: ScorerFile,
    /// The ranker's feature indices into [`features`]' output.
    ranker_idx: Vec<usize>,
    /// Ranker weights folded with the standardisation: `wᵢ / stdᵢ`.
    folded: Vec<f32>,
    /// `− Σ wᵢ·meanᵢ/stdᵢ`.
    folded_bias: f32,
    inputs: Vec<Input>,
}

impl Scorer {
    /// Builds a scorer from its parts (checked like a loaded file).
    pub fn new(
        ranker: Ranker,
        calibrator: Calibrator,
        training: TrainingInfo,
    ) -> Result<Scorer, ScorerError> {
        Scorer::from_file(ScorerFile {
            format: SCORER_FORMAT.to_string(),
            ranker,
            calibrator,
            sample: Vec::new(),
            training,
        })
    }

    /// Parses a scorer file's contents.
    pub fn from_json(json: &str) -> Result<Scorer, ScorerError> {
        // An older format gets its own message, not a list of unknown fields.
        #[derive(serde::Deserialize)]
        struct Format {
            format: Option<String>,
        }
        if let Ok(Format { format: Some(f) }) = serde_json::from_str::<Format>(json) {
            if f != SCORER_FORMAT {
                return Err(ScorerError::Invalid(format!(
                    "format {f:?}, this build reads {SCORER_FORMAT:?}: retrain the scorer with \
                     `slmgate train`"
                )));
            }
        }
        Scorer::from_file(serde_json::from_str(json)?)
    }

    /// Reads a scorer file.
    pub fn load(path: &Path) -> Result<Scorer, ScorerError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScorerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Scorer::from_json(&text).map_err(|e| match e {
            ScorerError::Json(err) => ScorerError::Invalid(format!("{}: {err}", path.display())),
            ScorerError::Invalid(msg) => ScorerError::Invalid(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// The default scorer shipped in the binary (trained on `shared/data`).
    pub fn default_builtin() -> Result<Scorer, ScorerError> {
        Scorer::from_json(BUILTIN_SCORER_JSON)
    }

    fn from_file(file: ScorerFile) -> Result<Scorer, ScorerError> {
        if file.format != SCORER_FORMAT {
            return Err(ScorerError::Invalid(format!(
                "format {:?}, this build reads {SCORER_FORMAT:?}",
                file.format
            )));
        }
        let r = &file.ranker;
        let n = r.features.len();
        for (name, v) in [("mean", &r.mean), ("std", &r.std), ("weights", &r.weights)] {
            if v.len() != n {
                return Err(ScorerError::Invalid(format!(
                    "ranker.{name} has {} values for {n} features",
                    v.len()
                )));
            }
            if v.iter().any(|x| !x.is_finite()) {
                return Err(ScorerError::Invalid(format!(
                    "ranker.{name} has non-finite values"
                )));
            }
        }
        if r.std.iter().any(|s| *s <= 0.0) {
            return Err(ScorerError::Invalid("ranker.std must be positive".into()));
        }
        let ranker_idx = r
            .features
            .iter()
            .map(|f| features::index(f).ok_or_else(|| ScorerError::UnknownFeature(f.clone())))
            .collect::<Result<Vec<usize>, _>>()?;
        for (&i, &w) in ranker_idx.iter().zip(&r.weights) {
            if w * SIGNS[i] < 0.0 {
                return Err(ScorerError::Invalid(format!(
                    "ranker weight of `{}` has the wrong sign (features::SIGNS)",
                    features::FEATURE_NAMES[i]
                )));
            }
        }
        let c = &file.calibrator;
        if c.weights.len() != c.inputs.len() {
            return Err(ScorerError::Invalid(format!(
                "calibrator.weights has {} values for {} inputs",
                c.weights.len(),
                c.inputs.len()
            )));
        }
        if c.weights.iter().chain([&c.bias]).any(|x| !x.is_finite()) {
            return Err(ScorerError::Invalid(
                "calibrator has non-finite values".into(),
            ));
        }
        let inputs = c
            .inputs
            .iter()
            .map(|name| {
                if name == RANK_INPUT {
                    Ok(Input::Rank)
                } else {
                    features::index(name)
                        .map(Input::Feature)
                        .ok_or_else(|| ScorerError::UnknownFeature(name.clone()))
                }
            })
            .collect::<Result<Vec<Input>, _>>()?;
        let folded: Vec<f32> = r.weights.iter().zip(&r.std).map(|(w, s)| w / s).collect();
        let folded_bias = -folded.iter().zip(&r.mean).map(|(w, m)| w * m).sum::<f32>();
        Ok(Scorer {
            file,
            ranker_idx,
            folded,
            folded_bias,
            inputs,
        })
    }

    /// Serialises the scorer: compact JSON with one line per top-level key (readable diffs),
    /// floats in their shortest round-trip form.
    pub fn to_json(&self) -> Result<String, ScorerError> {
        let f = &self.file;
        let parts = [
            ("format", serde_json::to_string(&f.format)),
            ("ranker", serde_json::to_string(&f.ranker)),
            ("calibrator", serde_json::to_string(&f.calibrator)),
            ("sample", serde_json::to_string(&f.sample)),
            ("training", serde_json::to_string(&f.training)),
        ];
        let n = parts.len();
        let mut out = String::from("{\n");
        for (i, (key, value)) in parts.into_iter().enumerate() {
            out.push_str(&format!("  \"{key}\": {}", value?));
            out.push_str(if i + 1 < n { ",\n" } else { "\n" });
        }
        out.push_str("}\n");
        Ok(out)
    }

    /// Writes the scorer file.
    pub fn save(&self, path: &Path) -> Result<(), ScorerError> {
        std::fs::write(path, self.to_json()?).map_err(|source| ScorerError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The same scorer with `training` recorded as its training info.
    pub fn with_training(mut self, training: TrainingInfo) -> Scorer {
        self.file.training = training;
        self
    }

    /// The same scorer with `scores` (of a sample of prompts) recorded as its calibration
    /// sample: sorted ascending, rounded to 4 decimals, non-finite values dropped.
    pub fn with_sample(mut self, scores: &[f32]) -> Scorer {
        let mut v: Vec<f32> = scores
            .iter()
            .filter(|s| s.is_finite())
            .map(|s| (s * 10_000.0).round() / 10_000.0)
            .collect();
        v.sort_by(f32::total_cmp);
        self.file.sample = v;
        self
    }

    /// The calibration sample: scores of a sample of everyday prompts (sorted ascending;
    /// empty if the file has none). A threshold that sends a share `s` of them to the local
    /// model is their `s`-quantile.
    pub fn sample(&self) -> &[f32] {
        &self.file.sample
    }

    /// How the scorer was trained.
    pub fn training(&self) -> &TrainingInfo {
        &self.file.training
    }

    /// The ranker's parameters.
    pub fn ranker(&self) -> &Ranker {
        &self.file.ranker
    }

    /// The calibrator's parameters.
    pub fn calibrator(&self) -> &Calibrator {
        &self.file.calibrator
    }

    /// The ranker's output for `features` (any real number; higher = harder).
    pub fn rank(&self, features: &[f32; NUM_FEATURES]) -> f32 {
        self.folded_bias
            + self
                .ranker_idx
                .iter()
                .zip(&self.folded)
                .map(|(&i, w)| w * features[i])
                .sum::<f32>()
    }

    /// P(the large model is needed) in `[0, 1]` from a query's [`features()`].
    pub fn score(&self, features: &[f32; NUM_FEATURES]) -> Result<f32, ScorerError> {
        let rank = self.rank(features);
        let c = &self.file.calibrator;
        let z = c.bias
            + self
                .inputs
                .iter()
                .zip(&c.weights)
                .map(|(input, w)| {
                    w * match input {
                        Input::Rank => rank,
                        Input::Feature(i) => features[*i],
                    }
                })
                .sum::<f32>();
        if !z.is_finite() {
            return Err(ScorerError::NonFinite);
        }
        Ok(sigmoid(z))
    }

    /// [`Scorer::score`] of a text.
    pub fn score_text(&self, text: &str) -> Result<f32, ScorerError> {
        self.score(&features(text))
    }
}

impl fmt::Display for Scorer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pairwise ranker over {} features, calibrated on [{}]",
            self.file.ranker.features.len(),
            self.file.calibrator.inputs.join(", ")
        )
    }
}

/// The logistic function, computed without overflow.
pub fn sigmoid(z: f32) -> f32 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::FEATURE_NAMES;

    /// A scorer whose rank is the number count and whose calibrator is `σ(2·rank − 1)`.
    fn tiny() -> Scorer {
        Scorer::new(
            Ranker {
                features: vec!["log_nums".into(), "kw_chat".into()],
                mean: vec![0.0, 0.0],
                std: vec![1.0, 1.0],
                weights: vec![1.0, 0.0],
            },
            Calibrator {
                inputs: vec![RANK_INPUT.into(), "size".into()],
                weights: vec![2.0, 0.0],
                bias: -1.0,
            },
            TrainingInfo::default(),
        )
        .expect("valid scorer")
    }

    #[test]
    fn scores_and_round_trips() {
        let s = tiny();
        let f = features("add 3 and 5");
        assert!((s.rank(&f) - 3f32.ln()).abs() < 1e-6);
        let p = s.score(&f).expect("score");
        assert!((p - sigmoid(2.0 * 3f32.ln() - 1.0)).abs() < 1e-6, "{p}");
        assert!(s.score_text("hello").expect("score") < 0.5);
        let s = s.with_sample(&[0.9, f32::NAN, 0.1]);
        assert_eq!(s.sample(), [0.1, 0.9]);
        let back = Scorer::from_json(&s.to_json().expect("json")).expect("round trip");
        assert_eq!(back, s);
        assert!(s.to_string().contains("2 features"));
    }

    #[test]
    fn clear_errors() {
        let json = tiny().to_json().expect("json");
        for (from, to, want) in [
            ("slmgate-scorer/2", "slmgate-scorer/1", "retrain"),
            ("\"log_nums\"", "\"log_chars\"", "retrain it"),
            (
                "\"bias\":-1.0",
                "\"bias\":-1.0,\"extra\":1",
                "unknown field",
            ),
            (
                "\"weights\":[1.0,0.0]",
                "\"weights\":[-1.0,0.0]",
                "wrong sign",
            ),
            ("\"std\":[1.0,1.0]", "\"std\":[1.0]", "1 values for 2"),
            ("\"std\":[1.0,1.0]", "\"std\":[0.0,1.0]", "positive"),
            ("\"size\"", "\"nope\"", "`nope`"),
        ] {
            assert!(json.contains(from), "{from} in {json}");
            let e = Scorer::from_json(&json.replacen(from, to, 1)).expect_err(want);
            assert!(e.to_string().contains(want), "{want}: {e}");
        }
        assert!(Scorer::from_json("{").is_err());
        let e = Scorer::load(Path::new("/nonexistent/scorer.json")).expect_err("io");
        assert!(e.to_string().contains("/nonexistent/scorer.json"));
    }

    #[test]
    fn sigmoid_is_stable() {
        assert_eq!(sigmoid(1000.0), 1.0);
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
    }

    #[test]
    fn builtin_scorer_loads_and_spreads_its_scores() {
        let s = Scorer::default_builtin().expect("builtin scorer");
        assert_eq!(s.ranker().features.len(), FEATURE_NAMES.len() - 1);
        assert!(!s.sample().is_empty());
        let t = s.training();
        assert!(t.train_rows > 0 && t.groups > 1 && !t.data.is_empty());
        // Scores mean something at both ends.
        let hi = s.score_text("hi").expect("score");
        let proof = s
            .score_text("Prove that every finite integral domain is a field, rigorously.")
            .expect("score");
        assert!(hi < 0.2 && proof > 0.6, "hi {hi}, proof {proof}");
    }
}
