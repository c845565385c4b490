//! Placeholders for redacted values, and putting the values back.

use std::collections::HashMap;
use std::sync::Arc;

use super::PiiKind;

/// The placeholders of one request and the values they stand for.
///
/// Filled by [`PiiDetector::redact`](super::PiiDetector::redact) /
/// [`redact_into`](super::PiiDetector::redact_into); use [`restore`](Self::restore) on a
/// whole response or a [`StreamRestorer`] on a stream.
#[derive(Debug, Clone, Default)]
pub struct Redactions {
    /// placeholder → original value.
    originals: HashMap<String, String>,
    /// (kind, value) → placeholder, so a repeated value gets the same placeholder.
    assigned: HashMap<(PiiKind, String), String>,
    /// Last number used per label.
    counters: HashMap<String, u32>,
    /// Longest placeholder, in bytes.
    max_len: usize,
}

impl Redactions {
    /// Returns true if and only if nothing was redacted.
    pub fn is_empty(&self) -> bool {
        self.originals.is_empty()
    }

    /// Number of distinct redacted values.
    pub fn len(&self) -> usize {
        self.originals.len()
    }

    /// The (placeholder, original value) pairs, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.originals.iter().map(|(p, v)| (p.as_str(), v.as_str()))
    }

    /// The placeholder for `value` of `kind`, allocating the next number for its label.
    /// Numbers whose placeholder already occurs literally in `source` are skipped, so a
    /// restore never turns the user's own text into a value.
    pub(crate) fn placeholder_for(&mut self, kind: &PiiKind, value: &str, source: &str) -> String {
        let key = (kind.clone(), value.to_string());
        if let Some(p) = self.assigned.get(&key) {
            return p.clone();
        }
        let label = kind.label();
        let counter = self.counters.entry(label.clone()).or_insert(0);
        let placeholder = loop {
            *counter += 1;
            let p = format!("[{label}_{counter}]");
            if !source.contains(&p) {
                break p;
            }
        };
        self.max_len = self.max_len.max(placeholder.len());
        self.originals
            .insert(placeholder.clone(), value.to_string());
        self.assigned.insert(key, placeholder.clone());
        placeholder
    }

    /// `text` with every known placeholder replaced by its original value. Unknown
    /// placeholder-looking text is left as is.
    pub fn restore(&self, text: &str) -> String {
        if self.originals.is_empty() || !text.contains('[') {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('[') {
            out.push_str(&rest[..open]);
            let after = &rest[open..];
            let token_len = placeholder_len(after);
            match token_len.and_then(|n| self.originals.get(&after[..n]).map(|v| (n, v))) {
                Some((n, v)) => {
                    out.push_str(v);
                    rest = &after[n..];
                }
                None => {
                    out.push('[');
                    rest = &after[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// A restorer for a response that arrives in pieces.
    pub fn stream_restorer(&self) -> StreamRestorer {
        StreamRestorer {
            red: Arc::new(self.clone()),
            pending: String::new(),
        }
    }
}

/// Placeholder syntax: `[` then `[A-Z0-9_]+` then `]`. Returns the token's length if `s`
/// starts with one.
fn placeholder_len(s: &str) -> Option<usize> {
    let body = s.strip_prefix('[')?;
    let n = body
        .bytes()
        .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
        .count();
    (n > 0 && body.as_bytes().get(n) == Some(&b']')).then_some(n + 2)
}

/// Restores placeholders in a response that arrives in chunks (SSE deltas). Only a possible
/// partial placeholder at the end of a chunk is held back, so output lags input by at most
/// one placeholder's length.
///
/// ```
/// use slmgate_policies::pii::{PiiConfig, PiiDetector};
///
/// let det = PiiDetector::new(&PiiConfig::default()).unwrap();
/// let (_, red) = det.redact("write to ann@example.org");
/// let mut r = red.stream_restorer();
/// let mut out = String::new();
/// for chunk in ["Sent to [EM", "AIL_", "1] ok"] {
///     out += &r.push(chunk);
/// }
/// out += &r.finish();
/// assert_eq!(out, "Sent to ann@example.org ok");
/// ```
#[derive(Debug, Clone)]
pub struct StreamRestorer {
    red: Arc<Redactions>,
    pending: String,
}

impl StreamRestorer {
    /// Feeds one chunk; returns the text that is ready, restored.
    pub fn push(&mut self, chunk: &str) -> String {
        if self.red.is_empty() {
            return chunk.to_string();
        }
        self.pending.push_str(chunk);
        let keep_from = self.partial_start();
        let ready = self.red.restore(&self.pending[..keep_from]);
        self.pending.drain(..keep_from);
        ready
    }

    /// Ends the stream; returns whatever was held back.
    pub fn finish(self) -> String {
        self.red.restore(&self.pending)
    }

    /// Where a possible unfinished placeholder starts in `pending` (`len()` if none).
    fn partial_start(&self) -> usize {
        let p = &self.pending;
        let Some(open) = p.rfind('[') else {
            return p.len();
        };
        let tail = &p.as_bytes()[open + 1..];
        let could_continue = tail.len() + 1 < self.red.max_len
            && tail
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_');
        if could_continue {
            open
        } else {
            p.len()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Redactions {
        let mut r = Redactions::default();
        r.placeholder_for(&PiiKind::Email, "a@b.co", "");
        r.placeholder_for(&PiiKind::Phone, "+1 555 123 4567", "");
        r
    }

    #[test]
    fn same_value_same_placeholder() {
        let mut r = Redactions::default();
        let a = r.placeholder_for(&PiiKind::Email, "a@b.co", "");
        let b = r.placeholder_for(&PiiKind::Email, "c@d.co", "");
        let c = r.placeholder_for(&PiiKind::Email, "a@b.co", "");
        assert_eq!((a.as_str(), b.as_str()), ("[EMAIL_1]", "[EMAIL_2]"));
        assert_eq!(a, c);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn skips_placeholders_present_in_source() {
        let mut r = Redactions::default();
        let p = r.placeholder_for(&PiiKind::Email, "a@b.co", "see [EMAIL_1]");
        assert_eq!(p, "[EMAIL_2]");
        assert_eq!(r.restore("[EMAIL_1] [EMAIL_2]"), "[EMAIL_1] a@b.co");
    }

    #[test]
    fn restores_known_placeholders_only() {
        let r = sample();
        assert_eq!(
            r.restore("x [EMAIL_1] [PHONE_1] [EMAIL_9] [[EMAIL_1]] [email_1]"),
            "x a@b.co +1 555 123 4567 [EMAIL_9] [a@b.co] [email_1]"
        );
    }

    #[test]
    fn stream_holds_back_only_partials() {
        let r = sample();
        let mut s = r.stream_restorer();
        assert_eq!(s.push("hello [EM"), "hello ");
        assert_eq!(s.push("AIL_1] and [x"), "a@b.co and [x");
        assert_eq!(s.push("[PHONE_1"), "");
        assert_eq!(s.push("]!"), "+1 555 123 4567!");
        assert_eq!(s.push("["), "");
        assert_eq!(s.finish(), "[");
    }

    #[test]
    fn stream_releases_long_brackets() {
        let r = sample();
        let mut s = r.stream_restorer();
        assert_eq!(
            s.push("[ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
            "[ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        );
    }
}
