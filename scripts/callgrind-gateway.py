#!/usr/bin/env python3
"""Instructions per request of the release gateway under callgrind (deterministic, unlike
req/s on a shared VM): the gateway-load bench's `plain` and `policies` configurations, the
bench's keyed bodies (one in ten with an e-mail address), one connection, a Python mock.

    cargo build --release --bin slmgate
    python3 scripts/callgrind-gateway.py                 # plain and policies
    python3 scripts/callgrind-gateway.py policies --requests 400 --keep

Prints instructions per measured request for each configuration. `--keep` leaves the
callgrind output files (`target/callgrind/<name>.out`) for `callgrind_annotate
--inclusive=yes`. Counters are zeroed after the warm-up (`callgrind_control -z`) and dumped
after the measured requests (`callgrind_control -d`). Needs valgrind (Debian: `valgrind`).
"""

import argparse
import http.client
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCH_KEYS = 100


class Mock(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 (http.server's naming)
        n = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(n) or b"{}")
        out = json.dumps(
            {
                "id": "chatcmpl-mock",
                "object": "chat.completion",
                "created": 1700000000,
                "model": body.get("model", ""),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Paris is the capital of France."},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28},
            },
            separators=(",", ":"),
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keys_yaml():
    y = ["teams:"]
    y += [f"  - {{ name: team-{t}, budget: {{ daily_usd: 100000 }} }}" for t in range(10)]
    y.append("keys:")
    for k in range(BENCH_KEYS):
        y += [
            f"  - name: key-{k}",
            f"    key: bench-key-{k}",
            f"    team: team-{k % 10}",
            f"    tags: [{'free' if k % 2 == 0 else 'paid'}]",
            "    budget: { daily_usd: 100000 }",
            "    rate_limit: { requests_per_minute: 10000000, tokens_per_minute: 1000000000 }",
        ]
    return "\n".join(y) + "\n"


def config(name, port, mock_port, policies_file):
    base = (
        f"listen: 127.0.0.1:{port}\nlimits:\n  max_concurrent_requests: 4096\n"
        f"backends:\n  - name: mock\n    kind: openai\n    base_url: http://127.0.0.1:{mock_port}/v1\n"
        "    api_key: sk-bench\nmodels:\n  - name: remote\n    backend: mock\n    model: mock-model\n"
    )
    if name == "plain":
        return base
    return base + pathlib.Path(policies_file).read_text() + "\n" + keys_yaml()


def body(conn, n):
    pii = " My e-mail is jane.doe@example.com." if n % 10 == 0 else ""
    return json.dumps(
        {
            "model": "remote",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": f"Question {n} from client {conn}: what is the capital of France?{pii}"},
            ],
            "temperature": 0,
        },
        separators=(",", ":"),
    )


SEQ = [0]


def send(c, count):
    for _ in range(count):
        n = SEQ[0]
        SEQ[0] += 1
        conn_no = n % BENCH_KEYS
        c.request(
            "POST",
            "/v1/chat/completions",
            body=body(conn_no, n),
            headers={"content-type": "application/json", "authorization": f"Bearer bench-key-{conn_no}"},
        )
        r = c.getresponse()
        r.read()
        if r.status != 200:
            sys.exit(f"request {n}: HTTP {r.status}")


def measure(name, args, mock_port, outdir):
    port = free_port()
    cfg = outdir / f"{name}.yaml"
    cfg.write_text(config(name, port, mock_port, args.policies))
    out = outdir / f"{name}.out"
    proc = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            *(["--cache-sim=yes"] if args.cache_sim else []),
            str(args.bin),
            "serve",
            "--config",
            str(cfg),
        ],
        env={**os.environ, "SLMGATE_LOG": "warn", "SLMGATE_DATA_DIR": str(outdir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                c.request("GET", "/healthz")
                c.getresponse().read()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    sys.exit(f"{name}: the gateway did not start")
                time.sleep(0.5)
        send(c, args.warmup)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
        send(c, args.requests)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
    finally:
        proc.terminate()
        proc.wait()
    dumps = sorted(outdir.glob(f"{name}.out*"), key=lambda p: p.stat().st_mtime)
    total = 0
    for d in dumps:
        if d == out:
            continue  # the final dump at exit (after the measured dump)
        m = re.search(rb"^summary: (\d+)", d.read_bytes(), re.M) or re.search(
            rb"^totals: (\d+)", d.read_bytes(), re.M
        )
        if m:
            total = int(m.group(1))
            if args.keep:
                shutil.copy(d, outdir / f"{name}.measured")
    return total / args.requests


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("configs", nargs="*", default=["plain", "policies"], help="plain and/or policies")
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--policies", default=str(ROOT / "benches/configs/policies.yaml"))
    p.add_argument("--bin", default=str(ROOT / "target/release/slmgate"))
    p.add_argument("--keep", action="store_true", help="keep target/callgrind/<name>.measured")
    p.add_argument("--cache-sim", action="store_true", help="also simulate caches (misses per function)")
    args = p.parse_args()
    unknown = set(args.configs) - {"plain", "policies"}
    if unknown:
        p.error(f"unknown configuration(s) {sorted(unknown)}: plain or policies")
    if not shutil.which("valgrind"):
        sys.exit("needs valgrind (apt-get install valgrind)")
    outdir = ROOT / "target/callgrind"
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Mock)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    results = {}
    for name in args.configs:
        results[name] = measure(name, args, srv.server_address[1], outdir)
        print(f"{name}: {results[name]:,.0f} instructions per request", flush=True)
    if "plain" in results:
        for name, v in results.items():
            if name != "plain":
                print(f"{name}: {v / results['plain']:.2f}x plain")


if __name__ == "__main__":
    main()
