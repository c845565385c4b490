//! Requests-per-minute and tokens-per-minute limits per key (GCRA, via `governor`).
//!
//! One keyed `governor` limiter exists per distinct quota, shared by every key that has that
//! quota; each key has its own cell state in it. Limits are passed on every call, so a
//! config reload that leaves a key's limits unchanged keeps its state, and a changed limit
//! starts the key afresh under the new quota.
//!
//! The default burst is the per-minute amount (a key may spend its whole minute at once, then
//! is paced at the steady rate); `burst_requests` / `burst_tokens` lower it.
//!
//! ```
//! use std::num::NonZeroU32;
//! use slmgate_policies::ratelimit::{RateLimiters, RateLimits};
//!
//! let limiters = RateLimiters::new();
//! let limits = RateLimits { requests_per_minute: NonZeroU32::new(2), ..RateLimits::default() };
//! assert!(limiters.check("alice", &limits, 0).is_ok());
//! assert!(limiters.check("alice", &limits, 0).is_ok());
//! let err = limiters.check("alice", &limits, 0).unwrap_err();
//! assert!(err.retry_after.is_some_and(|d| d.as_secs_f64() > 20.0)); // one request per 30 s
//! ```

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};

/// `rate_limit: { requests_per_minute: 60, tokens_per_minute: 100000 }`. Absent = unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Requests per minute.
    #[serde(default)]
    pub requests_per_minute: Option<NonZeroU32>,
    /// Tokens per minute (as counted by the caller at admission: e.g. prompt + max_tokens).
    #[serde(default)]
    pub tokens_per_minute: Option<NonZeroU32>,
    /// Largest request burst (default: `requests_per_minute`).
    #[serde(default)]
    pub burst_requests: Option<NonZeroU32>,
    /// Largest token burst (default: `tokens_per_minute`); a single request needing more
    /// tokens than this is never admitted.
    #[serde(default)]
    pub burst_tokens: Option<NonZeroU32>,
}

/// What was limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::Requests => "requests",
            LimitKind::Tokens => "tokens",
        })
    }
}

/// A refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// Which limit.
    pub kind: LimitKind,
    /// The limit, per minute.
    pub per_minute: u32,
    /// How long until the same request would be admitted (`Retry-After`); `None` when it
    /// never can be (more tokens than the burst allows).
    pub retry_after: Option<Duration>,
}

impl RateLimited {
    /// Whole seconds for a `Retry-After` header: rounded up, at least 1. `None` when waiting
    /// does not help.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after
            .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
            .map(|s| s.max(1))
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.retry_after_secs() {
            Some(s) => write!(
                f,
                "rate limit of {} {} per minute reached; retry in {s}s",
                self.per_minute, self.kind
            ),
            None => write!(
                f,
                "this request needs more {} than the limit of {} per minute allows at once",
                self.kind, self.per_minute
            ),
        }
    }
}

impl std::error::Error for RateLimited {}

/// Cells by key name, hashed with foldhash: the names come from the configuration (the
/// caller's authenticated key), never from request text, so SipHash's flooding protection
/// buys nothing on this per-request lookup.
type Keyed<C> = RateLimiter<
    String,
    DashMapStateStore<String, foldhash::fast::RandomState>,
    C,
    NoOpMiddleware<<C as Clock>::Instant>,
>;

/// (kind, per minute, burst) identifies one quota.
type QuotaKey = (LimitKind, u32, u32);

/// The limiter of each quota (a few per config: foldhash, not SipHash, on the request path).
type Quotas<C> = HashMap<QuotaKey, Arc<Keyed<C>>, foldhash::fast::RandomState>;

/// Rate-limit state for every key. Cheap `Clone` handle; keep one across config reloads.
pub struct RateLimiters<C: Clock = DefaultClock> {
    clock: C,
    limiters: Arc<RwLock<Quotas<C>>>,
}

impl<C: Clock + Clone> Clone for RateLimiters<C> {
    fn clone(&self) -> Self {
        RateLimiters {
            clock: self.clock.clone(),
            limiters: self.limiters.clone(),
        }
    }
}

impl<C: Clock> fmt::Debug for RateLimiters<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.limiters.read().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("RateLimiters").field("quotas", &n).finish()
    }
}

impl RateLimiters<DefaultClock> {
    /// Limiters on the real monotonic clock.
    pub fn new() -> Self {
        RateLimiters::with_clock(DefaultClock::default())
    }
}

impl Default for RateLimiters<DefaultClock> {
    fn default() -> Self {
        RateLimiters::new()
    }
}

impl<C: Clock + Clone> RateLimiters<C> {
    /// Limiters on `clock` (tests use `governor::clock::FakeRelativeClock`).
    pub fn with_clock(clock: C) -> Self {
        RateLimiters {
            clock,
            limiters: Arc::default(),
        }
    }

    fn limiter(&self, key: QuotaKey) -> Arc<Keyed<C>> {
        if let Some(l) = self
            .limiters
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            return l.clone();
        }
        let (_, per_minute, burst) = key;
        let mut map = self
            .limiters
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(key)
            .or_insert_with(|| {
                let quota = quota(per_minute, burst);
                Arc::new(RateLimiter::dashmap_with_clock_and_hasher(
                    quota,
                    self.clock.clone(),
                    foldhash::fast::RandomState::default(),
                ))
            })
            .clone()
    }

    /// Checks the request limit, then the token limit for `tokens` (0 = no token check), for
    /// `key`. A refused token check still counts the request.
    pub fn check(&self, key: &str, limits: &RateLimits, tokens: u32) -> Result<(), RateLimited> {
        // governor's keyed limiters look up a `&String`: one copy for both checks.
        let key = key.to_string();
        self.requests(&key, limits)?;
        self.tokens(&key, limits, tokens)
    }

    /// Counts one request for `key` against `limits.requests_per_minute`.
    fn requests(&self, key: &String, limits: &RateLimits) -> Result<(), RateLimited> {
        let Some(rpm) = limits.requests_per_minute else {
            return Ok(());
        };
        let burst = limits.burst_requests.unwrap_or(rpm);
        let l = self.limiter((LimitKind::Requests, rpm.get(), burst.get()));
        l.check_key(key).map_err(|nu| RateLimited {
            kind: LimitKind::Requests,
            per_minute: rpm.get(),
            retry_after: Some(nu.wait_time_from(self.clock.now())),
        })
    }

    /// Counts `tokens` for `key` against `limits.tokens_per_minute` (all or nothing).
    fn tokens(&self, key: &String, limits: &RateLimits, tokens: u32) -> Result<(), RateLimited> {
        let (Some(tpm), Some(n)) = (limits.tokens_per_minute, NonZeroU32::new(tokens)) else {
            return Ok(());
        };
        let burst = limits.burst_tokens.unwrap_or(tpm);
        let l = self.limiter((LimitKind::Tokens, tpm.get(), burst.get()));
        let refused = |retry_after| RateLimited {
            kind: LimitKind::Tokens,
            per_minute: tpm.get(),
            retry_after,
        };
        match l.check_key_n(key, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(nu)) => Err(refused(Some(nu.wait_time_from(self.clock.now())))),
            Err(_) => Err(refused(None)),
        }
    }

    /// Forgets keys whose state is back to fresh, and quotas no key uses any more (memory
    /// housekeeping; call now and then).
    pub fn retain_recent(&self) {
        let mut map = self
            .limiters
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, l| {
            l.retain_recent();
            l.shrink_to_fit();
            !l.is_empty()
        });
    }
}

/// `per_minute` cells per minute with bursts of `burst`.
fn quota(per_minute: u32, burst: u32) -> Quota {
    let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(per_minute).allow_burst(burst)
}
