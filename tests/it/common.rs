//! Shared test support: start the real gateway on a loopback port from a YAML string.
#![allow(dead_code)]

use std::time::Duration;

pub use mock_provider::Mock;
use slmgate_gateway::Running;

/// Loads `yaml` (no env interpolation beyond the defaults written in it) and starts the
/// gateway on 127.0.0.1:0.
pub async fn gateway(yaml: &str) -> Running {
    let cfg = slmgate_config::load_str_with_env(yaml, "test.yaml", &|_| None)
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    slmgate_gateway::start_on(&cfg, listener).await.unwrap()
}

/// A config with one OpenAI-compatible backend `up` at `mock`, and aliases. The mock fails
/// by model name on purpose, so `up` is never ejected here (tests/faults.rs tests ejection).
pub fn one_backend(mock: &Mock, extra_backend: &str, models: &str, extra: &str) -> String {
    format!(
        r#"
listen: "127.0.0.1:0"
backends:
  - name: up
    kind: openai
    base_url: {base}
    api_key: sk-backend
    timeout: 2s
    max_retries: 2
    retry_backoff: 10ms
    max_retry_backoff: 3s
    circuit_breaker: {{ enabled: false }}
{extra_backend}
models:
  - name: remote
    backend: up
    model: gpt-test
{models}
{extra}
"#,
        base = mock.base_url()
    )
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub fn url(gw: &Running, path: &str) -> String {
    format!("http://{}{}", gw.addr, path)
}

pub fn chat_body(model: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say hello"}],
        "stream": stream,
    })
}

/// Asserts an OpenAI-shaped error body and returns it.
pub async fn error_body(resp: reqwest::Response) -> serde_json::Value {
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");
    assert!(v["error"]["type"].is_string(), "{v}");
    assert!(v["error"].get("param").is_some(), "{v}");
    assert!(v["error"].get("code").is_some(), "{v}");
    v
}

/// The `data:` payloads of an SSE body, in order (`[DONE]` included).
pub async fn sse_events(resp: reqwest::Response) -> Vec<String> {
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| e.trim_start_matches("data: ").to_string())
        .collect()
}

/// `GET path` as JSON.
pub async fn get_json(gw: &Running, path: &str) -> serde_json::Value {
    client()
        .get(url(gw, path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
