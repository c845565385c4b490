//! End-to-end tests of the proxy: the real server on a loopback port, a mock upstream.

use std::time::{Duration, Instant};

use crate::common::*;
use futures::StreamExt;
use serde_json::json;

#[tokio::test]
async fn non_stream_happy_path_rewrites_model_and_key() {
    let mock = Mock::start().await;
    let gw = gateway(&one_backend(&mock, "", "", "")).await;
    let mut body = chat_body("remote", false);
    body["x_unknown_field"] = json!({"keep": [1, 2.5, "x"]});
    body["temperature"] = json!(0.30000000000000004);
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .bearer_auth("client-secret-should-not-leak")
        .header("x-request-id", "req-123")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "req-123");
    assert_eq!(resp.headers()["x-slmgate-backend"], "up");
    let overhead: f64 = resp.headers()["x-slmgate-overhead-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(overhead >= 0.0);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], mock_provider::REPLY);
    assert_eq!(v["usage"]["prompt_tokens"], mock_provider::PROMPT_TOKENS);

    let rec = mock.last_request().unwrap();
    assert_eq!(rec.body["model"], "gpt-test");
    assert_eq!(rec.body["x_unknown_field"], json!({"keep": [1, 2.5, "x"]}));
    assert_eq!(rec.body["temperature"], json!(0.30000000000000004));
    assert_eq!(rec.headers["authorization"], "Bearer sk-backend");
    assert_eq!(rec.headers["x-request-id"], "req-123");
}

#[tokio::test]
async fn generates_a_request_id_when_absent() {
    let mock = Mock::start().await;
    let gw = gateway(&one_backend(&mock, "", "", "")).await;
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .json(&chat_body("remote", false))
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "uuid: {id}");
    assert_eq!(
        mock.last_request().unwrap().headers["x-request-id"],
        id.as_str()
    );
}

#[tokio::test]
async fn stream_passes_chunks_and_hides_unrequested_usage() {
    let mock = Mock::start().await;
    let gw = gateway(&one_backend(&mock, "", "", "")).await;
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .json(&chat_body("remote", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = sse_events(resp).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let text: String = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str::<serde_json::Value>(e).unwrap())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(text, mock_provider::REPLY);
    assert!(
        !events.iter().any(|e| e.contains("\"usage\"")),
        "{events:?}"
    );
    // The gateway asked upstream for usage even though the client did not.
    let rec = mock.last_request().unwrap();
    assert_eq!(rec.body["stream_options"]["include_usage"], true);
    assert_eq!(rec.body["model"], "gpt-test");
}

#[tokio::test]
async fn stream_keeps_usage_when_client_asks() {
    let mock = Mock::start().await;
    let gw = gateway(&one_backend(&mock, "", "", "")).await;
    let mut body = chat_body("remote", true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let events = sse_events(resp).await;
    let usage = events
        .iter()
        .find(|e| e.contains("\"usage\""))
        .expect("usage chunk");
    let v: serde_json::Value = serde_json::from_str(usage).unwrap();
    assert_eq!(
        v["usage"]["completion_tokens"],
        mock_provider::COMPLETION_TOKENS
    );
}

#[tokio::test]
async fn stream_chunks_arrive_as_they_are_produced() {
    let mock = Mock::start().await;
    let gw = gateway(&one_backend(
        &mock,
        "",
        "  - name: drip\n    backend: up\n    model: drip-40\n",
        "",
    ))
    .await;
    let start = Instant::now();
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .json(&chat_body("drip", true))
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    let first_at = start.elapsed();
    assert!(String::from_utf8_lossy(&first).contains("t0"));
    // 50 chunks 40 ms apart take 2 s; the first must not wait for the rest.
    assert!(
        first_at < Duration::from_millis(1000),
        "first chunk after {first_at:?}"
    );
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_stream() {
    let mock = Mock::start().await;
    let gw = gateway(&one_backend(
        &mock,
        "",
        "  - name: drip\n    backend: up\n    model: drip-30\n",
        "",
    ))
    .await;
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .json(&chat_body("drip", true))
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let _ = stream.next().await.unwrap().unwrap();
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while mock.streams_cancelled() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        mock.streams_cancelled(),
        1,
        "upstream stream was not cancelled"
    );
    assert_eq!(mock.streams_completed(), 0);
}

#[tokio::test]
async fn mid_stream_upstream_failure_ends_with_an_error_event() {
    let mock = Mock::start().await;
    let gw = gateway(&one_backend(
        &mock,
        "",
        "  - name: cut\n    backend: up\n    model: cut\n",
        "",
    ))
    .await;
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .json(&chat_body("cut", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let events = sse_events(resp).await;
    assert!(events[1].contains("partial"));
    // An error event, then `[DONE]`: a well-formed end (see tests/faults.rs).
    assert_eq!(events.last().unwrap(), "[DONE]", "{events:?}");
    let last: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert!(last["error"]["message"].is_string(), "{events:?}");
    // Never retried once the stream had started.
    assert_eq!(mock.requests(), 1);
}

#[tokio::test]
async fn falls_back_to_the_next_backend_on_500() {
    let primary = Mock::start().await;
    let secondary = Mock::start().await;
    let extra = format!(
        "  - name: second\n    kind: openai\n    base_url: {}\n    api_key: sk-second\n    max_retries: 0\n",
        secondary.base_url()
    );
    let models = "  - name: fb\n    backend: up\n    model: error-500\n    fallbacks:\n      - backend: second\n        model: gpt-second\n";
    let gw = gateway(&one_backend(&primary, &extra, models, "")).await;
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .json(&chat_body("fb", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-slmgate-backend"], "second");
    // Primary: first attempt + 2 retries.
    assert_eq!(primary.requests(), 3);
    assert_eq!(secondary.requests(), 1);
    let rec = secondary.last_request().unwrap();
    assert_eq!(rec.body["model"], "gpt-second");
    assert_eq!(rec.headers["authorization"], "Bearer sk-second");
}

#[tokio::test]
async fn all_targets_failing_is_502() {
    let mock = Mock::start().await;
    let models = "  - name: broken\n    backend: up\n    model: error-503\n";
    let gw = gateway(&one_backend(&mock, "", models, "")).await;
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .json(&chat_body("broken", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let v = error_body(resp).await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("503"),
        "{v}"
    );
    assert_eq!(mock.requests(), 3);
}

#[tokio::test]
async fn upstream_client_errors_pass_through_without_retry() {
    let mock = Mock::start().await;
    let models = "  - name: bad\n    backend: up\n    model: error-400\n";
    let gw = gateway(&one_backend(&mock, "", models, "")).await;
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .json(&chat_body("bad", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(mock.requests(), 1);
}

#[tokio::test]
async fn retries_flaky_upstream_with_backoff() {
    let mock = Mock::start().await;
    let models = "  - name: flaky\n    backend: up\n    model: flaky-2\n";
    let gw = gateway(&one_backend(&mock, "", models, "")).await;
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .json(&chat_body("flaky", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.requests(), 3);
}

#[tokio::test]
async fn retry_honours_retry_after() {
    let mock = Mock::start().await;
    let models = "  - name: limited\n    backend: up\n    model: retry-after-1\n";
    let gw = gateway(&one_backend(&mock, "", models, "")).await;
    let start = Instant::now();
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .json(&chat_body("limited", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.requests(), 2);
    let h = mock.history();
    let gap = h[1].at.duration_since(h[0].at);
    assert!(gap >= Duration::from_millis(990), "retried after {gap:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
    // The overhead header excludes the back-off wait.
    let overhead: f64 = resp.headers()["x-slmgate-overhead-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        overhead < 500.0,
        "overhead {overhead} ms includes the upstream wait"
    );
}

#[tokio::test]
async fn upstream_timeout_is_504() {
    let mock = Mock::start().await;
    let extra = format!(
        "  - name: impatient\n    kind: openai\n    base_url: {}\n    timeout: 200ms\n",
        mock.base_url()
    );
    let models = "  - name: slow\n    backend: impatient\n    model: slow-3000\n";
    let gw = gateway(&one_backend(&mock, &extra, models, "")).await;
    let start = Instant::now();
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .json(&chat_body("slow", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert!(start.elapsed() < Duration::from_secs(2));
    let v = error_body(resp).await;
    assert_eq!(v["error"]["code"], "upstream_timeout");
}

#[tokio::test]
async fn malformed_requests_are_400() {
    let mock = Mock::start().await;
    let gw = gateway(&one_backend(&mock, "", "", "")).await;
    for body in [
        "{not json",
        "[]",
        r#"{"model": 5, "messages": []}"#,
        r#"{"model": "remote"}"#,
        r#"{"model": "remote", "messages": [{"content": "no role"}]}"#,
        r#"{"model": "remote", "messages": [{"role":"user","content":"x"}], "stream": "yes"}"#,
    ] {
        let resp = client()
            .post(url(&gw, "/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let v = error_body(resp).await;
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    assert_eq!(mock.requests(), 0);
}

#[tokio::test]
async fn unknown_model_is_404_and_names_the_alternatives() {
    let mock = Mock::start().await;
    let gw = gateway(&one_backend(&mock, "", "", "")).await;
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .json(&chat_body("gpt-9000", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v = error_body(resp).await;
    assert_eq!(v["error"]["code"], "model_not_found");
    assert!(v["error"]["message"].as_str().unwrap().contains("remote"));
}

#[tokio::test]
async fn keys_are_enforced() {
    let mock = Mock::start().await;
    // carol's key is stored as its sha256 (`slmgate keys hash test`).
    let keys = "keys:\n  - name: alice\n    key: sk-alice\n  - name: bob\n    key: sk-bob\n    models: [other]\n  - name: carol\n    key_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n";
    let models = "  - name: other\n    backend: up\n    model: gpt-other\n";
    let gw = gateway(&one_backend(&mock, "", models, keys)).await;
    let send = |key: Option<&'static str>, model: &'static str| {
        let mut rb = client()
            .post(url(&gw, "/v1/chat/completions"))
            .json(&chat_body(model, false));
        if let Some(k) = key {
            rb = rb.bearer_auth(k);
        }
        rb.send()
    };
    assert_eq!(send(None, "remote").await.unwrap().status(), 401);
    let r = send(Some("sk-wrong"), "remote").await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(error_body(r).await["error"]["code"], "invalid_api_key");
    assert_eq!(
        send(Some("sk-alice"), "remote").await.unwrap().status(),
        200
    );
    assert_eq!(send(Some("sk-bob"), "remote").await.unwrap().status(), 403);
    assert_eq!(send(Some("sk-bob"), "other").await.unwrap().status(), 200);
    assert_eq!(send(Some("test"), "remote").await.unwrap().status(), 200);
    // /v1/models shows each key only what it may use; probes need no key.
    let models: serde_json::Value = client()
        .get(url(&gw, "/v1/models"))
        .bearer_auth("sk-bob")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"].as_array().unwrap().len(), 1);
    assert_eq!(models["data"][0]["id"], "other");
    // ...and one model by id the same way: a model the key may not use does not exist.
    let one = |id: &'static str| {
        client()
            .get(url(&gw, &format!("/v1/models/{id}")))
            .bearer_auth("sk-bob")
            .send()
    };
    assert_eq!(one("other").await.unwrap().status(), 200);
    let r = one("remote").await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_body(r).await["error"]["code"], "model_not_found");
    assert_eq!(
        client()
            .get(url(&gw, "/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client()
            .get(url(&gw, "/v1/models"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let mock = Mock::start().await;
    let gw = gateway(&one_backend(
        &mock,
        "",
        "",
        "limits:\n  max_body_bytes: 1024\n",
    ))
    .await;
    let mut body = chat_body("remote", false);
    body["messages"][0]["content"] = json!("x".repeat(4096));
    // With Content-Length.
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    error_body(resp).await;
    // Chunked, no Content-Length.
    let bytes = serde_json::to_vec(&body).unwrap();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(512).map(|c| Ok(c.to_vec())).collect();
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    error_body(resp).await;
    assert_eq!(mock.requests(), 0);
}

#[tokio::test]
async fn overload_sheds_with_503_and_retry_after() {
    let mock = Mock::start().await;
    let models = "  - name: slow\n    backend: up\n    model: slow-800\n";
    let gw = gateway(&one_backend(
        &mock,
        "",
        models,
        "limits:\n  max_concurrent_requests: 1\n",
    ))
    .await;
    let c = client();
    let first = tokio::spawn(
        c.post(url(&gw, "/v1/chat/completions"))
            .json(&chat_body("slow", false))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resp = c
        .post(url(&gw, "/v1/chat/completions"))
        .json(&chat_body("remote", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    error_body(resp).await;
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
}

#[tokio::test]
async fn gateway_timeout_is_504() {
    let mock = Mock::start().await;
    let models = "  - name: slow\n    backend: up\n    model: slow-3000\n";
    let gw = gateway(&one_backend(
        &mock,
        "",
        models,
        "limits:\n  request_timeout: 300ms\n",
    ))
    .await;
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .json(&chat_body("slow", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(error_body(resp).await["error"]["code"], "gateway_timeout");
}

#[tokio::test]
async fn probes_models_and_unknown_paths() {
    let mock = Mock::start().await;
    let gw = gateway(&one_backend(&mock, "", "", "")).await;
    let c = client();
    let r = c.get(url(&gw, "/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(url(&gw, "/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v = get_json(&gw, "/v1/models").await;
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "remote");
    assert_eq!(v["data"][0]["object"], "model");
    let v = get_json(&gw, "/v1/models/remote").await;
    assert_eq!(
        (&v["id"], &v["object"]),
        (&"remote".into(), &"model".into())
    );
    let r = c.get(url(&gw, "/v1/models/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_body(r).await["error"]["code"], "model_not_found");
    for path in ["/nope", "/v1/nope", "/v1/files/abc"] {
        let r = c.get(url(&gw, path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(
            error_body(r).await["error"]["type"],
            "invalid_request_error",
            "{path}"
        );
    }
    let r = c
        .get(url(&gw, "/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    error_body(r).await;
}

#[tokio::test]
async fn disabled_backend_models_are_404_with_the_reason() {
    let mock = Mock::start().await;
    // Not loopback: a loopback base_url (Ollama, vLLM on localhost) needs no key.
    let extra = "  - name: keyless\n    kind: openai\n    enabled: auto\n    base_url: https://api.example.invalid/v1\n    api_key: ${NOT_SET_ANYWHERE}\n";
    let models = "  - name: off\n    backend: keyless\n    model: x\n";
    let gw = gateway(&one_backend(&mock, extra, models, "")).await;
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .json(&chat_body("off", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v = error_body(resp).await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("keyless"),
        "{v}"
    );
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let mock = Mock::start().await;
    let models = "  - name: slow\n    backend: up\n    model: slow-600\n";
    let gw = gateway(&one_backend(&mock, "", models, "")).await;
    let c = client();
    let inflight = tokio::spawn(
        c.post(url(&gw, "/v1/chat/completions"))
            .json(&chat_body("slow", false))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let addr = gw.addr;
    gw.shutdown();
    let resp = inflight.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], mock_provider::REPLY);
    tokio::time::timeout(Duration::from_secs(5), gw.wait())
        .await
        .expect("server stopped")
        .unwrap();
    // No longer accepting.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
