#!/usr/bin/env bash
# Resident memory per buffered span (issue 6): fills tracecheck's per-trace
# buffer with SPANS spans that never complete (settle and idle_timeout of
# an hour), then compares resident memory before and after with the
# encoded size of what was accepted.
#
#   overhead per span = (RSS after - RSS before - encoded bytes) / spans
#
# The buffer keeps spans as slices of the request buffers they arrived in,
# so the encoded bytes are the floor; the overhead is the index (trace map,
# per-span slices, deadlines) plus the allocator's slack. Target: <= 300 B.
#
# Usage: bash benches/memory.sh
#   SPANS=1000000 SPANS_PER_REQUEST=400 SENDERS=4
#   SPLIT=1 SPREAD=300ms  production's shape with SPLIT=4: each trace's
#     spans over 4 requests from different senders, the root last; every
#     request body stays pinned by the spans of it still buffered, and is
#     in the RSS growth like the spans themselves
#   TRACECHECK=path/to/tracecheck (default: target/release/tracecheck)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SPANS="${SPANS:-1000000}"
SPANS_PER_REQUEST="${SPANS_PER_REQUEST:-400}"
SENDERS="${SENDERS:-4}"
SPLIT="${SPLIT:-1}"
SPREAD="${SPREAD:-300ms}"
TRACECHECK="${TRACECHECK:-$ROOT/target/release/tracecheck}"
if [ ! -x "$TRACECHECK" ]; then
    cargo build --release --quiet
fi

TMP="$(mktemp -d)"
PID=
cleanup() {
    [ -z "$PID" ] || { kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
    rm -rf "$TMP"
}
trap cleanup EXIT

read -r GRPC HTTP ADMIN <<<"$(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)"
cat >"$TMP/config.yaml" <<EOF
receivers:
  otlp:
    grpc: { endpoint: "127.0.0.1:$GRPC" }
    http: { endpoint: "127.0.0.1:$HTTP" }
assembler:
  settle: 1h
  idle_timeout: 1h
  root_settle: 1h
  max_trace_age: 2h
  max_traces: 2000000
  max_spans: $((SPANS * 2))
models:
  paths: []
admin:
  endpoint: "127.0.0.1:$ADMIN"
EOF
"$TRACECHECK" serve --config "$TMP/config.yaml" >"$TMP/serve.log" 2>&1 &
PID=$!

scrape() {
    python3 -c 'import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=10).read().decode())' \
        "http://127.0.0.1:$ADMIN/metrics" 2>/dev/null
}
buffered() { scrape | awk '/^tracecheck_buffer_spans / {print int($2)}'; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; }

for _ in $(seq 1 300); do
    [ -n "$(buffered || true)" ] && break
    sleep 0.1
done
# A small warm-up so that the runtime's threads and pools exist before the
# "before" reading.
"$TRACECHECK" bench load --endpoint "http://127.0.0.1:$GRPC" --requests 8 --senders "$SENDERS" \
    --spans-per-request "$SPANS_PER_REQUEST" --json >"$TMP/warm.json"
sleep 1
before_spans=$(buffered)
before=$(rss_kib)

requests=$(((SPANS + SPANS_PER_REQUEST - 1) / SPANS_PER_REQUEST))
"$TRACECHECK" bench load --endpoint "http://127.0.0.1:$GRPC" --requests "$requests" --senders "$SENDERS" \
    --spans-per-request "$SPANS_PER_REQUEST" --split "$SPLIT" --spread "$SPREAD" --json >"$TMP/load.json"
sleep 2
after_spans=$(buffered)
after=$(rss_kib)

python3 - "$TMP/load.json" "$before" "$after" "$before_spans" "$after_spans" <<'PY'
import json, sys
load = json.load(open(sys.argv[1]))
before, after = int(sys.argv[2]) * 1024, int(sys.argv[3]) * 1024
spans = int(sys.argv[5]) - int(sys.argv[4])
encoded = load["bytes_accepted"]
assert spans == load["spans_accepted"], f"buffered {spans} spans, accepted {load['spans_accepted']}"
grown = after - before
print(f"buffered spans:        {spans}")
print(f"RSS before / after:    {before / 2**20:.1f} MiB / {after / 2**20:.1f} MiB")
print(f"encoded (protobuf):    {encoded / 2**20:.1f} MiB, {encoded / spans:.0f} B a span")
print(f"RSS growth:            {grown / spans:.0f} B a span")
print(f"beyond encoded size:   {(grown - encoded) / spans:.0f} B a span (target <= 300)")
PY
