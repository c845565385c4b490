//! USD budgets per key and per team, per UTC day and month: an in-memory ledger with
//! reserve-on-admission and settle-on-completion.
//!
//! A request is admitted only if, for every budget it is subject to,
//! `spent + reserved + estimate ≤ limit`; admission reserves the estimate in all of them at
//! once, under one lock, so concurrent requests cannot all slip through on the same remaining
//! amount. Completion settles with the real cost: the reservation is released and the real
//! cost is added to what was spent. Spend can therefore exceed a limit only by what admitted
//! requests cost beyond their estimates.
//!
//! The ledger keeps only amounts, keyed by name; limits are passed in on every call. A config
//! reload keeps the same [`BudgetLedger`] (it is a cheap `Clone` handle) and passes the new
//! limits, so spend survives reloads.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use slmgate_policies::budget::{BudgetLedger, BudgetLimits, Budgeted};
//!
//! let ledger = BudgetLedger::new();
//! let limits = BudgetLimits { daily_usd: Some(1.0), monthly_usd: None };
//! let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
//! let who = [Budgeted::key("alice", &limits)];
//!
//! let r = ledger.admit(&who, 0.6, now).unwrap();
//! assert!(ledger.admit(&who, 0.6, now).is_err()); // 0.6 reserved + 0.6 > 1.0
//! r.settle(0.25, now);                             // the request really cost 0.25
//! assert!(ledger.admit(&who, 0.6, now).is_ok());   // 0.25 + 0.6 ≤ 1.0
//! ```

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::Deserialize;
use smallvec::SmallVec;

use crate::error::{Errors, Path};
use crate::time::{from_unix_secs, month_index, month_start_day, rfc3339, unix_secs, DAY};
use crate::{NameMap, PathSeg, PolicyError};

/// Money is kept in nano-dollars so that sums are exact and comparisons never drift.
const NANOS_PER_USD: f64 = 1e9;

fn to_nanos(usd: f64) -> u64 {
    // `as` saturates and maps NaN to 0; negative amounts count as 0.
    (usd.max(0.0) * NANOS_PER_USD).round() as u64
}

fn to_usd(nanos: u64) -> f64 {
    nanos as f64 / NANOS_PER_USD
}

/// `budget: { daily_usd: 5, monthly_usd: 100 }` for a key or a team. Absent = unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetLimits {
    /// USD per UTC calendar day.
    #[serde(default)]
    pub daily_usd: Option<f64>,
    /// USD per UTC calendar month.
    #[serde(default)]
    pub monthly_usd: Option<f64>,
}

impl BudgetLimits {
    /// Checks that limits are finite and not negative; `path` is where the limits sit in the
    /// config (e.g. `keys[2].budget`).
    pub fn validate(&self, path: &[PathSeg]) -> Vec<PolicyError> {
        let base = Path::from_segs(path);
        let mut errs = Errors::default();
        for (name, v) in [
            ("daily_usd", self.daily_usd),
            ("monthly_usd", self.monthly_usd),
        ] {
            if let Some(v) = v.filter(|v| !v.is_finite() || *v < 0.0) {
                errs.push(&base.key(name), format!("{v} is not an amount ≥ 0"));
            }
        }
        errs.0
    }

    /// Returns true if and only if neither limit is set.
    pub fn is_unlimited(&self) -> bool {
        self.daily_usd.is_none() && self.monthly_usd.is_none()
    }

    fn limit(&self, period: BudgetPeriod) -> Option<f64> {
        match period {
            BudgetPeriod::Day => self.daily_usd,
            BudgetPeriod::Month => self.monthly_usd,
        }
    }
}

/// Whose budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BudgetScope {
    /// A client key.
    Key,
    /// A team.
    Team,
}

impl fmt::Display for BudgetScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BudgetScope::Key => "key",
            BudgetScope::Team => "team",
        })
    }
}

/// Which window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BudgetPeriod {
    /// The UTC calendar day.
    Day,
    /// The UTC calendar month.
    Month,
}

impl fmt::Display for BudgetPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BudgetPeriod::Day => "daily",
            BudgetPeriod::Month => "monthly",
        })
    }
}

/// One budget a request is subject to: a key's or a team's, with its current limits.
#[derive(Debug, Clone, Copy)]
pub struct Budgeted<'a> {
    /// Key or team.
    pub scope: BudgetScope,
    /// The key's or team's name.
    pub name: &'a str,
    /// Its limits.
    pub limits: &'a BudgetLimits,
}

impl<'a> Budgeted<'a> {
    /// A key's budget.
    pub fn key(name: &'a str, limits: &'a BudgetLimits) -> Self {
        Budgeted {
            scope: BudgetScope::Key,
            name,
            limits,
        }
    }

    /// A team's budget.
    pub fn team(name: &'a str, limits: &'a BudgetLimits) -> Self {
        Budgeted {
            scope: BudgetScope::Team,
            name,
            limits,
        }
    }
}

/// Admission refused: which budget, its limit and its state.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetExceeded {
    /// Key or team.
    pub scope: BudgetScope,
    /// The key's or team's name.
    pub name: String,
    /// Day or month.
    pub period: BudgetPeriod,
    /// The limit, USD.
    pub limit_usd: f64,
    /// Spent in the current window, USD.
    pub spent_usd: f64,
    /// Reserved by requests in flight, USD.
    pub reserved_usd: f64,
    /// This request's estimate, USD.
    pub estimate_usd: f64,
    /// When the window ends (next UTC midnight or first of the month).
    pub resets_at: SystemTime,
}

impl fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} `{}` {} budget of ${:.2} exhausted (${:.4} spent, ${:.4} reserved by requests in flight, this request may cost ${:.4}); resets at {}",
            self.scope,
            self.name,
            self.period,
            self.limit_usd,
            self.spent_usd,
            self.reserved_usd,
            self.estimate_usd,
            rfc3339(unix_secs(self.resets_at))
        )
    }
}

impl std::error::Error for BudgetExceeded {}

/// Spend of one key or team, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Spent today (UTC), USD.
    pub day_spent_usd: f64,
    /// Reserved today by requests in flight, USD.
    pub day_reserved_usd: f64,
    /// Spent this month (UTC), USD.
    pub month_spent_usd: f64,
    /// Reserved this month by requests in flight, USD.
    pub month_reserved_usd: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Window {
    /// Day index (days since epoch) or month index (months since January 1970).
    id: i64,
    spent: u64,
    reserved: u64,
}

impl Window {
    fn roll(&mut self, id: i64) {
        if self.id != id {
            *self = Window {
                id,
                spent: 0,
                reserved: 0,
            };
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Account {
    day: Window,
    month: Window,
}

impl Account {
    fn window(&mut self, p: BudgetPeriod) -> &mut Window {
        match p {
            BudgetPeriod::Day => &mut self.day,
            BudgetPeriod::Month => &mut self.month,
        }
    }
}

/// Every account ever used, and where each name's account is. Accounts are never removed, so
/// an index stays valid for the ledger's life: a reservation holds indices, not names.
#[derive(Debug, Default)]
struct Accounts {
    keys: NameMap<usize>,
    teams: NameMap<usize>,
    all: Vec<Account>,
}

impl Accounts {
    fn find(&self, scope: BudgetScope, name: &str) -> Option<usize> {
        match scope {
            BudgetScope::Key => self.keys.get(name),
            BudgetScope::Team => self.teams.get(name),
        }
        .copied()
    }

    /// The account's index, creating the account on first use (the name is copied only then).
    fn ensure(&mut self, scope: BudgetScope, name: &str) -> usize {
        if let Some(i) = self.find(scope, name) {
            return i;
        }
        let i = self.all.len();
        self.all.push(Account::default());
        match scope {
            BudgetScope::Key => self.keys.insert(name.to_string(), i),
            BudgetScope::Team => self.teams.insert(name.to_string(), i),
        };
        i
    }
}

/// A reservation's accounts: a key's and its team's fit inline.
type Held = SmallVec<[usize; 2]>;

/// The shared ledger. Cloning gives another handle to the same state.
#[derive(Debug, Clone, Default)]
pub struct BudgetLedger {
    inner: Arc<Mutex<Accounts>>,
}

/// Window ids at a point in time.
fn windows_at(now: SystemTime) -> (i64, i64) {
    let day = unix_secs(now).div_euclid(DAY);
    (day, month_index(day))
}

/// When the budget windows containing `now` began: the UTC day's and the UTC month's first
/// instant. Spend recorded since then (e.g. in a usage database) is what
/// [`BudgetLedger::restore_spent`] takes.
pub fn window_starts(now: SystemTime) -> (SystemTime, SystemTime) {
    let (day, month) = windows_at(now);
    (
        from_unix_secs(day * DAY),
        from_unix_secs(month_start_day(month) * DAY),
    )
}

impl BudgetLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        BudgetLedger::default()
    }

    fn lock(&self) -> MutexGuard<'_, Accounts> {
        // A panic while holding the lock cannot leave amounts half-updated (every update is a
        // few integer additions), so a poisoned lock is still consistent.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits a request that may cost up to `estimate_usd`, reserving that amount in every
    /// budget of `subjects`, or refuses it with the first budget it would exceed (in the
    /// order given; day before month). Budgets without a limit are still tracked.
    pub fn admit(
        &self,
        subjects: &[Budgeted<'_>],
        estimate_usd: f64,
        now: SystemTime,
    ) -> Result<Reservation, BudgetExceeded> {
        let est = to_nanos(estimate_usd);
        let (day, month) = windows_at(now);
        let mut accts = self.lock();
        let mut held = Held::new();
        for s in subjects {
            let i = accts.ensure(s.scope, s.name);
            held.push(i);
            let acct = &mut accts.all[i];
            acct.day.roll(day);
            acct.month.roll(month);
            for period in [BudgetPeriod::Day, BudgetPeriod::Month] {
                let Some(limit) = s.limits.limit(period) else {
                    continue;
                };
                let w = *acct.window(period);
                let need = w.spent.saturating_add(w.reserved).saturating_add(est);
                if need > to_nanos(limit) {
                    let resets = match period {
                        BudgetPeriod::Day => (day + 1) * DAY,
                        BudgetPeriod::Month => month_start_day(month + 1) * DAY,
                    };
                    return Err(BudgetExceeded {
                        scope: s.scope,
                        name: s.name.to_string(),
                        period,
                        limit_usd: limit,
                        spent_usd: to_usd(w.spent),
                        reserved_usd: to_usd(w.reserved),
                        estimate_usd: to_usd(est),
                        resets_at: from_unix_secs(resets),
                    });
                }
            }
        }
        // A budget named twice (a key and its team never are, but a caller may) is reserved
        // once per mention, and released the same way.
        for &i in &held {
            let acct = &mut accts.all[i];
            acct.day.reserved = acct.day.reserved.saturating_add(est);
            acct.month.reserved = acct.month.reserved.saturating_add(est);
        }
        Ok(Reservation {
            ledger: self.clone(),
            held,
            day,
            month,
            estimate: est,
            done: false,
        })
    }

    /// Adds spend recorded before this ledger existed to `scope`/`name`'s windows containing
    /// `now`: `day_usd` spent since [`window_starts`]' day, `month_usd` since its month (the
    /// month includes the day). A gateway calls it at startup with the current windows' spend
    /// from its usage records, so a restart does not reset budgets.
    pub fn restore_spent(
        &self,
        scope: BudgetScope,
        name: &str,
        day_usd: f64,
        month_usd: f64,
        now: SystemTime,
    ) {
        let (day, month) = windows_at(now);
        let mut accts = self.lock();
        let i = accts.ensure(scope, name);
        let acct = &mut accts.all[i];
        acct.day.roll(day);
        acct.month.roll(month);
        acct.day.spent = acct.day.spent.saturating_add(to_nanos(day_usd));
        acct.month.spent = acct.month.spent.saturating_add(to_nanos(month_usd));
    }

    /// What `scope`/`name` has spent and reserved in the windows containing `now`.
    pub fn usage(&self, scope: BudgetScope, name: &str, now: SystemTime) -> Usage {
        let (day, month) = windows_at(now);
        let accts = self.lock();
        let Some(a) = accts.find(scope, name).map(|i| accts.all[i]) else {
            return Usage::default();
        };
        let (d, m) = (a.day, a.month);
        let pick = |w: Window, id: i64| {
            if w.id == id {
                (w.spent, w.reserved)
            } else {
                (0, 0)
            }
        };
        let ((ds, dr), (ms, mr)) = (pick(d, day), pick(m, month));
        Usage {
            day_spent_usd: to_usd(ds),
            day_reserved_usd: to_usd(dr),
            month_spent_usd: to_usd(ms),
            month_reserved_usd: to_usd(mr),
        }
    }

    fn release(&self, r: &Reservation, actual: Option<(u64, SystemTime)>) {
        let mut accts = self.lock();
        for &i in &r.held {
            let Some(acct) = accts.all.get_mut(i) else {
                continue;
            };
            // A window that rolled over since admission already forgot this reservation.
            if acct.day.id == r.day {
                acct.day.reserved = acct.day.reserved.saturating_sub(r.estimate);
            }
            if acct.month.id == r.month {
                acct.month.reserved = acct.month.reserved.saturating_sub(r.estimate);
            }
            if let Some((cost, now)) = actual {
                // The money is spent when the request completes: count it in the windows
                // current then.
                let (day, month) = windows_at(now);
                acct.day.roll(day);
                acct.month.roll(month);
                acct.day.spent = acct.day.spent.saturating_add(cost);
                acct.month.spent = acct.month.spent.saturating_add(cost);
            }
        }
    }
}

/// An admitted request's hold on its budgets. [`settle`](Self::settle) it with the real cost;
/// dropping it unsettled releases the hold and records no cost (for requests that never
/// reached an upstream).
#[derive(Debug)]
#[must_use = "settle the reservation with the real cost"]
pub struct Reservation {
    ledger: BudgetLedger,
    /// Indices of the accounts it reserved in (see [`Accounts`]).
    held: Held,
    day: i64,
    month: i64,
    estimate: u64,
    done: bool,
}

impl Reservation {
    /// The reserved amount, USD.
    pub fn estimate_usd(&self) -> f64 {
        to_usd(self.estimate)
    }

    /// Releases the reservation and records the real cost `actual_usd`.
    pub fn settle(mut self, actual_usd: f64, now: SystemTime) {
        self.done = true;
        self.ledger
            .release(&self, Some((to_nanos(actual_usd), now)));
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.ledger.release(self, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::days_from_civil;

    fn t(y: i64, m: u32, d: u32, h: i64) -> SystemTime {
        from_unix_secs(days_from_civil(y, m, d) * DAY + h * 3600)
    }

    /// A daily limit of `usd`, no monthly one.
    fn daily(usd: f64) -> BudgetLimits {
        BudgetLimits {
            daily_usd: Some(usd),
            monthly_usd: None,
        }
    }

    #[test]
    fn reserve_settle_release() {
        let l = BudgetLedger::new();
        let lim = BudgetLimits {
            daily_usd: Some(1.0),
            monthly_usd: Some(1.5),
        };
        let now = t(2025, 5, 10, 12);
        let who = [Budgeted::key("k", &lim)];
        let r1 = l.admit(&who, 0.5, now).unwrap();
        let r2 = l.admit(&who, 0.5, now).unwrap();
        let e = l.admit(&who, 0.01, now).unwrap_err();
        assert_eq!((e.scope, e.period), (BudgetScope::Key, BudgetPeriod::Day));
        assert_eq!(e.reserved_usd, 1.0);
        assert_eq!(e.resets_at, t(2025, 5, 11, 0));
        drop(r1);
        r2.settle(0.2, now);
        let u = l.usage(BudgetScope::Key, "k", now);
        assert_eq!(u.day_spent_usd, 0.2);
        assert_eq!(u.day_reserved_usd, 0.0);
        // Next day: daily window is fresh, monthly keeps 0.2.
        let tomorrow = t(2025, 5, 11, 1);
        let r = l.admit(&who, 1.0, tomorrow).unwrap();
        r.settle(1.0, tomorrow);
        let e = l.admit(&who, 0.31, t(2025, 5, 12, 1)).unwrap_err();
        assert_eq!(e.period, BudgetPeriod::Month);
        assert_eq!(e.resets_at, t(2025, 6, 1, 0));
        assert!(e
            .to_string()
            .starts_with("key `k` monthly budget of $1.50 exhausted"));
        // A new month starts from zero.
        assert!(l.admit(&who, 1.0, t(2025, 6, 1, 0)).is_ok());
    }

    #[test]
    fn team_budget_is_shared_and_named() {
        let l = BudgetLedger::new();
        let none = BudgetLimits::default();
        let team = BudgetLimits {
            daily_usd: None,
            monthly_usd: Some(1.0),
        };
        let now = t(2025, 1, 31, 23);
        let a = l
            .admit(
                &[Budgeted::key("a", &none), Budgeted::team("eu", &team)],
                0.7,
                now,
            )
            .unwrap();
        let e = l
            .admit(
                &[Budgeted::key("b", &none), Budgeted::team("eu", &team)],
                0.7,
                now,
            )
            .unwrap_err();
        assert_eq!((e.scope, e.name.as_str()), (BudgetScope::Team, "eu"));
        // Nothing was reserved for `b` by the refused admission.
        assert_eq!(l.usage(BudgetScope::Key, "b", now), Usage::default());
        a.settle(0.7, now);
        assert_eq!(l.usage(BudgetScope::Key, "a", now).month_spent_usd, 0.7);
    }

    #[test]
    fn accounts_are_per_scope_and_released_by_index() {
        let l = BudgetLedger::new();
        let lim = daily(1.0);
        let now = t(2025, 3, 3, 3);
        // A key and a team of the same name are different accounts.
        let r1 = l
            .admit(
                &[Budgeted::key("x", &lim), Budgeted::team("x", &lim)],
                0.25,
                now,
            )
            .unwrap();
        let r2 = l.admit(&[Budgeted::key("y", &lim)], 0.5, now).unwrap();
        let reserved = |scope, name| l.usage(scope, name, now).day_reserved_usd;
        assert_eq!(reserved(BudgetScope::Key, "x"), 0.25);
        assert_eq!(reserved(BudgetScope::Team, "x"), 0.25);
        assert_eq!(reserved(BudgetScope::Key, "y"), 0.5);
        assert_eq!(reserved(BudgetScope::Team, "y"), 0.0);
        // Settling one reservation touches only its own accounts.
        r2.settle(0.125, now);
        assert_eq!(reserved(BudgetScope::Key, "x"), 0.25);
        assert_eq!(l.usage(BudgetScope::Key, "y", now).day_spent_usd, 0.125);
        drop(r1);
        assert_eq!(reserved(BudgetScope::Key, "x"), 0.0);
        assert_eq!(reserved(BudgetScope::Team, "x"), 0.0);
        assert_eq!(l.usage(BudgetScope::Team, "x", now), Usage::default());
    }

    #[test]
    fn settle_across_midnight_counts_in_the_new_day() {
        let l = BudgetLedger::new();
        let lim = daily(1.0);
        let who = [Budgeted::key("k", &lim)];
        let r = l.admit(&who, 0.9, t(2025, 2, 1, 23)).unwrap();
        let next = t(2025, 2, 2, 0);
        // The new day does not see the old day's reservation…
        let r2 = l.admit(&who, 0.9, next).unwrap();
        // …and settling the old one neither frees nor corrupts the new day's reservation.
        r.settle(0.5, next);
        let u = l.usage(BudgetScope::Key, "k", next);
        assert_eq!((u.day_spent_usd, u.day_reserved_usd), (0.5, 0.9));
        drop(r2);
    }

    #[test]
    fn restored_spend_counts_against_the_limits() {
        let ledger = BudgetLedger::new();
        let now = t(2025, 3, 15, 12);
        let (day, month) = window_starts(now);
        assert_eq!(day, t(2025, 3, 15, 0));
        assert_eq!(month, t(2025, 3, 1, 0));
        ledger.restore_spent(BudgetScope::Key, "k", 0.75, 2.0, now);
        let u = ledger.usage(BudgetScope::Key, "k", now);
        assert_eq!((u.day_spent_usd, u.month_spent_usd), (0.75, 2.0));
        let limits = daily(1.0);
        let who = [Budgeted::key("k", &limits)];
        assert!(ledger.admit(&who, 0.3, now).is_err(), "0.75 + 0.3 > 1");
        assert!(ledger.admit(&who, 0.2, now).is_ok());
        // The next day starts from zero again; the month keeps its spend.
        let u = ledger.usage(BudgetScope::Key, "k", t(2025, 3, 16, 1));
        assert_eq!((u.day_spent_usd, u.month_spent_usd), (0.0, 2.0));
        // Bad amounts count as nothing.
        ledger.restore_spent(BudgetScope::Team, "t", f64::NAN, -1.0, now);
        assert_eq!(ledger.usage(BudgetScope::Team, "t", now), Usage::default());
    }

    #[test]
    fn bad_amounts_do_not_panic() {
        let l = BudgetLedger::new();
        let lim = daily(1.0);
        let who = [Budgeted::key("k", &lim)];
        let r = l.admit(&who, f64::NAN, UNIX_EPOCH_PLUS).unwrap();
        r.settle(-3.0, UNIX_EPOCH_PLUS);
        assert!(l.admit(&who, f64::INFINITY, UNIX_EPOCH_PLUS).is_err());
        let errs = BudgetLimits {
            daily_usd: Some(-1.0),
            monthly_usd: Some(f64::NAN),
        }
        .validate(&[
            PathSeg::Key("keys".into()),
            PathSeg::Index(0),
            PathSeg::Key("budget".into()),
        ]);
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].path_string(), "keys[0].budget.daily_usd");
    }

    const UNIX_EPOCH_PLUS: SystemTime = SystemTime::UNIX_EPOCH;
}
