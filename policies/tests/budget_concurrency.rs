//! 64 threads hammering one key's budget: spend never exceeds the limit by more than what the
//! admitted requests cost beyond their estimates, and no reservation leaks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, UNIX_EPOCH};

use slmgate_policies::budget::{BudgetLedger, BudgetLimits, BudgetPeriod, BudgetScope, Budgeted};

const THREADS: u64 = 64;
const ATTEMPTS: u64 = 200;

/// A deterministic per-thread pseudo-random sequence (xorshift).
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Runs the hammer; `overrun` makes some requests cost more than estimated. Returns
/// (spent, reserved, sum of cost beyond estimates, admitted).
fn hammer(limit: f64, overrun: bool) -> (f64, f64, f64, u64) {
    let ledger = BudgetLedger::new();
    let limits = BudgetLimits {
        daily_usd: Some(limit),
        monthly_usd: Some(limit * 10.0),
    };
    let team = BudgetLimits::default();
    let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    // Nano-dollars, so the sum is exact.
    let excess_nanos = Arc::new(AtomicU64::new(0));
    let admitted = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(THREADS as usize));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (ledger, excess, admitted, start) = (
                ledger.clone(),
                excess_nanos.clone(),
                admitted.clone(),
                start.clone(),
            );
            thread::spawn(move || {
                let mut rng = 0x9e37_79b9_7f4a_7c15 ^ (t + 1);
                start.wait();
                for _ in 0..ATTEMPTS {
                    // Estimates $0.001–$0.050, in whole nano-dollars.
                    let est_n = 1_000_000 + next(&mut rng) % 49_000_001;
                    let est = est_n as f64 / 1e9;
                    let who = [Budgeted::key("shared", &limits), Budgeted::team("t", &team)];
                    match ledger.admit(&who, est, now) {
                        Ok(r) => {
                            admitted.fetch_add(1, Ordering::Relaxed);
                            // Real cost: 50–100 % of the estimate, or up to 150 % with overrun.
                            let pct = if overrun {
                                50 + next(&mut rng) % 101
                            } else {
                                50 + next(&mut rng) % 51
                            };
                            let actual_n = est_n * pct / 100;
                            excess.fetch_add(actual_n.saturating_sub(est_n), Ordering::Relaxed);
                            if next(&mut rng).is_multiple_of(4) {
                                thread::yield_now();
                            }
                            r.settle(actual_n as f64 / 1e9, now);
                        }
                        Err(e) => {
                            assert_eq!(
                                (e.scope, e.name.as_str(), e.period),
                                (BudgetScope::Key, "shared", BudgetPeriod::Day)
                            );
                            assert!(
                                e.spent_usd + e.reserved_usd + e.estimate_usd > e.limit_usd - 1e-9
                            );
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        if h.join().is_err() {
            panic!("a worker panicked");
        }
    }
    let u = ledger.usage(BudgetScope::Key, "shared", now);
    let team_u = ledger.usage(BudgetScope::Team, "t", now);
    assert_eq!(
        u.day_spent_usd, team_u.day_spent_usd,
        "the team saw the same spend"
    );
    (
        u.day_spent_usd,
        u.day_reserved_usd + u.month_reserved_usd,
        excess_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        admitted.load(Ordering::Relaxed),
    )
}

#[test]
fn spend_never_exceeds_limit_when_costs_stay_within_estimates() {
    let limit = 5.0;
    let (spent, reserved, excess, admitted) = hammer(limit, false);
    assert_eq!(excess, 0.0);
    assert!(spent <= limit, "spent {spent} > limit {limit}");
    assert_eq!(reserved, 0.0, "reservations leaked");
    // Demand (64 × 200 × ~$0.025 ≈ $320) far exceeds the limit, so admission must have used
    // the budget up to within one maximal estimate.
    assert!(
        spent > limit - 0.05,
        "spent only {spent} of {limit} ({admitted} admitted)"
    );
}

#[test]
fn overspend_is_bounded_by_what_admitted_requests_exceeded() {
    let limit = 5.0;
    let (spent, reserved, excess, _) = hammer(limit, true);
    assert_eq!(reserved, 0.0, "reservations leaked");
    assert!(
        spent <= limit + excess + 1e-9,
        "spent {spent} > limit {limit} + excess {excess}"
    );
}
