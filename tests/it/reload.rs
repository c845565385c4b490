//! Hot reload and the admin endpoints, end to end: the real server started on a config file
//! in a temp dir, against the mock upstream.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::common::{chat_body, client, error_body, get_json, one_backend, url, Mock};
use serde_json::Value;
use slmgate_config::policies::budget::BudgetScope;
use slmgate_gateway::{Running, StartOptions};

/// Writes `yaml` to `path` the way editors save: a new file renamed over the old one.
fn save(path: &Path, yaml: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Starts the gateway on the config in `path`.
async fn start(path: &Path, opts: StartOptions) -> Running {
    let cfg = slmgate_config::load_file(path).unwrap_or_else(|e| panic!("invalid:\n{e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    slmgate_gateway::start_with(&cfg, listener, opts)
        .await
        .unwrap()
}

/// A file-backed gateway that reloads only when told (no watcher, no SIGHUP).
fn manual(path: &Path) -> StartOptions {
    StartOptions {
        watch: false,
        ..StartOptions::file(path)
    }
}

fn temp_config(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slmgate.yaml");
    save(&path, yaml);
    (dir, path)
}

async fn post_reload(gw: &Running, key: Option<&str>) -> reqwest::Response {
    let mut req = client().post(url(gw, "/admin/reload"));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap()
}

async fn model_ids(gw: &Running) -> Vec<String> {
    get_json(gw, "/v1/models").await["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

/// Sends a chat request and reads the whole answer; returns its status.
async fn chat_status(gw: &Running, model: &str) -> u16 {
    let resp = client()
        .post(url(gw, "/v1/chat/completions"))
        .json(&chat_body(model, false))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    resp.bytes().await.unwrap();
    status
}

/// Polls `f` every 50 ms until it holds or `within` passes.
async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// `models[1].backend` names a backend that does not exist (line 17 of [`one_backend`]).
fn unknown_backend(mock: &Mock) -> String {
    one_backend(mock, "", "  - name: broken\n    backend: nope\n", "")
}

/// Not YAML at all.
const SYNTAX_ERROR: &str = "models:\n  - name: [oops\n    backend: up\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_under_load_loses_no_request_and_rejects_bad_configs() {
    let mock = Mock::start().await;
    // `slow` keeps requests in flight across every swap.
    let base = "  - name: slow\n    backend: up\n    model: slow-20\n";
    let good = one_backend(&mock, "", base, "");
    let (_dir, path) = temp_config(&good);
    let gw = Arc::new(start(&path, manual(&path)).await);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut clients = Vec::new();
    for i in 0..8 {
        let (gw, stop, ok, failures) = (gw.clone(), stop.clone(), ok.clone(), failures.clone());
        clients.push(tokio::spawn(async move {
            let http = client();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let model = if (i + n) % 2 == 0 { "remote" } else { "slow" };
                let stream = i % 4 == 3;
                let resp = http
                    .post(url(&gw, "/v1/chat/completions"))
                    .json(&chat_body(model, stream))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 200 => match r.bytes().await {
                        // A stream must end properly, not just start.
                        Ok(b) if !stream || b.ends_with(b"data: [DONE]\n\n") => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(b) => failures.lock().unwrap().push(format!(
                            "{model}: cut stream {:?}",
                            String::from_utf8_lossy(&b)
                        )),
                        Err(e) => failures.lock().unwrap().push(format!("{model}: body {e}")),
                    },
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{model}: status {}", r.status())),
                    Err(e) => failures.lock().unwrap().push(format!("{model}: {e}")),
                }
                n += 1;
            }
        }));
    }

    let with_fresh = one_backend(
        &mock,
        "",
        &format!("{base}  - name: fresh\n    backend: up\n    model: gpt-test\n"),
        "",
    );
    let renamed = one_backend(
        &mock,
        "",
        &format!("{base}  - name: renamed\n    backend: up\n    model: gpt-test\n"),
        "",
    );
    let bad_reference = unknown_backend(&mock);
    // (config, accepted?, alias that must be served afterwards, alias that must be gone)
    let steps: Vec<(&str, bool, Option<&str>, Option<&str>)> = vec![
        (&good, true, Some("slow"), None),
        (SYNTAX_ERROR, false, Some("slow"), None),
        (&with_fresh, true, Some("fresh"), None),
        (&bad_reference, false, Some("fresh"), Some("broken")),
        (&renamed, true, Some("renamed"), Some("fresh")),
        (SYNTAX_ERROR, false, Some("renamed"), None),
        (&good, true, Some("slow"), Some("renamed")),
    ];
    let mut generation = 0;
    for (i, (yaml, accepted, present, absent)) in steps.into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(150)).await;
        save(&path, yaml);
        let resp = post_reload(&gw, None).await;
        if accepted {
            assert_eq!(resp.status(), 200, "step {i}");
            generation += 1;
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["snapshot"]["generation"], generation, "step {i}: {v}");
            assert_eq!(v["last_reload"]["ok"], true, "step {i}: {v}");
        } else {
            assert_eq!(resp.status(), 422, "step {i}");
            let v = error_body(resp).await;
            assert_eq!(v["error"]["code"], "config_invalid", "step {i}: {v}");
            let first = &v["error"]["errors"][0];
            assert!(first["line"].as_u64().is_some(), "step {i}: {v}");
            assert!(first["column"].as_u64().is_some(), "step {i}: {v}");
            // The old configuration keeps serving, at the same generation.
            assert_eq!(v["status"]["snapshot"]["generation"], generation, "{v}");
            assert_eq!(v["status"]["last_reload"]["ok"], false, "{v}");
        }
        let ids = model_ids(&gw).await;
        if let Some(alias) = present {
            assert!(ids.iter().any(|m| m == alias), "step {i}: {ids:?}");
            assert_eq!(chat_status(&gw, alias).await, 200, "step {i}: {alias}");
        }
        if let Some(alias) = absent {
            assert!(!ids.iter().any(|m| m == alias), "step {i}: {ids:?}");
            assert_eq!(chat_status(&gw, alias).await, 404, "step {i}: {alias}");
        }
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "lost requests: {failures:?}");
    let served = ok.load(Ordering::Relaxed);
    assert!(served >= 100, "only {served} requests during the reloads");
    let status = gw.reloader.status();
    assert_eq!(status.generation, 4);
    assert_eq!((status.succeeded, status.failed), (4, 3));
}

#[tokio::test]
async fn admin_reload_needs_the_admin_key_when_one_is_set() {
    let mock = Mock::start().await;
    let yaml = one_backend(
        &mock,
        "",
        "",
        "admin:\n  key: adm-secret\nkeys:\n  - name: c\n    key: sk-client\n",
    );
    let (_dir, path) = temp_config(&yaml);
    let gw = start(&path, manual(&path)).await;

    let resp = post_reload(&gw, None).await;
    assert_eq!(resp.status(), 401);
    let v = error_body(resp).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("admin key"),
        "{v}"
    );
    // Neither a wrong key nor a client key opens it, even from loopback.
    for key in ["wrong", "sk-client"] {
        let resp = post_reload(&gw, Some(key)).await;
        assert_eq!(resp.status(), 401, "{key}");
        error_body(resp).await;
    }
    let resp = client()
        .get(url(&gw, "/admin/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(gw.reloader.status().generation, 0, "nothing reloaded");

    let resp = post_reload(&gw, Some("adm-secret")).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["snapshot"]["generation"], 1, "{v}");
    assert_eq!(v["last_reload"]["trigger"], "admin", "{v}");
    let resp = client()
        .get(url(&gw, "/admin/status"))
        .bearer_auth("adm-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Wrong method: OpenAI-shaped 405, after the admin check.
    let resp = client()
        .get(url(&gw, "/admin/reload"))
        .bearer_auth("adm-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    error_body(resp).await;
}

#[tokio::test]
async fn status_shows_the_file_the_last_reload_and_its_error_with_line_and_column() {
    let mock = Mock::start().await;
    let yaml = one_backend(
        &mock,
        "  - name: off\n    kind: openai\n    enabled: false\n    base_url: http://127.0.0.1:9/v1\n",
        "  - name: dark\n    backend: off\n",
        "",
    );
    let (_dir, path) = temp_config(&yaml);
    let gw = start(&path, manual(&path)).await;

    let v = get_json(&gw, "/admin/status").await;
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"), "{v}");
    assert_eq!(v["config"]["source"], "file", "{v}");
    assert_eq!(v["config"]["path"], path.display().to_string(), "{v}");
    assert_eq!(v["snapshot"]["generation"], 0, "{v}");
    assert!(v["snapshot"]["created"].as_u64().unwrap() > 0, "{v}");
    assert!(v["started"].as_u64().unwrap() > 0, "{v}");
    assert!(v["last_reload"].is_null(), "{v}");
    assert_eq!(v["models"]["available"][0]["name"], "remote", "{v}");
    assert_eq!(
        v["models"]["available"][0]["targets"][0], "up/gpt-test",
        "{v}"
    );
    assert_eq!(v["models"]["unavailable"][0]["name"], "dark", "{v}");
    assert!(
        v["models"]["unavailable"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("enabled: false"),
        "{v}"
    );
    assert_eq!(v["backends"][0]["name"], "up", "{v}");
    assert_eq!(v["backends"][0]["kind"], "openai", "{v}");

    // A bad config: rejected, and the status says where.
    save(&path, &unknown_backend(&mock));
    assert_eq!(post_reload(&gw, None).await.status(), 422);
    let v = get_json(&gw, "/admin/status").await;
    let last = &v["last_reload"];
    assert_eq!(last["ok"], false, "{v}");
    assert_eq!(last["trigger"], "admin", "{v}");
    assert!(last["at"].as_u64().unwrap() >= v["started"].as_u64().unwrap());
    let err = &last["errors"][0];
    assert_eq!(err["path"], "models[1].backend", "{v}");
    let (line, column) = (
        err["line"].as_u64().unwrap(),
        err["column"].as_u64().unwrap(),
    );
    let expected = format!("{}:{line}:{column}: models[1].backend:", path.display());
    assert!(err["error"].as_str().unwrap().starts_with(&expected), "{v}");
    assert!(last["error"].as_str().unwrap().contains(&expected), "{v}");
    assert_eq!(v["snapshot"]["generation"], 0, "{v}");
    assert_eq!(v["reloads"]["failed"], 1, "{v}");
    assert_eq!(chat_status(&gw, "remote").await, 200);

    // A good one that also changes a startup-only limit: applied, with a restart notice.
    let changed = yaml.replace(
        "listen: \"127.0.0.1:0\"",
        "listen: \"127.0.0.1:0\"\nlimits:\n  max_body_bytes: 1000",
    );
    save(&path, &changed);
    assert_eq!(post_reload(&gw, None).await.status(), 200);
    let v = get_json(&gw, "/admin/status").await;
    assert_eq!(v["last_reload"]["ok"], true, "{v}");
    assert!(v["last_reload"]["error"].is_null(), "{v}");
    assert_eq!(v["snapshot"]["generation"], 1, "{v}");
    let restart = v["last_reload"]["restart_required"][0].as_str().unwrap();
    assert!(
        restart.starts_with("limits.max_body_bytes: 4194304 -> 1000"),
        "{v}"
    );
}

#[tokio::test]
async fn a_changed_file_is_picked_up_by_the_watcher() {
    let mock = Mock::start().await;
    let (_dir, path) = temp_config(&one_backend(&mock, "", "", ""));
    let gw = start(&path, StartOptions::file(&path)).await;
    let v = get_json(&gw, "/admin/status").await;
    assert!(v["config"]["watching"].is_string(), "{v}");

    save(
        &path,
        &one_backend(&mock, "", "  - name: watched\n    backend: up\n", ""),
    );
    let seen = eventually(Duration::from_secs(10), || async {
        model_ids(&gw).await.iter().any(|m| m == "watched")
    })
    .await;
    assert!(
        seen,
        "the new alias did not appear: {:?}",
        gw.reloader.status()
    );
    assert_eq!(
        gw.reloader.status().last_reload.unwrap().trigger,
        slmgate_gateway::reload::Trigger::File
    );

    // Written in place this time (no rename), and invalid: rejected, old one serving.
    std::fs::write(&path, SYNTAX_ERROR).unwrap();
    let rejected = eventually(Duration::from_secs(10), || async {
        gw.reloader.status().last_reload.is_some_and(|r| !r.ok)
    })
    .await;
    assert!(rejected, "{:?}", gw.reloader.status());
    let last = gw.reloader.status().last_reload.unwrap();
    assert!(last.errors[0].line.is_some(), "{last:?}");
    assert_eq!(chat_status(&gw, "watched").await, 200);
    assert_eq!(gw.reloader.status().generation, 1);
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_file() {
    let mock = Mock::start().await;
    let (_dir, path) = temp_config(&one_backend(&mock, "", "", ""));
    let gw = start(
        &path,
        StartOptions {
            sighup: true,
            ..manual(&path)
        },
    )
    .await;
    save(
        &path,
        &one_backend(&mock, "", "  - name: hup\n    backend: up\n", ""),
    );
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let seen = eventually(Duration::from_secs(10), || async {
        model_ids(&gw).await.iter().any(|m| m == "hup")
    })
    .await;
    assert!(seen, "{:?}", gw.reloader.status());
    assert_eq!(
        gw.reloader.status().last_reload.unwrap().trigger,
        slmgate_gateway::reload::Trigger::Sighup
    );
}

#[tokio::test]
async fn in_flight_requests_finish_on_the_config_they_started_with() {
    let mock = Mock::start().await;
    let (_dir, path) = temp_config(&one_backend(
        &mock,
        "",
        "  - name: going\n    backend: up\n    model: slow-1000\n",
        "",
    ));
    let gw = Arc::new(start(&path, manual(&path)).await);
    let inflight = {
        let gw = gw.clone();
        tokio::spawn(async move { chat_status(&gw, "going").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    save(&path, &one_backend(&mock, "", "", ""));
    assert_eq!(post_reload(&gw, None).await.status(), 200);
    assert_eq!(
        chat_status(&gw, "going").await,
        404,
        "new requests see the new config"
    );
    assert_eq!(
        inflight.await.unwrap(),
        200,
        "the old request finished on the old one"
    );
}

#[tokio::test]
async fn budget_spend_and_rate_limits_survive_a_reload() {
    let mock = Mock::start().await;
    let extra = |budget: &str| {
        format!(
            "pricing:\n  gpt-test: {{ input: 1000, output: 1000 }}\nkeys:\n  - name: k\n    key: sk-k\n    budget: {{ daily_usd: {budget} }}\n    rate_limit: {{ requests_per_minute: 3 }}\n"
        )
    };
    let (_dir, path) = temp_config(&one_backend(&mock, "", "", &extra("100")));
    let gw = start(&path, manual(&path)).await;
    // The whole answer is read, so its cost is settled before the status is returned.
    let send = || async {
        let resp = client()
            .post(url(&gw, "/v1/chat/completions"))
            .bearer_auth("sk-k")
            .json(&chat_body("remote", false))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        resp.bytes().await.unwrap();
        status
    };
    let spent = || {
        gw.shared
            .load()
            .accounting
            .state
            .budgets
            .usage(BudgetScope::Key, "k", SystemTime::now())
            .day_spent_usd
    };
    assert_eq!(send().await, 200);
    let before = spent();
    assert!(before > 0.0, "the request was charged");

    // Another budget value: the new limit applies, the spend is kept.
    save(&path, &one_backend(&mock, "", "", &extra("200")));
    assert_eq!(post_reload(&gw, None).await.status(), 200);
    assert_eq!(gw.reloader.status().generation, 1);
    assert!(
        (spent() - before).abs() < 1e-12,
        "spend kept: {} vs {before}",
        spent()
    );
    assert_eq!(send().await, 200);
    assert!(
        (spent() - 2.0 * before).abs() < 1e-9,
        "spend adds up: {}",
        spent()
    );

    // The rate-limit cell kept its two requests too: one more fits, the fourth is refused.
    save(&path, &one_backend(&mock, "", "", &extra("100")));
    assert_eq!(post_reload(&gw, None).await.status(), 200);
    assert_eq!(send().await, 200);
    assert_eq!(send().await, 429);
}

#[tokio::test]
async fn a_gateway_started_from_memory_has_nothing_to_reload() {
    let mock = Mock::start().await;
    let gw = crate::common::gateway(&one_backend(&mock, "", "", "")).await;
    let resp = post_reload(&gw, None).await;
    assert_eq!(resp.status(), 409);
    let v = error_body(resp).await;
    assert_eq!(v["error"]["code"], "no_config_source", "{v}");
    let v = get_json(&gw, "/admin/status").await;
    assert_eq!(v["config"]["source"], "memory", "{v}");
    assert!(v["config"]["path"].is_null(), "{v}");
    assert_eq!(chat_status(&gw, "remote").await, 200);
}

/// The `kind: local` backend serving `alias` in the live snapshot.
#[cfg(feature = "local")]
fn local_of(gw: &Running, alias: &str) -> Arc<slmgate_gateway::upstream::local::LocalBackend> {
    match &*gw.shared.load().models[alias].targets[0].backend {
        slmgate_gateway::upstream::Backend::Local(b) => b.clone(),
        _ => panic!("`{alias}` is not served by a local backend"),
    }
}

#[cfg(feature = "local")]
#[tokio::test]
async fn an_unchanged_local_model_is_reused_and_a_changed_one_reloaded() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let model = slmgate_local_model::fixtures::write_tiny_model(dir.path(), "llama", 7);
    let local = |max_tokens: u32, more_models: &str| {
        one_backend(
            &mock,
            &format!(
                "  - name: slm\n    kind: local\n    enabled: true\n    model: {}\n    max_tokens: {max_tokens}\n",
                model.display()
            ),
            &format!("  - name: local\n    backend: slm\n{more_models}"),
            "",
        )
    };
    let (_cfg_dir, path) = temp_config(&local(8, ""));
    let gw = start(&path, manual(&path)).await;
    let first = local_of(&gw, "local");

    // Another alias, same backend section: the loaded model is the same object.
    save(&path, &local(8, "  - name: extra\n    backend: up\n"));
    assert_eq!(post_reload(&gw, None).await.status(), 200);
    assert!(
        Arc::ptr_eq(&first, &local_of(&gw, "local")),
        "model loaded twice"
    );
    assert_eq!(chat_status(&gw, "local").await, 200);
    let v = get_json(&gw, "/admin/status").await;
    assert_eq!(v["loaded"][0], "local backend `slm`", "{v}");
    assert_eq!(v["backends"][0]["name"], "slm", "{v}");
    assert_eq!(v["backends"][0]["kind"], "local", "{v}");

    // The backend section changed: loaded anew with the new settings.
    save(&path, &local(4, ""));
    assert_eq!(post_reload(&gw, None).await.status(), 200);
    let second = local_of(&gw, "local");
    assert!(
        !Arc::ptr_eq(&first, &second),
        "a changed backend must be rebuilt"
    );
    assert_eq!(second.defaults.max_tokens, 4);
    assert_eq!(chat_status(&gw, "local").await, 200);
}

/// `GET /v1/models` with a client key.
async fn model_ids_as(gw: &Running, key: &str) -> Vec<String> {
    let v: Value = client()
        .get(url(gw, "/v1/models"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The statuses of a keyless chat request and a keyless `GET /admin/status`.
async fn keyless_statuses(gw: &Running) -> (u16, u16) {
    let admin = client()
        .get(url(gw, "/admin/status"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    (chat_status(gw, "remote").await, admin)
}

/// The watcher's last rejection's problems, once there is one newer than `after` rejections.
async fn rejection_after(gw: &Running, after: u64) -> Vec<slmgate_gateway::reload::ConfigIssue> {
    let seen = eventually(Duration::from_secs(10), || async {
        gw.reloader.status().failed > after
    })
    .await;
    assert!(seen, "no rejection: {:?}", gw.reloader.status());
    let last = gw.reloader.status().last_reload.unwrap();
    assert!(!last.ok, "{last:?}");
    last.errors
}

#[tokio::test]
async fn a_config_rewritten_in_place_in_two_steps_never_opens_the_gateway() {
    let mock = Mock::start().await;
    // Keys and the admin key come last, as in the incident: a writer that stops before
    // `keys:` leaves a valid config without either.
    let secured = |alias: &str| {
        one_backend(
            &mock,
            "",
            &format!("  - name: {alias}\n    backend: up\n"),
            "keys:\n  - name: c\n    key: sk-c\nadmin:\n  key: adm-secret\n",
        )
    };
    let (_dir, path) = temp_config(&secured("first"));
    let gw = start(&path, StartOptions::file(&path)).await;
    assert_eq!(keyless_statuses(&gw).await, (401, 401));

    // Rewritten in place: everything above `keys:` first, the rest 1.5 s later.
    let next = secured("second");
    let cut = next.find("keys:").unwrap();
    std::fs::write(&path, &next[..cut]).unwrap();
    let gap = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < gap {
        assert_eq!(
            keyless_statuses(&gw).await,
            (401, 401),
            "opened mid-write: {:?}",
            gw.reloader.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The half file was seen and refused, saying what would allow it.
    let errors = rejection_after(&gw, 0).await;
    let paths: Vec<_> = errors.iter().filter_map(|e| e.path.as_deref()).collect();
    assert_eq!(paths, ["keys", "admin.key"], "{errors:?}");
    assert!(errors[0].message.contains("auth: none"), "{errors:?}");
    assert!(errors[1].message.contains("loopback_only"), "{errors:?}");
    std::fs::write(&path, &next).unwrap();
    let applied = eventually(Duration::from_secs(10), || async {
        model_ids_as(&gw, "sk-c")
            .await
            .iter()
            .any(|m| m == "second")
    })
    .await;
    assert!(applied, "{:?}", gw.reloader.status());
    assert_eq!(keyless_statuses(&gw).await, (401, 401));

    // An empty file is no config.
    let failed = gw.reloader.status().failed;
    std::fs::write(&path, "").unwrap();
    let errors = rejection_after(&gw, failed).await;
    assert!(
        errors[0].message.contains("the config file is empty"),
        "{errors:?}"
    );
    assert_eq!(keyless_statuses(&gw).await, (401, 401));

    // Said explicitly, an open gateway is applied.
    let open = one_backend(&mock, "", "", "auth: none\nadmin:\n  loopback_only: true\n");
    save(&path, &open);
    let opened = eventually(Duration::from_secs(10), || async {
        keyless_statuses(&gw).await == (200, 200)
    })
    .await;
    assert!(opened, "{:?}", gw.reloader.status());
}

#[tokio::test]
async fn a_reload_removing_every_model_must_say_so() {
    let mock = Mock::start().await;
    let (_dir, path) = temp_config(&one_backend(&mock, "", "", ""));
    let gw = start(&path, manual(&path)).await;
    let no_models = "listen: \"127.0.0.1:0\"\n";
    save(&path, no_models);
    let resp = post_reload(&gw, None).await;
    assert_eq!(resp.status(), 422);
    let v = error_body(resp).await;
    assert_eq!(v["error"]["code"], "config_refused", "{v}");
    assert_eq!(v["error"]["errors"][0]["path"], "models", "{v}");
    assert!(
        v["error"]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("models: []"),
        "{v}"
    );
    assert_eq!(chat_status(&gw, "remote").await, 200);

    save(&path, &format!("{no_models}models: []\n"));
    assert_eq!(post_reload(&gw, None).await.status(), 200);
    assert_eq!(chat_status(&gw, "remote").await, 404);
}
