#!/usr/bin/env bash
# The local-model benchmark: slmgate's generator vs llama.cpp on the same GGUF, in one run.
#
#   scripts/bench-local.sh                      # every quantization (q8_0, q4k, keep)
#   BENCH_QUANTS=keep scripts/bench-local.sh    # extra env vars: see benches/local_model.rs
#
# Installs llama-cpp-python (the reference; compiles llama.cpp for this CPU, several minutes
# the first time) into .venv if it is missing, fetches the model files if needed, then runs
# `cargo bench --bench local_model`. Run it on an otherwise idle machine: it compares
# throughput figures.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
  echo "installing llama-cpp-python into .venv (builds llama.cpp with -DGGML_NATIVE=ON)…" >&2
  CMAKE_ARGS="-DGGML_NATIVE=ON" .venv/bin/python -m pip install --disable-pip-version-check \
    "llama-cpp-python==0.3.36"
fi
if [ ! -f models/SmolLM2-135M-Instruct.Q4_1.gguf ] && [ -z "${SLMGATE_GGUF:-}" ]; then
  scripts/fetch-models.sh
fi
export SLMGATE_PYTHON="${SLMGATE_PYTHON:-$PWD/.venv/bin/python}"
echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exec cargo bench --bench local_model "$@"
