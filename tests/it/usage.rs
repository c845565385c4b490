//! Usage records end to end: one exact row per request (JSON and streamed, remote and
//! local, errors), cost and counterfactual cost, `/v1/usage` totals against hand-computed
//! numbers, the admin key, drops counted when the database is gone or the queue is full,
//! shutdown flushing everything, the same on PostgreSQL, and `slmgate usage report`.

use std::time::Duration;

use crate::common::*;
use futures::StreamExt;
use mock_provider::{COMPLETION_TOKENS, PROMPT_TOKENS};
use serde_json::{json, Value};
use slmgate_usage::{Store, UsageRecord};

/// USD per 1M tokens used below (costs are compared to 1e-12).
const IN_PRICE: f64 = 1000.0;
const OUT_PRICE: f64 = 2000.0;
const REF_IN: f64 = 10000.0;
const REF_OUT: f64 = 30000.0;

fn cost(p: i64, c: i64, input: f64, output: f64) -> f64 {
    (p as f64 * input + c as f64 * output) / 1e6
}

fn config(mock: &Mock, database: &str, usage_extra: &str, extra: &str) -> String {
    config_with(mock, "", "", database, usage_extra, extra)
}

fn config_with(
    mock: &Mock,
    backend: &str,
    models: &str,
    database: &str,
    usage_extra: &str,
    extra: &str,
) -> String {
    one_backend(
        mock,
        backend,
        &format!(
            r#"  - name: bad
    backend: up
    model: error-400
  - name: broken
    backend: up
    model: error-500
{models}"#
        ),
        &format!(
            r#"
keys:
  - name: alice
    key: sk-alice
    team: research
  - name: bob
    key: sk-bob
teams:
  - name: research
pricing:
  gpt-test: {{ input: {IN_PRICE}, output: {OUT_PRICE} }}
  ref-model: {{ input: {REF_IN}, output: {REF_OUT} }}
usage:
  database: "{database}"
  reference_model: ref-model
{usage_extra}
{extra}
"#
        ),
    )
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("usage.db").display())
}

async fn post(gw: &slmgate_gateway::Running, key: &str, body: Value) -> reqwest::Response {
    client()
        .post(url(gw, "/v1/chat/completions"))
        .bearer_auth(key)
        .header(
            "x-request-id",
            format!("req-{}", body["model"].as_str().unwrap_or("")),
        )
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn chat(model: &str, stream: bool) -> Value {
    chat_body(model, stream)
}

async fn stream_text(resp: reqwest::Response) -> String {
    let mut s = resp.bytes_stream();
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    String::from_utf8(out).unwrap()
}

/// The rows of a finished gateway's database, oldest first.
async fn rows(url: &str) -> Vec<UsageRecord> {
    let store = Store::connect(url).await.unwrap();
    let r = store.rows(0, i64::MAX).await.unwrap();
    store.close().await;
    r
}

fn row<'a>(rows: &'a [UsageRecord], request_id: &str, stream: bool) -> &'a UsageRecord {
    rows.iter()
        .find(|r| r.request_id == request_id && r.stream == stream)
        .unwrap_or_else(|| panic!("no row for {request_id} stream={stream}: {rows:#?}"))
}

/// Sends the standard traffic: JSON and stream to `remote` (one stream asking for usage
/// itself), a 400 passed through, a 5xx after retries, an unknown model.
async fn traffic(gw: &slmgate_gateway::Running) {
    let r = post(gw, "sk-alice", chat("remote", false)).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], PROMPT_TOKENS);

    // A stream whose client did not ask for usage: the gateway asks, and hides it again.
    let r = post(gw, "sk-alice", chat("remote", true)).await;
    assert_eq!(r.status(), 200);
    let text = stream_text(r).await;
    assert!(
        !text.contains("\"usage\""),
        "usage leaked to the client: {text}"
    );
    assert!(text.contains("[DONE]"));

    // A stream whose client asked for usage sees it.
    let mut body = chat("remote", true);
    body["stream_options"] = json!({"include_usage": true});
    body["user"] = json!("asks-usage");
    let r = client()
        .post(url(gw, "/v1/chat/completions"))
        .bearer_auth("sk-bob")
        .header("x-request-id", "req-remote-usage")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(stream_text(r).await.contains("\"usage\""));

    assert_eq!(post(gw, "sk-bob", chat("bad", false)).await.status(), 400);
    assert!(post(gw, "sk-bob", chat("broken", false))
        .await
        .status()
        .is_server_error());
    assert_eq!(post(gw, "sk-bob", chat("nope", false)).await.status(), 404);
}

fn check_rows(rows: &[UsageRecord]) {
    assert_eq!(rows.len(), 6, "{rows:#?}");
    let (p, c) = (PROMPT_TOKENS as i64, COMPLETION_TOKENS as i64);
    for (rid, stream, key) in [
        ("req-remote", false, "alice"),
        ("req-remote", true, "alice"),
        ("req-remote-usage", true, "bob"),
    ] {
        let r = row(rows, rid, stream);
        assert_eq!(r.key_name.as_deref(), Some(key));
        assert_eq!(
            r.team.as_deref(),
            (key == "alice").then_some("research"),
            "{r:?}"
        );
        assert_eq!(r.requested_model, "remote");
        assert_eq!(r.target.as_deref(), Some("remote"));
        assert_eq!(r.strategy.as_deref(), Some("alias"));
        assert_eq!(r.backend.as_deref(), Some("up"));
        assert_eq!(r.upstream_model.as_deref(), Some("gpt-test"));
        assert!(!r.local);
        assert_eq!((r.prompt_tokens, r.completion_tokens), (p, c), "{r:?}");
        assert!(
            (r.cost_usd - cost(p, c, IN_PRICE, OUT_PRICE)).abs() < 1e-12,
            "{r:?}"
        );
        assert!(
            (r.counterfactual_usd - cost(p, c, REF_IN, REF_OUT)).abs() < 1e-12,
            "{r:?}"
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.error_class, None, "{r:?}");
        assert!(r.latency_ms > 0.0);
        let ttft = r.ttft_ms.expect("ttft");
        assert!(ttft > 0.0 && ttft <= r.latency_ms, "{r:?}");
        assert_eq!(r.cache, None);
        assert!(!r.id.is_empty());
    }
    let bad = row(rows, "req-bad", false);
    assert_eq!(bad.status, 400);
    assert_eq!(bad.error_class.as_deref(), Some("mock_error"));
    assert_eq!(bad.upstream_model.as_deref(), Some("error-400"));
    assert_eq!(
        (bad.prompt_tokens, bad.completion_tokens, bad.cost_usd),
        (0, 0, 0.0)
    );
    let broken = row(rows, "req-broken", false);
    assert!(broken.status >= 500, "{broken:?}");
    assert_eq!(broken.error_class.as_deref(), Some("upstream_error"));
    // A failure after routing still records what the router decided.
    assert_eq!(broken.target.as_deref(), Some("broken"), "{broken:?}");
    assert_eq!(broken.strategy.as_deref(), Some("alias"), "{broken:?}");
    let nope = row(rows, "req-nope", false);
    assert_eq!(nope.status, 404);
    assert_eq!(nope.error_class.as_deref(), Some("model_not_found"));
    assert_eq!(nope.target, None);
    assert_eq!(nope.requested_model, "nope");
}

/// Rows are exact, and a graceful shutdown writes every one of them (the flush interval and
/// batch are far too long for anything else to write them).
#[tokio::test]
async fn rows_are_exact_and_shutdown_flushes_everything() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(&dir);
    let gw = gateway(&config(
        &mock,
        &db,
        "  flush_interval: 1h\n  batch: 10000",
        "",
    ))
    .await;
    traffic(&gw).await;
    let writer = gw.usage.clone().expect("usage writer");
    assert_eq!(writer.sink.written(), 0, "nothing written before shutdown");
    gw.shutdown();
    gw.wait().await.unwrap();
    assert_eq!(writer.sink.written(), 6);
    assert_eq!(writer.sink.dropped(), 0);
    check_rows(&rows(&db).await);
}

async fn wait_written(gw: &slmgate_gateway::Running, n: u64) {
    let w = gw.usage.as_ref().expect("usage writer");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while w.sink.written() + w.sink.dropped() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {n} rows written",
            w.sink.written()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `/v1/usage` answers only with the admin key, and its totals, savings, groups and
/// percentiles match numbers computed by hand from the known traffic.
#[tokio::test]
async fn usage_endpoint_totals_savings_and_admin_key() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(&dir);
    let gw = gateway(&config(
        &mock,
        &db,
        "  flush_interval: 20ms",
        "admin:\n  key: adm1n",
    ))
    .await;
    traffic(&gw).await;
    wait_written(&gw, 6).await;

    let c = client();
    let r = c.get(url(&gw, "/v1/usage")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(url(&gw, "/v1/usage"))
        .bearer_auth("sk-alice")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "client keys do not open operator endpoints"
    );
    let r = c
        .get(url(&gw, "/v1/usage?group_by=key"))
        .bearer_auth("adm1n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let t = &v["totals"];
    let (p, cpl) = (PROMPT_TOKENS as i64, COMPLETION_TOKENS as i64);
    let one = cost(p, cpl, IN_PRICE, OUT_PRICE);
    let one_ref = cost(p, cpl, REF_IN, REF_OUT);
    assert_eq!(t["requests"], 6);
    assert_eq!(t["errors"], 3);
    assert_eq!(t["prompt_tokens"], 3 * p);
    assert_eq!(t["completion_tokens"], 3 * cpl);
    assert_eq!(t["total_tokens"], 3 * (p + cpl));
    let close = |a: &Value, b: f64| (a.as_f64().unwrap() - b).abs() < 1e-9;
    assert!(close(&t["cost_usd"], 3.0 * one), "{t}");
    assert!(close(&t["counterfactual_usd"], 3.0 * one_ref), "{t}");
    assert!(close(&t["savings_usd"], 3.0 * (one_ref - one)), "{t}");
    assert_eq!(t["local_requests"], 0);
    assert!(close(&t["local_share"], 0.0));
    assert!(close(&t["cache_hit_rate"], 0.0));
    // Groups by key, highest spend first: alice 2 answers, bob 1 answer + 3 errors.
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{v}");
    assert_eq!(groups[0]["key"], "alice");
    assert_eq!(groups[0]["requests"], 2);
    assert!(close(&groups[0]["cost_usd"], 2.0 * one));
    assert_eq!(groups[1]["key"], "bob");
    assert_eq!(groups[1]["requests"], 4);
    assert_eq!(groups[1]["errors"], 3);
    assert_eq!(v["top_keys"][0]["key"], "alice");
    for p in ["p50", "p95", "p99"] {
        assert!(v["latency_ms"][p].as_f64().unwrap() > 0.0, "{v}");
    }
    assert!(v["latency_ms"]["p50"].as_f64() <= v["latency_ms"]["p99"].as_f64());
    // TTFT over the two streams only: at most their latency.
    let ttft99 = v["ttft_ms"]["p99"].as_f64().unwrap();
    assert!(
        ttft99 > 0.0 && ttft99 <= v["latency_ms"]["p99"].as_f64().unwrap(),
        "{v}"
    );
    assert_eq!(v["categories"][0]["requests"], 6);

    // Time series: one bucket (this minute / day), with the same totals.
    let v: Value = c
        .get(url(&gw, "/v1/usage?bucket=minute&from=1h"))
        .bearer_auth("adm1n")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let buckets = v["groups"].as_array().unwrap();
    let n: i64 = buckets
        .iter()
        .map(|b| b["requests"].as_i64().unwrap())
        .sum();
    assert_eq!(n, 6, "{v}");
    assert!(buckets[0]["start_ms"].as_i64().unwrap() % 60_000 == 0);
    // A window in the past is empty.
    let v: Value = c
        .get(url(&gw, "/v1/usage?from=2000-01-01&to=2000-01-02"))
        .bearer_auth("adm1n")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["totals"]["requests"], 0);
    assert_eq!(v["latency_ms"]["p50"], Value::Null);
    // Bad parameters are OpenAI-shaped 400s.
    let r = c
        .get(url(&gw, "/v1/usage?group_by=planet"))
        .bearer_auth("adm1n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["param"], "group_by");

    // Recent decisions, newest first, with their reasons.
    let v: Value = c
        .get(url(&gw, "/v1/usage/recent?limit=2"))
        .bearer_auth("adm1n")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert!(data[0]["ts_ms"].as_i64() >= data[1]["ts_ms"].as_i64());
    let r = c
        .get(url(&gw, "/v1/usage/recent?limit=0"))
        .bearer_auth("adm1n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = c
        .get(url(&gw, "/v1/usage/recent"))
        .bearer_auth("adm1n")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ok = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["status"] == 200)
        .expect("a 200 row");
    assert!(ok["reason"].as_str().unwrap().contains("alias `remote`"));
    gw.shutdown();
    gw.wait().await.unwrap();
}

/// Without an admin key, the usage endpoints answer loopback clients (the test is one).
#[tokio::test]
async fn usage_endpoint_open_to_loopback_without_admin_key() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&config(&mock, &sqlite_url(&dir), "", "")).await;
    let r = client().get(url(&gw, "/v1/usage")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "usage.report");
    gw.shutdown();
    gw.wait().await.unwrap();
}

/// Killing the database mid-run: the rows the writer cannot write are counted as dropped
/// (and exported as a metric), never silently lost.
#[tokio::test]
async fn drops_are_counted_when_the_database_is_gone() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(&dir);
    let gw = gateway(&config(&mock, &db, "  flush_interval: 20ms", "")).await;
    assert_eq!(
        post(&gw, "sk-alice", chat("remote", false)).await.status(),
        200
    );
    wait_written(&gw, 1).await;
    let w = gw.usage.clone().unwrap();
    assert_eq!(w.sink.written(), 1);

    // "Kill" the database under the running writer.
    let store = Store::connect(&db).await.unwrap();
    sqlx::query("DROP TABLE usage_records")
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
    for _ in 0..4 {
        assert_eq!(
            post(&gw, "sk-alice", chat("remote", false)).await.status(),
            200
        );
    }
    wait_written(&gw, 5).await;
    assert_eq!((w.sink.written(), w.sink.dropped()), (1, 4));
    let metrics = client()
        .get(url(&gw, "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dropped: f64 = metrics
        .lines()
        .find(|l| l.starts_with("slmgate_usage_dropped_total{reason=\"write_error\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no write_error drops in /metrics:\n{metrics}"));
    assert!(dropped >= 4.0, "{dropped}");
    gw.shutdown();
    gw.wait().await.unwrap();
}

/// A full queue drops (and counts) instead of blocking requests: the database is locked by
/// another connection so the writer is stuck in its first batch while requests keep coming.
/// Every request is accounted for: written + dropped = requests.
#[tokio::test]
async fn a_full_queue_counts_drops_and_never_blocks_requests() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(&dir);
    let gw = gateway(&config(
        &mock,
        &db,
        "  queue: 2\n  batch: 1\n  flush_interval: 1h",
        "",
    ))
    .await;
    let lock = Store::connect(&db).await.unwrap();
    let mut conn = lock.pool().acquire().await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut *conn)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    for _ in 0..8 {
        assert_eq!(
            post(&gw, "sk-alice", chat("remote", false)).await.status(),
            200
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "requests waited for the writer"
    );
    let w = gw.usage.clone().unwrap();
    assert!(w.sink.dropped() >= 5, "dropped {}", w.sink.dropped());
    sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();
    drop(conn);
    lock.close().await;
    gw.shutdown();
    gw.wait().await.unwrap();
    assert_eq!(w.sink.written() + w.sink.dropped(), 8);
    assert_eq!(rows(&db).await.len() as u64, w.sink.written());
}

/// The same rows and the same report on PostgreSQL (127.0.0.1:5432, user postgres, database
/// `test`), in a schema of its own that is dropped at the end. Set SLMGATE_SKIP_PG=1 to skip
/// where no server runs.
#[tokio::test]
async fn postgres_rows_and_report() {
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
    let schema = format!("slmgate_test_{}", uuid_like());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    let url = format!("{base}?options=-c%20search_path%3D{schema}");
    let result = async {
        let mock = Mock::start().await;
        let gw = gateway(&config(&mock, &url, "  flush_interval: 20ms", "")).await;
        traffic(&gw).await;
        wait_written(&gw, 6).await;
        let v: Value = client()
            .get(url_of(&gw, "/v1/usage?group_by=day"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        gw.shutdown();
        gw.wait().await.unwrap();
        let rows = rows(&url).await;
        (v, rows)
    }
    .await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
    let (v, rows) = result;
    check_rows(&rows);
    let (p, c) = (PROMPT_TOKENS as i64, COMPLETION_TOKENS as i64);
    assert_eq!(v["totals"]["requests"], 6, "{v}");
    assert_eq!(v["totals"]["prompt_tokens"], 3 * p);
    let want = 3.0 * (cost(p, c, REF_IN, REF_OUT) - cost(p, c, IN_PRICE, OUT_PRICE));
    assert!((v["totals"]["savings_usd"].as_f64().unwrap() - want).abs() < 1e-9);
    assert_eq!(v["groups"].as_array().unwrap().len(), 1);
    assert_eq!(v["groups"][0]["requests"], 6);
}

fn url_of(gw: &slmgate_gateway::Running, path: &str) -> String {
    url(gw, path)
}

fn uuid_like() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}_{t}", std::process::id())
}

/// Local answers are marked local, priced at `pricing.local`, and count in the local share.
#[cfg(feature = "local")]
#[tokio::test]
async fn local_rows_and_local_share() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tiny = slmgate_local_model::fixtures::write_tiny_model(dir.path(), "llama", 7);
    let db = sqlite_url(&dir);
    let yaml = config_with(
        &mock,
        &format!(
            "  - name: slm\n    kind: local\n    enabled: true\n    model: {}\n    max_tokens: 4\n",
            tiny.display()
        ),
        "  - name: local\n    backend: slm\n",
        &db,
        "  flush_interval: 20ms",
        "",
    )
    .replace(
        "  ref-model:",
        "  local: { input: 1, output: 1 }\n  ref-model:",
    );
    let gw = gateway(&yaml).await;
    let r = post(&gw, "sk-alice", chat("local", false)).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let (lp, lc) = (
        v["usage"]["prompt_tokens"].as_i64().unwrap(),
        v["usage"]["completion_tokens"].as_i64().unwrap(),
    );
    let r = post(&gw, "sk-alice", chat("local", true)).await;
    assert_eq!(r.status(), 200);
    let text = stream_text(r).await;
    assert!(!text.contains("\"usage\""), "{text}");
    assert_eq!(
        post(&gw, "sk-alice", chat("remote", false)).await.status(),
        200
    );
    wait_written(&gw, 3).await;
    let v: Value = client()
        .get(url(&gw, "/v1/usage"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    gw.shutdown();
    gw.wait().await.unwrap();
    let rows = rows(&db).await;
    let json_row = row(&rows, "req-local", false);
    assert!(json_row.local);
    assert_eq!(json_row.backend.as_deref(), Some("slm"));
    assert_eq!(
        (json_row.prompt_tokens, json_row.completion_tokens),
        (lp, lc)
    );
    assert!((json_row.cost_usd - (lp + lc) as f64 / 1e6).abs() < 1e-12);
    assert!((json_row.counterfactual_usd - cost(lp, lc, REF_IN, REF_OUT)).abs() < 1e-12);
    let stream_row = row(&rows, "req-local", true);
    assert!(stream_row.local);
    assert!(
        stream_row.prompt_tokens > 0 && stream_row.completion_tokens > 0,
        "{stream_row:?}"
    );
    assert_eq!(stream_row.error_class, None);
    let t = &v["totals"];
    assert_eq!(t["requests"], 3);
    assert_eq!(t["local_requests"], 2);
    assert!(
        (t["local_share"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-12,
        "{t}"
    );
}

/// `slmgate usage report` prints the same numbers as the endpoint, as a table and as CSV.
#[tokio::test]
async fn cli_report_matches_the_endpoint() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(&dir);
    let gw = gateway(&config(&mock, &db, "", "")).await;
    traffic(&gw).await;
    gw.shutdown();
    gw.wait().await.unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_slmgate"))
        .args([
            "usage",
            "report",
            "--db",
            &db,
            "--group-by",
            "key",
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[0].starts_with("group,requests,errors,prompt_tokens"));
    assert!(lines[1].starts_with("alice,2,0,22,14,"), "{csv}");
    assert!(lines[2].starts_with("bob,4,3,11,7,"), "{csv}");
    assert!(lines[3].starts_with("TOTAL,6,3,33,21,"), "{csv}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_slmgate"))
        .args(["usage", "report", "--db", &db])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("TOTAL") && table.contains("latency ms p50"),
        "{table}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_slmgate"))
        .args([
            "usage",
            "report",
            "--db",
            &format!("sqlite://{}/missing.db", dir.path().display()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no usage database"));
}

/// A cache hit is a row of its own: marked `hit`, same tokens, cost 0, counterfactual
/// kept; the miss before it went upstream and is priced as usual.
#[tokio::test]
async fn cache_hits_are_recorded_at_cost_zero() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(&dir);
    let gw = gateway(&config(
        &mock,
        &db,
        "",
        "cache:\n  exact:\n    enabled: true\n    temperature_zero_only: false\n",
    ))
    .await;
    for _ in 0..2 {
        let r = post(&gw, "sk-alice", chat("remote", false)).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    assert_eq!(mock.requests(), 1, "the second answer came from the cache");
    gw.shutdown();
    gw.wait().await.unwrap();
    let rows = rows(&db).await;
    assert_eq!(rows.len(), 2);
    let (p, c) = (PROMPT_TOKENS as i64, COMPLETION_TOKENS as i64);
    let (miss, hit) = (&rows[0], &rows[1]);
    assert_eq!(miss.cache, None, "{miss:?}");
    assert!((miss.cost_usd - cost(p, c, IN_PRICE, OUT_PRICE)).abs() < 1e-12);
    assert_eq!(hit.cache.as_deref(), Some("hit"), "{hit:?}");
    assert_eq!((hit.prompt_tokens, hit.completion_tokens), (p, c));
    assert_eq!(hit.cost_usd, 0.0);
    assert!((hit.counterfactual_usd - cost(p, c, REF_IN, REF_OUT)).abs() < 1e-12);
}
