//! Between the two shapes of an answer: a streamed one is assembled into the
//! `chat.completion` JSON it stands for ([`Assembler`]), and a cached completion is replayed
//! to a stream request as `chat.completion.chunk` events ([`completion_events`]). One stored
//! form serves both kinds of request.
//!
//! Only complete answers are accepted ([`is_complete`], [`Assembler::finish`]): every choice
//! has a `finish_reason` other than `content_filter`, no error was reported, and a stream
//! ended with `[DONE]`. A completion cut by `max_tokens` (`length`) is complete: the same
//! request, which includes `max_tokens`, gets the same cut.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// Finish reasons of a complete answer.
fn finished(reason: Option<&Value>) -> bool {
    matches!(
        reason.and_then(Value::as_str),
        Some("stop" | "length" | "tool_calls" | "function_call")
    )
}

/// Returns true if and only if `v` is a successful completion whose every choice finished.
pub fn is_complete(v: &Value) -> bool {
    if v.get("error").is_some_and(|e| !e.is_null()) {
        return false;
    }
    match v.get("choices").and_then(Value::as_array) {
        Some(choices) if !choices.is_empty() => {
            choices.iter().all(|c| finished(c.get("finish_reason")))
        }
        _ => false,
    }
}

/// Merges a streamed delta into the message built so far, the way OpenAI's SDKs do:
/// strings are appended, `index` and `type` are replaced, objects merge, and lists of
/// objects merge item by item on their `index` (tool calls).
fn accumulate(acc: &mut Map<String, Value>, delta: &Map<String, Value>) {
    for (k, d) in delta {
        let Some(a) = acc.get_mut(k).filter(|a| !a.is_null()) else {
            acc.insert(k.clone(), d.clone());
            continue;
        };
        if k == "index" || k == "type" || k == "role" {
            *a = d.clone();
            continue;
        }
        match (a, d) {
            (Value::String(a), Value::String(d)) => a.push_str(d),
            (Value::Object(a), Value::Object(d)) => accumulate(a, d),
            (Value::Array(a), Value::Array(d)) => {
                for item in d {
                    let idx = item.get("index").and_then(Value::as_u64);
                    match (idx, item.as_object()) {
                        (Some(i), Some(obj)) => {
                            match a
                                .iter_mut()
                                .find(|x| x.get("index").and_then(Value::as_u64) == Some(i))
                                .and_then(Value::as_object_mut)
                            {
                                Some(existing) => accumulate(existing, obj),
                                None => a.push(item.clone()),
                            }
                        }
                        _ => a.push(item.clone()),
                    }
                }
            }
            (a, d) => *a = d.clone(),
        }
    }
}

#[derive(Default)]
struct ChoiceAcc {
    message: Map<String, Value>,
    finish_reason: Value,
    logprobs: Option<Map<String, Value>>,
}

/// Builds the completion a stream stands for, one event at a time.
#[derive(Default)]
pub struct Assembler {
    head: Map<String, Value>,
    choices: BTreeMap<u64, ChoiceAcc>,
    usage: Option<Value>,
    done: bool,
    failed: bool,
    /// Bytes of event data seen (to give up on answers too large to cache).
    pub bytes: usize,
}

impl Assembler {
    /// Feeds one event's data (`[DONE]` included).
    pub fn push(&mut self, data: &str) {
        self.bytes += data.len();
        if self.failed {
            return;
        }
        if data == "[DONE]" {
            self.done = true;
            return;
        }
        let Ok(Value::Object(v)) = serde_json::from_str::<Value>(data) else {
            self.failed = true;
            return;
        };
        if v.get("error").is_some_and(|e| !e.is_null()) {
            self.failed = true;
            return;
        }
        for k in [
            "id",
            "created",
            "model",
            "system_fingerprint",
            "service_tier",
        ] {
            if let Some(x) = v.get(k).filter(|x| !x.is_null()) {
                self.head.entry(k).or_insert_with(|| x.clone());
            }
        }
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(u.clone());
        }
        let Some(choices) = v.get("choices").and_then(Value::as_array) else {
            return;
        };
        for c in choices {
            let idx = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            let acc = self.choices.entry(idx).or_default();
            if let Some(Value::Object(d)) = c.get("delta") {
                accumulate(&mut acc.message, d);
            }
            if let Some(f) = c.get("finish_reason").filter(|f| !f.is_null()) {
                acc.finish_reason = f.clone();
            }
            if let Some(Value::Object(lp)) = c.get("logprobs") {
                let into = acc.logprobs.get_or_insert_with(Map::new);
                for (k, v) in lp {
                    match (into.get_mut(k), v) {
                        (Some(Value::Array(a)), Value::Array(b)) => a.extend(b.iter().cloned()),
                        (_, v) => {
                            into.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
        }
    }

    /// The completion, or `None` when the stream was not a complete, successful answer.
    pub fn finish(self) -> Option<Value> {
        if !self.done || self.failed || self.choices.is_empty() {
            return None;
        }
        let mut choices = Vec::with_capacity(self.choices.len());
        for (idx, c) in self.choices {
            if !finished(Some(&c.finish_reason)) {
                return None;
            }
            let mut message = c.message;
            message
                .entry("role")
                .or_insert_with(|| Value::from("assistant"));
            message.entry("content").or_insert(Value::Null);
            if let Some(Value::Array(calls)) = message.get_mut("tool_calls") {
                for call in calls.iter_mut().filter_map(Value::as_object_mut) {
                    call.remove("index");
                }
            }
            choices.push(json!({
                "index": idx,
                "message": message,
                "logprobs": c.logprobs.map_or(Value::Null, Value::Object),
                "finish_reason": c.finish_reason,
            }));
        }
        let mut out = self.head;
        out.insert("object".into(), Value::from("chat.completion"));
        out.insert("choices".into(), Value::Array(choices));
        if let Some(u) = self.usage {
            out.insert("usage".into(), u);
        }
        Some(Value::Object(out))
    }
}

/// The events (data only, `[DONE]` last) that replay `completion` to a stream request: per
/// choice, one chunk with the whole message as its delta and one with the finish reason;
/// then the usage chunk when `include_usage` and the completion has usage.
pub fn completion_events(completion: &Value, include_usage: bool) -> Vec<String> {
    let mut head = Map::new();
    for k in [
        "id",
        "created",
        "model",
        "system_fingerprint",
        "service_tier",
    ] {
        if let Some(v) = completion.get(k) {
            head.insert(k.into(), v.clone());
        }
    }
    head.insert("object".into(), Value::from("chat.completion.chunk"));
    let chunk = |choices: Value, usage: Option<&Value>| {
        let mut c = head.clone();
        c.insert("choices".into(), choices);
        if let Some(u) = usage {
            c.insert("usage".into(), u.clone());
        }
        Value::Object(c).to_string()
    };
    let mut out = Vec::new();
    let empty = Vec::new();
    let choices = completion
        .get("choices")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for (i, c) in choices.iter().enumerate() {
        let index = c.get("index").cloned().unwrap_or_else(|| Value::from(i));
        let mut delta = c
            .get("message")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        delta.retain(|_, v| !v.is_null());
        if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
            for (j, call) in calls.iter_mut().enumerate() {
                if let Some(obj) = call.as_object_mut() {
                    obj.insert("index".into(), Value::from(j));
                }
            }
        }
        let logprobs = c.get("logprobs").cloned().unwrap_or(Value::Null);
        out.push(chunk(
            json!([{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": null}]),
            None,
        ));
        out.push(chunk(
            json!([{"index": index, "delta": {}, "logprobs": null, "finish_reason": c.get("finish_reason")}]),
            None,
        ));
    }
    if include_usage {
        if let Some(u) = completion.get("usage").filter(|u| !u.is_null()) {
            out.push(chunk(json!([]), Some(u)));
        }
    }
    out.push("[DONE]".to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use slmgate_openai::chat::{extract_usage, read_json_answer, Usage};

    fn feed(events: &[Value], done: bool) -> Option<Value> {
        let mut a = Assembler::default();
        for e in events {
            a.push(&e.to_string());
        }
        if done {
            a.push("[DONE]");
        }
        a.finish()
    }

    fn chunk(delta: Value, finish: Value) -> Value {
        json!({"id": "c1", "object": "chat.completion.chunk", "created": 7, "model": "gpt",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    }

    #[test]
    fn assembles_text_and_tool_calls_like_the_sdks() {
        let events = [
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Hel"}), Value::Null),
            chunk(
                json!({"content": "lo", "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{\"a\""}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
                Value::Null,
            ),
            chunk(json!({}), json!("tool_calls")),
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 7, "model": "gpt", "choices": [],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}),
        ];
        let c = feed(&events, true).unwrap();
        assert_eq!(c["object"], "chat.completion");
        assert_eq!(c["id"], "c1");
        assert_eq!(c["usage"]["total_tokens"], 7);
        let m = &c["choices"][0]["message"];
        assert_eq!(m["role"], "assistant");
        assert_eq!(m["content"], "Hello");
        assert_eq!(m["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
        assert_eq!(m["tool_calls"][0]["function"]["name"], "get");
        assert!(m["tool_calls"][0].get("index").is_none());
        assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
        assert!(is_complete(&c));
    }

    #[test]
    fn incomplete_or_failed_streams_give_nothing() {
        let ok = [
            chunk(json!({"role": "assistant", "content": "hi"}), Value::Null),
            chunk(json!({}), json!("stop")),
        ];
        assert!(feed(&ok, true).is_some());
        assert!(feed(&ok, false).is_none(), "no [DONE]");
        assert!(feed(&ok[..1], true).is_none(), "no finish_reason");
        let mut err = ok.to_vec();
        err.insert(
            1,
            json!({"error": {"message": "boom", "type": "upstream_error"}}),
        );
        assert!(feed(&err, true).is_none(), "error event");
        let filtered = [chunk(json!({"content": "x"}), json!("content_filter"))];
        assert!(feed(&filtered, true).is_none());
        let mut a = Assembler::default();
        a.push("not json");
        a.push("[DONE]");
        assert!(a.finish().is_none());
    }

    #[test]
    fn json_completeness() {
        assert!(is_complete(
            &json!({"choices": [{"message": {}, "finish_reason": "length"}]})
        ));
        assert!(!is_complete(
            &json!({"choices": [{"message": {}, "finish_reason": null}]})
        ));
        assert!(!is_complete(&json!({"choices": []})));
        for v in [
            json!({"choices": [{"finish_reason": "stop", "message": {"content": "a\"b"}}], "usage": {}}),
            json!({"choices": [{"finish_reason": null}]}),
            json!({"choices": [{"finish_reason": "stop"}, {"finish_reason": "length"}]}),
            json!({"choices": []}),
            json!({"error": {"message": "x"}, "choices": [{"finish_reason": "stop"}]}),
            json!({"error": null, "choices": [{"finish_reason": "tool_calls"}]}),
            json!({"choices": [{"finish_reason": 3}]}),
            json!([1]),
        ] {
            assert_eq!(
                read_json_answer(v.to_string().as_bytes()).0,
                is_complete(&v),
                "{v}"
            );
        }
        // The usage read along is what `extract_usage` reads on its own, whatever the rest.
        for v in [
            json!({"choices": [{"finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}),
            json!({"choices": [{"finish_reason": 3}], "usage": {"prompt_tokens": 3}}),
            json!({"choices": [{"finish_reason": "stop"}], "usage": null}),
            json!({"choices": [{"finish_reason": "stop"}], "usage": "x"}),
            json!({"choices": [{"finish_reason": "stop"}]}),
            json!({"usage": {"completion_tokens": 2}}),
            json!([1]),
        ] {
            let text = v.to_string();
            let (complete, usage) = read_json_answer(text.as_bytes());
            assert_eq!(usage, extract_usage(text.as_bytes()), "{v}");
            assert_eq!(complete, is_complete(&v), "{v}");
        }
        assert_eq!(
            read_json_answer(br#"{"choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#),
            (
                true,
                Some(Usage {
                    prompt_tokens: 3,
                    completion_tokens: 4,
                    total_tokens: 7,
                    ..Usage::default()
                })
            )
        );
        assert!(!is_complete(&json!({"error": {"message": "x"}})));
    }

    #[test]
    fn replayed_events_assemble_back_into_the_same_completion() {
        let completion = json!({
            "id": "c9", "object": "chat.completion", "created": 9, "model": "gpt",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "A", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                 "logprobs": null, "finish_reason": "tool_calls"},
                {"index": 1, "message": {"role": "assistant", "content": "B"}, "logprobs": null,
                 "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
        });
        let events = completion_events(&completion, true);
        assert_eq!(events.last().unwrap(), "[DONE]");
        let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
        assert_eq!(usage_chunk["choices"], json!([]));
        let mut a = Assembler::default();
        for e in &events {
            a.push(e);
        }
        assert_eq!(a.finish().unwrap(), completion);
        let without = completion_events(&completion, false);
        assert!(without.iter().all(|e| !e.contains("\"usage\"")));
        let first: Value = serde_json::from_str(&without[0]).unwrap();
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
    }
}
