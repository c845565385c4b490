//! Upstream faults end to end: what a failing, careless or garbling upstream leaves the
//! client with (issue 22: error text, malformed answers, broken streams, ejection).

use std::time::Duration;

use crate::common::*;
use serde_json::Value;

async fn post(gw: &slmgate_gateway::Running, body: Value) -> reqwest::Response {
    client()
        .post(url(gw, "/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn alias(name: &str, model: &str) -> String {
    format!("  - name: {name}\n    backend: up\n    model: {model}\n")
}

/// A second backend `second` at `mock`, without retries.
fn second(mock: &Mock) -> String {
    format!(
        "  - name: second\n    kind: openai\n    base_url: {}\n    api_key: sk-second\n    max_retries: 0\n",
        mock.base_url()
    )
}

/// An upstream that quotes the credential it was sent, in a 500, a 401 and a 400: the
/// client never sees it. 5xx/401 keep their status class and a summary; the 400 (the
/// client's own fault) keeps the upstream's message, masked.
#[tokio::test]
async fn upstream_error_text_never_reaches_the_client() {
    let mock = Mock::start().await;
    let models = [
        alias("leak500", "leak-500"),
        alias("leak401", "leak-401"),
        alias("leak400", "leak-400"),
    ]
    .concat();
    let gw = gateway(&one_backend(&mock, "", &models, "")).await;
    for (name, status) in [("leak500", 502), ("leak401", 502), ("leak400", 400)] {
        let resp = post(&gw, chat_body(name, false)).await;
        assert_eq!(resp.status(), status, "{name}");
        let v = error_body(resp).await;
        let text = v.to_string();
        assert!(
            !text.contains("sk-backend"),
            "{name} leaked the key: {text}"
        );
        let msg = v["error"]["message"].as_str().unwrap();
        if status == 502 {
            assert!(
                !msg.contains("you sent"),
                "{name} relayed upstream text: {msg}"
            );
            assert!(msg.contains(&name[4..]), "{msg}");
        } else {
            assert!(msg.contains("you sent `Bearer [redacted]`"), "{msg}");
        }
    }
    // A stream asked of the same upstream is refused the same way.
    let resp = post(&gw, chat_body("leak500", true)).await;
    assert_eq!(resp.status(), 502);
    assert!(!resp.text().await.unwrap().contains("sk-backend"));
}

/// A 200 whose body is not a chat completion (cut off, or an HTML page) is an upstream
/// failure: retried, then the next target; a 502 when none is left, recorded as such.
#[tokio::test]
async fn malformed_upstream_answers_fall_back_or_fail() {
    let primary = Mock::start().await;
    let fallback = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("u.db").display());
    let models = format!(
        "{}{}  - name: rescued\n    backend: up\n    model: garbled\n    fallbacks:\n      - backend: second\n        model: gpt-second\n",
        alias("garbled", "garbled"),
        alias("html", "html")
    );
    let usage = format!("usage:\n  database: \"{db}\"\n");
    let gw = gateway(&one_backend(&primary, &second(&fallback), &models, &usage)).await;

    let resp = post(&gw, chat_body("rescued", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-slmgate-backend"], "second");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], mock_provider::REPLY);
    // Primary: the first attempt and two retries.
    assert_eq!(primary.requests(), 3);

    for name in ["garbled", "html"] {
        let resp = post(&gw, chat_body(name, false)).await;
        assert_eq!(resp.status(), 502, "{name}");
        let v = error_body(resp).await;
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not a chat completion"),
            "{v}"
        );
    }

    let writer = gw.usage.clone().unwrap();
    gw.shutdown();
    gw.wait().await.unwrap();
    assert_eq!(writer.sink.written(), 3);
    let store = slmgate_usage::Store::connect(&db).await.unwrap();
    let rows = store.rows(0, i64::MAX).await.unwrap();
    let mut statuses: Vec<i64> = rows.iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 502, 502], "{rows:#?}");
    for r in rows.iter().filter(|r| r.status == 502) {
        assert_eq!(r.cost_usd, 0.0);
        assert_eq!(r.error_class.as_deref(), Some("upstream_error"));
    }
}

/// A JSON answer with one invalid UTF-8 byte reaches the client as valid UTF-8 (U+FFFD).
#[tokio::test]
async fn an_invalid_byte_in_a_json_answer_is_replaced() {
    let mock = Mock::start().await;
    let gw = gateway(&one_backend(&mock, "", &alias("bad", "bad-utf8"), "")).await;
    let resp = post(&gw, chat_body("bad", false)).await;
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.unwrap();
    let text = std::str::from_utf8(&bytes).expect("valid UTF-8");
    let v: Value = serde_json::from_str(text).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from\u{FFFD} the mock upstream."
    );
}

/// A stream that fails before its first token (it closes, or sends an error event, after
/// the role chunk) falls back like a non-stream request: the client sees only the
/// fallback's answer.
#[tokio::test]
async fn a_stream_failing_before_its_first_token_falls_back() {
    let primary = Mock::start().await;
    let fallback = Mock::start().await;
    let models = [
        "  - name: close\n    backend: up\n    model: early-close\n    fallbacks:\n      - backend: second\n        model: gpt-second\n",
        "  - name: errs\n    backend: up\n    model: early-error\n    fallbacks:\n      - backend: second\n        model: gpt-second\n",
        &alias("alone", "early-error"),
    ]
    .concat();
    let gw = gateway(&one_backend(&primary, &second(&fallback), &models, "")).await;
    for name in ["close", "errs"] {
        let resp = post(&gw, chat_body(name, true)).await;
        assert_eq!(resp.status(), 200, "{name}");
        assert_eq!(resp.headers()["x-slmgate-backend"], "second", "{name}");
        let events = sse_events(resp).await;
        assert_eq!(
            events.last().map(String::as_str),
            Some("[DONE]"),
            "{events:?}"
        );
        assert!(
            !events.iter().any(|e| e.contains("error")),
            "{name}: {events:?}"
        );
        let text: String = events
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(String::from)
            })
            .collect();
        assert_eq!(text, mock_provider::REPLY);
    }
    // Each primary stream was tried three times (first attempt and two retries).
    assert_eq!(primary.requests(), 6);
    // With no fallback left, the client gets a plain 502, not a broken stream.
    let resp = post(&gw, chat_body("alone", true)).await;
    assert_eq!(resp.status(), 502);
    let v = error_body(resp).await;
    assert!(!v.to_string().contains("mock overloaded"), "{v}");
}

/// A stream cut after its first token ends with a well-formed error event
/// (`stream_incomplete`) and `[DONE]`, and is recorded as `stream_incomplete`.
#[tokio::test]
async fn a_stream_cut_after_its_first_token_ends_well_formed() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("u.db").display());
    let usage = format!("usage:\n  database: \"{db}\"\n");
    let gw = gateway(&one_backend(&mock, "", &alias("cut", "cut"), &usage)).await;
    let resp = post(&gw, chat_body("cut", true)).await;
    assert_eq!(resp.status(), 200);
    let events = sse_events(resp).await;
    assert!(events.iter().any(|e| e.contains("partial")), "{events:?}");
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let err: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(err["error"]["code"], "stream_incomplete", "{err}");
    assert_eq!(err["error"]["type"], "upstream_error", "{err}");
    assert_eq!(mock.requests(), 1, "never retried once a token was sent");

    let writer = gw.usage.clone().unwrap();
    gw.shutdown();
    gw.wait().await.unwrap();
    assert_eq!(writer.sink.written(), 1);
    let store = slmgate_usage::Store::connect(&db).await.unwrap();
    let rows = store.rows(0, i64::MAX).await.unwrap();
    assert_eq!(rows[0].error_class.as_deref(), Some("stream_incomplete"));
    assert_eq!(rows[0].status, 200);
}

/// Foreign events, comments and non-JSON `data:` lines are dropped, and one invalid UTF-8
/// byte does not hold the rest of the stream back.
#[tokio::test]
async fn noisy_streams_are_cleaned_and_not_held_back() {
    let mock = Mock::start().await;
    let gw = gateway(&one_backend(&mock, "", &alias("noisy", "noisy"), "")).await;
    let resp = post(&gw, chat_body("noisy", true)).await;
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(10), resp.text())
        .await
        .expect("the stream ends")
        .unwrap();
    assert!(!body.contains("event:"), "{body}");
    assert!(!body.contains("not json"), "{body}");
    assert!(!body.contains("ping"), "{body}");
    let events: Vec<&str> = body
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| e.trim_start_matches("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{body}");
    let text: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(text, "Hello from\u{FFFD} the mock upstream.");
}

/// Two backends, `primary` (with `breaker` settings) and `spare`, and aliases.
fn breaker_config(
    primary: &Mock,
    spare: &Mock,
    breaker: &str,
    timeout: &str,
    models: &str,
) -> String {
    format!(
        r#"
backends:
  - name: primary
    kind: openai
    base_url: {}
    timeout: {timeout}
    max_retries: 2
    retry_backoff: 1ms
    circuit_breaker: {breaker}
  - name: spare
    kind: openai
    base_url: {}
    max_retries: 0
models:
{models}
"#,
        primary.base_url(),
        spare.base_url()
    )
}

/// A failing backend is ejected after `consecutive_failures` failed attempts: later requests
/// skip it at once for the fallback, `/admin/status` and `/metrics` show it, and when the
/// ejection is up one probe is let through: a failed probe ejects it again, a good one
/// closes the circuit.
#[tokio::test]
async fn a_failing_backend_is_ejected_then_probed_back() {
    let primary = Mock::start().await;
    let spare = Mock::start().await;
    let models = "  - name: fb\n    backend: primary\n    model: flaky-4\n    fallbacks:\n      - backend: spare\n        model: gpt-spare\n  - name: only\n    backend: primary\n    model: error-500\n";
    let gw = gateway(&breaker_config(
        &primary,
        &spare,
        "{consecutive_failures: 3, ejection: 300ms}",
        "2s",
        models,
    ))
    .await;
    // The first request pays three failed attempts, which eject the backend.
    for i in 0..5 {
        let resp = post(&gw, chat_body("fb", false)).await;
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(resp.headers()["x-slmgate-backend"], "spare", "request {i}");
    }
    assert_eq!(primary.requests(), 3, "an ejected backend gets no attempts");
    assert_eq!(spare.requests(), 5);

    let status = get_json(&gw, "/admin/status").await;
    let b = status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "primary")
        .unwrap()
        .clone();
    assert_eq!(b["circuit"]["state"], "open", "{b}");
    assert_eq!(b["circuit"]["ejections"], 1, "{b}");
    let metrics = client()
        .get(url(&gw, "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("slmgate_backend_ejected{backend=\"primary\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("slmgate_backend_ejections_total{backend=\"primary\"} 1"));

    // With no fallback left, an ejected backend answers 503 at once, with Retry-After.
    let resp = post(&gw, chat_body("only", false)).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_some());
    let v = error_body(resp).await;
    assert_eq!(v["error"]["code"], "backend_ejected", "{v}");
    assert_eq!(primary.requests(), 3);

    // Half-open: one probe (the flaky model's 4th request, still failing) ejects it again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let resp = post(&gw, chat_body("fb", false)).await;
    assert_eq!(resp.headers()["x-slmgate-backend"], "spare");
    assert_eq!(primary.requests(), 4, "exactly one probe");
    // Ejected for twice as long now; then the probe succeeds and the circuit closes.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let resp = post(&gw, chat_body("fb", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-slmgate-backend"], "primary");
    let status = get_json(&gw, "/admin/status").await;
    let state = status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "primary")
        .map(|b| b["circuit"]["state"].clone());
    assert_eq!(state, Some(Value::from("closed")));
}

/// A hanging backend costs each request its full timeout only until it is ejected; then
/// the fallback answers without waiting for it.
#[tokio::test]
async fn a_hanging_backend_is_ejected() {
    let primary = Mock::start().await;
    let spare = Mock::start().await;
    let models = "  - name: fb\n    backend: primary\n    model: slow-5000\n    fallbacks:\n      - backend: spare\n        model: gpt-spare\n";
    let gw = gateway(&breaker_config(
        &primary,
        &spare,
        "{consecutive_failures: 2}",
        "200ms",
        models,
    ))
    .await;
    for i in 0..6 {
        let resp = post(&gw, chat_body("fb", false)).await;
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(resp.headers()["x-slmgate-backend"], "spare");
    }
    // Timeouts are not retried: two requests, two timed-out attempts, then ejected.
    assert_eq!(primary.requests(), 2);
}

/// Asks the mock's `model` through an alias and expects a 502 whose message has `needle`.
async fn refused(model: &str, stream: bool, needle: &str) {
    let mock = Mock::start().await;
    let gw = gateway(&one_backend(&mock, "", &alias("a", model), "")).await;
    let resp = post(&gw, chat_body("a", stream)).await;
    assert_eq!(resp.status(), 502);
    let v = error_body(resp).await;
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{v}");
}

/// An upstream answer larger than the gateway reads (16 MiB) is a failed attempt, not a
/// buffer without bound: the client gets a 502 naming the limit.
#[tokio::test]
async fn an_oversized_upstream_answer_is_refused() {
    refused("huge", false, "larger than 16 MiB").await;
}

/// An SSE event without end (8 MiB, no line end) fails the stream at 1 MiB instead of being
/// buffered: before the first token, that is a failed attempt and, with nothing left, a 502.
#[tokio::test]
async fn an_endless_upstream_event_is_cut() {
    refused("giant-event", true, "larger than").await;
}
