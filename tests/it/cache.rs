//! The response cache end to end: the real server from YAML against the mock upstream, which
//! counts requests, so every hit is proven not to reach the upstream.

use std::time::{Duration, SystemTime};

use crate::common::*;
use mock_provider::{COMPLETION_TOKENS, PROMPT_TOKENS, REPLY};
use serde_json::{json, Value};
use slmgate_config::policies::budget::BudgetScope;

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

async fn post_raw(
    gw: &slmgate_gateway::Running,
    body: String,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client()
        .post(url(gw, "/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn post(
    gw: &slmgate_gateway::Running,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    post_raw(gw, body.to_string(), headers).await
}

/// A deterministic request (`temperature: 0`) for `model`.
fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "temperature": 0, "messages": [{"role": "user", "content": text}]})
}

const EXACT: &str = "cache:\n  exact:\n    enabled: true\n";

/// Extra aliases on the mock: `broken` always fails, `cut` drops streams, `drip` streams
/// slowly, `echo` answers the last message.
const ALIASES: &str = "  - name: broken\n    backend: up\n    model: error-500\n  - name: cut\n    backend: up\n    model: cut\n  - name: drip\n    backend: up\n    model: drip-20\n  - name: echo\n    backend: up\n    model: echo\n";

async fn exact_gateway(mock: &Mock, extra: &str) -> slmgate_gateway::Running {
    gateway(&one_backend(mock, "", ALIASES, &format!("{EXACT}{extra}"))).await
}

/// The text of a completion, or of the chunks of a stream.
fn stream_text(events: &[String]) -> String {
    events
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect()
}

#[tokio::test]
async fn exact_hit_is_served_without_the_upstream() {
    let mock = Mock::start().await;
    let gw = exact_gateway(&mock, "").await;
    let resp = post(&gw, &ask("remote", "Say hello"), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-slmgate-cache"), "miss");
    let first: Value = resp.json().await.unwrap();
    assert_eq!(mock.requests(), 1);

    // The same request, keys reordered, other whitespace, `0.0` for `0`: a hit.
    let same = r#"{ "messages": [ { "content": "Say hello", "role": "user" } ],
        "temperature": 0.0, "model": "remote" }"#;
    let resp = post_raw(&gw, same.to_string(), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-slmgate-cache"), "hit");
    assert_eq!(header(&resp, "x-slmgate-backend"), "up");
    assert_eq!(header(&resp, "x-slmgate-route"), "remote");
    assert!(header(&resp, "content-type").starts_with("application/json"));
    let second: Value = resp.json().await.unwrap();
    assert_eq!(second, first);
    assert_eq!(second["choices"][0]["message"]["content"], REPLY);
    assert_eq!(mock.requests(), 1, "the hit reached the upstream");

    // Another question, or other parameters: misses.
    let resp = post(&gw, &ask("remote", "Say goodbye"), &[]).await;
    assert_eq!(header(&resp, "x-slmgate-cache"), "miss");
    let mut capped = ask("remote", "Say hello");
    capped["max_tokens"] = json!(5);
    let resp = post(&gw, &capped, &[]).await;
    assert_eq!(header(&resp, "x-slmgate-cache"), "miss");
    assert_eq!(mock.requests(), 3);

    // Sampling requests are not cached by default.
    let mut hot = ask("remote", "Say hello");
    hot["temperature"] = json!(0.7);
    for _ in 0..2 {
        let resp = post(&gw, &hot, &[]).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-slmgate-cache"), "bypass");
    }
    let mut default_temperature = ask("remote", "Say hello");
    default_temperature
        .as_object_mut()
        .unwrap()
        .remove("temperature");
    let resp = post(&gw, &default_temperature, &[]).await;
    assert_eq!(header(&resp, "x-slmgate-cache"), "bypass");
    assert_eq!(mock.requests(), 6);
}

#[tokio::test]
async fn no_header_and_no_caching_when_the_cache_is_off() {
    let mock = Mock::start().await;
    let gw = gateway(&one_backend(&mock, "", "", "")).await;
    for _ in 0..2 {
        let resp = post(&gw, &ask("remote", "Say hello"), &[]).await;
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("x-slmgate-cache").is_none());
    }
    assert_eq!(mock.requests(), 2);
}

#[tokio::test]
async fn policies_turn_caching_on_and_off() {
    let mock = Mock::start().await;
    let gw = exact_gateway(
        &mock,
        r#"
policies:
  rules:
    - name: cache-faq
      when: { header: { x-faq: "yes" } }
      then: { cache: { ttl: 10m } }
    - name: never
      when: { header: { x-private: "yes" } }
      then: { cache: false }
"#,
    )
    .await;
    // `cache: {..}` caches even a sampling request.
    let mut hot = ask("remote", "What are your opening hours?");
    hot["temperature"] = json!(0.9);
    let resp = post(&gw, &hot, &[("x-faq", "yes")]).await;
    assert_eq!(header(&resp, "x-slmgate-cache"), "miss");
    let resp = post(&gw, &hot, &[("x-faq", "yes")]).await;
    assert_eq!(header(&resp, "x-slmgate-cache"), "hit");
    assert_eq!(header(&resp, "x-slmgate-policy"), "cache-faq");
    assert_eq!(mock.requests(), 1);

    // `cache: false`: neither read nor written, even at temperature 0.
    let q = ask("remote", "private question");
    for _ in 0..2 {
        let resp = post(&gw, &q, &[("x-private", "yes")]).await;
        assert_eq!(header(&resp, "x-slmgate-cache"), "bypass");
    }
    let resp = post(&gw, &q, &[]).await;
    assert_eq!(header(&resp, "x-slmgate-cache"), "miss");
    assert_eq!(mock.requests(), 4);
}

#[tokio::test]
async fn cache_control_no_cache_and_no_store() {
    let mock = Mock::start().await;
    let gw = exact_gateway(&mock, "").await;
    let q = ask("remote", "Say hello");
    // no-store: not read, not written.
    let resp = post(&gw, &q, &[("cache-control", "no-store")]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-slmgate-cache"), "bypass");
    let resp = post(&gw, &q, &[]).await;
    assert_eq!(
        header(&resp, "x-slmgate-cache"),
        "miss",
        "no-store stored the answer"
    );
    assert_eq!(mock.requests(), 2);
    // no-cache: not read (the upstream answers again), but the fresh answer is stored.
    let resp = post(&gw, &q, &[("cache-control", "no-cache")]).await;
    assert_eq!(header(&resp, "x-slmgate-cache"), "bypass");
    assert_eq!(mock.requests(), 3);
    let resp = post(&gw, &q, &[]).await;
    assert_eq!(header(&resp, "x-slmgate-cache"), "hit");
    assert_eq!(mock.requests(), 3);
}

#[tokio::test]
async fn tenants_never_share_answers() {
    let mock = Mock::start().await;
    let gw = exact_gateway(
        &mock,
        r#"
keys:
  - { name: a1, key: sk-a1, team: a }
  - { name: a2, key: sk-a2, team: a }
  - { name: b1, key: sk-b1, team: b }
  - { name: solo, key: sk-solo }
  - { name: solo2, key: sk-solo2 }
"#,
    )
    .await;
    let q = ask("remote", "Say hello");
    let go = |key: &'static str| {
        let (gw, q) = (&gw, &q);
        async move {
            let resp = post(gw, q, &[("authorization", &format!("Bearer {key}"))]).await;
            assert_eq!(resp.status(), 200);
            header(&resp, "x-slmgate-cache")
        }
    };
    assert_eq!(go("sk-a1").await, "miss");
    assert_eq!(go("sk-a2").await, "hit", "same team shares");
    assert_eq!(
        go("sk-b1").await,
        "miss",
        "another team must not see team a's answer"
    );
    assert_eq!(go("sk-solo").await, "miss");
    assert_eq!(
        go("sk-solo2").await,
        "miss",
        "keys without a team are their own tenant"
    );
    assert_eq!(go("sk-solo").await, "hit");
    assert_eq!(mock.requests(), 4);
}

#[tokio::test]
async fn streams_are_replayed_as_sse_and_shared_with_json_requests() {
    let mock = Mock::start().await;
    let gw = exact_gateway(&mock, "").await;
    let mut s = ask("remote", "Say hello");
    s["stream"] = json!(true);
    let resp = post(&gw, &s, &[]).await;
    assert_eq!(header(&resp, "x-slmgate-cache"), "miss");
    let live = sse_events(resp).await;
    assert_eq!(stream_text(&live), REPLY);
    assert!(live.iter().all(|e| !e.contains("\"usage\"")), "{live:?}");
    assert_eq!(mock.streams_completed(), 1);

    let resp = post(&gw, &s, &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-slmgate-cache"), "hit");
    assert!(header(&resp, "content-type").starts_with("text/event-stream"));
    let replayed = sse_events(resp).await;
    assert_eq!(stream_text(&replayed), REPLY);
    assert_eq!(replayed.last().unwrap(), "[DONE]");
    assert!(
        replayed.iter().all(|e| !e.contains("\"usage\"")),
        "{replayed:?}"
    );
    let chunk: Value = serde_json::from_str(&replayed[0]).unwrap();
    assert_eq!(chunk["object"], "chat.completion.chunk");
    assert_eq!(chunk["choices"][0]["delta"]["role"], "assistant");
    let last: Value = serde_json::from_str(&replayed[replayed.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");

    // A client that asks for usage gets the usage chunk the stream carried.
    s["stream_options"] = json!({"include_usage": true});
    let resp = post(&gw, &s, &[]).await;
    assert_eq!(header(&resp, "x-slmgate-cache"), "hit");
    let with_usage = sse_events(resp).await;
    let usage: Value = serde_json::from_str(&with_usage[with_usage.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], COMPLETION_TOKENS);

    // The JSON request for the same question gets the assembled completion.
    let resp = post(&gw, &ask("remote", "Say hello"), &[]).await;
    assert_eq!(header(&resp, "x-slmgate-cache"), "hit");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], REPLY);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], PROMPT_TOKENS);

    // And the other way round: a JSON answer replayed to a stream.
    let resp = post(&gw, &ask("remote", "Say goodbye"), &[]).await;
    assert_eq!(header(&resp, "x-slmgate-cache"), "miss");
    let mut s2 = ask("remote", "Say goodbye");
    s2["stream"] = json!(true);
    let resp = post(&gw, &s2, &[]).await;
    assert_eq!(header(&resp, "x-slmgate-cache"), "hit");
    assert_eq!(stream_text(&sse_events(resp).await), REPLY);
    assert_eq!(mock.requests(), 2);
}

#[tokio::test]
async fn failed_and_truncated_answers_are_not_cached() {
    let mock = Mock::start().await;
    let gw = exact_gateway(&mock, "").await;
    for _ in 0..2 {
        let resp = post(&gw, &ask("broken", "Say hello"), &[]).await;
        assert_eq!(resp.status(), 502);
        assert_eq!(header(&resp, "x-slmgate-cache"), "miss");
    }
    let mut cut = ask("cut", "Say hello");
    cut["stream"] = json!(true);
    for _ in 0..2 {
        let resp = post(&gw, &cut, &[]).await;
        assert_eq!(header(&resp, "x-slmgate-cache"), "miss");
        let _ = resp.bytes().await;
    }
    assert_eq!(mock.streams_started(), 2, "a cut stream was replayed");
    // The JSON request does not find a cut stream's answer either.
    let resp = post(&gw, &ask("cut", "Say hello"), &[]).await;
    assert_eq!(header(&resp, "x-slmgate-cache"), "miss");
}

#[tokio::test]
async fn a_client_gone_mid_stream_leaves_no_entry() {
    let mock = Mock::start().await;
    let gw = exact_gateway(&mock, "").await;
    let mut s = ask("drip", "Say hello");
    s["stream"] = json!(true);
    let mut resp = post(&gw, &s, &[]).await;
    assert_eq!(header(&resp, "x-slmgate-cache"), "miss");
    let first = resp.chunk().await.unwrap();
    assert!(first.is_some());
    drop(resp);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while mock.streams_cancelled() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(mock.streams_cancelled(), 1);
    let resp = post(&gw, &s, &[]).await;
    assert_eq!(header(&resp, "x-slmgate-cache"), "miss");
    drop(resp);
}

#[tokio::test]
async fn cached_answers_cost_nothing_against_budgets() {
    let mock = Mock::start().await;
    let gw = exact_gateway(
        &mock,
        r#"
pricing:
  gpt-test: { input: 1000, output: 1000 }
keys:
  - name: k
    key: sk-k
    budget: { daily_usd: 10 }
"#,
    )
    .await;
    let spent = || {
        let u = gw.shared.load().accounting.state.budgets.usage(
            BudgetScope::Key,
            "k",
            SystemTime::now(),
        );
        (u.day_spent_usd, u.day_reserved_usd)
    };
    let auth = [("authorization", "Bearer sk-k")];
    let per_request = (PROMPT_TOKENS + COMPLETION_TOKENS) as f64 * 0.001;
    let resp = post(&gw, &ask("remote", "Say hello"), &auth).await;
    assert_eq!(header(&resp, "x-slmgate-cache"), "miss");
    let _ = resp.bytes().await;
    assert!((spent().0 - per_request).abs() < 1e-9, "{:?}", spent());

    let resp = post(&gw, &ask("remote", "Say hello"), &auth).await;
    assert_eq!(header(&resp, "x-slmgate-cache"), "hit");
    let _ = resp.bytes().await;
    let mut s = ask("remote", "Say hello");
    s["stream"] = json!(true);
    let resp = post(&gw, &s, &auth).await;
    assert_eq!(header(&resp, "x-slmgate-cache"), "hit");
    let events = sse_events(resp).await;
    assert!(
        events.iter().all(|e| !e.contains("\"usage\"")),
        "{events:?}"
    );
    let (spent_usd, reserved) = spent();
    assert!(
        (spent_usd - per_request).abs() < 1e-9,
        "hits were charged: {spent_usd}"
    );
    assert_eq!(reserved, 0.0);
    assert_eq!(mock.requests(), 1);
}

#[tokio::test]
async fn a_reload_that_keeps_the_cache_state_keeps_the_answers() {
    let mock = Mock::start().await;
    let yaml = one_backend(&mock, "", ALIASES, EXACT);
    let gw = gateway(&yaml).await;
    let resp = post(&gw, &ask("remote", "Say hello"), &[]).await;
    assert_eq!(header(&resp, "x-slmgate-cache"), "miss");
    let _ = resp.bytes().await;
    let cfg = slmgate_config::load_str_with_env(&yaml, "test.yaml", &|_| None).unwrap();

    // A rebuilt snapshot without the state starts empty...
    let fresh = slmgate_gateway::build::build_gateway(&cfg).unwrap();
    let old = gw.shared.swap(std::sync::Arc::new(fresh));
    let resp = post(&gw, &ask("remote", "Say hello"), &[]).await;
    assert_eq!(header(&resp, "x-slmgate-cache"), "miss");
    let _ = resp.bytes().await;

    // ...one built with the previous state keeps its answers.
    let kept = slmgate_gateway::build::build_gateway_from(
        &cfg,
        slmgate_gateway::build::Carry::from_gateway(&old),
    )
    .unwrap();
    gw.shared.store(std::sync::Arc::new(kept));
    let resp = post(&gw, &ask("remote", "Say hello"), &[]).await;
    assert_eq!(header(&resp, "x-slmgate-cache"), "hit");
    assert_eq!(mock.requests(), 2);
}

/// The semantic cache with a tiny random-weight BERT: identical last questions are similar
/// (cosine 1), so every miss below is the scope at work, not the model.
#[cfg(feature = "local")]
mod semantic {
    use super::*;

    fn config(mock: &Mock, bert: &std::path::Path, threshold: f32, extra: &str) -> String {
        one_backend(
            mock,
            "",
            ALIASES,
            &format!(
                "embedder:\n  enabled: true\n  model: {}\ncache:\n  semantic:\n    enabled: true\n    threshold: {threshold}\n{extra}",
                bert.display()
            ),
        )
    }

    fn conversation(system: &str, earlier: &str, last: &str) -> Value {
        json!({"model": "echo", "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": earlier},
            {"role": "assistant", "content": "noted"},
            {"role": "user", "content": last},
        ]})
    }

    async fn answer(resp: reqwest::Response) -> String {
        let v: Value = resp.json().await.unwrap();
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn semantic_hits_stay_in_their_conversation_and_team() {
        let dir = tempfile::tempdir().unwrap();
        let bert = dir.path().join("bert");
        slmgate_local_model::embed_fixtures::write_tiny_bert(&bert);
        let mock = Mock::start().await;
        let gw = gateway(&config(
            &mock,
            &bert,
            0.99,
            "keys:\n  - { name: a, key: sk-a, team: a }\n  - { name: b, key: sk-b, team: b }\n",
        ))
        .await;
        let a = [("authorization", "Bearer sk-a")];
        let base = conversation("You are terse.", "My name is Ann.", "What is Rust?");
        let resp = post(&gw, &base, &a).await;
        assert_eq!(header(&resp, "x-slmgate-cache"), "miss");
        assert_eq!(answer(resp).await, "What is Rust?");
        // No exact cache configured and a sampling request: only the semantic cache answers.
        let resp = post(&gw, &base, &a).await;
        assert_eq!(header(&resp, "x-slmgate-cache"), "semantic-hit");
        assert_eq!(answer(resp).await, "What is Rust?");
        assert_eq!(mock.requests(), 1);

        // Same last question, another conversation: never a hit.
        let mut with_tools = base.clone();
        with_tools["tools"] =
            json!([{"type": "function", "function": {"name": "lookup", "parameters": {}}}]);
        for (what, other) in [
            (
                "system prompt",
                conversation("You are verbose.", "My name is Ann.", "What is Rust?"),
            ),
            (
                "earlier turn",
                conversation("You are terse.", "My name is Bob.", "What is Rust?"),
            ),
            ("tools", with_tools),
        ] {
            let resp = post(&gw, &other, &a).await;
            assert_eq!(header(&resp, "x-slmgate-cache"), "miss", "{what}");
        }
        let resp = post(&gw, &base, &[("authorization", "Bearer sk-b")]).await;
        assert_eq!(header(&resp, "x-slmgate-cache"), "miss", "another team");
        assert_eq!(mock.requests(), 5);

        // A stream request in the same conversation is answered from the same entry.
        let mut s = base.clone();
        s["stream"] = json!(true);
        let resp = post(&gw, &s, &a).await;
        assert_eq!(header(&resp, "x-slmgate-cache"), "semantic-hit");
        assert_eq!(stream_text(&sse_events(resp).await), "What is Rust?");
        assert_eq!(mock.requests(), 5);
    }

    fn real_minilm() -> Option<std::path::PathBuf> {
        let base = std::env::var_os("SLMGATE_MODELS_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"));
        let dir = base.join("all-MiniLM-L6-v2");
        if dir.join("model.safetensors").exists() {
            Some(dir)
        } else {
            eprintln!(
                "SKIPPED: {} not found (scripts/fetch-models.sh fetches it)",
                dir.display()
            );
            None
        }
    }

    #[tokio::test]
    async fn real_minilm_paraphrase_hits_and_unrelated_question_misses() {
        let Some(model) = real_minilm() else { return };
        let mock = Mock::start().await;
        let gw = gateway(&config(&mock, &model, 0.9, "")).await;
        let q =
            |text: &str| json!({"model": "echo", "messages": [{"role": "user", "content": text}]});
        let resp = post(&gw, &q("What is the capital of France?"), &[]).await;
        assert_eq!(header(&resp, "x-slmgate-cache"), "miss");
        let _ = resp.bytes().await;
        let resp = post(&gw, &q("what's the capital of france"), &[]).await;
        assert_eq!(header(&resp, "x-slmgate-cache"), "semantic-hit");
        assert_eq!(answer(resp).await, "What is the capital of France?");
        let resp = post(&gw, &q("How do I bake sourdough bread?"), &[]).await;
        assert_eq!(header(&resp, "x-slmgate-cache"), "miss");
        assert_eq!(answer(resp).await, "How do I bake sourdough bread?");
        assert_eq!(mock.requests(), 2);
    }
}
