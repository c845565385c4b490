//! The `usage:` section: where one record per request is written, and the reference model
//! that prices the counterfactual ("what the same tokens would have cost on the large
//! model").
//!
//! ```yaml
//! usage:
//!   enabled: true
//!   database: sqlite://${SLMGATE_DATA_DIR:-.}/slmgate-usage.db   # or postgres://user@host/db
//!   queue: 10000          # records waiting for the writer; beyond that they are dropped (counted)
//!   batch: 256            # records per transaction
//!   flush_interval: 1s    # a partial batch is written after this long
//!   reference_model: gpt-4o   # default: the upstream model of the router's `remote` side
//!   keys_poll: 5s         # how often keys created/revoked at run time (/admin/keys) are re-read
//! ```
//!
//! Absent section = no usage records (the embedded default config turns them on with
//! SQLite).

use std::time::Duration;

use serde::Deserialize;

use crate::ctx::{key, Ctx};
use crate::schema::Config;

/// `usage:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    /// Write usage records (default true when the section is present).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `sqlite://path` (the embedded default; created if missing, WAL mode) or
    /// `postgres://user@host:port/db` (for several gateway instances sharing one database).
    #[serde(default = "default_database")]
    pub database: String,
    /// Records waiting for the writer. When full, new records are dropped and counted
    /// (`slmgate_usage_dropped_total`), never blocking a request. Default 10000.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Records per database transaction. Default 256.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// A partial batch is written after this long. Default 1s.
    #[serde(default = "default_flush", with = "humantime_serde")]
    pub flush_interval: Duration,
    /// The model whose prices give each request's counterfactual cost. Default: the
    /// upstream model of the router's `remote` side (or of the alias `remote`).
    #[serde(default)]
    pub reference_model: Option<String>,
    /// How often the keys created and revoked at run time (`/admin/keys`, stored in this
    /// database) are read again: a key created or revoked on another instance is known here
    /// within this interval (the instance that served the call knows at once). Default 5s.
    #[serde(default = "default_keys_poll", with = "humantime_serde")]
    pub keys_poll: Duration,
}

fn yes() -> bool {
    true
}
fn default_database() -> String {
    "sqlite://slmgate-usage.db".into()
}
fn default_queue() -> usize {
    10_000
}
fn default_batch() -> usize {
    256
}
fn default_flush() -> Duration {
    Duration::from_secs(1)
}
fn default_keys_poll() -> Duration {
    Duration::from_secs(5)
}

impl Default for Usage {
    fn default() -> Self {
        Usage {
            enabled: true,
            database: default_database(),
            queue: default_queue(),
            batch: default_batch(),
            flush_interval: default_flush(),
            reference_model: None,
            keys_poll: default_keys_poll(),
        }
    }
}

/// The database kind a `usage.database` URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    /// `sqlite:`.
    Sqlite,
    /// `postgres:` / `postgresql:`.
    Postgres,
}

/// The kind of database `url` names, or `None` for an unsupported scheme.
pub fn database_kind(url: &str) -> Option<DatabaseKind> {
    let scheme = url.split_once(':')?.0.to_ascii_lowercase();
    match scheme.as_str() {
        "sqlite" => Some(DatabaseKind::Sqlite),
        "postgres" | "postgresql" => Some(DatabaseKind::Postgres),
        _ => None,
    }
}

pub(crate) fn validate(cfg: &Config, ctx: &mut Ctx) {
    let Some(u) = &cfg.usage else {
        return;
    };
    let path = |f: &str| [key("usage"), key(f)];
    if database_kind(&u.database).is_none() {
        ctx.err(
            &path("database"),
            format!(
                "`{}` is not a database URL: use sqlite://<file> or postgres://user@host/db",
                u.database
            ),
        );
    } else if u.database.trim_end_matches('/').ends_with(':') {
        ctx.err(&path("database"), "names no database");
    }
    for (field, zero) in [
        ("queue", u.queue == 0),
        ("batch", u.batch == 0),
        ("flush_interval", u.flush_interval.is_zero()),
        ("keys_poll", u.keys_poll.is_zero()),
    ] {
        if zero {
            ctx.err(&path(field), "must be greater than zero");
        }
    }
    if let Some(m) = &u.reference_model {
        if m.is_empty() {
            ctx.err(&path("reference_model"), "must not be empty");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<Config, String> {
        crate::load_str_with_env(yaml, "t.yaml", &|_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_kinds() {
        let cfg = load("usage: {}").unwrap();
        let u = cfg.usage.unwrap();
        assert!(u.enabled);
        assert_eq!(u.queue, 10_000);
        assert_eq!(u.batch, 256);
        assert_eq!(u.flush_interval, Duration::from_secs(1));
        assert_eq!(u.keys_poll, Duration::from_secs(5));
        assert_eq!(database_kind(&u.database), Some(DatabaseKind::Sqlite));
        assert_eq!(
            database_kind("postgresql://postgres@127.0.0.1/test"),
            Some(DatabaseKind::Postgres)
        );
        assert_eq!(database_kind("mysql://x"), None);
        assert!(load("listen: 127.0.0.1:1").unwrap().usage.is_none());
    }

    #[test]
    fn bad_values_name_path_and_position() {
        let err =
            load("usage:\n  database: mysql://db\n  queue: 0\n  flush_interval: 0s\n").unwrap_err();
        assert!(
            err.contains("t.yaml:2:3: usage.database: `mysql://db` is not a database URL"),
            "{err}"
        );
        assert!(
            err.contains("t.yaml:3:3: usage.queue: must be greater than zero"),
            "{err}"
        );
        assert!(
            err.contains("usage.flush_interval: must be greater than zero"),
            "{err}"
        );
        let err = load("usage:\n  databse: sqlite://x\n").unwrap_err();
        assert!(err.contains("usage"), "{err}");
    }
}
