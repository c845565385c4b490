//! Inbound Anthropic Messages API (`POST /v1/messages`) through the real gateway and the
//! mock OpenAI upstream: answers, the stream's event sequence, tool use, errors in
//! Anthropic's shape, token counting and usage rows.

use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};
use slmgate_usage::Store;

const KEYS: &str = "keys:\n  - name: claude\n    key: sk-claude\n";

fn models() -> &'static str {
    "  - name: tools\n    backend: up\n    model: tools\n  - name: broken\n    backend: up\n    model: error-500\n"
}

async fn start(mock: &Mock, extra: &str) -> slmgate_gateway::Running {
    gateway(&one_backend(mock, "", models(), extra)).await
}

fn body(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "max_tokens": 64,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}],
        "stream": stream,
    })
}

async fn post(gw: &slmgate_gateway::Running, key: Option<&str>, body: &Value) -> reqwest::Response {
    let mut req = client()
        .post(url(gw, "/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(body);
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    req.send().await.unwrap()
}

/// `(event name, data)` pairs of an Anthropic SSE body, checking each `event:` matches its
/// data's `type`.
async fn events(resp: reqwest::Response) -> Vec<(String, Value)> {
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|block| {
            let mut name = String::new();
            let mut data = Value::Null;
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap();
                }
            }
            assert_eq!(data["type"], name.as_str(), "{block}");
            (name, data)
        })
        .collect()
}

async fn anthropic_error(resp: reqwest::Response, status: u16, kind: &str) -> Value {
    assert_eq!(resp.status(), status);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/json"), "{ct}");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
    v
}

#[tokio::test]
async fn messages_answers_text_in_anthropic_shape() {
    let mock = Mock::start_with(true).await;
    let gw = start(&mock, KEYS).await;
    let resp = post(&gw, Some("sk-claude"), &body("remote", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-slmgate-route"], "remote");
    assert_eq!(resp.headers()["x-slmgate-backend"], "up");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "remote");
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(v["content"][0]["text"], mock_provider::REPLY);
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["input_tokens"], mock_provider::PROMPT_TOKENS);
    assert_eq!(
        v["usage"]["output_tokens"],
        mock_provider::COMPLETION_TOKENS
    );
    // The upstream got an OpenAI request: the system prompt first, the upstream model.
    let sent = mock.last_request().unwrap().body;
    assert_eq!(sent["model"], "gpt-test");
    assert_eq!(
        sent["messages"][0],
        json!({"role":"system","content":"Be brief."})
    );
    assert_eq!(
        sent["messages"][1],
        json!({"role":"user","content":"Say hello"})
    );
    assert_eq!(sent["max_tokens"], 64);
}

#[tokio::test]
async fn messages_stream_follows_anthropics_event_sequence() {
    let mock = Mock::start().await;
    let gw = start(&mock, "").await;
    let resp = post(&gw, None, &body("remote", true)).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(resp.headers()["x-slmgate-route"], "remote");
    let ev = events(resp).await;
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    let deltas = mock_provider::REPLY_CHUNKS.len();
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", deltas));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    assert_eq!(ev[0].1["message"]["model"], "remote");
    assert_eq!(ev[0].1["message"]["role"], "assistant");
    let text: String = ev
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, mock_provider::REPLY);
    let delta = &ev[ev.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(
        delta["usage"]["output_tokens"],
        mock_provider::COMPLETION_TOKENS
    );
    assert_eq!(delta["usage"]["input_tokens"], mock_provider::PROMPT_TOKENS);
}

fn weather_tool() -> Value {
    json!({
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    })
}

#[tokio::test]
async fn tool_use_round_trip() {
    let mock = Mock::start_with(true).await;
    let gw = start(&mock, "").await;
    let first = json!({
        "model": "tools",
        "max_tokens": 64,
        "tools": [weather_tool()],
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
    });
    let v: Value = post(&gw, None, &first).await.json().await.unwrap();
    assert_eq!(v["stop_reason"], "tool_use", "{v}");
    let call = &v["content"][0];
    assert_eq!(call["type"], "tool_use");
    assert_eq!(call["id"], mock_provider::TOOL_CALL_ID);
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["input"], json!({"city": "Paris"}));
    let sent = mock.last_request().unwrap().body;
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather");

    // The tool result goes back; the model answers with text.
    let second = json!({
        "model": "tools",
        "max_tokens": 64,
        "tools": [weather_tool()],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [call]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": mock_provider::TOOL_CALL_ID, "content": "sunny"}
            ]},
        ],
    });
    let v: Value = post(&gw, None, &second).await.json().await.unwrap();
    assert_eq!(v["stop_reason"], "end_turn", "{v}");
    assert_eq!(v["content"][0]["text"], "Tool said: sunny");
    let sent = mock.last_request().unwrap().body;
    let msgs = sent["messages"].as_array().unwrap();
    assert_eq!(msgs[1]["tool_calls"][0]["id"], mock_provider::TOOL_CALL_ID);
    assert_eq!(
        msgs[2],
        json!({"role":"tool","tool_call_id":mock_provider::TOOL_CALL_ID,"content":"sunny"})
    );

    // Streamed: a tool_use block whose input arrives as JSON fragments.
    let mut streamed = first.clone();
    streamed["stream"] = json!(true);
    let ev = events(post(&gw, None, &streamed).await).await;
    let start = ev
        .iter()
        .find(|(n, _)| n == "content_block_start")
        .map(|(_, d)| d)
        .unwrap();
    assert_eq!(start["content_block"]["type"], "tool_use");
    assert_eq!(start["content_block"]["name"], "get_weather");
    let json_text: String = ev
        .iter()
        .filter(|(n, d)| n == "content_block_delta" && d["delta"]["type"] == "input_json_delta")
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(json_text, mock_provider::TOOL_ARGUMENTS);
    let delta = &ev[ev.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(ev.last().unwrap().0, "message_stop");
}

#[tokio::test]
async fn errors_have_anthropics_shape() {
    let mock = Mock::start().await;
    let gw = start(&mock, KEYS).await;
    // Malformed JSON.
    let resp = client()
        .post(url(&gw, "/v1/messages"))
        .header("x-api-key", "sk-claude")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    anthropic_error(resp, 400, "invalid_request_error").await;
    // Valid JSON, missing `max_tokens`.
    let mut no_max = body("remote", false);
    no_max.as_object_mut().unwrap().remove("max_tokens");
    anthropic_error(
        post(&gw, Some("sk-claude"), &no_max).await,
        400,
        "invalid_request_error",
    )
    .await;
    // Unknown model.
    let v = anthropic_error(
        post(&gw, Some("sk-claude"), &body("nope", false)).await,
        404,
        "not_found_error",
    )
    .await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("nope"),
        "{v}"
    );
    // Missing and wrong keys.
    anthropic_error(
        post(&gw, None, &body("remote", false)).await,
        401,
        "authentication_error",
    )
    .await;
    anthropic_error(
        post(&gw, Some("sk-wrong"), &body("remote", false)).await,
        401,
        "authentication_error",
    )
    .await;
    // The backend fails: the gateway's own 5xx, never the backend's text.
    let v = anthropic_error(
        post(&gw, Some("sk-claude"), &body("broken", false)).await,
        502,
        "api_error",
    )
    .await;
    assert!(!v.to_string().contains("mock_error"), "{v}");
    // Wrong method.
    let resp = client()
        .get(url(&gw, "/v1/messages"))
        .header("x-api-key", "sk-claude")
        .send()
        .await
        .unwrap();
    anthropic_error(resp, 405, "invalid_request_error").await;
}

#[tokio::test]
async fn x_api_key_authenticates_the_openai_endpoints_too() {
    let mock = Mock::start().await;
    let gw = start(&mock, KEYS).await;
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .header("x-api-key", "sk-claude")
        .json(&chat_body("remote", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn count_tokens_estimates_the_prompt() {
    let mock = Mock::start().await;
    let gw = start(&mock, "").await;
    let short = json!({"model": "remote", "messages": [{"role": "user", "content": "Hi"}]});
    let long = json!({
        "model": "remote",
        "system": "You are a careful assistant.",
        "tools": [weather_tool()],
        "messages": [{"role": "user", "content": "Tell me the weather in Paris, London and Rome, please. ".repeat(20)}]
    });
    let mut counts = Vec::new();
    for b in [&short, &long] {
        let resp = client()
            .post(url(&gw, "/v1/messages/count_tokens"))
            .json(b)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        counts.push(v["input_tokens"].as_u64().unwrap());
    }
    assert!(counts[0] > 0 && counts[1] > counts[0] * 10, "{counts:?}");
    assert_eq!(mock.requests(), 0, "counting calls no backend");
    let resp = client()
        .post(url(&gw, "/v1/messages/count_tokens"))
        .json(&json!({"model": "remote"}))
        .send()
        .await
        .unwrap();
    anthropic_error(resp, 400, "invalid_request_error").await;
}

#[tokio::test]
async fn messages_write_usage_rows() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("u.db").display());
    let extra = format!("{KEYS}usage:\n  database: \"{db}\"\n  flush_interval: 1h\n");
    let gw = start(&mock, &extra).await;
    for stream in [false, true] {
        let resp = post(&gw, Some("sk-claude"), &body("remote", stream)).await;
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    let writer = gw.usage.clone().expect("usage writer");
    gw.shutdown();
    tokio::time::timeout(Duration::from_secs(20), gw.wait())
        .await
        .expect("shutdown is bounded")
        .unwrap();
    assert_eq!(writer.sink.dropped(), 0);
    let store = Store::connect(&db).await.unwrap();
    let mut rows = store.rows(0, i64::MAX).await.unwrap();
    store.close().await;
    rows.sort_by_key(|r| r.stream);
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for (row, stream) in rows.iter().zip([false, true]) {
        assert_eq!(row.stream, stream);
        assert_eq!(row.requested_model, "remote");
        assert_eq!(row.key_name.as_deref(), Some("claude"));
        assert_eq!(row.backend.as_deref(), Some("up"));
        assert_eq!(row.prompt_tokens, mock_provider::PROMPT_TOKENS as i64);
        assert_eq!(
            row.completion_tokens,
            mock_provider::COMPLETION_TOKENS as i64
        );
    }
}
