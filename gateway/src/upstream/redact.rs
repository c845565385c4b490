//! Keeping secrets out of logs: every secret the configuration holds, masked in any text.
//!
//! An upstream's error body may echo the credential it was sent (some providers quote the
//! `Authorization` header back in a 401, a misconfigured proxy its whole request in a 500).
//! The gateway never relays such text to clients (see [`super::openai`]); it logs it at
//! debug level for operators, through [`Secrets::redact`] first.
//!
//! ```
//! use slmgate_gateway::upstream::redact::Secrets;
//! let s = Secrets::new(["sk-live-123"]);
//! assert_eq!(s.redact("bad key sk-live-123"), "bad key [redacted]");
//! ```

use std::borrow::Cow;

/// What a secret is replaced with.
pub const MASK: &str = "[redacted]";

/// The configured secrets (backend `api_key`s and header values, the admin key, client
/// keys), longest first so a secret that contains another is masked whole.
#[derive(Debug, Default, Clone)]
pub struct Secrets {
    secrets: Vec<String>,
}

impl Secrets {
    /// The non-empty strings of `secrets`, deduplicated.
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .map(Into::into)
            .filter(|s| !s.is_empty())
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Secrets { secrets }
    }

    /// Every secret a configuration holds.
    pub fn from_config(cfg: &slmgate_config::Config) -> Self {
        let mut all: Vec<String> = Vec::new();
        for b in &cfg.backends {
            if let slmgate_config::BackendKind::OpenAi(o) = &b.kind {
                all.extend(o.api_key.iter().cloned());
                all.extend(o.headers.values().cloned());
            }
        }
        all.extend(cfg.admin.key.iter().cloned());
        all.extend(cfg.keys.iter().filter_map(|k| k.key.clone()));
        Secrets::new(all)
    }

    /// `text` with every secret replaced by [`MASK`].
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = Cow::Owned(out.replace(s.as_str(), MASK));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_secret_longest_first() {
        let s = Secrets::new(["abc", "abcdef", "", "zz"]);
        assert_eq!(
            s.redact("x abcdef y abc zz"),
            "x [redacted] y [redacted] [redacted]"
        );
        assert!(matches!(s.redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn collects_the_config_secrets() {
        let cfg = slmgate_config::load_str_with_env(
            r#"
backends:
  - name: up
    kind: openai
    base_url: http://127.0.0.1:9/v1
    api_key: sk-up
    headers: { x-extra: hdr-secret }
admin:
  key: adm-secret
keys:
  - name: a
    key: sk-client
"#,
            "t.yaml",
            &|_| None,
        )
        .expect("valid");
        let s = Secrets::from_config(&cfg);
        assert_eq!(
            s.redact("sk-up hdr-secret adm-secret sk-client"),
            "[redacted] [redacted] [redacted] [redacted]"
        );
    }
}
