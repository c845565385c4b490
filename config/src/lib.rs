//! slmgate's configuration: a typed YAML schema (parsed with `serde_norway`, the maintained
//! fork of the deprecated `serde_yaml`), `${VAR}` interpolation, and validation that reports
//! *every* problem with its path, line and column.
//!
//! ```
//! let cfg = slmgate_config::load_str_with_env(
//!     "backends:\n  - name: up\n    kind: openai\n    base_url: http://127.0.0.1:9/v1\n\
//!      models:\n  - name: remote\n    backend: up\n    model: ${MODEL:-gpt-4o-mini}\n",
//!     "example.yaml",
//!     &|_| None,
//! )
//! .unwrap();
//! assert_eq!(cfg.models[0].model.as_deref(), Some("gpt-4o-mini"));
//! ```

#![warn(missing_docs)]

pub mod cache;
mod ctx;
mod interp;
mod load;
pub mod policy;
mod positions;
pub mod routing;
mod schema;
pub mod state;
pub mod telemetry;
pub mod usage;
mod validate;

use std::fmt;
use std::path::Path;

pub use interp::interpolate;
pub use schema::*;
/// The policy engine whose YAML types the config embeds.
pub use slmgate_policies as policies;

/// The embedded default config (`slmgate config default` prints it).
pub const DEFAULT_CONFIG_YAML: &str = include_str!("../default.yaml");

/// One problem in a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File name or other origin (`<embedded default>`).
    pub origin: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// YAML path such as `models[1].backend` (`<root>` for the document).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {}: {}", self.path, self.message)
    }
}

/// Every problem found in a config, in document order; `Display` prints one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Loads and validates a config file, interpolating from the process environment.
pub fn load_file(path: impl AsRef<Path>) -> Result<Config, ConfigErrors> {
    let path = path.as_ref();
    let origin = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            origin: origin.clone(),
            line: None,
            column: None,
            path: "<root>".into(),
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    load_file_text(&src, &origin)
}

/// Loads and validates the text of a config *file* read from `origin`: like [`load_str`],
/// but a file with no settings at all (empty, or only comments) is an error, not an empty
/// config. Such a file is far more likely caught mid-write (truncated before the new text
/// arrived) than meant, and starting or reloading on it would serve nothing.
pub fn load_file_text(src: &str, origin: &str) -> Result<Config, ConfigErrors> {
    if is_blank(src) {
        return Err(ConfigErrors(vec![ConfigError {
            origin: origin.to_string(),
            line: None,
            column: None,
            path: "<root>".into(),
            message: "the config file is empty (or only comments): nothing to load".into(),
        }]));
    }
    load_str(src, origin)
}

/// Returns true if and only if `src` is a YAML document with no value: empty, whitespace,
/// comments or a bare `---`.
fn is_blank(src: &str) -> bool {
    serde_norway::from_str::<serde_norway::Value>(src).is_ok_and(|v| v.is_null())
}

/// Loads and validates a config from a string, interpolating from the process environment.
pub fn load_str(src: &str, origin: &str) -> Result<Config, ConfigErrors> {
    load_str_with_env(src, origin, &|name| std::env::var(name).ok())
}

/// Loads and validates a config with an explicit environment (tests pass a closure).
pub fn load_str_with_env(
    src: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    load::load(src, origin, env)
}

/// The embedded default config, interpolated from the process environment.
pub fn default_config() -> Result<Config, ConfigErrors> {
    load_str(DEFAULT_CONFIG_YAML, "<embedded default>")
}
