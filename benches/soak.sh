#!/usr/bin/env bash
# Overload without loss (issue 6 item 6, issue 8's soak): offers RATE spans/s
# (e.g. 3x what the box sustains) for DURATION with retrying senders, into
# tracecheck with MODELS models forwarding to a counting sink, and checks
# what a user would:
#
#   - resident memory, sampled every second, stays bounded (peak printed,
#     samples written to $OUT_DIR/rss.csv);
#   - senders were told to retry (refusals counted by reason);
#   - every accepted span reached the sink exactly once (lost = 0, dup = 0);
#   - the overdraft model failed exactly the violating traces the generator
#     sent, and every trace got its verdicts.
#
# Exits 1 if any check fails.
#
# Usage: RATE=450000 DURATION=60s bash benches/soak.sh
#   MODELS=100 SENDERS=4 SPANS_PER_REQUEST=400 OUT_DIR=target/soak
#   TRACECHECK=path/to/tracecheck (default: target/release/tracecheck)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RATE="${RATE:?set RATE, spans/s offered (e.g. 3x the sustainable rate from benches/compare.sh)}"
DURATION="${DURATION:-60s}"
MODELS="${MODELS:-100}"
SENDERS="${SENDERS:-4}"
SPANS_PER_REQUEST="${SPANS_PER_REQUEST:-400}"
OUT_DIR="${OUT_DIR:-$ROOT/target/soak}"
TRACECHECK="${TRACECHECK:-$ROOT/target/release/tracecheck}"
[ -x "$TRACECHECK" ] || cargo build --release --quiet
mkdir -p "$OUT_DIR"

TMP="$(mktemp -d)"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

read -r SINK_GRPC SINK_STATS GRPC HTTP ADMIN <<<"$(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)"
get() { python3 -c 'import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=10).read().decode())' "$1"; }
wait_http() {
    for _ in $(seq 1 600); do get "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "no answer from $1" >&2; exit 1
}
metric() { # FILE NAME LABEL
    python3 - "$1" "$2" "$3" <<'PY'
import sys
path, name, label = sys.argv[1:4]
text = open(path).read()
print(int(sum(float(l.rpartition(" ")[2]) for l in text.splitlines()
              if not l.startswith("#") and l.split("{")[0].split(" ")[0] == name and label in l)))
PY
}

"$TRACECHECK" bench sink --grpc "127.0.0.1:$SINK_GRPC" --stats "127.0.0.1:$SINK_STATS" >"$TMP/sink.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$SINK_STATS/stats"

mkdir -p "$TMP/models"
[ "$MODELS" -eq 0 ] || "$TRACECHECK" bench models --count "$MODELS" >"$TMP/models/models.yaml"
cat >"$TMP/config.yaml" <<EOF
receivers:
  otlp:
    grpc: { endpoint: "127.0.0.1:$GRPC" }
    http: { endpoint: "127.0.0.1:$HTTP" }
models:
  paths: [$TMP/models]
exporters:
  otlp:
    endpoint: http://127.0.0.1:$SINK_GRPC
    protocol: grpc
admin:
  endpoint: "127.0.0.1:$ADMIN"
EOF
"$TRACECHECK" serve --config "$TMP/config.yaml" >"$TMP/serve.log" 2>&1 &
TC=$!
PIDS+=("$TC")
wait_http "http://127.0.0.1:$ADMIN/readyz"

echo "second,rss_mib,buffer_spans,exporter_queue" >"$OUT_DIR/rss.csv"
(
    start=$SECONDS
    while kill -0 "$TC" 2>/dev/null; do
        rss=$(awk '/^VmRSS/ {print $2}' "/proc/$TC/status" 2>/dev/null || echo 0)
        get "http://127.0.0.1:$ADMIN/metrics" >"$TMP/sample.txt" 2>/dev/null || true
        buf=$(awk '/^tracecheck_buffer_spans / {print int($2)}' "$TMP/sample.txt")
        queue=$(awk '/^tracecheck_exporter_queue_size\{/ {print int($2)}' "$TMP/sample.txt")
        echo "$((SECONDS - start)),$((rss / 1024)),${buf:-0},${queue:-0}" >>"$OUT_DIR/rss.csv"
        sleep 1
    done
) &
SAMPLER=$!

echo "==> offering $RATE spans/s for $DURATION ($SENDERS senders, $SPANS_PER_REQUEST spans a request, retrying) into tracecheck with $MODELS models" >&2
"$TRACECHECK" bench load --endpoint "http://127.0.0.1:$GRPC" --protocol grpc --senders "$SENDERS" \
    --spans-per-request "$SPANS_PER_REQUEST" --rate "$RATE" --duration "$DURATION" \
    --retry --max-retries 100000 --retry-backoff 50ms --json >"$OUT_DIR/load.json"

accepted=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["spans_accepted"])' "$OUT_DIR/load.json")
traces=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["traces_sent"])' "$OUT_DIR/load.json")
for _ in $(seq 1 3000); do
    unique=$(get "http://127.0.0.1:$SINK_STATS/stats" | python3 -c 'import json, sys; print(json.load(sys.stdin)["unique_spans"])')
    get "http://127.0.0.1:$ADMIN/metrics" >"$TMP/scrape.txt"
    done_traces=$(metric "$TMP/scrape.txt" tracecheck_traces_completed_total "")
    [ "$unique" -ge "$accepted" ] && [ "$done_traces" -ge "$traces" ] && break
    sleep 0.1
done
sleep 0.5
get "http://127.0.0.1:$ADMIN/metrics" >"$OUT_DIR/metrics.txt"
stats=$(get "http://127.0.0.1:$SINK_STATS/stats")
kill "$SAMPLER" 2>/dev/null || true

python3 - "$OUT_DIR/load.json" "$stats" "$OUT_DIR/rss.csv" \
    "$(metric "$OUT_DIR/metrics.txt" tracecheck_model_verdicts_total 'model="overdraft-rolls-back",verdict="fail"')" \
    "$(metric "$OUT_DIR/metrics.txt" tracecheck_traces_completed_total "")" \
    "$(metric "$OUT_DIR/metrics.txt" tracecheck_receiver_refused_spans_total "")" \
    "$(metric "$OUT_DIR/metrics.txt" tracecheck_traces_completed_total 'reason="evicted"')" "$MODELS" <<'PY'
import csv, json, sys
load = json.load(open(sys.argv[1]))
stats = json.loads(sys.argv[2])
rows = list(csv.DictReader(open(sys.argv[3])))
failed, completed, refused, evicted, models = (int(x) for x in sys.argv[4:9])
rss = [int(r["rss_mib"]) for r in rows]
half = rss[len(rss) // 2:] or rss
checks = [
    ("spans accepted = unique at the sink (nothing lost)", load["spans_accepted"], stats["unique_spans"]),
    ("duplicates at the sink", 0, stats["duplicate_spans"]),
    ("spans refused for good (after retries)", 0, load["spans_refused"]),
    ("traces sent = traces completed", load["traces_sent"], completed),
]
if models > 0:
    checks.append(("violating traces = overdraft failures", load["violating_traces_sent"], failed))
print(f"offered {load['spans_sent'] / load['elapsed_secs']:.0f} spans/s over {load['elapsed_secs']:.0f} s, "
      f"accepted {load['accepted_spans_per_sec']:.0f} spans/s; {load['retries']} retries; "
      f"refusals told to retry (spans): {refused}; errors {load['errors']}")
print(f"RSS: peak {max(rss)} MiB, peak in the second half {max(half)} MiB, last {rss[-1]} MiB ({len(rss)} samples); evicted traces: {evicted}")
ok = True
for name, want, got in checks:
    good = want == got
    ok &= good
    print(f"{'ok  ' if good else 'FAIL'} {name}: expected {want}, got {got}")
sys.exit(0 if ok else 1)
PY
