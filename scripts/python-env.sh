#!/usr/bin/env bash
# Creates .venv with the Python packages the tests use (the official openai and anthropic
# SDKs, Playwright).
# Idempotent. Installs Debian's python3-venv when the venv module is missing.
# `-P`: the checks run from the workspace root, whose `openai/` and `anthropic/` crate folders
# must not import.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  if ! python3 -m venv .venv 2>/dev/null; then
    echo "python3 venv module missing; installing python3-venv" >&2
    rm -rf .venv
    if command -v apt-get >/dev/null; then
      SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
      $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv >/dev/null
    fi
    python3 -m venv .venv
  fi
fi
if ! .venv/bin/python -P -c "import openai" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "openai>=1.40,<3"
fi
.venv/bin/python -P -c "import openai; print('openai SDK', openai.__version__)"
if ! .venv/bin/python -P -c "import anthropic" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "anthropic>=0.40,<1"
fi
.venv/bin/python -P -c "import anthropic; print('anthropic SDK', anthropic.__version__)"
# Playwright drives Debian's chromium (scripts/services.sh installs it) in the dashboard's
# browser test; only the Python package is needed, never a browser download.
if ! .venv/bin/python -P -c "import playwright" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "playwright>=1.40,<2"
fi
.venv/bin/python -P -c "from importlib.metadata import version; print('playwright', version('playwright'))"
