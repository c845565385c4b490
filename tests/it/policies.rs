//! Policies, keys, budgets and rate limits end to end: the real server from YAML, against the
//! mock upstream (which records what it received and reports fixed usage).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::common::*;
use mock_provider::{COMPLETION_TOKENS, PROMPT_TOKENS};
use serde_json::{json, Value};
use slmgate_config::policies::budget::BudgetScope;

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

async fn post(
    gw: &slmgate_gateway::Running,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut rb = client().post(url(gw, "/v1/chat/completions")).json(body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.unwrap()
}

fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// The mock as `remote` (upstream model `gpt-test`), plus `other` (`gpt-other`) and `echo`.
fn config(mock: &Mock, extra: &str) -> String {
    one_backend(
        mock,
        "",
        "  - name: other\n    backend: up\n    model: gpt-other\n  - name: echo\n    backend: up\n    model: echo\n  - name: slow\n    backend: up\n    model: slow-20\n",
        extra,
    )
}

#[tokio::test]
async fn deny_answers_the_configured_status_and_message() {
    let mock = Mock::start().await;
    let gw = gateway(&config(
        &mock,
        r#"
policies:
  rules:
    - name: no-secrets
      when: { header: { x-data-class: secret } }
      then: { deny: { status: 451, message: "secret data may not leave" } }
"#,
    ))
    .await;
    let resp = post(&gw, &ask("remote", "hi"), &[("x-data-class", "secret")]).await;
    assert_eq!(resp.status(), 451);
    assert_eq!(header(&resp, "x-slmgate-policy"), "no-secrets");
    let err = error_body(resp).await;
    assert_eq!(err["error"]["message"], "secret data may not leave");
    assert_eq!(err["error"]["code"], "policy_denied");
    assert_eq!(mock.requests(), 0);

    let resp = post(&gw, &ask("remote", "hi"), &[("x-data-class", "public")]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-slmgate-policy"), "");
    assert_eq!(mock.requests(), 1);
}

#[tokio::test]
async fn route_override_and_param_caps_reach_the_upstream() {
    let mock = Mock::start_with(true).await;
    let gw = gateway(&config(
        &mock,
        r#"
policies:
  rules:
    - name: free-tier
      when: { model: remote, header: { x-tier: free } }
      then: { route: other, set: { max_tokens: { max: 16 }, temperature: 0 } }
"#,
    ))
    .await;
    let mut body = ask("remote", "hi");
    body["max_tokens"] = json!(1000);
    body["temperature"] = json!(0.7);
    let resp = post(&gw, &body, &[("x-tier", "free")]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-slmgate-route"), "other");
    assert_eq!(header(&resp, "x-slmgate-strategy"), "policy");
    assert_eq!(header(&resp, "x-slmgate-policy"), "free-tier");
    assert!(header(&resp, "x-slmgate-reason").contains("free-tier"));
    let seen = mock.last_request().unwrap().body;
    assert_eq!(seen["model"], "gpt-other");
    assert_eq!(seen["max_tokens"], 16);
    assert_eq!(seen["temperature"].as_f64(), Some(0.0));
    assert_eq!(seen["messages"][0]["content"], "hi");

    // A cap with no value sent sets the maximum; a smaller value stays.
    post(&gw, &ask("remote", "hi"), &[("x-tier", "free")]).await;
    assert_eq!(mock.last_request().unwrap().body["max_tokens"], 16);
    let mut body = ask("remote", "hi");
    body["max_tokens"] = json!(5);
    post(&gw, &body, &[("x-tier", "free")]).await;
    assert_eq!(mock.last_request().unwrap().body["max_tokens"], 5);

    // No rule matched: untouched.
    let resp = post(&gw, &ask("remote", "hi"), &[]).await;
    assert_eq!(header(&resp, "x-slmgate-route"), "remote");
    let seen = mock.last_request().unwrap().body;
    assert_eq!(seen["model"], "gpt-test");
    assert!(seen.get("max_tokens").is_none());
}

#[tokio::test]
async fn split_divides_traffic_and_sticks_to_the_request_id() {
    let mock = Mock::start_with(true).await;
    let gw = gateway(&config(
        &mock,
        r#"
policies:
  rules:
    - name: ab
      when: { model: remote }
      then: { split: [ { target: remote, weight: 50 }, { target: other, weight: 50 } ] }
"#,
    ))
    .await;
    for _ in 0..40 {
        let resp = post(&gw, &ask("remote", "hi"), &[]).await;
        assert_eq!(resp.status(), 200);
        assert!(header(&resp, "x-slmgate-reason").contains("ab"));
    }
    let other = mock
        .history()
        .iter()
        .filter(|r| r.body["model"] == "gpt-other")
        .count();
    assert!((8..=32).contains(&other), "{other} of 40 went to `other`");

    // The same request id always lands on the same arm.
    let mut routes = Vec::new();
    for _ in 0..5 {
        let resp = post(
            &gw,
            &ask("remote", "hi"),
            &[("x-request-id", "sticky-user-1")],
        )
        .await;
        routes.push(header(&resp, "x-slmgate-route"));
    }
    assert!(routes.iter().all(|r| *r == routes[0]), "{routes:?}");
}

const PII_TEXT: &str = "Mail bob@example.com or charge 4111 1111 1111 1111, thanks";

fn redact_config(mock: &Mock) -> String {
    config(
        mock,
        r#"
policies:
  rules:
    - name: redact-pii
      when: { pii: any }
      then: { redact: true, restore: true }
"#,
    )
}

#[tokio::test]
async fn pii_is_redacted_upstream_and_restored_in_the_answer() {
    let mock = Mock::start_with(true).await;
    let gw = gateway(&redact_config(&mock)).await;

    let resp = post(&gw, &ask("echo", PII_TEXT), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-slmgate-policy"), "redact-pii");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], PII_TEXT);
    let sent = mock.last_request().unwrap().body["messages"][0]["content"].clone();
    assert_eq!(
        sent, "Mail [EMAIL_1] or charge [CREDIT_CARD_1], thanks",
        "the upstream must see placeholders only"
    );

    // Streamed: the echo comes back 3 characters a chunk, so placeholders are split
    // across chunks; the client still gets the original text.
    let mut body = ask("echo", PII_TEXT);
    body["stream"] = json!(true);
    let resp = post(&gw, &body, &[]).await;
    assert_eq!(resp.status(), 200);
    let events = sse_events(resp).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let text: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v.pointer("/choices/0/delta/content")?
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(text, PII_TEXT);
    let sent = mock.last_request().unwrap().body["messages"][0]["content"].clone();
    assert!(!sent.as_str().unwrap().contains("bob@"), "{sent}");

    // No PII: no rule, nothing rewritten.
    let resp = post(&gw, &ask("echo", "plain words"), &[]).await;
    assert_eq!(header(&resp, "x-slmgate-policy"), "");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "plain words");
}

#[cfg(feature = "local")]
#[tokio::test]
async fn pii_forces_the_local_model() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let llm = slmgate_local_model::fixtures::write_tiny_model(dir.path(), "llama", 7);
    let yaml = one_backend(
        &mock,
        &format!(
            "  - name: slm\n    kind: local\n    enabled: true\n    model: {}\n    max_tokens: 4\n",
            llm.display()
        ),
        "  - name: local\n    backend: slm\n",
        r#"
policies:
  rules:
    - name: pii-stays-local
      when: { pii: [email, credit_card] }
      then: { route: local }
"#,
    );
    let gw = gateway(&yaml).await;
    let resp = post(&gw, &ask("remote", PII_TEXT), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-slmgate-backend"), "slm");
    assert_eq!(header(&resp, "x-slmgate-route"), "local");
    assert_eq!(header(&resp, "x-slmgate-policy"), "pii-stays-local");
    assert_eq!(mock.requests(), 0, "PII must not reach the remote upstream");

    let resp = post(&gw, &ask("remote", "no personal data here"), &[]).await;
    assert_eq!(header(&resp, "x-slmgate-backend"), "up");
    assert_eq!(mock.requests(), 1);
}

/// USD per request at the test price ($1000 per 1M tokens = $0.001 a token).
const TOKEN_USD: f64 = 0.001;

fn budget_config(mock: &Mock, budget: &str, team: &str) -> String {
    config(
        mock,
        &format!(
            r#"
pricing:
  gpt-test: {{ input: 1000, output: 1000 }}
  "slow-*": {{ input: 1000, output: 1000 }}
teams:
  - name: t
    budget: {team}
keys:
  - name: k
    key: sk-k
    budget: {budget}
  - name: member
    key: sk-member
    team: t
"#
        ),
    )
}

fn spent(gw: &slmgate_gateway::Running, scope: BudgetScope, name: &str) -> (f64, f64) {
    let u = gw
        .shared
        .load()
        .accounting
        .state
        .budgets
        .usage(scope, name, SystemTime::now());
    (u.day_spent_usd, u.day_reserved_usd)
}

#[tokio::test]
async fn budget_holds_under_64_concurrent_clients() {
    let mock = Mock::start().await;
    let budget = 0.5;
    let gw = Arc::new(
        gateway(&budget_config(
            &mock,
            &format!("{{ daily_usd: {budget} }}"),
            "{}",
        ))
        .await,
    );
    // Estimated: ~9 prompt tokens + max_tokens 20 ≥ the 18 tokens the mock reports, so
    // settled spend can never pass the budget.
    let mut body = ask("slow", "Say hello");
    body["max_tokens"] = json!(20);
    let admitted = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (gw, body, admitted) = (gw.clone(), body.clone(), admitted.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let resp = post(&gw, &body, &[("authorization", "Bearer sk-k")]).await;
                match resp.status().as_u16() {
                    200 => {
                        admitted.fetch_add(1, Ordering::SeqCst);
                        let _ = resp.bytes().await;
                    }
                    429 => {
                        let err = error_body(resp).await;
                        assert_eq!(err["error"]["code"], "budget_exceeded");
                        let msg = err["error"]["message"].as_str().unwrap();
                        assert!(msg.contains("key `k` daily budget"), "{msg}");
                        return;
                    }
                    s => panic!("unexpected status {s}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = admitted.load(Ordering::SeqCst);
    let per_request = (PROMPT_TOKENS + COMPLETION_TOKENS) as f64 * TOKEN_USD;
    let (spent, reserved) = spent(&gw, BudgetScope::Key, "k");
    assert_eq!(mock.requests(), n);
    assert!(n >= 17, "only {n} admitted");
    assert!(
        (spent - n as f64 * per_request).abs() < 1e-6,
        "{spent} for {n}"
    );
    assert!(spent <= budget + 1e-9, "spent {spent} > budget {budget}");
    assert!(reserved.abs() < 1e-12, "reservations left: {reserved}");
}

#[tokio::test]
async fn streams_settle_from_the_usage_chunk_and_team_budgets_apply() {
    let mock = Mock::start_with(true).await;
    let gw = gateway(&budget_config(
        &mock,
        "{ daily_usd: 10 }",
        "{ daily_usd: 0.03 }",
    ))
    .await;
    let mut body = ask("remote", "Say hello");
    body["max_tokens"] = json!(20);
    body["stream"] = json!(true);
    let resp = post(&gw, &body, &[("authorization", "Bearer sk-k")]).await;
    assert_eq!(resp.status(), 200);
    let events = sse_events(resp).await;
    // The gateway asked upstream for usage but the client did not: it sees no usage chunk.
    assert!(
        events.iter().all(|e| !e.contains("\"usage\"")),
        "{events:?}"
    );
    assert_eq!(
        mock.last_request().unwrap().body["stream_options"]["include_usage"],
        true
    );
    let (spent_k, reserved) = spent(&gw, BudgetScope::Key, "k");
    let per_request = (PROMPT_TOKENS + COMPLETION_TOKENS) as f64 * TOKEN_USD;
    assert!((spent_k - per_request).abs() < 1e-9, "{spent_k}");
    assert_eq!(reserved, 0.0);

    // The team budget ($0.03) admits one request (estimate $0.029), then refuses.
    body["stream"] = json!(false);
    let resp = post(&gw, &body, &[("authorization", "Bearer sk-member")]).await;
    assert_eq!(resp.status(), 200);
    let resp = post(&gw, &body, &[("authorization", "Bearer sk-member")]).await;
    assert_eq!(resp.status(), 429);
    assert!(!header(&resp, "retry-after").is_empty());
    let err = error_body(resp).await;
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("team `t` daily budget"),
        "{err}"
    );
    let (spent_t, _) = spent(&gw, BudgetScope::Team, "t");
    assert!((spent_t - per_request).abs() < 1e-9, "{spent_t}");
}

#[tokio::test]
async fn rate_limit_paces_requests_with_retry_after() {
    let mock = Mock::start().await;
    let gw = Arc::new(
        gateway(&config(
            &mock,
            r#"
keys:
  - name: fast
    key: sk-fast
    rate_limit: { requests_per_minute: 1200, burst_requests: 5 }
  - name: tokens
    key: sk-tokens
    rate_limit: { tokens_per_minute: 100 }
"#,
        ))
        .await,
    );
    // 20 requests/s after a burst of 5: over 1.5 s about 5 + 30 = 35 get through.
    let window = Duration::from_millis(1500);
    let started = Instant::now();
    let ok = Arc::new(AtomicUsize::new(0));
    let limited = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (gw, ok, limited) = (gw.clone(), ok.clone(), limited.clone());
        tasks.push(tokio::spawn(async move {
            while started.elapsed() < window {
                let resp = post(
                    &gw,
                    &ask("remote", "hi"),
                    &[("authorization", "Bearer sk-fast")],
                )
                .await;
                match resp.status().as_u16() {
                    200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    429 => {
                        assert_eq!(header(&resp, "retry-after"), "1");
                        let err = error_body(resp).await;
                        assert_eq!(err["error"]["code"], "rate_limit_exceeded");
                        limited.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    s => panic!("unexpected status {s}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let expected = 5.0 + 20.0 * elapsed;
    let got = ok.load(Ordering::SeqCst) as f64;
    assert!(
        (got - expected).abs() <= expected * 0.1,
        "{got} admitted, expected {expected:.1} ± 10 %"
    );
    assert!(limited.load(Ordering::SeqCst) > 0);

    // More tokens than the per-minute limit ever allows: 429 without Retry-After.
    let mut body = ask("remote", "hi");
    body["max_tokens"] = json!(500);
    let resp = post(&gw, &body, &[("authorization", "Bearer sk-tokens")]).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "retry-after"), "");
    let err = error_body(resp).await;
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("more tokens"));
    body["max_tokens"] = json!(50);
    let resp = post(&gw, &body, &[("authorization", "Bearer sk-tokens")]).await;
    assert_eq!(resp.status(), 200);
}

#[test]
fn bad_rules_are_config_errors_with_line_and_column() {
    let src = r#"
backends:
  - name: up
    kind: openai
    base_url: http://127.0.0.1:9/v1
models:
  - name: remote
    backend: up
policies:
  rules:
    - name: ok
      when: { model: remote }
      then: { route: remote }
    - name: typo
      when: { model: x }
      then: { route: remot }
    - name: bad-regex
      when:
        header:
          x-foo: { regex: "(" }
      then: { deny: { status: 403 } }
    - name: catch-all
      then: { route: up }
    - name: never
      when: { model: y }
      then: {}
pricing:
  gpt-x: { input: -1, output: 1 }
keys:
  - name: k
    key: sk
    budget: { daily_usd: -5 }
"#;
    let Err(errs) = slmgate_config::load_str_with_env(src, "p.yaml", &|_| None) else {
        panic!("expected errors")
    };
    let find = |needle: &str| {
        errs.0
            .iter()
            .find(|e| e.message.contains(needle))
            .unwrap_or_else(|| panic!("no error containing `{needle}` in:\n{errs}"))
    };
    let e = find("unknown target `remot`");
    assert_eq!(e.path, "policies.rules[1].then.route");
    assert!(e.message.contains("did you mean `remote`"), "{}", e.message);
    assert_eq!((e.line, e.column), (Some(16), Some(15)), "{e}");
    let e = find("invalid regex");
    assert_eq!(e.path, "policies.rules[2].when.header.x-foo");
    assert_eq!(e.line, Some(20), "{e}");
    let e = find("unreachable");
    assert_eq!(e.path, "policies.rules[4]");
    assert_eq!(e.line, Some(24), "{e}");
    let e = find("not a price");
    assert_eq!(e.path, "pricing.gpt-x.input");
    assert_eq!(e.line, Some(28), "{e}");
    let e = find("not an amount");
    assert_eq!(e.path, "keys[0].budget.daily_usd");
    assert_eq!(e.line, Some(32), "{e}");
    // `slmgate config check` prints them as file:line:col.
    assert!(errs
        .to_string()
        .contains("p.yaml:16:15: policies.rules[1].then.route"));
}

/// `n` choices may each use all of `max_tokens`: the estimate counts every one, so `n: 4`
/// cannot spend four times what the budget admitted.
#[tokio::test]
async fn the_budget_estimate_counts_every_choice() {
    let mock = Mock::start().await;
    let gw = gateway(&budget_config(&mock, "{ daily_usd: 1 }", "{}")).await;
    // ~$0.31 for one choice of up to 300 tokens; ~$1.21 for four.
    let mut body = ask("remote", "Say hello");
    body["max_tokens"] = json!(300);
    body["n"] = json!(4);
    let resp = post(&gw, &body, &[("authorization", "Bearer sk-k")]).await;
    assert_eq!(resp.status(), 429);
    let err = error_body(resp).await;
    assert_eq!(err["error"]["code"], "budget_exceeded", "{err}");
    assert_eq!(mock.requests(), 0, "refused before any upstream call");
    let (spent_k, reserved) = spent(&gw, BudgetScope::Key, "k");
    assert_eq!((spent_k, reserved), (0.0, 0.0));

    // Three choices (~$0.91) fit.
    body["n"] = json!(3);
    let resp = post(&gw, &body, &[("authorization", "Bearer sk-k")]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.requests(), 1);
}

/// A key's model allow-list applies to what `auto` resolves to, not only to the name `auto`.
#[tokio::test]
async fn auto_stays_within_the_keys_allowed_models() {
    let mock = Mock::start_with(true).await;
    let gw = gateway(&one_backend(
        &mock,
        "",
        "  - name: local\n    backend: up\n    model: gpt-small\n",
        r#"
router:
  aliases: [auto]
  local: local
  remote: remote
  strategies: [rules]
  default: local
  rules:
    tools: remote
keys:
  - { name: small, key: sk-small, models: [auto, local] }
  - { name: big, key: sk-big, models: [auto, remote] }
  - { name: auto-only, key: sk-auto, models: [auto] }
  - { name: any, key: sk-any }
"#,
    ))
    .await;
    let tools =
        json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    let mut with_tools = ask("auto", "use the tool");
    with_tools["tools"] = tools;
    let plain = ask("auto", "hello");
    let upstream_model = || mock.last_request().unwrap().body["model"].clone();

    // The router sends tool calls to `remote`; a key limited to `local` stays local.
    let auth = [("authorization", "Bearer sk-small")];
    let resp = post(&gw, &with_tools, &auth).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-slmgate-route"), "local");
    assert_eq!(header(&resp, "x-slmgate-strategy"), "allow-list");
    assert!(header(&resp, "x-slmgate-reason").contains("may not use `remote`"));
    assert_eq!(upstream_model(), "gpt-small");
    // Asking for `remote` by name is refused as before.
    let resp = post(&gw, &ask("remote", "hi"), &auth).await;
    assert_eq!(resp.status(), 403);

    // The other way round: a key limited to `remote` never gets the local side.
    let resp = post(&gw, &plain, &[("authorization", "Bearer sk-big")]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-slmgate-route"), "remote");
    assert_eq!(upstream_model(), "gpt-test");

    // Neither side allowed: refused in OpenAI's shape, nothing sent upstream.
    let before = mock.requests();
    let resp = post(&gw, &with_tools, &[("authorization", "Bearer sk-auto")]).await;
    assert_eq!(resp.status(), 403);
    let err = error_body(resp).await;
    assert_eq!(err["error"]["code"], "model_not_allowed", "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("may not use the model `remote`"),
        "{err}"
    );
    assert_eq!(mock.requests(), before);

    // A key without a list goes where the router says.
    let resp = post(&gw, &with_tools, &[("authorization", "Bearer sk-any")]).await;
    assert_eq!(header(&resp, "x-slmgate-route"), "remote");
    assert_eq!(upstream_model(), "gpt-test");
}

/// Starts a gateway with budgets on the usage database `db`, spends on a key and a team,
/// restarts it on the same database, and checks that the spend is still counted.
async fn restart_keeps_budget_spend(db: &str) {
    let mock = Mock::start().await;
    let cfg = format!(
        "{}usage:\n  database: {db}\n  flush_interval: 20ms\n",
        budget_config(
            &mock,
            "{ daily_usd: 0.05 }",
            "{ daily_usd: 0.03, monthly_usd: 1 }"
        )
    );
    let mut body = ask("remote", "Say hello");
    body["max_tokens"] = json!(10);
    let per_request = (PROMPT_TOKENS + COMPLETION_TOKENS) as f64 * TOKEN_USD;

    let gw = gateway(&cfg).await;
    for key in ["sk-k", "sk-k", "sk-member"] {
        let resp = post(&gw, &body, &[("authorization", &format!("Bearer {key}"))]).await;
        assert_eq!(resp.status(), 200, "{key}");
        resp.bytes().await.unwrap();
    }
    gw.shutdown();
    let usage = gw.usage.clone().expect("usage writer");
    gw.wait().await.unwrap();
    assert_eq!(usage.sink.written(), 3, "every row written at shutdown");

    let gw = gateway(&cfg).await;
    let (spent_k, _) = spent(&gw, BudgetScope::Key, "k");
    assert!((spent_k - 2.0 * per_request).abs() < 1e-9, "{spent_k}");
    let (spent_t, _) = spent(&gw, BudgetScope::Team, "t");
    assert!((spent_t - per_request).abs() < 1e-9, "{spent_t}");
    let month = gw
        .shared
        .load()
        .accounting
        .state
        .budgets
        .usage(BudgetScope::Team, "t", SystemTime::now())
        .month_spent_usd;
    assert!((month - per_request).abs() < 1e-9, "{month}");
    // $0.036 spent + $0.019 estimated > $0.05: the restarted gateway refuses, as the old
    // one would have.
    let resp = post(&gw, &body, &[("authorization", "Bearer sk-k")]).await;
    assert_eq!(resp.status(), 429);
    let err = error_body(resp).await;
    assert_eq!(err["error"]["code"], "budget_exceeded", "{err}");
    // The team's member too: $0.018 + $0.019 > $0.03.
    let resp = post(&gw, &body, &[("authorization", "Bearer sk-member")]).await;
    assert_eq!(resp.status(), 429);
    gw.shutdown();
    gw.wait().await.unwrap();
}

#[tokio::test]
async fn budgets_survive_a_restart_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    restart_keeps_budget_spend(&format!(
        "sqlite://{}",
        dir.path().join("usage.db").display()
    ))
    .await;
}

/// The same on PostgreSQL (`SLMGATE_TEST_PG`, default the local `test` database), in a schema
/// of its own; `SLMGATE_SKIP_PG=1` skips it where no server runs.
#[tokio::test]
async fn budgets_survive_a_restart_on_postgres() {
    let base = std::env::var("SLMGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    sqlx::any::install_default_drivers();
    let admin = match sqlx::any::AnyPoolOptions::new()
        .acquire_timeout(Duration::from_secs(5))
        .connect(&base)
        .await
    {
        Ok(p) => p,
        Err(e) if std::env::var("SLMGATE_SKIP_PG").is_ok_and(|v| v == "1") => {
            eprintln!("skipping: PostgreSQL at {base} does not answer ({e})");
            return;
        }
        Err(e) => panic!(
            "PostgreSQL at {base} does not answer ({e}); start it (scripts/services.sh) or set SLMGATE_SKIP_PG=1"
        ),
    };
    let nanos = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let schema = format!("slmgate_budget_{}_{nanos}", std::process::id());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    let url = format!("{base}?options=-c%20search_path%3D{schema}");
    // Run in a task so the schema is dropped even when an assertion fails.
    let outcome = tokio::spawn(async move { restart_keeps_budget_spend(&url).await }).await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// A log sink for one test's subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Refusals caused by a client's own pace log at debug: at info, a client retrying in a
/// tight loop wrote 184,000 lines in 20 s. (The runtime is current-thread, so the
/// subscriber set here sees the server's events.)
#[tokio::test]
async fn rate_limited_and_over_budget_requests_log_at_debug() {
    use tracing_subscriber::prelude::*;
    // With a single registered dispatcher, tracing caches each event site's interest from
    // whichever thread reaches it first: another test's thread (no subscriber) would turn the
    // "rate limited" site off for this one too. A second live dispatcher makes tracing ask
    // every dispatcher instead.
    let _second = tracing::Dispatch::new(tracing_subscriber::registry());
    let log = Captured::default();
    let sink = log.clone();
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || sink.clone())
                .with_filter(
                    tracing_subscriber::filter::Targets::new()
                        .with_target("slmgate_gateway", tracing::Level::DEBUG),
                ),
        ),
    );
    let mock = Mock::start().await;
    let gw = gateway(&config(
        &mock,
        r#"
pricing:
  gpt-test: { input: 1000, output: 1000 }
keys:
  - name: paced
    key: sk-paced
    rate_limit: { requests_per_minute: 1 }
  - name: poor
    key: sk-poor
    budget: { daily_usd: 0.000001 }
"#,
    ))
    .await;
    let mut limited = 0;
    for key in ["sk-paced"; 20].into_iter().chain(["sk-poor"; 20]) {
        let resp = post(
            &gw,
            &ask("remote", "hi"),
            &[("authorization", &format!("Bearer {key}"))],
        )
        .await;
        if resp.status() == 429 {
            limited += 1;
        }
    }
    assert_eq!(
        limited, 39,
        "one request fits the rate limit, none the budget"
    );
    let text = String::from_utf8_lossy(&log.0.lock().unwrap()).to_string();
    for quiet in ["rate limited", "budget exhausted"] {
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(quiet)).collect();
        assert!(!lines.is_empty(), "the capture sees the server: {text}");
        assert!(
            lines
                .iter()
                .all(|l| l.contains("DEBUG") && !l.contains("INFO")),
            "`{quiet}` logged above debug:\n{}",
            lines.join("\n")
        );
    }
}
