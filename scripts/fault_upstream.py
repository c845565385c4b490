#!/usr/bin/env python3
"""A fake OpenAI-compatible upstream that fails a share of requests in 14 ways.

Used by scripts/fault-load.sh (standard library only). Paths:

- POST /v1/chat/completions: fails with probability --fail (default 0.2), picking one of
  FAULTS uniformly; otherwise answers normally (JSON, or SSE when "stream": true).
- POST /spare/v1/chat/completions: always answers normally (a healthy fallback).

Every failure body quotes the Authorization header it received, as careless upstreams do,
so a leak to the gateway's clients is easy to spot. Writes its port to --port-file.
"""

import argparse
import json
import os
import random
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = [
    "500_echo",  # 500 whose body quotes the credential
    "502_text",  # 502 with a plain-text body
    "503_retry",  # 503 with Retry-After: 1
    "429",  # 429 with Retry-After: 0
    "401_echo",  # 401 whose body quotes the credential
    "reset",  # connection closed without an answer
    "hang",  # answers after 4 s (beyond the backend timeout)
    "slow",  # answers correctly after 0.5 s
    "garbled",  # 200, JSON cut off mid-object
    "html",  # 200, an HTML page
    "short_body",  # 200, Content-Length larger than the body sent, then close
    "error_200",  # 200 with {"error": ...} (a stream: an error event before content)
    "cut",  # stream: content, then the connection drops; JSON: like short_body
    "noisy",  # stream: foreign events, non-JSON lines, an invalid UTF-8 byte; JSON: invalid UTF-8
]

REPLY = ["Hello", " from the", " fault upstream."]
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
COUNTS = {}
LOCK = threading.Lock()


def completion(model):
    return json.dumps(
        {
            "id": "chatcmpl-fault",
            "object": "chat.completion",
            "created": 1700000000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(REPLY)},
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
        }
    ).encode()


def chunk(model, delta, finish=None, usage=False):
    v = {
        "id": "chatcmpl-fault",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        v["usage"] = USAGE
    return b"data: " + json.dumps(v).encode() + b"\n\n"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_body(self, status, body, ctype="application/json", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        try:
            req = json.loads(self.rfile.read(n) or b"{}")
        except ValueError:
            req = {}
        model = req.get("model", "m")
        stream = bool(req.get("stream"))
        auth = self.headers.get("Authorization", "")
        fault = None
        if not self.path.startswith("/spare/") and random.random() < self.server.fail:
            fault = random.choice(FAULTS)
        with LOCK:
            COUNTS[fault or "ok"] = COUNTS.get(fault or "ok", 0) + 1
        echo = json.dumps({"error": {"message": f"bad credential {auth}", "type": "x", "code": None}}).encode()
        if fault == "500_echo":
            return self.send_body(500, echo)
        if fault == "502_text":
            return self.send_body(502, f"upstream proxy error; auth={auth}".encode(), "text/plain")
        if fault == "503_retry":
            return self.send_body(503, echo, headers=[("Retry-After", "1")])
        if fault == "429":
            return self.send_body(429, echo, headers=[("Retry-After", "0")])
        if fault == "401_echo":
            return self.send_body(401, echo)
        if fault == "reset":
            self.close_connection = True
            return
        if fault == "hang":
            time.sleep(4)
        if fault == "slow":
            time.sleep(0.5)
        if fault == "garbled":
            return self.send_body(200, b'{"id":"x","choices":[{"index":0,"message":{"role":"assi')
        if fault == "html":
            return self.send_body(200, b"<html><body>oops</body></html>", "text/html")
        if fault in ("short_body",) or (fault == "cut" and not stream):
            body = completion(model)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) + 100))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        if fault == "error_200" and not stream:
            return self.send_body(200, echo)
        if fault == "noisy" and not stream:
            return self.send_body(200, completion(model).replace(b"fault", b"fa\xffult"))
        if not stream:
            return self.send_body(200, completion(model))
        # Streams: close-delimited, so a cut is just a close.
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        w = self.wfile
        w.write(chunk(model, {"role": "assistant", "content": ""}))
        if fault == "error_200":
            w.write(b"data: " + echo + b"\n\n")
            return
        if fault == "noisy":
            w.write(b'event: ping\ndata: {"type":"ping"}\n\n: comment\n\ndata: not json\n\n')
        for i, piece in enumerate(REPLY):
            data = chunk(model, {"content": piece})
            if fault == "noisy" and i == 1:
                data = data.replace(b"the", b"t\xffhe")
            w.write(data)
            w.flush()
            if fault == "cut" and i == 1:
                return
        w.write(chunk(model, {}, "stop"))
        if (req.get("stream_options") or {}).get("include_usage"):
            w.write(chunk(model, None, usage=True))
        w.write(b"data: [DONE]\n\n")


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # The gateway gave up on a hanging answer and closed the connection: expected here.
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--fail", type=float, default=0.2)
    ap.add_argument("--counts-file")
    args = ap.parse_args()
    srv = Server(("127.0.0.1", 0), Handler)
    srv.fail = args.fail
    with open(args.port_file, "w") as f:
        f.write(str(srv.server_address[1]))

    def stop(*_):
        if args.counts_file:
            with LOCK, open(args.counts_file, "w") as f:
                json.dump(COUNTS, f, sort_keys=True)
        os._exit(0)

    # SIGTERM, not SIGINT: a background job of a script ignores SIGINT.
    signal.signal(signal.SIGTERM, stop)
    srv.serve_forever()


if __name__ == "__main__":
    main()
