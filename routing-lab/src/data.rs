//! Labelled routing data: loading, converting and splitting.
//!
//! # Accepted JSONL lines
//! One JSON object per line (blank lines are skipped); `id` is optional everywhere (a string
//! or a number; without one, the id is derived from the prompt's sha256):
//!
//! - `{"id", "prompt", "label"}`: `label` 0/1 (or `false`/`true`, or a probability in
//!   `[0, 1]`); 1 = the prompt needs the large model. For evaluation this reads as weak
//!   quality `1 − label`, strong quality 1.
//! - `{"id", "prompt", "weak", "strong"}`: the quality of the small (weak) and the large
//!   (strong) model's answers, either 0–1 (correctness, or any score in `[0, 1]`) or a judge's
//!   1–10. The scale is decided per file: if any value exceeds 1, every value must lie in
//!   `[1, 10]` and is mapped to `(s − 1) / 9`.
//! - `{"id", "prompt", "scores": {model: score, ...}}`, the layout of the files in
//!   `shared/data`: the weak and strong models are picked from `scores` by name
//!   ([`LoadOptions::weak_models`]/[`LoadOptions::strong_models`]; several names average).
//!   Without names, the known layouts get their default pair ([`ARENA_BENCH_PAIR`],
//!   [`ROUTERARENA_PAIR`]). Rows lacking a score for one side are skipped and counted.
//!
//! Qualities end up in `[0, 1]` for every format, so files can be mixed. A 0–1 file may hold
//! continuous scores (RouterArena's METEOR rows): they are kept or dropped by
//! [`LoadOptions::continuous`]; small negative values (METEOR's fragmentation penalty can
//! give −0.03) are clamped to 0.
//!
//! # Split
//! [`is_test`] puts a prompt in the held-out test split from a hash of `(seed, id)` alone, so
//! a prompt's side never depends on file order, on which other files are loaded, or on the
//! machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

pub use slmgate_routing::provenance::{ContinuousRows, FileSummary, LoadOptions};

/// The default pair for arena-bench-v1 (`scores` judged 1–10 by GPT-4 against a GPT-4
/// reference): weak = Mixtral-8x7B-Instruct, strong = gpt-4-1106-preview, the pair RouteLLM's
/// published results use (so the figures compare with theirs).
pub const ARENA_BENCH_PAIR: (&str, &str) =
    ("mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview");

/// The default pair for AlpacaEval annotations (`scores` = a GPT-4-turbo judge's preference
/// of the model's answer over GPT-4-turbo's, in `[0, 1]`): weak = gemma-2b-it, a model of
/// the size a gateway embeds, strong = claude-2.1 (the pair the data's README suggests; its
/// answers are of moderate length, so the judge's length bias favours it less than the
/// long-answer models).
pub const ALPACA_EVAL_PAIR: (&str, &str) = ("gemma-2b-it", "claude-2.1");

/// The default pair for RouterArena (`scores` 0/1 correctness or METEOR): the cheaper,
/// weaker claude-3-haiku (mean 0.52) and the stronger gemini-2.0-flash (mean 0.69).
pub const ROUTERARENA_PAIR: (&str, &str) = ("claude-3-haiku", "gemini-2.0-flash");

/// One labelled prompt. Qualities are in `[0, 1]`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Example {
    /// The prompt's id (unique within its file); decides its split.
    pub id: String,
    /// The prompt text.
    pub prompt: String,
    /// The data set it comes from (the file's stem), for per-data-set metrics.
    pub dataset: String,
    /// The source group within the file: the row's `source` field (RouterArena's benchmark
    /// name, e.g. `MMLUPro`), else the data set. Leave-one-source-out evaluation holds out
    /// one group at a time.
    #[serde(default)]
    pub group: String,
    /// Quality of the weak (small) model's answer, in `[0, 1]`.
    pub weak: f64,
    /// Quality of the strong (large) model's answer, in `[0, 1]`.
    pub strong: f64,
    /// How hard the prompt is for models in general, in `[0, 1]`: 1 − the mean quality of
    /// every model the row scores (all of a `scores` map, else weak and strong), or the
    /// label of a `{"prompt","label"}` line. What the ranker learns to order (see
    /// [`crate::train`]): a difficulty measured over many models transfers to other model
    /// pairs better than one pair's noisy difference.
    #[serde(default)]
    pub difficulty: f64,
    /// The label of a `{"prompt","label"}` line (1 = needs the large model), which is then
    /// also the training target; `None` for rows with model scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<f64>,
}

impl Example {
    /// The strong model's advantage on this prompt, `strong − weak`, in `[−1, 1]`.
    pub fn gain(&self) -> f64 {
        self.strong - self.weak
    }
}

/// Errors reading labelled data; each names the file and, where there is one, the line.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read.
    #[error("reading {path}: {source}", path = .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a usable labelled example.
    #[error("{path}:{line}: {message}", path = .path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The file as a whole is unusable.
    #[error("{path}: {message}", path = .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// One parsed line before the file's scale is known.
struct RawRow {
    line: usize,
    id: String,
    prompt: String,
    group: Option<String>,
    kind: RawKind,
    /// The mean of every model's raw score in a `scores` map (before the file's scale).
    all_mean: Option<f64>,
}

#[derive(Clone, Copy)]
enum RawKind {
    Label(f64),
    Pair(f64, f64),
}

/// Loads one labelled JSONL file.
pub fn load_file(
    path: &Path,
    options: &LoadOptions,
) -> Result<(Vec<Example>, FileSummary), DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    load_bytes(&bytes, path, options)
}

/// Loads labelled JSONL held in memory; `path` names it in summaries and errors (and its
/// stem is the data set's name).
pub fn load_str(
    text: &str,
    path: &Path,
    options: &LoadOptions,
) -> Result<(Vec<Example>, FileSummary), DataError> {
    load_bytes(text.as_bytes(), path, options)
}

fn load_bytes(
    bytes: &[u8],
    path: &Path,
    options: &LoadOptions,
) -> Result<(Vec<Example>, FileSummary), DataError> {
    let text = std::str::from_utf8(bytes).map_err(|e| DataError::File {
        path: path.to_path_buf(),
        message: format!("not UTF-8: {e}"),
    })?;
    let dataset = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".to_string());
    let line_err = |line: usize, message: String| DataError::Line {
        path: path.to_path_buf(),
        line,
        message,
    };

    let mut rows = Vec::new();
    let mut skipped = 0usize;
    let mut pair: Option<(String, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(line).map_err(|e| line_err(n, format!("invalid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| line_err(n, "not a JSON object".into()))?;
        let prompt = obj
            .get("prompt")
            .and_then(Value::as_str)
            .ok_or_else(|| line_err(n, "missing string field \"prompt\"".into()))?;
        let prompt = if options.keep_templates {
            prompt.to_string()
        } else {
            strip_benchmark_template(prompt)
        };
        let group = obj
            .get("source")
            .and_then(Value::as_str)
            .map(str::to_string);
        let id = match obj.get("id") {
            None | Some(Value::Null) => prompt_id(&prompt),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(x)) => x.to_string(),
            Some(other) => {
                return Err(line_err(n, format!("\"id\" must be a string, not {other}")))
            }
        };
        let mut all_mean = None;
        let kind = if let Some(label) = obj.get("label") {
            RawKind::Label(parse_label(label).map_err(|m| line_err(n, m))?)
        } else if obj.contains_key("weak") || obj.contains_key("strong") {
            let num = |k: &str| {
                obj.get(k)
                    .and_then(Value::as_f64)
                    .ok_or_else(|| line_err(n, format!("\"{k}\" must be a number")))
            };
            RawKind::Pair(num("weak")?, num("strong")?)
        } else if let Some(scores) = obj.get("scores").and_then(Value::as_object) {
            let (weak_names, strong_names) = pick_pair(scores, options).ok_or_else(|| {
                let mut models: Vec<&str> = scores.keys().map(String::as_str).collect();
                models.sort_unstable();
                line_err(
                    n,
                    format!(
                        "a \"scores\" map from an unknown layout: name the weak and strong \
                             models (models here: {})",
                        models.join(", ")
                    ),
                )
            })?;
            pair.get_or_insert_with(|| (weak_names.join("+"), strong_names.join("+")));
            let all: Vec<f64> = scores.values().filter_map(Value::as_f64).collect();
            all_mean = (!all.is_empty()).then(|| all.iter().sum::<f64>() / all.len() as f64);
            let avg = |names: &[String]| -> Option<f64> {
                let vals: Vec<f64> = names
                    .iter()
                    .filter_map(|m| scores.get(m).and_then(Value::as_f64))
                    .collect();
                (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64)
            };
            match (avg(&weak_names), avg(&strong_names)) {
                (Some(w), Some(s)) => RawKind::Pair(w, s),
                _ => {
                    skipped += 1;
                    continue;
                }
            }
        } else {
            return Err(line_err(
                n,
                "needs \"label\", \"weak\" and \"strong\", or a \"scores\" map".into(),
            ));
        };
        rows.push(RawRow {
            line: n,
            id,
            prompt,
            group,
            kind,
            all_mean,
        });
    }

    // The scale of the whole file.
    let pair_values = rows.iter().filter_map(|r| match r.kind {
        RawKind::Pair(w, s) => Some([w, s]),
        RawKind::Label(_) => None,
    });
    let mut max = f64::NEG_INFINITY;
    let mut any_pair = false;
    for v in pair_values.flatten() {
        any_pair = true;
        max = max.max(v);
    }
    let ten_scale = any_pair && max > 1.0;
    let mut examples = Vec::with_capacity(rows.len());
    for r in rows {
        let label = match r.kind {
            RawKind::Label(l) => Some(l),
            RawKind::Pair(..) => None,
        };
        let (weak, strong) = match r.kind {
            RawKind::Label(l) => (1.0 - l, 1.0),
            RawKind::Pair(w, s) if ten_scale => {
                for x in [w, s] {
                    if !(1.0..=10.0).contains(&x) {
                        return Err(line_err(
                            r.line,
                            format!(
                                "score {x} outside 1–10 (the file has scores above 1, so it is \
                                 read as a 1–10 scale)"
                            ),
                        ));
                    }
                }
                ((w - 1.0) / 9.0, (s - 1.0) / 9.0)
            }
            RawKind::Pair(w, s) => {
                for x in [w, s] {
                    if !(-0.1..=1.0).contains(&x) {
                        return Err(line_err(r.line, format!("score {x} outside 0–1")));
                    }
                }
                let continuous = [w, s].iter().any(|&x| x != 0.0 && x != 1.0);
                if continuous && options.continuous == ContinuousRows::Drop {
                    skipped += 1;
                    continue;
                }
                (w.max(0.0), s.max(0.0))
            }
        };
        let mean = match (r.all_mean, r.kind) {
            (Some(m), _) if ten_scale => (m - 1.0) / 9.0,
            (Some(m), _) => m.max(0.0),
            (None, RawKind::Label(l)) => 1.0 - l,
            (None, RawKind::Pair(..)) => (weak + strong) / 2.0,
        };
        examples.push(Example {
            difficulty: (1.0 - mean).clamp(0.0, 1.0),
            id: r.id,
            prompt: r.prompt,
            group: r.group.unwrap_or_else(|| dataset.clone()),
            dataset: dataset.clone(),
            weak,
            strong,
            label,
        });
    }
    if examples.is_empty() {
        return Err(DataError::File {
            path: path.to_path_buf(),
            message: format!("no usable labelled rows ({skipped} skipped)"),
        });
    }
    let scale = if !any_pair {
        "label"
    } else if ten_scale {
        "1-10"
    } else {
        "0-1"
    };
    let summary = FileSummary {
        path: path.display().to_string(),
        dataset,
        sha256: hex::encode(Sha256::digest(bytes)),
        rows: examples.len(),
        skipped,
        scale: scale.to_string(),
        pair,
    };
    Ok((examples, summary))
}

/// Loads several files (in order) into one list.
pub fn load_files(
    paths: &[PathBuf],
    options: &LoadOptions,
) -> Result<(Vec<Example>, Vec<FileSummary>), DataError> {
    let mut all = Vec::new();
    let mut summaries = Vec::new();
    for p in paths {
        let (ex, summary) = load_file(p, options)?;
        all.extend(ex);
        summaries.push(summary);
    }
    Ok((all, summaries))
}

/// The weak and strong model names for a `scores` map: the configured ones, or the default
/// pair of a known layout.
fn pick_pair(
    scores: &serde_json::Map<String, Value>,
    options: &LoadOptions,
) -> Option<(Vec<String>, Vec<String>)> {
    let mut weak = options.weak_models.clone();
    let mut strong = options.strong_models.clone();
    if weak.is_empty() || strong.is_empty() {
        // A layout is recognised by either model of its pair being present.
        let default = [ARENA_BENCH_PAIR, ROUTERARENA_PAIR, ALPACA_EVAL_PAIR]
            .into_iter()
            .find(|(w, s)| scores.contains_key(*w) || scores.contains_key(*s))?;
        if weak.is_empty() {
            weak = vec![default.0.to_string()];
        }
        if strong.is_empty() {
            strong = vec![default.1.to_string()];
        }
    }
    Some((weak, strong))
}

/// A label: a bool, or a number in `[0, 1]`.
fn parse_label(v: &Value) -> Result<f64, String> {
    let x = match v {
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        other => return Err(format!("\"label\" must be 0/1 or a boolean, not {other}")),
    };
    if !(0.0..=1.0).contains(&x) {
        return Err(format!("\"label\" must be in [0, 1], not {x}"));
    }
    Ok(x)
}

/// The question inside a benchmark harness's instruction template, as a user would ask it.
///
/// RouterArena wraps every benchmark question in an instruction ("Please read the following
/// multiple-choice questions…", "Context: None", "Question: …", "Options: …", "Provide the
/// correct letter choice in \boxed{X}…"). Left in, that boilerplate dominates every
/// length, keyword and embedding signal and encodes the source rather than the question, so
/// a router learns which harness a prompt came from. This keeps the context (when there is
/// one), the question and its options; any other text is returned unchanged.
pub fn strip_benchmark_template(prompt: &str) -> String {
    const HEADS: [&str; 5] = [
        "Please read the following",
        "Please solve the following",
        "You are given a question about chess moves",
        "Read the following passage and answer",
        "Generate an executable Python function",
    ];
    const TAILS: [&str; 4] = [
        "Provide the correct letter choice",
        "Provide your final answer",
        "Provide the correct answer",
        "Is the provided answer correct? Provide",
    ];
    let trimmed = prompt.trim();
    // "Translate the following sentence from X to Y.\n\n<text>\n\nProvide your final answer…"
    if let Some(rest) = trimmed.strip_prefix("Translate the following sentence from ") {
        if let Some((langs, body)) = rest.split_once(".\n\n") {
            let target = langs.rsplit(" to ").next().unwrap_or(langs);
            let body = TAILS
                .iter()
                .filter_map(|t| body.rfind(&format!("\n\n{t}")))
                .min()
                .map_or(body, |i| &body[..i]);
            return format!("Translate to {target}: {}", body.trim());
        }
    }
    if !HEADS.iter().any(|h| trimmed.starts_with(h)) {
        return prompt.to_string();
    }
    let mut q = trimmed;
    // The instruction line, up to the first blank line (or the inline "Question:").
    if trimmed.starts_with("Generate an executable Python function") {
        if let Some(i) = q.find("Question:") {
            q = &q[i + "Question:".len()..];
        }
    } else if let Some(i) = q.find("\n\n") {
        q = &q[i + 2..];
    }
    if let Some(i) = TAILS.iter().filter_map(|t| q.rfind(t)).min() {
        q = &q[..i];
    }
    let mut out = String::with_capacity(q.len());
    for (i, para) in q.split("\n\n").enumerate() {
        let para = para.trim();
        let para = match para {
            "" | "Context: None" => continue,
            p => p,
        };
        let para = para.strip_prefix("Question:").unwrap_or(para).trim_start();
        let para = para
            .strip_prefix("Options:")
            .or_else(|| para.strip_prefix("Options :"))
            .map_or(para, str::trim_start);
        if i > 0 && !out.is_empty() {
            out.push('\n');
        }
        out.push_str(para);
    }
    let out = out.replace(" Keep the explanation or feedback within 3 sentences.", "");
    if out.trim().is_empty() {
        prompt.to_string()
    } else {
        out.trim().to_string()
    }
}

/// The id of a prompt that has none: `sha256:` and the first 16 hex digits of its hash.
pub fn prompt_id(prompt: &str) -> String {
    let h = Sha256::digest(prompt.as_bytes());
    format!("sha256:{}", &hex::encode(h)[..16])
}

/// A number in `[0, 1)` from `(seed, key)`: the first 8 bytes of sha256(seed as 8
/// little-endian bytes ‖ key), as a fraction of 2^64.
pub fn unit_hash(seed: u64, key: &str) -> f64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(key.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether the prompt with this id is in the held-out test split.
pub fn is_test(id: &str, seed: u64, test_fraction: f64) -> bool {
    unit_hash(seed, id) < test_fraction
}

/// Splits examples into `(train, test)` by [`is_test`], keeping their order.
pub fn split(examples: &[Example], seed: u64, test_fraction: f64) -> (Vec<Example>, Vec<Example>) {
    examples
        .iter()
        .cloned()
        .partition(|e| !is_test(&e.id, seed, test_fraction))
}

/// Groups examples by data set (sorted by name).
pub fn by_dataset(examples: &[Example]) -> BTreeMap<String, Vec<&Example>> {
    let mut map: BTreeMap<String, Vec<&Example>> = BTreeMap::new();
    for e in examples {
        map.entry(e.dataset.clone()).or_default().push(e);
    }
    map
}

/// Writes examples as `{"id","prompt","weak","strong"}` lines (qualities in 0–1), the format
/// `slmgate eval` reads.
pub fn write_jsonl(path: &Path, examples: &[Example]) -> Result<(), DataError> {
    let mut out = String::new();
    for e in examples {
        let line = serde_json::json!({
            "id": e.id, "prompt": e.prompt, "weak": e.weak, "strong": e.strong,
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    std::fs::write(path, out).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write test file");
        p
    }

    #[test]
    fn reads_every_format() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let labels = write(
            d,
            "labels.jsonl",
            "{\"id\":\"a\",\"prompt\":\"hi\",\"label\":0}\n\n{\"prompt\":\"prove it\",\"label\":true}\n",
        );
        let (ex, s) = load_file(&labels, &LoadOptions::default()).expect("labels");
        assert_eq!(ex.len(), 2);
        assert_eq!((ex[0].weak, ex[0].strong), (1.0, 1.0));
        assert_eq!((ex[1].weak, ex[1].strong), (0.0, 1.0));
        assert_eq!((ex[0].label, ex[1].label), (Some(0.0), Some(1.0)));
        assert!(ex[1].id.starts_with("sha256:"));
        assert_eq!(s.scale, "label");
        assert_eq!(s.dataset, "labels");

        let ten = write(
            d,
            "ten.jsonl",
            "{\"id\":1,\"prompt\":\"x\",\"weak\":1,\"strong\":10}\n{\"id\":2,\"prompt\":\"y\",\"weak\":4,\"strong\":7}\n",
        );
        let (ex, s) = load_file(&ten, &LoadOptions::default()).expect("ten");
        assert_eq!(s.scale, "1-10");
        assert_eq!(ex[0].id, "1");
        assert_eq!((ex[0].weak, ex[0].strong), (0.0, 1.0));
        assert!((ex[1].gain() - 1.0 / 3.0).abs() < 1e-12);

        let scores = write(
            d,
            "ra.jsonl",
            concat!(
                "{\"id\":\"q1\",\"prompt\":\"p\",\"scores\":{\"claude-3-haiku\":0.0,\"gemini-2.0-flash\":1.0}}\n",
                "{\"id\":\"q2\",\"prompt\":\"p2\",\"scores\":{\"claude-3-haiku\":-0.03,\"gemini-2.0-flash\":0.4}}\n",
                "{\"id\":\"q3\",\"prompt\":\"p3\",\"scores\":{\"claude-3-haiku\":1.0}}\n",
            ),
        );
        let (ex, s) = load_file(&scores, &LoadOptions::default()).expect("scores");
        assert_eq!(ex.len(), 2);
        assert_eq!(s.skipped, 1);
        assert_eq!(
            s.pair,
            Some(("claude-3-haiku".into(), "gemini-2.0-flash".into()))
        );
        assert_eq!((ex[1].weak, ex[1].strong), (0.0, 0.4));
        let drop = LoadOptions {
            continuous: ContinuousRows::Drop,
            ..LoadOptions::default()
        };
        let (ex, s) = load_file(&scores, &drop).expect("drop");
        assert_eq!((ex.len(), s.skipped), (1, 2));

        // Named models, averaged.
        let named = LoadOptions {
            weak_models: vec!["m1".into(), "m2".into()],
            strong_models: vec!["big".into()],
            ..LoadOptions::default()
        };
        let custom = write(
            d,
            "c.jsonl",
            "{\"prompt\":\"p\",\"scores\":{\"m1\":2,\"m2\":4,\"big\":10}}\n",
        );
        let (ex, _) = load_file(&custom, &named).expect("named");
        assert_eq!((ex[0].weak, ex[0].strong), (2.0 / 9.0, 1.0));
        let err = load_file(&custom, &LoadOptions::default()).expect_err("unknown layout");
        assert!(err.to_string().contains("m1, m2"), "{err}");
    }

    #[test]
    fn errors_name_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for (text, want) in [
            (
                "{\"prompt\":\"x\",\"label\":0}\nnot json\n",
                ":2: invalid JSON",
            ),
            ("{\"label\":0}\n", ":1: missing string field \"prompt\""),
            ("{\"prompt\":\"x\",\"label\":2}\n", "must be in [0, 1]"),
            (
                "{\"prompt\":\"x\",\"weak\":1}\n",
                "\"strong\" must be a number",
            ),
            (
                "{\"prompt\":\"x\",\"weak\":0,\"strong\":11}\n",
                "outside 1–10",
            ),
            ("{\"prompt\":\"x\"}\n", "needs \"label\""),
            ("\n\n", "no usable labelled rows"),
        ] {
            let p = write(d, "bad.jsonl", text);
            let err = load_file(&p, &LoadOptions::default()).expect_err(text);
            let msg = err.to_string();
            assert!(msg.contains("bad.jsonl") && msg.contains(want), "{msg}");
        }
        let err = load_file(Path::new("/nonexistent/x.jsonl"), &LoadOptions::default())
            .expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/x.jsonl"));
    }

    #[test]
    fn benchmark_templates_are_stripped_to_the_question() {
        let mcq = "Please read the following multiple-choice questions and provide the most likely correct answer based on the options given.\n\nContext: None\n\nQuestion: Which is a mammal?\n\nOptions: \nA. shark\nB. whale\n\n\nProvide the correct letter choice in \\boxed{X}, where X is the correct letter choice. Keep the explanation or feedback within 3 sentences.";
        assert_eq!(
            strip_benchmark_template(mcq),
            "Which is a mammal?\nA. shark\nB. whale"
        );
        let ctx = "Please solve the following mathematical problem step by step. \n\nContext: Ann has 3 apples.\n\nQuestion: How many apples does Ann have?\n\nProvide your final answer in \\boxed{{}} format.";
        assert_eq!(
            strip_benchmark_template(ctx),
            "Context: Ann has 3 apples.\nHow many apples does Ann have?"
        );
        let tr = "Translate the following sentence from English to German.\n\nGood morning.\n\nProvide your final answer in \\boxed{{}} format.";
        assert_eq!(
            strip_benchmark_template(tr),
            "Translate to German: Good morning."
        );
        for plain in ["What is 2+2?", "Please read the following", ""] {
            assert_eq!(strip_benchmark_template(plain), plain);
        }
    }

    #[test]
    fn split_is_deterministic_and_by_id() {
        let ex: Vec<Example> = (0..1000)
            .map(|i| Example {
                id: format!("id{i}"),
                prompt: format!("p{i}"),
                dataset: "d".into(),
                group: "d".into(),
                difficulty: 0.5,
                weak: 0.0,
                strong: 1.0,
                label: None,
            })
            .collect();
        let (train, test) = split(&ex, 7, 0.3);
        assert_eq!(train.len() + test.len(), 1000);
        assert!((250..350).contains(&test.len()), "{}", test.len());
        let (_, test2) = split(&ex[..500], 7, 0.3);
        let first_half: Vec<_> = test.iter().filter(|e| ex[..500].contains(e)).collect();
        assert_eq!(
            first_half.len(),
            test2.len(),
            "membership does not depend on the rest"
        );
        let (_, other) = split(&ex, 8, 0.3);
        assert_ne!(test, other);
        assert!((0.0..1.0).contains(&unit_hash(0, "")));
    }
}
