//! Outbound `kind: anthropic` and `kind: azure` backends against the mock upstream: OpenAI
//! requests translated to Messages and back (JSON and streamed, tool calls), usage exact in
//! the answer and in the usage rows, 529 retried, untranslatable requests refused before any
//! upstream call; Azure's deployment URL, `api-version` and `api-key` header.

use crate::common::*;
use mock_provider::{ANTHROPIC_USAGE, REPLY, TOOL_INPUT};
use serde_json::{json, Value};
use slmgate_usage::Store;

/// USD per 1M tokens of the mock Claude model.
const IN_PRICE: f64 = 1000.0;
const OUT_PRICE: f64 = 2000.0;
/// Prompt-cache reads and writes have their own rates.
const CACHED_PRICE: f64 = 100.0;
const WRITE_PRICE: f64 = 1250.0;

/// Prompt tokens as OpenAI counts them: input + cache creation + cache read.
const PROMPT: u64 = ANTHROPIC_USAGE.0 + ANTHROPIC_USAGE.1 + ANTHROPIC_USAGE.2;
const COMPLETION: u64 = ANTHROPIC_USAGE.3;

fn config(mock: &Mock, database: &str) -> String {
    format!(
        r#"
listen: "127.0.0.1:0"
backends:
  - name: claude
    kind: anthropic
    base_url: http://{addr}
    api_key: sk-ant-test
    timeout: 2s
    max_retries: 2
    retry_backoff: 10ms
    max_retry_backoff: 3s
    circuit_breaker: {{ enabled: false }}
  - name: az
    kind: azure
    base_url: http://{addr}/
    api_key: az-secret
    api_version: 2024-10-21
    timeout: 2s
    circuit_breaker: {{ enabled: false }}
models:
  - name: claude
    backend: claude
    model: mock-claude
  - name: claude-tool
    backend: claude
    model: tool
  - name: claude-overloaded
    backend: claude
    model: overloaded-1
  - name: claude-bad
    backend: claude
    model: error-400
  - name: azure
    backend: az
    model: my-deploy
pricing:
  mock-claude: {{ input: {IN_PRICE}, output: {OUT_PRICE}, cached_input: {CACHED_PRICE}, cache_write: {WRITE_PRICE} }}
{usage}
"#,
        addr = mock.addr(),
        usage = if database.is_empty() {
            String::new()
        } else {
            format!("usage:\n  database: \"{database}\"")
        }
    )
}

async fn post(gw: &slmgate_gateway::Running, body: Value) -> reqwest::Response {
    client()
        .post(url(gw, "/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The JSON chunks of a stream (`[DONE]` checked and left out).
async fn chunks(resp: reqwest::Response) -> Vec<Value> {
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let events = sse_events(resp).await;
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap_or_else(|err| panic!("{err}: {e}")))
        .collect()
}

fn text_of(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

fn check_usage(u: &Value) {
    assert_eq!(u["prompt_tokens"], PROMPT, "{u}");
    assert_eq!(u["completion_tokens"], COMPLETION, "{u}");
    assert_eq!(u["total_tokens"], PROMPT + COMPLETION, "{u}");
    assert_eq!(
        u["prompt_tokens_details"]["cached_tokens"], ANTHROPIC_USAGE.2,
        "{u}"
    );
    assert_eq!(u["cache_creation_input_tokens"], ANTHROPIC_USAGE.1, "{u}");
}

/// JSON and streamed answers through `kind: anthropic`: text, usage with cache tokens, the
/// headers and body the upstream got, and one exact usage row (tokens and cost) each.
#[tokio::test]
async fn anthropic_json_and_stream_with_exact_usage() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("usage.db").display());
    let gw = gateway(&config(&mock, &db)).await;

    let mut body = json!({
        "model": "claude",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"}
        ],
        "max_tokens": 100,
    });
    let resp = post(&gw, body.clone()).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], REPLY);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    check_usage(&v["usage"]);

    let req = mock.last_request().unwrap();
    assert_eq!(req.uri, "/v1/messages");
    assert_eq!(req.headers["x-api-key"], "sk-ant-test");
    assert_eq!(req.headers["anthropic-version"], "2023-06-01");
    assert!(req.headers.get("authorization").is_none());
    assert_eq!(req.body["model"], "mock-claude");
    assert_eq!(req.body["max_tokens"], 100);
    assert_eq!(req.body["system"], "Be brief.");
    assert_eq!(
        req.body["messages"],
        json!([{"role": "user", "content": "Say hello"}])
    );

    // Streamed, without asking for usage: no usage chunk reaches the client.
    body["stream"] = json!(true);
    let c = chunks(post(&gw, body.clone()).await).await;
    assert_eq!(mock.last_request().unwrap().body["stream"], true);
    assert_eq!(text_of(&c), REPLY);
    assert_eq!(c[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(
        c.iter().all(|c| c.get("usage").is_none_or(Value::is_null)),
        "{c:?}"
    );
    let last = c.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");

    // Streamed, asking for usage: the last chunk carries it.
    body["stream_options"] = json!({"include_usage": true});
    let c = chunks(post(&gw, body).await).await;
    assert_eq!(text_of(&c), REPLY);
    let last = c.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    check_usage(&last["usage"]);

    assert_eq!(mock.requests(), 3);
    gw.shutdown();
    gw.wait().await.unwrap();
    let store = Store::connect(&db).await.unwrap();
    let rows = store.rows(0, i64::MAX).await.unwrap();
    store.close().await;
    assert_eq!(rows.len(), 3, "{rows:#?}");
    // (input, cache writes, cache reads, output) tokens, each at its rate.
    let (fresh, written, read, out) = ANTHROPIC_USAGE;
    let cost = (fresh as f64 * IN_PRICE
        + written as f64 * WRITE_PRICE
        + read as f64 * CACHED_PRICE
        + out as f64 * OUT_PRICE)
        / 1e6;
    for (row, stream) in rows.iter().zip([false, true, true]) {
        assert_eq!(row.stream, stream, "{row:#?}");
        assert_eq!(row.backend.as_deref(), Some("claude"));
        assert_eq!(row.upstream_model.as_deref(), Some("mock-claude"));
        assert_eq!(row.prompt_tokens, PROMPT as i64, "{row:#?}");
        assert_eq!(row.completion_tokens, COMPLETION as i64, "{row:#?}");
        assert!((row.cost_usd - cost).abs() < 1e-12, "{row:#?}");
    }
}

/// Tools go out as Anthropic tools; `tool_use` comes back as `tool_calls`, JSON and streamed
/// (`input_json_delta` fragments become argument fragments).
#[tokio::test]
async fn anthropic_tool_calls_are_translated() {
    let mock = Mock::start().await;
    let gw = gateway(&config(&mock, "")).await;
    let mut body = json!({
        "model": "claude-tool",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
        }}],
        "tool_choice": "required",
    });
    let resp = post(&gw, body.clone()).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let req = mock.last_request().unwrap();
    assert_eq!(req.body["tools"][0]["name"], "get_weather");
    assert_eq!(req.body["tools"][0]["input_schema"]["type"], "object");
    assert_eq!(req.body["tool_choice"]["type"], "any");
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["id"], "toolu_1");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, serde_json::from_str::<Value>(TOOL_INPUT).unwrap());

    body["stream"] = json!(true);
    let c = chunks(post(&gw, body).await).await;
    assert_eq!(text_of(&c), REPLY);
    let calls: Vec<&Value> = c
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(calls[0]["id"], "toolu_1");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert!(calls.iter().all(|c| c["index"] == 0));
    let args: String = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, TOOL_INPUT);
    let finish: Vec<&Value> = c
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("tool_calls")]);
}

/// A 529 (overloaded) is retried like a 5xx; the next attempt answers.
#[tokio::test]
async fn anthropic_overloaded_is_retried() {
    let mock = Mock::start().await;
    let gw = gateway(&config(&mock, "")).await;
    let resp = post(&gw, chat_body("claude-overloaded", false)).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], REPLY);
    assert_eq!(mock.requests(), 2);
}

/// A request with no Messages equivalent is the client's 400, and the upstream is never
/// called; an upstream 400 keeps its status in OpenAI's error shape.
#[tokio::test]
async fn anthropic_refusals_and_client_errors() {
    let mock = Mock::start().await;
    let gw = gateway(&config(&mock, "")).await;
    let mut body = chat_body("claude", false);
    body["n"] = json!(2);
    let resp = post(&gw, body).await;
    assert_eq!(resp.status(), 400);
    let e = error_body(resp).await;
    assert_eq!(e["error"]["param"], "n", "{e}");
    let mut body = chat_body("claude", false);
    body["response_format"] = json!({"type": "json_object"});
    assert_eq!(post(&gw, body).await.status(), 400);
    assert_eq!(mock.requests(), 0);

    let resp = post(&gw, chat_body("claude-bad", false)).await;
    assert_eq!(resp.status(), 400);
    let e = error_body(resp).await;
    assert_eq!(e["error"]["type"], "invalid_request_error", "{e}");
    assert_eq!(mock.requests(), 1, "a 400 is not retried");
}

/// `kind: azure`: the deployment (the target's model) in the path, `api-version` in the
/// query, the key as `api-key`; the answer passes through, JSON and streamed.
#[tokio::test]
async fn azure_deployment_url_and_api_key() {
    let mock = Mock::start().await;
    let gw = gateway(&config(&mock, "")).await;
    let resp = post(&gw, chat_body("azure", false)).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], REPLY);
    let req = mock.last_request().unwrap();
    assert_eq!(
        req.uri,
        "/openai/deployments/my-deploy/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(req.headers["api-key"], "az-secret");
    assert!(req.headers.get("authorization").is_none());

    let c = chunks(post(&gw, chat_body("azure", true)).await).await;
    assert_eq!(text_of(&c), REPLY);
}
