//! Cheap, deterministic features of a query text for the complexity scorer.
//!
//! [`features`] maps a text to [`NUM_FEATURES`] numbers, named in [`FEATURE_NAMES`] in the
//! same order. They were chosen by leave-one-source-out evaluation (`slmgate eval --loso`):
//! each says something about how *hard* a request is that held across the data sources, not
//! what the request is *about*:
//!
//! - **quantities and formal content**: numbers, digits, math symbols, LaTeX, code
//!   punctuation and keywords — the strongest signal in every source (math, physics and
//!   programming questions separate strong models from weak ones);
//! - **task words**: proofs, computations, quantities ("how many", "per", "total"), writing
//!   code; and, with a negative direction, writing, explaining and chatting, where a weaker
//!   model comes closest to a strong one;
//! - **word shape**: average word length and the share of long words (again negative: long
//!   words mark reading and knowledge questions, short tokens mark formal ones);
//! - **size**: the prompt's word count, capped at [`SIZE_CAP`] words — a one-line greeting
//!   or "2+2" is trivial, while past a sentence or two size says little.
//!
//! The direction each feature may take in the scorer is fixed here ([`SIGNS`]): training
//! only chooses how much each counts. Unconstrained, correlated features (digits and numbers,
//! say) trade signs between data sets and the scorer stops transferring.
//!
//! Pure and fast: one pass over the characters, a word scan with one hash look-up per word,
//! and one regex over at most [`SCAN_BYTES`] bytes from each end of the text (instructions
//! sit at either end of a long prompt). A few microseconds for a typical prompt.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

/// Names of the features, in the order [`features`] returns them.
pub const FEATURE_NAMES: [&str; NUM_FEATURES] = [
    "kw_proof",
    "code_task",
    "avg_word_len",
    "long_word_share",
    "log_nums",
    "digit_share",
    "math_sym",
    "latex",
    "code_punct",
    "code_kw",
    "kw_code",
    "kw_reason",
    "kw_quant",
    "kw_write",
    "kw_explain",
    "kw_chat",
    "size",
];

/// The direction of each feature in [`FEATURE_NAMES`] order: +1 = more of it means more need
/// for the large model, −1 = less. The scorer's weights are constrained to these signs.
pub const SIGNS: [f32; NUM_FEATURES] = [
    1.0, 1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, 1.0,
];

/// Number of features.
pub const NUM_FEATURES: usize = 17;

/// The position of a feature in [`FEATURE_NAMES`].
pub fn index(name: &str) -> Option<usize> {
    FEATURE_NAMES.iter().position(|n| *n == name)
}

/// `size` counts whitespace-separated words up to this many.
pub const SIZE_CAP: usize = 16;

/// The keyword scan reads at most this many bytes from each end of the text.
pub const SCAN_BYTES: usize = 8 * 1024;

const PROOF: &[&str] = &[
    "prove",
    "proof",
    "proofs",
    "derive",
    "derivation",
    "theorem",
    "lemma",
    "rigorous",
    "rigorously",
];
const REASON: &[&str] = &[
    "prove",
    "proof",
    "derive",
    "solve",
    "calculate",
    "compute",
    "theorem",
    "lemma",
    "equation",
    "integral",
    "derivative",
    "probability",
    "optimize",
    "maximize",
    "minimize",
    "puzzle",
    "riddle",
    "algorithm",
    "complexity",
    "estimate",
    "determine",
    "evaluate",
    "simplify",
    "factor",
];
const QUANT: &[&str] = &[
    "how",
    "many",
    "much",
    "total",
    "each",
    "per",
    "percent",
    "percentage",
    "average",
    "ratio",
    "rate",
    "remaining",
    "left",
    "more",
    "less",
    "twice",
    "half",
    "times",
    "altogether",
    "sum",
    "difference",
    "product",
    "cost",
    "costs",
    "price",
    "profit",
    "earn",
    "spent",
    "speed",
    "distance",
];
const CODE: &[&str] = &[
    "code",
    "function",
    "script",
    "program",
    "implement",
    "debug",
    "bug",
    "error",
    "compile",
    "python",
    "javascript",
    "typescript",
    "java",
    "rust",
    "golang",
    "c++",
    "c#",
    "sql",
    "regex",
    "api",
    "class",
    "method",
    "library",
    "framework",
    "react",
    "html",
    "css",
    "json",
    "yaml",
    "bash",
    "shell",
    "docker",
    "kubernetes",
    "database",
    "query",
    "refactor",
    "pandas",
    "numpy",
    "array",
    "string",
    "loop",
    "variable",
];
const CODE_KEYWORDS: &[&str] = &[
    "def",
    "return",
    "import",
    "fn",
    "let",
    "const",
    "var",
    "void",
    "public",
    "private",
    "static",
    "struct",
    "impl",
    "println",
    "printf",
    "console",
    "elif",
    "lambda",
    "async",
    "await",
    "include",
    "namespace",
    "std",
    "null",
    "nullptr",
    "self",
    "this",
    "int",
    "float",
    "bool",
];
const WRITE: &[&str] = &[
    "story",
    "poem",
    "essay",
    "article",
    "blog",
    "lyrics",
    "song",
    "letter",
    "email",
    "speech",
    "screenplay",
    "novel",
    "haiku",
    "limerick",
    "rewrite",
    "paraphrase",
    "draft",
    "compose",
    "creative",
    "persuasive",
    "slogan",
    "tweet",
];
const EXPLAIN: &[&str] = &[
    "explain",
    "describe",
    "discuss",
    "why",
    "opinion",
    "advice",
    "tips",
    "suggest",
    "recommend",
    "benefits",
    "difference",
    "meaning",
];
const CHAT: &[&str] = &[
    "hi", "hello", "hey", "thanks", "thank", "please", "you", "your", "me", "my", "i",
];

// Keyword categories: bits of the table's values and indices of the counts.
const K_PROOF: usize = 0;
const K_REASON: usize = 1;
const K_QUANT: usize = 2;
const K_CODE: usize = 3;
const K_CODE_KW: usize = 4;
const K_WRITE: usize = 5;
const K_EXPLAIN: usize = 6;
const K_CHAT: usize = 7;
const CATEGORIES: usize = 8;

/// Lower-cased word → the categories it counts for (one bit each), built once.
fn keyword_table() -> &'static HashMap<&'static str, u8> {
    static TABLE: OnceLock<HashMap<&'static str, u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t: HashMap<&'static str, u8> = HashMap::new();
        let lists: [(&[&'static str], usize); CATEGORIES] = [
            (PROOF, K_PROOF),
            (REASON, K_REASON),
            (QUANT, K_QUANT),
            (CODE, K_CODE),
            (CODE_KEYWORDS, K_CODE_KW),
            (WRITE, K_WRITE),
            (EXPLAIN, K_EXPLAIN),
            (CHAT, K_CHAT),
        ];
        for (list, c) in lists {
            for w in list {
                *t.entry(w).or_default() |= 1 << c;
            }
        }
        t
    })
}

/// A request to write or fix code: a verb, then within 40 characters of the same sentence an
/// artefact ("write a python function", "implement an LRU cache").
fn code_task_regex() -> &'static regex::Regex {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(
            r"\b(write|implement|create|build|code|fix|debug|refactor|optimi[sz]e)\b[^.?!\n]{0,40}\b(function|class|program|script|method|api|server|algorithm|query|module|parser|cache|app|bot|code)\b",
        )
        .expect("valid regex")
    })
}

/// Characters counted as math symbols.
fn is_math(c: char) -> bool {
    matches!(
        c,
        '=' | '+'
            | '*'
            | '^'
            | '<'
            | '>'
            | '%'
            | '/'
            | '∑'
            | '∫'
            | '√'
            | 'π'
            | '≤'
            | '≥'
            | '≠'
            | '±'
            | '×'
            | '÷'
            | '∞'
            | '∂'
            | '∈'
            | '∀'
            | '∃'
            | '→'
            | '≈'
            | 'θ'
            | 'λ'
            | 'σ'
            | 'μ'
            | 'Δ'
    )
}

/// Computes the features of `text`, a conversation's query (typically the last user
/// message). Deterministic; returns [`NUM_FEATURES`] finite values.
pub fn features(text: &str) -> [f32; NUM_FEATURES] {
    // Whole text: character classes (one pass).
    let mut non_space = 0usize;
    let mut digits = 0usize;
    let mut math = 0usize;
    let mut latex = 0usize;
    let mut code_punct = 0usize;
    let mut prev = ' ';
    for c in text.chars() {
        if c != ' ' {
            non_space += 1;
        }
        if c.is_ascii_digit() {
            digits += 1;
        }
        if is_math(c) {
            math += 1;
        }
        if c == '$' || (prev == '\\' && c.is_ascii_alphabetic()) {
            latex += 1;
        }
        if matches!(c, '{' | '}' | '[' | ']' | ';' | '_') {
            code_punct += 1;
        }
        prev = c;
    }
    code_punct += 3 * text.matches("```").count();
    let size = text.split_whitespace().take(SIZE_CAP).count();

    // The bounded view: words, numbers, keywords.
    let scan = scan_view(text);
    let table = keyword_table();
    let mut counts = [0usize; CATEGORIES];
    let mut words = 0usize;
    let mut word_len = 0usize;
    let mut long_words = 0usize;
    let mut lower = String::new();
    for w in Words::new(&scan) {
        words += 1;
        let len = w.chars().count();
        word_len += len.min(20);
        if len >= 9 {
            long_words += 1;
        }
        lower.clear();
        lower.extend(w.chars().map(|c| c.to_ascii_lowercase()));
        if let Some(&bits) = table.get(lower.as_str()) {
            for (c, count) in counts.iter_mut().enumerate() {
                if bits & (1 << c) != 0 {
                    *count += 1;
                }
            }
        }
    }
    let nums = count_numbers(&scan);
    let scan_lower = scan.to_lowercase();
    let show_that = scan_lower
        .match_indices("show that")
        .filter(|(i, _)| {
            let before = scan_lower[..*i].chars().next_back();
            let after = scan_lower[i + "show that".len()..].chars().next();
            !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
        })
        .count();
    let code_tasks = code_task_regex().find_iter(&scan_lower).count();

    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f32 / b as f32 };
    let ln1p = |x: usize| (x as f32).ln_1p();
    [
        ln1p(counts[K_PROOF]) + 0.7 * show_that as f32,
        code_tasks as f32,
        ratio(word_len, words),
        ratio(long_words, words),
        ln1p(nums),
        ratio(digits, non_space),
        ln1p(math),
        ln1p(latex),
        ln1p(code_punct),
        ln1p(counts[K_CODE_KW]),
        ln1p(counts[K_CODE]),
        ln1p(counts[K_REASON]),
        ln1p(counts[K_QUANT]),
        ln1p(counts[K_WRITE]),
        ln1p(counts[K_EXPLAIN]),
        ratio(counts[K_CHAT], words),
        ln1p(size),
    ]
}

/// Words: an ASCII letter followed by ASCII letters and `'+#-` (so `c++`, `c#`, `don't` and
/// `trade-offs` stay whole).
struct Words<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Words<'a> {
    fn new(text: &'a str) -> Self {
        Words { text, pos: 0 }
    }
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let b = self.text.as_bytes();
        let mut i = self.pos;
        while i < b.len() && !b[i].is_ascii_alphabetic() {
            i += 1;
        }
        if i >= b.len() {
            self.pos = i;
            return None;
        }
        let start = i;
        while i < b.len()
            && (b[i].is_ascii_alphabetic() || matches!(b[i], b'\'' | b'+' | b'#' | b'-'))
        {
            i += 1;
        }
        self.pos = i;
        // Only ASCII bytes were consumed: `start..i` are character boundaries.
        Some(&self.text[start..i])
    }
}

/// Numbers: a digit not preceded by a letter, `_` or another number's characters, then
/// digits and commas, then an optional decimal part (`1,250.75` is one number).
fn count_numbers(text: &str) -> usize {
    let b = text.as_bytes();
    let mut n = 0;
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let glued = i > 0 && (b[i - 1].is_ascii_alphabetic() || b[i - 1] == b'_');
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b',') {
            i += 1;
        }
        if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
        if !glued {
            n += 1;
        }
    }
    n
}

/// The part of `text` the word scan reads: all of it, or its first and last
/// [`SCAN_BYTES`] bytes (cut at character boundaries) joined by a newline.
fn scan_view(text: &str) -> Cow<'_, str> {
    if text.len() <= 2 * SCAN_BYTES {
        return Cow::Borrowed(text);
    }
    let mut head = SCAN_BYTES;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - SCAN_BYTES;
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    Cow::Owned(format!("{}\n{}", &text[..head], &text[tail..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(v: &[f32], name: &str) -> f32 {
        v[index(name).unwrap_or_else(|| panic!("no feature {name}"))]
    }

    #[test]
    fn shape_and_finiteness() {
        for text in [
            "",
            " ",
            "\n\n\n",
            "hi",
            "What is the capital of France?",
            "é漢字🙂",
            &"x".repeat(100_000),
            &"ü".repeat(50_000),
            &"1,2.3.4 ".repeat(10_000),
        ] {
            let f = features(text);
            assert!(f.iter().all(|x| x.is_finite()), "{text:.20}: {f:?}");
            assert_eq!(f, features(text), "deterministic");
        }
        assert_eq!(FEATURE_NAMES.len(), SIGNS.len());
    }

    #[test]
    fn recognises_quantities_code_and_intent() {
        let f = features("A shop sells 3 pens for $4.50 each. How much do 12 pens cost in total?");
        assert_eq!(get(&f, "log_nums"), 3f32.ln_1p(), "3, 4.50 and 12");
        assert!(get(&f, "kw_quant") >= 4f32.ln_1p(), "{f:?}");

        let f = features("Write a Python function that merges two sorted lists.");
        assert_eq!(get(&f, "code_task"), 1.0);
        assert!(get(&f, "kw_code") > 0.0);

        let f =
            features(r"Prove that $\int_0^1 x^2 dx = \frac{1}{3}$, then show that it is rational.");
        // "prove" once, plus the "show that" bonus.
        assert!(get(&f, "kw_proof") >= 1f32.ln_1p() - 1e-6 + 0.7, "{f:?}");
        assert!(get(&f, "latex") >= 3f32.ln_1p());
        assert!(get(&f, "math_sym") > 0.0);

        let f = features("fn main() { let v: Vec<u8> = vec![1, 2]; println!(\"{v:?}\"); }");
        assert!(
            get(&f, "code_punct") > 2.0 && get(&f, "code_kw") > 0.0,
            "{f:?}"
        );

        let f = features("hi, thank you!");
        assert!(get(&f, "kw_chat") > 0.5);
        assert_eq!(get(&f, "size"), 3f32.ln_1p());
        assert_eq!(get(&features(&"word ".repeat(100)), "size"), 16f32.ln_1p());
        assert_eq!(get(&features("Write a poem"), "kw_write"), 1f32.ln_1p());
    }

    #[test]
    fn numbers_and_words() {
        assert_eq!(count_numbers("1,250.75 and 3 but not x2 or a_1; 4.5.6"), 4);
        let w: Vec<&str> = Words::new("C++ and c# don't trade-offs 42x é").collect();
        assert_eq!(w, ["C++", "and", "c#", "don't", "trade-offs", "x"]);
        // `show that` counts only as words.
        assert_eq!(get(&features("show thatch"), "kw_proof"), 0.0);
    }

    #[test]
    fn long_inputs_scan_both_ends() {
        let text = format!("prove{} calculate", " filler".repeat(10_000));
        let f = features(&text);
        assert!(get(&f, "kw_proof") > 0.0);
        assert!(get(&f, "kw_reason") >= 2f32.ln_1p());
        let text = "é".repeat(3 * SCAN_BYTES);
        assert_eq!(features(&text).len(), NUM_FEATURES);
    }
}
