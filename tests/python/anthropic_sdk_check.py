"""Drives slmgate's `/v1/messages` with the official `anthropic` Python SDK, unmodified.

Usage: python3 -P anthropic_sdk_check.py BASE_URL API_KEY MODEL TOOLS_MODEL [EXPECTED_TEXT]
(`-P`, from outside the workspace root: its `anthropic/` crate folder would shadow the SDK.)
TOOLS_MODEL must call the first tool it is given, then answer the tool result with text.
Exits non-zero (with a message) on the first mismatch.
"""
import sys

import anthropic

base_url, api_key, model, tools_model = sys.argv[1:5]
expected = sys.argv[5] if len(sys.argv) > 5 else None
client = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=60)

# non-streaming
msg = client.messages.create(
    model=model,
    max_tokens=64,
    system="Be brief.",
    messages=[{"role": "user", "content": "Say hello"}],
)
assert msg.type == "message" and msg.role == "assistant", msg
assert msg.content and msg.content[0].type == "text", msg
text = msg.content[0].text
if expected is not None:
    assert text == expected, f"{text!r} != {expected!r}"
assert msg.stop_reason == "end_turn", msg.stop_reason
assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0, msg.usage

# streaming, with the helper that checks the event sequence
with client.messages.stream(
    model=model,
    max_tokens=64,
    messages=[{"role": "user", "content": "Say hello"}],
) as stream:
    streamed = "".join(stream.text_stream)
    final = stream.get_final_message()
assert streamed, "empty stream"
if expected is not None:
    assert streamed == expected, f"{streamed!r} != {expected!r}"
assert final.content[0].text == streamed, final
assert final.stop_reason == "end_turn", final.stop_reason
assert final.usage.output_tokens > 0, final.usage

# raw events with stream=True
names = [event.type for event in client.messages.create(
    model=model,
    max_tokens=64,
    messages=[{"role": "user", "content": "Say hello"}],
    stream=True,
)]
assert names[0] == "message_start" and names[-1] == "message_stop", names
assert names[-2] == "message_delta", names

# tools: a tool_use answer, then a tool_result turn
tools = [{
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]
question = {"role": "user", "content": "What is the weather in Paris?"}
msg = client.messages.create(model=tools_model, max_tokens=64, tools=tools, messages=[question])
assert msg.stop_reason == "tool_use", msg
uses = [b for b in msg.content if b.type == "tool_use"]
assert len(uses) == 1 and uses[0].name == "get_weather", msg.content
assert uses[0].input == {"city": "Paris"}, uses[0].input

answer = client.messages.create(
    model=tools_model,
    max_tokens=64,
    tools=tools,
    messages=[
        question,
        {"role": "assistant", "content": msg.content},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny, 21 C"},
        ]},
    ],
)
assert answer.stop_reason == "end_turn", answer
assert answer.content[0].text == "Tool said: sunny, 21 C", answer.content

# the same tool call, streamed: the helper assembles the input from input_json_delta
with client.messages.stream(model=tools_model, max_tokens=64, tools=tools, messages=[question]) as stream:
    final = stream.get_final_message()
assert final.stop_reason == "tool_use", final
streamed_uses = [b for b in final.content if b.type == "tool_use"]
assert streamed_uses and streamed_uses[0].input == {"city": "Paris"}, final.content

# token counting (Claude Code calls it)
count = client.messages.count_tokens(model=model, messages=[question], tools=tools)
assert count.input_tokens > 0, count

# errors: the SDK's own exception classes
try:
    client.messages.create(model="no-such-model", max_tokens=8, messages=[question])
    raise AssertionError("unknown model accepted")
except anthropic.NotFoundError as e:
    assert e.body["error"]["type"] == "not_found_error", e.body
bad = anthropic.Anthropic(base_url=base_url, api_key="sk-wrong", max_retries=0, timeout=60)
try:
    bad.messages.create(model=model, max_tokens=8, messages=[question])
    raise AssertionError("wrong key accepted")
except anthropic.AuthenticationError:
    pass

print(f"anthropic SDK {anthropic.__version__}: create, stream, tools, count_tokens, errors OK")
