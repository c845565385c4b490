"""Drives slmgate with the official `openai` Python SDK, unmodified.

Usage: python3 openai_sdk_check.py BASE_URL API_KEY MODEL [EXPECTED_TEXT]
Exits non-zero (with a message) on the first mismatch.
"""
import os
import sys

import openai

base_url, api_key, model = sys.argv[1], sys.argv[2], sys.argv[3]
expected = sys.argv[4] if len(sys.argv) > 4 else None
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=60)

# models
ids = [m.id for m in client.models.list()]
assert model in ids, f"{model} not in {ids}"

# non-streaming chat
resp = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Say hello"}],
    max_tokens=16,
    temperature=0,
)
text = resp.choices[0].message.content
assert isinstance(text, str) and text, resp
if expected is not None:
    assert text == expected, f"{text!r} != {expected!r}"
assert resp.usage is not None and resp.usage.total_tokens > 0, resp.usage

# streaming chat
parts = []
with client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Say hello"}],
    max_tokens=16,
    temperature=0,
    stream=True,
) as stream:
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
streamed = "".join(parts)
assert streamed, "empty stream"
if expected is not None:
    assert streamed == expected, f"{streamed!r} != {expected!r}"

# streaming with usage requested
usage = None
for chunk in client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Say hello"}],
    max_tokens=16,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
):
    if chunk.usage is not None:
        usage = chunk.usage
assert usage is not None and usage.completion_tokens > 0, "no usage chunk"

# errors surface as the SDK's typed exceptions
try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    raise AssertionError("unknown model accepted")
except openai.NotFoundError as e:
    assert e.status_code == 404
bad = openai.OpenAI(base_url=base_url, api_key="wrong-key", max_retries=0)
if api_key != "unused":
    try:
        bad.models.list()
        raise AssertionError("bad key accepted")
    except openai.AuthenticationError as e:
        assert e.status_code == 401

# embeddings (the SDK asks for base64 by default and decodes it)
embed_model = os.environ.get("EMBED_MODEL")
if embed_model:
    e = client.embeddings.create(model=embed_model, input=["hello world", "the cat sat"])
    assert len(e.data) == 2 and len(e.data[0].embedding) > 0, e
    norm = sum(x * x for x in e.data[0].embedding) ** 0.5
    assert abs(norm - 1.0) < 1e-3, norm
    f = client.embeddings.create(model=embed_model, input="hello world", encoding_format="float")
    assert max(abs(a - b) for a, b in zip(f.data[0].embedding, e.data[0].embedding)) < 1e-6
    assert e.usage.prompt_tokens > 0

print(f"openai SDK {openai.__version__}: {model}: models, chat, stream, usage, errors"
      + (", embeddings" if embed_model else "") + " ok")
