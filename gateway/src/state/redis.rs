//! Rate limits and budgets shared by every instance through Redis.
//!
//! Each decision is one Lua script, run atomically by Redis ([`redis::Script`] sends
//! `EVALSHA` and falls back to `EVAL` once per connection):
//!
//! - [`GCRA`]: one key per (limit kind, quota, client key) holding the theoretical arrival
//!   time (TAT) in microseconds of Redis' own clock (`TIME`), so instances with skewed
//!   clocks agree. The semantics are those of the in-process limiter
//!   ([`slmgate_policies::ratelimit`]): burst = the per-minute amount unless lowered, a
//!   refused token check still counts the request, a changed quota starts afresh (the quota
//!   is part of the key).
//! - [`ADMIT`]: for every budget window the request is subject to, checks
//!   `spent + reserved + estimate ≤ limit`, then reserves the estimate in all of them.
//! - [`SETTLE`]: releases the reservation from the admission's windows and adds the real
//!   cost to the windows current at settlement.
//!
//! Budget windows are hashes `{prefix}budget:{key|team}:{name}:{day|month}:{window id}`
//! with the fields `spent` and `reserved` in nano-dollars; the window id is part of the key,
//! so windows roll over by themselves, and every write renews a TTL a little longer than the
//! window. Rate-limit keys expire once their TAT has passed.
//!
//! With `cache.exact.shared`, exact-cache answers are plain strings
//! `{prefix}cache:exact:{hex key}` = expiry (Unix ms), newline, backend name, newline,
//! completion JSON, set with the answer's TTL (`SET … PX`); Redis' own `maxmemory` policy
//! bounds their total size.
//!
//! Every call is bounded by `state.redis.timeout`; the connection is made on first use and
//! a [`ConnectionManager`] reconnects after failures, so Redis coming back needs no restart.
//! While it is down, a failed connect is retried at most once a second.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use slmgate_config::state::{OnError, RedisState};
use slmgate_policies::budget::{
    window_starts, BudgetExceeded, BudgetLedger, BudgetLimits, BudgetPeriod, BudgetScope, Budgeted,
};
use slmgate_policies::ratelimit::{LimitKind, RateLimited, RateLimits};
use tokio::sync::OnceCell;

use crate::metrics::{STATE_ERRORS, STATE_REDIS_UP};

/// GCRA over up to two limits (requests, then tokens). KEYS: one per limit. ARGV, three per
/// limit: emission interval (µs per unit), burst (units), units asked. Returns `{0, 0}` when
/// admitted, `{i, wait_µs}` when limit `i` refuses (`wait_µs` = -1: never, more than the
/// burst).
pub const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 1, #KEYS do
  local interval = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local n = tonumber(ARGV[3 * i])
  if n > burst then
    return {i, -1}
  end
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then
    tat = now
  end
  local new_tat = tat + interval * n
  local allow_at = new_tat - interval * burst
  if allow_at > now then
    return {i, math.ceil(allow_at - now)}
  end
  local ttl_ms = math.ceil((new_tat - now) / 1000) + 1000
  redis.call('SET', KEYS[i], string.format('%d', new_tat), 'PX', string.format('%d', ttl_ms))
end
return {0, 0}
";

/// Budget admission. KEYS: the budget windows. ARGV[1]: the estimate (nano-dollars, an
/// integer string); then two per key: the limit (nano-dollars, -1 = none) and the TTL
/// (seconds). Returns `{0, 0, 0}` when admitted (the estimate is then reserved in every
/// window), `{i, spent, reserved}` when window `i` refuses.
pub const ADMIT: &str = r"
local est = tonumber(ARGV[1])
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 * i])
  if limit >= 0 then
    local v = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
    local spent = tonumber(v[1]) or 0
    local reserved = tonumber(v[2]) or 0
    if spent + reserved + est > limit then
      return {i, spent, reserved}
    end
  end
end
for i = 1, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'reserved', ARGV[1])
  redis.call('EXPIRE', KEYS[i], ARGV[2 * i + 1])
end
return {0, 0, 0}
";

/// Budget settlement. KEYS[1..n]: the windows reserved at admission; KEYS[n+1..2n]: the
/// windows current now, which the cost goes to. ARGV: n, the estimate, the cost
/// (nano-dollars, integer strings), then the TTL (seconds) of each of the last n keys.
/// A reservation is never released below zero (a window that expired forgot it).
pub const SETTLE: &str = r"
local n = tonumber(ARGV[1])
local est = tonumber(ARGV[2])
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local left = redis.call('HINCRBY', KEYS[i], 'reserved', -est)
    if left < 0 then
      redis.call('HSET', KEYS[i], 'reserved', '0')
    end
  end
end
if tonumber(ARGV[3]) > 0 then
  for i = 1, n do
    redis.call('HINCRBY', KEYS[n + i], 'spent', ARGV[3])
    redis.call('EXPIRE', KEYS[n + i], ARGV[3 + i])
  end
end
return 1
";

/// Money is kept in nano-dollars, as in [`slmgate_policies::budget`].
const NANOS_PER_USD: f64 = 1e9;
const DAY_SECS: u64 = 86_400;
/// How long a failed connect keeps later requests from trying again.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);
/// At most one warning per this interval while Redis fails.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Attempts at a settlement (the spend must not get lost to a short outage).
const SETTLE_ATTEMPTS: u32 = 5;

fn to_nanos(usd: f64) -> u64 {
    // `as` saturates and maps NaN to 0; negative amounts count as 0.
    (usd.max(0.0) * NANOS_PER_USD).round() as u64
}

fn to_usd(nanos: i64) -> f64 {
    nanos.max(0) as f64 / NANOS_PER_USD
}

/// Redis did not answer (in time) or answered with an error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("shared state (Redis) unavailable: {0}")]
pub struct StateError(String);

/// The Redis side of [`crate::layers::limits::LimitState`]. One per `state.redis` config,
/// kept across reloads that leave that section unchanged.
pub struct RedisStore {
    cfg: RedisState,
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    /// Milliseconds since `started` before which no new connect is tried.
    connect_after_ms: AtomicU64,
    /// Milliseconds since `started` of the last warning (`u64::MAX`: none yet).
    warned_ms: AtomicU64,
    up: AtomicBool,
    started: Instant,
    gcra: redis::Script,
    admit: redis::Script,
    settle: redis::Script,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.cfg.prefix)
            .field("on_error", &self.cfg.on_error)
            .field("timeout", &self.cfg.timeout)
            .field("up", &self.up.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for `cfg`; connects on first use.
    ///
    /// # Errors
    /// When the URL does not parse.
    pub fn new(cfg: &RedisState) -> anyhow::Result<Self> {
        let client = redis::Client::open(cfg.url.as_str())
            .map_err(|e| anyhow::anyhow!("state.redis.url: {e}"))?;
        metrics::gauge!(STATE_REDIS_UP).set(0.0);
        Ok(RedisStore {
            cfg: cfg.clone(),
            client,
            conn: OnceCell::new(),
            connect_after_ms: AtomicU64::new(0),
            warned_ms: AtomicU64::new(u64::MAX),
            up: AtomicBool::new(false),
            started: Instant::now(),
            gcra: redis::Script::new(GCRA),
            admit: redis::Script::new(ADMIT),
            settle: redis::Script::new(SETTLE),
        })
    }

    /// The configuration it was made from (a reload with the same one keeps the store).
    pub fn config(&self) -> &RedisState {
        &self.cfg
    }

    /// `state.redis.on_error`.
    pub fn on_error(&self) -> OnError {
        self.cfg.on_error
    }

    /// Whether the last call succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Counts and (at most once per [`WARN_EVERY`]) logs a failure of `op`.
    fn failed(&self, op: &'static str, e: &str) -> StateError {
        metrics::counter!(STATE_ERRORS, "op" => op).increment(1);
        metrics::gauge!(STATE_REDIS_UP).set(0.0);
        self.up.store(false, Ordering::Relaxed);
        let now = self.elapsed_ms();
        let last = self.warned_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
        if due
            && self
                .warned_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                op,
                error = %e,
                on_error = ?self.cfg.on_error,
                "shared state (Redis) failed; further failures are counted in {STATE_ERRORS}"
            );
        }
        StateError(format!("{op}: {e}"))
    }

    fn succeeded(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            metrics::gauge!(STATE_REDIS_UP).set(1.0);
            if self.warned_ms.load(Ordering::Relaxed) != u64::MAX {
                tracing::info!("shared state (Redis) answers again");
            }
        }
    }

    /// The connection, made on first use (bounded by the timeout; after a failure, not
    /// tried again for [`RECONNECT_PAUSE`]).
    async fn conn(&self) -> Result<ConnectionManager, StateError> {
        if let Some(c) = self.conn.get() {
            return Ok(c.clone());
        }
        if self.elapsed_ms() < self.connect_after_ms.load(Ordering::Relaxed) {
            return Err(StateError(
                "connect: waiting before the next attempt".into(),
            ));
        }
        let timeout = self.cfg.timeout;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(RECONNECT_PAUSE);
        let made = tokio::time::timeout(
            timeout,
            self.conn.get_or_try_init(|| {
                ConnectionManager::new_with_config(self.client.clone(), config)
            }),
        )
        .await;
        match made {
            Ok(Ok(c)) => Ok(c.clone()),
            Ok(Err(e)) => {
                self.pause_connects();
                Err(self.failed("connect", &e.to_string()))
            }
            Err(_) => {
                self.pause_connects();
                Err(self.failed("connect", "timed out"))
            }
        }
    }

    fn pause_connects(&self) {
        let until = self
            .elapsed_ms()
            .saturating_add(RECONNECT_PAUSE.as_millis() as u64);
        self.connect_after_ms.store(until, Ordering::Relaxed);
    }

    /// Runs `inv` under the timeout.
    async fn run<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, StateError> {
        let mut conn = self.conn().await?;
        let r = tokio::time::timeout(self.cfg.timeout, inv.invoke_async::<T>(&mut conn)).await;
        self.outcome(op, r)
    }

    /// Runs `cmd` under the timeout.
    async fn query<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, StateError> {
        let mut conn = self.conn().await?;
        let r = tokio::time::timeout(self.cfg.timeout, cmd.query_async::<T>(&mut conn)).await;
        self.outcome(op, r)
    }

    fn outcome<T>(
        &self,
        op: &'static str,
        r: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, StateError> {
        match r {
            Ok(Ok(v)) => {
                self.succeeded();
                Ok(v)
            }
            Ok(Err(e)) => Err(self.failed(op, &e.to_string())),
            Err(_) => Err(self.failed(op, "timed out")),
        }
    }

    fn cache_key(&self, key: &[u8; 32]) -> String {
        use std::fmt::Write as _;
        let mut k = format!("{}cache:exact:", self.cfg.prefix);
        for b in key {
            let _ = write!(k, "{b:02x}");
        }
        k
    }

    /// The shared exact-cache entry under `key` (the in-process cache's key), with the time
    /// it has left. `Ok(None)`: not there, expired, or unreadable (e.g. written by another
    /// version). One `GET`: the value carries its own expiry.
    pub async fn cache_get(&self, key: &[u8; 32]) -> Result<Option<SharedAnswer>, StateError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.cache_key(key));
        let value: Option<Vec<u8>> = self.query("cache_get", &cmd).await?;
        Ok(value.and_then(|v| SharedAnswer::decode(v, SystemTime::now())))
    }

    /// Stores an exact-cache entry for `ttl` (whole milliseconds, at least one).
    pub async fn cache_set(
        &self,
        key: &[u8; 32],
        backend: &str,
        json: &[u8],
        ttl: Duration,
    ) -> Result<(), StateError> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let expires = SystemTime::now() + Duration::from_millis(ms);
        let Some(value) = SharedAnswer::encode(backend, json, expires) else {
            return Ok(());
        };
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.cache_key(key)).arg(value).arg("PX").arg(ms);
        self.query::<()>("cache_set", &cmd).await
    }

    fn rate_key(&self, kind: LimitKind, per_minute: u32, burst: u32, name: &str) -> String {
        format!("{}rate:{kind}:{per_minute}:{burst}:{name}", self.cfg.prefix)
    }

    /// Counts one request and `tokens` (0 = no token check) for `key` against `limits`, in
    /// Redis. The outer error is Redis failing; the inner one a refusal.
    pub async fn check_rate(
        &self,
        key: &str,
        limits: &RateLimits,
        tokens: u32,
    ) -> Result<Result<(), RateLimited>, StateError> {
        // (kind, per minute, burst, units)
        let mut checks: Vec<(LimitKind, u32, u32, u32)> = Vec::with_capacity(2);
        if let Some(rpm) = limits.requests_per_minute {
            let burst = limits.burst_requests.unwrap_or(rpm).get();
            checks.push((LimitKind::Requests, rpm.get(), burst, 1));
        }
        if let (Some(tpm), true) = (limits.tokens_per_minute, tokens > 0) {
            let burst = limits.burst_tokens.unwrap_or(tpm).get();
            checks.push((LimitKind::Tokens, tpm.get(), burst, tokens));
        }
        if checks.is_empty() {
            return Ok(Ok(()));
        }
        let mut inv = self.gcra.prepare_invoke();
        for &(kind, per_minute, burst, units) in &checks {
            let interval_us = 60e6 / f64::from(per_minute);
            inv.key(self.rate_key(kind, per_minute, burst, key))
                .arg(interval_us)
                .arg(burst)
                .arg(units);
        }
        let (which, wait_us): (i64, i64) = self.run("rate_limit", inv).await?;
        let Some(&(kind, per_minute, _, _)) = usize::try_from(which)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| checks.get(i))
        else {
            return Ok(Ok(()));
        };
        let retry_after = u64::try_from(wait_us).ok().map(Duration::from_micros);
        Ok(Err(RateLimited {
            kind,
            per_minute,
            retry_after,
        }))
    }

    fn window_key(&self, scope: BudgetScope, name: &str, w: &Window) -> String {
        let period = match w.period {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Month => "month",
        };
        format!("{}budget:{scope}:{name}:{period}:{}", self.cfg.prefix, w.id)
    }

    /// Admits a request that may cost up to `estimate_usd` against every budget of
    /// `subjects`, reserving the estimate in all of them, in Redis. The outer error is Redis
    /// failing; the inner one the first budget (in the order given; day before month) the
    /// request would exceed. `mirror` is the in-process ledger, which is told what this
    /// instance spends (the fallback while Redis fails).
    pub async fn admit(
        self: &Arc<Self>,
        subjects: &[Budgeted<'_>],
        estimate_usd: f64,
        now: SystemTime,
        mirror: &BudgetLedger,
    ) -> Result<Result<RedisReservation, BudgetExceeded>, StateError> {
        let est = to_nanos(estimate_usd);
        let windows = windows_at(now);
        let mut keys = Vec::with_capacity(subjects.len() * 2);
        let mut inv = self.admit.prepare_invoke();
        inv.arg(est.to_string());
        for s in subjects {
            for w in &windows {
                let key = self.window_key(s.scope, s.name, w);
                let limit = limit(s.limits, w.period)
                    .map_or(-1, |l| i64::try_from(to_nanos(l)).unwrap_or(i64::MAX));
                inv.key(&key).arg(limit).arg(w.ttl_secs);
                keys.push(key);
            }
        }
        let (which, spent, reserved): (i64, i64, i64) = self.run("budget_admit", inv).await?;
        let refused = usize::try_from(which).ok().and_then(|i| i.checked_sub(1));
        if let Some(i) = refused {
            let (s, w) = (&subjects[i / 2], &windows[i % 2]);
            return Ok(Err(BudgetExceeded {
                scope: s.scope,
                name: s.name.to_string(),
                period: w.period,
                limit_usd: limit(s.limits, w.period).unwrap_or(0.0),
                spent_usd: to_usd(spent),
                reserved_usd: to_usd(reserved),
                estimate_usd: to_usd(i64::try_from(est).unwrap_or(i64::MAX)),
                resets_at: w.ends,
            }));
        }
        Ok(Ok(RedisReservation {
            store: self.clone(),
            mirror: mirror.clone(),
            subjects: subjects
                .iter()
                .map(|s| (s.scope, s.name.to_string()))
                .collect(),
            keys,
            estimate: est,
            done: false,
        }))
    }

    /// Releases `r`'s reservation and adds `cost` nano-dollars to the windows current at
    /// `now`, retrying a few times when Redis fails.
    async fn settle_now(
        &self,
        keys: Vec<String>,
        subjects: Vec<(BudgetScope, String)>,
        estimate: u64,
        cost: u64,
        now: SystemTime,
    ) {
        let windows = windows_at(now);
        for attempt in 1..=SETTLE_ATTEMPTS {
            let mut inv = self.settle.prepare_invoke();
            for k in &keys {
                inv.key(k);
            }
            for (scope, name) in &subjects {
                for w in &windows {
                    inv.key(self.window_key(*scope, name, w));
                }
            }
            inv.arg(keys.len())
                .arg(estimate.to_string())
                .arg(cost.to_string());
            for _ in &subjects {
                for w in &windows {
                    inv.arg(w.ttl_secs);
                }
            }
            match self.run::<i64>("budget_settle", inv).await {
                Ok(_) => return,
                Err(e) if attempt == SETTLE_ATTEMPTS => {
                    tracing::error!(
                        error = %e,
                        "a budget settlement was lost: its estimate stays reserved until the window ends"
                    );
                }
                Err(_) => tokio::time::sleep(RECONNECT_PAUSE).await,
            }
        }
    }
}

/// One budget window at a point in time.
struct Window {
    period: BudgetPeriod,
    /// The window's first day (days since 1970): unique per day and per month.
    id: u64,
    /// When it ends.
    ends: SystemTime,
    /// Keys live this much longer than the window lasts at most (the day, or 31 days).
    ttl_secs: u64,
}

/// An exact-cache entry as kept in Redis: its expiry (Unix milliseconds), a newline, the
/// answering backend's name, a newline, the `chat.completion` JSON. Redis expires the key at
/// the same time (`PX`); the expiry in the value saves a `PTTL` per lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedAnswer {
    /// The backend that produced it.
    pub backend: String,
    /// The completion.
    pub json: bytes::Bytes,
    /// How long it is good for still (by this machine's clock).
    pub ttl_left: Duration,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl SharedAnswer {
    /// The stored form; `None` for a backend name with a newline (not stored).
    fn encode(backend: &str, json: &[u8], expires: SystemTime) -> Option<Vec<u8>> {
        if backend.contains('\n') {
            return None;
        }
        let head = format!("{}\n{backend}\n", unix_ms(expires));
        let mut v = Vec::with_capacity(head.len() + json.len());
        v.extend_from_slice(head.as_bytes());
        v.extend_from_slice(json);
        Some(v)
    }

    /// Reads a stored value at `now`; `None` when unreadable or expired.
    fn decode(v: Vec<u8>, now: SystemTime) -> Option<Self> {
        let v = bytes::Bytes::from(v);
        let first = v.iter().position(|&b| b == b'\n')?;
        let expires: u64 = std::str::from_utf8(&v[..first]).ok()?.parse().ok()?;
        let ttl_left = Duration::from_millis(expires.checked_sub(unix_ms(now))?);
        if ttl_left.is_zero() {
            return None;
        }
        let rest = &v[first + 1..];
        let second = first + 1 + rest.iter().position(|&b| b == b'\n')?;
        Some(SharedAnswer {
            backend: std::str::from_utf8(&v[first + 1..second]).ok()?.to_owned(),
            json: v.slice(second + 1..),
            ttl_left,
        })
    }
}

fn unix_days(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / DAY_SECS)
}

/// The day and month windows containing `now`.
fn windows_at(now: SystemTime) -> [Window; 2] {
    let (day, month) = window_starts(now);
    let next_month = window_starts(month + Duration::from_secs(32 * DAY_SECS)).1;
    [
        Window {
            period: BudgetPeriod::Day,
            id: unix_days(day),
            ends: day + Duration::from_secs(DAY_SECS),
            ttl_secs: 2 * DAY_SECS,
        },
        Window {
            period: BudgetPeriod::Month,
            id: unix_days(month),
            ends: next_month,
            ttl_secs: 32 * DAY_SECS,
        },
    ]
}

fn limit(limits: &BudgetLimits, period: BudgetPeriod) -> Option<f64> {
    match period {
        BudgetPeriod::Day => limits.daily_usd,
        BudgetPeriod::Month => limits.monthly_usd,
    }
}

/// An admitted request's hold on its budgets in Redis. [`settle`](Self::settle) it with the
/// real cost; dropping it unsettled releases the hold without cost. Both happen in a
/// background task (they need Redis, and are called from `Drop`).
#[derive(Debug)]
#[must_use = "settle the reservation with the real cost"]
pub struct RedisReservation {
    store: Arc<RedisStore>,
    mirror: BudgetLedger,
    subjects: Vec<(BudgetScope, String)>,
    keys: Vec<String>,
    estimate: u64,
    done: bool,
}

impl RedisReservation {
    /// The reserved amount, USD.
    pub fn estimate_usd(&self) -> f64 {
        to_usd(i64::try_from(self.estimate).unwrap_or(i64::MAX))
    }

    /// Releases the reservation and records the real cost `actual_usd`.
    pub fn settle(mut self, actual_usd: f64, now: SystemTime) {
        self.done = true;
        self.finish(to_nanos(actual_usd), now);
    }

    fn finish(&mut self, cost: u64, now: SystemTime) {
        let usd = to_usd(i64::try_from(cost).unwrap_or(i64::MAX));
        if cost > 0 {
            // The in-process ledger keeps this instance's spend: the fallback while Redis
            // fails starts from it rather than from zero.
            for (scope, name) in &self.subjects {
                self.mirror.restore_spent(*scope, name, usd, usd, now);
            }
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::error!("a budget settlement outside the runtime was lost");
            return;
        };
        let store = self.store.clone();
        let keys = std::mem::take(&mut self.keys);
        let subjects = std::mem::take(&mut self.subjects);
        let estimate = self.estimate;
        rt.spawn(async move {
            store.settle_now(keys, subjects, estimate, cost, now).await;
        });
    }
}

impl Drop for RedisReservation {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            self.finish(0, SystemTime::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    /// A store on the local Redis under a fresh prefix, or `None` (with a message) when no
    /// Redis answers on 127.0.0.1:6379.
    async fn store() -> Option<Arc<RedisStore>> {
        let cfg = RedisState {
            url: "redis://127.0.0.1:6379".into(),
            prefix: format!("slmgate-test:{}:", uuid::Uuid::new_v4().simple()),
            on_error: OnError::Open,
            timeout: Duration::from_secs(2),
        };
        let s = Arc::new(RedisStore::new(&cfg).expect("valid url"));
        if s.conn().await.is_err() {
            eprintln!("SKIPPED: no Redis answers on 127.0.0.1:6379");
            return None;
        }
        Some(s)
    }

    #[test]
    fn shared_answers_round_trip() {
        let now = SystemTime::now();
        let later = now + Duration::from_millis(1500);
        let v = SharedAnswer::encode("up", br#"{"a":"x\ny"}"#, later).unwrap();
        let a = SharedAnswer::decode(v.clone(), now).unwrap();
        assert_eq!(a.backend, "up");
        assert_eq!(&a.json[..], br#"{"a":"x\ny"}"#);
        assert!(
            a.ttl_left <= Duration::from_millis(1500) && a.ttl_left >= Duration::from_millis(1499),
            "{:?}",
            a.ttl_left
        );
        assert!(SharedAnswer::decode(v.clone(), later).is_none(), "expired");
        assert!(SharedAnswer::encode("a\nb", b"{}", later).is_none());
        assert!(SharedAnswer::decode(b"no newline".to_vec(), now).is_none());
        assert!(SharedAnswer::decode(b"x\nup\n{}".to_vec(), now).is_none());
    }

    #[tokio::test]
    async fn exact_cache_entries_are_shared_and_expire() {
        let Some(s) = store().await else { return };
        let k = [7u8; 32];
        assert_eq!(s.cache_get(&k).await.unwrap(), None);
        s.cache_set(&k, "up", b"{\"id\":1}", Duration::from_millis(300))
            .await
            .unwrap();
        let a = s.cache_get(&k).await.unwrap().expect("stored");
        assert_eq!(
            (a.backend.as_str(), &a.json[..]),
            ("up", &b"{\"id\":1}"[..])
        );
        assert!(a.ttl_left <= Duration::from_millis(300));
        // Another store on the same prefix (another instance) sees it.
        let other = RedisStore::new(s.config()).unwrap();
        assert!(other.cache_get(&k).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(s.cache_get(&k).await.unwrap(), None, "expired");
    }

    #[tokio::test]
    async fn gcra_admits_the_burst_then_paces() {
        let Some(s) = store().await else { return };
        let limits = RateLimits {
            requests_per_minute: NonZeroU32::new(2),
            ..RateLimits::default()
        };
        assert!(s.check_rate("a", &limits, 0).await.unwrap().is_ok());
        assert!(s.check_rate("a", &limits, 0).await.unwrap().is_ok());
        let e = s.check_rate("a", &limits, 0).await.unwrap().unwrap_err();
        assert_eq!(e.kind, LimitKind::Requests);
        // One request per 30 s.
        let wait = e.retry_after.unwrap().as_secs_f64();
        assert!(wait > 25.0 && wait <= 30.0, "{wait}");
        // Another key has its own cell.
        assert!(s.check_rate("b", &limits, 0).await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn gcra_tokens_count_all_or_nothing_and_never_above_the_burst() {
        let Some(s) = store().await else { return };
        let limits = RateLimits {
            requests_per_minute: NonZeroU32::new(100),
            tokens_per_minute: NonZeroU32::new(1000),
            burst_tokens: NonZeroU32::new(500),
            ..RateLimits::default()
        };
        let e = s.check_rate("k", &limits, 501).await.unwrap().unwrap_err();
        assert_eq!((e.kind, e.retry_after), (LimitKind::Tokens, None));
        assert!(s.check_rate("k", &limits, 300).await.unwrap().is_ok());
        let e = s.check_rate("k", &limits, 300).await.unwrap().unwrap_err();
        assert_eq!(e.kind, LimitKind::Tokens);
        // 100 tokens short at 1000/min: about 6 s.
        let wait = e.retry_after.unwrap().as_secs_f64();
        assert!(wait > 5.0 && wait <= 6.0, "{wait}");
        assert!(s.check_rate("k", &limits, 200).await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn gcra_holds_under_concurrency() {
        let Some(s) = store().await else { return };
        let limits = RateLimits {
            requests_per_minute: NonZeroU32::new(50),
            ..RateLimits::default()
        };
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.check_rate("c", &limits, 0).await.unwrap().is_ok() })
            })
            .collect();
        let mut admitted = 0;
        for t in tasks {
            admitted += usize::from(t.await.unwrap());
        }
        // The burst, plus what refills (one per 1.2 s) while the calls run.
        assert!((50..=51).contains(&admitted), "{admitted}");
    }

    #[tokio::test]
    async fn budget_reserve_settle_release() {
        let Some(s) = store().await else { return };
        let mirror = BudgetLedger::new();
        let lim = BudgetLimits {
            daily_usd: Some(1.0),
            monthly_usd: Some(1.5),
        };
        let now = SystemTime::now();
        let who = [Budgeted::key("k", &lim)];
        let r1 = s.admit(&who, 0.5, now, &mirror).await.unwrap().unwrap();
        let r2 = s.admit(&who, 0.5, now, &mirror).await.unwrap().unwrap();
        let e = s
            .admit(&who, 0.01, now, &mirror)
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!((e.scope, e.period), (BudgetScope::Key, BudgetPeriod::Day));
        assert_eq!((e.spent_usd, e.reserved_usd), (0.0, 1.0));
        assert!(e.resets_at > now && e.resets_at <= now + Duration::from_secs(DAY_SECS));
        let (keys1, est1) = (r1.keys.clone(), r1.estimate);
        let (keys2, est2) = (r2.keys.clone(), r2.estimate);
        let subjects = vec![(BudgetScope::Key, "k".to_string())];
        // Settle in the foreground (the reservations' own settlement runs in a task).
        std::mem::forget(r1);
        std::mem::forget(r2);
        s.settle_now(keys1, subjects.clone(), est1, 0, now).await;
        s.settle_now(keys2, subjects, est2, to_nanos(0.2), now)
            .await;
        let e = s
            .admit(&who, 0.81, now, &mirror)
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!((e.spent_usd, e.reserved_usd), (0.2, 0.0));
        // Settling through the reservation (in a task) gets there too.
        let r = s.admit(&who, 0.8, now, &mirror).await.unwrap().unwrap();
        r.settle(0.3, now);
        let mut conn = s.conn().await.unwrap();
        let day = s.window_key(BudgetScope::Key, "k", &windows_at(now)[0]);
        for _ in 0..100 {
            let (spent, reserved): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
                .arg(&day)
                .arg("spent")
                .arg("reserved")
                .query_async(&mut conn)
                .await
                .unwrap();
            if spent == Some(to_nanos(0.5) as i64) {
                assert_eq!(reserved, Some(0));
                // The in-process ledger mirrors the spend that went through reservations.
                let u = mirror.usage(BudgetScope::Key, "k", now);
                assert!((u.day_spent_usd - 0.3).abs() < 1e-9, "{u:?}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the settlement never arrived");
    }

    #[tokio::test]
    async fn team_budget_refuses_without_reserving_for_the_key() {
        let Some(s) = store().await else { return };
        let mirror = BudgetLedger::new();
        let none = BudgetLimits::default();
        let team = BudgetLimits {
            daily_usd: None,
            monthly_usd: Some(1.0),
        };
        let now = SystemTime::now();
        let a = s
            .admit(
                &[Budgeted::key("a", &none), Budgeted::team("eu", &team)],
                0.7,
                now,
                &mirror,
            )
            .await
            .unwrap()
            .unwrap();
        let e = s
            .admit(
                &[Budgeted::key("b", &none), Budgeted::team("eu", &team)],
                0.7,
                now,
                &mirror,
            )
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(
            (e.scope, e.name.as_str(), e.period),
            (BudgetScope::Team, "eu", BudgetPeriod::Month)
        );
        assert!((e.reserved_usd - 0.7).abs() < 1e-9);
        // Nothing was reserved for `b`.
        let mut conn = s.conn().await.unwrap();
        let w = &windows_at(now)[0];
        let b: Option<i64> = redis::cmd("HGET")
            .arg(s.window_key(BudgetScope::Key, "b", w))
            .arg("reserved")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(b, None);
        std::mem::forget(a);
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_fast_and_is_counted() {
        let cfg = RedisState {
            url: "redis://127.0.0.1:1".into(),
            prefix: "x:".into(),
            on_error: OnError::Closed,
            timeout: Duration::from_millis(250),
        };
        let s = Arc::new(RedisStore::new(&cfg).unwrap());
        let limits = RateLimits {
            requests_per_minute: NonZeroU32::new(2),
            ..RateLimits::default()
        };
        let t = Instant::now();
        assert!(s.check_rate("a", &limits, 0).await.is_err());
        // Within the pause, no new connect is even tried.
        assert!(s.check_rate("a", &limits, 0).await.is_err());
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(!s.is_up());
    }
}
