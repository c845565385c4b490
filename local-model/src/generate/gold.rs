//! Gold-answer accuracy: does the local model answer simple questions correctly?
//!
//! A gold set is JSON Lines, one question per line:
//!
//! ```json
//! {"id": "g001", "category": "fact", "prompt": "What is the capital of France?", "accept": ["paris"], "reject": ["lyon"]}
//! ```
//!
//! [`judge`] decides whether an answer is right: after [`normalize`] (lowercase, thousands
//! separators removed, whitespace collapsed, a leading `<think>…</think>` block dropped) it must
//! contain some `accept` string as a whole word or phrase and no `reject` string. "Whole" is
//! stricter for numbers than for words: `12` does not match inside `120`, `1.2`, `12.5` or
//! `-12`, but does match `12.` at the end of a sentence, `12.0` and `12km`.
//!
//! [`run`] answers every question with a loaded [`Generator`] (the question as the only user
//! message, through the model's chat template) and returns a [`GoldReport`]: accuracy per
//! category and overall, plus latency and speed. The `gold_eval` example prints it as a
//! markdown table for several models and sampling settings.
//!
//! ```
//! use slmgate_local_model::gold::{judge, GoldItem};
//! let item = GoldItem::new("g", "arithmetic", "What is 7 * 8?", &["56"], &["54"]);
//! assert!(judge("7 * 8 = 56.", &item));
//! assert!(!judge("The answer is 560.", &item));
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::error::LocalModelError;
use super::generator::{GenerationEvent, Generator};
use super::sampling::SamplingParams;
use super::template::ChatMessage;

/// One gold question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldItem {
    /// A unique id (`g001`).
    pub id: String,
    /// The category (`fact`, `arithmetic`, …); accuracy is reported per category.
    pub category: String,
    /// The question, sent as the only user message.
    pub prompt: String,
    /// Answers that count as correct (any one, as a whole word or phrase).
    pub accept: Vec<String>,
    /// Answers that make the answer wrong even when an accepted one is present.
    #[serde(default)]
    pub reject: Vec<String>,
}

impl GoldItem {
    /// An item from string slices (for tests and examples).
    pub fn new(id: &str, category: &str, prompt: &str, accept: &[&str], reject: &[&str]) -> Self {
        Self {
            id: id.into(),
            category: category.into(),
            prompt: prompt.into(),
            accept: accept
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
            reject: reject
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
        }
    }
}

/// Why a gold set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum GoldError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a valid item.
    #[error("{source_name}:{line}: {message}")]
    Line {
        /// The file (or `<input>`).
        source_name: String,
        /// The 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The set has no items.
    #[error("{0}: no items")]
    Empty(String),
}

/// Reads a gold set from a JSON Lines file (see [`parse`]).
pub fn load(path: &Path) -> Result<Vec<GoldItem>, GoldError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| GoldError::Io {
        path: name.clone(),
        source,
    })?;
    parse(&text, &name)
}

/// Parses a gold set: one JSON object per line, blank lines ignored. Every item needs a
/// unique non-empty `id`, a non-empty `prompt` and at least one non-empty `accept` string;
/// errors name `source_name` and the line.
pub fn parse(text: &str, source_name: &str) -> Result<Vec<GoldItem>, GoldError> {
    let mut items: Vec<GoldItem> = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let err = |message: String| GoldError::Line {
            source_name: source_name.to_string(),
            line: line_no,
            message,
        };
        if line.trim().is_empty() {
            continue;
        }
        let item: GoldItem = serde_json::from_str(line).map_err(|e| err(e.to_string()))?;
        if item.id.trim().is_empty() {
            return Err(err("empty `id`".into()));
        }
        if let Some(first) = seen.insert(item.id.clone(), line_no) {
            return Err(err(format!(
                "duplicate id {:?} (first on line {first})",
                item.id
            )));
        }
        if item.prompt.trim().is_empty() {
            return Err(err(format!("{}: empty `prompt`", item.id)));
        }
        if item.accept.is_empty() {
            return Err(err(format!("{}: `accept` is empty", item.id)));
        }
        if item
            .accept
            .iter()
            .chain(&item.reject)
            .any(|s| s.trim().is_empty())
        {
            return Err(err(format!(
                "{}: empty string in `accept` or `reject`",
                item.id
            )));
        }
        items.push(item);
    }
    if items.is_empty() {
        return Err(GoldError::Empty(source_name.to_string()));
    }
    Ok(items)
}

/// Drops a `<think>…</think>` block at the start of `text` (reasoning models such as Qwen3
/// open their answer with one, empty when thinking is off), and the whitespace after it.
/// An unclosed block means the whole text is reasoning: the result is empty.
pub fn strip_leading_think(text: &str) -> &str {
    let t = text.trim_start();
    match t.strip_prefix("<think>") {
        Some(rest) => match rest.find("</think>") {
            Some(end) => rest[end + "</think>".len()..].trim_start(),
            None => "",
        },
        None => text,
    }
}

/// Lowercases `text`, drops a leading `<think>` block, removes thousands-separator commas
/// (a comma between a digit and exactly three digits: `1,000,000` → `1000000`, but `1,2` and
/// `1,23` stay) and collapses every run of whitespace into one space.
pub fn normalize(text: &str) -> String {
    let lower = strip_leading_think(text).to_lowercase();
    let chars: Vec<char> = lower.chars().collect();
    let mut out = String::with_capacity(lower.len());
    let mut pending_space = false;
    for (i, &c) in chars.iter().enumerate() {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if c == ',' && is_thousands_comma(&chars, i) {
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(c);
    }
    out
}

fn is_thousands_comma(chars: &[char], i: usize) -> bool {
    let digit = |j: usize| chars.get(j).is_some_and(char::is_ascii_digit);
    i > 0 && digit(i - 1) && digit(i + 1) && digit(i + 2) && digit(i + 3) && !digit(i + 4)
}

/// Whether `needle` (already normalized) occurs in `hay` (normalized) as a whole word or
/// phrase: not inside a longer word, and, where it starts or ends with a digit, not inside a
/// longer number (`12` is not in `120`, `1.2`, `12.5`, `-12` or `3/12`; it is in `12.`,
/// `12.0`, `$12` and `12km`).
pub fn contains_phrase(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    let mut from = 0;
    while let Some(off) = hay[from..].find(needle) {
        let start = from + off;
        let end = start + needle.len();
        if boundary_before(hay, start, needle) && boundary_after(hay, end, needle) {
            return true;
        }
        // Next char boundary after `start`.
        from = start + hay[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

fn boundary_before(hay: &str, start: usize, needle: &str) -> bool {
    let mut before = hay[..start].chars().rev();
    let Some(p) = before.next() else {
        return true;
    };
    let first = needle.chars().next().unwrap_or(' ');
    if first.is_alphanumeric() && p.is_alphanumeric() {
        return false;
    }
    if first.is_ascii_digit() {
        let pp = before.next();
        match p {
            // A decimal point or separator inside a number (`1.2`, `1,2`), or a fraction.
            '.' | ',' | '/' if pp.is_some_and(|c| c.is_ascii_digit()) => return false,
            // A minus sign (`-12`, ` -12`), but not a hyphen or range (`a-12`, `10-12`
            // is read as a range, so `12` is there).
            '-' | '−' if !pp.is_some_and(char::is_alphanumeric) => return false,
            _ => {}
        }
    }
    true
}

fn boundary_after(hay: &str, end: usize, needle: &str) -> bool {
    let rest = &hay[end..];
    let mut after = rest.chars();
    let Some(n) = after.next() else {
        return true;
    };
    let last = needle.chars().next_back().unwrap_or(' ');
    // A unit may follow a number (`5000m`, `12km`); a digit may not.
    if last.is_alphanumeric()
        && n.is_alphanumeric()
        && !(last.is_ascii_digit() && n.is_alphabetic())
    {
        return false;
    }
    if last.is_ascii_digit() && matches!(n, '.' | ',' | '/') {
        // `12.` ends a sentence; `12.0` / `12.00` is the same number; `12.5`, `12,5`, `12/5`
        // are other numbers.
        let digits: String = after.take_while(char::is_ascii_digit).collect();
        if digits.is_empty() {
            return true;
        }
        return n == '.' && !needle.contains('.') && digits.chars().all(|c| c == '0');
    }
    true
}

/// Whether `answer` is right for `item`: some accepted answer appears as a whole word or
/// phrase and no rejected one does (see [`contains_phrase`]; both sides are [`normalize`]d).
pub fn judge(answer: &str, item: &GoldItem) -> bool {
    let hay = normalize(answer);
    let has = |s: &String| contains_phrase(&hay, &normalize(s));
    item.accept.iter().any(has) && !item.reject.iter().any(has)
}

/// One answered question.
#[derive(Debug, Clone, Serialize)]
pub struct GoldAnswer {
    /// The item's id.
    pub id: String,
    /// The item's category.
    pub category: String,
    /// The model's answer.
    pub answer: String,
    /// Whether [`judge`] accepted it.
    pub correct: bool,
    /// Tokens in the prompt (after the chat template).
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Wall time from rendering the prompt to the end of the generation.
    pub latency: Duration,
    /// Wall time to the first generated token (prompt prefill plus one sampling step).
    pub time_to_first_token: Duration,
}

/// Accuracy of one category (or of the whole set).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Score {
    /// Items answered correctly.
    pub correct: usize,
    /// Items asked.
    pub total: usize,
}

impl Score {
    /// `correct / total` (0 for an empty score).
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

/// What [`run`] measured.
#[derive(Debug, Clone)]
pub struct GoldReport {
    /// Every answer, in the gold set's order.
    pub answers: Vec<GoldAnswer>,
    /// Accuracy per category, by category name.
    pub per_category: BTreeMap<String, Score>,
    /// Accuracy over every item.
    pub total: Score,
    /// Mean wall time per question.
    pub mean_latency: Duration,
    /// Mean time to the first token.
    pub mean_time_to_first_token: Duration,
    /// Decode speed: tokens after the first divided by the time after the first token, over
    /// all questions.
    pub decode_tokens_per_s: f64,
}

impl GoldReport {
    /// Builds the report's totals from `answers`.
    pub fn from_answers(answers: Vec<GoldAnswer>) -> Self {
        let mut per_category: BTreeMap<String, Score> = BTreeMap::new();
        let mut total = Score::default();
        let (mut latency, mut ttft, mut decode_time) =
            (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let mut decode_tokens = 0usize;
        for a in &answers {
            let s = per_category.entry(a.category.clone()).or_default();
            s.total += 1;
            total.total += 1;
            if a.correct {
                s.correct += 1;
                total.correct += 1;
            }
            latency += a.latency;
            ttft += a.time_to_first_token;
            decode_time += a.latency.saturating_sub(a.time_to_first_token);
            decode_tokens += a.completion_tokens.saturating_sub(1);
        }
        let n = answers.len().max(1) as u32;
        let decode_tokens_per_s = if decode_time.is_zero() {
            0.0
        } else {
            decode_tokens as f64 / decode_time.as_secs_f64()
        };
        Self {
            answers,
            per_category,
            total,
            mean_latency: latency / n,
            mean_time_to_first_token: ttft / n,
            decode_tokens_per_s,
        }
    }
}

/// Answers every item of `items` with `generator` and `params` (the question as the only
/// user message), calling `on_answer` after each one (for progress output), and returns the
/// report. A fixed `params.seed` makes sampled runs repeatable. Blocking and CPU-bound.
pub fn run(
    generator: &Generator,
    items: &[GoldItem],
    params: &SamplingParams,
    mut on_answer: impl FnMut(&GoldAnswer),
) -> Result<GoldReport, LocalModelError> {
    let mut model = generator.instance()?;
    let mut answers = Vec::with_capacity(items.len());
    for item in items {
        let started = Instant::now();
        let prompt = generator.prompt_tokens(&[ChatMessage::new("user", item.prompt.as_str())])?;
        let mut text = String::new();
        let mut first: Option<Duration> = None;
        let mut completion_tokens = 0;
        generator.generate_blocking(&mut model, &prompt, params, |e| {
            match e {
                GenerationEvent::Token { text: t, .. } => {
                    first.get_or_insert_with(|| started.elapsed());
                    text.push_str(&t);
                }
                GenerationEvent::Done {
                    completion_tokens: n,
                    ..
                } => completion_tokens = n,
            }
            true
        })?;
        let latency = started.elapsed();
        if model.is_stale() {
            model = generator.instance()?;
        }
        let answer = GoldAnswer {
            id: item.id.clone(),
            category: item.category.clone(),
            correct: judge(&text, item),
            answer: text,
            prompt_tokens: prompt.len(),
            completion_tokens,
            latency,
            time_to_first_token: first.unwrap_or(latency),
        };
        on_answer(&answer);
        answers.push(answer);
    }
    Ok(GoldReport::from_answers(answers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(accept: &[&str], reject: &[&str]) -> GoldItem {
        GoldItem::new("t", "test", "q", accept, reject)
    }

    #[test]
    fn words_match_whole_words_only() {
        let paris = item(&["paris"], &["lyon"]);
        assert!(judge("The capital of France is Paris.", &paris));
        assert!(judge("PARIS", &paris));
        assert!(judge("\"Paris\"", &paris));
        assert!(judge("paris-based", &paris));
        assert!(!judge("Parisian food", &paris));
        assert!(!judge("comparison", &paris));
        assert!(!judge("Paris, not Lyon", &paris));
        assert!(judge("Paris (Lyonnais is a region name)", &paris));
        assert!(!judge("", &paris));
    }

    #[test]
    fn phrases_and_whitespace() {
        let it = item(&["new york"], &[]);
        assert!(judge("It is New\n  York.", &it));
        assert!(!judge("New Yorker", &it));
        assert!(!judge("newyork", &it));
        // Accept strings are normalized too.
        assert!(judge("new york", &item(&["New  York"], &[])));
        // Unicode letters are word characters.
        let cafe = item(&["café"], &[]);
        assert!(judge("Un café, s'il vous plaît", &cafe));
        assert!(!judge("cafés", &cafe));
        assert!(judge("¿Dónde está el baño?", &item(&["baño"], &[])));
    }

    #[test]
    fn numbers_do_not_match_inside_longer_numbers() {
        let twelve = item(&["12"], &[]);
        assert!(judge("12", &twelve));
        assert!(judge("The answer is 12.", &twelve));
        assert!(judge("3 * 4 = 12", &twelve));
        assert!(judge("12.0", &twelve));
        assert!(judge("12.00 exactly", &twelve));
        assert!(judge("$12", &twelve));
        assert!(judge("12km", &twelve), "a unit may follow");
        assert!(!judge("x12", &twelve));
        assert!(!judge("120", &twelve));
        assert!(!judge("112", &twelve));
        assert!(!judge("1.2", &twelve));
        assert!(!judge("12.5", &twelve));
        assert!(!judge("0.12", &twelve));
        assert!(!judge("12,5", &twelve));
        assert!(!judge("-12", &twelve));
        assert!(!judge("x = -12", &twelve));
        assert!(!judge("3/12", &twelve));
        assert!(!judge("12/5", &twelve));
        // A hyphen after a word or a range is not a minus sign.
        assert!(judge("10-12 people", &twelve));
        assert!(judge("item-12", &twelve));
    }

    #[test]
    fn decimals_and_negative_numbers() {
        let three_half = item(&["3.5"], &[]);
        assert!(judge("3.5", &three_half));
        assert!(judge("It is 3.5.", &three_half));
        assert!(!judge("3.55", &three_half));
        assert!(!judge("13.5", &three_half));
        assert!(
            !judge("3.50", &three_half),
            "only whole numbers take a .0 tail"
        );
        assert!(!judge("3", &three_half));
        // `3` is not in `3.5`.
        assert!(!judge("3.5", &item(&["3"], &[])));
        assert!(!judge("3.5", &item(&["5"], &[])));
        let minus = item(&["-2"], &[]);
        assert!(judge("3 - 5 = -2", &minus));
        assert!(!judge("-25", &minus));
        assert!(judge("2", &item(&["2"], &[])));
        assert!(!judge("minus: -2", &item(&["2"], &[])));
    }

    #[test]
    fn thousands_separators_are_removed() {
        let it = item(&["1000000"], &[]);
        assert!(judge("One million is 1,000,000.", &it));
        assert!(judge("1000000", &it));
        assert!(!judge("1,000,0000", &it));
        assert_eq!(
            normalize("1,000 and 1,5 and 1,23 and 12,345,678"),
            "1000 and 1,5 and 1,23 and 12345678"
        );
        // Lists keep their commas.
        assert_eq!(normalize("1, 2, 3"), "1, 2, 3");
        let thousand = item(&["1,000"], &[]);
        assert!(judge("1000", &thousand));
        assert!(judge("1,000 metres", &thousand));
    }

    #[test]
    fn rejects_override_accepts() {
        let it = item(&["56"], &["54", "wrong"]);
        assert!(judge("56", &it));
        assert!(!judge("56 or 54", &it));
        assert!(!judge("56 is wrong", &it));
        assert!(judge("56 (not 540)", &it));
        assert!(judge("56, wrongly doubted", &it));
    }

    #[test]
    fn think_blocks_are_dropped() {
        let it = item(&["paris"], &["lyon"]);
        assert!(judge("<think>\n\n</think>\n\nParis", &it));
        assert!(judge("<think>Lyon? No.</think> Paris", &it));
        assert!(!judge("<think>Paris or Lyon, let me think", &it));
        assert_eq!(strip_leading_think("<think>\n\n</think>\n\nHi"), "Hi");
        assert_eq!(
            strip_leading_think("Hi <think>x</think>"),
            "Hi <think>x</think>"
        );
    }

    #[test]
    fn parse_reports_line_numbers() {
        let good = r#"{"id":"a","category":"fact","prompt":"p","accept":["x"],"reject":[]}"#;
        let items = parse(&format!("{good}\n\n"), "g.jsonl").unwrap();
        assert_eq!(items.len(), 1);
        let bad = format!("{good}\n{{\"id\":\"b\"}}\n");
        let e = parse(&bad, "g.jsonl").unwrap_err().to_string();
        assert!(e.starts_with("g.jsonl:2: "), "{e}");
        let dup = format!("{good}\n\n{good}\n");
        let e = parse(&dup, "g.jsonl").unwrap_err().to_string();
        assert_eq!(e, "g.jsonl:3: duplicate id \"a\" (first on line 1)");
        let no_accept = r#"{"id":"a","category":"c","prompt":"p","accept":[]}"#;
        let e = parse(no_accept, "g.jsonl").unwrap_err().to_string();
        assert_eq!(e, "g.jsonl:1: a: `accept` is empty");
        let extra = r#"{"id":"a","category":"c","prompt":"p","accept":["x"],"answer":"x"}"#;
        let e = parse(extra, "g.jsonl").unwrap_err().to_string();
        assert!(e.contains("unknown field `answer`"), "{e}");
        assert_eq!(parse("\n", "g").unwrap_err().to_string(), "g: no items");
    }

    #[test]
    fn the_repository_gold_set_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/gold_answers.jsonl");
        if !path.exists() {
            return;
        }
        let items = load(&path).unwrap();
        assert_eq!(items.len(), 168);
        for it in &items {
            for a in &it.accept {
                // Every accepted answer is judged right, on its own and in a sentence.
                assert!(judge(a, it), "{}: {a:?}", it.id);
                assert!(
                    judge(&format!("I think it is {a}."), it),
                    "{}: {a:?}",
                    it.id
                );
            }
        }
    }

    #[test]
    fn report_totals() {
        let a = |cat: &str, correct, n| GoldAnswer {
            id: "x".into(),
            category: cat.into(),
            answer: String::new(),
            correct,
            prompt_tokens: 5,
            completion_tokens: n,
            latency: Duration::from_millis(300),
            time_to_first_token: Duration::from_millis(100),
        };
        let r = GoldReport::from_answers(vec![a("x", true, 5), a("x", false, 5), a("y", true, 1)]);
        assert_eq!(
            r.total,
            Score {
                correct: 2,
                total: 3
            }
        );
        assert_eq!(r.per_category["x"].accuracy(), 0.5);
        assert_eq!(r.mean_latency, Duration::from_millis(300));
        // 8 decode tokens in 3 × 200 ms.
        assert!((r.decode_tokens_per_s - 8.0 / 0.6).abs() < 1e-9);
    }
}
