#!/usr/bin/env bash
# Runs slmgate's whole test suite from a fresh checkout: installs what the tests need
# (a Python venv with the official `openai` SDK, the real model files), then formatting,
# lints, and every unit and integration test of the workspace.
#
#   scripts/test.sh              # everything
#   scripts/test.sh -- NAME      # extra args go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# 1. Python side: the official openai SDK drives the gateway in tests/it/openai_sdk.rs.
log "python venv with the openai SDK (.venv)"
scripts/python-env.sh
export SLMGATE_PYTHON="$PWD/.venv/bin/python"
# The dashboard's browser test must run here (not be skipped): services.sh installs Chromium.
export SLMGATE_REQUIRE_BROWSER=1

# 2. Real model weights for the real-model tests (skipped when absent; present in CI).
if [ -x scripts/fetch-models.sh ]; then
  log "model files (scripts/fetch-models.sh)"
  scripts/fetch-models.sh
fi

# 3. Services the tests talk to (PostgreSQL; Chromium for the dashboard's browser test).
log "services (scripts/services.sh)"
scripts/services.sh

# 4. Formatting and lints.
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# 5. Tests.
log "cargo test"
extra=()
if [ "${1:-}" = "--" ]; then shift; extra=("$@"); fi
cargo test --workspace --all-targets "${extra[@]}"
# Doc tests (the `//!` examples) are not covered by --all-targets.
cargo test --workspace --doc

# 6. Container and Kubernetes files (tools from PyPI; a tool that cannot install is skipped,
# an invalid file fails). Uses the debug binary the tests built for `slmgate config check`.
log "deploy files (scripts/check-deploy.sh)"
scripts/check-deploy.sh
