//! The rest of the OpenAI surface: the legacy `POST /v1/completions` (passed through to an
//! OpenAI backend, else through the chat pipeline) and `POST /v1/responses` (passed through),
//! against the mock upstream and, for completions, the tiny local model.

use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};
use slmgate_usage::{Store, UsageRecord};

const KEYS: &str =
    "keys:\n  - name: dev\n    key: sk-dev\n  - name: narrow\n    key: sk-narrow\n    models: [other]\n";

/// An alias the `narrow` key may use.
const OTHER: &str = "  - name: other\n    backend: up\n    model: other\n";

async fn post(
    gw: &slmgate_gateway::Running,
    path: &str,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    client()
        .post(url(gw, path))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// A gateway over `mock` with a usage database; returns it and the database URL.
async fn with_usage(
    mock: &Mock,
    models: &str,
) -> (slmgate_gateway::Running, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("u.db").display());
    let extra = format!("{KEYS}usage:\n  database: \"{db}\"\n  flush_interval: 1h\n");
    let gw = gateway(&one_backend(mock, "", &format!("{OTHER}{models}"), &extra)).await;
    (gw, dir, db)
}

/// Shuts the gateway down (flushing usage) and reads every row.
async fn rows(gw: slmgate_gateway::Running, db: &str) -> Vec<UsageRecord> {
    let writer = gw.usage.clone().expect("usage writer");
    gw.shutdown();
    tokio::time::timeout(Duration::from_secs(20), gw.wait())
        .await
        .expect("shutdown is bounded")
        .unwrap();
    assert_eq!(writer.sink.dropped(), 0);
    let store = Store::connect(db).await.unwrap();
    let mut rows = store.rows(0, i64::MAX).await.unwrap();
    store.close().await;
    rows.sort_by_key(|r| r.stream);
    rows
}

/// An Anthropic backend on the mock and its alias `claude`: a model completions reach through
/// the chat translation.
fn claude_backend(mock: &Mock) -> String {
    format!(
        "  - name: claude\n    kind: anthropic\n    base_url: http://{}\n    api_key: sk-ant-test\n    timeout: 2s\n    circuit_breaker: {{ enabled: false }}\n",
        mock.addr()
    )
}

const CLAUDE: &str = "  - name: claude\n    backend: claude\n    model: mock-claude\n";

/// A gateway over `mock` with the `claude` alias too, and a usage database.
async fn with_claude(mock: &Mock) -> (slmgate_gateway::Running, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("u.db").display());
    let extra = format!("{KEYS}usage:\n  database: \"{db}\"\n  flush_interval: 1h\n");
    let models = format!("{OTHER}{CLAUDE}");
    let gw = gateway(&one_backend(mock, &claude_backend(mock), &models, &extra)).await;
    (gw, dir, db)
}

/// An alias whose backend does not speak `/completions` (here Anthropic): the prompt goes
/// through the chat pipeline as one user turn, the answer comes back as a text completion.
#[tokio::test]
async fn completions_answer_in_text_completion_shape_and_stream() {
    let mock = Mock::start().await;
    let (gw, _dir, db) = with_claude(&mock).await;
    let resp = post(
        &gw,
        "/v1/completions",
        "sk-dev",
        &json!({"model": "claude", "prompt": "Say hello", "max_tokens": 9, "stop": ["\n"]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-slmgate-backend"], "claude");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "text_completion", "{v}");
    assert_eq!(v["model"], "claude");
    assert_eq!(v["choices"][0]["text"], mock_provider::REPLY);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "{v}");
    let sent = mock.last_request().unwrap();
    assert_eq!(sent.uri, "/v1/messages");
    assert_eq!(sent.body["model"], "mock-claude");
    assert_eq!(sent.body["messages"][0]["role"], "user");
    assert!(
        sent.body["messages"].to_string().contains("Say hello"),
        "{}",
        sent.body
    );
    assert_eq!(sent.body["max_tokens"], 9);
    assert_eq!(sent.body["stop_sequences"], json!(["\n"]));

    let resp = post(
        &gw,
        "/v1/completions",
        "sk-dev",
        &json!({"model": "claude", "prompt": ["Say hello"], "stream": true}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = sse_events(resp).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, mock_provider::REPLY);
    for c in &chunks {
        assert_eq!(c["object"], "text_completion", "{c}");
        // The usage chunk the account step asked for stays hidden.
        assert!(c.get("usage").is_none(), "{c}");
    }
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "stop"));

    let rows = rows(gw, &db).await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for (row, stream) in rows.iter().zip([false, true]) {
        assert_eq!(row.stream, stream);
        assert_eq!(row.requested_model, "claude");
        assert_eq!(row.key_name.as_deref(), Some("dev"));
        assert_eq!(row.backend.as_deref(), Some("claude"));
        assert!(row.prompt_tokens > 0, "{row:?}");
        assert_eq!(
            row.completion_tokens,
            mock_provider::ANTHROPIC_USAGE.3 as i64
        );
    }
}

#[tokio::test]
async fn completions_refuse_what_has_no_chat_equivalent() {
    let mock = Mock::start().await;
    let models = format!("{OTHER}{CLAUDE}");
    let gw = gateway(&one_backend(&mock, &claude_backend(&mock), &models, KEYS)).await;
    for (body, param) in [
        (
            json!({"model": "claude", "prompt": "a", "suffix": "b"}),
            "suffix",
        ),
        (json!({"model": "claude", "prompt": ["a", "b"]}), "prompt"),
        (
            json!({"model": "claude", "prompt": "a", "echo": true}),
            "echo",
        ),
        (
            json!({"model": "claude", "prompt": "a", "logprobs": 1}),
            "logprobs",
        ),
    ] {
        let resp = post(&gw, "/v1/completions", "sk-dev", &body).await;
        assert_eq!(resp.status(), 400, "{body}");
        let v = error_body(resp).await;
        assert_eq!(v["error"]["param"], param, "{v}");
    }
    // The pipeline's own refusals pass as they are: the key's allow-list.
    let resp = post(
        &gw,
        "/v1/completions",
        "sk-narrow",
        &json!({"model": "claude", "prompt": "a"}),
    )
    .await;
    assert_eq!(resp.status(), 403);
    error_body(resp).await;
    assert_eq!(mock.requests(), 0);
}

/// An alias served by a `kind: openai` backend: the request goes to the backend's own
/// `/completions` as it is (model rewritten), legacy parameters included; a stream is asked
/// for its usage chunk, which only a client that asked sees; one usage row each.
#[tokio::test]
async fn completions_pass_through_to_openai_backends() {
    let mock = Mock::start().await;
    let (gw, _dir, db) = with_usage(&mock, "").await;
    let body = json!({"model": "remote", "prompt": ["Say hello", "Say bye"], "suffix": "!", "echo": false, "max_tokens": 9});
    let resp = post(&gw, "/v1/completions", "sk-dev", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-slmgate-backend"], "up");
    assert_eq!(resp.headers()["x-slmgate-route"], "remote");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "text_completion", "{v}");
    let prefix = mock_provider::LEGACY_PREFIX;
    assert_eq!(v["choices"][0]["text"], format!("{prefix}Say hello"));
    assert_eq!(v["choices"][1]["text"], format!("{prefix}Say bye"));
    let sent = mock.last_request().unwrap();
    assert_eq!(sent.uri, "/v1/completions");
    assert_eq!(sent.headers["authorization"], "Bearer sk-backend");
    let mut expected = body.clone();
    expected["model"] = json!("gpt-test");
    assert_eq!(sent.body, expected, "passed through as it is");

    for asked in [false, true] {
        let mut stream = json!({"model": "remote", "prompt": "Say hello", "stream": true});
        if asked {
            stream["stream_options"] = json!({"include_usage": true});
        }
        let resp = post(&gw, "/v1/completions", "sk-dev", &stream).await;
        assert_eq!(resp.status(), 200);
        let events = sse_events(resp).await;
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        assert_eq!(
            events.iter().any(|e| e.contains("\"usage\"")),
            asked,
            "{events:?}"
        );
        assert!(
            events[0].contains(&format!("{prefix}Say hello")),
            "{events:?}"
        );
        let sent = mock.last_request().unwrap().body;
        assert_eq!(sent["stream_options"]["include_usage"], true);
    }

    // The key's allow-list.
    let resp = post(
        &gw,
        "/v1/completions",
        "sk-narrow",
        &json!({"model": "remote", "prompt": "a"}),
    )
    .await;
    assert_eq!(resp.status(), 403);
    error_body(resp).await;

    let rows = rows(gw, &db).await;
    assert_eq!(rows.len(), 4, "{rows:#?}");
    let ok: Vec<_> = rows.iter().filter(|r| r.status == 200).collect();
    assert_eq!(ok.len(), 3, "{rows:#?}");
    for row in ok {
        let prompts = if row.stream { 1 } else { 2 };
        assert_eq!(row.error_class, None, "{row:?}");
        assert_eq!(row.backend.as_deref(), Some("up"));
        assert_eq!(row.upstream_model.as_deref(), Some("gpt-test"));
        assert_eq!(
            row.prompt_tokens,
            (mock_provider::PROMPT_TOKENS * prompts) as i64
        );
        assert_eq!(
            row.completion_tokens,
            (mock_provider::COMPLETION_TOKENS * prompts) as i64
        );
    }
    assert!(rows
        .iter()
        .any(|r| r.status == 403 && r.key_name.as_deref() == Some("narrow")));
}

/// Passed-through requests are held to the key's budget like chat requests: reserved at
/// admission, settled with the real cost, refused with 429 `insufficient_quota` once the
/// next estimate no longer fits.
#[tokio::test]
async fn passed_through_requests_spend_the_budget() {
    let mock = Mock::start().await;
    // $0.001 per token; the budget fits one small completion (~$0.02 estimated, $0.018
    // spent) but not a second.
    let extra = "pricing:\n  gpt-test: { input: 1000, output: 1000 }\nkeys:\n  - name: capped\n    key: sk-capped\n    budget: { daily_usd: 0.03 }\n";
    let gw = gateway(&one_backend(&mock, "", "", extra)).await;
    let completion = json!({"model": "remote", "prompt": "Say hello", "max_tokens": 10});
    let resp = post(&gw, "/v1/completions", "sk-capped", &completion).await;
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let spent = gw.shared.load().accounting.state.budgets.usage(
        slmgate_config::policies::budget::BudgetScope::Key,
        "capped",
        std::time::SystemTime::now(),
    );
    let real = (mock_provider::PROMPT_TOKENS + mock_provider::COMPLETION_TOKENS) as f64 * 0.001;
    assert!((spent.day_spent_usd - real).abs() < 1e-9, "{spent:?}");
    for (path, body) in [
        ("/v1/completions", completion.clone()),
        (
            "/v1/responses",
            json!({"model": "remote", "input": "Say hello", "max_output_tokens": 10}),
        ),
    ] {
        let resp = post(&gw, path, "sk-capped", &body).await;
        assert_eq!(resp.status(), 429, "{path}");
        let v = error_body(resp).await;
        assert_eq!(v["error"]["code"], "budget_exceeded", "{v}");
    }
    assert_eq!(mock.requests(), 1);
}

#[tokio::test]
async fn responses_pass_through_with_the_model_rewritten_and_usage_recorded() {
    let mock = Mock::start().await;
    let (gw, _dir, db) = with_usage(&mock, "").await;
    let (input, output) = mock_provider::RESPONSES_USAGE;
    let body = json!({"model": "remote", "input": "Say hello", "max_output_tokens": 20});
    let resp = post(&gw, "/v1/responses", "sk-dev", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-slmgate-backend"], "up");
    assert_eq!(resp.headers()["x-slmgate-route"], "remote");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "response", "{v}");
    assert_eq!(v["output"][0]["content"][0]["text"], mock_provider::REPLY);
    assert_eq!(v["usage"]["input_tokens"], input);
    let sent = mock.last_request().unwrap();
    assert_eq!(sent.uri, "/v1/responses");
    assert_eq!(sent.body["model"], "gpt-test");
    assert_eq!(sent.body["input"], "Say hello");
    assert_eq!(sent.body["max_output_tokens"], 20);
    assert_eq!(sent.headers["authorization"], "Bearer sk-backend");

    let mut stream = body.clone();
    stream["stream"] = json!(true);
    let resp = post(&gw, "/v1/responses", "sk-dev", &stream).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    let deltas: String = text
        .split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter(|v| v["type"] == "response.output_text.delta")
        .filter_map(|v| v["delta"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(deltas, mock_provider::REPLY);
    assert!(text.contains("event: response.completed"), "{text}");

    let rows = rows(gw, &db).await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for (row, stream) in rows.iter().zip([false, true]) {
        assert_eq!(row.stream, stream);
        assert_eq!(row.status, 200);
        assert_eq!(row.error_class, None, "{row:?}");
        assert_eq!(row.requested_model, "remote");
        assert_eq!(row.key_name.as_deref(), Some("dev"));
        assert_eq!(row.backend.as_deref(), Some("up"));
        assert_eq!(row.upstream_model.as_deref(), Some("gpt-test"));
        assert_eq!(row.prompt_tokens, input as i64);
        assert_eq!(row.completion_tokens, output as i64);
    }
}

#[tokio::test]
async fn responses_refusals_and_upstream_errors_are_the_gateways_own() {
    let mock = Mock::start().await;
    let models = "  - name: broken\n    backend: up\n    model: error-500\n  - name: bad\n    backend: up\n    model: error-400\n";
    let gw = gateway(&one_backend(&mock, "", &format!("{OTHER}{models}"), KEYS)).await;
    let body = |model: &str| json!({"model": model, "input": "hi"});
    // The allow-list.
    let resp = post(&gw, "/v1/responses", "sk-narrow", &body("remote")).await;
    assert_eq!(resp.status(), 403);
    error_body(resp).await;
    // An unknown alias.
    let resp = post(&gw, "/v1/responses", "sk-dev", &body("nope")).await;
    assert_eq!(resp.status(), 404);
    error_body(resp).await;
    assert_eq!(mock.requests(), 0);
    // A 5xx: retried, then the gateway's 502 without the upstream's text.
    let resp = post(&gw, "/v1/responses", "sk-dev", &body("broken")).await;
    assert_eq!(resp.status(), 502);
    let v = error_body(resp).await;
    assert!(!v.to_string().contains("sk-backend"), "{v}");
    assert_eq!(mock.requests(), 3);
    // A 4xx the client caused: its status, the message masked.
    let resp = post(&gw, "/v1/responses", "sk-dev", &body("bad")).await;
    assert_eq!(resp.status(), 400);
    let v = error_body(resp).await;
    assert!(!v.to_string().contains("sk-backend"), "{v}");
}

#[cfg(feature = "local")]
mod local {
    use super::*;

    fn local_config(mock: &Mock, dir: &std::path::Path) -> String {
        let path = slmgate_local_model::fixtures::write_tiny_model(dir, "llama", 7);
        let backend = format!(
            "  - name: slm\n    kind: local\n    enabled: true\n    model: {}\n    max_tokens: 8\n",
            path.display()
        );
        one_backend(
            mock,
            &backend,
            &format!("{OTHER}  - name: local\n    backend: slm\n"),
            KEYS,
        )
    }

    #[tokio::test]
    async fn completions_run_on_the_local_model_and_responses_refuse_it() {
        let mock = Mock::start().await;
        let dir = tempfile::tempdir().unwrap();
        let gw = gateway(&local_config(&mock, dir.path())).await;
        let resp = post(
            &gw,
            "/v1/completions",
            "sk-dev",
            &json!({"model": "local", "prompt": "hello world", "max_tokens": 4, "temperature": 0}),
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-slmgate-backend"], "slm");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["object"], "text_completion", "{v}");
        assert!(v["choices"][0]["text"].is_string(), "{v}");
        assert!(
            v["usage"]["completion_tokens"].as_u64().unwrap() <= 4,
            "{v}"
        );

        let resp = post(
            &gw,
            "/v1/completions",
            "sk-dev",
            &json!({"model": "local", "prompt": "hello", "max_tokens": 3, "stream": true}),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let events = sse_events(resp).await;
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        for e in &events[..events.len() - 1] {
            let c: Value = serde_json::from_str(e).unwrap();
            assert_eq!(c["object"], "text_completion", "{c}");
        }

        let resp = post(
            &gw,
            "/v1/responses",
            "sk-dev",
            &json!({"model": "local", "input": "hi"}),
        )
        .await;
        assert_eq!(resp.status(), 400);
        let v = error_body(resp).await;
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("needs an OpenAI backend"),
            "{v}"
        );
        assert_eq!(mock.requests(), 0);
    }
}

#[tokio::test]
async fn responses_apply_the_rate_limit_and_record_refusals_and_cost() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("u.db").display());
    let extra = format!(
        "pricing:\n  gpt-test: {{ input: 1000, output: 2000 }}\nkeys:\n  - name: paced\n    key: sk-paced\n    rate_limit: {{ requests_per_minute: 1 }}\n    models: [remote]\nusage:\n  database: \"{db}\"\n  flush_interval: 1h\n"
    );
    let gw = gateway(&one_backend(&mock, "", "", &extra)).await;
    let body = json!({"model": "remote", "input": "hi"});
    let resp = post(&gw, "/v1/responses", "sk-paced", &body).await;
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let resp = post(&gw, "/v1/responses", "sk-paced", &body).await;
    assert_eq!(resp.status(), 429);
    error_body(resp).await;
    assert_eq!(mock.requests(), 1);
    let mut rows = rows(gw, &db).await;
    rows.sort_by_key(|r| r.status);
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let (input, output) = mock_provider::RESPONSES_USAGE;
    assert_eq!(rows[0].status, 200);
    let expected = (input as f64 * 1000.0 + output as f64 * 2000.0) / 1e6;
    assert!((rows[0].cost_usd - expected).abs() < 1e-9, "{:?}", rows[0]);
    assert_eq!(rows[1].status, 429);
    assert_eq!(rows[1].key_name.as_deref(), Some("paced"));
    assert!(rows[1].error_class.is_some());
    assert_eq!(rows[1].prompt_tokens, 0);
}
