//! PII detection and redaction.
//!
//! Built-in detectors favour precision over recall: every candidate found by a regex is then
//! checked (Luhn for cards, mod-97 and the registered length for IBANs, issued-format ranges
//! for SSNs, octet ranges for IPv4, `std`'s parser for IPv6) and its surroundings are looked at
//! so that dates, prices, version numbers, timestamps and order numbers are not reported.
//! National phone numbers are recognised only with separators (`555-123-4567`,
//! `020 7946 0958`); a bare run of digits is not a phone number unless it starts with `+`.
//!
//! ```
//! use slmgate_policies::pii::{PiiConfig, PiiDetector, PiiKind};
//!
//! let det = PiiDetector::new(&PiiConfig::default()).unwrap();
//! let text = "Mail bob@example.com or call +44 20 7946 0958, card 4111 1111 1111 1111.";
//! let kinds: Vec<PiiKind> = det.detect(text).into_iter().map(|f| f.kind).collect();
//! assert_eq!(kinds, [PiiKind::Email, PiiKind::Phone, PiiKind::CreditCard]);
//!
//! let (redacted, red) = det.redact(text);
//! assert_eq!(redacted, "Mail [EMAIL_1] or call [PHONE_1], card [CREDIT_CARD_1].");
//! assert_eq!(red.restore("Reply to [EMAIL_1]."), "Reply to bob@example.com.");
//! ```

pub mod checks;
mod redact;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::Ipv6Addr;
use std::ops::Range;
use std::sync::Arc;

use regex::{Regex, RegexBuilder, RegexSetBuilder};
use serde::Deserialize;

use crate::error::{Errors, Path, PolicyError};
pub use redact::{Redactions, StreamRestorer};

/// A kind of personal data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PiiKind {
    /// An e-mail address.
    Email,
    /// A phone number (international `+…`, or a common national format with separators).
    Phone,
    /// A payment card number (13–19 digits, Luhn-checked).
    CreditCard,
    /// An IBAN (mod-97 checked).
    Iban,
    /// A US social security number (`123-45-6789`).
    Ssn,
    /// An IPv4 address.
    Ipv4,
    /// An IPv6 address.
    Ipv6,
    /// An operator-defined pattern (`policies.pii.custom[].name`).
    Custom(Arc<str>),
}

impl PiiKind {
    /// The name used in YAML (`email`, `credit_card`, a custom name, …).
    pub fn name(&self) -> &str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::CreditCard => "credit_card",
            PiiKind::Iban => "iban",
            PiiKind::Ssn => "ssn",
            PiiKind::Ipv4 => "ipv4",
            PiiKind::Ipv6 => "ipv6",
            PiiKind::Custom(n) => n,
        }
    }

    /// The placeholder label: the name in upper case (`[CREDIT_CARD_1]`).
    pub fn label(&self) -> String {
        self.name().to_ascii_uppercase()
    }

    /// The built-in kind called `name`, if any.
    pub fn builtin(name: &str) -> Option<PiiKind> {
        BuiltinPii::ALL
            .iter()
            .map(|b| PiiKind::from(*b))
            .find(|k| k.name() == name)
    }

    /// Overlap priority: lower wins. Custom patterns first (the operator knows best), then the
    /// most specific shapes.
    fn priority(&self) -> u8 {
        match self {
            PiiKind::Custom(_) => 0,
            PiiKind::Email => 1,
            PiiKind::Iban => 2,
            PiiKind::CreditCard => 3,
            PiiKind::Ssn => 4,
            PiiKind::Ipv6 => 5,
            PiiKind::Ipv4 => 6,
            PiiKind::Phone => 7,
        }
    }
}

impl fmt::Display for PiiKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The built-in detectors, as named in `policies.pii.kinds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinPii {
    /// E-mail addresses.
    Email,
    /// Phone numbers.
    Phone,
    /// Payment card numbers.
    CreditCard,
    /// IBANs.
    Iban,
    /// US SSNs.
    Ssn,
    /// IPv4 addresses.
    Ipv4,
    /// IPv6 addresses.
    Ipv6,
}

impl BuiltinPii {
    /// Every built-in detector.
    pub const ALL: [BuiltinPii; 7] = [
        BuiltinPii::Email,
        BuiltinPii::Phone,
        BuiltinPii::CreditCard,
        BuiltinPii::Iban,
        BuiltinPii::Ssn,
        BuiltinPii::Ipv4,
        BuiltinPii::Ipv6,
    ];
}

impl From<BuiltinPii> for PiiKind {
    fn from(b: BuiltinPii) -> Self {
        match b {
            BuiltinPii::Email => PiiKind::Email,
            BuiltinPii::Phone => PiiKind::Phone,
            BuiltinPii::CreditCard => PiiKind::CreditCard,
            BuiltinPii::Iban => PiiKind::Iban,
            BuiltinPii::Ssn => PiiKind::Ssn,
            BuiltinPii::Ipv4 => PiiKind::Ipv4,
            BuiltinPii::Ipv6 => PiiKind::Ipv6,
        }
    }
}

fn all_builtin() -> Vec<BuiltinPii> {
    BuiltinPii::ALL.to_vec()
}

/// `policies.pii`: which built-in detectors run, plus operator-defined patterns.
///
/// ```yaml
/// pii:
///   kinds: [email, phone, credit_card, iban, ssn, ipv4, ipv6]   # default: all
///   custom:
///     - name: employee_id          # placeholder [EMPLOYEE_ID_1]; usable in `when: { pii: ... }`
///       regex: "\\bEMP-\\d{6}\\b"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiiConfig {
    /// Built-in detectors to run. Default: all.
    #[serde(default = "all_builtin")]
    pub kinds: Vec<BuiltinPii>,
    /// Extra named patterns.
    #[serde(default)]
    pub custom: Vec<CustomPii>,
}

impl Default for PiiConfig {
    fn default() -> Self {
        PiiConfig {
            kinds: all_builtin(),
            custom: Vec::new(),
        }
    }
}

/// An operator-defined PII pattern.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomPii {
    /// Lower-case name: letters, digits and `_`, starting with a letter.
    pub name: String,
    /// A regex (Rust `regex` syntax); every non-empty match is a finding.
    pub regex: String,
}

/// One piece of PII found in a text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Finding {
    /// What it is.
    pub kind: PiiKind,
    /// Where it is: a byte range of the scanned text, on character boundaries.
    pub span: Range<usize>,
}

/// A set of built-in kinds, one bit each: asked several times per scanned text, where a
/// hashed set cost more than the scan of a short prompt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct KindSet(u8);

// One bit per built-in kind must fit the set.
const _: () = assert!(BuiltinPii::ALL.len() <= u8::BITS as usize);

impl KindSet {
    fn of(kinds: &[BuiltinPii]) -> Self {
        KindSet(kinds.iter().fold(0, |bits, k| bits | Self::bit(*k)))
    }

    fn bit(kind: BuiltinPii) -> u8 {
        1 << (kind as u8)
    }

    fn contains(self, kind: BuiltinPii) -> bool {
        self.0 & Self::bit(kind) != 0
    }
}

/// Compiled detectors. Cheap to share (`Arc`) and `Sync`; detection allocates only its output.
#[derive(Debug, Clone)]
pub struct PiiDetector {
    enabled: KindSet,
    /// `None` only for [`PiiDetector::none`].
    re: Option<Arc<Builtins>>,
    custom: Vec<(PiiKind, Regex)>,
    /// All custom patterns in one set: one pass tells whether any can match, so ordinary
    /// text costs one search instead of one per pattern. `None` when there is at most one
    /// pattern, or the set exceeds the size limit (each pattern is then searched).
    custom_any: Option<regex::RegexSet>,
}

#[derive(Debug)]
struct Builtins {
    email: Regex,
    card: Regex,
    iban: Regex,
    ssn: Regex,
    ipv4: Regex,
    ipv6: Regex,
    phone_intl: Regex,
    phone_nanp: Regex,
    phone_trunk: Regex,
}

const EMAIL: &str = r"(?-u:\b)[A-Za-z0-9_][A-Za-z0-9._%+\-]*@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?-u:\b)";
const CARD: &str = r"(?-u:\b)[0-9](?:[ \-]?[0-9]){12,22}(?-u:\b)";
const IBAN: &str = r"(?-u:\b)[A-Z]{2}[0-9]{2}(?:[ ]?[A-Z0-9]){11,34}(?-u:\b)";
const SSN: &str = r"(?-u:\b)([0-9]{3})([\- ])([0-9]{2})([\- ])([0-9]{4})(?-u:\b)";
const IPV4: &str = r"(?-u:\b)(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?-u:\b)";
const IPV6: &str = r"[0-9A-Fa-f.]*:[0-9A-Fa-f.:]*:[0-9A-Fa-f.:]*";
const PHONE_INTL: &str = r"\+\(?[0-9]{1,3}\)?(?:[ .\-]?\(?[0-9]{1,5}\)?){1,7}";
const PHONE_NANP: &str =
    r"(?:\([0-9]{3}\)[ ]?|(?-u:\b)[0-9]{3}[ .\-])[0-9]{3}[ .\-][0-9]{4}(?-u:\b)";
const PHONE_TRUNK: &str = r"(?-u:\b)0[0-9]{1,4}(?:[ \-][0-9]{2,8}){1,5}(?-u:\b)";

/// Largest compiled program accepted for an operator regex.
const CUSTOM_REGEX_SIZE_LIMIT: usize = 1 << 20;

impl PiiDetector {
    /// Compiles `cfg`. Errors name paths under `policies.pii`.
    pub fn new(cfg: &PiiConfig) -> Result<Self, Vec<PolicyError>> {
        Self::new_at(cfg, &Path::root(&["policies", "pii"]))
    }

    pub(crate) fn new_at(cfg: &PiiConfig, base: &Path) -> Result<Self, Vec<PolicyError>> {
        let mut errs = Errors::default();
        let re = match Builtins::compile() {
            Ok(b) => Some(b),
            Err(e) => {
                errs.push(
                    base,
                    format!("internal: built-in pattern failed to compile: {e}"),
                );
                None
            }
        };
        let mut custom = Vec::new();
        let mut seen = HashSet::new();
        for (i, c) in cfg.custom.iter().enumerate() {
            let p = base.key("custom").idx(i);
            let name_ok = c
                .name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase())
                && c.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !name_ok {
                errs.push(
                    &p.key("name"),
                    format!(
                        "`{}` is not a valid name: use lower-case letters, digits and `_`, starting with a letter",
                        c.name
                    ),
                );
            } else if PiiKind::builtin(&c.name).is_some() || c.name == "any" {
                errs.push(
                    &p.key("name"),
                    format!("`{}` is a built-in kind; choose another name", c.name),
                );
            } else if !seen.insert(c.name.clone()) {
                errs.push(&p.key("name"), format!("duplicate name `{}`", c.name));
            }
            match RegexBuilder::new(&c.regex)
                .size_limit(CUSTOM_REGEX_SIZE_LIMIT)
                .build()
            {
                Ok(r) if r.is_match("") => errs.push(
                    &p.key("regex"),
                    "the regex matches the empty string; it must match at least one character",
                ),
                Ok(r) => custom.push((PiiKind::Custom(c.name.as_str().into()), r)),
                Err(e) => errs.push(&p.key("regex"), format!("invalid regex: {}", one_line(&e))),
            }
        }
        let custom_any = (custom.len() > 1)
            .then(|| {
                RegexSetBuilder::new(custom.iter().map(|(_, r)| r.as_str()))
                    .size_limit(CUSTOM_REGEX_SIZE_LIMIT)
                    .build()
                    .ok()
            })
            .flatten();
        match re {
            Some(re) if errs.is_empty() => Ok(PiiDetector {
                enabled: KindSet::of(&cfg.kinds),
                re: Some(Arc::new(re)),
                custom,
                custom_any,
            }),
            _ => Err(errs.0),
        }
    }

    /// A detector that finds nothing.
    pub fn none() -> Self {
        PiiDetector {
            enabled: KindSet::default(),
            re: None,
            custom: Vec::new(),
            custom_any: None,
        }
    }

    /// Returns true if and only if this detector can report `kind`.
    pub fn detects(&self, kind: &PiiKind) -> bool {
        match kind {
            PiiKind::Custom(n) => self.custom.iter().any(|(k, _)| k.name() == &**n),
            _ => BuiltinPii::ALL
                .iter()
                .any(|b| PiiKind::from(*b) == *kind && self.enabled.contains(*b)),
        }
    }

    /// The kind called `name` if this detector reports it (built-in and enabled, or custom).
    pub fn kind_named(&self, name: &str) -> Option<PiiKind> {
        if let Some(k) = PiiKind::builtin(name) {
            return self.detects(&k).then_some(k);
        }
        self.custom
            .iter()
            .find(|(k, _)| k.name() == name)
            .map(|(k, _)| k.clone())
    }

    /// Names of every kind this detector reports (for "did you mean").
    pub fn kind_names(&self) -> Vec<String> {
        let mut v: Vec<String> = BuiltinPii::ALL
            .iter()
            .filter(|b| self.enabled.contains(**b))
            .map(|b| PiiKind::from(*b).name().to_string())
            .collect();
        v.extend(self.custom.iter().map(|(k, _)| k.name().to_string()));
        v
    }

    /// Every piece of PII in `text`, in order, without overlaps (when two candidates overlap,
    /// custom patterns win, then the more specific kind, then the longer match).
    pub fn detect(&self, text: &str) -> Vec<Finding> {
        let mut cands: Vec<Finding> = Vec::new();
        let custom = match &self.custom_any {
            Some(set) if !set.is_match(text) => &[][..],
            _ => &self.custom[..],
        };
        for (kind, re) in custom {
            for m in re.find_iter(text) {
                if !m.is_empty() {
                    cands.push(Finding {
                        kind: kind.clone(),
                        span: m.range(),
                    });
                }
            }
        }
        let on = |b: BuiltinPii| self.enabled.contains(b);
        let Some(re) = self.re.as_deref() else {
            return resolve_overlaps(cands);
        };
        if on(BuiltinPii::Email) && text.contains('@') {
            find_emails(&re.email, text, &mut cands);
        }
        if on(BuiltinPii::Ipv6) && close_colons(text) {
            find_ipv6(&re.ipv6, text, &mut cands);
        }
        // Every other built-in kind needs a cluster of digits; one byte pass decides which
        // regexes can possibly match, so ordinary prose (dates, prices) costs almost nothing.
        let numeric = [
            BuiltinPii::CreditCard,
            BuiltinPii::Iban,
            BuiltinPii::Ssn,
            BuiltinPii::Ipv4,
            BuiltinPii::Phone,
        ];
        if !numeric.into_iter().any(on) {
            return resolve_overlaps(cands);
        }
        let digits = DigitProfile::of(text);
        if on(BuiltinPii::CreditCard) && digits.max_run >= 13 {
            find_cards(&re.card, text, &mut cands);
        }
        if on(BuiltinPii::Iban) && digits.max_run >= 10 {
            find_ibans(&re.iban, text, &mut cands);
        }
        if on(BuiltinPii::Ssn) && digits.max_run >= 9 {
            find_ssns(&re.ssn, text, &mut cands);
        }
        if on(BuiltinPii::Ipv4) && digits.dotted_quad {
            find_ipv4(&re.ipv4, text, &mut cands);
        }
        if on(BuiltinPii::Phone) && digits.max_run >= 8 {
            find_phones(re, text, &mut cands, digits.max_run >= 9);
        }
        resolve_overlaps(cands)
    }

    /// The distinct kinds found in `text` (for [`RequestFacts::pii`](crate::RequestFacts)).
    pub fn kinds_in(&self, text: &str) -> Vec<PiiKind> {
        let mut kinds: Vec<PiiKind> = self.detect(text).into_iter().map(|f| f.kind).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }

    /// Replaces every finding with a placeholder such as `[EMAIL_1]`. The same value gets the
    /// same placeholder. Use [`redact_into`](Self::redact_into) to share placeholders across the
    /// several texts of one request.
    pub fn redact(&self, text: &str) -> (String, Redactions) {
        let mut red = Redactions::default();
        let out = self.redact_into(text, &mut red);
        (out, red)
    }

    /// [`redact`](Self::redact) continuing the numbering and value map in `red`.
    pub fn redact_into(&self, text: &str, red: &mut Redactions) -> String {
        self.redact_kinds_into(text, None, red)
    }

    /// Like [`redact_into`](Self::redact_into) but only for `kinds` (`None` = every kind).
    pub fn redact_kinds_into(
        &self,
        text: &str,
        kinds: Option<&[PiiKind]>,
        red: &mut Redactions,
    ) -> String {
        let findings: Vec<Finding> = self
            .detect(text)
            .into_iter()
            .filter(|f| kinds.is_none_or(|ks| ks.contains(&f.kind)))
            .collect();
        if findings.is_empty() {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len() + 16 * findings.len());
        let mut last = 0;
        for f in findings {
            out.push_str(&text[last..f.span.start]);
            let placeholder = red.placeholder_for(&f.kind, &text[f.span.clone()], text);
            out.push_str(&placeholder);
            last = f.span.end;
        }
        out.push_str(&text[last..]);
        out
    }
}

impl Builtins {
    fn compile() -> Result<Self, regex::Error> {
        Ok(Builtins {
            email: Regex::new(EMAIL)?,
            card: Regex::new(CARD)?,
            iban: Regex::new(IBAN)?,
            ssn: Regex::new(SSN)?,
            ipv4: Regex::new(IPV4)?,
            ipv6: Regex::new(IPV6)?,
            phone_intl: Regex::new(PHONE_INTL)?,
            phone_nanp: Regex::new(PHONE_NANP)?,
            phone_trunk: Regex::new(PHONE_TRUNK)?,
        })
    }
}

/// Digit clusters of a text: runs of digits joined by at most [`DigitProfile::MAX_GAP`]
/// separator bytes (space, `-`, `.`, `(`, `)`), as every number-shaped PII is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct DigitProfile {
    /// The most digits in one cluster.
    max_run: usize,
    /// Some cluster has at least 4 digits and 3 dots (a possible IPv4 address).
    dotted_quad: bool,
}

impl DigitProfile {
    /// `+1 (555)`: a parenthesis, a separator and a parenthesis may sit between two groups.
    const MAX_GAP: usize = 3;

    fn of(text: &str) -> Self {
        // Byte classes: 0 other, 1 digit, 2 separator, 3 dot.
        const CLASS: [u8; 256] = {
            let mut t = [0u8; 256];
            let mut d = b'0';
            while d <= b'9' {
                t[d as usize] = 1;
                d += 1;
            }
            t[b' ' as usize] = 2;
            t[b'-' as usize] = 2;
            t[b'(' as usize] = 2;
            t[b')' as usize] = 2;
            t[b'.' as usize] = 3;
            t
        };
        let mut p = DigitProfile::default();
        let (mut digits, mut dots, mut gap, mut gap_dots) = (0usize, 0usize, 0usize, 0usize);
        for &b in text.as_bytes() {
            match CLASS[usize::from(b)] {
                1 => {
                    if gap > Self::MAX_GAP {
                        digits = 0;
                        dots = 0;
                    } else {
                        dots += gap_dots;
                    }
                    digits += 1;
                    gap = 0;
                    gap_dots = 0;
                    if digits > p.max_run {
                        p.max_run = digits;
                    }
                    p.dotted_quad |= digits >= 4 && dots >= 3;
                }
                0 => gap = Self::MAX_GAP + 1,
                class => {
                    gap += 1;
                    gap_dots += usize::from(class == 3);
                }
            }
        }
        p
    }
}

/// The first line of a regex error (its Display spans several lines).
pub(crate) fn one_line(e: &regex::Error) -> String {
    let s = e.to_string();
    match s.lines().last() {
        Some(l) if l.starts_with("error: ") => l["error: ".len()..].to_string(),
        _ => s.lines().next().unwrap_or("").to_string(),
    }
}

/// Keeps non-overlapping candidates, best first (priority, then length, then position).
fn resolve_overlaps(mut cands: Vec<Finding>) -> Vec<Finding> {
    if cands.len() <= 1 {
        return cands;
    }
    cands.sort_by(|a, b| {
        a.kind
            .priority()
            .cmp(&b.kind.priority())
            .then((b.span.end - b.span.start).cmp(&(a.span.end - a.span.start)))
            .then(a.span.start.cmp(&b.span.start))
    });
    // Accepted spans never overlap, so the accepted span with the greatest start before a
    // candidate's end is the only one that can overlap it.
    let mut taken: BTreeMap<usize, usize> = BTreeMap::new();
    let mut out = Vec::with_capacity(cands.len());
    for c in cands {
        let overlaps = taken
            .range(..c.span.end)
            .next_back()
            .is_some_and(|(_, &end)| end > c.span.start);
        if !overlaps {
            taken.insert(c.span.start, c.span.end);
            out.push(c);
        }
    }
    out.sort_by_key(|f| f.span.start);
    out
}

fn prev_char(text: &str, at: usize) -> Option<char> {
    text.get(..at).and_then(|s| s.chars().next_back())
}

fn next_char(text: &str, at: usize) -> Option<char> {
    text.get(at..).and_then(|s| s.chars().next())
}

/// The character after the one after `at` (for "`.` followed by a digit").
fn next2(text: &str, at: usize) -> Option<char> {
    text.get(at..).and_then(|s| s.chars().nth(1))
}

fn prev2(text: &str, at: usize) -> Option<char> {
    text.get(..at).and_then(|s| s.chars().rev().nth(1))
}

fn is_word(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

fn is_digit(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_digit())
}

/// True if the number continues past `end` (`1.2.3.4.5`, `12-34-5`, `4,5`).
fn continues_after(text: &str, end: usize) -> bool {
    let n = next_char(text, end);
    is_word(n) || (matches!(n, Some('.' | ',' | '-' | '/' | ':')) && is_digit(next2(text, end)))
}

/// True if the number continues before `start`, or is an amount or an identifier.
fn continues_before(text: &str, start: usize) -> bool {
    let p = prev_char(text, start);
    is_word(p)
        || matches!(
            p,
            Some('$' | '€' | '£' | '¥' | '#' | '+' | '@' | '\\' | '=')
        )
        || (matches!(p, Some('.' | ',' | '-' | '/' | ':')) && is_digit(prev2(text, start)))
}

/// True if the text before `start` is a separator preceded by a short alphanumeric token with
/// a digit (`DE89 3704 …`, `AB12-3456 …`): the number continues a longer grouped code.
fn after_code_group(text: &str, start: usize) -> bool {
    let Some(sep) = prev_char(text, start).filter(|c| matches!(c, ' ' | '-')) else {
        return false;
    };
    let before = &text[..start - sep.len_utf8()];
    let token: &str = before
        .rsplit(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or("");
    !token.is_empty() && token.len() <= 6 && token.bytes().any(|b| b.is_ascii_digit())
}

/// True if every digit of `s` is the same (`0000 0000 0000`).
fn one_repeated_digit(s: &str) -> bool {
    let mut digits = s.bytes().filter(u8::is_ascii_digit);
    match digits.next() {
        Some(first) => digits.all(|d| d == first),
        None => true,
    }
}

/// Runs `re` from every position a validation failed at, so a long bad candidate does not
/// hide a good one starting inside it. `validate` returns the accepted span.
fn scan(
    re: &Regex,
    text: &str,
    kind: PiiKind,
    out: &mut Vec<Finding>,
    validate: impl Fn(&str, Range<usize>) -> Option<Range<usize>>,
) {
    let mut pos = 0;
    while pos <= text.len() {
        let Some(m) = re.find_at(text, pos) else {
            break;
        };
        match validate(text, m.range()) {
            Some(span) if !span.is_empty() => {
                pos = span.end.max(m.start() + 1);
                out.push(Finding {
                    kind: kind.clone(),
                    span,
                });
            }
            _ => pos = m.start() + 1,
        }
        while pos < text.len() && !text.is_char_boundary(pos) {
            pos += 1;
        }
    }
}

/// File names such as `icon@2x.png` look like addresses.
const NOT_TLDS: [&str; 8] = ["png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico"];

fn find_emails(re: &Regex, text: &str, out: &mut Vec<Finding>) {
    for m in re.find_iter(text) {
        let s = m.as_str();
        let (local, domain) = s.split_once('@').unwrap_or((s, ""));
        let tld = domain.rsplit('.').next().unwrap_or("");
        if local.ends_with('.')
            || local.contains("..")
            || NOT_TLDS.iter().any(|t| tld.eq_ignore_ascii_case(t))
        {
            continue;
        }
        out.push(Finding {
            kind: PiiKind::Email,
            span: m.range(),
        });
    }
}

/// Splits a candidate into digit groups and the separators between them.
fn groups(s: &str) -> (Vec<(usize, &str)>, Vec<u8>) {
    let mut gs = Vec::new();
    let mut seps = Vec::new();
    let mut start = None;
    for (i, b) in s.bytes().enumerate() {
        if b.is_ascii_digit() {
            if start.is_none() {
                start = Some(i);
            }
        } else {
            if let Some(st) = start.take() {
                gs.push((st, &s[st..i]));
            }
            seps.push(b);
        }
    }
    if let Some(st) = start {
        gs.push((st, &s[st..]));
    }
    (gs, seps)
}

fn card_grouping_ok(lens: &[usize]) -> bool {
    match lens {
        [_] => true,
        [4, 6, 5] | [4, 6, 4] => true,
        [4, rest @ ..] => match rest.split_last() {
            Some((last, mid)) => mid.iter().all(|&l| l == 4) && (1..=4).contains(last),
            None => false,
        },
        _ => false,
    }
}

fn find_cards(re: &Regex, text: &str, out: &mut Vec<Finding>) {
    scan(re, text, PiiKind::CreditCard, out, |text, r| {
        if continues_before(text, r.start) || after_code_group(text, r.start) {
            return None;
        }
        let cand = &text[r.clone()];
        let (gs, seps) = groups(cand);
        if seps.windows(2).any(|w| w[0] != w[1]) {
            return None;
        }
        // The longest prefix of whole groups that is a card (a following number may have been
        // swallowed: "4111 1111 1111 1111 2024").
        for k in (1..=gs.len()).rev() {
            let (last_start, last) = gs[k - 1];
            let end = last_start + last.len();
            if k < gs.len() && continues_after(text, r.start + end) {
                continue;
            }
            if k == gs.len() && continues_after(text, r.end) {
                return None;
            }
            let digits: String = gs[..k].iter().map(|(_, g)| *g).collect();
            let lens: Vec<usize> = gs[..k].iter().map(|(_, g)| g.len()).collect();
            if (13..=19).contains(&digits.len())
                && matches!(digits.as_bytes()[0], b'2'..=b'6')
                && card_grouping_ok(&lens)
                && checks::luhn_valid(&digits)
            {
                return Some(r.start..r.start + end);
            }
        }
        None
    });
}

fn find_ibans(re: &Regex, text: &str, out: &mut Vec<Finding>) {
    scan(re, text, PiiKind::Iban, out, |text, r| {
        if is_word(prev_char(text, r.start)) {
            return None;
        }
        let cand = &text[r.clone()];
        let want = checks::iban_length(&cand[..2])?;
        // Cut after `want` alphanumerics; the cut must end a token.
        let mut n = 0;
        let mut end = None;
        for (i, b) in cand.bytes().enumerate() {
            if b != b' ' {
                n += 1;
                if n == want {
                    end = Some(i + 1);
                    break;
                }
            }
        }
        let end = end?;
        let iban = &cand[..end];
        if is_word(next_char(text, r.start + end)) {
            return None;
        }
        let parts: Vec<&str> = iban.split(' ').collect();
        let spaced_ok = parts.len() == 1
            || parts.split_last().is_some_and(|(last, init)| {
                init.iter().all(|p| p.len() == 4) && (1..=4).contains(&last.len())
            });
        (spaced_ok && checks::iban_valid(iban)).then_some(r.start..r.start + end)
    });
}

fn find_ssns(re: &Regex, text: &str, out: &mut Vec<Finding>) {
    for c in re.captures_iter(text) {
        let (Some(all), Some(a), Some(s1), Some(g), Some(s2), Some(n)) =
            (c.get(0), c.get(1), c.get(2), c.get(3), c.get(4), c.get(5))
        else {
            continue;
        };
        if s1.as_str() != s2.as_str()
            || continues_before(text, all.start())
            || continues_after(text, all.end())
            || !checks::ssn_parts_valid(a.as_str(), g.as_str(), n.as_str())
        {
            continue;
        }
        out.push(Finding {
            kind: PiiKind::Ssn,
            span: all.range(),
        });
    }
}

fn find_ipv4(re: &Regex, text: &str, out: &mut Vec<Finding>) {
    for m in re.find_iter(text) {
        let ok_octets = m.as_str().split('.').all(|o| {
            !(o.len() > 1 && o.starts_with('0')) && o.parse::<u16>().is_ok_and(|v| v <= 255)
        });
        // Only the few characters before the match matter ("version 1.2.3.4").
        let mut from = m.start().saturating_sub(12);
        while !text.is_char_boundary(from) {
            from += 1;
        }
        let before = text[from..m.start()].trim_end().to_ascii_lowercase();
        let versiony = matches!(prev_char(text, m.start()), Some('v' | 'V'))
            || before.ends_with("version")
            || before.ends_with("ver.");
        // A port (`10.0.0.1:8080`) or a list (`10.0.0.1,10.0.0.2`) may follow or precede.
        let p = prev_char(text, m.start());
        let n = next_char(text, m.end());
        let part_of_longer = is_word(p)
            || is_word(n)
            || (p == Some('.') && is_digit(prev2(text, m.start())))
            || (matches!(n, Some('.' | '-')) && is_digit(next2(text, m.end())));
        if !ok_octets || versiony || part_of_longer {
            continue;
        }
        out.push(Finding {
            kind: PiiKind::Ipv4,
            span: m.range(),
        });
    }
}

/// Whether `text` has two colons at most four bytes apart: every IPv6 address has (its
/// groups are at most four hex digits, and it has at least two colons), ordinary prose with
/// a colon ("Question 5: …") does not, and the IPv6 regex is the dearest to run.
fn close_colons(text: &str) -> bool {
    let mut last: Option<usize> = None;
    let colons = text.bytes().enumerate().filter(|(_, b)| *b == b':');
    for (i, _) in colons {
        if last.is_some_and(|l| i - l <= 5) {
            return true;
        }
        last = Some(i);
    }
    false
}

fn find_ipv6(re: &Regex, text: &str, out: &mut Vec<Finding>) {
    for m in re.find_iter(text) {
        let mut s = m.start();
        let mut e = m.end();
        while s < e && text.as_bytes()[s] == b'.' {
            s += 1;
        }
        // A sentence may end right after the address ("… at fe80::1.").
        let mut found = None;
        for _ in 0..3 {
            if s >= e {
                break;
            }
            let cand = &text[s..e];
            if cand.bytes().any(|b| b.is_ascii_digit()) && cand.parse::<Ipv6Addr>().is_ok() {
                found = Some(s..e);
                break;
            }
            if matches!(text.as_bytes()[e - 1], b'.' | b':') {
                e -= 1;
            } else {
                break;
            }
        }
        let Some(span) = found else { continue };
        if is_word(prev_char(text, span.start)) || is_word(next_char(text, span.end)) {
            continue;
        }
        out.push(Finding {
            kind: PiiKind::Ipv6,
            span,
        });
    }
}

/// `national`: some digit cluster is long enough (≥ 9) for a national format.
fn find_phones(re: &Builtins, text: &str, out: &mut Vec<Finding>, national: bool) {
    // International: `+`, 8–15 digits (E.164), country code not starting with 0.
    if text.contains('+') {
        for m in re.phone_intl.find_iter(text) {
            let mut s = m.as_str();
            // "(tel +44 20 7946 0958)": the closing parenthesis is not part of the number.
            while s.ends_with(')') && s.matches(')').count() > s.matches('(').count() {
                s = &s[..s.len() - 1];
            }
            let end = m.start() + s.len();
            let (gs, _) = groups(s);
            let digits: usize = gs.iter().map(|(_, g)| g.len()).sum();
            let balanced = s.matches('(').count() == s.matches(')').count();
            let p = prev_char(text, m.start());
            if (8..=15).contains(&digits)
                && !gs.first().is_some_and(|(_, g)| g.starts_with('0'))
                && balanced
                && !one_repeated_digit(s)
                && !is_word(p)
                && !matches!(p, Some('+' | '$' | '€' | '£' | '#' | '='))
                && !continues_after(text, end)
            {
                out.push(Finding {
                    kind: PiiKind::Phone,
                    span: m.start()..end,
                });
            }
        }
    }
    if !national {
        return;
    }
    // North American: (NXX) NXX-XXXX or NXX-NXX-XXXX (one separator kind).
    for m in re.phone_nanp.find_iter(text) {
        let s = m.as_str();
        let (gs, seps) = groups(s);
        if gs.len() != 3 {
            continue;
        }
        let consistent = s.starts_with('(') || seps.windows(2).all(|w| w[0] == w[1]);
        let first_ok = |g: &str| matches!(g.as_bytes().first(), Some(b'2'..=b'9'));
        if consistent
            && first_ok(gs[0].1)
            && first_ok(gs[1].1)
            && !continues_before(text, m.start())
            && !after_code_group(text, m.start())
            && !continues_after(text, m.end())
        {
            out.push(Finding {
                kind: PiiKind::Phone,
                span: m.range(),
            });
        }
    }
    // Trunk prefix 0 (most of Europe and elsewhere): 9–12 digits, one separator kind.
    scan(&re.phone_trunk, text, PiiKind::Phone, out, |text, r| {
        if continues_before(text, r.start) || after_code_group(text, r.start) {
            return None;
        }
        let cand = &text[r.clone()];
        // `00…` is an international prefix, not a trunk prefix.
        if cand.starts_with("00") || one_repeated_digit(cand) {
            return None;
        }
        let (gs, seps) = groups(cand);
        if seps.windows(2).any(|w| w[0] != w[1]) {
            return None;
        }
        for k in (2..=gs.len()).rev() {
            let (last_start, last) = gs[k - 1];
            let end = last_start + last.len();
            if continues_after(text, r.start + end) {
                continue;
            }
            let digits: usize = gs[..k].iter().map(|(_, g)| g.len()).sum();
            // 01 02 2024 … is a date.
            let datey = k >= 3
                && gs[0].1.len() <= 2
                && gs[1].1.len() <= 2
                && gs[2].1.len() == 4
                && (gs[2].1.starts_with("19") || gs[2].1.starts_with("20"));
            // 3-2-4 is the SSN shape.
            let lens: Vec<usize> = gs[..k].iter().map(|(_, g)| g.len()).collect();
            if (9..=12).contains(&digits) && !datey && lens != [3, 2, 4] {
                return Some(r.start..r.start + end);
            }
        }
        None
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ipv6_form_has_close_colons() {
        for addr in [
            "::",
            "::1",
            "fe80::1",
            "2001:db8:85a3:0:0:8a2e:370:7334",
            "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
            "::ffff:192.0.2.1",
            "1::",
            "abcd:ef01::",
        ] {
            assert!(addr.parse::<std::net::Ipv6Addr>().is_ok(), "{addr}");
            assert!(close_colons(&format!("host {addr} here")), "{addr}");
        }
        for prose in [
            "Question 5: what is it?",
            "Note: see below: ok",
            "no colon",
            "ratio 16:9",
        ] {
            assert!(!close_colons(prose), "{prose}");
        }
    }

    #[test]
    fn kind_set_holds_what_was_enabled() {
        let s = KindSet::of(&[BuiltinPii::Email, BuiltinPii::Ipv6]);
        for k in BuiltinPii::ALL {
            assert_eq!(
                s.contains(k),
                matches!(k, BuiltinPii::Email | BuiltinPii::Ipv6)
            );
        }
        assert!(BuiltinPii::ALL
            .into_iter()
            .all(|k| KindSet::of(&BuiltinPii::ALL).contains(k)));
    }

    #[test]
    fn digit_profile() {
        let p = DigitProfile::of("on 2024-03-15 for $1,234.56, v1.2.3");
        assert_eq!(
            p,
            DigitProfile {
                max_run: 8,
                dotted_quad: false
            }
        );
        assert_eq!(DigitProfile::of("+1 (555) 123-4567").max_run, 11);
        assert_eq!(DigitProfile::of("4111 1111 1111 1111").max_run, 16);
        assert_eq!(DigitProfile::of("NL91ABNA0417164300").max_run, 10);
        assert!(DigitProfile::of("at 8.8.8.8").dotted_quad);
        assert!(!DigitProfile::of("1.2.3 and 4").dotted_quad);
        assert_eq!(DigitProfile::of("12 x 34").max_run, 2);
    }
}
