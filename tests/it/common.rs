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

/// A Python interpreter that can `import {module}` (e.g. `openai.types`): `SLMGATE_PYTHON`, the
/// workspace's `.venv`, then `python3`. Probed with `-P` (the current directory is not on
/// `sys.path`) from `/`, so neither the workspace's `openai/` / `anthropic/` crate folders nor
/// anything in a temporary directory can shadow the package. `Err` says why each candidate
/// was refused.
pub fn python_with(module: &str) -> Result<String, String> {
    let candidates = [
        std::env::var("SLMGATE_PYTHON").ok(),
        Some(format!("{}/.venv/bin/python", env!("CARGO_MANIFEST_DIR"))),
        Some("python3".to_string()),
    ];
    let mut why = Vec::new();
    for py in candidates.into_iter().flatten() {
        let out = std::process::Command::new(&py)
            .args(["-P", "-c", &format!("import {module}")])
            .current_dir("/")
            .output();
        match out {
            Ok(o) if o.status.success() => return Ok(py),
            Ok(o) => why.push(format!(
                "{py}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => why.push(format!("{py}: {e}")),
        }
    }
    Err(why.join("\n"))
}

/// [`python_with`], or `None` with a note when the package is missing outside CI. In CI (`CI`
/// set) a missing package fails the test, with each candidate's error.
pub fn python_or_skip(module: &str) -> Option<String> {
    let package = module.split('.').next().unwrap_or(module);
    match python_with(module) {
        Ok(py) => Some(py),
        Err(why) => {
            assert!(
                std::env::var("CI").is_err(),
                "python `{package}` package missing in CI (scripts/python-env.sh installs it):\n{why}"
            );
            eprintln!(
                "SKIPPED: python3 with the `{package}` package not found (run scripts/python-env.sh)"
            );
            None
        }
    }
}
