#!/usr/bin/env bash
# Sets everything up and runs the gateway on its embedded default config:
# fetches the default model files (pip, sha256-checked), builds the release binary, serves.
#
#   scripts/run.sh                    # http://127.0.0.1:8080
#   OPENAI_API_KEY=sk-... scripts/run.sh   # also enables the `remote` backend
#   scripts/run.sh --listen 0.0.0.0:8080   # extra args go to `slmgate serve`
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x scripts/fetch-models.sh ]; then
  scripts/fetch-models.sh
fi
cargo build --release --bin slmgate
exec target/release/slmgate serve "$@"
