//! OpenTelemetry traces: the gateway exports its spans over OTLP/HTTP to an in-test receiver,
//! with the GenAI and decision attributes, and sends W3C `traceparent` to the upstream.
//!
//! Each test installs its own subscriber (`set_default`, no globals) on a current-thread
//! runtime, so the gateway's tasks all run under it. The receiver runs on a thread of its
//! own: flushing blocks the test's thread until the collector has answered.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use prost::Message;
use serde_json::json;
use tracing_subscriber::prelude::*;

/// An attribute value, flattened for assertions.
#[derive(Debug, Clone, PartialEq)]
enum Attr {
    S(String),
    I(i64),
    F(f64),
    B(bool),
    A(Vec<String>),
}

fn attr(v: &Option<AnyValue>) -> Attr {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => Attr::S(s.clone()),
        Some(any_value::Value::IntValue(i)) => Attr::I(*i),
        Some(any_value::Value::DoubleValue(f)) => Attr::F(*f),
        Some(any_value::Value::BoolValue(b)) => Attr::B(*b),
        Some(any_value::Value::ArrayValue(a)) => Attr::A(
            a.values
                .iter()
                .map(|v| match attr(&Some(v.clone())) {
                    Attr::S(s) => s,
                    other => format!("{other:?}"),
                })
                .collect(),
        ),
        other => panic!("unexpected attribute value {other:?}"),
    }
}

/// One exported span.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    /// 1 internal, 2 server, 3 client.
    kind: i32,
    start: u64,
    end: u64,
    /// 2 = error.
    status: i32,
    attrs: HashMap<String, Attr>,
}

impl Exported {
    fn a(&self, key: &str) -> Option<&Attr> {
        self.attrs.get(key)
    }
    fn s(&self, key: &str) -> &str {
        match self.a(key) {
            Some(Attr::S(s)) => s,
            other => panic!(
                "{}: `{key}` is {other:?}, not a string\n{self:#?}",
                self.name
            ),
        }
    }
    fn i(&self, key: &str) -> i64 {
        match self.a(key) {
            Some(Attr::I(i)) => *i,
            other => panic!("{}: `{key}` is {other:?}, not an int\n{self:#?}", self.name),
        }
    }
}

/// An OTLP/HTTP trace receiver on its own runtime and thread.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Exported>>>,
    content_types: Arc<Mutex<Vec<String>>>,
}

/// What the receiver keeps: the spans, and each export's content type.
type Received = (Arc<Mutex<Vec<Exported>>>, Arc<Mutex<Vec<String>>>);

async fn receive(
    State((spans, cts)): State<Received>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1], Vec<u8>) {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    cts.lock().unwrap().push(ct);
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return (
            StatusCode::BAD_REQUEST,
            [("content-type", "text/plain")],
            b"not an ExportTraceServiceRequest".to_vec(),
        );
    };
    let mut out = spans.lock().unwrap();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .map(|kv| match attr(&kv.value) {
                Attr::S(s) => s,
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(Exported {
                    service: service.clone(),
                    name: s.name,
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent: hex::encode(&s.parent_span_id),
                    kind: s.kind,
                    start: s.start_time_unix_nano,
                    end: s.end_time_unix_nano,
                    status: s.status.map(|st| st.code).unwrap_or(0),
                    attrs: s
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), attr(&kv.value)))
                        .collect(),
                });
            }
        }
    }
    (
        StatusCode::OK,
        [("content-type", "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

impl Receiver {
    fn start() -> Receiver {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let content_types = Arc::new(Mutex::new(Vec::new()));
        let state = (spans.clone(), content_types.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("receiver runtime");
            rt.block_on(async move {
                let app = axum::Router::new()
                    .route("/v1/traces", post(receive))
                    .with_state(state);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let _ = axum::serve(listener, app).await;
            });
        });
        let addr = rx.recv().expect("receiver address");
        Receiver {
            addr,
            spans,
            content_types,
        }
    }

    fn spans(&self) -> Vec<Exported> {
        self.spans.lock().unwrap().clone()
    }
}

/// Flushes until `done` holds for the exported spans (spans close when the response body has
/// been dropped by the server, a moment after the client saw its end).
async fn wait_for(
    t: &slmgate_gateway::telemetry::Telemetry,
    rx: &Receiver,
    done: impl Fn(&[Exported]) -> bool,
) -> Vec<Exported> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        t.flush().expect("flush");
        let spans = rx.spans();
        if done(&spans) {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "spans did not arrive; got:\n{:#?}",
            spans
                .iter()
                .map(|s| (&s.name, &s.trace_id))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn children<'a>(spans: &'a [Exported], parent: &Exported) -> Vec<&'a Exported> {
    spans
        .iter()
        .filter(|s| s.parent == parent.span_id && s.trace_id == parent.trace_id)
        .collect()
}

fn one<'a>(spans: &[&'a Exported], name: &str) -> &'a Exported {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one `{name}` span expected in {spans:#?}");
    found[0]
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn spans_arrive_with_genai_and_decision_attributes() {
    let rx = Receiver::start();
    let mock = Mock::start().await;
    let models = "  - name: dripping\n    backend: up\n    model: drip-10";
    let extra = format!(
        r#"
keys:
  - name: alice
    key: sk-alice
policies:
  rules:
    - name: cap
      when: {{ model: remote }}
      then: {{ set: {{ max_tokens: {{ max: 32 }} }} }}
telemetry:
  otlp_endpoint: http://{addr}
  service_name: slmgate-test
"#,
        addr = rx.addr
    );
    let yaml = one_backend(&mock, "", models, &extra);
    let cfg = slmgate_config::load_str_with_env(&yaml, "test.yaml", &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let telemetry = slmgate_gateway::telemetry::init(&cfg.telemetry)
        .unwrap()
        .expect("telemetry is configured");
    assert_eq!(
        telemetry.endpoint(),
        format!("http://{}/v1/traces", rx.addr)
    );
    let _subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(telemetry.layer()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = slmgate_gateway::start_on(&cfg, listener).await.unwrap();

    // 1. Non-streaming, inside the client's trace.
    let mut body = chat_body("remote", false);
    body["max_tokens"] = json!(100);
    body["temperature"] = json!(0.25);
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .bearer_auth("sk-alice")
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let upstream_tp = mock
        .last_request()
        .unwrap()
        .headers
        .get("traceparent")
        .expect("the upstream received a traceparent")
        .to_str()
        .unwrap()
        .to_string();

    // 2. Streaming, a new trace.
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .bearer_auth("sk-alice")
        .json(&chat_body("remote", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let events = sse_events(resp).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let stream_tp = mock.last_request().unwrap().headers["traceparent"]
        .to_str()
        .unwrap()
        .to_string();

    // 3. A slow stream (50 chunks 10 ms apart): its span must last as long as the stream.
    let t0 = Instant::now();
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .bearer_auth("sk-alice")
        .json(&chat_body("dripping", true))
        .send()
        .await
        .unwrap();
    let _ = resp.bytes().await.unwrap();
    let drip_took = t0.elapsed();

    let spans = wait_for(&telemetry, &rx, |s| {
        s.iter().filter(|s| s.name == "request").count() >= 3
            && s.iter().filter(|s| s.name.starts_with("chat ")).count() >= 3
    })
    .await;
    assert!(rx
        .content_types
        .lock()
        .unwrap()
        .iter()
        .all(|c| c == "application/x-protobuf"));
    assert!(spans.iter().all(|s| s.service == "slmgate-test"));

    // --- 1: the request span joins the client's trace; steps are its children.
    let root = spans
        .iter()
        .find(|s| s.name == "request" && s.trace_id == CLIENT_TRACE)
        .expect("a request span in the client's trace");
    assert_eq!(root.parent, CLIENT_SPAN);
    assert_eq!(root.kind, 2, "server span");
    assert_eq!(root.i("http.response.status_code"), 200);
    let kids = children(&spans, root);
    let auth = one(&kids, "auth");
    assert_eq!(auth.s("slmgate.auth.result"), "key");
    assert_eq!(auth.s("slmgate.key.name"), "alice");
    let classify = one(&kids, "classify");
    assert_eq!(classify.s("slmgate.route.target"), "remote");
    assert_eq!(classify.s("slmgate.route.strategy"), "alias");
    assert!(classify.s("slmgate.route.reason").contains("remote"));
    let policy = one(&kids, "policy");
    assert_eq!(policy.s("slmgate.policy.rule"), "cap");
    assert_eq!(policy.s("slmgate.policy.action"), "modify");
    let call = one(&kids, "chat gpt-test");
    assert_eq!(call.kind, 3, "client span");
    assert_eq!(call.s("gen_ai.operation.name"), "chat");
    assert_eq!(call.s("gen_ai.provider.name"), "openai");
    assert_eq!(call.s("gen_ai.request.model"), "gpt-test");
    assert_eq!(call.s("gen_ai.response.model"), "gpt-test");
    assert_eq!(call.s("gen_ai.response.id"), "chatcmpl-mock");
    // The policy capped 100 to 32 before the call: the span reports what was sent.
    assert_eq!(call.i("gen_ai.request.max_tokens"), 32);
    assert_eq!(call.a("gen_ai.request.temperature"), Some(&Attr::F(0.25)));
    assert_eq!(
        call.i("gen_ai.usage.input_tokens"),
        mock_provider::PROMPT_TOKENS as i64
    );
    assert_eq!(
        call.i("gen_ai.usage.output_tokens"),
        mock_provider::COMPLETION_TOKENS as i64
    );
    assert_eq!(
        call.a("gen_ai.response.finish_reasons"),
        Some(&Attr::A(vec!["stop".into()]))
    );
    assert_eq!(call.s("server.address"), "127.0.0.1");
    assert_eq!(call.i("server.port"), i64::from(mock.addr().port()));
    assert_eq!(call.i("http.response.status_code"), 200);
    assert_eq!(call.s("slmgate.backend"), "up");
    assert_eq!(call.a("slmgate.stream"), Some(&Attr::B(false)));
    assert_eq!(call.a("error.type"), None);
    // The upstream saw this very span as its parent.
    assert_eq!(
        upstream_tp,
        format!("00-{}-{}-01", call.trace_id, call.span_id)
    );
    // Steps run in order inside the request.
    assert!(root.start <= auth.start && auth.end <= classify.start);
    assert!(classify.end <= policy.start && policy.end <= call.start);
    assert!(call.end <= root.end);

    // --- 2: the stream's span ends with the stream and has its usage.
    let (trace, parent_span) = {
        let parts: Vec<&str> = stream_tp.split('-').collect();
        (parts[1].to_string(), parts[2].to_string())
    };
    assert_ne!(trace, CLIENT_TRACE);
    let call = spans
        .iter()
        .find(|s| s.span_id == parent_span)
        .expect("the stream's model-call span");
    assert_eq!(call.trace_id, trace);
    assert_eq!(call.name, "chat gpt-test");
    assert_eq!(call.a("slmgate.stream"), Some(&Attr::B(true)));
    assert_eq!(
        call.i("gen_ai.usage.output_tokens"),
        mock_provider::COMPLETION_TOKENS as i64
    );
    assert_eq!(
        call.a("gen_ai.response.finish_reasons"),
        Some(&Attr::A(vec!["stop".into()]))
    );
    let root = spans
        .iter()
        .find(|s| s.span_id == call.parent)
        .expect("its request span");
    assert_eq!(root.name, "request");
    assert_eq!(root.parent, "", "a new trace has no parent");

    // --- 3: the slow stream's span lasts the whole stream.
    let drip = spans
        .iter()
        .find(|s| s.name == "chat drip-10")
        .expect("the slow stream's span");
    let lasted = Duration::from_nanos(drip.end - drip.start);
    assert!(
        lasted >= Duration::from_millis(400) && lasted <= drip_took,
        "span lasted {lasted:?}, the stream {drip_took:?}"
    );
    // Cut short of its usage (the mock sends none with `drip`), it still ended cleanly.
    assert_eq!(drip.a("error.type"), None);
    assert_ne!(drip.status, 2);

    gw.shutdown();
    gw.wait().await.unwrap();
    telemetry.shutdown();
}

#[tokio::test]
async fn failures_are_marked_on_the_spans() {
    let rx = Receiver::start();
    let mock = Mock::start().await;
    let models = "  - name: broken\n    backend: up\n    model: error-500";
    let extra = format!(
        "telemetry:\n  otlp_endpoint: http://{}/v1/traces\n",
        rx.addr
    );
    let yaml = one_backend(&mock, "", models, &extra);
    let cfg = slmgate_config::load_str_with_env(&yaml, "test.yaml", &|_| None).unwrap();
    let telemetry = slmgate_gateway::telemetry::init(&cfg.telemetry)
        .unwrap()
        .unwrap();
    let _subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(telemetry.layer()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = slmgate_gateway::start_on(&cfg, listener).await.unwrap();

    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .json(&chat_body("broken", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let resp = client()
        .post(url(&gw, "/v1/chat/completions"))
        .json(&chat_body("no-such-model", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    let spans = wait_for(&telemetry, &rx, |s| {
        s.iter().filter(|s| s.name == "request").count() >= 2
    })
    .await;
    let call = spans
        .iter()
        .find(|s| s.name == "chat error-500")
        .expect("the failed call's span");
    assert_eq!(call.s("error.type"), "upstream_error");
    assert_eq!(call.status, 2, "error status");
    assert_eq!(call.i("http.response.status_code"), 500);
    let root = spans.iter().find(|s| s.span_id == call.parent).unwrap();
    assert_eq!(root.i("http.response.status_code"), 502);
    assert_eq!(root.status, 2);
    let classify = spans
        .iter()
        .find(|s| s.name == "classify" && s.a("error.type").is_some())
        .expect("the unknown model's classify span");
    assert_eq!(classify.s("error.type"), "model_not_found");
    assert_eq!(classify.status, 2);
    // Nothing after the refused decision.
    let root = spans.iter().find(|s| s.span_id == classify.parent).unwrap();
    assert_eq!(root.i("http.response.status_code"), 404);
    assert!(children(&spans, root)
        .iter()
        .all(|s| s.name == "auth" || s.name == "classify"));

    gw.shutdown();
    gw.wait().await.unwrap();
    telemetry.shutdown();
}

#[tokio::test]
async fn off_without_an_endpoint() {
    let mock = Mock::start().await;
    let yaml = one_backend(&mock, "", "", "");
    let cfg = slmgate_config::load_str_with_env(&yaml, "test.yaml", &|_| None).unwrap();
    assert!(slmgate_gateway::telemetry::init(&cfg.telemetry)
        .unwrap()
        .is_none());
    // The binary's composition without telemetry: just a log layer.
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = slmgate_gateway::start_on(&cfg, listener).await.unwrap();
    for stream in [false, true] {
        let resp = client()
            .post(url(&gw, "/v1/chat/completions"))
            .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
            .json(&chat_body("remote", stream))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
        let seen = mock.last_request().unwrap().headers;
        assert!(
            seen.get("traceparent").is_none(),
            "no trace context is sent (nor the client's forwarded) when tracing is off"
        );
    }
}

/// The embedded model's generations are `local.generate` spans named `chat {model}`, stream
/// or not (a tiny random-weight GGUF the test writes itself).
#[cfg(feature = "local")]
#[tokio::test]
async fn local_generation_spans() {
    let rx = Receiver::start();
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let model = slmgate_local_model::fixtures::write_tiny_model(dir.path(), "llama", 7);
    let backend = format!(
        "  - name: slm\n    kind: local\n    enabled: true\n    model: {}\n    max_tokens: 8\n",
        model.display()
    );
    let extra = format!("telemetry:\n  otlp_endpoint: http://{}\n", rx.addr);
    let yaml = one_backend(
        &mock,
        &backend,
        "  - name: local\n    backend: slm\n",
        &extra,
    );
    let cfg = slmgate_config::load_str_with_env(&yaml, "test.yaml", &|_| None).unwrap();
    let telemetry = slmgate_gateway::telemetry::init(&cfg.telemetry)
        .unwrap()
        .unwrap();
    let _subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(telemetry.layer()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = slmgate_gateway::start_on(&cfg, listener).await.unwrap();

    let mut usage = Vec::new();
    for stream in [false, true] {
        let body = json!({
            "model": "local",
            "messages": [{"role": "user", "content": "hello world"}],
            "temperature": 0,
            "max_tokens": 4,
            "stream": stream,
            "stream_options": {"include_usage": true},
        });
        let resp = client()
            .post(url(&gw, "/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let u = if stream {
            let events = sse_events(resp).await;
            let last: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
            last["usage"].clone()
        } else {
            resp.json::<serde_json::Value>().await.unwrap()["usage"].clone()
        };
        usage.push((
            u["prompt_tokens"].as_i64().unwrap(),
            u["completion_tokens"].as_i64().unwrap(),
        ));
    }
    let spans = wait_for(&telemetry, &rx, |s| {
        s.iter().filter(|s| s.name == "request").count() >= 2
            && s.iter().filter(|s| s.name.starts_with("chat ")).count() >= 2
    })
    .await;
    let calls: Vec<&Exported> = spans
        .iter()
        .filter(|s| s.name.starts_with("chat "))
        .collect();
    assert_eq!(calls.len(), 2);
    for stream in [false, true] {
        let call = calls
            .iter()
            .find(|c| c.a("slmgate.stream") == Some(&Attr::B(stream)))
            .expect("a span for each request");
        assert_eq!(call.kind, 1, "internal span");
        assert_eq!(call.s("gen_ai.provider.name"), "slmgate.local");
        assert_eq!(call.s("gen_ai.operation.name"), "chat");
        assert_eq!(
            call.name,
            format!("chat {}", call.s("gen_ai.request.model"))
        );
        assert!(!call.s("gen_ai.response.model").is_empty());
        assert!(call.s("gen_ai.response.id").starts_with("chatcmpl-"));
        assert_eq!(call.i("gen_ai.request.max_tokens"), 4);
        assert_eq!(call.s("slmgate.backend"), "slm");
        let (pt, ct) = usage[usize::from(stream)];
        assert_eq!(call.i("gen_ai.usage.input_tokens"), pt, "stream {stream}");
        assert_eq!(call.i("gen_ai.usage.output_tokens"), ct, "stream {stream}");
        match call.a("gen_ai.response.finish_reasons") {
            Some(Attr::A(r)) => assert!(r == &["length"] || r == &["stop"], "{r:?}"),
            other => panic!("finish reasons: {other:?}"),
        }
        let root = spans.iter().find(|s| s.span_id == call.parent).unwrap();
        assert_eq!(root.name, "request");
    }
    assert_eq!(mock.requests(), 0);
    gw.shutdown();
    gw.wait().await.unwrap();
    telemetry.shutdown();
}
