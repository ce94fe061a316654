#!/usr/bin/env bash
# Verdict delay under load (issue 6 item 5; issue 17): for each rate,
# tracecheck with MODELS models of the bench set, plus the two timing
# models (`tracecheck bench models --timing`: `verdict-early`, which can pass
# early, and `verdict-settled`, which waits for the trace to settle), takes
# RATE spans/s over OTLP/gRPC for DURATION (forwarding to a counting sink)
# on its DEFAULT assembler settings, and the script reads
# `tracecheck_verdict_delay_seconds`.
#
# Since issue 17 that histogram has a series per model and measures from
# the trace's last span received to the model's verdict: an early pass
# comes `assembler.root_settle` (500 ms) after the root arrived, any other
# verdict once the trace has settled (`assembler.settle`, 6 s, without a
# span). Before issue 17 it was one series measured from the moment the
# trace's completion condition was met, i.e. the delay *beyond* the
# completion timeout: figures from before and after do not compare.
#
# Printed per rate: a line for all models (their series summed bucket by
# bucket) and a line for each model of NAMED; each with its verdicts, p50
# and p99 (interpolated within buckets, as PromQL's histogram_quantile
# does: with the daemon's buckets they can be far from the mean, see
# BENCHMARKS.md), the exact mean (_sum / _count), and the daemon's CPU per
# span.
#
# Usage: bash benches/latency.sh [RATE...]     (default: 25000 50000 100000)
#   MODELS=100 DURATION=30s SENDERS=4 SPANS_PER_REQUEST=400
#   TIMING=1 (0: the bench set alone)  NAMED="verdict-early verdict-settled"
#   SPLIT=1 SPREAD=300ms  production's shape with SPLIT=4: each trace's
#     spans over 4 requests from different senders, the root last, the
#     delay still measured from the trace's last span
#   TRACECHECK=path/to/tracecheck (default: target/release/tracecheck)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODELS="${MODELS:-100}"
DURATION="${DURATION:-30s}"
SENDERS="${SENDERS:-4}"
SPANS_PER_REQUEST="${SPANS_PER_REQUEST:-400}"
TIMING="${TIMING:-1}"
SPLIT="${SPLIT:-1}"
SPREAD="${SPREAD:-300ms}"
TRACECHECK="${TRACECHECK:-$ROOT/target/release/tracecheck}"
[ -x "$TRACECHECK" ] || cargo build --release --quiet
RATES=("$@")
[ ${#RATES[@]} -gt 0 ] || RATES=(25000 50000 100000)
if [ "$TIMING" = 1 ]; then
    NAMED="${NAMED-verdict-early verdict-settled}"
else
    NAMED="${NAMED-}"
fi

# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
read -r SINK_GRPC SINK_STATS GRPC HTTP ADMIN <<<"$(free_ports 5)"

start_sink "$SINK_GRPC" "$SINK_STATS"
mkdir -p "$TMP/models"
TIMING_FLAG=()
[ "$TIMING" != 1 ] || TIMING_FLAG=(--timing)
"$TRACECHECK" bench models --count "$MODELS" "${TIMING_FLAG[@]}" >"$TMP/models/models.yaml"
# No assembler section: the daemon's defaults (settle 6 s, root_settle 500 ms).
default_config "$TMP/models" >"$TMP/config.yaml"

echo "==> $("$TRACECHECK" --version); $(nproc) CPUs; $MODELS models$([ "$TIMING" != 1 ] || echo " + verdict-early + verdict-settled"); $SENDERS gRPC senders, $SPANS_PER_REQUEST spans a request, $DURATION a rate; default assembler settings" >&2
printf '%-8s %10s  %-18s %9s %9s %9s %9s %12s  %s\n' "rate" "accepted/s" "models" "verdicts" "p50 ms" "p99 ms" "mean ms" "CPU us/span" "buckets (s) holding the verdicts"
for rate in "${RATES[@]}"; do
    # A fresh daemon per rate: the histogram holds that rate alone.
    "$TRACECHECK" serve --config "$TMP/config.yaml" >"$TMP/serve.log" 2>&1 &
    TC=$!
    wait_http "http://127.0.0.1:$ADMIN/readyz"
    cpu0=$(cpu_ticks "$TC")
    "$TRACECHECK" bench load --endpoint "http://127.0.0.1:$GRPC" --protocol grpc --senders "$SENDERS" \
        --spans-per-request "$SPANS_PER_REQUEST" --rate "$rate" --duration "$DURATION" \
        --split "$SPLIT" --spread "$SPREAD" --retry --max-retries 1000 --json >"$TMP/load.json"
    # Until every trace has settled (6 s after its last span) and been judged.
    wait_settled "http://127.0.0.1:$ADMIN"
    cpu1=$(cpu_ticks "$TC")
    get "http://127.0.0.1:$ADMIN/metrics" >"$TMP/metrics.txt"
    kill -TERM "$TC"
    wait "$TC" 2>/dev/null || true
    read -r accepted spans <<<"$(python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(round(r["accepted_spans_per_sec"]), r["spans_accepted"])' "$TMP/load.json")"
    cpu_per_span=$(python3 -c 'import sys; t, hz, n = map(int, sys.argv[1:]); print(f"{t / hz * 1e6 / n:.2f}")' "$((cpu1 - cpu0))" "$(getconf CLK_TCK)" "$spans")
    read -r n p50 p99 mean <<<"$(delay_stats "$TMP/metrics.txt")"
    spread=$(python3 "$ROOT/benches/promtext.py" spread "$TMP/metrics.txt" tracecheck_verdict_delay_seconds)
    printf '%-8s %10s  %-18s %9s %9s %9s %9s %12s  %s\n' "$rate" "$accepted" "all (summed)" "$n" "$p50" "$p99" "$mean" "$cpu_per_span" "$spread"
    for model in $NAMED; do
        read -r n p50 p99 mean <<<"$(delay_stats "$TMP/metrics.txt" --model "$model")"
        spread=$(python3 "$ROOT/benches/promtext.py" spread "$TMP/metrics.txt" tracecheck_verdict_delay_seconds --model "$model")
        printf '%-8s %10s  %-18s %9s %9s %9s %9s %12s  %s\n' "" "" "$model" "$n" "$p50" "$p99" "$mean" "" "$spread"
    done
done
