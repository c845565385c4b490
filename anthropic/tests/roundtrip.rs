//! Round-trip properties: OpenAI → Anthropic → OpenAI keeps requests, answers and streams;
//! Anthropic → OpenAI → Anthropic keeps answers.

mod common;

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use slmgate_anthropic::*;

const CASES: u32 = 256;

fn text() -> impl Strategy<Value = String> {
    "[ -~\n\té漢🙂]{0,24}"
}

fn nonempty_text() -> impl Strategy<Value = String> {
    "[ -~\n\té漢🙂]{1,24}"
}

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z_0-9]{0,11}"
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        text().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
        prop::collection::vec(any::<i32>(), 0..3).prop_map(Value::from),
    ]
}

/// Tool-call arguments: a JSON object, one level of nesting.
fn arguments() -> impl Strategy<Value = Value> {
    let inner = prop::collection::btree_map(name(), leaf(), 0..3)
        .prop_map(|m| Value::Object(m.into_iter().collect()));
    prop::collection::btree_map(name(), prop_oneof![3 => leaf(), 1 => inner], 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn schema() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        name(),
        prop::sample::select(vec!["string", "integer", "boolean"]),
        0..4,
    )
    .prop_flat_map(|props| {
        let keys: Vec<String> = props.keys().cloned().collect();
        let n = keys.len();
        (Just(props), prop::sample::subsequence(keys, 0..=n))
    })
    .prop_map(|(props, required)| {
        let properties: Map<String, Value> = props
            .into_iter()
            .map(|(k, t)| (k, json!({ "type": t })))
            .collect();
        json!({ "type": "object", "properties": properties, "required": required })
    })
}

#[derive(Debug, Clone)]
enum Turn {
    User(String),
    Assistant(String),
    /// Optional text, tool calls (name, arguments) and one result per call.
    ToolRound(Option<String>, Vec<(String, Value, String)>),
}

fn turn() -> impl Strategy<Value = Turn> {
    prop_oneof![
        text().prop_map(Turn::User),
        text().prop_map(Turn::Assistant),
        (
            prop::option::of(nonempty_text()),
            prop::collection::vec((name(), arguments(), text()), 1..4)
        )
            .prop_map(|(t, calls)| Turn::ToolRound(t, calls)),
    ]
}

#[derive(Debug, Clone)]
struct RequestCase {
    system: Option<String>,
    turns: Vec<Turn>,
    tools: Vec<(String, Option<String>, Value)>,
    tool_choice: u8,
    no_parallel: bool,
    stop: Option<Result<String, Vec<String>>>,
    max_tokens: Option<(u64, bool)>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    user: Option<String>,
    stream: bool,
}

fn request_case() -> impl Strategy<Value = RequestCase> {
    (
        prop::option::of(nonempty_text()),
        prop::collection::vec(turn(), 1..7),
        prop::collection::vec((name(), prop::option::of(text()), schema()), 0..4),
        0u8..5,
        any::<bool>(),
        prop::option::of(prop_oneof![
            nonempty_text().prop_map(Ok),
            prop::collection::vec(nonempty_text(), 1..4).prop_map(Err),
        ]),
        prop::option::of((1u64..200_000, any::<bool>())),
        prop::option::of(prop::sample::select(vec![0.0, 0.25, 0.7, 1.0])),
        prop::option::of(prop::sample::select(vec![0.1, 0.9, 1.0])),
        prop::option::of(name()),
        any::<bool>(),
    )
        .prop_map(
            |(
                system,
                turns,
                tools,
                tool_choice,
                no_parallel,
                stop,
                max_tokens,
                temperature,
                top_p,
                user,
                stream,
            )| {
                RequestCase {
                    system,
                    turns,
                    tools,
                    tool_choice,
                    no_parallel,
                    stop,
                    max_tokens,
                    temperature,
                    top_p,
                    user,
                    stream,
                }
            },
        )
}

impl RequestCase {
    fn to_openai(&self) -> Value {
        let mut messages = Vec::new();
        if let Some(s) = &self.system {
            messages.push(json!({ "role": "system", "content": s }));
        }
        let mut next_id = 0;
        for turn in &self.turns {
            match turn {
                Turn::User(t) => messages.push(json!({ "role": "user", "content": t })),
                Turn::Assistant(t) => messages.push(json!({ "role": "assistant", "content": t })),
                Turn::ToolRound(t, calls) => {
                    let first = next_id;
                    let tool_calls: Vec<Value> = calls
                        .iter()
                        .map(|(name, args, _)| {
                            next_id += 1;
                            json!({
                                "id": format!("call_{next_id}"),
                                "type": "function",
                                "function": { "name": name, "arguments": args.to_string() },
                            })
                        })
                        .collect();
                    messages.push(
                        json!({ "role": "assistant", "content": t, "tool_calls": tool_calls }),
                    );
                    for (k, (_, _, result)) in calls.iter().enumerate() {
                        messages.push(json!({
                            "role": "tool",
                            "tool_call_id": format!("call_{}", first + k + 1),
                            "content": result,
                        }));
                    }
                }
            }
        }
        let mut req = json!({ "model": "claude-sonnet-4-5", "messages": messages });
        if !self.tools.is_empty() {
            req["tools"] = self
                .tools
                .iter()
                .map(|(name, description, schema)| {
                    let mut f = json!({ "name": name, "parameters": schema });
                    if let Some(d) = description {
                        f["description"] = json!(d);
                    }
                    json!({ "type": "function", "function": f })
                })
                .collect();
            if let Some(choice) = self.tool_choice_value() {
                req["tool_choice"] = choice;
            }
            if self.no_parallel {
                req["parallel_tool_calls"] = json!(false);
            }
        }
        match &self.stop {
            Some(Ok(s)) => req["stop"] = json!(s),
            Some(Err(list)) => req["stop"] = json!(list),
            None => {}
        }
        if let Some((n, new_name)) = self.max_tokens {
            req[if new_name {
                "max_completion_tokens"
            } else {
                "max_tokens"
            }] = json!(n);
        }
        if let Some(t) = self.temperature {
            req["temperature"] = json!(t);
        }
        if let Some(p) = self.top_p {
            req["top_p"] = json!(p);
        }
        if let Some(u) = &self.user {
            req["user"] = json!(u);
        }
        if self.stream {
            req["stream"] = json!(true);
        }
        req
    }

    fn tool_choice_value(&self) -> Option<Value> {
        if self.tools.is_empty() {
            return None;
        }
        match self.tool_choice {
            0 => None,
            1 => Some(json!("auto")),
            2 => Some(json!("required")),
            3 => Some(json!("none")),
            _ => Some(json!({ "type": "function", "function": { "name": self.tools[0].0 } })),
        }
    }
}

/// A message reduced to what must survive: role, text, tool calls (id, name, parsed
/// arguments), tool_call_id. Absent and empty content are the same.
fn canonical(messages: &Value) -> Vec<Value> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let calls: Vec<Value> = m["tool_calls"]
                .as_array()
                .map(|calls| {
                    calls
                        .iter()
                        .map(|c| {
                            json!([
                                c["id"],
                                c["function"]["name"],
                                serde_json::from_str::<Value>(
                                    c["function"]["arguments"].as_str().unwrap()
                                )
                                .unwrap()
                            ])
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "role": m["role"],
                "content": m["content"].as_str().unwrap_or(""),
                "tool_calls": calls,
                "tool_call_id": m["tool_call_id"],
            })
        })
        .collect()
}

#[derive(Debug, Clone)]
struct AnswerCase {
    text: Option<String>,
    calls: Vec<(String, Value)>,
    finish: &'static str,
    prompt: u64,
    cached: u64,
    completion: u64,
}

fn answer_case() -> impl Strategy<Value = AnswerCase> {
    (
        prop::option::of(nonempty_text()),
        prop::collection::vec((name(), arguments()), 0..4),
        prop::sample::select(vec!["stop", "length", "tool_calls", "content_filter"]),
        0u64..2_000_000,
        0u64..=100,
        0u64..100_000,
    )
        .prop_map(
            |(text, calls, finish, prompt, cached_pct, completion)| AnswerCase {
                text,
                calls,
                finish,
                prompt,
                cached: prompt * cached_pct / 100,
                completion,
            },
        )
}

impl AnswerCase {
    /// The finish reason that must come back: `stop` with tool calls is `tool_calls`.
    fn expected_finish(&self) -> &'static str {
        if self.finish == "stop" && !self.calls.is_empty() {
            "tool_calls"
        } else {
            self.finish
        }
    }

    fn call_id(k: usize) -> String {
        format!("call_{k}x")
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// OpenAI request → Anthropic → OpenAI keeps messages, tools, tool choice, stops,
    /// max_tokens, sampling, user and stream; the Anthropic request survives its own JSON.
    #[test]
    fn request_round_trip(case in request_case()) {
        let original = case.to_openai();
        let anthropic = openai_to_messages(&original).unwrap();

        let wire = serde_json::to_value(&anthropic).unwrap();
        let reparsed: MessagesRequest = serde_json::from_value(wire.clone()).unwrap();
        prop_assert_eq!(&reparsed, &anthropic);

        let back = messages_to_openai(&reparsed, None).unwrap();
        prop_assert_eq!(canonical(&back["messages"]), canonical(&original["messages"]));
        prop_assert_eq!(&back["tools"], &original["tools"]);
        let expected_stop = match &case.stop {
            Some(Ok(s)) => json!([s]),
            Some(Err(list)) => json!(list),
            None => Value::Null,
        };
        prop_assert_eq!(&back["stop"], &expected_stop);
        let expected_max = case.max_tokens.map_or(DEFAULT_MAX_TOKENS, |(n, _)| n);
        prop_assert_eq!(&back["max_tokens"], &json!(expected_max));
        prop_assert_eq!(&back["temperature"], &original["temperature"]);
        prop_assert_eq!(&back["top_p"], &original["top_p"]);
        prop_assert_eq!(&back["user"], &original["user"]);
        prop_assert_eq!(back["stream"].as_bool().unwrap_or(false), case.stream);
        if case.stream {
            prop_assert_eq!(&back["stream_options"], &json!({ "include_usage": true }));
        }

        // Tool choice: absent stays absent, except that parallel_tool_calls: false needs a
        // choice to ride on in Anthropic's API, which comes back as `auto`.
        let has_tools = !case.tools.is_empty();
        let choice = case.tool_choice_value().filter(|_| has_tools);
        let keeps_parallel = has_tools && case.no_parallel && choice != Some(json!("none"));
        let expected_choice = match choice {
            None if keeps_parallel => json!("auto"),
            None => Value::Null,
            Some(c) => c,
        };
        prop_assert_eq!(&back["tool_choice"], &expected_choice);
        prop_assert_eq!(
            &back["parallel_tool_calls"],
            &if keeps_parallel { json!(false) } else { Value::Null }
        );
    }

    /// OpenAI answer → Anthropic → OpenAI keeps content, tool calls, the finish reason and
    /// every usage number.
    #[test]
    fn openai_answer_round_trip(case in answer_case()) {
        let mut message = json!({ "role": "assistant", "content": case.text });
        if !case.calls.is_empty() {
            message["tool_calls"] = case
                .calls
                .iter()
                .enumerate()
                .map(|(k, (name, args))| json!({
                    "id": AnswerCase::call_id(k),
                    "type": "function",
                    "function": { "name": name, "arguments": args.to_string() },
                }))
                .collect();
        }
        let original = json!({
            "id": "chatcmpl-42",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-4.1",
            "choices": [{ "index": 0, "message": message, "finish_reason": case.finish }],
            "usage": {
                "prompt_tokens": case.prompt,
                "completion_tokens": case.completion,
                "total_tokens": case.prompt + case.completion,
                "prompt_tokens_details": { "cached_tokens": case.cached },
            },
        });
        let anthropic = openai_response_to_messages(&original).unwrap();
        let reparsed: MessagesResponse =
            serde_json::from_value(serde_json::to_value(&anthropic).unwrap()).unwrap();
        prop_assert_eq!(&reparsed, &anthropic);
        prop_assert_eq!(anthropic.usage.prompt_tokens(), case.prompt);

        let back = messages_response_to_openai(&reparsed, 1_700_000_000);
        prop_assert_eq!(&back["id"], &original["id"]);
        prop_assert_eq!(&back["model"], &original["model"]);
        prop_assert_eq!(&back["usage"], &original["usage"]);
        let choice = &back["choices"][0];
        prop_assert_eq!(choice["finish_reason"].as_str(), Some(case.expected_finish()));
        prop_assert_eq!(
            canonical(&json!([&choice["message"]])),
            canonical(&json!([&original["choices"][0]["message"]]))
        );
    }

    /// Anthropic answer → OpenAI → Anthropic is the identity for text, tool use, the four
    /// stop reasons OpenAI can say, and usage including cache writes and reads.
    #[test]
    fn anthropic_answer_round_trip(
        case in answer_case(),
        stop in prop::sample::select(vec![
            StopReason::EndTurn, StopReason::MaxTokens, StopReason::ToolUse, StopReason::Refusal,
        ]),
        cache_write in 0u64..100_000,
    ) {
        let mut content = Vec::new();
        if let Some(t) = &case.text {
            content.push(ContentBlock::text(t.clone()));
        }
        for (k, (name, args)) in case.calls.iter().enumerate() {
            content.push(ContentBlock::tool_use(format!("toolu_{k}"), name.clone(), args.clone()));
        }
        let stop = if stop == StopReason::EndTurn && !case.calls.is_empty() {
            StopReason::ToolUse
        } else {
            stop
        };
        let original = MessagesResponse {
            id: "msg_01XFDUDYJgAACzvnptvVoYEL".into(),
            object_type: "message".into(),
            role: Role::Assistant,
            content,
            model: "claude-sonnet-4-5".into(),
            stop_reason: Some(stop),
            stop_sequence: None,
            usage: Usage {
                input_tokens: case.prompt - case.cached,
                output_tokens: case.completion,
                cache_creation_input_tokens: Some(cache_write),
                cache_read_input_tokens: Some(case.cached),
            },
        };
        let openai = messages_response_to_openai(&original, 0);
        prop_assert_eq!(
            openai["usage"]["prompt_tokens"].as_u64(),
            Some(case.prompt + cache_write)
        );
        prop_assert_eq!(openai["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64(), Some(case.cached));
        prop_assert_eq!(openai["usage"]["completion_tokens"].as_u64(), Some(case.completion));
        let back = openai_response_to_messages(&openai).unwrap();
        prop_assert_eq!(back, original);
    }

    /// OpenAI chunks (text and tool arguments split at random) → Anthropic events (through
    /// their SSE text, split at random) → OpenAI chunks reassemble the same text, tool calls,
    /// finish reason and usage, and the events follow Anthropic's grammar.
    #[test]
    fn stream_round_trip(
        case in answer_case(),
        cuts in prop::collection::vec(0usize..8, 0..40),
        byte_split in 1usize..300,
        usage_in_last_choice_chunk in any::<bool>(),
    ) {
        let text = case.text.clone().unwrap_or_default();
        let mut cut = cuts.iter().copied().cycle();
        let mut pieces = |s: &str| -> Vec<String> {
            let chars: Vec<char> = s.chars().collect();
            let mut out = Vec::new();
            let mut at = 0;
            while at < chars.len() {
                let n = cut.next().unwrap_or(3).max(1).min(chars.len() - at);
                out.push(chars[at..at + n].iter().collect());
                at += n;
            }
            out
        };
        let head = |delta: Value, finish: Option<&str>| json!({
            "id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1",
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        });
        let mut chunks = vec![head(json!({ "role": "assistant", "content": "" }), None)];
        for p in pieces(&text) {
            chunks.push(head(json!({ "content": p }), None));
        }
        let mut args_text = Vec::new();
        for (k, (name, args)) in case.calls.iter().enumerate() {
            let args = args.to_string();
            let mut frags = pieces(&args).into_iter();
            chunks.push(head(json!({ "tool_calls": [{
                "index": k, "id": AnswerCase::call_id(k), "type": "function",
                "function": { "name": name, "arguments": frags.next().unwrap_or_default() },
            }] }), None));
            for f in frags {
                chunks.push(head(json!({ "tool_calls": [{ "index": k, "function": { "arguments": f } }] }), None));
            }
            args_text.push((AnswerCase::call_id(k), name.clone(), args));
        }
        let usage = json!({
            "prompt_tokens": case.prompt,
            "completion_tokens": case.completion,
            "total_tokens": case.prompt + case.completion,
            "prompt_tokens_details": { "cached_tokens": case.cached },
        });
        let mut last = head(json!({}), Some(case.finish));
        if usage_in_last_choice_chunk {
            last["usage"] = usage.clone();
            chunks.push(last);
        } else {
            chunks.push(last);
            chunks.push(json!({
                "id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1,
                "model": "gpt-4.1", "choices": [], "usage": usage,
            }));
        }

        let mut inbound = OpenAiToAnthropicStream::new("claude-alias");
        let mut events = Vec::new();
        for c in &chunks {
            events.extend(inbound.push_sse_data(&c.to_string()).unwrap());
        }
        events.extend(inbound.push_sse_data("[DONE]").unwrap());
        common::check_event_grammar(&events);
        prop_assert_eq!(inbound.usage().unwrap().prompt_tokens(), case.prompt);

        let sse: String = events.iter().map(event_to_sse).collect();
        let mut decoder = SseDecoder::new();
        let mut decoded = Vec::new();
        for piece in sse.as_bytes().chunks(byte_split) {
            decoded.extend(decoder.push(piece).into_iter().map(Result::unwrap));
        }
        decoded.extend(decoder.finish().into_iter().map(Result::unwrap));
        prop_assert_eq!(&decoded, &events);

        let mut outbound = AnthropicToOpenAiStream::new(1, true);
        let mut back = Vec::new();
        for e in &decoded {
            back.extend(outbound.push(e));
        }
        back.extend(outbound.finish());
        let r = common::reassemble(&back);
        prop_assert_eq!(r.role.as_deref(), Some("assistant"));
        prop_assert_eq!(&r.content, &text);
        prop_assert_eq!(&r.tool_calls, &args_text);
        prop_assert_eq!(r.finish_reason.as_deref(), Some(case.expected_finish()));
        prop_assert_eq!(r.usage.as_ref(), Some(&usage));
        prop_assert_eq!(outbound.openai_usage(), Some(usage));
    }

    /// Anthropic's error shape and status agree for every status a gateway can answer.
    #[test]
    fn error_status_round_trip(status in 400u16..600, message in text()) {
        let kind = error_kind_for_status(status);
        let body = anthropic_error_body(kind, &message);
        prop_assert_eq!(&body["type"], "error");
        prop_assert_eq!(body["error"]["message"].as_str(), Some(message.as_str()));
        let (back_status, openai) =
            anthropic_error_to_openai(kind.status(), body.to_string().as_bytes());
        prop_assert_eq!(openai["error"]["message"].as_str(), Some(message.as_str()));
        prop_assert_eq!(back_status, if kind.status() == 529 { 503 } else { kind.status() });
    }
}
