//! `GET /metrics`: the metric families after some traffic, with the right values;
//! `admin.protect_metrics`; and the shipped Grafana dashboard uses only exported names.
//!
//! The recorder is process-wide, so each test uses its own aliases / backends as labels and
//! checks its own series.

use crate::common::*;
use mock_provider::{COMPLETION_TOKENS, PROMPT_TOKENS};
use serde_json::Value;

/// The sum of the samples of `name` whose labels include every `(k, v)` of `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (lbls, v) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        if labels
            .iter()
            .all(|(k, want)| lbls.split(',').any(|kv| kv == format!("{k}=\"{want}\"")))
        {
            let v: f64 = v.trim().parse().ok()?;
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

async fn scrape(gw: &slmgate_gateway::Running, key: Option<&str>) -> reqwest::Response {
    let mut rb = client().get(url(gw, "/metrics"));
    if let Some(k) = key {
        rb = rb.bearer_auth(k);
    }
    rb.send().await.unwrap()
}

/// Polls until `check` holds on the scrape (request metrics are taken when a body has been
/// sent in full, just after the client sees its end).
async fn scrape_until(gw: &slmgate_gateway::Running, check: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = scrape(gw, None).await.text().await.unwrap();
        if check(&text) || std::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metric_families_have_the_right_values_after_traffic() {
    let mock = Mock::start().await;
    let gw = gateway(&one_backend(
        &mock,
        "",
        "  - name: m-alias\n    backend: up\n    model: gpt-metrics\n  - name: m-flaky\n    backend: up\n    model: flaky-1\n  - name: m-broken\n    backend: up\n    model: error-503\n",
        "pricing:\n  gpt-metrics: { input: 1000000, output: 2000000 }\n",
    ))
    .await;
    let c = client();
    for stream in [false, true, false] {
        let r = c
            .post(url(&gw, "/v1/chat/completions"))
            .json(&chat_body("m-alias", stream))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    // One retry then success; three attempts then a 5xx.
    let r = c
        .post(url(&gw, "/v1/chat/completions"))
        .json(&chat_body("m-flaky", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(url(&gw, "/v1/chat/completions"))
        .json(&chat_body("m-broken", false))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error());

    let chat = [("route", "/v1/chat/completions"), ("target", "m-alias")];
    let text = scrape_until(&gw, |t| {
        value(
            t,
            "slmgate_requests_total",
            &[chat[0], chat[1], ("status", "200")],
        ) == Some(3.0)
    })
    .await;
    let v = |name: &str, labels: &[(&str, &str)]| {
        value(&text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
    };
    assert_eq!(
        v(
            "slmgate_requests_total",
            &[chat[0], chat[1], ("status", "200")]
        ),
        3.0
    );
    assert_eq!(
        v(
            "slmgate_request_duration_seconds_count",
            &[chat[0], chat[1], ("status", "200")]
        ),
        3.0
    );
    assert!(
        v(
            "slmgate_request_duration_seconds_bucket",
            &[chat[0], chat[1], ("le", "+Inf")]
        ) >= 3.0
    );
    assert_eq!(
        v(
            "slmgate_tokens_total",
            &[("target", "m-alias"), ("backend", "up"), ("kind", "prompt")]
        ),
        3.0 * PROMPT_TOKENS as f64
    );
    assert_eq!(
        v(
            "slmgate_tokens_total",
            &[("target", "m-alias"), ("kind", "completion")]
        ),
        3.0 * COMPLETION_TOKENS as f64
    );
    // $1 / $2 per token in and out.
    let want = 3.0 * (PROMPT_TOKENS as f64 + 2.0 * COMPLETION_TOKENS as f64);
    assert!((v("slmgate_cost_usd", &[("target", "m-alias")]) - want).abs() < 1e-6);
    assert_eq!(
        v(
            "slmgate_time_to_first_token_seconds_count",
            &[("target", "m-alias")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "slmgate_decisions_total",
            &[("strategy", "alias"), ("target", "m-alias")]
        ),
        3.0
    );
    // flaky-1: one retry; error-503: max_retries (2) retries, then one failure.
    assert!(v("slmgate_upstream_retries_total", &[("backend", "up")]) >= 3.0);
    assert!(
        v(
            "slmgate_upstream_errors_total",
            &[("backend", "up"), ("type", "upstream_error")]
        ) >= 1.0
    );
    assert!(
        value(
            &text,
            "slmgate_requests_total",
            &[("route", "/v1/chat/completions"), ("target", "m-broken")]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // The scrape itself and probes are counted under their own route.
    client().get(url(&gw, "/healthz")).send().await.unwrap();
    let text = scrape_until(&gw, |t| {
        value(t, "slmgate_requests_total", &[("route", "/healthz")]).is_some()
    })
    .await;
    assert!(value(
        &text,
        "slmgate_requests_total",
        &[("route", "/healthz"), ("status", "200")]
    )
    .is_some());
    // Unknown paths share one label.
    client().get(url(&gw, "/wp-admin/x")).send().await.unwrap();
    let text = scrape_until(&gw, |t| {
        value(
            t,
            "slmgate_requests_total",
            &[("route", "other"), ("status", "404")],
        )
        .is_some()
    })
    .await;
    assert!(!text.contains("wp-admin"));
    assert!(text.contains("# TYPE slmgate_request_duration_seconds histogram"));
    gw.shutdown();
    gw.wait().await.unwrap();
}

/// The local model's queue depth and generation speed.
#[cfg(feature = "local")]
#[tokio::test]
async fn local_queue_depth_and_generation_speed() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = slmgate_local_model::fixtures::write_tiny_model(dir.path(), "llama", 7);
    let mock = Mock::start().await;
    let gw = gateway(&one_backend(
        &mock,
        &format!(
            "  - name: slm-metrics\n    kind: local\n    enabled: true\n    model: {}\n    max_tokens: 6\n",
            tiny.display()
        ),
        "  - name: local\n    backend: slm-metrics\n",
        "",
    ))
    .await;
    let r = client()
        .post(url(&gw, "/v1/chat/completions"))
        .json(&chat_body("local", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = scrape_until(&gw, |t| {
        value(
            t,
            "slmgate_local_generation_tokens_per_second_count",
            &[("backend", "slm-metrics")],
        )
        .is_some()
    })
    .await;
    assert_eq!(
        value(
            &text,
            "slmgate_local_queue_depth",
            &[("backend", "slm-metrics")]
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "slmgate_local_generation_tokens_per_second_count",
            &[("backend", "slm-metrics")]
        ),
        Some(1.0),
        "{text}"
    );
    gw.shutdown();
    gw.wait().await.unwrap();
}

/// `admin.protect_metrics: true` puts /metrics behind the admin key.
#[tokio::test]
async fn protect_metrics_needs_the_admin_key() {
    let mock = Mock::start().await;
    let gw = gateway(&one_backend(
        &mock,
        "",
        "",
        "admin:\n  key: adm1n\n  protect_metrics: true\n",
    ))
    .await;
    assert_eq!(scrape(&gw, None).await.status(), 401);
    assert_eq!(scrape(&gw, Some("wrong")).await.status(), 401);
    let r = scrape(&gw, Some("adm1n")).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    gw.shutdown();
    gw.wait().await.unwrap();

    // Open by default, even with an admin key.
    let gw = gateway(&one_backend(&mock, "", "", "admin:\n  key: adm1n\n")).await;
    assert_eq!(scrape(&gw, None).await.status(), 200);
    gw.shutdown();
    gw.wait().await.unwrap();
}

/// Every metric the Grafana dashboard queries is one the gateway exports.
#[test]
fn grafana_dashboard_uses_exported_metrics() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/slmgate.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(exprs.len() >= 10);
    let mut used = std::collections::BTreeSet::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("slmgate_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name)
                .to_string();
            used.insert(base);
        }
    }
    for name in &used {
        assert!(
            slmgate_gateway::metrics::ALL.contains(&name.as_str()),
            "the dashboard uses `{name}`, which the gateway does not export"
        );
    }
    // And it shows every family.
    for name in slmgate_gateway::metrics::ALL {
        assert!(
            used.contains(*name),
            "the dashboard has no panel for `{name}`"
        );
    }
}
