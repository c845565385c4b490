//! The cost dashboard in a real browser: headless Chromium (Debian's `chromium`, driven by
//! Playwright's Python package with `executable_path`) against a gateway with generated
//! traffic. `tests/python/dashboard_check.py` signs in, checks that the numbers shown equal
//! `GET /v1/usage`, watches the page update without a reload, and saves a screenshot to
//! `target/tmp/dashboard.png`.
//!
//! `scripts/test.sh` installs both (scripts/services.sh, scripts/python-env.sh). Outside
//! that setup the browser test is skipped with a note; set `SLMGATE_REQUIRE_BROWSER=1` to
//! make a missing browser an error (scripts/test.sh does).
#![cfg(feature = "local")]

use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

const ADMIN: &str = "admin-s3cret";

fn chromium() -> Option<String> {
    let c = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    std::path::Path::new(&c).exists().then_some(c)
}

/// The mock upstream as the priced remote model, a tiny random GGUF as the free local one,
/// `auto` routed by rules (tools → remote, the rest local), usage in a temp SQLite file.
fn config(mock: &Mock, model: &str, db: &str) -> String {
    format!(
        r#"
listen: "127.0.0.1:0"
backends:
  - name: up
    kind: openai
    base_url: {base}
    api_key: sk-backend
  - name: slm
    kind: local
    enabled: true
    model: {model}
    max_tokens: 4
models:
  - name: remote
    backend: up
    model: gpt-test
  - name: local
    backend: slm
router:
  aliases: [auto]
  local: local
  remote: remote
  strategies: [rules]
  default: local
  rules:
    tools: remote
pricing:
  gpt-test: {{ input: 5.0, output: 15.0 }}
usage:
  database: sqlite://{db}
  flush_interval: 20ms
  reference_model: gpt-test
admin:
  key: {ADMIN}
keys:
  - {{ name: alice, key: sk-alice, team: research }}
  - {{ name: bob, key: sk-bob, team: support }}
"#,
        base = mock.base_url()
    )
}

async fn chat(gw: &slmgate_gateway::Running, key: &str, body: Value) -> reqwest::StatusCode {
    let resp = client()
        .post(url(gw, "/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("chat");
    let status = resp.status();
    let _ = resp.bytes().await;
    status
}

async fn traffic(gw: &slmgate_gateway::Running) {
    let tool =
        json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    for i in 0..4 {
        let q = json!({"model": "auto", "messages": [{"role": "user", "content": format!("hello {i}")}]});
        assert!(chat(gw, "sk-alice", q).await.is_success());
    }
    for i in 0..3 {
        let q = json!({"model": "auto", "tools": tool, "messages": [{"role": "user", "content": format!("use the tool {i}")}]});
        assert!(chat(gw, "sk-bob", q).await.is_success());
    }
    let q = json!({"model": "remote", "messages": [{"role": "user", "content": "big question"}]});
    assert!(chat(gw, "sk-bob", q).await.is_success());
    // An error row: an unknown model.
    let q = json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(
        chat(gw, "sk-alice", q).await,
        reqwest::StatusCode::NOT_FOUND
    );
}

async fn usage_totals(gw: &slmgate_gateway::Running) -> Value {
    let resp = client()
        .get(url(gw, "/v1/usage?from=24h"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("usage");
    assert!(resp.status().is_success());
    resp.json::<Value>().await.expect("json")["totals"].clone()
}

#[tokio::test]
async fn dashboard_is_admin_only_and_self_contained() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let model = slmgate_local_model::fixtures::write_tiny_model(dir.path(), "llama", 7);
    let db = dir.path().join("usage.db");
    let gw = gateway(&config(
        &mock,
        &model.display().to_string(),
        &db.display().to_string(),
    ))
    .await;

    // A browser without the key gets the sign-in form; an API client gets a JSON 401.
    let page = client()
        .get(url(&gw, "/dashboard"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 401);
    assert!(page.text().await.unwrap().contains("name=\"key\""));
    let api = client().get(url(&gw, "/dashboard")).send().await.unwrap();
    assert_eq!(api.status(), 401);
    assert_eq!(
        api.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_api_key"
    );
    // A client key is not an admin key.
    let r = client()
        .get(url(&gw, "/dashboard/app.js"))
        .bearer_auth("sk-alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Signing in: a wrong key gets the form again; the right one a cookie and a redirect.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let bad = no_redirect
        .post(url(&gw, "/dashboard/login"))
        .form(&[("key", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    // A malformed sign-in post: a 400 in OpenAI's shape.
    let malformed = no_redirect
        .post(url(&gw, "/dashboard/login"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(
        malformed.json::<Value>().await.unwrap()["error"]["param"],
        "key"
    );
    let good = no_redirect
        .post(url(&gw, "/dashboard/login"))
        .form(&[("key", ADMIN)])
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 303);
    let cookie = good.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let pair = cookie.split(';').next().unwrap().to_string();
    for (path, ctype) in [
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let r = client()
            .get(url(&gw, path))
            .header("cookie", &pair)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(ctype));
        // Works offline: nothing is loaded from another origin (the SVG namespace is a name,
        // not a resource).
        let text = r
            .text()
            .await
            .unwrap()
            .replace("http://www.w3.org/2000/svg", "");
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{path} references another origin"
        );
    }
    // The cookie opens the usage API too (the page's own requests).
    let r = client()
        .get(url(&gw, "/v1/usage"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    gw.shutdown();
}

#[tokio::test]
async fn dashboard_in_headless_chromium_shows_what_v1_usage_says() {
    let py = python_with("playwright.sync_api");
    let (Ok(py), Some(chromium)) = (&py, chromium()) else {
        assert!(
            std::env::var("SLMGATE_REQUIRE_BROWSER").is_err(),
            "SLMGATE_REQUIRE_BROWSER is set but Chromium or Playwright is missing \
             (scripts/services.sh and scripts/python-env.sh install them): {py:?}"
        );
        eprintln!(
            "SKIPPED: chromium or the playwright Python package not found (run scripts/test.sh)"
        );
        return;
    };
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let model = slmgate_local_model::fixtures::write_tiny_model(dir.path(), "llama", 7);
    let db = dir.path().join("usage.db");
    let gw = gateway(&config(
        &mock,
        &model.display().to_string(),
        &db.display().to_string(),
    ))
    .await;
    traffic(&gw).await;
    // Wait until the writer has stored every request.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let t = usage_totals(&gw).await;
        if t["requests"] == 9 {
            assert!(t["local_share"].as_f64().unwrap() > 0.3, "{t}");
            assert!(t["savings_usd"].as_f64().unwrap() > 0.0, "{t}");
            assert_eq!(t["errors"], 1, "{t}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "usage rows not written: {t}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let shot = format!("{}/dashboard.png", env!("CARGO_TARGET_TMPDIR"));
    let script = format!(
        "{}/tests/python/dashboard_check.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = tokio::process::Command::new(py)
        .args([
            "-P",
            &script,
            &format!("http://{}", gw.addr),
            ADMIN,
            "sk-alice",
            &shot,
        ])
        .env("CHROMIUM", &chromium)
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "dashboard check failed:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");
    assert!(std::path::Path::new(&shot).exists());
    gw.shutdown();
}

/// The sign-in cookie holds a session token, never the admin key; wrong keys are throttled.
#[tokio::test]
async fn the_dashboard_cookie_is_a_session_and_wrong_keys_are_throttled() {
    let mock = Mock::start().await;
    let gw = gateway(&one_backend(
        &mock,
        "",
        "",
        &format!("admin:\n  key: {ADMIN}\n"),
    ))
    .await;
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = |key: &'static str| {
        let (c, u) = (no_redirect.clone(), url(&gw, "/dashboard/login"));
        async move { c.post(u).form(&[("key", key)]).send().await.unwrap() }
    };
    let status_with_cookie = |cookie: String| {
        let u = url(&gw, "/admin/status");
        async move {
            client()
                .get(u)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };

    let good = login(ADMIN).await;
    assert_eq!(good.status(), 303);
    let cookie = good.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        !cookie.contains(ADMIN),
        "the admin key is in the cookie: {cookie}"
    );
    assert!(cookie.contains("Max-Age="), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();
    assert_eq!(status_with_cookie(pair.clone()).await, 200);
    // The key itself in the cookie opens nothing.
    assert_eq!(
        status_with_cookie(format!("slmgate_admin={ADMIN}")).await,
        401
    );
    // Another sign-in, another token.
    let again = login(ADMIN).await;
    assert_ne!(again.headers()["set-cookie"].to_str().unwrap(), cookie);

    // Five wrong keys (form or header) from this address, then even the right one waits.
    for _ in 0..3 {
        assert_eq!(login("wrong").await.status(), 401);
    }
    for _ in 0..2 {
        let r = client()
            .get(url(&gw, "/admin/status"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let throttled = login(ADMIN).await;
    assert_eq!(throttled.status(), 429);
    let retry: u64 = throttled.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let err = error_body(throttled).await;
    assert_eq!(err["error"]["code"], "rate_limit_exceeded", "{err}");
    let r = client()
        .get(url(&gw, "/admin/status"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // A session opened before keeps working.
    assert_eq!(status_with_cookie(pair).await, 200);
    gw.shutdown();
}
