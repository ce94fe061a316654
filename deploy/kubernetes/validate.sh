#!/usr/bin/env bash
# Renders both overlays with `kubectl kustomize` and validates them offline:
#
#   - every built-in kind (Deployment, StatefulSet, Service, ConfigMap, PDB,
#     RBAC, Namespace) with kubernetes-validate --strict (unknown fields are
#     errors) against the oldest Kubernetes the manifests support (1.30:
#     native sidecars and the preStop sleep action) and the newest schema the
#     tool ships;
#   - the Prometheus Operator kinds (PodMonitor, ServiceMonitor,
#     PrometheusRule) have no schema in kubernetes-validate; they are listed as
#     skipped there and checked here instead: a monitor's selector must match
#     the labels of a rendered pod template or Service and its port must be a
#     named port there; the PrometheusRule's spec must equal
#     deploy/prometheus/rules.yml, and promtool (when installed) must accept it.
#
# Usage: bash deploy/kubernetes/validate.sh
# Needs kubectl and kubernetes-validate (pip install kubernetes-validate).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MIN_K8S=1.30.0

command -v kubectl >/dev/null 2>&1 || { echo "kubectl missing" >&2; exit 1; }
command -v kubernetes-validate >/dev/null 2>&1 || { echo "kubernetes-validate missing (pip install kubernetes-validate)" >&2; exit 1; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
rc=0
for overlay in sidecar gateway; do
    out="$TMP/$overlay.yaml"
    echo "==> kubectl kustomize deploy/kubernetes/$overlay"
    kubectl kustomize "$HERE/$overlay" >"$out"
    grep '^kind:' "$out" | sort | uniq -c | sed 's/^/    /'
    for version in "$MIN_K8S" ""; do
        args=(--strict)
        label="schema default ($(kubernetes-validate --help | sed -n 's/.*Defaults to \([0-9.]*\).*/\1/p' | head -n 1))"
        if [ -n "$version" ]; then
            args+=(-k "$version")
            label="$version"
        fi
        echo "==> kubernetes-validate --strict, Kubernetes $label"
        if ! kubernetes-validate "${args[@]}" "$out" >"$TMP/kv.log" 2>&1; then
            rc=1
        fi
        grep -v "Couldn't find schema" "$TMP/kv.log" | sed 's/^/    /'
        if grep -q "Couldn't find schema" "$TMP/kv.log"; then
            echo "    skipped by kubernetes-validate (no schema; checked below):" \
                "$(grep -o "kind [A-Za-z]* with api version [^ ]*" "$TMP/kv.log" | awk '{print $2}' | sort -u | tr '\n' ' ')"
        fi
        if grep -Eq '^(ERROR|CRITICAL)' "$TMP/kv.log"; then rc=1; fi
    done
    echo "==> Prometheus Operator objects of $overlay"
    python3 - "$out" "$HERE/../prometheus/rules.yml" "$TMP" <<'PY' || rc=1
import subprocess, shutil, sys, yaml

rendered, rules_path, tmp = sys.argv[1], sys.argv[2], sys.argv[3]
docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
errors = []

def pod_templates():
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            yield d["spec"]["template"]

def container_ports(template):
    spec = template["spec"]
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        for p in c.get("ports", []):
            if "name" in p:
                yield p["name"]

def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())

for d in docs:
    kind, name = d["kind"], d["metadata"]["name"]
    if kind == "PodMonitor":
        sel = d["spec"]["selector"]
        pods = [t for t in pod_templates() if matches(sel, t["metadata"].get("labels", {}))]
        if not pods:
            errors.append(f"PodMonitor {name}: selector {sel} matches no pod template")
        for ep in d["spec"]["podMetricsEndpoints"]:
            if not any(ep["port"] in container_ports(t) for t in pods):
                errors.append(f"PodMonitor {name}: port {ep['port']!r} is not a named container port of the selected pods")
            if not any(r.get("targetLabel") == "job" and r.get("replacement") == "tracecheck" for r in ep.get("relabelings", [])):
                errors.append(f"PodMonitor {name}: job is not relabelled to tracecheck (the rules select job=\"tracecheck\")")
        print(f"    PodMonitor {name}: selects {[t['metadata']['labels'] for t in pods]}, port and job ok")
    elif kind == "ServiceMonitor":
        sel = d["spec"]["selector"]
        svcs = [s for s in docs if s["kind"] == "Service" and matches(sel, s["metadata"].get("labels", {}))]
        if not svcs:
            errors.append(f"ServiceMonitor {name}: selector {sel} matches no Service")
        for ep in d["spec"]["endpoints"]:
            if not any(ep["port"] == p.get("name") for s in svcs for p in s["spec"]["ports"]):
                errors.append(f"ServiceMonitor {name}: port {ep['port']!r} is not a named port of the selected Services")
            if not any(r.get("targetLabel") == "job" and r.get("replacement") == "tracecheck" for r in ep.get("relabelings", [])):
                errors.append(f"ServiceMonitor {name}: job is not relabelled to tracecheck")
        print(f"    ServiceMonitor {name}: selects {[s['metadata']['name'] for s in svcs]}, port and job ok")
    elif kind == "PrometheusRule":
        want = yaml.safe_load(open(rules_path))
        if d["spec"] != want:
            errors.append(f"PrometheusRule {name}: spec differs from deploy/prometheus/rules.yml (run bash deploy/kubernetes/sync-rules.sh)")
        groups = d["spec"]["groups"]
        n = sum(len(g["rules"]) for g in groups)
        print(f"    PrometheusRule {name}: {len(groups)} groups, {n} rules, equal to rules.yml")
        if shutil.which("promtool"):
            path = f"{tmp}/{name}-spec.yml"
            yaml.safe_dump(d["spec"], open(path, "w"))
            r = subprocess.run(["promtool", "check", "rules", path], capture_output=True, text=True)
            if r.returncode != 0:
                errors.append(f"PrometheusRule {name}: promtool check rules failed:\n{r.stdout}{r.stderr}")
            else:
                print(f"    PrometheusRule {name}: promtool check rules ok")
        else:
            print("    promtool absent: PrometheusRule expressions not parsed here (deploy/check.sh does on rules.yml)")
print()
for e in errors:
    print("    ERROR " + e)
sys.exit(1 if errors else 0)
PY
done
if [ "$rc" -eq 0 ]; then
    echo "kubernetes manifests: ok"
else
    echo "kubernetes manifests: FAILED" >&2
fi
exit "$rc"
