//! Hostile and slow clients (issue 22): half-sent headers, stalled bodies, too many
//! connections, HTTP/2 stream limits. Every wait here is bounded; none of them is a
//! benchmark.

use std::time::Duration;

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(mock: &Mock, limits: &str) -> String {
    one_backend(mock, "", "", &format!("limits:\n{limits}"))
}

/// Reads until the server closes the connection (or errors); `None` if it is still open
/// after `wait`.
async fn closed_within(conn: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(wait, read).await.ok().map(|_| got)
}

/// Slowloris: connections that send half a request head, or nothing at all (not even an
/// HTTP/2 preface's end), are closed after `header_read_timeout`, and the gateway keeps
/// answering meanwhile.
#[tokio::test]
async fn half_sent_heads_and_silent_connections_are_closed() {
    let mock = Mock::start().await;
    let gw = gateway(&config(&mock, "  header_read_timeout: 300ms\n")).await;
    let mut conns = Vec::new();
    for i in 0..30 {
        let mut c = TcpStream::connect(gw.addr).await.unwrap();
        match i % 3 {
            0 => c
                .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .unwrap(),
            1 => c.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap(),
            _ => {}
        }
        conns.push(c);
    }
    let health = client().get(url(&gw, "/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    for (i, c) in conns.iter_mut().enumerate() {
        assert!(
            closed_within(c, Duration::from_secs(10)).await.is_some(),
            "connection {i} was never closed"
        );
    }
}

/// A body that stalls longer than `body_read_timeout` gets 408 in OpenAI's shape.
#[tokio::test]
async fn a_stalled_body_gets_408() {
    let mock = Mock::start().await;
    let gw = gateway(&config(&mock, "  body_read_timeout: 300ms\n")).await;
    let mut c = TcpStream::connect(gw.addr).await.unwrap();
    c.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":",
    )
    .await
    .unwrap();
    let got = closed_within(&mut c, Duration::from_secs(10))
        .await
        .expect("the gateway answers and closes");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"code\":\"request_timeout\""), "{text}");
    assert_eq!(mock.requests(), 0);
}

/// At `max_connections` the gateway stops accepting: a further client waits (it is not
/// refused, and nothing crashes) and is served as soon as a connection closes.
#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let mock = Mock::start().await;
    let gw = gateway(&config(
        &mock,
        "  max_connections: 4\n  header_read_timeout: 30s\n",
    ))
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(gw.addr).await.unwrap());
    }
    let waiting = tokio::spawn({
        let u = url(&gw, "/healthz");
        async move { client().get(u).send().await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "served beyond the connection cap");
    held.pop();
    let status = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served once a slot is free")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
}

/// An HTTP/2 connection carries at most `http2_max_concurrent_streams` requests at once.
#[tokio::test]
async fn http2_streams_per_connection_are_capped() {
    let mock = Mock::start().await;
    let models = "  - name: slow\n    backend: up\n    model: slow-300\n";
    let gw = gateway(&one_backend(
        &mock,
        "",
        models,
        "limits:\n  http2_max_concurrent_streams: 2\n",
    ))
    .await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut calls = Vec::new();
    for _ in 0..6 {
        let h2 = h2.clone();
        let u = url(&gw, "/v1/chat/completions");
        calls.push(tokio::spawn(async move {
            let r = h2.post(u).json(&chat_body("slow", false)).send().await;
            r.map(|r| (r.version(), r.status().as_u16()))
        }));
    }
    for c in calls {
        let (version, status) = c.await.unwrap().unwrap();
        assert_eq!(version, reqwest::Version::HTTP_2);
        assert_eq!(status, 200);
    }
    assert_eq!(mock.requests(), 6);
    assert!(mock.max_in_flight() <= 2, "{}", mock.max_in_flight());
}
