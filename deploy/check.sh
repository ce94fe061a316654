#!/usr/bin/env bash
# Validates everything under deploy/:
#   - Prometheus rules: syntax (promtool check rules) and unit tests
#     (promtool test rules prometheus/rules_test.yml)
#   - Prometheus example config, including the rule files it references
#   - Alertmanager config (amtool check-config) and its routing tree
#     (amtool config routes test: which receiver an alert ends up at)
#   - Grafana dashboard: valid JSON (python3 -m json.tool), then structure
#     (unique panel ids, defined variables, data source on every panel) and
#     every PromQL expression in it parsed by promtool.
#
# Usage: bash deploy/check.sh     (from anywhere; CI calls it)
# Installs promtool/amtool from Debian's packages if they are missing
# (`prometheus` ships promtool, `prometheus-alertmanager` ships amtool).
# Runs every check, prints each one, and exits non-zero if any failed.
set -euo pipefail

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$DEPLOY_DIR"

# ---------------------------------------------------------------- tools
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if ((${#missing[@]})); then
    echo "==> installing ${missing[*]} (apt-get)"
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update
    # No recommends: we only need the binaries, not node-exporter & co.
    "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi
echo "==> tools"
promtool --version 2>&1 | head -n 1
amtool --version 2>&1 | head -n 1
python3 --version

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

passed=0
failed=0
failed_names=()
# check NAME COMMAND...: runs one check, prints its output and the outcome.
check() {
    local name="$1"
    shift
    echo
    echo "==> $name"
    echo "    \$ $*"
    if "$@"; then
        echo "    ok: $name"
        passed=$((passed + 1))
    else
        echo "    FAILED: $name"
        failed=$((failed + 1))
        failed_names+=("$name")
    fi
}

# ---------------------------------------------------------------- prometheus
check "promtool check rules" \
    promtool check rules --lint=all --lint-fatal prometheus/rules.yml
check "promtool test rules" \
    promtool test rules prometheus/rules_test.yml
check "promtool check config" \
    promtool check config prometheus/prometheus.yml

# ---------------------------------------------------------------- alertmanager
check "amtool check-config" \
    amtool check-config alertmanager/alertmanager.yml

# route_test RECEIVER LABEL=VALUE...: the alert must be routed to RECEIVER.
route_test() {
    local want="$1"
    shift
    local got
    got="$(amtool config routes test --config.file=alertmanager/alertmanager.yml "$@" 2>/dev/null)" || true
    if [ "$got" = "$want" ]; then
        echo "    $* -> $got"
    else
        echo "    $* -> '$got', expected '$want'"
        return 1
    fi
}
alertmanager_routes() {
    local rc=0
    route_test tracecheck-critical alertname=TraceModelFailed model=overdraft-rolls-back severity=critical team=payments || rc=1
    route_test tracecheck-warning alertname=TraceModelFailed model=overdraft-rolls-back severity=warning || rc=1
    route_test tracecheck-info alertname=TraceModelFailed model=overdraft-rolls-back severity=info || rc=1
    route_test tracecheck-info alertname=TraceModelFailed model=overdraft-rolls-back || rc=1
    route_test tracecheck-critical alertname=TraceModelFailureRatioHigh job=tracecheck model=overdraft-rolls-back severity=critical || rc=1
    route_test tracecheck-warning alertname=TraceModelFailureRatioHigh job=tracecheck model=overdraft-rolls-back severity=warning || rc=1
    route_test tracecheck-critical alertname=TracecheckDown job=tracecheck instance=tracecheck:9464 severity=critical || rc=1
    route_test tracecheck-warning alertname=TracecheckExporterFailing job=tracecheck exporter=otlp severity=warning || rc=1
    return "$rc"
}
check "amtool config routes test" alertmanager_routes

# Inhibition cannot be checked offline: start the real Alertmanager on a free
# loopback port with this config, post alerts, and read back which ones are
# suppressed. Bounded: 15s to get ready, killed (by its PID) afterwards.
alertmanager_inhibition() {
    local bin
    bin="$(command -v prometheus-alertmanager || command -v alertmanager || true)"
    if [ -z "$bin" ]; then
        echo "    no alertmanager binary found"
        return 1
    fi
    local port
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    mkdir -p "$TMP/am"
    "$bin" --config.file=alertmanager/alertmanager.yml --storage.path="$TMP/am" \
        --web.listen-address="127.0.0.1:$port" --cluster.listen-address= \
        >"$TMP/am/log" 2>&1 &
    local pid=$!
    local rc=0
    python3 - "$port" <<'PY' || rc=1
import json, sys, time, urllib.request

base = f"http://127.0.0.1:{sys.argv[1]}"
deadline = time.time() + 15
while True:
    try:
        urllib.request.urlopen(base + "/-/ready", timeout=1)
        break
    except Exception:
        if time.time() > deadline:
            sys.exit("    alertmanager did not become ready")
        time.sleep(0.2)

def alert(**labels):
    return {"labels": labels, "annotations": {"summary": "check.sh"}}

alerts = [
    # critical for model overdraft: mutes the warnings of overdraft only
    alert(alertname="TraceModelFailureRatioHigh", job="tracecheck", model="overdraft", severity="critical"),
    alert(alertname="TraceModelFailed", model="overdraft", severity="warning", service="bank"),
    alert(alertname="TraceModelFailureRatioHigh", job="tracecheck", model="overdraft", severity="warning"),
    alert(alertname="TraceModelFailed", model="login", severity="warning", service="bank"),
    # critical without a model label must not mute model-less warnings
    alert(alertname="TracecheckDown", job="tracecheck", instance="tc-0:9464", severity="critical"),
    alert(alertname="TracecheckExporterFailing", job="tracecheck", exporter="otlp", severity="warning"),
]
req = urllib.request.Request(base + "/api/v2/alerts", data=json.dumps(alerts).encode(),
                             headers={"Content-Type": "application/json"}, method="POST")
urllib.request.urlopen(req, timeout=5)
want = {
    ("TraceModelFailureRatioHigh", "overdraft", "critical"): "active",
    ("TraceModelFailed", "overdraft", "warning"): "suppressed",
    ("TraceModelFailureRatioHigh", "overdraft", "warning"): "suppressed",
    ("TraceModelFailed", "login", "warning"): "active",
    ("TracecheckDown", "-", "critical"): "active",
    ("TracecheckExporterFailing", "-", "warning"): "active",
}
deadline = time.time() + 10
while True:
    got = {}
    for a in json.load(urllib.request.urlopen(base + "/api/v2/alerts", timeout=5)):
        l = a["labels"]
        got[(l["alertname"], l.get("model", "-"), l["severity"])] = a["status"]["state"]
    if got == want or time.time() > deadline:
        break
    time.sleep(0.5)
ok = True
for key, state in want.items():
    mark = "" if got.get(key) == state else f"   <-- expected {state}"
    ok = ok and not mark
    print(f"    {' '.join(key):55s} {got.get(key, 'missing')}{mark}")
sys.exit(0 if ok and got == want else 1)
PY
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ "$rc" -ne 0 ]; then
        echo "    alertmanager log:"
        sed 's/^/      /' "$TMP/am/log" | tail -n 20
    fi
    return "$rc"
}
check "alertmanager inhibition (live, loopback)" alertmanager_inhibition

# ---------------------------------------------------------------- grafana
DASHBOARD=grafana/tracecheck-dashboard.json
check "python3 -m json.tool $DASHBOARD" \
    python3 -m json.tool "$DASHBOARD" "$TMP/dashboard.pretty.json"

# Structure, and every PromQL expression written into a throw-away rules file
# (Grafana variables replaced by plausible values) for promtool to parse.
dashboard_structure() {
    python3 - "$DASHBOARD" "$TMP/dashboard_exprs.yml" <<'PY'
import json, re, sys

path, out = sys.argv[1], sys.argv[2]
d = json.load(open(path))
errors = []
if not isinstance(d.get("schemaVersion"), int):
    errors.append("schemaVersion missing")
variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
for need in ("DS_PROMETHEUS", "model", "jaeger_url"):
    if need not in variables:
        errors.append(f"template variable {need} missing")
builtin = {"__rate_interval", "__interval", "__range", "__value", "__value.raw", "__data", "__field", "__series"}

def used_vars(text):
    return set(re.findall(r"\$\{([A-Za-z_][\w.]*)(?::\w+)?\}|\$([A-Za-z_]\w*)", text))

def check_vars(where, text):
    for a, b in used_vars(text):
        name = a or b
        if name not in variables and name not in builtin and name.split(".")[0] not in builtin:
            errors.append(f"{where}: undefined variable ${name}")

def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))

ids, exprs = set(), []
for p in panels(d.get("panels", [])):
    where = f"panel {p.get('id')} {p.get('title')!r}"
    if p.get("id") in ids:
        errors.append(f"{where}: duplicate id")
    ids.add(p.get("id"))
    if not {"x", "y", "w", "h"} <= set(p.get("gridPos", {})):
        errors.append(f"{where}: gridPos incomplete")
    if p.get("type") == "row":
        continue
    if p.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
        errors.append(f"{where}: datasource is not ${{DS_PROMETHEUS}}")
    if not p.get("targets"):
        errors.append(f"{where}: no queries")
    for t in p.get("targets", []):
        if not t.get("expr"):
            errors.append(f"{where}: query {t.get('refId')} has no expr")
            continue
        check_vars(where, t["expr"])
        exprs.append((where, t["expr"]))
    check_vars(where, json.dumps(p.get("fieldConfig", {})))
for a in d.get("annotations", {}).get("list", []):
    if a.get("expr"):
        exprs.append((f"annotation {a.get('name')!r}", a["expr"]))
for v in variables.values():
    check_vars(f"variable {v['name']}", json.dumps(v.get("query", "")))
check_vars("dashboard links", json.dumps(d.get("links", [])))

subst = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "6h",
         "$job": "tracecheck", "$model": ".*"}
with open(out, "w") as f:
    f.write("groups:\n  - name: dashboard-exprs\n    rules:\n")
    for i, (where, e) in enumerate(exprs):
        for k, v in subst.items():
            e = e.replace(k, v)
        # A JSON string is a valid YAML double-quoted scalar.
        f.write(f"      - record: dashboard:expr_{i}:check\n        expr: {json.dumps(e)}\n")
for e in errors:
    print("    " + e)
print(f"    {len(ids)} panels, {len(exprs)} PromQL expressions extracted, {len(errors)} problems")
sys.exit(1 if errors else 0)
PY
}
check "dashboard structure and variables" dashboard_structure
check "promtool parses every dashboard expression" \
    promtool check rules "$TMP/dashboard_exprs.yml"

# ---------------------------------------------------------------- summary
echo
if ((failed)); then
    echo "failed checks: ${failed_names[*]}"
fi
echo "deploy checks: $passed passed, $failed failed"
((failed == 0))
