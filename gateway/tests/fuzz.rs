//! Fuzzing the parsers that read what clients and upstreams send, with proptest (cargo-fuzz
//! needs a nightly toolchain): the chat-request parser, the SSE readers (the upstream relay
//! and the gateway's own event splitter) and the cache key.
//!
//! Each property checks more than "no panic": a parsed request re-serialises to the same
//! fields, an SSE stream gives the same output however its bytes are chunked, and a cache key
//! does not depend on how a client formatted the same request.
//!
//! Runs are bounded for CI: each property runs `FUZZ_CASES` cases (seconds in a debug
//! build; all four targets together stay well under a minute); set `SLMGATE_FUZZ_CASES` to
//! run more. The files in `tests/fuzz-corpus/` are replayed first on every run: keep any
//! input that ever failed there; proptest's own shrunk failures are kept in
//! `tests/fuzz.proptest-regressions`.

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{json, Map, Value};
use slmgate_gateway::call::Decision;
use slmgate_gateway::layers::cache::key::{canonical, canonical_text, exact_key};
use slmgate_gateway::layers::sse_map::{map_events, EventFilter};
use slmgate_gateway::targets::ModelRoute;
use slmgate_gateway::upstream::redact::Secrets;
use slmgate_gateway::upstream::sse::open;
use slmgate_openai::chat::ChatRequest;

/// Cases per property unless `SLMGATE_FUZZ_CASES` says otherwise.
const FUZZ_CASES: u32 = 2048;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("SLMGATE_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(FUZZ_CASES),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

fn corpus(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(kind);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            (path.display().to_string(), std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no corpus in {}", dir.display());
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// JSON values.

fn json_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,24}",
        "[\"\\\\/\\x00-\\x1fa-z]{0,8}",
        Just(String::new()),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|u| json!(u)),
        (-1e12f64..1e12).prop_map(|f| json!(f)),
        json_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((json_string(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A chat request: the fields the gateway reads, with good and bad values, and others.
fn chat_body() -> impl Strategy<Value = Value> {
    let message = (
        prop_oneof![Just(json!("user")), Just(json!("system")), json_value()],
        prop_oneof![
            json_string().prop_map(Value::String),
            Just(json!([{"type": "text", "text": "hi"}])),
            json_value(),
        ],
    )
        .prop_map(|(role, content)| json!({"role": role, "content": content}));
    let known = prop_oneof![
        (1i64..200).prop_map(|n| ("n", json!(n))),
        any::<i64>().prop_map(|n| ("max_tokens", json!(n))),
        (-1.0f64..3.0).prop_map(|t| ("temperature", json!(t))),
        any::<bool>().prop_map(|b| ("stream", json!(b))),
        json_value().prop_map(|v| ("stream_options", v)),
        json_value().prop_map(|v| ("tools", v)),
        json_value().prop_map(|v| ("stop", v)),
        json_value().prop_map(|v| ("x_extra", v)),
    ];
    (
        prop_oneof!["[a-z0-9-]{1,12}".prop_map(Value::String), json_value()],
        prop::collection::vec(message, 0..4),
        prop::collection::vec(known, 0..6),
    )
        .prop_map(|(model, messages, fields)| {
            let mut m = Map::new();
            m.insert("model".into(), model);
            m.insert("messages".into(), Value::Array(messages));
            for (k, v) in fields {
                m.insert(k.into(), v);
            }
            Value::Object(m)
        })
}

// ---------------------------------------------------------------------------------------
// The chat-request parser.

/// Parses `body`; a request that parses must round-trip through the upstream body.
fn check_chat(body: &[u8]) -> Result<(), TestCaseError> {
    let Ok(chat) = ChatRequest::parse(Bytes::copy_from_slice(body)) else {
        return Ok(());
    };
    // A number beyond f64 (`1e400`) is valid JSON the gateway passes through verbatim, but
    // no `Value` holds it: compare only what a `Value` can.
    let Ok(original) = serde_json::from_slice::<Map<String, Value>>(body) else {
        return Ok(());
    };
    for ask_usage in [false, true] {
        let up: Map<String, Value> =
            serde_json::from_slice(&chat.upstream_body("up", ask_usage))
                .map_err(|e| TestCaseError::fail(format!("upstream body: {e}")))?;
        prop_assert_eq!(&up["model"], &json!("up"));
        for (k, v) in &original {
            if k != "model" && k != "stream_options" {
                prop_assert_eq!(&up[k], v, "field {}", k);
            }
        }
    }
    // What the steps derive from a request re-parses as a valid request too.
    prop_assert!(chat.with_fields(&[]).is_ok());
    if chat.stream {
        prop_assert!(chat.with_stream_usage().is_ok());
    }
    Ok(())
}

#[test]
fn chat_corpus_parses_or_is_refused() {
    for (name, body) in corpus("chat") {
        check_chat(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// A byte-level edit of a valid body.
fn mutated_chat() -> impl Strategy<Value = Vec<u8>> {
    (
        chat_body(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
    )
        .prop_map(|(v, edits)| {
            let mut b = serde_json::to_vec(&v).unwrap_or_default();
            for (at, byte, op) in edits {
                if b.is_empty() {
                    break;
                }
                let i = at.index(b.len());
                match op {
                    0 => b[i] = byte,
                    1 => b.insert(i, byte),
                    _ => b.truncate(i),
                }
            }
            b
        })
}

// ---------------------------------------------------------------------------------------
// SSE.

/// Runs `chunks` through the upstream relay and returns what the client gets.
fn relay(chunks: Vec<Vec<u8>>, wants_usage: bool) -> Vec<u8> {
    runtime().block_on(async move {
        let stream = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from(c))),
        );
        let upstream = http::Response::builder()
            .status(200)
            .header("content-type", "text/event-stream")
            .body(reqwest::Body::wrap_stream(stream))
            .unwrap();
        // A stream that fails before its first token is an error (the caller falls back):
        // its message, the same however the bytes were cut.
        match open(
            reqwest::Response::from(upstream),
            Duration::from_secs(5),
            wants_usage,
            "fuzz".into(),
            std::sync::Arc::new(Secrets::default()),
        )
        .await
        {
            Ok(resp) => axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap()
                .to_vec(),
            Err(e) => format!("error: {e}").into_bytes(),
        }
    })
}

/// Lets every event through unchanged.
struct Identity;

impl EventFilter for Identity {
    fn event(&mut self, data: &str, out: &mut Vec<String>) {
        out.push(data.to_string());
    }
}

/// Runs `chunks` through the gateway's event splitter with a filter that changes nothing.
fn split_events(chunks: Vec<Vec<u8>>) -> Vec<u8> {
    runtime().block_on(async move {
        let stream = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from(c))),
        );
        let body = map_events(axum::body::Body::from_stream(stream), Identity);
        axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap()
            .to_vec()
    })
}

/// `bytes` cut at `cuts` (indices into it, in any order).
fn chunked(bytes: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
}

/// An SSE stream as an upstream writes it: events with names, multi-line data, comments,
/// LF or CRLF line ends, maybe a usage chunk, maybe `[DONE]`.
fn sse_stream() -> impl Strategy<Value = Vec<u8>> {
    let data_line = prop_oneof![
        "\\PC{0,30}",
        Just(r#"{"choices":[{"delta":{"content":"hé"}}]}"#.to_string()),
        Just(r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#.to_string()),
    ];
    let event = (
        prop::option::of("[a-z]{0,8}"),
        prop::collection::vec(data_line, 0..3),
        any::<bool>(),
    );
    (
        prop::collection::vec(event, 0..6),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(events, crlf, done)| {
            let nl = if crlf { "\r\n" } else { "\n" };
            let mut s = String::new();
            for (name, lines, comment) in events {
                if comment {
                    s.push_str(&format!(": ping{nl}"));
                }
                if let Some(n) = name {
                    s.push_str(&format!("event: {n}{nl}"));
                }
                for l in lines {
                    s.push_str(&format!("data: {l}{nl}"));
                }
                s.push_str(nl);
            }
            if done {
                s.push_str(&format!("data: [DONE]{nl}{nl}"));
            }
            s.into_bytes()
        })
}

/// What a client may receive: `data:` (or `event:`) lines in blank-line-ended blocks.
fn check_sse_output(out: &[u8]) -> Result<(), TestCaseError> {
    // A stream that fails before its first token is an error the caller falls back on
    // (see `relay`), not bytes a client receives.
    if out.starts_with(b"error: ") {
        return Ok(());
    }
    prop_assert!(
        out.ends_with(b"\n\n"),
        "unterminated: {:?}",
        String::from_utf8_lossy(out)
    );
    let text = std::str::from_utf8(out).map_err(|e| TestCaseError::fail(e.to_string()))?;
    for line in text.lines().filter(|l| !l.is_empty()) {
        prop_assert!(
            line.starts_with("data: ") || line.starts_with("event: "),
            "line {line:?}"
        );
    }
    Ok(())
}

#[test]
fn sse_corpus_relays_cleanly() {
    for (name, bytes) in corpus("sse") {
        let whole = relay(vec![bytes.clone()], false);
        check_sse_output(&whole).unwrap_or_else(|e| panic!("{name}: {e}"));
        let bytewise = relay(bytes.iter().map(|b| vec![*b]).collect(), false);
        assert_eq!(whole, bytewise, "{name}: chunking changed the output");
        split_events(bytes.iter().map(|b| vec![*b]).collect());
    }
}

// ---------------------------------------------------------------------------------------
// The cache key.

fn decision() -> Decision {
    Decision {
        route: std::sync::Arc::new(ModelRoute::new("remote".into(), Vec::new())),
        target: "remote".into(),
        strategy: "alias",
        category: None,
        score: None,
        threshold: None,
        reason: String::new(),
        cascade: None,
    }
}

/// `v` serialised with its object keys in reverse order and pretty-printed: the same JSON
/// written differently.
fn reformatted(v: &Value) -> String {
    fn reversed(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, x) in m.iter().rev() {
                    out.insert(k.clone(), reversed(x));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(reversed).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string_pretty(&reversed(v)).unwrap_or_default()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn chat_bytes_parse_or_are_refused(body in prop::collection::vec(any::<u8>(), 0..256)) {
        check_chat(&body)?;
    }

    #[test]
    fn chat_requests_parse_or_are_refused(v in chat_body()) {
        check_chat(&serde_json::to_vec(&v).unwrap_or_default())?;
    }

    #[test]
    fn mutated_chat_requests_parse_or_are_refused(body in mutated_chat()) {
        check_chat(&body)?;
    }

    /// A relayed stream is well-formed and does not depend on how its bytes were chunked.
    #[test]
    fn sse_relay_output_does_not_depend_on_chunking(
        stream in sse_stream(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        wants_usage in any::<bool>(),
    ) {
        let whole = relay(vec![stream.clone()], wants_usage);
        check_sse_output(&whole)?;
        prop_assert_eq!(&whole, &relay(chunked(&stream, &cuts), wants_usage));
        if stream.ends_with(b"data: [DONE]\n\n") || stream.ends_with(b"data: [DONE]\r\n\r\n") {
            prop_assert!(whole.ends_with(b"data: [DONE]\n\n"));
        }
    }

    #[test]
    fn sse_relay_survives_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let out = relay(chunked(&bytes, &cuts), false);
        check_sse_output(&out)?;
    }

    #[test]
    fn sse_splitter_output_does_not_depend_on_chunking(
        stream in sse_stream(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let whole = split_events(vec![stream.clone()]);
        prop_assert_eq!(&whole, &split_events(chunked(&stream, &cuts)));
    }

    /// The streaming canonicaliser writes what the tree one writes for the same text, and
    /// the same for every spelling of it. (Both read numbers with serde_json's parser, which
    /// may round a decimal one unit off the `f64` it was printed from: the tree is parsed
    /// from the text too, as the cache does.)
    #[test]
    fn cache_key_canonical_forms_agree(v in json_value()) {
        let mut first: Option<Vec<u8>> = None;
        for text in [serde_json::to_string(&v).unwrap_or_default(), reformatted(&v)] {
            let tree: Value = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut from_tree = Vec::new();
            canonical(&tree, &mut from_tree);
            let mut streamed = Vec::new();
            canonical_text(&text, &mut streamed).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&streamed, &from_tree);
            match &first {
                Some(f) => prop_assert_eq!(f, &streamed, "another spelling, another form"),
                None => first = Some(streamed),
            }
        }
    }

    /// Two spellings of one request share a key; another request gets another.
    #[test]
    fn cache_keys_ignore_formatting_only(v in chat_body(), other in "\\PC{1,12}") {
        let compact = serde_json::to_vec(&v).unwrap_or_default();
        let Ok(a) = ChatRequest::parse(Bytes::from(compact)) else {
            return Ok(());
        };
        let b = ChatRequest::parse(Bytes::from(reformatted(&v)))
            .map_err(|e| TestCaseError::fail(format!("reformatted: {e}")))?;
        let d = decision();
        let key = exact_key("t", &a, &d);
        prop_assert!(key.is_some());
        prop_assert_eq!(key, exact_key("t", &b, &d));
        prop_assert_ne!(key, exact_key("u", &a, &d), "tenants never share");
        let mut changed = v.clone();
        changed["x_fuzz_marker"] = json!(other);
        if let Ok(c) = ChatRequest::parse(Bytes::from(serde_json::to_vec(&changed).unwrap_or_default())) {
            prop_assert_ne!(key, exact_key("t", &c, &d));
        }
    }
}
