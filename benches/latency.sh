#!/usr/bin/env bash
# Completion-to-verdict latency under load (issue 6 item 5): for each rate,
# tracecheck with MODELS models takes RATE spans/s over OTLP/gRPC for
# DURATION (forwarding to a counting sink), and the script reads
# `tracecheck_verdict_delay_seconds`: the time from the moment a trace's
# completion condition was met (its idle timeout, root settle or max age
# ran out) to its verdicts being recorded. So the figure is the delay
# *beyond* the configured completion timeout. Printed: p50 and p99
# (interpolated within buckets, as PromQL's histogram_quantile does), the
# share within 50 ms, and the daemon's CPU per span.
#
# Usage: bash benches/latency.sh [RATE...]     (default: 25000 50000 100000)
#   MODELS=100 DURATION=30s SENDERS=4 SPANS_PER_REQUEST=400
#   TRACECHECK=path/to/tracecheck (default: target/release/tracecheck)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODELS="${MODELS:-100}"
DURATION="${DURATION:-30s}"
SENDERS="${SENDERS:-4}"
SPANS_PER_REQUEST="${SPANS_PER_REQUEST:-400}"
TRACECHECK="${TRACECHECK:-$ROOT/target/release/tracecheck}"
[ -x "$TRACECHECK" ] || cargo build --release --quiet
RATES=("$@")
[ ${#RATES[@]} -gt 0 ] || RATES=(25000 50000 100000)

# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
read -r SINK_GRPC SINK_STATS GRPC HTTP ADMIN <<<"$(free_ports 5)"

start_sink "$SINK_GRPC" "$SINK_STATS"
MODELS_DIR="$(models_dir "$MODELS")"
cat >"$TMP/config.yaml" <<EOF
receivers:
  otlp:
    grpc: { endpoint: "127.0.0.1:$GRPC" }
    http: { endpoint: "127.0.0.1:$HTTP" }
models:
  paths: [$MODELS_DIR]
exporters:
  otlp: { endpoint: "http://127.0.0.1:$SINK_GRPC", protocol: grpc }
admin:
  endpoint: "127.0.0.1:$ADMIN"
EOF

echo "==> $("$TRACECHECK" --version); $(nproc) CPUs; $MODELS models; $SENDERS gRPC senders, $SPANS_PER_REQUEST spans a request, $DURATION a rate" >&2
printf '%-10s %10s %10s %10s %12s %12s\n' "rate" "accepted/s" "p50 ms" "p99 ms" "<=50ms" "CPU us/span"
for rate in "${RATES[@]}"; do
    # A fresh daemon per rate: the histogram holds that rate alone.
    "$TRACECHECK" serve --config "$TMP/config.yaml" >"$TMP/serve.log" 2>&1 &
    TC=$!
    wait_http "http://127.0.0.1:$ADMIN/readyz"
    cpu0=$(cpu_ticks "$TC")
    "$TRACECHECK" bench load --endpoint "http://127.0.0.1:$GRPC" --protocol grpc --senders "$SENDERS" \
        --spans-per-request "$SPANS_PER_REQUEST" --rate "$rate" --duration "$DURATION" \
        --retry --max-retries 1000 --json >"$TMP/load.json"
    # Traces complete 2 s after their last span (the default idle_timeout).
    sleep 4
    cpu1=$(cpu_ticks "$TC")
    get "http://127.0.0.1:$ADMIN/metrics" >"$TMP/metrics.txt"
    kill -TERM "$TC"
    wait "$TC" 2>/dev/null || true
    read -r p50 p99 within <<<"$(delay_quantiles "$TMP/metrics.txt")"
    python3 - "$TMP/load.json" "$rate" "$((cpu1 - cpu0))" "$(getconf CLK_TCK)" "$p50" "$p99" "$within" <<'PY'
import json, sys
load, rate, ticks, hz = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
p50, p99, within = (float(x) for x in sys.argv[5:8])
print(f"{rate:<10} {load['accepted_spans_per_sec']:10.0f} {p50:10.1f} {p99:10.1f} {within:12.4f} "
      f"{ticks / hz * 1e6 / load['spans_accepted']:12.2f}")
PY
done
