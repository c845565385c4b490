//! Client keys managed at run time (`/admin/keys`): created with the secret shown once,
//! stored hashed in the usage database, used, listed, budgeted, revoked, and seen by a
//! second gateway on the same database within `usage.keys_poll`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use slmgate_usage::Store;

use crate::common::{chat_body, client, gateway, one_backend, url, Mock};

const ADMIN: &str = "adm1n";

fn config(mock: &Mock, database: &str) -> String {
    one_backend(
        mock,
        "",
        "",
        &format!(
            r#"
keys:
  - name: ops
    key: sk-ops
admin:
  key: {ADMIN}
pricing:
  gpt-test: {{ input: 1000, output: 1000 }}
usage:
  database: "{database}"
  flush_interval: 20ms
  keys_poll: 200ms
"#
        ),
    )
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("usage.db").display())
}

async fn create(gw: &slmgate_gateway::Running, body: Value) -> reqwest::Response {
    client()
        .post(url(gw, "/admin/keys"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn revoke(gw: &slmgate_gateway::Running, name: &str) -> reqwest::Response {
    client()
        .delete(url(gw, &format!("/admin/keys/{name}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
}

async fn chat(gw: &slmgate_gateway::Running, key: &str) -> reqwest::Response {
    client()
        .post(url(gw, "/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat_body("remote", false))
        .send()
        .await
        .unwrap()
}

/// Polls `gw` with `key` until it answers `want`, for at most 5 s; returns how long it took.
async fn until_status(gw: &slmgate_gateway::Running, key: &str, want: u16) -> Duration {
    let start = Instant::now();
    loop {
        let got = chat(gw, key).await.status().as_u16();
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still {got}, not {want}, after 5s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Create → use (the usage row has the key's name) → list (no secret) → revoke → 401.
async fn lifecycle(database: &str) {
    let mock = Mock::start().await;
    let gw = gateway(&config(&mock, database)).await;
    let r = create(
        &gw,
        json!({"name": "svc-a", "team": "research", "tags": ["ci"], "models": ["remote"]}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    let secret = v["key"].as_str().unwrap().to_string();
    assert!(secret.starts_with("sk-slm-") && secret.len() == 39, "{v}");
    assert_eq!(v["name"], "svc-a");
    assert_eq!(v["source"], "runtime");

    // The serving instance knows the key at once.
    let r = chat(&gw, &secret).await;
    assert_eq!(r.status(), 200);
    let writer = gw.usage.clone().unwrap();
    let start = Instant::now();
    while writer.sink.written() < 1 {
        assert!(start.elapsed() < Duration::from_secs(5), "row not written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows = writer.store.rows(0, i64::MAX).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].key_name.as_deref(), Some("svc-a"));
    assert_eq!(rows[0].team.as_deref(), Some("research"));

    // Listed, never with a secret or a digest.
    let r = client()
        .get(url(&gw, "/admin/keys"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains(&secret) && !text.contains("sk-ops"),
        "{text}"
    );
    assert!(!text.contains("sha256"), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let sources: Vec<(String, String)> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["name"].as_str().unwrap().to_string(),
                k["source"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        [
            ("ops".to_string(), "yaml".to_string()),
            ("svc-a".to_string(), "runtime".to_string())
        ]
    );
    // Only the digest is stored.
    let stored = writer.store.active_keys().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0].sha256, secret);
    assert_eq!(stored[0].sha256.len(), 64);

    // Revoked: 204, then 401 here at once; 404 the second time.
    assert_eq!(revoke(&gw, "svc-a").await.status(), 204);
    assert_eq!(chat(&gw, &secret).await.status(), 401);
    assert_eq!(revoke(&gw, "svc-a").await.status(), 404);
    // The YAML key still works.
    assert_eq!(chat(&gw, "sk-ops").await.status(), 200);
    gw.shutdown();
    gw.wait().await.unwrap();
}

#[tokio::test]
async fn create_use_list_revoke_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    lifecycle(&sqlite_url(&dir)).await;
}

#[tokio::test]
async fn bad_bodies_duplicates_and_yaml_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mock = Mock::start().await;
    let gw = gateway(&config(&mock, &sqlite_url(&dir))).await;
    for (body, param) in [
        (json!({"name": ""}), Some("name")),
        (json!({"nam": "x"}), None),
        (json!({"name": "x", "models": ["nope"]}), Some("models")),
        (
            json!({"name": "x", "budget": {"daily_usd": -1}}),
            Some("budget.daily_usd"),
        ),
        (json!({"name": "x", "budget": {"weekly": 1}}), None),
        (
            json!({"name": "x", "rate_limit": {"burst_requests": 5}}),
            Some("rate_limit.burst_requests"),
        ),
    ] {
        let r = create(&gw, body.clone()).await;
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["param"].as_str(), param, "{body}: {v}");
    }
    let r = client()
        .post(url(&gw, "/admin/keys"))
        .bearer_auth(ADMIN)
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The admin key is required.
    let r = client()
        .post(url(&gw, "/admin/keys"))
        .bearer_auth("sk-ops")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    assert_eq!(create(&gw, json!({"name": "dup"})).await.status(), 201);
    let r = create(&gw, json!({"name": "dup"})).await;
    assert_eq!(r.status(), 409);
    assert_eq!(create(&gw, json!({"name": "ops"})).await.status(), 409);
    let r = revoke(&gw, "ops").await;
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("edit the config"),
        "{v}"
    );
    assert_eq!(revoke(&gw, "nobody").await.status(), 404);
    gw.shutdown();
    gw.wait().await.unwrap();
}

#[tokio::test]
async fn a_runtime_key_budget_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let mock = Mock::start().await;
    let gw = gateway(&config(&mock, &sqlite_url(&dir))).await;
    let r = create(&gw, json!({"name": "cheap", "budget": {"daily_usd": 0.01}})).await;
    assert_eq!(r.status(), 201);
    let secret = r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = chat(&gw, &secret).await;
        let status = r.status().as_u16();
        statuses.push(status);
        if status == 429 {
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["type"], "insufficient_quota", "{v}");
            assert_eq!(v["error"]["code"], "budget_exceeded", "{v}");
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("key `cheap`"),
                "{v}"
            );
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // The YAML key has no budget.
    assert_eq!(chat(&gw, "sk-ops").await.status(), 200);
    gw.shutdown();
    gw.wait().await.unwrap();
}

#[tokio::test]
async fn two_gateways_on_one_database_see_new_and_revoked_keys_within_the_poll() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(&dir);
    let mock = Mock::start().await;
    let a = gateway(&config(&mock, &db)).await;
    let b = gateway(&config(&mock, &db)).await;
    let r = create(&a, json!({"name": "shared"})).await;
    assert_eq!(r.status(), 201);
    let secret = r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let took = until_status(&b, &secret, 200).await;
    assert!(took < Duration::from_secs(2), "created: {took:?}");
    assert_eq!(revoke(&a, "shared").await.status(), 204);
    let took = until_status(&b, &secret, 401).await;
    assert!(took < Duration::from_secs(2), "revoked: {took:?}");
    // Revoking on the other instance knows the key is gone too.
    assert_eq!(revoke(&b, "shared").await.status(), 404);
    for gw in [a, b] {
        gw.shutdown();
        gw.wait().await.unwrap();
    }
}

/// The same lifecycle on PostgreSQL (127.0.0.1:5432, user postgres, database `test`), in a
/// schema of its own dropped at the end; skipped with a message when no server answers.
#[tokio::test]
async fn create_use_list_revoke_on_postgres() {
    let base = std::env::var("SLMGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    sqlx::any::install_default_drivers();
    let admin = match sqlx::any::AnyPoolOptions::new()
        .acquire_timeout(Duration::from_secs(5))
        .connect(&base)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("skipping: PostgreSQL at {base} does not answer ({e})");
            return;
        }
    };
    let schema = format!("slmgate_keys_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    let url = format!("{base}?options=-c%20search_path%3D{schema}");
    let result = tokio::spawn({
        let url = url.clone();
        async move { lifecycle(&url).await }
    })
    .await;
    // The keys table is in the schema too.
    let store = Store::connect(&url).await.unwrap();
    let keys = store.active_keys().await.unwrap();
    store.close().await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
    result.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

/// Runtime keys are in the database: a restarted gateway knows them before its first request.
#[tokio::test]
async fn runtime_keys_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(&dir);
    let mock = Mock::start().await;
    let gw = gateway(&config(&mock, &db)).await;
    let r = create(&gw, json!({"name": "kept"})).await;
    assert_eq!(r.status(), 201);
    let secret = r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    gw.shutdown();
    gw.wait().await.unwrap();
    let gw = gateway(&config(&mock, &db)).await;
    assert_eq!(chat(&gw, &secret).await.status(), 200);
    gw.shutdown();
    gw.wait().await.unwrap();
}

fn config_without_keys(mock: &Mock, usage: &str, auth: &str) -> String {
    one_backend(
        mock,
        "",
        "",
        &format!("{auth}\nadmin:\n  key: {ADMIN}\n{usage}\n"),
    )
}

/// Without `usage.database` keys cannot be created or revoked (409, said why); listing shows
/// the YAML keys.
#[tokio::test]
async fn runtime_keys_need_a_usage_database() {
    let mock = Mock::start().await;
    let gw = gateway(&config_without_keys(&mock, "", "")).await;
    let r = create(&gw, json!({"name": "x"})).await;
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "runtime_keys_unavailable", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("usage.database"),
        "{v}"
    );
    assert_eq!(revoke(&gw, "x").await.status(), 409);
    let r = client()
        .get(url(&gw, "/admin/keys"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    gw.shutdown();
    gw.wait().await.unwrap();
}

/// A gateway with no `keys:` is open until a runtime key exists, then needs a key; with
/// `auth: none` it stays open and a runtime key is still recognized (its usage rows name it).
#[tokio::test]
async fn runtime_keys_close_an_open_gateway_unless_auth_none() {
    let dir = tempfile::tempdir().unwrap();
    let usage = format!(
        "usage:\n  database: \"{}\"\n  flush_interval: 20ms\n  keys_poll: 200ms",
        sqlite_url(&dir)
    );
    let mock = Mock::start().await;
    let gw = gateway(&config_without_keys(&mock, &usage, "")).await;
    assert_eq!(chat(&gw, "anything").await.status(), 200);
    let r = create(&gw, json!({"name": "first"})).await;
    let secret = r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(chat(&gw, "anything").await.status(), 401);
    assert_eq!(chat(&gw, &secret).await.status(), 200);
    gw.shutdown();
    gw.wait().await.unwrap();

    // The same database, `auth: none`: open, the runtime key still recognized.
    let gw = gateway(&config_without_keys(&mock, &usage, "auth: none")).await;
    assert_eq!(chat(&gw, "anything").await.status(), 200);
    assert_eq!(chat(&gw, &secret).await.status(), 200);
    let writer = gw.usage.clone().unwrap();
    let start = Instant::now();
    while writer.sink.written() < 2 {
        assert!(start.elapsed() < Duration::from_secs(5), "rows not written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows = writer.store.rows(0, i64::MAX).await.unwrap();
    let named = rows
        .iter()
        .filter(|r| r.key_name.as_deref() == Some("first"))
        .count();
    assert_eq!(named, 2, "{rows:#?}");
    gw.shutdown();
    gw.wait().await.unwrap();
}
