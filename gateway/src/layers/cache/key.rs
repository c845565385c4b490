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

use crate::call::Decision;
use crate::keys::Caller;
use slmgate_openai::chat::ChatRequest;
use slmgate_openai::error::GatewayError;

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
            let mut keys: Vec<&str> = m.keys().map(String::as_str).collect();
            keys.sort_unstable();
            let _ = write_object(out, keys, |k, out| {
                canonical(&m[k], out);
                Some(())
            });
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
        Value::Number(n) => number(n, out),
        Value::String(s) => write_string(s, out),
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json escapes `"`, `\` and control characters, nothing else, so a string without
    // them is written as is (most are: prompts rarely hold a quote or a newline).
    if !needs_escape(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // serde_json escapes a string one way only.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Whether `b` holds a byte serde_json escapes (`"`, `\\`, below 0x20), eight bytes at a
/// time (a key's strings are most of its bytes; a byte-wise scan was its costliest part).
fn needs_escape(b: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Non-zero iff some byte of `x` is below `n` (n <= 0x80); `x ^ c*ONES` has a zero byte
    // where `x` has a byte `c`.
    let below = |x: u64, n: u64| x.wrapping_sub(n * ONES) & !x & HIGHS;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let x = u64::from_ne_bytes(w);
        if below(x, 0x20) | below(x ^ (0x22 * ONES), 1) | below(x ^ (0x5c * ONES), 1) != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b == b'"' || b == b'\\' || b < 0x20)
}

/// Integers as integers (whatever their spelling), other numbers in serde_json's shortest
/// round-trip form.
fn number(n: &serde_json::Number, out: &mut Vec<u8>) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = if let Some(i) = n.as_i64() {
        write!(out, "{i}")
    } else if let Some(u) = n.as_u64() {
        write!(out, "{u}")
    } else {
        match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => write!(out, "{}", f as i64),
            Some(f) => match serde_json::Number::from_f64(f) {
                Some(x) => write!(out, "{x}"),
                None => write!(out, "{n}"),
            },
            None => write!(out, "{n}"),
        }
    };
}

/// The parsed body, for keying.
pub fn body_map(chat: &ChatRequest) -> Result<Map<String, Value>, GatewayError> {
    serde_json::from_slice(chat.body())
        .map_err(|e| GatewayError::bad_request(format!("request body is not a JSON object: {e}")))
}

/// Writes what every key of a request starts with: the key kind, tenant, requested alias,
/// the router's target and the ordered (backend, model) targets, each as a JSON string (so
/// no value can run into the next), one per line.
fn prefix(kind: &str, tenant: &str, chat: &ChatRequest, decision: &Decision, out: &mut Vec<u8>) {
    out.extend_from_slice(b"v1 ");
    out.extend_from_slice(kind.as_bytes());
    for s in [tenant, chat.model.as_str(), decision.target.as_str()] {
        out.push(b'\n');
        write_string(s, out);
    }
    for t in &decision.route.targets {
        out.push(b'\n');
        write_string(t.backend.name(), out);
        out.push(b' ');
        write_string(&t.model, out);
    }
    out.extend_from_slice(b"\n\n");
}

/// Writes an object of the keyed `names` (sorted, once each, without [`NOT_KEYED`]), each
/// member's value written by `value`; `None` when a value cannot be written.
fn write_members<'k>(
    buf: &mut Vec<u8>,
    mut names: Vec<&'k str>,
    value: impl FnMut(&'k str, &mut Vec<u8>) -> Option<()>,
) -> Option<()> {
    names.retain(|k| !NOT_KEYED.contains(k));
    names.sort_unstable();
    names.dedup();
    write_object(buf, names, value)
}

/// Writes `{"name":value,…}` for `names` in the order given, each value written by `value`;
/// `None` (stopping at once) when a value cannot be written.
fn write_object<'k>(
    buf: &mut Vec<u8>,
    names: Vec<&'k str>,
    mut value: impl FnMut(&'k str, &mut Vec<u8>) -> Option<()>,
) -> Option<()> {
    buf.push(b'{');
    for (i, k) in names.into_iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        write_string(k, buf);
        buf.push(b':');
        value(k, buf)?;
    }
    buf.push(b'}');
    Some(())
}

/// Writes `body` canonically after the prefix in `buf` and hashes the whole.
fn hash_with(mut buf: Vec<u8>, body: &Map<String, Value>) -> Key {
    let names = body.keys().map(String::as_str).collect();
    // Writing a parsed value cannot fail.
    let _ = write_members(&mut buf, names, |k, b| {
        canonical(&body[k], b);
        Some(())
    });
    Sha256::digest(&buf).into()
}

/// A buffer for one key, the prefix written.
fn key_buffer(kind: &str, tenant: &str, chat: &ChatRequest, decision: &Decision) -> Vec<u8> {
    let mut buf = Vec::with_capacity(chat.body().len() + 256);
    prefix(kind, tenant, chat, decision, &mut buf);
    buf
}

/// The exact-cache key of a request, canonicalised straight from the body's text (no value
/// tree is built); `None` only for a body that is not JSON, which parsing already refused.
pub fn exact_key(tenant: &str, chat: &ChatRequest, decision: &Decision) -> Option<Key> {
    let mut buf = key_buffer("exact", tenant, chat, decision);
    write_members(&mut buf, chat.field_names().collect(), |k, b| {
        canonical_text(chat.raw_field(k)?, b).ok()
    })?;
    Some(Sha256::digest(&buf).into())
}

/// Writes the JSON text `raw` canonically (the same bytes [`canonical`] writes for its parsed
/// value), streaming: only each object's members are held, to be sorted.
pub fn canonical_text(raw: &str, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    use serde::de::DeserializeSeed as _;
    let mut de = serde_json::Deserializer::from_str(raw);
    Canon(out).deserialize(&mut de)?;
    de.end()
}

/// A serde visitor that writes what it visits canonically into its buffer.
struct Canon<'o>(&'o mut Vec<u8>);

/// An object key, borrowed from the text when it has no escapes.
struct CanonKey<'a>(std::borrow::Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for CanonKey<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = CanonKey<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CanonKey(v.into()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CanonKey(v.to_string().into()))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(CanonKey(v.into()))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Canon<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Canon<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        number(&v.into(), self.0);
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        number(&v.into(), self.0);
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        match serde_json::Number::from_f64(v) {
            Some(n) => number(&n, self.0),
            None => self.0.extend_from_slice(b"null"),
        }
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        write_string(v, self.0);
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.push(b'[');
        let mut first = true;
        loop {
            let start = self.0.len();
            if !first {
                self.0.push(b',');
            }
            if seq.next_element_seed(Canon(&mut *self.0))?.is_none() {
                self.0.truncate(start);
                break;
            }
            first = false;
        }
        self.0.push(b']');
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Every member's canonical value is written at the end of the output (a range each),
        // the object is then assembled after them in key order and moved down over them: no
        // scratch buffer per object.
        let out = self.0;
        let base = out.len();
        let mut members: Vec<(CanonKey<'de>, std::ops::Range<usize>)> = Vec::new();
        while let Some(k) = map.next_key::<CanonKey<'de>>()? {
            let start = out.len();
            map.next_value_seed(Canon(&mut *out))?;
            let v = start..out.len();
            // A repeated key keeps its last value, as a parsed object does.
            match members.iter_mut().find(|(m, _)| m.0 == k.0) {
                Some(m) => m.1 = v,
                None => members.push((k, v)),
            }
        }
        members.sort_unstable_by(|a, b| a.0 .0.cmp(&b.0 .0));
        let assembled = out.len();
        out.push(b'{');
        for (i, (k, v)) in members.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_string(&k.0, out);
            out.push(b':');
            out.extend_from_within(v.clone());
        }
        out.push(b'}');
        out.copy_within(assembled.., base);
        out.truncate(base + (out.len() - assembled));
        Ok(())
    }
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
    let scope = hash_with(key_buffer("semantic", tenant, chat, decision), &fields);
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
    use crate::targets::{ModelRoute, Target};
    use crate::upstream::openai::OpenAiBackend;
    use crate::upstream::Backend;

    pub(crate) fn decision(backend: &str, model: &str) -> Decision {
        let b = OpenAiBackend {
            name: backend.into(),
            dialect: crate::upstream::openai::Dialect::OpenAi,
            chat_url: reqwest::Url::parse("http://127.0.0.1:9/v1/chat/completions").unwrap(),
            api_version: None,
            headers: Default::default(),
            timeout: std::time::Duration::from_secs(1),
            max_retries: 0,
            retry_backoff: std::time::Duration::from_millis(1),
            max_retry_backoff: std::time::Duration::from_millis(1),
            client: reqwest::Client::new(),
            secrets: Default::default(),
            breaker: Arc::new(crate::upstream::breaker::Breaker::new(
                backend,
                Default::default(),
            )),
        };
        Decision {
            route: Arc::new(ModelRoute::new(
                "m".into(),
                vec![Target {
                    backend: Arc::new(Backend::OpenAi(b)),
                    model: model.into(),
                }],
            )),
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
        exact_key(tenant, &chat(body), d).unwrap()
    }

    #[test]
    fn streaming_canonical_form_matches_the_parsed_one() {
        for text in [
            r#"{"b":[1.5,2.0,1e2,-3,18446744073709551615],"a":null,"c":{"z":"\u00e9\n","y":[true,false,{}]}}"#,
            r#"[{"role":"user","content":"hi"},{"content":[{"type":"text","text":"x"}],"role":"assistant"}]"#,
            r#""a \"quoted\" string""#,
            r#"{"k":1,"k":2}"#,
            r#"{"z":{"b":[1,{"d":2,"c":"\"q\""}],"a":"a longer value"},"y":{},"x":[{"q":{"s":1,"r":[]}}],"z":3}"#,
            r#"{"m":{"k":"first, longer","j":0},"m":{"k":"2"},"a":{"c":{"b":{"a":[{"z":1,"y":2}]}}}}"#,
            "0.1",
            "[]",
        ] {
            let mut streamed = Vec::new();
            canonical_text(text, &mut streamed).unwrap();
            let mut parsed = Vec::new();
            canonical(&serde_json::from_str::<Value>(text).unwrap(), &mut parsed);
            assert_eq!(
                String::from_utf8(streamed).unwrap(),
                String::from_utf8(parsed).unwrap(),
                "{text}"
            );
        }
        assert!(canonical_text("{", &mut Vec::new()).is_err());
    }

    #[test]
    fn the_word_wise_escape_scan_finds_what_a_byte_wise_one_finds() {
        let naive = |b: &[u8]| b.iter().any(|&c| c == b'"' || c == b'\\' || c < 0x20);
        for len in 0..20 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut b = vec![b'a'; len];
                    b[at] = byte;
                    assert_eq!(needs_escape(&b), naive(&b), "{b:?}");
                    // Neighbours that are close to the special values must not hide it.
                    for fill in [0x1f, 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xff] {
                        let mut b = vec![fill; len];
                        b[at] = byte;
                        assert_eq!(needs_escape(&b), naive(&b), "{b:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for s in [
            "",
            "plain prose, with punctuation: / ? ! é 雪 \u{2028} \u{7f}",
            "a \"quote\"",
            "back\\slash",
            "tab\tnewline\n\r",
            "\u{0}\u{1f} control",
            " ",
        ] {
            let mut ours = Vec::new();
            write_string(s, &mut ours);
            assert_eq!(ours, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
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
