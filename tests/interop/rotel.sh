#!/usr/bin/env bash
# Interop with rotel (streamfold/rotel, `pip install rotel`), a Rust
# OpenTelemetry collector, in both positions:
#
#   1. bench load --grpc--> rotel --OTLP/gRPC-->          tracecheck --> sink
#   2. bench load --http--> rotel --OTLP/HTTP protobuf--> tracecheck --> sink
#   3. bench load --grpc--> tracecheck --OTLP/gRPC--> rotel --OTLP/gRPC--> sink
#   4. as 3, one 15 MiB OTLP/HTTP request: rotel's receiver takes 4 MiB a
#      message (its default, as the Collector's), so tracecheck has to cut it
#
# The sink is `tracecheck bench sink`, which counts spans by (trace ID, span
# ID). A case passes when the sink holds exactly the spans the load generator
# had accepted, none twice and none with a broken ID, when tracecheck counted
# them as accepted on /metrics, and when every trace arrived.
#
# Usage: bash tests/interop/rotel.sh   (from anywhere; CI calls it)
#   TRACECHECK=path/to/tracecheck   binary to use (default: target/release/
#                                   tracecheck, built if missing)
#   ROTEL=path/to/rotel-agent       (default: found via PATH or the rotel
#                                   Python package, installed with pip if absent)
# Prints a line per check and "N passed, N failed" last; exits 1 on any failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

REQUESTS=40
SPANS_PER_REQUEST=200
SENDERS=2
WAIT_SECS=60

# ---------------------------------------------------------------- tools
TRACECHECK="${TRACECHECK:-$ROOT/target/release/tracecheck}"
if [ ! -x "$TRACECHECK" ]; then
    echo "==> building $TRACECHECK"
    cargo build --release --quiet
fi

# rotel is a pip package: found on PATH, in python3's packages, or
# installed into the test suites' virtual environment (target/python),
# never into the system's Python.
VENV="${CARGO_TARGET_DIR:-$ROOT/target}/python"
find_rotel() {
    if [ -n "${ROTEL:-}" ]; then echo "$ROTEL"; return; fi
    if command -v rotel-agent >/dev/null 2>&1; then command -v rotel-agent; return; fi
    local py
    for py in python3 "$VENV/bin/python"; do
        "$py" -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))' 2>/dev/null && return
    done
    return 1
}
ROTEL_BIN="$(find_rotel || true)"
if [ -z "$ROTEL_BIN" ] || [ ! -x "$ROTEL_BIN" ]; then
    echo "==> installing rotel into $VENV" >&2
    [ -x "$VENV/bin/python" ] || python3 -m venv --system-site-packages "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check rotel
    ROTEL_BIN="$(find_rotel)"
fi
echo "==> $("$TRACECHECK" --version), $("$ROTEL_BIN" --version)"

# ---------------------------------------------------------------- plumbing
TMP="$(mktemp -d)"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

# Free loopback ports, all held at once so they are distinct.
read -r -a PORTS <<<"$(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(16)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
)"
port() { echo "${PORTS[$1]}"; }

# GET a URL; prints the body, fails on errors.
http_get() {
    python3 - "$1" <<'PY'
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())
PY
}

http_post() {
    python3 - "$1" <<'PY'
import sys, urllib.request
urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=b"", method="POST"), timeout=5).read()
PY
}

# json_field FIELD < json
json_field() {
    python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# wait_port PORT NAME LOG: until something listens there.
wait_port() {
    local deadline=$((SECONDS + WAIT_SECS))
    until python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$1" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then
            echo "$2 did not listen on $1; its log:"
            cat "$3"
            exit 1
        fi
        sleep 0.1
    done
}

# metric SCRAPE NAME [LABEL]: a Prometheus sample's value, summed over the
# series that carry LABEL (e.g. transport="grpc").
metric() {
    python3 - "$1" "$2" "${3:-}" <<'PY'
import sys
text, name, label = sys.argv[1], sys.argv[2], sys.argv[3]
total = 0.0
for line in text.splitlines():
    if line.startswith("#"):
        continue
    series, _, value = line.rpartition(" ")
    if series.split("{")[0] == name and label in series:
        total += float(value)
print(int(total))
PY
}

start_sink() {
    "$TRACECHECK" bench sink --grpc "127.0.0.1:$(port 0)" --stats "127.0.0.1:$(port 1)" \
        >"$TMP/sink.log" 2>&1 &
    PIDS+=($!)
    wait_port "$(port 1)" sink "$TMP/sink.log"
    wait_port "$(port 0)" sink "$TMP/sink.log"
}

# start_tracecheck NAME GRPC HTTP ADMIN FORWARD_ENDPOINT
start_tracecheck() {
    local name=$1 grpc=$2 http=$3 admin=$4 forward=$5
    cat >"$TMP/$name.yaml" <<EOF
receivers:
  otlp:
    grpc: { endpoint: "127.0.0.1:$grpc" }
    http: { endpoint: "127.0.0.1:$http" }
assembler:
  settle: 1s
  idle_timeout: 1s
models:
  paths: []
exporters:
  otlp:
    endpoint: $forward
    protocol: grpc
    batch: { timeout: 50ms }
    retry: { initial_interval: 100ms, max_interval: 1s }
admin:
  endpoint: "127.0.0.1:$admin"
EOF
    "$TRACECHECK" serve --config "$TMP/$name.yaml" >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
    wait_port "$admin" "$name" "$TMP/$name.log"
    local deadline=$((SECONDS + WAIT_SECS))
    until http_get "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "$name not ready; its log:"; cat "$TMP/$name.log"; exit 1
        fi
        sleep 0.1
    done
}

# start_rotel NAME GRPC HTTP PROTOCOL ENDPOINT
start_rotel() {
    local name=$1 grpc=$2 http=$3 protocol=$4 endpoint=$5
    "$ROTEL_BIN" start \
        --otlp-grpc-endpoint "127.0.0.1:$grpc" \
        --otlp-http-endpoint "127.0.0.1:$http" \
        --exporter otlp \
        --otlp-exporter-endpoint "$endpoint" \
        --otlp-exporter-protocol "$protocol" \
        --otlp-exporter-retry-initial-backoff 100ms \
        --otlp-exporter-retry-max-backoff 1s \
        --pid-file "$TMP/$name.pid" \
        --log-file "$TMP/$name.daemon.log" \
        >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
    wait_port "$grpc" "$name" "$TMP/$name.log"
    wait_port "$http" "$name" "$TMP/$name.log"
}

PASSED=0
FAILED=0
check() { # check NAME CONDITION-DESCRIPTION EXPECTED GOT
    if [ "$3" = "$4" ]; then
        echo "ok    $1: $2 = $4"
        PASSED=$((PASSED + 1))
    else
        echo "FAIL  $1: $2: expected $3, got $4"
        FAILED=$((FAILED + 1))
    fi
}

# run_case NAME LOAD_ENDPOINT PROTOCOL TRACECHECK_ADMIN TRANSPORT
run_case() {
    local name=$1 endpoint=$2 protocol=$3 admin=$4 transport=$5
    http_post "http://127.0.0.1:$(port 1)/reset"
    local before
    before=$(metric "$(http_get "http://127.0.0.1:$admin/metrics")" \
        tracecheck_receiver_accepted_spans_total "transport=\"$transport\"")
    local report
    if ! report=$(timeout 300 "$TRACECHECK" bench load --endpoint "$endpoint" --protocol "$protocol" \
        --senders "$SENDERS" --spans-per-request "$SPANS_PER_REQUEST" --requests "$REQUESTS" \
        --retry --json 2>"$TMP/load.err"); then
        echo "FAIL  $name: load generator failed"; cat "$TMP/load.err"
        FAILED=$((FAILED + 1))
        return
    fi
    local sent accepted traces
    sent=$(json_field spans_sent <<<"$report")
    accepted=$(json_field spans_accepted <<<"$report")
    traces=$(json_field traces_sent <<<"$report")
    check "$name" "spans accepted by the first hop" "$((REQUESTS * SPANS_PER_REQUEST))" "$accepted"

    local stats unique deadline=$((SECONDS + WAIT_SECS))
    while :; do
        stats=$(http_get "http://127.0.0.1:$(port 1)/stats")
        unique=$(json_field unique_spans <<<"$stats")
        if [ "$unique" -ge "$accepted" ] || [ $SECONDS -ge $deadline ]; then break; fi
        sleep 0.2
    done
    sleep 0.5 # anything arriving twice would come now
    stats=$(http_get "http://127.0.0.1:$(port 1)/stats")
    check "$name" "unique spans at the sink" "$accepted" "$(json_field unique_spans <<<"$stats")"
    check "$name" "spans at the sink" "$accepted" "$(json_field spans <<<"$stats")"
    check "$name" "duplicate spans at the sink" 0 "$(json_field duplicate_spans <<<"$stats")"
    check "$name" "spans with broken IDs at the sink" 0 "$(json_field invalid_id_spans <<<"$stats")"
    # Every trace the load generator finished arrived (each sender may end
    # with one trace begun and not finished; it arrives too).
    local got_traces
    got_traces=$(json_field unique_traces <<<"$stats")
    local traces_ok=no
    if [ "$got_traces" -ge "$traces" ] && [ "$got_traces" -le $((traces + SENDERS)) ]; then traces_ok=yes; fi
    check "$name" "traces at the sink ($got_traces) cover the $traces sent whole" yes "$traces_ok"
    local after
    after=$(metric "$(http_get "http://127.0.0.1:$admin/metrics")" \
        tracecheck_receiver_accepted_spans_total "transport=\"$transport\"")
    check "$name" "spans tracecheck accepted over $transport" "$accepted" "$((after - before))"
}

# ---------------------------------------------------------------- topology
# Ports: 0 sink gRPC, 1 sink stats; 2-4 tracecheck A (gRPC, HTTP, admin);
# 5-7 tracecheck B; 8-9 rotel 1; 10-11 rotel 2; 12-13 rotel 3.
start_sink
start_tracecheck tracecheck-a "$(port 2)" "$(port 3)" "$(port 4)" "http://127.0.0.1:$(port 0)"
start_rotel rotel-grpc "$(port 8)" "$(port 9)" grpc "http://127.0.0.1:$(port 2)"
start_rotel rotel-http "$(port 10)" "$(port 11)" http "http://127.0.0.1:$(port 3)"
start_rotel rotel-downstream "$(port 12)" "$(port 13)" grpc "http://127.0.0.1:$(port 0)"
start_tracecheck tracecheck-b "$(port 5)" "$(port 6)" "$(port 7)" "http://127.0.0.1:$(port 12)"

echo "==> 1. load -> rotel (gRPC) -> tracecheck -> sink"
run_case "rotel-grpc" "http://127.0.0.1:$(port 8)" grpc "$(port 4)" grpc
echo "==> 2. load -> rotel (HTTP/protobuf) -> tracecheck -> sink"
run_case "rotel-http" "http://127.0.0.1:$(port 11)/v1/traces" http "$(port 4)" http
echo "==> 3. load -> tracecheck -> rotel -> sink"
run_case "tracecheck-to-rotel" "http://127.0.0.1:$(port 5)" grpc "$(port 7)" grpc
echo "==> 4. one 15 MiB OTLP/HTTP request -> tracecheck -> rotel (4 MiB a message) -> sink"
REQUESTS=1 SPANS_PER_REQUEST=65000 SENDERS=1 \
    run_case "15-MiB-request-to-rotel" "http://127.0.0.1:$(port 6)/v1/traces" http "$(port 7)" http

if [ "$FAILED" -gt 0 ]; then
    for log in "$TMP"/*.log; do
        echo "---- $(basename "$log")"
        tail -n 20 "$log"
    done
fi
echo "rotel interop: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
