#!/usr/bin/env python3
"""llama.cpp reference figures for slmgate's local model (via llama-cpp-python).

Prints one JSON object for a GGUF file:

  decode_tps       greedy decode speed: 128 single-token evals after the chat prompt
  prefill_ms       one 64-token batch eval (best of 5, after a warm-up)
  ttft_ms          tokenize the chat prompt + eval it + pick the first token (median of 5)
  prompt_ids       the fixed chat prompt's token ids
  greedy_ids       the first 16 greedily decoded token ids after that prompt
                   (the fixture also keeps the top-5 logits of each step: greedy_top)
  tokenize         {text: ids} for a list of tricky strings (special tokens parsed)

Usage (from the repository root):

  .venv/bin/python scripts/llamacpp_ref.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf
  .venv/bin/python scripts/llamacpp_ref.py --model M.gguf --requantize q8_0   # llama.cpp on a
      Q8_0 copy of M (made with llama.cpp's own quantizer in a temporary directory)
  .venv/bin/python scripts/llamacpp_ref.py --model M.gguf --fixture out.json  # the test fixture

Install: CMAKE_ARGS="-DGGML_NATIVE=ON" .venv/bin/python -m pip install llama-cpp-python
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

# The fixed prompt of the greedy test: SmolLM2's own chat template with its default system
# message (what slmgate renders for a single user message).
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
USER = "What is the capital of France?"


def chat_prompt(user):
    return (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )


CHAT_PROMPT = chat_prompt(USER)
# More fixed chat prompts for the greedy test (listed before either implementation decoded
# them; see local-model/tests/llamacpp_parity.rs for how they are compared).
MORE_USERS = [
    "Write a haiku about the sea.",
    "What is 12 times 7?",
    "Translate 'good morning' into Spanish.",
    "Name three primary colors.",
    "Explain what a CPU does in one sentence.",
    "List the days of the week.",
    "Who wrote Romeo and Juliet?",
]
# 64 prompt tokens for the prefill measurement: the first 64 tokens of this text.
PREFILL_TEXT = "The quick brown fox jumps over the lazy dog. " * 8
GREEDY_TOKENS = 16
# Logits recorded per greedy step (the test uses them to tell near-ties from real mismatches).
TOP_K = 5
DECODE_TOKENS = 128

TRICKY = [
    "Hello world",
    " leading space and trailing space ",
    "    four spaces, then\ttab\t\tand\n\nnewlines\r\n",
    "digits 1234567890 and 3.14159 and 1,000,000",
    "unicode: café naïve Zürich Ελληνικά русский 日本語 中文 한국어",
    "emoji: 😀🚀👍🏽 👨‍👩‍👧‍👦 ❤️",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "text<|im_end|>glued<|endoftext|>",
    "code: fn main() { println!(\"{}\", x?); } // end",
    "mixed CASE and ALLCAPS and camelCaseWords",
    "punctuation!!! ??? ... --- ''' \"\"\"",
    "   ",
    "a",
    "",
]


def log(msg):
    print(msg, file=sys.stderr)


def argmax(row):
    import numpy as np

    return int(np.argmax(row))


def last_logits(llm):
    """The logits of the last evaluated token (llama-cpp-python keeps them only in the
    context unless `logits_all` is set)."""
    import numpy as np

    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))


def requantize(src, kind):
    import llama_cpp

    ftypes = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0}
    if kind not in ftypes:
        raise SystemExit(f"--requantize: unsupported {kind!r} (supported: {', '.join(ftypes)})")
    out = os.path.join(tempfile.mkdtemp(prefix="llamacpp-ref-"), f"model.{kind}.gguf")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftypes[kind]
    params.allow_requantize = True
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(src.encode(), out.encode(), params)
    if rc != 0:
        raise SystemExit(f"llama_model_quantize failed with {rc}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="GGUF file")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--requantize", help="run llama.cpp on a copy requantized to this type (q8_0)")
    ap.add_argument("--fixture", help="also write the greedy/tokenizer fixture JSON to this path")
    ap.add_argument("--skip-speed", action="store_true", help="only token ids, no timings")
    args = ap.parse_args()
    if not os.path.exists(args.model):
        raise SystemExit(f"model file not found: {args.model} (run scripts/fetch-models.sh)")
    try:
        import llama_cpp
        from llama_cpp import Llama
    except ImportError:
        raise SystemExit(
            "llama-cpp-python is not installed: "
            'CMAKE_ARGS="-DGGML_NATIVE=ON" .venv/bin/python -m pip install llama-cpp-python'
        )

    path = requantize(args.model, args.requantize) if args.requantize else args.model
    llm = Llama(
        model_path=path,
        n_ctx=2048,
        n_batch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    result = {
        "llama_cpp_python": llama_cpp.__version__,
        "model": os.path.basename(args.model),
        "requantize": args.requantize,
        "threads": args.threads,
    }

    # Token ids: the chat prompts, greedy continuations, tricky strings.
    def decode_greedy(user):
        prompt = chat_prompt(user)
        ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        llm.reset()
        llm.eval(ids)
        greedy, greedy_top = [], []
        for _ in range(GREEDY_TOKENS):
            logits = last_logits(llm)
            tok = argmax(logits)
            top = sorted(range(len(logits)), key=lambda i: -logits[i])[:TOP_K]
            greedy_top.append([[int(i), round(float(logits[i]), 4)] for i in top])
            greedy.append(tok)
            llm.eval([tok])
        return {
            "user": user,
            "prompt": prompt,
            "prompt_ids": ids,
            "greedy_ids": greedy,
            "greedy_text": llm.detokenize(greedy).decode("utf-8", "replace"),
            "greedy_top": greedy_top,
            # llama.cpp's smallest top-1 − top-2 logit gap over the steps.
            "min_margin": round(min(t[0][1] - t[1][1] for t in greedy_top), 4),
        }

    more = [decode_greedy(u) for u in MORE_USERS]
    main_chat = decode_greedy(USER)
    prompt_ids, greedy, greedy_top = (
        main_chat["prompt_ids"],
        main_chat["greedy_ids"],
        main_chat["greedy_top"],
    )
    result["prompt"] = CHAT_PROMPT
    result["prompt_ids"] = prompt_ids
    result["greedy_ids"] = greedy
    result["greedy_text"] = llm.detokenize(greedy).decode("utf-8", "replace")
    result["tokenize"] = [
        {"text": t, "ids": llm.tokenize(t.encode(), add_bos=False, special=True)} for t in TRICKY
    ]

    if not args.skip_speed:
        ids64 = llm.tokenize(PREFILL_TEXT.encode(), add_bos=False, special=False)[:64]
        assert len(ids64) == 64, len(ids64)
        best = float("inf")
        for i in range(6):
            llm.reset()
            t = time.perf_counter()
            llm.eval(ids64)
            dt = time.perf_counter() - t
            if i > 0:
                best = min(best, dt)
        result["prefill_ms"] = best * 1e3

        ttfts = []
        for _ in range(5):
            llm.reset()
            t = time.perf_counter()
            ids = llm.tokenize(CHAT_PROMPT.encode(), add_bos=False, special=True)
            llm.eval(ids)
            argmax(last_logits(llm))
            ttfts.append(time.perf_counter() - t)
        result["ttft_ms"] = statistics.median(ttfts) * 1e3

        best_tps = 0.0
        for _ in range(2):
            llm.reset()
            llm.eval(prompt_ids)
            tok = argmax(last_logits(llm))
            t = time.perf_counter()
            for _ in range(DECODE_TOKENS):
                llm.eval([tok])
                tok = argmax(last_logits(llm))
            best_tps = max(best_tps, DECODE_TOKENS / (time.perf_counter() - t))
        result["decode_tps"] = best_tps

    if args.fixture:
        fixture = {
            "command": " ".join([".venv/bin/python", "scripts/llamacpp_ref.py"] + sys.argv[1:]),
            "llama_cpp_python": result["llama_cpp_python"],
            "model": result["model"],
            "prompt": CHAT_PROMPT,
            "prompt_ids": prompt_ids,
            "greedy_ids": greedy,
            "greedy_text": result["greedy_text"],
            "greedy_top": greedy_top,
            "tokenize": result["tokenize"],
            "more_chats": more,
        }
        with open(args.fixture, "w", encoding="utf-8") as f:
            json.dump(fixture, f, ensure_ascii=False, indent=1)
            f.write("\n")
        log(f"wrote {args.fixture}")
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
