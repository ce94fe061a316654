#!/usr/bin/env bash
# The live page under load (issue 20): does a browser watching /ui/live keep
# up with thousands of verdicts a second, and does watching slow evaluation?
#
# One daemon config, the same load twice, side by side: first with nobody
# watching, then with a watcher on the live page's event stream
# (/ui/live/events, every verdict kind, as the page asks for it: curl,
# counting events). Per run: verdicts/s the daemon counted, events/s the
# watcher got and the `missed` events it was told of, the daemon's CPU per
# span, and the verdict delay (p50/p99).
#
#   RATE=40000 DURATION=20s MODELS=10 bash benches/live.sh
#
# MODELS generated models all match every trace (`bench models --matching`),
# so each trace gives MODELS verdicts. Uses target/release/tracecheck
# (built if absent).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RATE="${RATE:-40000}"
DURATION="${DURATION:-20s}"
MODELS="${MODELS:-10}"
TRACECHECK="${TRACECHECK:-$ROOT/target/release/tracecheck}"
[ -x "$TRACECHECK" ] || (cd "$ROOT" && cargo build --release --quiet)

# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

read -r -a PORTS <<<"$(free_ports 5)"
GRPC=${PORTS[0]} HTTP=${PORTS[1]} ADMIN=${PORTS[2]} SINK_GRPC=${PORTS[3]} SINK_STATS=${PORTS[4]}
start_sink "$SINK_GRPC" "$SINK_STATS"
mkdir -p "$TMP/models"
"$TRACECHECK" bench models --count "$MODELS" --matching "$MODELS" >"$TMP/models/models.yaml"
# Settling shortened so that the verdicts come within the run.
{
    default_config "$TMP/models"
    printf 'assembler: { settle: 1s, root_settle: 200ms, idle_timeout: 1s }\n'
} >"$TMP/config.yaml"

run() { # NAME WATCH(0|1)
    local name=$1 watch=$2 pid watcher=
    "$TRACECHECK" serve --config "$TMP/config.yaml" >"$TMP/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_http "http://127.0.0.1:$ADMIN/readyz"
    if [ "$watch" = 1 ]; then
        curl -sN "http://127.0.0.1:$ADMIN/ui/live/events" >"$TMP/$name.events" &
        watcher=$!
        PIDS+=("$watcher")
        sleep 0.5
    fi
    local t0 c0
    t0=$(date +%s.%N)
    c0=$(cpu_ticks "$pid")
    "$TRACECHECK" bench load --endpoint "http://127.0.0.1:$GRPC" --rate "$RATE" \
        --duration "$DURATION" --retry >"$TMP/$name.load" 2>&1
    wait_settled "http://127.0.0.1:$ADMIN"
    local t1 c1
    t1=$(date +%s.%N)
    c1=$(cpu_ticks "$pid")
    get "http://127.0.0.1:$ADMIN/metrics" >"$TMP/$name.metrics"
    [ -z "$watcher" ] || kill "$watcher" 2>/dev/null || true
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    python3 - "$name" "$TMP" "$t0" "$t1" "$c0" "$c1" "$(getconf CLK_TCK)" <<'PY'
import json, os, re, subprocess, sys
name, tmp, t0, t1, c0, c1, hz = sys.argv[1:8]
secs = float(t1) - float(t0)
text = open(f"{tmp}/{name}.metrics").read()
def total(metric, label=""):
    return sum(float(l.rpartition(" ")[2]) for l in text.splitlines()
               if not l.startswith("#") and l.split("{")[0].split(" ")[0] == metric and label in l)
verdicts = total("tracecheck_model_verdicts_total") - total("tracecheck_model_verdicts_total", 'verdict="skip"')
spans = total("tracecheck_receiver_accepted_spans_total")
cpu = (int(c1) - int(c0)) / int(hz)
events = missed = 0
path = f"{tmp}/{name}.events"
if os.path.exists(path):
    kind = None
    for line in open(path, errors="replace"):
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            if kind == "verdict":
                events += 1
            elif kind == "missed":
                missed += int(line[5:].strip() or 0)
hist = subprocess.run(["python3", os.environ["PROMTEXT"], "hist", f"{tmp}/{name}.metrics",
                       "tracecheck_verdict_delay_seconds"], capture_output=True, text=True).stdout.split()
p50, p99 = (float(hist[1]), float(hist[2])) if len(hist) >= 3 else (float("nan"),) * 2
print(json.dumps({"run": name, "seconds": round(secs, 1), "spans": int(spans),
                  "verdicts": int(verdicts), "verdicts_per_s": round(verdicts / secs),
                  "events": events, "events_per_s": round(events / secs), "missed": missed,
                  "cpu_us_per_span": round(cpu * 1e6 / max(spans, 1), 2),
                  "delay_p50_ms": round(p50, 1), "delay_p99_ms": round(p99, 1)}))
PY
}

export PROMTEXT="$ROOT/benches/promtext.py"
echo "==> $("$TRACECHECK" --version); $(nproc) CPUs; $MODELS models matching every trace; $RATE spans/s for $DURATION" >&2
run unwatched 0
run watched 1
