//! `state.redis`: budgets and rate limits shared by several gateway processes through the
//! Redis on 127.0.0.1:6379 (started by scripts/services.sh in CI), and what happens when
//! Redis is not there. Tests that need Redis print a message and pass when none answers.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use mock_provider::{COMPLETION_TOKENS, PROMPT_TOKENS};
use serde_json::{json, Value};

/// USD per token at the test price ($1000 per 1M tokens).
const TOKEN_USD: f64 = 0.001;

fn redis_answers() -> bool {
    let ok = std::net::TcpStream::connect_timeout(
        &"127.0.0.1:6379".parse().expect("address"),
        Duration::from_millis(500),
    )
    .is_ok();
    if !ok {
        eprintln!("SKIPPED: no Redis answers on 127.0.0.1:6379 (scripts/services.sh starts one)");
    }
    ok
}

fn unique_prefix() -> String {
    format!("slmgate-it:{}:", uuid::Uuid::new_v4().simple())
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A real `slmgate serve` process, killed when dropped.
struct Proc {
    child: Child,
    base: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn spawn_gateway(config: &std::path::Path) -> Proc {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_slmgate"))
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start slmgate");
    let p = Proc {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client().get(format!("{}/readyz", p.base)).send().await {
            if r.status() == 200 {
                return p;
            }
        }
        assert!(
            Instant::now() < deadline,
            "slmgate on {port} never got ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn shared_config(mock: &Mock, prefix: &str, key: &str) -> String {
    one_backend(
        mock,
        "",
        "  - name: slow\n    backend: up\n    model: slow-20\n",
        &format!(
            r#"
state:
  redis: {{ url: "redis://127.0.0.1:6379", prefix: "{prefix}", on_error: closed, timeout: 1s }}
pricing:
  "slow-*": {{ input: 1000, output: 1000 }}
keys:
{key}
"#
        ),
    )
}

fn ask() -> Value {
    json!({"model": "slow", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 20})
}

/// Fires 64 concurrent clients, alternating between `bases`, each sending until refused
/// (or `per_client` requests). Returns (answered, refused with `code`).
async fn hammer(bases: &[String], code: &'static str, per_client: Option<usize>) -> (usize, usize) {
    let answered = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..64 {
        let base = bases[i % bases.len()].clone();
        let (answered, refused) = (answered.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut sent = 0;
            while per_client.is_none_or(|n| sent < n) {
                sent += 1;
                let resp = c
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth("sk-k")
                    .json(&ask())
                    .send()
                    .await
                    .expect("the gateway answers");
                match resp.status().as_u16() {
                    200 => {
                        answered.fetch_add(1, Ordering::SeqCst);
                        let _ = resp.bytes().await;
                    }
                    429 => {
                        let err: Value = resp.json().await.expect("json error");
                        assert_eq!(err["error"]["code"], code, "{err}");
                        refused.fetch_add(1, Ordering::SeqCst);
                        if per_client.is_none() {
                            return;
                        }
                    }
                    s => panic!("unexpected status {s}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    (
        answered.load(Ordering::SeqCst),
        refused.load(Ordering::SeqCst),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_share_one_budget() {
    if !redis_answers() {
        return;
    }
    let mock = Mock::start().await;
    let per_request = (PROMPT_TOKENS + COMPLETION_TOKENS) as f64 * TOKEN_USD;
    // About 20 requests' worth.
    let budget = 20.0 * per_request + per_request / 2.0;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.yaml");
    let key = format!("  - {{ name: k, key: sk-k, budget: {{ daily_usd: {budget} }} }}");
    std::fs::write(&path, shared_config(&mock, &unique_prefix(), &key)).expect("write config");
    let (a, b) = (spawn_gateway(&path).await, spawn_gateway(&path).await);

    let (answered, refused) =
        hammer(&[a.base.clone(), b.base.clone()], "budget_exceeded", None).await;
    let spend = answered as f64 * per_request;
    let overspend = (spend - budget).max(0.0);
    eprintln!(
        "shared budget: budget ${budget:.4}, ${per_request:.4} a request, answered {answered}, \
         refused {refused}, spend ${spend:.4}, overspend ${overspend:.4}"
    );
    assert_eq!(
        mock.requests(),
        answered,
        "every answer reached the upstream once"
    );
    assert_eq!(refused, 64, "every client ended refused by the budget");
    // N instances never overspend by more than one in-flight request each.
    assert!(
        spend <= budget + 2.0 * per_request + 1e-9,
        "spend {spend} over budget {budget} by more than two requests"
    );
    // The run really reached the budget: what is left cannot pay for one more estimate
    // (9 prompt + 20 completion tokens at most).
    assert!(
        spend > budget - 29.0 * TOKEN_USD - 1e-9,
        "spend {spend} stopped short of the budget {budget}"
    );
}

/// The control: the same run without `state.redis` lets each process spend the whole
/// budget, so the shared test above measures something.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_without_shared_state_each_spend_the_budget() {
    let mock = Mock::start().await;
    let per_request = (PROMPT_TOKENS + COMPLETION_TOKENS) as f64 * TOKEN_USD;
    let budget = 20.0 * per_request + per_request / 2.0;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.yaml");
    let key = format!("  - {{ name: k, key: sk-k, budget: {{ daily_usd: {budget} }} }}");
    let yaml = shared_config(&mock, "unused:", &key);
    let start = yaml.find("state:").expect("state section");
    let end = start + yaml[start..].find("pricing:").expect("pricing");
    std::fs::write(&path, format!("{}{}", &yaml[..start], &yaml[end..])).expect("write");
    let (a, b) = (spawn_gateway(&path).await, spawn_gateway(&path).await);
    let (answered, _) = hammer(&[a.base.clone(), b.base.clone()], "budget_exceeded", None).await;
    let spend = answered as f64 * per_request;
    eprintln!("in-process budgets: answered {answered}, spend ${spend:.4} of ${budget:.4}");
    assert!(spend > 1.5 * budget, "spend {spend}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_share_one_rate_limit() {
    if !redis_answers() {
        return;
    }
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.yaml");
    let rpm = 60;
    let key = format!("  - {{ name: k, key: sk-k, rate_limit: {{ requests_per_minute: {rpm} }} }}");
    std::fs::write(&path, shared_config(&mock, &unique_prefix(), &key)).expect("write config");
    let (a, b) = (spawn_gateway(&path).await, spawn_gateway(&path).await);

    let started = Instant::now();
    let (answered, refused) = hammer(
        &[a.base.clone(), b.base.clone()],
        "rate_limit_exceeded",
        Some(3),
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    // The burst (one minute's worth), plus one per second that passed: the cells refill.
    let allowed = rpm + elapsed.ceil() as usize;
    eprintln!(
        "shared rate limit: {rpm}/min over two processes, {} requests in {elapsed:.2}s: \
         answered {answered}, refused {refused}, bound {allowed}",
        answered + refused
    );
    assert_eq!(answered + refused, 192);
    assert!(answered >= rpm, "only {answered} answered");
    assert!(
        answered <= allowed,
        "{answered} answered, more than {allowed}"
    );
}

fn unreachable_config(mock: &Mock, on_error: &str) -> String {
    one_backend(
        mock,
        "",
        "",
        &format!(
            r#"
state:
  redis: {{ url: "redis://127.0.0.1:1", on_error: {on_error}, timeout: 200ms }}
pricing:
  gpt-test: {{ input: 1000, output: 1000 }}
keys:
  - {{ name: k, key: sk-k, budget: {{ daily_usd: 10 }}, rate_limit: {{ requests_per_minute: 1000 }} }}
"#
        ),
    )
}

async fn ask_remote(gw: &slmgate_gateway::Running) -> reqwest::Response {
    client()
        .post(url(gw, "/v1/chat/completions"))
        .bearer_auth("sk-k")
        .json(&chat_body("remote", false))
        .send()
        .await
        .expect("the gateway answers")
}

#[tokio::test]
async fn unreachable_redis_fails_open_with_local_limits() {
    let mock = Mock::start().await;
    let gw = gateway(&unreachable_config(&mock, "open")).await;
    let started = Instant::now();
    for _ in 0..3 {
        assert_eq!(ask_remote(&gw).await.status(), 200);
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    // The local ledger counted the spend.
    let u = gw.shared.load().accounting.state.budgets.usage(
        slmgate_config::policies::budget::BudgetScope::Key,
        "k",
        std::time::SystemTime::now(),
    );
    assert!(u.day_spent_usd > 0.0, "{u:?}");
    let metrics = client()
        .get(url(&gw, "/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("slmgate_state_errors_total"), "{metrics}");
    assert!(metrics.contains("slmgate_state_redis_up 0"), "{metrics}");
}

#[tokio::test]
async fn unreachable_redis_fails_closed_with_503() {
    let mock = Mock::start().await;
    let gw = gateway(&unreachable_config(&mock, "closed")).await;
    let resp = ask_remote(&gw).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let err = error_body(resp).await;
    assert_eq!(err["error"]["type"], "server_error");
    assert_eq!(err["error"]["code"], "state_unavailable");
    assert_eq!(mock.requests(), 0);
}

/// A Redis that goes away and comes back: closed → 503 while it is gone, answers again
/// without a restart once it is back.
#[tokio::test]
async fn redis_coming_back_needs_no_restart() {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: no redis-server binary");
        return;
    }
    let port = free_port();
    let start_redis = || {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server")
    };
    let wait_redis = || async {
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server on {port} did not start");
    };
    let mut redis = start_redis();
    wait_redis().await;
    let mock = Mock::start().await;
    let cfg = unreachable_config(&mock, "closed")
        .replace("redis://127.0.0.1:1", &format!("redis://127.0.0.1:{port}"));
    let gw = gateway(&cfg).await;
    assert_eq!(ask_remote(&gw).await.status(), 200);

    let _ = redis.kill();
    let _ = redis.wait();
    assert_eq!(ask_remote(&gw).await.status(), 503);

    let mut redis = start_redis();
    wait_redis().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = ask_remote(&gw).await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = redis.kill();
    let _ = redis.wait();
}

/// A reload that keeps `state.redis` keeps the store (and its connection); a changed
/// section makes a new one; removing it goes back to in-process state.
#[test]
fn reload_keeps_the_redis_store_while_the_section_is_unchanged() {
    use slmgate_gateway::build::{build_gateway, build_gateway_from, Carry};
    let load = |yaml: &str| {
        slmgate_config::load_str_with_env(yaml, "t.yaml", &|_| None)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let with = |prefix: &str| {
        load(&format!(
            "state:\n  redis: {{ url: \"redis://127.0.0.1:6379\", prefix: \"{prefix}\" }}\n"
        ))
    };
    let first = build_gateway(&with("a:")).expect("build");
    let store = |gw: &slmgate_gateway::runtime::Gateway| gw.accounting.state.redis.clone();
    let kept = build_gateway_from(&with("a:"), Carry::from_gateway(&first)).expect("reload");
    let (a, b) = (store(&first).expect("redis"), store(&kept).expect("redis"));
    assert!(Arc::ptr_eq(&a, &b), "same section: same store");
    let changed = build_gateway_from(&with("b:"), Carry::from_gateway(&kept)).expect("reload");
    assert!(!Arc::ptr_eq(&a, &store(&changed).expect("redis")));
    let none = build_gateway_from(
        &load("listen: 127.0.0.1:1\n"),
        Carry::from_gateway(&changed),
    )
    .expect("reload");
    assert!(store(&none).is_none());
}

fn shared_cache_config(mock: &Mock, redis: &str, prefix: &str, shared: bool) -> String {
    one_backend(
        mock,
        "",
        "",
        &format!(
            r#"
state:
  redis: {{ url: "{redis}", prefix: "{prefix}", timeout: 300ms }}
cache:
  exact: {{ enabled: true, ttl: 2s, shared: {shared} }}
keys:
  - {{ name: alice, key: sk-alice, team: red }}
  - {{ name: bob, key: sk-bob, team: blue }}
"#
        ),
    )
}

/// How many keys of the local Redis match `pattern` (`KEYS`, spoken in RESP over a plain
/// socket).
fn redis_keys(pattern: &str) -> usize {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect("127.0.0.1:6379").expect("redis");
    conn.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let cmd = format!("*2\r\n$4\r\nKEYS\r\n${}\r\n{pattern}\r\n", pattern.len());
    conn.write_all(cmd.as_bytes()).expect("send");
    let mut reply = [0u8; 64];
    let n = conn.read(&mut reply).expect("reply");
    // `*<count>\r\n…`: the count is all that is needed.
    let text = String::from_utf8_lossy(&reply[..n]);
    text.strip_prefix('*')
        .and_then(|t| t.split("\r\n").next())
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("unexpected KEYS reply {text:?}"))
}

/// Sends "Say hello" at temperature 0 as `key`; returns (cache header, body).
async fn cached_ask(gw: &slmgate_gateway::Running, key: &str, stream: bool) -> (String, String) {
    let mut body = chat_body("remote", stream);
    body["temperature"] = json!(0);
    let resp = client()
        .post(url(gw, "/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(resp.status(), 200);
    let cache = resp
        .headers()
        .get("x-slmgate-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (cache, resp.text().await.expect("body"))
}

/// `cache.exact.shared`: an answer stored by one instance answers the same request on
/// another (same key scoping: another team misses), until its TTL runs out; without
/// `shared` the other instance misses.
#[tokio::test]
async fn the_shared_exact_cache_answers_on_every_instance() {
    if !redis_answers() {
        return;
    }
    let mock = Mock::start().await;
    let prefix = unique_prefix();
    let cfg = shared_cache_config(&mock, "redis://127.0.0.1:6379", &prefix, true);
    let (a, b) = (gateway(&cfg).await, gateway(&cfg).await);
    let (cache, first) = cached_ask(&a, "sk-alice", false).await;
    assert_eq!((cache.as_str(), mock.requests()), ("miss", 1));
    // The write to Redis runs beside the answer: wait for it to land.
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis_keys(&format!("{prefix}cache:exact:*")) == 0 {
        assert!(Instant::now() < deadline, "the answer never reached Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (cache, on_b) = cached_ask(&b, "sk-alice", false).await;
    assert_eq!(cache, "hit", "the second instance answers from Redis");
    assert_eq!(mock.requests(), 1, "without calling the upstream");
    let requests = mock.requests();
    assert_eq!(on_b, first, "the same stored answer (same id)");
    // A stream request replays it; another team does not see it.
    let (cache, events) = cached_ask(&b, "sk-alice", true).await;
    assert_eq!(cache, "hit");
    assert!(
        events.contains(mock_provider::REPLY) && events.ends_with("data: [DONE]\n\n"),
        "{events}"
    );
    let (cache, _) = cached_ask(&b, "sk-bob", false).await;
    assert_eq!(cache, "miss");
    assert_eq!(mock.requests(), requests + 1);
    // Without `shared`, an instance keeps to its own memory.
    let c = gateway(&shared_cache_config(
        &mock,
        "redis://127.0.0.1:6379",
        &prefix,
        false,
    ))
    .await;
    assert_eq!(cached_ask(&c, "sk-alice", false).await.0, "miss");
    // Past the TTL, Redis has forgotten it too: a fresh instance misses.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let d = gateway(&cfg).await;
    assert_eq!(cached_ask(&d, "sk-alice", false).await.0, "miss");
}

/// With Redis unreachable the shared cache is a miss, never an error, and the local store
/// still answers repeats.
#[tokio::test]
async fn an_unreachable_shared_cache_is_a_miss() {
    let mock = Mock::start().await;
    let gw = gateway(&shared_cache_config(
        &mock,
        "redis://127.0.0.1:1",
        &unique_prefix(),
        true,
    ))
    .await;
    let started = Instant::now();
    assert_eq!(cached_ask(&gw, "sk-alice", false).await.0, "miss");
    assert_eq!(cached_ask(&gw, "sk-alice", false).await.0, "hit");
    assert_eq!(mock.requests(), 1);
    assert!(started.elapsed() < Duration::from_secs(3));
}
