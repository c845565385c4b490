//! Cache keys: canonical hashes of what makes two requests ask the same thing.
//!
//! The hash is taken over a canonical serialization of the parsed body, never over its raw
//! bytes: object keys are sorted, whitespace is gone and numbers are written one way (`0`,
//! `0.0` and `0e0` are the same temperature), so two clients that serialise the same request
//! differently share an entry. Every body field takes part except `model` (the alias and the
//! decided targets are hashed instead), `stream` and `stream_options` (a stream and a JSON
//! request can share an answer). Unknown fields are kept: a parameter this gateway does not
//! know may still change the answer.
//!
//! Both keys start with the tenant (team, else key), the requested alias, the router's target
//! and the ordered (backend, model) targets, so tenants never share entries and a different
//! backend never answers for another.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::api::ChatRequest;
use crate::error::GatewayError;
use crate::layers::route::Decision;
use crate::runtime::Caller;

/// A 32-byte sha256 key.
pub type Key = [u8; 32];

/// Body fields that never take part in a key.
const NOT_KEYED: [&str; 3] = ["model", "stream", "stream_options"];

/// Who may share cache entries: the caller's team, else its key, else everyone (an open
/// gateway has no tenants).
pub fn tenant(caller: Option<&Caller>) -> String {
    match caller.and_then(|c| c.key.as_ref()) {
        Some(k) => match &k.team {
            Some(t) => format!("team:{t}"),
            None => format!("key:{}", k.name),
        },
        None => "open".to_string(),
    }
}

/// Writes `v` canonically: sorted keys, no whitespace, numbers normalised.
pub fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                canonical(&m[k], out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(x, out);
            }
            out.push(b']');
        }
        Value::Number(n) => out.extend_from_slice(number(n).as_bytes()),
        Value::String(s) => write_string(s, out),
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json escapes a string one way only.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Integers as integers (whatever their spelling), other numbers in serde_json's shortest
/// round-trip form.
fn number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => (f as i64).to_string(),
        Some(f) => serde_json::Number::from_f64(f).map_or_else(|| n.to_string(), |x| x.to_string()),
        None => n.to_string(),
    }
}

/// The parsed body, for keying.
pub fn body_map(chat: &ChatRequest) -> Result<Map<String, Value>, GatewayError> {
    serde_json::from_slice(chat.body())
        .map_err(|e| GatewayError::bad_request(format!("request body is not a JSON object: {e}")))
}

/// What every key of a request starts with.
fn prefix(kind: &str, tenant: &str, chat: &ChatRequest, decision: &Decision) -> Value {
    let targets: Vec<Value> = decision
        .route
        .targets
        .iter()
        .map(|t| Value::from(vec![t.backend.name().to_string(), t.model.clone()]))
        .collect();
    serde_json::json!({
        "v": 1,
        "kind": kind,
        "tenant": tenant,
        "model": chat.model,
        "target": decision.target,
        "targets": targets,
    })
}

fn hash(parts: &[&Value]) -> Key {
    let mut buf = Vec::with_capacity(1024);
    for p in parts {
        canonical(p, &mut buf);
        buf.push(b'\n');
    }
    Sha256::digest(&buf).into()
}

/// The body without the fields that never take part in a key.
fn keyed_fields(mut body: Map<String, Value>) -> Value {
    for f in NOT_KEYED {
        body.remove(f);
    }
    Value::Object(body)
}

/// The exact-cache key of a request.
pub fn exact_key(
    tenant: &str,
    chat: &ChatRequest,
    decision: &Decision,
    body: &Map<String, Value>,
) -> Key {
    let fields = keyed_fields(body.clone());
    hash(&[&prefix("exact", tenant, chat, decision), &fields])
}

/// The semantic scope of a request and the text to embed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemanticQuery {
    /// Hash of everything but the last user message: tenant, model and targets, system
    /// prompt(s), tools, every earlier turn (and anything after the last user message),
    /// and every parameter.
    pub scope: Key,
    /// The last user message's text.
    pub text: String,
}

/// The scope and text of a request for the semantic cache, or `None` when it has no last
/// user message made only of text (images and audio are not compared by meaning).
pub fn semantic_query(
    tenant: &str,
    chat: &ChatRequest,
    decision: &Decision,
    body: &Map<String, Value>,
) -> Option<SemanticQuery> {
    let messages = body.get("messages")?.as_array()?;
    let last_user = messages
        .iter()
        .rposition(|m| m.get("role").and_then(Value::as_str) == Some("user"))?;
    let text = user_text(messages[last_user].get("content")?)?;
    if text.trim().is_empty() {
        return None;
    }
    let mut rest = messages.clone();
    rest.remove(last_user);
    let mut fields = body.clone();
    fields.insert("messages".into(), Value::Array(rest));
    let fields = keyed_fields(fields);
    let scope = hash(&[&prefix("semantic", tenant, chat, decision), &fields]);
    Some(SemanticQuery { scope, text })
}

/// The text of a user message: a string, or text parts only (joined by newlines).
fn user_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") | None => out.push(p.get("text")?.as_str()?),
                    Some(_) => return None,
                }
            }
            Some(out.join("\n"))
        }
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::runtime::{ModelRoute, Target};
    use crate::upstream::openai::OpenAiBackend;
    use crate::upstream::Backend;

    pub(crate) fn decision(backend: &str, model: &str) -> Decision {
        let b = OpenAiBackend {
            name: backend.into(),
            chat_url: reqwest::Url::parse("http://127.0.0.1:9/v1/chat/completions").unwrap(),
            headers: Default::default(),
            timeout: std::time::Duration::from_secs(1),
            max_retries: 0,
            retry_backoff: std::time::Duration::from_millis(1),
            max_retry_backoff: std::time::Duration::from_millis(1),
            client: reqwest::Client::new(),
        };
        Decision {
            route: Arc::new(ModelRoute {
                alias: "m".into(),
                targets: vec![Target {
                    backend: Arc::new(Backend::OpenAi(b)),
                    model: model.into(),
                }],
            }),
            target: "m".into(),
            strategy: "alias",
            category: None,
            score: None,
            threshold: None,
            reason: String::new(),
            cascade: None,
        }
    }

    fn chat(body: &str) -> ChatRequest {
        ChatRequest::parse(Bytes::from(body.to_string())).unwrap()
    }

    fn exact(tenant: &str, body: &str, d: &Decision) -> Key {
        let c = chat(body);
        exact_key(tenant, &c, d, &body_map(&c).unwrap())
    }

    fn scope(tenant: &str, body: Value, d: &Decision) -> Option<SemanticQuery> {
        let c = chat(&body.to_string());
        semantic_query(tenant, &c, d, &body_map(&c).unwrap())
    }

    #[test]
    fn canonical_form_ignores_order_whitespace_and_number_spelling() {
        let d = decision("up", "gpt");
        let a = exact(
            "t",
            r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}],"seed":12345678901234567}"#,
            &d,
        );
        let b = exact(
            "t",
            r#"{ "messages" : [ {"content":"hi", "role":"user"} ], "seed": 12345678901234567, "temperature": 0.0, "model":"m", "stream": true, "stream_options": {"include_usage": true}}"#,
            &d,
        );
        assert_eq!(a, b);
        let mut out = Vec::new();
        canonical(&json!({"b": [1.5, 2.0, 1e2], "a": null}), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":null,"b":[1.5,2,100]}"#
        );
    }

    #[test]
    fn anything_that_changes_the_answer_changes_the_key() {
        let d = decision("up", "gpt");
        let base = r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;
        let k = exact("t", base, &d);
        for other in [
            r#"{"model":"m","temperature":0.5,"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi!"}]}"#,
            r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#,
            r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}],"tools":[]}"#,
            r#"{"model":"n","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#,
        ] {
            assert_ne!(exact("t", other, &d), k, "{other}");
        }
        assert_ne!(exact("u", base, &d), k, "tenant");
        assert_ne!(exact("t", base, &decision("other", "gpt")), k, "backend");
        assert_ne!(
            exact("t", base, &decision("up", "gpt-2")),
            k,
            "upstream model"
        );
    }

    #[test]
    fn semantic_scope_covers_all_but_the_last_user_message() {
        let d = decision("up", "gpt");
        let body = |system: &str, earlier: &str, last: &str| {
            json!({"model": "m", "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": earlier},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": last},
            ]})
        };
        let a = scope("t", body("be nice", "first", "what is rust?"), &d).unwrap();
        assert_eq!(a.text, "what is rust?");
        let same = scope("t", body("be nice", "first", "what's Rust"), &d).unwrap();
        assert_eq!(a.scope, same.scope);
        for other in [
            scope("t", body("be rude", "first", "what is rust?"), &d),
            scope("t", body("be nice", "second", "what is rust?"), &d),
            scope("u", body("be nice", "first", "what is rust?"), &d),
        ] {
            assert_ne!(other.unwrap().scope, a.scope);
        }
        let mut with_tools = body("be nice", "first", "what is rust?");
        with_tools["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
        assert_ne!(scope("t", with_tools, &d).unwrap().scope, a.scope);
        let mut hot = body("be nice", "first", "what is rust?");
        hot["temperature"] = json!(1.2);
        assert_ne!(scope("t", hot, &d).unwrap().scope, a.scope);
    }

    #[test]
    fn semantic_needs_a_text_only_last_user_message() {
        let d = decision("up", "gpt");
        let parts = json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]});
        assert_eq!(scope("t", parts, &d).unwrap().text, "a\nb");
        let image = json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:x"}}]}]});
        assert!(scope("t", image, &d).is_none());
        let no_user = json!({"model": "m", "messages": [{"role": "system", "content": "x"}]});
        assert!(scope("t", no_user, &d).is_none());
    }
}
