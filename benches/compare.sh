#!/usr/bin/env bash
# Side by side, on the same load in one run (issue 6's comparison):
#
#   rotel          rotel-agent (pip install rotel) forwarding to the sink
#   tc-0           tracecheck forwarding to the sink, no models
#   tc-10          … with 10 models (all ten match: the bank model + 9)
#   tc-100         … with 100 models (ten matching, ninety matching nothing)
#   tc-1000        … with 1000 models (ten matching, 990 matching nothing)
#
# Every case gets the same load: `tracecheck bench load` over OTLP/gRPC,
# SENDERS concurrent senders, SPANS_PER_REQUEST spans a request, flat out
# for DURATION, retrying refusals (so the accepted rate is the rate the
# collector sustains, and nothing refused is lost). Everything runs on this
# machine: load generator, collector and sink share its cores, as they would
# on a sidecar's node.
#
# For each case it prints spans/s accepted during the load, spans/s
# delivered (accepted spans over the time until the sink held them all: a
# queue that absorbs a burst does not count as throughput) and its ratio to
# rotel, the collector's CPU time per span (user + system, from /proc, over
# the load and the drain), its peak RSS, what reached the sink (lost = accepted but
# never delivered, dup = delivered twice), and for tracecheck the overdraft
# model's failures against the violating traces the generator sent (each
# must fail exactly once).
#
# The traffic's shape and the forwarding's compression are the same for
# every case:
#   COMPRESSION=none|gzip  what both sides send to the sink with (rotel:
#                  --otlp-exporter-compression; tracecheck: exporters.otlp.
#                  compression). With gzip both compress at the same level:
#                  rotel at its library's default (flate2's, 6), which it
#                  has no setting for, tracecheck at GZIP_LEVEL (default 6,
#                  its compression_params.level; its own default is 1).
#   SPLIT=1        production's shape with SPLIT=4: each trace's spans over
#                  4 requests from different senders, the root last,
#                  SPREAD (300ms) from first to last (`bench load --split`).
#   JSON_SENDERS=0 of the senders, how many send OTLP/HTTP JSON.
#   ASSEMBLER=     tracecheck's assembler settings as a YAML flow map,
#                  e.g. '{ settle: 35s }' (default: none, its defaults)
#   LONG_LIVED=    with SPLIT: the share of traces that are long-lived
#                  (e.g. 0.01), spread over LONG_SPREAD (30s) instead.
#   PERF=SECONDS   record a profile (perf, PERF_RECORD's options) of each tracecheck
#                  case for that long while the load runs, reported by
#                  thread and symbol into PERF_DIR (target/compare-perf)
#   PERF_RECORD='-F 999'  perf record's sampling options, e.g.
#                  '-F 299 --call-graph dwarf,32768' for callers too
#   MATCHING=10    of each tc-N case's models, how many match every trace
#                  and are evaluated (the bank model among them); the rest
#                  match nothing.
# CPU is read once the sink holds every span and, for tracecheck with
# models, every trace has its verdict: the evaluation of the last traces
# is part of the cost.
#
# Usage: bash benches/compare.sh [CASE...]      (default: all five)
#   DURATION=20s SENDERS=4 SPANS_PER_REQUEST=400 RATE= (flat out; or spans/s)
#   TRACECHECK=path/to/tracecheck (default: target/release/tracecheck, built
#   if missing)   ROTEL=path/to/rotel-agent   OUT=results.json
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DURATION="${DURATION:-20s}"
SENDERS="${SENDERS:-4}"
# Empty: flat out (throughput). A rate (spans/s): every case gets the same
# steady load, and the CPU column compares cost per span at equal work.
RATE="${RATE:-}"
SPANS_PER_REQUEST="${SPANS_PER_REQUEST:-400}"
COMPRESSION="${COMPRESSION:-none}"
GZIP_LEVEL="${GZIP_LEVEL:-6}"
SPLIT="${SPLIT:-1}"
SPREAD="${SPREAD:-300ms}"
JSON_SENDERS="${JSON_SENDERS:-0}"
LONG_LIVED="${LONG_LIVED:-}"
ASSEMBLER="${ASSEMBLER:-}"
LONG_SPREAD="${LONG_SPREAD:-30s}"
MATCHING="${MATCHING:-10}"
PERF="${PERF:-}"
PERF_DIR="${PERF_DIR:-$ROOT/target/compare-perf}"
PERF_RECORD="${PERF_RECORD:--F 999}"
[ -z "$PERF" ] || mkdir -p "$PERF_DIR"
case "$COMPRESSION" in none|gzip) ;; *) echo "COMPRESSION must be none or gzip" >&2; exit 2 ;; esac
# The load's settings are the load generator's to check, but only once a
# case has started (and a daemon with it): say what is wrong before any.
bad_setting() { echo "$1" >&2; exit 2; }
[[ "$SENDERS" =~ ^[1-9][0-9]*$ ]] || bad_setting "SENDERS must be a whole number, at least 1 (got '$SENDERS')"
[[ "$SPLIT" =~ ^[1-9][0-9]*$ ]] || bad_setting "SPLIT must be a whole number of fragments, at least 1 (got '$SPLIT')"
[ "$SPLIT" -le "$SENDERS" ] || bad_setting "SPLIT ($SPLIT) cannot exceed SENDERS ($SENDERS): every fragment of a trace goes to another sender"
[[ "$JSON_SENDERS" =~ ^[0-9]+$ ]] && [ "$JSON_SENDERS" -le "$SENDERS" ] ||
    bad_setting "JSON_SENDERS must be a whole number up to SENDERS ($SENDERS) (got '$JSON_SENDERS')"
if [ -n "$LONG_LIVED" ]; then
    [ "$SPLIT" -gt 1 ] || bad_setting "LONG_LIVED needs SPLIT above 1: a long-lived trace is one whose fragments are far apart"
    python3 -c 'import sys; x = float(sys.argv[1]); sys.exit(0 if 0 < x <= 1 else 1)' "$LONG_LIVED" 2>/dev/null ||
        bad_setting "LONG_LIVED must be a share of traces in (0, 1] (got '$LONG_LIVED')"
fi
[[ "$MATCHING" =~ ^[1-9][0-9]*$ ]] ||
    bad_setting "MATCHING must be a whole number of models, at least 1: the bank model is one (got '$MATCHING')"
OUT="${OUT:-$ROOT/target/compare.json}"
WAIT_SECS=120
CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(rotel tc-0 tc-10 tc-100 tc-1000)

TRACECHECK="${TRACECHECK:-$ROOT/target/release/tracecheck}"
if [ ! -x "$TRACECHECK" ]; then
    echo "==> building $TRACECHECK" >&2
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

# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

read -r -a PORTS <<<"$(free_ports 8)"
SINK_GRPC=${PORTS[0]} SINK_STATS=${PORTS[1]} RX_GRPC=${PORTS[2]} RX_HTTP=${PORTS[3]} ADMIN=${PORTS[4]}

wait_port() { # PORT NAME LOG
    local deadline=$((SECONDS + WAIT_SECS))
    until python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$1" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then echo "$2 did not listen on $1:" >&2; cat "$3" >&2; exit 1; fi
        sleep 0.1
    done
}
http() { # METHOD URL
    python3 -c 'import sys, urllib.request as u; print(u.urlopen(u.Request(sys.argv[2], data=b"" if sys.argv[1] == "POST" else None, method=sys.argv[1]), timeout=10).read().decode())' "$1" "$2"
}
rss_peak_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
flip() { # FROM TO: the bank model's verdicts flipped so in the last scrape
    metric "$TMP/scrape.txt" tracecheck_verdicts_flipped_total "model=\"overdraft-rolls-back\",from=\"$1\",to=\"$2\""
}

"$TRACECHECK" bench sink --grpc "127.0.0.1:$SINK_GRPC" --stats "127.0.0.1:$SINK_STATS" >"$TMP/sink.log" 2>&1 &
PIDS+=($!)
wait_port "$SINK_STATS" sink "$TMP/sink.log"
wait_port "$SINK_GRPC" sink "$TMP/sink.log"

start_case() { # CASE -> sets CASE_PID
    local case=$1
    if [ "$case" = rotel ]; then
        "$ROTEL_BIN" start --pid-file "$TMP/rotel.pid" \
            --otlp-grpc-endpoint "127.0.0.1:$RX_GRPC" --otlp-http-endpoint "127.0.0.1:$RX_HTTP" \
            --exporter otlp --otlp-exporter-endpoint "http://127.0.0.1:$SINK_GRPC" \
            --otlp-exporter-protocol grpc --otlp-exporter-compression "$COMPRESSION" >"$TMP/$case.log" 2>&1 &
        CASE_PID=$!
    else
        local n=${case#tc-}
        mkdir -p "$TMP/models-$n"
        [ "$n" -eq 0 ] || "$TRACECHECK" bench models --count "$n" --matching "$MATCHING" >"$TMP/models-$n/models.yaml"
        cat >"$TMP/$case.yaml" <<EOF
receivers:
  otlp:
    grpc: { endpoint: "127.0.0.1:$RX_GRPC" }
    http: { endpoint: "127.0.0.1:$RX_HTTP" }
models:
  paths: [$TMP/models-$n]
exporters:
  otlp:
    endpoint: http://127.0.0.1:$SINK_GRPC
    protocol: grpc
    compression: $COMPRESSION
    compression_params: { level: $GZIP_LEVEL }
admin:
  endpoint: "127.0.0.1:$ADMIN"
${ASSEMBLER:+assembler: $ASSEMBLER}
EOF
        "$TRACECHECK" serve --config "$TMP/$case.yaml" >"$TMP/$case.log" 2>&1 &
        CASE_PID=$!
        wait_port "$ADMIN" "$case" "$TMP/$case.log"
        if [ "$n" -gt 0 ]; then
            # Every failing verdict of the bank model, with its trace ID: each
            # violating trace must fail once, and no trace twice.
            "$TRACECHECK" watch --server "http://127.0.0.1:$ADMIN" --model overdraft-rolls-back \
                --verdict fail --format json >"$TMP/$case.fails.jsonl" 2>"$TMP/$case.watch.log" &
            WATCH_PID=$!
            PIDS+=("$WATCH_PID")
            sleep 0.5
        fi
    fi
    PIDS+=("$CASE_PID")
    wait_port "$RX_GRPC" "$case" "$TMP/$case.log"
}



MODE="flat out"
[ -z "$RATE" ] || MODE="at $RATE spans/s"
SHAPE="whole traces"
[ "$SPLIT" -le 1 ] || SHAPE="traces split in $SPLIT over $SPREAD${LONG_LIVED:+ ($LONG_LIVED of them over $LONG_SPREAD)}"
echo "==> $("$TRACECHECK" --version), $("$ROTEL_BIN" --version 2>&1 | head -1); $(nproc) CPUs; load: grpc ($JSON_SENDERS of them HTTP JSON), $SENDERS senders, $SPANS_PER_REQUEST spans/request, $SHAPE, $DURATION $MODE, retrying; forwarding compression: $COMPRESSION (tracecheck's gzip level $GZIP_LEVEL); models matching every trace: $MATCHING" >&2
: >"$TMP/results.jsonl"
for case in "${CASES[@]}"; do
    echo "==> $case" >&2
    http POST "http://127.0.0.1:$SINK_STATS/reset" >/dev/null
    start_case "$case"
    cpu0=$(cpu_ticks "$CASE_PID")
    t0=$(date +%s.%N)
    PERF_PID=
    if [ -n "$PERF" ] && [ "$case" != rotel ]; then
        # A profile of the daemon while the load runs, a second in.
        # shellcheck disable=SC2086 # PERF_RECORD is a list of options.
        (sleep 1; exec perf record -q $PERF_RECORD -p "$CASE_PID" -o "$PERF_DIR/$case.perf.data" -- sleep "$PERF") \
            >"$PERF_DIR/$case.perf.log" 2>&1 &
        PERF_PID=$!
    fi
    "$TRACECHECK" bench load --endpoint "http://127.0.0.1:$RX_GRPC" --protocol grpc \
        --senders "$SENDERS" --spans-per-request "$SPANS_PER_REQUEST" --duration "$DURATION" \
        ${RATE:+--rate "$RATE"} --retry --max-retries 1000 --split "$SPLIT" --spread "$SPREAD" \
        --json-senders "$JSON_SENDERS" --json-endpoint "http://127.0.0.1:$RX_HTTP/v1/traces" \
        ${LONG_LIVED:+--long-lived "$LONG_LIVED" --long-spread "$LONG_SPREAD"} \
        --json >"$TMP/$case.load.json"
    if [ -n "$PERF_PID" ]; then
        wait "$PERF_PID" || true
        perf report -q -i "$PERF_DIR/$case.perf.data" --no-children --sort comm,dso,symbol --percent-limit 0.7 \
            >"$PERF_DIR/$case.perf.txt" 2>/dev/null || true
        perf report -q -i "$PERF_DIR/$case.perf.data" --no-children --sort comm --percent-limit 0.5 \
            >"$PERF_DIR/$case.threads.txt" 2>/dev/null || true
        if [ -s "$PERF_DIR/$case.perf.txt" ]; then
            echo "==> $case profile: $PERF_DIR/$case.perf.txt (by thread: $case.threads.txt)" >&2
        else
            echo "==> $case profile: perf recorded nothing; see $PERF_DIR/$case.perf.log" >&2
        fi
    fi
    accepted=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["spans_accepted"])' "$TMP/$case.load.json")
    # Drain: until the sink holds every accepted span (or the wait runs out).
    deadline=$((SECONDS + WAIT_SECS))
    while :; do
        unique=$(http GET "http://127.0.0.1:$SINK_STATS/stats" | python3 -c 'import json, sys; print(json.load(sys.stdin)["unique_spans"])')
        [ "$unique" -ge "$accepted" ] && break
        [ $SECONDS -lt $deadline ] || break
        sleep 0.05
    done
    t1=$(date +%s.%N)
    failed_verdicts=null
    inconclusive_verdicts=null
    if [ "$case" != rotel ] && [ "${case#tc-}" -gt 0 ]; then
        # Every trace gets exactly one verdict of the bank model (pass, fail
        # or skip): wait until all sent traces have theirs.
        traces=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["traces_sent"])' "$TMP/$case.load.json")
        deadline=$((SECONDS + WAIT_SECS))
        while :; do
            http GET "http://127.0.0.1:$ADMIN/metrics" >"$TMP/scrape.txt"
            judged=$(metric "$TMP/scrape.txt" tracecheck_model_verdicts_total 'model="overdraft-rolls-back"')
            [ "$judged" -ge "$traces" ] && break
            [ $SECONDS -lt $deadline ] || break
            sleep 0.2
        done
        # Every trace has a verdict once its first part settled; the parts
        # still buffered (a long-lived trace's root, a retried fragment) may
        # yet flip it.
        wait_settled "http://127.0.0.1:$ADMIN" ||
            echo "==> $case: WARNING: verdicts read before the daemon settled; the counts may be short" >&2
        cpu1=$(cpu_ticks "$CASE_PID")
        sleep 0.5
        http GET "http://127.0.0.1:$ADMIN/metrics" >"$TMP/scrape.txt"
        judged=$(metric "$TMP/scrape.txt" tracecheck_model_verdicts_total 'model="overdraft-rolls-back"')
        failed_verdicts=$(metric "$TMP/scrape.txt" tracecheck_model_verdicts_total 'model="overdraft-rolls-back",verdict="fail"')
        # Late spans (a long-lived trace's, a retry's) may flip a verdict
        # given on part of a trace: a failure found then counts, one undone
        # does not, and one made inconclusive is counted apart.
        failed_verdicts=$((failed_verdicts + $(flip skip fail) + $(flip pass fail) - $(flip fail pass)))
        inconclusive_verdicts=$(($(metric "$TMP/scrape.txt" tracecheck_model_verdicts_total 'model="overdraft-rolls-back",verdict="inconclusive"') \
            + $(flip pass inconclusive) + $(flip skip inconclusive)))
        kill -TERM "$WATCH_PID" 2>/dev/null || true
        wait "$WATCH_PID" 2>/dev/null || true
        read -r watched watched_unique <<<"$(python3 -c '
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ids = [l["trace_id"] for l in lines]
print(len(ids), len(set(ids)))' "$TMP/$case.fails.jsonl")"
        evicted=$(metric "$TMP/scrape.txt" tracecheck_traces_completed_total 'reason="evicted"')
        delays=$(delay_quantiles "$TMP/scrape.txt")
    else
        cpu1=$(cpu_ticks "$CASE_PID")
        evicted=null
        judged=null
        watched=null
        watched_unique=null
        delays="nan nan nan"
    fi
    rss=$(rss_peak_kib "$CASE_PID")
    kill -TERM "$CASE_PID" 2>/dev/null || true
    wait "$CASE_PID" 2>/dev/null || true
    stats=$(http GET "http://127.0.0.1:$SINK_STATS/stats")
    python3 - "$case" "$TMP/$case.load.json" "$stats" "$((cpu1 - cpu0))" "$(getconf CLK_TCK)" "$rss" "$failed_verdicts" "$evicted" $delays "$t0" "$t1" "$judged" "$watched" "$watched_unique" "$inconclusive_verdicts" >>"$TMP/results.jsonl" <<'PY'
import json, math, sys
case, load_file, stats, ticks, hz, rss, failed, evicted = sys.argv[1:9]
d50, d99, d_within = (float(x) for x in sys.argv[9:12])
t0, t1 = float(sys.argv[12]), float(sys.argv[13])
judged, watched, watched_unique, inconclusive = (None if x == "null" else int(x) for x in sys.argv[14:18])
nan_none = lambda x: None if math.isnan(x) else x
load = json.load(open(load_file))
stats = json.loads(stats)
cpu_s = int(ticks) / int(hz)
accepted = load["spans_accepted"]
print(json.dumps({
    "case": case,
    "spans_per_sec": load["accepted_spans_per_sec"],
    # Accepted spans over the time from the first send until the sink held
    # them all: what a forwarder sustains, not what its queue can absorb.
    "delivered_per_sec": stats["unique_spans"] / (t1 - t0),
    "spans_accepted": accepted,
    "spans_refused": load["spans_refused"],
    "retries": load["retries"],
    "p50_ms": load["latency"]["p50_ms"], "p99_ms": load["latency"]["p99_ms"],
    "cpu_seconds": cpu_s,
    "cpu_us_per_span": cpu_s * 1e6 / accepted if accepted else None,
    "rss_peak_mib": int(rss) / 1024,
    "sink_unique": stats["unique_spans"],
    "lost": max(0, accepted - stats["unique_spans"]),
    "duplicates": stats["duplicate_spans"],
    "violating_sent": load["violating_traces_sent"],
    "traces_sent": load["traces_sent"],
    "traces_judged": judged,
    "overdraft_failed": None if failed == "null" else int(failed),
    "overdraft_inconclusive": inconclusive,
    "fail_verdicts_watched": watched,
    "fail_verdicts_watched_unique_traces": watched_unique,
    "evicted_traces": None if evicted == "null" else int(evicted),
    "verdict_delay_p50_ms": nan_none(d50),
    "verdict_delay_p99_ms": nan_none(d99),
    "verdicts_within_50ms": nan_none(d_within),
}))
PY
done

python3 - "$TMP/results.jsonl" "$OUT" "$SENDERS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
senders = int(sys.argv[3])
json.dump(rows, open(sys.argv[2], "w"), indent=2)
base = next((r for r in rows if r["case"] == "rotel"), None)
ten = next((r for r in rows if r["case"] == "tc-10"), None)
print(f"{'case':8} {'accepted/s':>10} {'delivered/s':>11} {'×rotel':>7} {'CPU µs/span':>11} {'×tc-10':>7} {'RSS MiB':>8} {'p99 ms':>7} {'lost':>5} {'dup':>5} {'violating':>9} {'failed':>7} {'evicted':>7} {'verdict p50/p99 ms':>18}")
for r in rows:
    ratio = r["delivered_per_sec"] / base["delivered_per_sec"] if base else float("nan")
    cpu = r["cpu_us_per_span"] or float("nan")
    cpu_ratio = cpu / ten["cpu_us_per_span"] if ten and ten["cpu_us_per_span"] else float("nan")
    fmt = lambda v: "-" if v is None else str(v)
    delay = "-" if r["verdict_delay_p50_ms"] is None else f"{r['verdict_delay_p50_ms']:.1f}/{r['verdict_delay_p99_ms']:.1f}"
    print(f"{r['case']:8} {r['spans_per_sec']:10.0f} {r['delivered_per_sec']:11.0f} {ratio:7.2f} {cpu:11.2f} {cpu_ratio:7.2f} {r['rss_peak_mib']:8.0f} {r['p99_ms']:7.1f} {r['lost']:5} {r['duplicates']:5} {r['violating_sent']:9} {fmt(r['overdraft_failed']):>7} {fmt(r['evicted_traces']):>7} {delay:>18}")
print(f"(results: {sys.argv[2]})")
# Correctness, whatever the speed: nothing lost or duplicated, and for
# tracecheck every trace judged once and every violating trace failed once.
bad = []
for r in rows:
    if r["lost"] or r["duplicates"]:
        bad.append(f"{r['case']}: {r['lost']} lost, {r['duplicates']} duplicated")
    if r["overdraft_failed"] is not None:
        # Traces still open when the load stopped were sent in part and are
        # judged too: at most one per sender.
        if not r["traces_sent"] <= r["traces_judged"] <= r["traces_sent"] + senders:
            bad.append(f"{r['case']}: {r['traces_judged']} traces judged of {r['traces_sent']} sent")
        # One verdict per trace (above) and as many failures as violating
        # traces: each failed exactly once. The watcher sees the failures
        # with their trace IDs (all of them unless it fell behind: then the
        # server tells it how many it missed): none may repeat a trace.
        if r["overdraft_failed"] != r["violating_sent"]:
            bad.append(f"{r['case']}: {r['violating_sent']} violating traces sent, {r['overdraft_failed']} fail verdicts, "
                       f"{r.get('overdraft_inconclusive')} inconclusive")
        if r["fail_verdicts_watched"] != r["fail_verdicts_watched_unique_traces"]:
            bad.append(f"{r['case']}: {r['fail_verdicts_watched']} failures watched on only "
                       f"{r['fail_verdicts_watched_unique_traces']} distinct traces")
for b in bad:
    print("CHECK FAILED:", b)
if not bad:
    print("checks: 0 lost, 0 duplicated; every trace judged once; every violating trace failed exactly once")
sys.exit(1 if bad else 0)
PY
