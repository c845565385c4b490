//! Hand-written payloads, most from Anthropic's and OpenAI's documentation.

mod common;

use serde_json::{json, Value};
use slmgate_anthropic::*;

/// The tool-use conversation of Anthropic's tool-use guide (weather in San Francisco), with a
/// cached system block, a follow-up question next to the tool result, and streaming.
const TOOL_CONVERSATION: &str = r#"{
  "model": "claude-opus-4-1-20250805",
  "max_tokens": 1024,
  "system": [{"type": "text", "text": "You are a weather bot.", "cache_control": {"type": "ephemeral"}}],
  "tools": [{
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
      "type": "object",
      "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "The unit of temperature"}
      },
      "required": ["location"]
    }
  }],
  "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
  "messages": [
    {"role": "user", "content": "What's the weather like in San Francisco?"},
    {"role": "assistant", "content": [
      {"type": "text", "text": "<thinking>I need to use get_weather, and the user wants SF, which is likely San Francisco, CA.</thinking>"},
      {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA", "unit": "celsius"}}
    ]},
    {"role": "user", "content": [
      {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"},
      {"type": "text", "text": "Thanks! And in Paris?"}
    ]}
  ],
  "metadata": {"user_id": "user-42"},
  "stop_sequences": ["\n\nHuman:"],
  "temperature": 0.5,
  "top_k": 40,
  "thinking": {"type": "enabled", "budget_tokens": 2048},
  "stream": true
}"#;

#[test]
fn tool_conversation_to_openai() {
    let req = parse_messages_request(TOOL_CONVERSATION.as_bytes()).unwrap();
    let out = messages_to_openai(&req, Some("gpt-4o-mini")).unwrap();
    assert_eq!(
        out,
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are a weather bot."},
                {"role": "user", "content": "What's the weather like in San Francisco?"},
                {"role": "assistant",
                 "content": "<thinking>I need to use get_weather, and the user wants SF, which is likely San Francisco, CA.</thinking>",
                 "tool_calls": [{"id": "toolu_01A09q90qw90lq917835lq9", "type": "function",
                                 "function": {"name": "get_weather",
                                              "arguments": "{\"location\":\"San Francisco, CA\",\"unit\":\"celsius\"}"}}]},
                {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"},
                {"role": "user", "content": "Thanks! And in Paris?"}
            ],
            "max_tokens": 1024,
            "stop": ["\n\nHuman:"],
            "temperature": 0.5,
            "tools": [{"type": "function", "function": {
                "name": "get_weather",
                "description": "Get the current weather in a given location",
                "parameters": req.tools.as_ref().unwrap()[0].input_schema.clone()
            }}],
            "tool_choice": "auto",
            "parallel_tool_calls": false,
            "user": "user-42",
            "stream": true,
            "stream_options": {"include_usage": true}
        })
    );

    // And back: the same conversation, minus what OpenAI cannot say (cache_control, top_k,
    // thinking) and with the tool result in its own user turn.
    let back = openai_to_messages(&out).unwrap();
    assert_eq!(back.model, "gpt-4o-mini");
    assert_eq!(
        back.system,
        Some(SystemPrompt::Text("You are a weather bot.".into()))
    );
    assert_eq!(back.max_tokens, 1024);
    assert_eq!(
        back.tool_choice,
        Some(ToolChoice::Auto {
            disable_parallel_tool_use: Some(true)
        })
    );
    assert_eq!(
        back.tools.as_ref().unwrap()[0].input_schema,
        req.tools.as_ref().unwrap()[0].input_schema
    );
    assert_eq!(back.metadata.unwrap().user_id.as_deref(), Some("user-42"));
    assert_eq!(back.top_k, None);
    assert_eq!(back.messages.len(), 4);
    assert_eq!(back.messages[1], req.messages[1]);
    assert_eq!(
        back.messages[2].content,
        MessageContent::Blocks(vec![ContentBlock::ToolResult {
            tool_use_id: "toolu_01A09q90qw90lq917835lq9".into(),
            content: Some(ToolResultContent::Text("15 degrees".into())),
            is_error: None,
            cache_control: None,
        }])
    );
    assert_eq!(
        back.messages[3].content,
        MessageContent::Text("Thanks! And in Paris?".into())
    );
}

#[test]
fn images_both_ways() {
    let req: MessagesRequest = serde_json::from_value(json!({
        "model": "m", "max_tokens": 10,
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
            {"type": "image", "source": {"type": "url", "url": "https://upload.wikimedia.org/a.jpg"}},
            {"type": "text", "text": "Compare these images."}
        ]}]
    }))
    .unwrap();
    let out = messages_to_openai(&req, None).unwrap();
    assert_eq!(
        out["messages"][0]["content"],
        json!([
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
            {"type": "image_url", "image_url": {"url": "https://upload.wikimedia.org/a.jpg"}},
            {"type": "text", "text": "Compare these images."}
        ])
    );
    let back = openai_to_messages(&out).unwrap();
    assert_eq!(back.messages, req.messages);

    let bad = json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/svg+xml,<svg/>"}}]}]});
    let err = openai_to_messages(&bad).unwrap_err();
    assert_eq!(err.field, "messages[0].content[0].image_url.url");
    assert!(err.unsupported);
}

#[test]
fn outbound_defaults_and_mappings() {
    let req = openai_to_messages(&json!({
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}], "name": "bob"},
            {"role": "system", "content": [{"type": "text", "text": "Answer in French."}]}
        ],
        "stop": "END",
        "seed": 7,
        "frequency_penalty": 0.5,
        "stream": true,
        "stream_options": {"include_usage": true},
        "tool_choice": "none",
        "tools": [{"type": "function", "function": {"name": "noop"}}],
        "response_format": {"type": "text"},
        "n": 1
    }))
    .unwrap();
    assert_eq!(req.max_tokens, DEFAULT_MAX_TOKENS);
    assert_eq!(req.stop_sequences, Some(vec!["END".to_owned()]));
    assert_eq!(
        req.system,
        Some(SystemPrompt::Blocks(vec![
            ContentBlock::text("Be brief."),
            ContentBlock::text("Answer in French.")
        ]))
    );
    assert_eq!(req.messages.len(), 1);
    assert_eq!(req.tool_choice, Some(ToolChoice::None));
    assert_eq!(
        req.tools.unwrap()[0].input_schema,
        json!({"type": "object", "properties": {}})
    );
    assert_eq!(req.stream, Some(true));

    let wire = serde_json::to_value(
        openai_to_messages(&json!({
            "model": "m", "max_tokens": 5, "max_completion_tokens": 9,
            "messages": [{"role": "user", "content": "x"}]
        }))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        wire,
        json!({"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "x"}]})
    );
}

#[test]
fn refusals_name_the_field() {
    let base = || json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
    let cases: Vec<(Value, &str, bool)> = vec![
        (
            {
                let mut v = base();
                v["n"] = json!(2);
                v
            },
            "n",
            true,
        ),
        (
            {
                let mut v = base();
                v["logprobs"] = json!(true);
                v
            },
            "logprobs",
            true,
        ),
        (
            {
                let mut v = base();
                v["response_format"] = json!({"type": "json_object"});
                v
            },
            "response_format",
            true,
        ),
        (
            {
                let mut v = base();
                v["functions"] = json!([{"name": "f"}]);
                v
            },
            "functions",
            true,
        ),
        (
            {
                let mut v = base();
                v["tools"] = json!([{"type": "custom", "custom": {}}]);
                v
            },
            "tools[0].type",
            true,
        ),
        (
            {
                let mut v = base();
                v["stop"] = json!(3);
                v
            },
            "stop",
            false,
        ),
        (
            {
                let mut v = base();
                v["max_tokens"] = json!(-1);
                v
            },
            "max_tokens",
            false,
        ),
        (
            {
                let mut v = base();
                v["messages"][0]["role"] = json!("narrator");
                v
            },
            "messages[0].role",
            false,
        ),
        (
            json!({"model": "m", "messages": [
               {"role": "assistant", "content": null, "tool_calls": [
                   {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": "}}]}
            ]}),
            "messages[0].tool_calls[0].function.arguments",
            false,
        ),
        (
            json!({"model": "m", "messages": [
               {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}
            ]}),
            "messages[0].content[0].type",
            true,
        ),
        (json!({"messages": []}), "model", false),
    ];
    for (req, field, unsupported) in cases {
        let err = openai_to_messages(&req).unwrap_err();
        assert_eq!(err.field, field, "{err}");
        assert_eq!(err.unsupported, unsupported, "{err}");
        assert_eq!(err.to_openai_body()["error"]["param"], field);
        assert_eq!(
            err.to_anthropic_body()["error"]["type"],
            "invalid_request_error"
        );
    }

    let inbound = |messages: Value, extra: Value| {
        let mut v = json!({"model": "m", "max_tokens": 10, "messages": messages});
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        let req: MessagesRequest = serde_json::from_value(v).unwrap();
        messages_to_openai(&req, None).unwrap_err()
    };
    let err = inbound(
        json!([{"role": "user", "content": [{"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}]}]),
        json!({}),
    );
    assert_eq!(
        (err.field.as_str(), err.unsupported),
        ("messages[0].content[0].type", true)
    );
    let err = inbound(
        json!([{"role": "user", "content": "x"}]),
        json!({"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]}),
    );
    assert_eq!(err.field, "tools[0].type");
    let err = inbound(
        json!([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]}]),
        json!({}),
    );
    assert_eq!(err.field, "messages[0].content[0].content[0].type");
    let err = inbound(
        json!([{"role": "user", "content": [{"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}]}]),
        json!({}),
    );
    assert!(err.unsupported);

    // A body without max_tokens is Anthropic's own 400.
    let err = parse_messages_request(br#"{"model":"m","messages":[]}"#).unwrap_err();
    assert!(err.message.contains("max_tokens"), "{err}");
}

#[test]
fn thinking_is_dropped_inbound() {
    let req: MessagesRequest = serde_json::from_value(json!({
        "model": "m", "max_tokens": 10,
        "messages": [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Simple sum.", "signature": "EqQBCgIYAhIM"},
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
                {"type": "text", "text": "4"}
            ]}
        ]
    }))
    .unwrap();
    let out = messages_to_openai(&req, None).unwrap();
    assert_eq!(
        out["messages"][1],
        json!({"role": "assistant", "content": "4"})
    );
}

/// The non-streamed tool-use answer of Anthropic's guide, with prompt caching.
#[test]
fn tool_use_answer_to_openai_and_back() {
    let body = br#"{
      "id": "msg_01Aq9w938a90dw8q",
      "model": "claude-opus-4-1-20250805",
      "stop_reason": "tool_use",
      "stop_sequence": null,
      "role": "assistant",
      "type": "message",
      "content": [
        {"type": "text", "text": "<thinking>I need to call the get_weather function.</thinking>"},
        {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
         "input": {"location": "San Francisco, CA", "unit": "celsius"}}
      ],
      "usage": {"input_tokens": 472, "output_tokens": 89,
                "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000}
    }"#;
    let resp = parse_messages_response(body).unwrap();
    let out = messages_response_to_openai(&resp, 1_700_000_000);
    assert_eq!(
        out,
        json!({
            "id": "msg_01Aq9w938a90dw8q",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "claude-opus-4-1-20250805",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "<thinking>I need to call the get_weather function.</thinking>",
                    "tool_calls": [{"id": "toolu_01A09q90qw90lq917835lq9", "type": "function",
                                    "function": {"name": "get_weather",
                                                 "arguments": "{\"location\":\"San Francisco, CA\",\"unit\":\"celsius\"}"}}]
                },
                "logprobs": null,
                "finish_reason": "tool_calls"
            }],
            "usage": {"prompt_tokens": 2572, "completion_tokens": 89, "total_tokens": 2661,
                      "prompt_tokens_details": {"cached_tokens": 2000},
                      "cache_creation_input_tokens": 100}
        })
    );
    assert_eq!(openai_response_to_messages(&out).unwrap(), resp);
}

#[test]
fn openai_answers_to_messages() {
    // OpenAI's documented answer shape, with cached tokens.
    let answer = json!({
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1741569952,
        "model": "gpt-4.1-2025-04-14",
        "choices": [{"index": 0, "message": {"role": "assistant",
            "content": "Hello! How can I assist you today?", "refusal": null, "annotations": []},
            "logprobs": null, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
                  "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 0}},
        "service_tier": "default"
    });
    let resp = openai_response_to_messages(&answer).unwrap();
    assert_eq!(
        resp.content,
        vec![ContentBlock::text("Hello! How can I assist you today?")]
    );
    assert_eq!(resp.stop_reason, Some(StopReason::MaxTokens));
    assert_eq!(
        resp.usage,
        Usage {
            input_tokens: 16,
            output_tokens: 10,
            cache_creation_input_tokens: Some(0),
            cache_read_input_tokens: Some(3)
        }
    );

    // A backend that says `stop` after tool calls still gives tool_use; a refusal is text.
    let answer = json!({"id": "x", "model": "m", "choices": [{"index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": ""}}]}}]});
    let resp = openai_response_to_messages(&answer).unwrap();
    assert_eq!(resp.stop_reason, Some(StopReason::ToolUse));
    assert_eq!(
        resp.content,
        vec![ContentBlock::tool_use("call_9", "f", json!({}))]
    );
    let answer = json!({"id": "x", "model": "m", "choices": [{"index": 0, "finish_reason": "content_filter",
        "message": {"role": "assistant", "content": null, "refusal": "I can't help with that."}}]});
    let resp = openai_response_to_messages(&answer).unwrap();
    assert_eq!(resp.stop_reason, Some(StopReason::Refusal));
    assert_eq!(
        resp.content,
        vec![ContentBlock::text("I can't help with that.")]
    );

    assert_eq!(
        openai_response_to_messages(&json!({"choices": []}))
            .unwrap_err()
            .field,
        "choices"
    );
}

#[test]
fn stop_reasons_and_unknown_values() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
    ] {
        let s: StopReason = serde_json::from_value(json!(stop)).unwrap();
        assert_eq!(finish_reason(Some(s)), finish, "{stop}");
    }
    assert_eq!(stop_reason(Some("stop")), StopReason::EndTurn);
    assert_eq!(stop_reason(Some("function_call")), StopReason::ToolUse);
    assert_eq!(stop_reason(None), StopReason::EndTurn);

    // Unknown blocks and events parse (and are dropped), so new API features do not break
    // a whole answer or stream.
    let resp: MessagesResponse = serde_json::from_value(json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
        "content": [{"type": "web_search_tool_result", "tool_use_id": "s", "content": []},
                    {"type": "text", "text": "Done", "citations": [{"type": "web_search_result_location"}]}],
        "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}
    }))
    .unwrap();
    assert_eq!(
        messages_response_to_openai(&resp, 0)["choices"][0]["message"]["content"],
        "Done"
    );
    assert_eq!(
        parse_event(r#"{"type":"brand_new_event","x":1}"#).unwrap(),
        StreamEvent::Unknown
    );
}

/// Anthropic's documented stream of a tool call (text, then `input_json_delta`s), in
/// awkwardly split bytes, through the decoder and the OpenAI state machine.
const TOOL_STREAM: &str = concat!(
    "event: message_start\n",
    r#"data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-opus-4-1-20250805","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2,"cache_creation_input_tokens":0,"cache_read_input_tokens":128},"content":[],"stop_reason":null}}"#,
    "\n\n",
    "event: content_block_start\n",
    r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
    "\n\n",
    "event: ping\n",
    r#"data: {"type": "ping"}"#,
    "\n\n",
    "event: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}"#,
    "\n\n",
    "event: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", let's check the weather for San Francisco, CA:"}}"#,
    "\r\n\r\n",
    "event: content_block_stop\n",
    r#"data: {"type":"content_block_stop","index":0}"#,
    "\n\n",
    "event: content_block_start\n",
    r#"data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}"#,
    "\n\n",
    "event: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
    "\n\n",
    "event: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}"#,
    "\n\n",
    "event: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San"}}"#,
    "\n\n",
    "event: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" Francisc"}}"#,
    "\n\n",
    ": a comment line\n",
    "event: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"o,"}}"#,
    "\n\n",
    "event: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" CA\""}}"#,
    "\n\n",
    "event: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":", "}}"#,
    "\n\n",
    "event: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"unit\": \"fah"}}"#,
    "\n\n",
    "event: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"renheit\"}"}}"#,
    "\n\n",
    "event: content_block_stop\n",
    r#"data: {"type":"content_block_stop","index":1}"#,
    "\n\n",
    "event: message_delta\n",
    r#"data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}"#,
    "\n\n",
    "event: message_stop\n",
    r#"data: {"type":"message_stop"}"#,
    "\n\n",
);

#[test]
fn anthropic_tool_stream_to_openai() {
    for split in [1, 7, 64, TOOL_STREAM.len()] {
        let mut decoder = SseDecoder::new();
        let mut events = Vec::new();
        for piece in TOOL_STREAM.as_bytes().chunks(split) {
            events.extend(decoder.push(piece).into_iter().map(Result::unwrap));
        }
        events.extend(decoder.finish().into_iter().map(Result::unwrap));
        assert_eq!(events.len(), 19);
        common::check_event_grammar(&events);

        let mut stream = AnthropicToOpenAiStream::new(1_700_000_000, true);
        let mut chunks = Vec::new();
        for e in &events {
            chunks.extend(stream.push(e));
        }
        chunks.extend(stream.finish());
        assert!(stream.is_done());
        let r = common::reassemble(&chunks);
        assert_eq!(r.role.as_deref(), Some("assistant"));
        assert_eq!(
            r.content,
            "Okay, let's check the weather for San Francisco, CA:"
        );
        assert_eq!(
            r.tool_calls,
            vec![(
                "toolu_01T1x1fJ34qAmk2tNTrN7Up6".to_owned(),
                "get_weather".to_owned(),
                r#"{"location": "San Francisco, CA", "unit": "fahrenheit"}"#.to_owned()
            )]
        );
        assert_eq!(r.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(
            r.usage,
            Some(
                json!({"prompt_tokens": 600, "completion_tokens": 89, "total_tokens": 689,
                        "prompt_tokens_details": {"cached_tokens": 128}})
            )
        );
        assert_eq!(stream.finish_reason(), Some("tool_calls"));
        assert_eq!(stream.usage().unwrap().output_tokens, 89);
        // Every chunk carries the message's id and model; the usage chunk has no choices.
        assert!(chunks
            .iter()
            .all(|c| c["id"] == "msg_014p7gG3wDgGV9EUtLvnow3U"
                && c["model"] == "claude-opus-4-1-20250805"
                && c["object"] == "chat.completion.chunk"));
        assert_eq!(chunks.last().unwrap()["choices"], json!([]));
    }
}

#[test]
fn anthropic_thinking_stream_and_error() {
    let events = [
        r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":1}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me think"}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM"}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"4"}}"#,
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        r#"{"type":"message_stop"}"#,
    ];
    let mut stream = AnthropicToOpenAiStream::new(0, false).with_model("my-alias");
    let mut chunks = Vec::new();
    for e in events {
        chunks.extend(stream.push(&parse_event(e).unwrap()));
    }
    assert!(stream.is_done());
    assert!(stream.finish().is_empty());
    let r = common::reassemble(&chunks);
    assert_eq!(r.content, "4");
    assert_eq!(r.finish_reason, None);
    assert_eq!(chunks[0]["model"], "my-alias");
    assert_eq!(
        chunks.last().unwrap(),
        &json!({"error": {"message": "Overloaded", "type": "overloaded_error", "param": null, "code": null}})
    );
}

/// An OpenAI backend's streamed tool call (the shape of OpenAI's function-calling guide)
/// becomes Anthropic's exact event sequence.
#[test]
fn openai_tool_stream_to_anthropic() {
    let chunks = [
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1","choices":[{"index":0,"delta":{"role":"assistant","content":null,"refusal":null},"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1","choices":[{"index":0,"delta":{"content":"Checking."},"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_DdmO9pD3xa9XTPNJ32zg2hcA","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\""}}]},"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"location\":\"Paris, France\"}"}}]},"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1","choices":[],"usage":{"prompt_tokens":80,"completion_tokens":17,"total_tokens":97,"prompt_tokens_details":{"cached_tokens":64}}}"#,
        "[DONE]",
    ];
    let mut stream = OpenAiToAnthropicStream::new("claude-via-gateway").with_input_tokens(75);
    let mut events = Vec::new();
    for c in chunks {
        events.extend(stream.push_sse_data(c).unwrap());
    }
    assert!(stream.finish().is_empty());
    common::check_event_grammar(&events);
    let sse: String = events.iter().map(event_to_sse).collect();
    let expected = [
        r#"{"type":"message_start","message":{"id":"chatcmpl-1","type":"message","role":"assistant","content":[],"model":"claude-via-gateway","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":75,"output_tokens":0}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        r#"{"type":"ping"}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Checking."}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"call_DdmO9pD3xa9XTPNJ32zg2hcA","name":"get_weather","input":{}}}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\""}}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"location\":\"Paris, France\"}"}}"#,
        r#"{"type":"content_block_stop","index":1}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":17,"input_tokens":16,"cache_creation_input_tokens":0,"cache_read_input_tokens":64}}"#,
        r#"{"type":"message_stop"}"#,
    ];
    let expected_sse: String = expected
        .iter()
        .map(|d| {
            let name = serde_json::from_str::<Value>(d).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned();
            format!("event: {name}\ndata: {d}\n\n")
        })
        .collect();
    assert_eq!(sse, expected_sse);
    assert_eq!(stream.usage().unwrap().prompt_tokens(), 80);
}

#[test]
fn openai_stream_edge_cases() {
    // An empty stream still makes a well-formed message.
    let mut s = OpenAiToAnthropicStream::new("m");
    let events = s.finish();
    common::check_event_grammar(&events);
    assert!(matches!(&events[1], StreamEvent::MessageDelta { delta, .. }
        if delta.stop_reason == Some(StopReason::EndTurn)));

    // An error chunk ends the stream with Anthropic's error event.
    let mut s = OpenAiToAnthropicStream::new("m");
    let events =
        s.push(&json!({"error": {"message": "upstream timed out", "type": "server_error"}}));
    assert_eq!(events.len(), 2);
    assert_eq!(
        event_to_sse(&events[1]),
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"upstream timed out\"}}\n\n"
    );
    assert!(s.is_finished() && s.finish().is_empty());

    assert!(OpenAiToAnthropicStream::new("m")
        .push_sse_data("not json")
        .is_err());
}

#[test]
fn error_shapes() {
    let statuses: Vec<(ErrorKind, u16)> = ErrorKind::ALL.iter().map(|k| (*k, k.status())).collect();
    assert_eq!(
        statuses,
        vec![
            (ErrorKind::InvalidRequest, 400),
            (ErrorKind::Authentication, 401),
            (ErrorKind::Permission, 403),
            (ErrorKind::NotFound, 404),
            (ErrorKind::RequestTooLarge, 413),
            (ErrorKind::RateLimit, 429),
            (ErrorKind::Api, 500),
            (ErrorKind::Overloaded, 529),
        ]
    );
    for k in ErrorKind::ALL {
        assert_eq!(ErrorKind::from_status(k.status()), k);
        assert_eq!(ErrorKind::from_type(k.as_str()), Some(k));
        assert_eq!(serde_json::to_value(k).unwrap(), json!(k.as_str()));
    }
    assert_eq!(error_kind_for_status(422), ErrorKind::InvalidRequest);
    assert_eq!(error_kind_for_status(503), ErrorKind::Overloaded);
    assert_eq!(error_kind_for_status(502), ErrorKind::Api);
    assert_eq!(
        anthropic_error_body(ErrorKind::RateLimit, "slow down"),
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
    );

    let (status, body) = openai_error_to_anthropic(
        401,
        br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
    );
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"type": "error", "error": {"type": "authentication_error", "message": "Incorrect API key provided"}})
    );
    assert_eq!(
        openai_error_to_anthropic(502, b"Bad Gateway").1["error"]["message"],
        "Bad Gateway"
    );

    let (status, body) = anthropic_error_to_openai(
        529,
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#,
    );
    assert_eq!(status, 503);
    assert_eq!(body["error"]["message"], "Overloaded");
    assert_eq!(body["error"]["code"], "overloaded");
    let (status, body) = anthropic_error_to_openai(400, b"<html>nope</html>");
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (400, Some("invalid_request_error"))
    );
}
