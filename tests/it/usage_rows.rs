//! Exactly one usage row for every chat request, however it ends (issue 22): the
//! whole-request timeout, a client that leaves before the answer, streams cut at the end of
//! the shutdown drain.

use std::time::Duration;

use crate::common::*;
use futures::StreamExt;
use slmgate_usage::{Store, UsageRecord};

fn config(mock: &Mock, db: &str, limits: &str) -> String {
    let models = "  - name: slow\n    backend: up\n    model: slow-2000\n  - name: drip\n    backend: up\n    model: drip-50\n";
    one_backend(
        mock,
        "",
        models,
        &format!("limits:\n{limits}\nusage:\n  database: \"{db}\"\n  flush_interval: 1h\n"),
    )
}

/// Shuts the gateway down (which flushes the writer) and returns every row.
async fn rows_after_shutdown(gw: slmgate_gateway::Running, db: &str) -> Vec<UsageRecord> {
    let writer = gw.usage.clone().expect("usage writer");
    gw.shutdown();
    tokio::time::timeout(Duration::from_secs(20), gw.wait())
        .await
        .expect("shutdown is bounded")
        .unwrap();
    assert_eq!(writer.sink.dropped(), 0);
    let store = Store::connect(db).await.unwrap();
    let rows = store.rows(0, i64::MAX).await.unwrap();
    store.close().await;
    rows
}

fn db_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("u.db").display())
}

/// A request cut by `limits.request_timeout` answers 504 and is recorded as such.
#[tokio::test]
async fn a_request_timeout_is_recorded() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = db_url(&dir);
    let gw = gateway(&config(&mock, &db, "  request_timeout: 300ms")).await;
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .header("x-request-id", "timed-out")
        .json(&chat_body("slow", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    let rows = rows_after_shutdown(gw, &db).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].request_id, "timed-out");
    assert_eq!(rows[0].status, 504);
    assert_eq!(rows[0].error_class.as_deref(), Some("gateway_timeout"));
    assert_eq!(rows[0].cost_usd, 0.0);
}

/// A client that leaves before the response head is recorded (499 `client_disconnected`).
#[tokio::test]
async fn a_client_leaving_before_the_answer_is_recorded() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = db_url(&dir);
    let gw = gateway(&config(&mock, &db, "  request_timeout: 1m")).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let r = impatient
        .post(url(&gw, "/v1/chat/completions"))
        .header("x-request-id", "gone")
        .json(&chat_body("slow", false))
        .send()
        .await;
    assert!(r.is_err(), "the client gave up");
    drop(impatient);
    let rows = rows_after_shutdown(gw, &db).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].request_id, "gone");
    assert_eq!(rows[0].status, 499);
    assert_eq!(rows[0].error_class.as_deref(), Some("client_disconnected"));
}

/// Streams still running when the drain limit ends are cut, and every one of them is
/// recorded (`stream_incomplete`) before the writer closes.
#[tokio::test]
async fn streams_cut_at_the_drain_limit_are_recorded() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = db_url(&dir);
    let gw = gateway(&config(&mock, &db, "  shutdown_timeout: 200ms")).await;
    let mut streams = Vec::new();
    for i in 0..8 {
        let resp = client()
            .post(url(&gw, "/v1/chat/completions"))
            .header("x-request-id", format!("s{i}"))
            .json(&chat_body("drip", true))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.bytes_stream();
        let first = body.next().await.unwrap().unwrap();
        assert!(!first.is_empty());
        streams.push(body);
    }
    let rows = rows_after_shutdown(gw, &db).await;
    drop(streams);
    assert_eq!(rows.len(), 8, "{rows:#?}");
    for r in &rows {
        assert!(r.stream);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.error_class.as_deref(),
            Some("stream_incomplete"),
            "{r:#?}"
        );
    }
}
