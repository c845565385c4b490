//! Rate-limit accuracy on governor's fake clock (no sleeps).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::FakeRelativeClock;
use slmgate_policies::ratelimit::{LimitKind, RateLimiters, RateLimits};

fn nz(n: u32) -> Option<NonZeroU32> {
    NonZeroU32::new(n)
}

fn limiters() -> (FakeRelativeClock, RateLimiters<FakeRelativeClock>) {
    let clock = FakeRelativeClock::default();
    (clock.clone(), RateLimiters::with_clock(clock))
}

/// Calls `attempt` every `step` from 0 to `total` inclusive (simulated time) and counts
/// successes.
fn drive(
    clock: &FakeRelativeClock,
    step: Duration,
    total: Duration,
    mut attempt: impl FnMut() -> bool,
) -> u64 {
    let mut ok = 0;
    let mut t = Duration::ZERO;
    while t <= total {
        if attempt() {
            ok += 1;
        }
        clock.advance(step);
        t += step;
    }
    ok
}

fn within(got: u64, want: f64, tol: f64) -> bool {
    (got as f64 - want).abs() <= want * tol
}

#[test]
fn requests_per_minute_steady_state_within_10_percent() {
    for rpm in [60u32, 600, 3000] {
        let (clock, rl) = limiters();
        let limits = RateLimits {
            requests_per_minute: nz(rpm),
            ..RateLimits::default()
        };
        // Use up the burst first, then measure the sustained rate over 10 s.
        while rl.check("k", &limits, 0).is_ok() {}
        let ok = drive(
            &clock,
            Duration::from_millis(5),
            Duration::from_secs(10),
            || rl.check("k", &limits, 0).is_ok(),
        );
        let want = f64::from(rpm) / 6.0;
        eprintln!("rpm {rpm}: {ok} admitted in 10 s after the burst (ideal {want})");
        assert!(
            within(ok, want, 0.10),
            "rpm {rpm}: {ok} in 10 s, want {want}"
        );
    }
}

#[test]
fn burst_then_rate_from_fresh() {
    let (clock, rl) = limiters();
    let limits = RateLimits {
        requests_per_minute: nz(120),
        burst_requests: nz(10),
        ..RateLimits::default()
    };
    // 10 at once, then 2/s: over 10 s ≈ 10 + 20.
    let ok = drive(
        &clock,
        Duration::from_millis(1),
        Duration::from_secs(10),
        || rl.check("k", &limits, 0).is_ok(),
    );
    eprintln!("rpm 120, burst 10: {ok} admitted in the first 10 s (ideal 30)");
    assert!(within(ok, 30.0, 0.10), "{ok}");
}

#[test]
fn tokens_per_minute_within_10_percent() {
    let (clock, rl) = limiters();
    let limits = RateLimits {
        tokens_per_minute: nz(60_000),
        ..RateLimits::default()
    };
    while rl.check("k", &limits, 500).is_ok() {}
    // 100-token requests every 10 ms (10 000 tokens/s asked, 1 000/s allowed).
    let ok = drive(
        &clock,
        Duration::from_millis(10),
        Duration::from_secs(10),
        || rl.check("k", &limits, 100).is_ok(),
    );
    let tokens = ok * 100;
    eprintln!("tpm 60000: {tokens} tokens admitted in 10 s after the burst (ideal 10000)");
    assert!(within(tokens, 10_000.0, 0.10), "{tokens} tokens in 10 s");
}

#[test]
fn retry_after_is_accurate() {
    let (clock, rl) = limiters();
    let limits = RateLimits {
        requests_per_minute: nz(6),
        burst_requests: nz(1),
        ..RateLimits::default()
    };
    assert!(rl.check("k", &limits, 0).is_ok());
    let err = rl.check("k", &limits, 0).err();
    let wait = err.and_then(|e| e.retry_after).unwrap_or_default();
    assert_eq!(
        err.map(|e| (e.kind, e.per_minute)),
        Some((LimitKind::Requests, 6))
    );
    assert!((wait.as_secs_f64() - 10.0).abs() < 0.01, "{wait:?}");
    assert_eq!(err.and_then(|e| e.retry_after_secs()), Some(10));
    clock.advance(wait - Duration::from_millis(1));
    assert!(rl.check("k", &limits, 0).is_err());
    clock.advance(Duration::from_millis(1));
    assert!(rl.check("k", &limits, 0).is_ok());
}

#[test]
fn keys_are_independent() {
    let (_clock, rl) = limiters();
    let limits = RateLimits {
        requests_per_minute: nz(1),
        ..RateLimits::default()
    };
    assert!(rl.check("a", &limits, 0).is_ok());
    assert!(rl.check("a", &limits, 0).is_err());
    assert!(rl.check("b", &limits, 0).is_ok());
}

#[test]
fn too_many_tokens_at_once_can_never_pass() {
    let (_clock, rl) = limiters();
    let limits = RateLimits {
        tokens_per_minute: nz(1000),
        ..RateLimits::default()
    };
    let err = rl.check("k", &limits, 1001).err();
    assert_eq!(
        err.map(|e| (e.kind, e.retry_after)),
        Some((LimitKind::Tokens, None))
    );
    assert!(err.is_some_and(|e| e.to_string().contains("more tokens than the limit")));
    assert!(rl.check("k", &limits, 1000).is_ok());
}

#[test]
fn state_survives_reload_with_unchanged_limits() {
    let (clock, rl) = limiters();
    let before = RateLimits {
        requests_per_minute: nz(2),
        ..RateLimits::default()
    };
    assert!(rl.check("k", &before, 0).is_ok());
    assert!(rl.check("k", &before, 0).is_ok());
    // A reload: the gateway keeps its `RateLimiters` handle and re-reads equal limits.
    let kept = rl.clone();
    let after = before;
    assert!(
        kept.check("k", &after, 0).is_err(),
        "state was lost on reload"
    );
    // Housekeeping does not forget a key that is still limited.
    kept.retain_recent();
    assert!(kept.check("k", &after, 0).is_err());
    // A changed limit starts afresh under the new quota.
    let raised = RateLimits {
        requests_per_minute: nz(3),
        ..RateLimits::default()
    };
    assert!(kept.check("k", &raised, 0).is_ok());
    // After a full minute the key's state is fresh and housekeeping may drop it.
    clock.advance(Duration::from_secs(61));
    kept.retain_recent();
    assert!(kept.check("k", &before, 0).is_ok());
}

#[test]
fn unlimited_keys_always_pass() {
    let (_clock, rl) = limiters();
    for _ in 0..10_000 {
        assert!(rl.check("k", &RateLimits::default(), 1_000_000).is_ok());
    }
}
