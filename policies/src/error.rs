//! Validation errors with the YAML path they are about.

use std::fmt;

/// One step of a YAML path: a mapping key or a sequence index.
///
/// The config crate maps a `[PathSeg]` to a line and column; keys are kept whole (a header
/// name such as `x-data.class` is one segment), so no re-parsing of the rendered string is
/// needed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathSeg {
    /// A mapping key.
    Key(String),
    /// A sequence index (0-based).
    Index(usize),
}

/// A configuration problem found while compiling policies, PII patterns, prices or limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// Where the problem is, from the document root, e.g.
    /// `policies.rules[3].when.header.x-foo`.
    pub path: Vec<PathSeg>,
    /// What is wrong, in one sentence without the path.
    pub message: String,
}

impl PolicyError {
    /// An error at `path`.
    pub fn new(path: &[PathSeg], message: impl Into<String>) -> Self {
        PolicyError {
            path: path.to_vec(),
            message: message.into(),
        }
    }

    /// The path rendered as `policies.rules[3].when.header.x-foo` (`<root>` when empty).
    pub fn path_string(&self) -> String {
        render_path(&self.path)
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path_string(), self.message)
    }
}

impl std::error::Error for PolicyError {}

/// Renders a path as `policies.rules[3].name` (empty = `<root>`).
pub fn render_path(path: &[PathSeg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            PathSeg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            PathSeg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    if out.is_empty() {
        out.push_str("<root>");
    }
    out
}

/// A path under construction; cheap enough for compile-time use (never per request).
#[derive(Debug, Clone, Default)]
pub(crate) struct Path(Vec<PathSeg>);

impl Path {
    pub(crate) fn root(keys: &[&str]) -> Self {
        Path(
            keys.iter()
                .map(|k| PathSeg::Key((*k).to_string()))
                .collect(),
        )
    }

    pub(crate) fn from_segs(segs: &[PathSeg]) -> Self {
        Path(segs.to_vec())
    }

    pub(crate) fn key(&self, k: &str) -> Self {
        let mut p = self.0.clone();
        p.push(PathSeg::Key(k.to_string()));
        Path(p)
    }

    pub(crate) fn idx(&self, i: usize) -> Self {
        let mut p = self.0.clone();
        p.push(PathSeg::Index(i));
        Path(p)
    }

    pub(crate) fn segs(&self) -> &[PathSeg] {
        &self.0
    }
}

/// Collects every error instead of stopping at the first.
#[derive(Debug, Default)]
pub(crate) struct Errors(pub(crate) Vec<PolicyError>);

impl Errors {
    pub(crate) fn push(&mut self, path: &Path, message: impl Into<String>) {
        self.0.push(PolicyError::new(path.segs(), message));
    }

    pub(crate) fn extend(&mut self, errs: Vec<PolicyError>) {
        self.0.extend(errs);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `", did you mean `x`?"` when a candidate is close to `word`, else `""`.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    let best = candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, c)) => format!(", did you mean `{c}`?"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_paths() {
        let p = Path::root(&["policies", "rules"])
            .idx(3)
            .key("when")
            .key("header")
            .key("x-foo");
        let e = PolicyError::new(p.segs(), "bad regex");
        assert_eq!(
            e.to_string(),
            "policies.rules[3].when.header.x-foo: bad regex"
        );
        assert_eq!(render_path(&[]), "<root>");
    }

    #[test]
    fn suggests_close_names() {
        assert_eq!(
            did_you_mean("locl", ["local", "remote"]),
            ", did you mean `local`?"
        );
        assert_eq!(did_you_mean("zzz", ["local", "remote"]), "");
    }
}
