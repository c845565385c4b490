//! Hostile and malformed chat requests: every one is a 400 in OpenAI's error shape before any
//! upstream call, and a client `x-request-id` is bounded in length and characters.

use crate::common::*;
use serde_json::{json, Value};

fn with(extra: Value) -> Value {
    let mut body = chat_body("remote", false);
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

#[tokio::test]
async fn bad_parameters_are_400_before_any_upstream_call() {
    let mock = Mock::start_with(true).await;
    let gw = gateway(&one_backend(&mock, "", "", "")).await;
    let object_content = json!({
        "model": "remote",
        "messages": [{"role": "user", "content": {"text": "hi"}}],
    });
    let cases: Vec<(&str, String, &str)> = vec![
        ("n", with(json!({"n": 1000})).to_string(), "n"),
        (
            "negative max_tokens",
            with(json!({"max_tokens": -5})).to_string(),
            "max_tokens",
        ),
        (
            "text max_tokens",
            with(json!({"max_tokens": "many"})).to_string(),
            "max_tokens",
        ),
        (
            "text temperature",
            with(json!({"temperature": "hot"})).to_string(),
            "temperature",
        ),
        ("object content", object_content.to_string(), "messages"),
        ("tools", with(json!({"tools": "nope"})).to_string(), "tools"),
        (
            // serde_json cannot even build this string: it is written by hand.
            "lone surrogate",
            r#"{"model":"remote","messages":[{"role":"user","content":"a\ud800b"}]}"#.to_string(),
            "",
        ),
    ];
    for (what, body, param) in cases {
        let resp = client()
            .post(url(&gw, "/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{what}");
        let v = error_body(resp).await;
        assert_eq!(v["error"]["type"], "invalid_request_error", "{what}: {v}");
        if param.is_empty() {
            assert!(v["error"]["param"].is_null(), "{what}: {v}");
        } else {
            assert_eq!(v["error"]["param"], param, "{what}: {v}");
        }
    }
    assert_eq!(mock.requests(), 0, "nothing reached the upstream");
    // A good request still goes through.
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .json(&with(json!({"n": 2, "max_tokens": 5, "temperature": 0.5})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn client_request_ids_are_bounded_in_length_and_charset() {
    let mock = Mock::start_with(true).await;
    let gw = gateway(&one_backend(&mock, "", "", "")).await;
    let send = |id: String| {
        let gw = &gw;
        async move {
            let resp = client()
                .post(url(gw, "/v1/chat/completions"))
                .header("x-request-id", id)
                .json(&chat_body("remote", false))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.headers()["x-request-id"].to_str().unwrap().to_string()
        }
    };
    let kept = "trace-01:abc_DEF.9";
    assert_eq!(send(kept.into()).await, kept);
    for bad in [
        "x".repeat(129),
        "a b".into(),
        "<script>".into(),
        "id\"x".into(),
    ] {
        let id = send(bad.clone()).await;
        assert_ne!(id, bad);
        assert_eq!(id.len(), 36, "a generated uuid instead of {bad:?}: {id}");
        assert_eq!(
            mock.last_request().unwrap().headers["x-request-id"],
            id.as_str(),
            "the upstream sees the replacement"
        );
    }
}
