#!/usr/bin/env bash
# Fault-injection and slow-client run against the release binary, as an operator would try
# it (issue 22). Everything runs on loopback and stops by itself:
#
#   1. builds target/release/slmgate (skip with SKIP_BUILD=1);
#   2. starts scripts/fault_upstream.py, a fake upstream failing FAIL (0.2) of requests in
#      14 ways (5xx and 401 quoting the credential, 429, resets, hangs, slow answers,
#      garbled/HTML/short 200s, error events, cut and noisy streams), plus a healthy
#      fallback path on the same server;
#   3. starts the gateway with usage rows in SQLite; `remote` = the flaky backend with the
#      healthy one as fallback;
#   4. sends REQUESTS (5000) chat requests from CLIENTS (24) threads, STREAM_SHARE (0.3)
#      streamed, and classifies every answer (well-formed: a completion, a stream ending in
#      [DONE], or an OpenAI-shaped error);
#   5. holds SLOW (1000) connections with half-sent request heads while polling /healthz;
#   6. stops the gateway (SIGTERM) and compares usage rows with the requests answered.
#
# Prints the figures and the gateway's RSS before and after. Usage: scripts/fault-load.sh
set -euo pipefail

cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-5000}
CLIENTS=${CLIENTS:-24}
STREAM_SHARE=${STREAM_SHARE:-0.3}
SLOW=${SLOW:-1000}
FAIL=${FAIL:-0.2}
BIN=${BIN:-target/release/slmgate}
SECRET=sk-fault-secret-do-not-leak

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    cargo build --release --bin slmgate
fi

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

rss() { awk '/VmRSS/ {printf "%.0f MB", $2 / 1024}' "/proc/$1/status"; }

python3 scripts/fault_upstream.py --port-file "$work/up.port" --fail "$FAIL" \
    --counts-file "$work/faults.json" &
up_pid=$!
pids+=("$up_pid")
for _ in $(seq 100); do [[ -s "$work/up.port" ]] && break; sleep 0.1; done
up_port=$(cat "$work/up.port")
gw_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

cat > "$work/slmgate.yaml" <<EOF
listen: 127.0.0.1:$gw_port
limits:
  shutdown_timeout: 10s
backends:
  - name: flaky
    kind: openai
    base_url: http://127.0.0.1:$up_port/v1
    api_key: $SECRET
    timeout: 2s
    max_retries: 2
    retry_backoff: 50ms
    max_retry_backoff: 2s
    circuit_breaker: {enabled: ${BREAKER:-true}}
  - name: spare
    kind: openai
    base_url: http://127.0.0.1:$up_port/spare/v1
    api_key: $SECRET
    timeout: 5s
models:
  - name: remote
    backend: flaky
    model: gpt-flaky
    fallbacks:
      - backend: spare
        model: gpt-spare
usage:
  database: sqlite://$work/usage.db
EOF

SLMGATE_LOG=warn "$BIN" serve --config "$work/slmgate.yaml" > "$work/gateway.log" 2>&1 &
gw_pid=$!
pids+=("$gw_pid")
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$gw_port/healthz" > /dev/null 2>&1 && break
    sleep 0.1
done

echo "== fault load: $REQUESTS requests, $CLIENTS clients, upstream failing $FAIL in 14 ways"
echo "gateway RSS:     $(rss "$gw_pid") at start"
python3 scripts/fault_load.py load --addr "127.0.0.1:$gw_port" --requests "$REQUESTS" \
    --clients "$CLIENTS" --stream-share "$STREAM_SHARE" --secret "$SECRET" --out "$work/load.json"
echo "gateway RSS:     $(rss "$gw_pid") after the load"
curl -s "http://127.0.0.1:$gw_port/admin/status" | python3 -c '
import json, sys
for b in json.load(sys.stdin)["backends"]:
    c = b.get("circuit", {})
    print("circuit %-8s %s, ejections %s" % (b["name"] + ":", c.get("state"), c.get("ejections")))'

echo "== slow clients"
python3 scripts/fault_load.py slow --addr "127.0.0.1:$gw_port" --connections "$SLOW" --wait 25
echo "gateway RSS:     $(rss "$gw_pid") after the slow clients"
if curl -fs "http://127.0.0.1:$gw_port/healthz" > /dev/null; then
    echo "gateway:         alive"
fi

stop_start=$(date +%s.%N)
kill -TERM "$gw_pid"
wait "$gw_pid" || true
printf 'shutdown:        %.1f s (SIGTERM to exit)\n' "$(echo "$(date +%s.%N) - $stop_start" | bc)"
kill -TERM "$up_pid"
wait "$up_pid" || true
echo "== usage records"
answered=$(python3 -c "import json; print(json.load(open('$work/load.json'))['answered'])")
echo "answers:         $answered"
python3 scripts/fault_load.py rows --db "$work/usage.db"
echo "upstream faults: $(cat "$work/faults.json" 2>/dev/null || echo '?')"
grep -E "circuit (open|closed)" "$work/gateway.log" | sed -E 's/\x1b\[[0-9;]*m//g; s/^[^ ]+ +//' | head -5 || true
if grep -q "$SECRET" "$work/gateway.log"; then
    echo "the gateway's log contains the upstream secret!"
fi
