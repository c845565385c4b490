//! The `state:` section: where rate-limit cells and budget spend live.
//!
//! ```yaml
//! state:
//!   redis:
//!     url: redis://127.0.0.1:6379/0   # redis:// or rediss:// (TLS)
//!     prefix: "slmgate:"              # prepended to every key (default `slmgate:`)
//!     on_error: open                  # open (local limits) | closed (503); default open
//!     timeout: 250ms                  # bound on every Redis call (default 250ms)
//! ```
//!
//! Absent (the default) = state in process memory, per instance. With `redis`, every
//! instance pointing at the same Redis and prefix shares rate limits and budgets: admission
//! and settlement are single Lua scripts, so they are atomic across instances.

use std::time::Duration;

use serde::Deserialize;

use crate::ctx::{key, Ctx};
use crate::positions::Seg;
use crate::Config;

/// `state:`. Absent = in-process state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Shared state in Redis. Absent = each instance keeps its own state in memory.
    #[serde(default)]
    pub redis: Option<RedisState>,
}

/// `state.redis:`: shared rate limits and budgets.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisState {
    /// `redis://[user:password@]host[:port][/db]` or `rediss://…` for TLS.
    pub url: String,
    /// Prepended to every key, so several gateways (or test runs) can share one Redis.
    /// Default `slmgate:`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// What a request meets when Redis does not answer: `open` (default) checks it against
    /// this instance's own in-process limits and budgets; `closed` refuses it with 503.
    #[serde(default)]
    pub on_error: OnError,
    /// The longest any Redis call may take (connecting included); slower counts as an
    /// error. Default 250ms.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// `state.redis.on_error`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Fall back to this instance's in-process limits and budgets.
    #[default]
    Open,
    /// Refuse the request: 503 `server_error` with `Retry-After`.
    Closed,
}

fn default_prefix() -> String {
    "slmgate:".to_string()
}

fn default_timeout() -> Duration {
    Duration::from_millis(250)
}

/// Why `url` is not a Redis URL with a host, if it is not.
pub fn redis_url_problem(url: &str) -> Option<&'static str> {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"));
    let Some(rest) = rest else {
        return Some("is not a redis:// or rediss:// URL");
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("contains spaces or control characters");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() || host.starts_with(':') {
        return Some("has no host");
    }
    if let Some((_, port)) = host.rsplit_once(':').filter(|_| !host.ends_with(']')) {
        if port.parse::<u16>().is_err() {
            return Some("has an invalid port");
        }
    }
    let path = rest[authority.len()..]
        .split(['?', '#'])
        .next()
        .unwrap_or("");
    let db = path.trim_start_matches('/');
    if !db.is_empty() && db.parse::<u32>().is_err() {
        return Some("has a database that is not a number");
    }
    None
}

pub(crate) fn validate(cfg: &Config, ctx: &mut Ctx) {
    let Some(r) = &cfg.state.redis else {
        return;
    };
    let path = |field: &str| -> Vec<Seg> { vec![key("state"), key("redis"), key(field)] };
    if let Some(problem) = redis_url_problem(&r.url) {
        ctx.err(
            &path("url"),
            format!("`{}` {problem} (e.g. redis://127.0.0.1:6379)", r.url),
        );
    }
    if r.prefix.is_empty() {
        ctx.err(&path("prefix"), "must not be empty");
    }
    if r.timeout.is_zero() {
        ctx.err(&path("timeout"), "must be greater than zero");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_checks() {
        assert_eq!(redis_url_problem("redis://127.0.0.1:6379"), None);
        assert_eq!(redis_url_problem("redis://127.0.0.1:6379/2"), None);
        assert_eq!(redis_url_problem("rediss://u:p@cache.example.com"), None);
        assert_eq!(redis_url_problem("redis://[::1]:6379"), None);
        assert_eq!(
            redis_url_problem("http://127.0.0.1:6379"),
            Some("is not a redis:// or rediss:// URL")
        );
        assert_eq!(redis_url_problem("redis://"), Some("has no host"));
        assert_eq!(redis_url_problem("redis://:6379"), Some("has no host"));
        assert_eq!(
            redis_url_problem("redis://h:port"),
            Some("has an invalid port")
        );
        assert_eq!(
            redis_url_problem("redis://h/db"),
            Some("has a database that is not a number")
        );
    }
}
