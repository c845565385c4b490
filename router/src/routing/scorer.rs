//! The learned complexity scorer: P(the large model is needed) from a query's embedding and
//! its cheap [`features`](super::features).
//!
//! The model is a logistic regression over the standardised input `x = embedding ‖ features`:
//! `score = σ(b + Σᵢ wᵢ·(xᵢ − meanᵢ)/stdᵢ)`, trained by [`train`](super::train). It is stored
//! as a small JSON file (format [`SCORER_FORMAT`]):
//!
//! ```json
//! {
//!   "format": "slmgate-scorer/1",
//!   "embedder": {"name": "all-MiniLM-L6-v2", "dim": 384},
//!   "features": ["log_chars", "..."],
//!   "model": {"kind": "logistic", "mean": [...], "std": [...], "weights": [...], "bias": -0.1},
//!   "training": {"data": [{"path": "...", "sha256": "..."}], "split_seed": 1, "...": "..."}
//! }
//! ```
//!
//! `embedder` may be `null` for a features-only scorer. The default scorer, trained on
//! `shared/data` by `slmgate train`, is built in: [`Scorer::default_builtin`].

use std::fmt;
use std::path::{Path, PathBuf};

use super::data::{FileSummary, LoadOptions};
#[cfg(test)]
use super::features::NUM_FEATURES;
use super::features::{features, FEATURE_NAMES};
use super::metrics::RouteMetrics;

/// The `format` value of scorer files this build reads and writes.
pub const SCORER_FORMAT: &str = "slmgate-scorer/1";

/// The built-in default scorer file (`router/assets/scorer.json`).
pub const BUILTIN_SCORER_JSON: &str = include_str!("../../assets/scorer.json");

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
    /// The scorer was trained on different features than this build computes.
    #[error(
        "the scorer was trained with features [{found}] but this build computes [{expected}]: \
         retrain it with `slmgate train`"
    )]
    Features {
        /// The scorer's feature names.
        found: String,
        /// This build's feature names.
        expected: String,
    },
    /// The embedder's dimension differs from the scorer's.
    #[error(
        "the scorer expects {expected}-dimensional embeddings from {name}, but got {got} \
         dimensions: configure the embedder it was trained with, or retrain with `slmgate train`"
    )]
    EmbeddingDim {
        /// The embedder the scorer was trained with.
        name: String,
        /// Its dimension.
        expected: usize,
        /// The dimension supplied.
        got: usize,
    },
    /// The embedder's name differs from the scorer's (same dimension: the scores would be
    /// meaningless, not an error the numbers would reveal).
    #[error(
        "the scorer was trained on embeddings of {expected}, but the embedder is {got}: \
         configure {expected}, or retrain with `slmgate train`"
    )]
    EmbedderName {
        /// The embedder the scorer was trained with.
        expected: String,
        /// The embedder supplied.
        got: String,
    },
    /// The number of features supplied differs from the scorer's.
    #[error("the scorer expects {expected} features, got {got}")]
    FeatureCount {
        /// The scorer's feature count.
        expected: usize,
        /// The count supplied.
        got: usize,
    },
    /// The inputs produced a non-finite score (NaN or infinite inputs).
    #[error("the scorer's inputs are not finite numbers")]
    NonFinite,
}

/// The embedder a scorer's embedding inputs come from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EmbedderSpec {
    /// The model's name (an embedder directory's name, e.g. `all-MiniLM-L6-v2`).
    pub name: String,
    /// Its output dimension (384 for all-MiniLM-L6-v2).
    pub dim: usize,
}

/// The model's parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Model {
    /// Logistic regression over standardised inputs.
    Logistic {
        /// Per-input means (embedding dims first, then features).
        mean: Vec<f32>,
        /// Per-input standard deviations (positive).
        std: Vec<f32>,
        /// Per-input weights on the standardised inputs.
        weights: Vec<f32>,
        /// The intercept.
        bias: f32,
    },
}

/// How the scorer was trained, recorded in its file.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TrainingInfo {
    /// The command that produced the file.
    pub command: String,
    /// The data files, with their sha256.
    pub data: Vec<FileSummary>,
    /// The seed of the train/test split by prompt id.
    pub split_seed: u64,
    /// The share of prompts held out for testing.
    pub test_fraction: f64,
    /// How the data files were read (model pair, continuous rows).
    pub load: LoadOptions,
    /// Prompts trained on.
    pub train_rows: usize,
    /// Prompts held out.
    pub test_rows: usize,
    /// How a (weak, strong) quality pair became the training target.
    pub target: String,
    /// The L2 penalty used (chosen by cross-validation on the training split).
    pub l2: f64,
    /// Cross-validation on the training split: (L2 penalty, mean APGR over data sets).
    pub cv: Vec<(f64, f64)>,
    /// Held-out metrics per data set and router.
    pub test_metrics: Vec<NamedMetrics>,
}

/// Metrics of one router on one data set.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NamedMetrics {
    /// The data set (`all` for every data set together).
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
    embedder: Option<EmbedderSpec>,
    features: Vec<String>,
    model: Model,
    /// Scores of a sample of prompts (sorted ascending), for calibrating a threshold to a
    /// target share without embedding a sample at startup.
    #[serde(default)]
    calibration: Vec<f32>,
    #[serde(default)]
    training: TrainingInfo,
}

/// A loaded scorer. Cheap to apply (one dot product); `Send + Sync`.
#[derive(Debug, Clone, PartialEq)]
pub struct Scorer {
    file: ScorerFile,
    /// Weights folded with the standardisation: `wᵢ / stdᵢ`.
    folded: Vec<f32>,
    /// Intercept folded with the standardisation: `b − Σ wᵢ·meanᵢ/stdᵢ`.
    folded_bias: f32,
}

impl Scorer {
    /// Builds a logistic scorer from its parts (checked like a loaded file). The inputs are
    /// the embedding's dimensions (if `embedder` is set) followed by the [`FEATURE_NAMES`]
    /// features (if `use_features`).
    pub fn logistic(
        embedder: Option<EmbedderSpec>,
        use_features: bool,
        mean: Vec<f32>,
        std: Vec<f32>,
        weights: Vec<f32>,
        bias: f32,
        training: TrainingInfo,
    ) -> Result<Scorer, ScorerError> {
        Scorer::from_file(ScorerFile {
            format: SCORER_FORMAT.to_string(),
            embedder,
            features: if use_features {
                FEATURE_NAMES.iter().map(|s| s.to_string()).collect()
            } else {
                Vec::new()
            },
            model: Model::Logistic {
                mean,
                std,
                weights,
                bias,
            },
            calibration: Vec::new(),
            training,
        })
    }

    /// Parses a scorer file's contents.
    pub fn from_json(json: &str) -> Result<Scorer, ScorerError> {
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

    /// The default scorer shipped in the binary (trained on `shared/data` with
    /// all-MiniLM-L6-v2 embeddings).
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
        if !file.features.is_empty() && file.features != FEATURE_NAMES {
            return Err(ScorerError::Features {
                found: file.features.join(", "),
                expected: FEATURE_NAMES.join(", "),
            });
        }
        let dim = file.embedder.as_ref().map_or(0, |e| e.dim);
        let inputs = dim + file.features.len();
        let Model::Logistic {
            mean,
            std,
            weights,
            bias,
        } = &file.model;
        for (name, v) in [("mean", mean), ("std", std), ("weights", weights)] {
            if v.len() != inputs {
                return Err(ScorerError::Invalid(format!(
                    "model.{name} has {} values, expected {inputs} ({dim} embedding dims + {} \
                     features)",
                    v.len(),
                    file.features.len()
                )));
            }
            if v.iter().any(|x| !x.is_finite()) {
                return Err(ScorerError::Invalid(format!(
                    "model.{name} has non-finite values"
                )));
            }
        }
        if std.iter().any(|s| *s <= 0.0) {
            return Err(ScorerError::Invalid("model.std must be positive".into()));
        }
        if !bias.is_finite() {
            return Err(ScorerError::Invalid("model.bias is not finite".into()));
        }
        let folded: Vec<f32> = weights.iter().zip(std).map(|(w, s)| w / s).collect();
        let folded_bias = bias - folded.iter().zip(mean).map(|(w, m)| w * m).sum::<f32>();
        Ok(Scorer {
            file,
            folded,
            folded_bias,
        })
    }

    /// Serialises the scorer: compact JSON with one line per top-level key (readable diffs),
    /// floats in their shortest round-trip form.
    pub fn to_json(&self) -> Result<String, ScorerError> {
        let f = &self.file;
        let parts = [
            ("format", serde_json::to_string(&f.format)),
            ("embedder", serde_json::to_string(&f.embedder)),
            ("features", serde_json::to_string(&f.features)),
            ("model", serde_json::to_string(&f.model)),
            ("calibration", serde_json::to_string(&f.calibration)),
            ("training", serde_json::to_string(&f.training)),
        ];
        let mut out = String::from("{\n");
        for (i, (key, value)) in parts.into_iter().enumerate() {
            let value = value?;
            out.push_str(&format!("  \"{key}\": {value}"));
            out.push_str(if i + 1 < 6 { ",\n" } else { "\n" });
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

    /// The same scorer with `scores` (of a sample of prompts, e.g. its training data) recorded
    /// as its calibration sample: sorted ascending, rounded to 4 decimals, non-finite values
    /// dropped.
    pub fn with_calibration(mut self, scores: &[f32]) -> Scorer {
        let mut v: Vec<f32> = scores
            .iter()
            .filter(|s| s.is_finite())
            .map(|s| (s * 10_000.0).round() / 10_000.0)
            .collect();
        v.sort_by(f32::total_cmp);
        self.file.calibration = v;
        self
    }

    /// The calibration sample: scores of the prompts the scorer was trained and tested on
    /// (sorted ascending; empty if the file has none). A threshold that sends a share `s` of
    /// them to the local model is their `s`-quantile.
    pub fn calibration_scores(&self) -> &[f32] {
        &self.file.calibration
    }

    /// The embedder the scorer needs (`None` for a features-only scorer).
    pub fn embedder(&self) -> Option<&EmbedderSpec> {
        self.file.embedder.as_ref()
    }

    /// The embedding dimension the scorer needs (0 for a features-only scorer).
    pub fn embedding_dim(&self) -> usize {
        self.file.embedder.as_ref().map_or(0, |e| e.dim)
    }

    /// Whether the scorer uses the cheap text features.
    pub fn uses_features(&self) -> bool {
        !self.file.features.is_empty()
    }

    /// How the scorer was trained.
    pub fn training(&self) -> &TrainingInfo {
        &self.file.training
    }

    /// The model's parameters.
    pub fn model(&self) -> &Model {
        &self.file.model
    }

    /// Checks that an embedder fits this scorer: same dimension
    /// ([`ScorerError::EmbeddingDim`]) and same model name ([`ScorerError::EmbedderName`];
    /// compared case-insensitively). Call it once when wiring the embedder.
    pub fn check_embedder(&self, name: &str, dim: usize) -> Result<(), ScorerError> {
        let Some(spec) = &self.file.embedder else {
            return Ok(());
        };
        if spec.dim != dim {
            return Err(ScorerError::EmbeddingDim {
                name: spec.name.clone(),
                expected: spec.dim,
                got: dim,
            });
        }
        if !spec.name.eq_ignore_ascii_case(name) {
            return Err(ScorerError::EmbedderName {
                expected: spec.name.clone(),
                got: name.to_string(),
            });
        }
        Ok(())
    }

    /// P(the large model is needed) in `[0, 1]` from a query's embedding (L2-normalised, of
    /// the scorer's embedder; pass `&[]` for a features-only scorer) and its
    /// [`features`](super::features::features).
    pub fn score(&self, embedding: &[f32], features: &[f32]) -> Result<f32, ScorerError> {
        let dim = self.embedding_dim();
        if embedding.len() != dim {
            return Err(ScorerError::EmbeddingDim {
                name: self
                    .file
                    .embedder
                    .as_ref()
                    .map_or_else(|| "no embedder".to_string(), |e| e.name.clone()),
                expected: dim,
                got: embedding.len(),
            });
        }
        let nf = self.file.features.len();
        if features.len() != nf {
            return Err(ScorerError::FeatureCount {
                expected: nf,
                got: features.len(),
            });
        }
        let z = self.folded_bias
            + dot(&self.folded[..dim], embedding)
            + dot(&self.folded[dim..], features);
        if !z.is_finite() {
            return Err(ScorerError::NonFinite);
        }
        Ok(sigmoid(z))
    }

    /// [`Scorer::score`] computing the features from the text (`turns` user turns).
    pub fn score_text(
        &self,
        embedding: &[f32],
        text: &str,
        turns: usize,
    ) -> Result<f32, ScorerError> {
        if self.uses_features() {
            self.score(embedding, &features(text, turns))
        } else {
            self.score(embedding, &[])
        }
    }
}

impl fmt::Display for Scorer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let emb = self.file.embedder.as_ref().map_or_else(
            || "no embedding".to_string(),
            |e| format!("{} ({}-d)", e.name, e.dim),
        );
        write!(
            f,
            "logistic scorer over {emb} + {} features",
            self.file.features.len()
        )
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
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

    fn tiny(dim: usize) -> Scorer {
        let n = dim + NUM_FEATURES;
        let mut weights = vec![0.0; n];
        weights[0] = 2.0; // embedding dim 0 (or the first feature when dim = 0)
        Scorer::logistic(
            (dim > 0).then(|| EmbedderSpec {
                name: "tiny-embedder".into(),
                dim,
            }),
            true,
            vec![0.5; n],
            vec![0.5; n],
            weights,
            0.0,
            TrainingInfo::default(),
        )
        .expect("valid scorer")
    }

    #[test]
    fn scores_and_round_trips() {
        let s = tiny(3);
        let f = features("hello", 1);
        // x0 = 1.5: (1.5 − 0.5)/0.5 · 2 = 4 → σ(4).
        let p = s.score(&[1.5, 0.0, 0.0], &f).expect("score");
        assert!((p - sigmoid(4.0)).abs() < 1e-6, "{p}");
        let p0 = s.score(&[0.5, 9.0, 9.0], &f).expect("score");
        assert!((p0 - 0.5).abs() < 1e-6);
        let back = Scorer::from_json(&s.to_json().expect("json")).expect("round trip");
        assert_eq!(back, s);
        assert_eq!(s.score_text(&[1.5, 0.0, 0.0], "hello", 1).ok(), Some(p));
        assert!(s.to_string().contains("tiny-embedder"));
    }

    #[test]
    fn clear_errors() {
        let s = tiny(3);
        let f = features("x", 1);
        let e = s.score(&[0.0; 4], &f).expect_err("dim");
        assert!(e.to_string().contains("expects 3-dimensional"), "{e}");
        let e = s.score(&[0.0; 3], &f[..3]).expect_err("features");
        assert!(matches!(e, ScorerError::FeatureCount { .. }), "{e}");
        let e = s.score(&[f32::NAN, 0.0, 0.0], &f).expect_err("nan");
        assert!(matches!(e, ScorerError::NonFinite));
        assert!(s.check_embedder("Tiny-Embedder", 3).is_ok());
        let e = s.check_embedder("all-MiniLM-L6-v2", 3).expect_err("name");
        assert!(e.to_string().contains("tiny-embedder"), "{e}");
        let e = s.check_embedder("tiny-embedder", 384).expect_err("dim");
        assert!(matches!(e, ScorerError::EmbeddingDim { got: 384, .. }));

        let json = s.to_json().expect("json");
        for (from, to, want) in [
            ("slmgate-scorer/1", "slmgate-scorer/9", "format"),
            ("\"log_chars\"", "\"chars\"", "retrain"),
            ("\"bias\":0.0", "\"bias\":0.0,\"extra\":1", "unknown field"),
            ("\"dim\":3", "\"dim\":4", "expected 28"),
        ] {
            assert!(json.contains(from), "{from} in {json}");
            let e = Scorer::from_json(&json.replacen(from, to, 1)).expect_err(want);
            assert!(e.to_string().contains(want), "{want}: {e}");
        }
        let bad_std = json.replacen("\"std\":[0.5", "\"std\":[0.0", 1);
        assert!(Scorer::from_json(&bad_std).is_err());
        assert!(Scorer::from_json("{").is_err());
        let e = Scorer::load(Path::new("/nonexistent/scorer.json")).expect_err("io");
        assert!(e.to_string().contains("/nonexistent/scorer.json"));
    }

    #[test]
    fn features_only_scorer() {
        let s = tiny(0);
        assert_eq!(s.embedding_dim(), 0);
        assert!(s.check_embedder("anything", 7).is_ok());
        let p = s
            .score_text(&[], "a longer prompt with several words", 1)
            .expect("score");
        assert!((0.0..=1.0).contains(&p));
    }

    #[test]
    fn sigmoid_is_stable() {
        assert_eq!(sigmoid(1000.0), 1.0);
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
    }

    #[test]
    fn builtin_scorer_loads() {
        let s = Scorer::default_builtin().expect("builtin scorer");
        assert_eq!(s.embedder().map(|e| e.dim), Some(384));
        assert!(s.check_embedder("all-MiniLM-L6-v2", 384).is_ok());
        let p = s.score_text(&[0.0; 384], "What is 2+2?", 1).expect("score");
        assert!((0.0..=1.0).contains(&p));
        assert!(!s.calibration_scores().is_empty());
        // Its recorded held-out metrics beat the prompt-length baseline on every data set.
        let t = s.training();
        assert!(t.test_rows > 0 && t.train_rows > 0);
        let apgr = |d: &str, r: &str| {
            t.test_metrics
                .iter()
                .find(|m| m.dataset == d && m.router == r)
                .and_then(|m| m.metrics.apgr)
        };
        for d in ["arena-bench-v1", "routerarena-809", "all"] {
            let (Some(s), Some(l)) = (apgr(d, "scorer"), apgr(d, "length")) else {
                panic!("no held-out metrics for {d}");
            };
            assert!(s > l, "{d}: scorer {s} vs length {l}");
        }
    }
}
