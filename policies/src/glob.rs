//! A tiny glob: `*` matches any run of characters (including none and `/`), `?` exactly one
//! character; everything else is literal. Patterns without `*` or `?` compare exactly.
//!
//! Chosen over `globset` because model names, team names and paths need no character
//! classes or path-segment semantics, and matching is allocation-free.

/// A string matcher: exact values and glob patterns, any of which may match.
#[derive(Debug, Clone, Default)]
pub(crate) struct Matcher {
    exact: Vec<Box<str>>,
    globs: Vec<Box<str>>,
}

impl Matcher {
    pub(crate) fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Self {
        let mut m = Matcher::default();
        for p in patterns {
            if is_glob(p) {
                m.globs.push(p.into());
            } else {
                m.exact.push(p.into());
            }
        }
        m
    }

    /// Returns true if and only if `s` equals one exact value or matches one glob.
    pub(crate) fn matches(&self, s: &str) -> bool {
        self.exact.iter().any(|e| &**e == s) || self.globs.iter().any(|g| glob_match(g, s))
    }
}

/// Returns true if and only if `s` contains a wildcard (`*` or `?`).
pub(crate) fn is_glob(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// Length in bytes of the UTF-8 character starting with byte `b`.
fn char_len(b: u8) -> usize {
    match b {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xff => 4,
        // A continuation byte never starts a character of a `&str`; step one byte anyway.
        _ => 1,
    }
}

/// Returns true if and only if `text` matches `pattern` as a whole.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0usize, 0usize);
    // Where to resume after the last `*`: (pattern index after it, text index it covers to).
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                pi += 1;
                star = Some((pi, ti));
                continue;
            }
            Some(b'?') => {
                pi += 1;
                ti += char_len(t[ti]);
                continue;
            }
            Some(&c) if c == t[ti] => {
                pi += 1;
                ti += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, st)) if st < t.len() => {
                let next = st + char_len(t[st]);
                star = Some((sp, next));
                pi = sp;
                ti = next;
            }
            _ => return false,
        }
    }
    while p.get(pi) == Some(&b'*') {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("gpt-4*", "gpt-4o"));
        assert!(glob_match("gpt-4*", "gpt-4"));
        assert!(!glob_match("gpt-4*", "gpt-3.5"));
        assert!(glob_match("*", ""));
        assert!(glob_match("/v1/*", "/v1/chat/completions"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("a?c", "aéc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*a*b*c", "xxaxxbxxc"));
        assert!(!glob_match("*a*b*c", "xxaxxbxxcx"));
        assert!(glob_match("é*", "été"));
        assert!(!glob_match("abc", "abcd"));
        assert!(glob_match("**x", "yyx"));
    }

    #[test]
    fn matcher_mixes_exact_and_globs() {
        let m = Matcher::new(["gpt-4o", "claude-*"]);
        assert!(m.matches("gpt-4o"));
        assert!(m.matches("claude-3"));
        assert!(!m.matches("gpt-4o-mini"));
    }
}
