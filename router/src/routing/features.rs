//! Cheap, deterministic features of a query text for the complexity scorer.
//!
//! [`features`] maps a text (and the conversation's turn count) to [`NUM_FEATURES`] numbers,
//! named in [`FEATURE_NAMES`] in the same order. They describe size (log-scaled, so that a
//! 100k-character prompt does not dwarf everything else), structure (lines, code fences,
//! code-like tokens, math and LaTeX), character mix (digits, upper case, punctuation, non-ASCII)
//! and intent (question words, instruction keywords such as "explain", "prove", "write a",
//! "step by step", multiple-choice options). The scorer standardises them with the means and
//! standard deviations of its training data, so their scales need not match.
//!
//! Pure and fast: one pass over the characters, plus a word and keyword scan (one hash
//! look-up per word) over at most [`SCAN_BYTES`] bytes from the start and the end of the
//! text (instructions sit at either end of a long prompt). A typical prompt of a few hundred
//! characters takes a few microseconds; a 100k-character one well under a millisecond.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Names of the features, in the order [`features`] returns them.
pub const FEATURE_NAMES: [&str; NUM_FEATURES] = [
    "log_chars",
    "log_words",
    "log_lines",
    "log_sentences",
    "avg_word_len",
    "code_fences",
    "code_token_share",
    "code_keywords",
    "math_symbols",
    "latex",
    "digit_share",
    "upper_share",
    "punct_share",
    "non_ascii_share",
    "question_marks",
    "starts_with_question",
    "kw_reasoning",
    "kw_code",
    "kw_writing",
    "kw_explain",
    "kw_simple",
    "kw_constraints",
    "multiple_choice",
    "log_turns",
];

/// Number of features.
pub const NUM_FEATURES: usize = 24;

/// The keyword scan reads at most this many bytes from each end of the text.
pub const SCAN_BYTES: usize = 8 * 1024;

/// Words that start a question.
const QUESTION_WORDS: &[&str] = &[
    "what", "who", "whom", "whose", "when", "where", "which", "why", "how", "is", "are", "was",
    "were", "do", "does", "did", "can", "could", "should", "would", "will", "may", "might", "has",
    "have", "shall",
];

/// Asks for derivation, proof or computation.
const KW_REASONING: &[&str] = &[
    "prove",
    "proof",
    "derive",
    "derivation",
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
    "optimise",
    "maximize",
    "minimize",
    "reason",
    "reasoning",
    "logic",
    "puzzle",
    "riddle",
    "estimate",
    "algorithm",
    "complexity",
];
const KW_REASONING_PHRASES: &[&str] = &[
    "step by step",
    "show that",
    "how many",
    "how much",
    "find the",
    "what is the value",
];

/// Programming.
const KW_CODE: &[&str] = &[
    "code",
    "function",
    "script",
    "program",
    "implement",
    "implementation",
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
    "unittest",
    "pandas",
    "numpy",
];

/// Long-form or creative writing.
const KW_WRITING: &[&str] = &[
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
    "script",
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
    "outline",
];
const KW_WRITING_PHRASES: &[&str] = &["write a", "write an", "write me", "come up with"];

/// Explanation and analysis.
const KW_EXPLAIN: &[&str] = &[
    "explain",
    "analyze",
    "analyse",
    "analysis",
    "compare",
    "contrast",
    "evaluate",
    "discuss",
    "describe",
    "elaborate",
    "critique",
    "justify",
    "implications",
    "tradeoffs",
    "trade-offs",
    "pros",
    "cons",
    "why",
];
const KW_EXPLAIN_PHRASES: &[&str] = &["difference between", "in detail", "how does", "how do"];

/// Short, look-up style tasks.
const KW_SIMPLE: &[&str] = &[
    "translate",
    "summarize",
    "summarise",
    "define",
    "definition",
    "synonym",
    "antonym",
    "spell",
    "capital",
    "list",
    "name",
    "hello",
    "hi",
    "thanks",
    "thank",
];
const KW_SIMPLE_PHRASES: &[&str] = &["what is", "who is", "who was", "when did", "when was"];

/// Constraints on the answer: complex instructions.
const KW_CONSTRAINTS: &[&str] = &[
    "must",
    "should",
    "without",
    "exactly",
    "only",
    "ensure",
    "format",
    "words",
    "sentences",
    "don't",
    "paragraphs",
    "bullet",
    "table",
    "requirements",
    "constraints",
    "include",
    "avoid",
];
const KW_CONSTRAINTS_PHRASES: &[&str] = &[
    "at least",
    "at most",
    "no more than",
    "do not",
    "make sure",
    "less than",
];

/// Tokens that mark code.
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
    "select",
    "from",
    "where",
    "int",
    "float",
    "bool",
    "string",
];

// Keyword categories (bits of `Entry::words`, indices of the counts).
const REASONING: usize = 0;
const CODE: usize = 1;
const WRITING: usize = 2;
const EXPLAIN: usize = 3;
const SIMPLE: usize = 4;
const CONSTRAINTS: usize = 5;
const CODE_KEYWORD: usize = 6;
const QUESTION: usize = 7;
const CATEGORIES: usize = 8;

/// What a lower-cased word means for the keyword counts.
#[derive(Default)]
struct Entry {
    /// Categories the word counts for on its own (bit per category).
    words: u16,
    /// Phrases starting with this word: the following words and the category.
    phrases: Vec<(Vec<&'static str>, usize)>,
}

/// The word → categories table, built once.
fn keyword_table() -> &'static HashMap<&'static str, Entry> {
    static TABLE: OnceLock<HashMap<&'static str, Entry>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t: HashMap<&'static str, Entry> = HashMap::new();
        let words: [(&[&'static str], usize); 8] = [
            (KW_REASONING, REASONING),
            (KW_CODE, CODE),
            (KW_WRITING, WRITING),
            (KW_EXPLAIN, EXPLAIN),
            (KW_SIMPLE, SIMPLE),
            (KW_CONSTRAINTS, CONSTRAINTS),
            (CODE_KEYWORDS, CODE_KEYWORD),
            (QUESTION_WORDS, QUESTION),
        ];
        for (list, c) in words {
            for w in list {
                t.entry(w).or_default().words |= 1 << c;
            }
        }
        let phrases: [(&[&'static str], usize); 5] = [
            (KW_REASONING_PHRASES, REASONING),
            (KW_WRITING_PHRASES, WRITING),
            (KW_EXPLAIN_PHRASES, EXPLAIN),
            (KW_SIMPLE_PHRASES, SIMPLE),
            (KW_CONSTRAINTS_PHRASES, CONSTRAINTS),
        ];
        for (list, c) in phrases {
            for p in list {
                let mut parts = p.split(' ');
                if let Some(first) = parts.next() {
                    t.entry(first)
                        .or_default()
                        .phrases
                        .push((parts.collect(), c));
                }
            }
        }
        t
    })
}

/// Computes the features of `text`, a conversation's query (typically the last user
/// message), with `turns` the number of user turns so far (0 and 1 both mean a single
/// turn). Deterministic; returns [`NUM_FEATURES`] finite values.
pub fn features(text: &str, turns: usize) -> Vec<f32> {
    let mut chars = 0usize;
    let mut non_space = 0usize;
    let mut digits = 0usize;
    let mut letters = 0usize;
    let mut upper = 0usize;
    let mut punct = 0usize;
    let mut non_ascii = 0usize;
    let mut math = 0usize;
    let mut latex = 0usize;
    let mut questions = 0usize;
    let mut sentences = 0usize;
    let mut lines = 0usize;
    let mut line_has_text = false;
    let mut prev = ' ';
    for c in text.chars() {
        chars += 1;
        if c == '\n' {
            if line_has_text {
                lines += 1;
            }
            line_has_text = false;
        } else if !c.is_whitespace() {
            line_has_text = true;
        }
        if !c.is_whitespace() {
            non_space += 1;
        }
        if c.is_ascii_digit() {
            digits += 1;
        }
        if c.is_alphabetic() {
            letters += 1;
            if c.is_uppercase() {
                upper += 1;
            }
        }
        if c.is_ascii_punctuation() {
            punct += 1;
        }
        if !c.is_ascii() {
            non_ascii += 1;
        }
        match c {
            '=' | '+' | '*' | '^' | '<' | '>' | '%' | '∑' | '∫' | '√' | 'π' | '≤' | '≥' | '≠'
            | '±' | '×' | '÷' | '∞' | '∂' | '∈' | '∀' | '∃' | '→' | '≈' | 'θ' | 'λ' | 'σ' | 'μ'
            | 'Δ' => math += 1,
            '$' => latex += 1,
            '?' => questions += 1,
            _ => {}
        }
        // A LaTeX command: a backslash followed by a letter.
        if prev == '\\' && c.is_ascii_alphabetic() {
            latex += 1;
        }
        if matches!(prev, '.' | '?' | '!') && c.is_whitespace() {
            sentences += 1;
        }
        prev = c;
    }
    if line_has_text {
        lines += 1;
    }
    if matches!(prev, '.' | '?' | '!') || (sentences == 0 && non_space > 0) {
        sentences += 1;
    }

    // Words: whitespace-separated (counted over the whole text); their length and whether
    // they look like code over the scanned view.
    let words = text.split_ascii_whitespace().count();
    let scan = scan_view(text);
    let mut scanned_words = 0usize;
    let mut word_chars = 0usize;
    let mut code_like = 0usize;
    for w in scan.split_whitespace() {
        scanned_words += 1;
        word_chars += w.chars().count().min(40);
        if looks_like_code(w) {
            code_like += 1;
        }
    }
    let fences = text.matches("```").count().div_ceil(2);

    // Keyword scan on the bounded view, lower-cased, tokenised into words (letters, digits
    // and `+#'-` inside a word, so `c++`, `c#`, `don't` and `trade-offs` stay whole).
    let lower = scan.to_lowercase();
    let tokens: Vec<&str> = lower
        .split(|c: char| !(c.is_alphanumeric() || matches!(c, '+' | '#' | '\'' | '-')))
        .map(|t| t.trim_matches(|c| c == '\'' || c == '-'))
        .filter(|t| !t.is_empty())
        .collect();
    let table = keyword_table();
    let mut counts = [0usize; CATEGORIES];
    for (i, t) in tokens.iter().enumerate() {
        let Some(entry) = table.get(t) else {
            continue;
        };
        for (c, count) in counts.iter_mut().enumerate() {
            if entry.words & (1 << c) != 0 {
                *count += 1;
            }
        }
        for (rest, c) in &entry.phrases {
            let next = &tokens[i + 1..];
            if next.len() >= rest.len() && next.iter().zip(rest.iter()).all(|(a, b)| a == b) {
                counts[*c] += 1;
            }
        }
    }
    let starts_question = tokens
        .first()
        .and_then(|t| table.get(t))
        .is_some_and(|e| e.words & (1 << QUESTION) != 0)
        || text.trim_end().ends_with('?');

    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f32 / b as f32 };
    let ln1p = |x: usize| (x as f32).ln_1p();
    let out = vec![
        ln1p(chars),
        ln1p(words),
        ln1p(lines),
        ln1p(sentences),
        ratio(word_chars, scanned_words).min(20.0),
        ln1p(fences),
        ratio(code_like, scanned_words),
        ln1p(counts[CODE_KEYWORD]),
        ln1p(math),
        ln1p(latex),
        ratio(digits, non_space),
        ratio(upper, letters),
        ratio(punct, non_space),
        ratio(non_ascii, non_space),
        ln1p(questions),
        f32::from(u8::from(starts_question)),
        ln1p(counts[REASONING]),
        ln1p(counts[CODE]),
        ln1p(counts[WRITING]),
        ln1p(counts[EXPLAIN]),
        ln1p(counts[SIMPLE]),
        ln1p(counts[CONSTRAINTS]),
        f32::from(u8::from(has_multiple_choice(&scan))),
        (turns.max(1) as f32).ln(),
    ];
    debug_assert_eq!(out.len(), NUM_FEATURES);
    out
}

/// The part of `text` the keyword scan reads: all of it, or its first and last
/// [`SCAN_BYTES`] bytes (cut at character boundaries) joined by a newline.
fn scan_view(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= 2 * SCAN_BYTES {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut head = SCAN_BYTES;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - SCAN_BYTES;
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    std::borrow::Cow::Owned(format!("{}\n{}", &text[..head], &text[tail..]))
}

/// A whitespace-separated word that looks like code: brackets with an identifier, an
/// assignment or comparison operator, `::`/`->`/`=>`, a call `f(`, or a dotted/underscored
/// identifier such as `os.path` or `snake_case`.
fn looks_like_code(w: &str) -> bool {
    let b = w.as_bytes();
    if b.len() < 2 {
        return matches!(w, "{" | "}" | ";" | "=");
    }
    // One pass over the bytes: operator pairs, brackets, and calls `f(`.
    let mut prev = 0u8;
    for &c in b {
        match (prev, c) {
            (b':', b':')
            | (b'-', b'>')
            | (b'=', b'>')
            | (b'=', b'=')
            | (b'!', b'=')
            | (b'+', b'=')
            | (b'&', b'&') => return true,
            (_, b'{' | b'}' | b'[' | b']' | b'<' | b'>') => return true,
            (p, b'(') if p.is_ascii_alphanumeric() => return true,
            _ => {}
        }
        prev = c;
    }
    let has_letter = b.iter().any(u8::is_ascii_alphabetic);
    if b[b.len() - 1] == b';' || (b[0] == b'#' && b.len() > 2 && b[1] != b'#') {
        return has_letter;
    }
    // snake_case or dotted identifiers (not sentence-ending periods, not numbers like 3.14).
    let core = w.trim_end_matches(['.', ',', ':', ';', '?', '!', ')', '"', '\'']);
    if core.contains('_') && has_letter {
        return true;
    }
    if let Some(p) = core.find('.') {
        let (a, rest) = (&core[..p], &core[p + 1..]);
        return a.len() >= 2
            && rest.len() >= 2
            && a.bytes().all(|c| c.is_ascii_alphanumeric())
            && rest.bytes().next().is_some_and(|c| c.is_ascii_lowercase())
            && !a.bytes().all(|c| c.is_ascii_digit());
    }
    false
}

/// Whether the text lists answer options: at least two lines starting with consecutive
/// option labels such as `A)`, `(B)`, `C.` or `D:`.
fn has_multiple_choice(text: &str) -> bool {
    let mut seen = [false; 6];
    for line in text.lines() {
        let t = line.trim_start().trim_start_matches(['(', '[']);
        let mut it = t.chars();
        let (Some(l), Some(sep)) = (it.next(), it.next()) else {
            continue;
        };
        if matches!(sep, ')' | '.' | ':' | ']') && ('A'..='F').contains(&l) {
            seen[(l as u8 - b'A') as usize] = true;
        }
    }
    seen.windows(2).any(|w| w[0] && w[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(v: &[f32], name: &str) -> f32 {
        let i = FEATURE_NAMES
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("no feature {name}"));
        v[i]
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
        ] {
            let f = features(text, 0);
            assert_eq!(f.len(), NUM_FEATURES);
            assert!(f.iter().all(|x| x.is_finite()), "{text:.20}: {f:?}");
            assert_eq!(f, features(text, 0), "deterministic");
        }
        assert_eq!(FEATURE_NAMES.len(), NUM_FEATURES);
    }

    #[test]
    fn recognises_code_math_and_intent() {
        let code = "Fix this:\n```python\ndef f(x):\n    return x_val + 1\n```\nWhy does it fail?";
        let f = features(code, 1);
        assert!(get(&f, "code_fences") > 0.0);
        assert!(get(&f, "code_token_share") > 0.1);
        assert!(get(&f, "code_keywords") > 0.0);
        assert!(get(&f, "kw_explain") > 0.0);
        assert!((get(&f, "log_lines") - 6f32.ln_1p()).abs() < 1e-6);

        let math = r"Prove that $\int_0^1 x^2 dx = \frac{1}{3}$ step by step.";
        let f = features(math, 1);
        assert!(get(&f, "latex") >= 3f32.ln_1p(), "{f:?}");
        assert!(get(&f, "math_symbols") > 0.0);
        assert!(get(&f, "kw_reasoning") >= 2f32.ln_1p());

        let simple = "What is the capital of France?";
        let f = features(simple, 1);
        assert_eq!(get(&f, "starts_with_question"), 1.0);
        assert!(get(&f, "kw_simple") > 0.0);
        assert_eq!(get(&f, "code_token_share"), 0.0);
        assert_eq!(get(&f, "kw_code"), 0.0);

        let mc = "Which is a mammal?\nA) shark\nB) whale\nC) trout\nAnswer with the letter.";
        assert_eq!(get(&features(mc, 1), "multiple_choice"), 1.0);
        assert_eq!(get(&features(simple, 1), "multiple_choice"), 0.0);

        assert!(get(&features("写一首关于春天的诗", 1), "non_ascii_share") > 0.9);
        assert!((get(&features("hi", 4), "log_turns") - 4f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn long_inputs_scan_both_ends() {
        let text = format!("explain{} prove", " filler".repeat(10_000));
        let f = features(&text, 1);
        assert!(get(&f, "kw_explain") > 0.0);
        assert!(get(&f, "kw_reasoning") > 0.0);
        // Multi-byte characters at the cut points do not panic.
        let text = "é".repeat(3 * SCAN_BYTES);
        assert_eq!(features(&text, 1).len(), NUM_FEATURES);
    }

    #[test]
    fn code_words() {
        for w in [
            "print(x)",
            "a==b",
            "std::vec",
            "x->y",
            "snake_case",
            "os.path",
            "{",
            "int;",
        ] {
            assert!(looks_like_code(w), "{w}");
        }
        for w in [
            "hello", "end.", "3.14", "(see", "U.S.", "e.g.", "it's", "#1",
        ] {
            assert!(!looks_like_code(w), "{w}");
        }
    }
}
