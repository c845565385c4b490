#!/usr/bin/env python3
"""Clients for scripts/fault-load.sh (standard library only).

- `load`: N chat requests from C threads (a share of them streamed) against the gateway;
  classifies every answer as well-formed or not and checks none leaks the upstream secret.
- `slow`: opens N connections that send half a request head and go quiet, checks /healthz
  keeps answering, and counts how many the gateway closes within a wait.
- `rows`: counts the usage rows of a SQLite database.
"""

import argparse
import http.client
import json
import random
import select
import socket
import sqlite3
import sys
import threading
import time
from collections import Counter


def classify(status, ctype, body, stream):
    """'ok', 'ok_incomplete' (a stream ended by a stream_incomplete error event),
    'error' (an OpenAI-shaped error) or 'malformed'."""
    if status == 200 and stream:
        events = [e for e in body.split(b"\n\n") if e.strip()]
        if not events or events[-1].strip() != b"data: [DONE]":
            return "malformed"
        incomplete = False
        for e in events[:-1]:
            if not e.startswith(b"data: "):
                return "malformed"
            try:
                v = json.loads(e[6:])
            except ValueError:
                return "malformed"
            if "error" in v:
                incomplete = v["error"].get("code") == "stream_incomplete"
                if not incomplete:
                    return "malformed"
        return "ok_incomplete" if incomplete else "ok"
    try:
        v = json.loads(body)
    except ValueError:
        return "malformed"
    if status == 200:
        ok = isinstance(v.get("choices"), list) and v["choices"] and v["choices"][0]["message"]["content"]
        return "ok" if ok else "malformed"
    e = v.get("error") if isinstance(v, dict) else None
    if isinstance(e, dict) and isinstance(e.get("message"), str) and "type" in e:
        return "error"
    return "malformed"


def load(args):
    host, port = args.addr.split(":")
    todo = list(range(args.requests))
    lock = threading.Lock()
    results = Counter()
    statuses = Counter()
    leaks = 0
    latencies = []
    samples = []

    def worker():
        nonlocal leaks
        conn = None
        while True:
            with lock:
                if not todo:
                    break
                i = todo.pop()
            stream = random.random() < args.stream_share
            body = json.dumps(
                {"model": "remote", "messages": [{"role": "user", "content": f"q{i}"}], "stream": stream}
            )
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, int(port), timeout=60)
                conn.request(
                    "POST",
                    "/v1/chat/completions",
                    body,
                    {"Content-Type": "application/json", "x-request-id": f"fl-{i}"},
                )
                r = conn.getresponse()
                data = r.read()
                kind = classify(r.status, r.getheader("content-type", ""), data, stream)
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                kind, data = "no_answer", b""
                r = None
                if conn is not None:
                    conn.close()
                conn = None
            dt = time.monotonic() - t0
            with lock:
                results[kind] += 1
                statuses[r.status if r else 0] += 1
                latencies.append(dt)
                if args.secret.encode() in data:
                    leaks += 1
                if kind == "malformed" and len(samples) < 5:
                    samples.append((stream, r.status if r else 0, data[:600]))

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    pct = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000
    answered = args.requests - results["no_answer"]
    well_formed = results["ok"] + results["ok_incomplete"] + results["error"]
    print(f"requests:        {args.requests} from {args.clients} clients in {elapsed:.1f} s "
          f"({args.requests / elapsed:.0f} req/s), {args.stream_share:.0%} streamed")
    print(f"answered:        {answered}; well-formed {well_formed}, malformed {results['malformed']}")
    print(f"  ok {results['ok']}, stream_incomplete {results['ok_incomplete']}, "
          f"errors {results['error']}; statuses {dict(sorted(statuses.items()))}")
    print(f"latency:         p50 {pct(0.5):.0f} ms, p99 {pct(0.99):.0f} ms")
    print(f"secret leaks:    {leaks}")
    for stream, status, data in samples:
        print(f"  malformed (stream={stream}, status {status}): {data!r}")
    with open(args.out, "w") as f:
        json.dump({"answered": answered, "well_formed": well_formed, "malformed": results["malformed"],
                   "leaks": leaks, "statuses": statuses}, f)


def healthz(host, port):
    t0 = time.monotonic()
    try:
        c = http.client.HTTPConnection(host, int(port), timeout=5)
        c.request("GET", "/healthz")
        ok = c.getresponse().status == 200
        c.close()
    except OSError:
        ok = False
    return ok, (time.monotonic() - t0) * 1000


def slow(args):
    host, port = args.addr.split(":")
    socks = []
    for _ in range(args.connections):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Slow: ")
        s.setblocking(False)
        socks.append(s)
    print(f"slow clients:    {len(socks)} connections holding half-sent request heads")
    open_ = set(socks)
    deadline = time.monotonic() + args.wait
    health = []
    while open_ and time.monotonic() < deadline:
        health.append(healthz(host, port))
        readable, _, _ = select.select(list(open_), [], [], 0.5)
        for s in readable:
            try:
                if s.recv(4096) == b"":
                    open_.discard(s)
            except OSError:
                open_.discard(s)
    closed = len(socks) - len(open_)
    oks = sum(1 for ok, _ in health if ok)
    worst = max((ms for _, ms in health), default=0)
    print(f"  closed by the gateway within {args.wait:.0f} s: {closed} of {len(socks)}; "
          f"/healthz meanwhile {oks}/{len(health)} ok, slowest {worst:.0f} ms")
    for s in socks:
        s.close()


def rows(args):
    db = sqlite3.connect(args.db)
    total = db.execute("select count(*) from usage_records").fetchone()[0]
    by = db.execute(
        "select status, coalesce(error_class, ''), count(*) from usage_records group by 1, 2 order by 1, 2"
    ).fetchall()
    distinct = db.execute("select count(distinct request_id) from usage_records").fetchone()[0]
    print(f"usage rows:      {total} ({distinct} distinct request ids)")
    print("  " + ", ".join(f"{s} {c or '-'}: {n}" for s, c, n in by))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("load")
    a.add_argument("--addr", required=True)
    a.add_argument("--requests", type=int, default=5000)
    a.add_argument("--clients", type=int, default=24)
    a.add_argument("--stream-share", type=float, default=0.3)
    a.add_argument("--secret", required=True)
    a.add_argument("--out", required=True)
    s = sub.add_parser("slow")
    s.add_argument("--addr", required=True)
    s.add_argument("--connections", type=int, default=1000)
    s.add_argument("--wait", type=float, default=25)
    r = sub.add_parser("rows")
    r.add_argument("--db", required=True)
    args = ap.parse_args()
    {"load": load, "slow": slow, "rows": rows}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
