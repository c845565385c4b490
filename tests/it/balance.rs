//! Load balancing over an alias's deployments of equal rank (`deployments`, `balance`),
//! with two fake upstreams of different latency.

use std::collections::HashMap;

use crate::common::*;

/// A gateway whose alias `pool` is served by `fast` (2 ms) and `slow` (40 ms) deployments,
/// balanced by `strategy`, with a `spare` fallback that is never needed.
async fn pool(mock: &Mock, strategy: &str) -> slmgate_gateway::Running {
    let up = |name: &str| {
        format!(
            "  - name: {name}\n    kind: openai\n    base_url: {}\n    api_key: sk-{name}\n    timeout: 5s\n    max_retries: 0\n    circuit_breaker: {{ enabled: false }}\n",
            mock.base_url()
        )
    };
    let yaml = format!(
        "listen: \"127.0.0.1:0\"\nbackends:\n{}{}{}models:\n  - name: pool\n    backend: fast\n    model: slow-2\n    deployments:\n      - backend: slow\n        model: slow-40\n    balance: {strategy}\n    fallbacks:\n      - backend: spare\n        model: slow-1\n",
        up("fast"),
        up("slow"),
        up("spare"),
    );
    gateway(&yaml).await
}

/// Sends `n` requests, `concurrency` at a time; counts the answering backends.
async fn spread(
    gw: &slmgate_gateway::Running,
    n: usize,
    concurrency: usize,
) -> HashMap<String, usize> {
    let c = client();
    let mut counts = HashMap::new();
    for _ in 0..n / concurrency {
        let batch = (0..concurrency).map(|_| {
            c.post(url(gw, "/v1/chat/completions"))
                .json(&chat_body("pool", false))
                .send()
        });
        for r in futures::future::join_all(batch).await {
            let r = r.unwrap();
            assert_eq!(r.status(), 200);
            let b = r.headers()["x-slmgate-backend"]
                .to_str()
                .unwrap()
                .to_string();
            *counts.entry(b).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test]
async fn round_robin_alternates_the_deployments() {
    let mock = Mock::start().await;
    let gw = pool(&mock, "round_robin").await;
    let counts = spread(&gw, 20, 1).await;
    assert_eq!(counts.get("fast"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("slow"), Some(&10), "{counts:?}");
    assert_eq!(
        counts.get("spare"),
        None,
        "the fallback is not a deployment"
    );
}

#[tokio::test]
async fn latency_ewma_sends_most_requests_to_the_faster_deployment() {
    let mock = Mock::start().await;
    let gw = pool(&mock, "latency_ewma").await;
    let counts = spread(&gw, 30, 1).await;
    // Each deployment is measured once, then the fast one answers the rest.
    assert!(counts.get("fast").copied().unwrap_or(0) >= 27, "{counts:?}");
}

#[tokio::test]
async fn least_busy_favours_the_deployment_that_frees_up_first() {
    let mock = Mock::start().await;
    let gw = std::sync::Arc::new(pool(&mock, "least_busy").await);
    // A closed loop: 4 clients, each sending its next request when its last one is answered.
    // The fast deployment frees up 20 times sooner, so it is the idle one more often.
    let workers = (0..4).map(|_| {
        let gw = gw.clone();
        tokio::spawn(async move { spread(&gw, 12, 1).await })
    });
    let mut counts: HashMap<String, usize> = HashMap::new();
    for w in futures::future::join_all(workers).await {
        for (b, n) in w.unwrap() {
            *counts.entry(b).or_insert(0) += n;
        }
    }
    let fast = counts.get("fast").copied().unwrap_or(0);
    let slow = counts.get("slow").copied().unwrap_or(0);
    assert_eq!(fast + slow, 48, "{counts:?}");
    assert!(slow > 0, "both deployments take load: {counts:?}");
    assert!(fast >= 2 * slow, "{counts:?}");
}

#[test]
fn deployments_name_existing_backends() {
    let yaml = "backends:\n  - name: a\n    kind: openai\n    base_url: http://127.0.0.1:9\nmodels:\n  - name: m\n    backend: a\n    deployments:\n      - backend: nope\n    balance: fastest\n";
    let Err(err) = slmgate_config::load_str_with_env(yaml, "t.yaml", &|_| None) else {
        panic!("invalid config accepted")
    };
    let err = err.to_string();
    assert!(err.contains("balance"), "{err}");
    let yaml = yaml.replace("    balance: fastest\n", "");
    let Err(err) = slmgate_config::load_str_with_env(&yaml, "t.yaml", &|_| None) else {
        panic!("invalid config accepted")
    };
    let err = err.to_string();
    assert!(
        err.contains("t.yaml:9") && err.contains("unknown backend `nope`"),
        "{err}"
    );
}
