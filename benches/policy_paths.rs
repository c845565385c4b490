//! The per-request policy work of the issue-5 benchmark, piece by piece (criterion):
//!
//! ```text
//! cargo bench --bench policy_paths
//! ```
//!
//! `gateway_load`'s `policies` scenario measures the whole gateway; this one times the pure
//! steps it adds, on the same configuration (`benches/configs/policies.yaml`: 20 rules, 7 PII
//! kinds + 2 custom regexes) and the same prompts: the PII scan of a prompt without and with
//! an e-mail address, the 20-rule evaluation of a request no rule matches (every rule tried),
//! a key + team budget admission settled at once, a requests + tokens rate-limit check, and
//! the exact cache's lookup + insert of a fresh answer.
//! Run without `--bench` (as `cargo test --all-targets` does), each runs a few iterations.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use slmgate_policies::budget::{BudgetLedger, BudgetLimits, Budgeted};
use slmgate_policies::ratelimit::{RateLimiters, RateLimits};
use slmgate_policies::{PolicySet, RequestFacts};

/// The prompt `gateway_load` sends (one in ten with the e-mail address).
const PROMPT: &str = "Question 123456 from client 7: what is the capital of France?";
const PROMPT_EMAIL: &str =
    "Question 123456 from client 7: what is the capital of France? My e-mail is jane.doe@example.com.";

fn policy_set() -> PolicySet {
    let root = env!("CARGO_MANIFEST_DIR");
    let policies = std::fs::read_to_string(format!("{root}/benches/configs/policies.yaml"))
        .expect("benches/configs/policies.yaml");
    let yaml = format!(
        "backends:\n  - name: mock\n    kind: openai\n    base_url: http://127.0.0.1:9/v1\n    api_key: sk-bench\nmodels:\n  - name: remote\n    backend: mock\n{policies}"
    );
    let cfg = slmgate_config::load_str(&yaml, "policies.yaml").expect("the bench config loads");
    slmgate_config::policy::compile(&cfg).expect("the bench policies compile")
}

fn pii(c: &mut Criterion) {
    let set = policy_set();
    let det = set.pii();
    assert!(det.detect(PROMPT).is_empty());
    assert_eq!(det.detect(PROMPT_EMAIL).len(), 1);
    let mut g = c.benchmark_group("pii");
    g.bench_function("detect, no PII", |b| {
        b.iter(|| det.detect(black_box(PROMPT)));
    });
    g.bench_function("detect, one e-mail", |b| {
        b.iter(|| det.detect(black_box(PROMPT_EMAIL)));
    });
    g.finish();
}

fn rules(c: &mut Criterion) {
    let set = policy_set();
    assert_eq!(set.len(), 20);
    let tags = vec!["paid".to_string()];
    let headers = [
        ("host", "127.0.0.1:8080"),
        ("content-type", "application/json"),
        ("authorization", "Bearer bench-key-7"),
        ("content-length", "190"),
    ];
    let facts = RequestFacts {
        model: "remote",
        key: Some("key-7"),
        team: Some("team-7"),
        tags: &tags,
        headers: &headers,
        path: "/v1/chat/completions",
        target: Some("remote"),
        category: None,
        score: None,
        prompt_tokens: 30,
        pii: &[],
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000),
        split_hash: 42,
    };
    assert!(
        set.evaluate(&facts).is_default(),
        "no rule matches the bench request"
    );
    c.bench_function("rules/evaluate 20, none matches", |b| {
        b.iter(|| set.evaluate(black_box(&facts)));
    });
}

fn budget_and_limits(c: &mut Criterion) {
    let ledger = BudgetLedger::new();
    let limits = BudgetLimits {
        daily_usd: Some(100_000.0),
        monthly_usd: None,
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000);
    let who = [
        Budgeted::key("key-7", &limits),
        Budgeted::team("team-7", &limits),
    ];
    c.bench_function("budget/admit + settle (key and team)", |b| {
        b.iter(|| {
            let r = ledger
                .admit(black_box(&who), 0.001, now)
                .expect("far under budget");
            r.settle(0.0005, now);
        });
    });
    let limiters = RateLimiters::new();
    let rl = RateLimits {
        requests_per_minute: NonZeroU32::new(u32::MAX),
        tokens_per_minute: NonZeroU32::new(u32::MAX),
        burst_requests: None,
        burst_tokens: None,
    };
    c.bench_function("ratelimit/check requests + tokens", |b| {
        b.iter(|| limiters.check(black_box("key-7"), &rl, 300));
    });
}

/// The exact cache's store work per miss, as the load bench causes it: a lookup that misses
/// and an insert of a ~300-byte answer under a fresh key, into a 64 MB cache that fills (and
/// then evicts) as the benchmark runs.
fn cache_store(c: &mut Criterion) {
    use slmgate_gateway::layers::cache::store::{Answer, CacheState};
    let mut cfg = slmgate_config::cache::Cache::default();
    cfg.exact.max_bytes = 64 << 20;
    let state = CacheState::new(&cfg);
    let json = bytes::Bytes::from(vec![b'x'; 300]);
    let mut n = 0u64;
    c.bench_function("cache/exact miss + insert (64 MB store)", |b| {
        b.iter(|| {
            n += 1;
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&n.to_le_bytes());
            assert!(state.get_exact(black_box(&key)).is_none());
            state.put_exact(
                key,
                std::sync::Arc::new(Answer {
                    json: bytes::Bytes::copy_from_slice(&json),
                    backend: "mock".to_string(),
                    ttl: Duration::from_secs(3600),
                }),
            );
        });
    });
}

criterion_group!(benches, pii, rules, budget_and_limits, cache_store);
criterion_main!(benches);
