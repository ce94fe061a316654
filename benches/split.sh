#!/usr/bin/env bash
# "Waiting costs little" (issue 17), on traffic shaped as production sends
# it: two tracecheck builds side by side in one run, OLD (before the
# verdict-timing change) and NEW, alternating, each a fresh daemon with the
# same config and models, taking the same split load.
#
# The load is `tracecheck bench load --split SPLIT --spread SPREAD` from the
# NEW binary (the old one has no --split): every trace cut into SPLIT
# fragments sent by different senders (connections) over SPREAD, the
# fragment holding the root last, each request carrying ~SPANS_PER_REQUEST
# spans of fragments of many traces; over OTLP/gRPC for DURATION, flat out
# or at a rate, retrying refusals; then the fragments of the traces begun,
# so every trace is sent whole. Both daemons forward to the NEW binary's
# counting sink.
#
# Config, both daemons: receivers, MODELS models (`bench models --count`:
# the bank model, 9 matching every trace, the rest matching nothing),
# forwarding over gRPC with the exporter's defaults (gzip), admin, and
# `assembler.max_traces: 1000000` (the NEW default; OLD's was 200 000, and a
# 6 s settle at this rate needs more). Nothing else is set: each daemon's
# own assembler defaults decide completion (OLD: root_settle 500 ms,
# idle_timeout 2 s; NEW: settle 6 s, root_settle 500 ms for early passes).
# OLD refuses `assembler.settle`, so it is not set on either.
#
# Per run it prints: accepted spans/s (the load generator's, over the run
# including the drain of the last fragments), delivered spans/s (accepted
# spans over the time until the sink held them all), the daemon's CPU per
# span (user + system, from the load's start until every trace was judged),
# peak RSS (VmHWM), and from VmRSS and tracecheck_buffer_spans sampled
# every SAMPLE seconds: the buffered spans' plateau (their median over the
# samples above half the peak), resident memory per buffered span once the
# buffer has filled (memory.sh's growth per span, (VmRSS - VmRSS before the
# load) / buffered spans, at the first sample at 90 % of the plateau; under
# flow, so it includes the request buffers that buffered spans keep alive
# with the spans of those requests already done, and the forwarding
# queue), and how much resident memory grew after that, the buffer full
# (NEW: the settled traces copied out for late spans, up to 32 MiB; both:
# the result store, the allocator's retained pages); then the sink's lost
# and duplicated spans, and the bank model's verdicts: traces judged,
# violating traces sent, failures, and the failures a `watch --verdict
# fail` stream saw (distinct trace IDs).
#
# Checks (exit 1 if any fails): 0 lost, 0 duplicated, every violating trace
# failed exactly once (failures = violating sent, every failure on a
# distinct trace), every trace judged once (judged = traces sent whole).
#
# Usage: OLD=/work/target-old/release/tracecheck bash benches/split.sh
#   NEW=path (default target/release/tracecheck)
#   SPREADS="300ms 5s@60000" (each SPREAD[@RATE]: without a rate, flat out)
#   ROUNDS=2 (per spread: old, new, old, new, ...)  SPLIT=4 MODELS=100
#   DURATION=20s SENDERS=4 SPANS_PER_REQUEST=400 SAMPLE=0.5
#   OUT=target/split.json (each run's files in target/split-runs/)
#   GZIP=1 (senders compress with gzip)  JSON_SENDERS=0 (of SENDERS, OTLP/HTTP JSON)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SPREADS="${SPREADS:-300ms}"
ROUNDS="${ROUNDS:-2}"
SPLIT="${SPLIT:-4}"
MODELS="${MODELS:-100}"
DURATION="${DURATION:-20s}"
SENDERS="${SENDERS:-4}"
SPANS_PER_REQUEST="${SPANS_PER_REQUEST:-400}"
SAMPLE="${SAMPLE:-0.5}"
# GZIP=1: the senders compress their requests (gRPC gzip, as the
# Collector's exporters do by default); JSON_SENDERS=N of SENDERS send
# OTLP/HTTP JSON instead.
GZIP="${GZIP:-}"
JSON_SENDERS="${JSON_SENDERS:-0}"
OUT="${OUT:-$ROOT/target/split.json}"
NEW="${NEW:-$ROOT/target/release/tracecheck}"
OLD="${OLD:?OLD=path to the tracecheck built before the verdict-timing change}"
[ -x "$NEW" ] || { echo "no $NEW: cargo build --release" >&2; exit 2; }
[ -x "$OLD" ] || { echo "no $OLD" >&2; exit 2; }

# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

# Copies, so that a build in progress cannot swap a binary mid-run.
cp "$NEW" "$TMP/tc-new"
cp "$OLD" "$TMP/tc-old"
TRACECHECK="$TMP/tc-new"

# Each run's load report, final scrape, samples and log, kept.
RAW="${OUT%.json}-runs"
mkdir -p "$RAW"
read -r SINK_GRPC SINK_STATS GRPC HTTP ADMIN <<<"$(free_ports 5)"
start_sink "$SINK_GRPC" "$SINK_STATS"
models_dir "$MODELS" >/dev/null
{
    default_config "$TMP/models"
    printf 'assembler:\n  max_traces: 1000000\n'
} >"$TMP/config.yaml"

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
sink_unique() { get "http://127.0.0.1:$SINK_STATS/stats" | python3 -c 'import json, sys; print(json.load(sys.stdin)["unique_spans"])'; }

# sampler PID FILE: "seconds VmRSS_kib buffer_spans buffer_bytes" every SAMPLE s.
sampler() {
    python3 - "$1" "http://127.0.0.1:$ADMIN/metrics" "$2" "$SAMPLE" <<'PY'
import sys, time, urllib.request
pid, url, out, every = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
wanted = ("tracecheck_buffer_spans", "tracecheck_buffer_bytes")
t0 = time.monotonic()
with open(out, "w") as f:
    while True:
        try:
            with open(f"/proc/{pid}/status") as s:
                rss = next(int(l.split()[1]) for l in s if l.startswith("VmRSS"))
        except (OSError, StopIteration):
            break
        values = dict.fromkeys(wanted, "nan")
        try:
            text = urllib.request.urlopen(url, timeout=2).read().decode()
            for line in text.splitlines():
                name, _, value = line.partition(" ")
                if name in values:
                    values[name] = value.split(" ")[0]
        except OSError:
            pass
        f.write(f"{time.monotonic() - t0:.2f} {rss} {values[wanted[0]]} {values[wanted[1]]}\n")
        f.flush()
        time.sleep(every)
PY
}

echo "==> new: $("$TMP/tc-new" --version); old: $("$TMP/tc-old" --version); $(nproc) CPUs; $MODELS models; load: grpc${GZIP:+ gzip}, $SENDERS senders ($JSON_SENDERS JSON), ~$SPANS_PER_REQUEST spans/request, --split $SPLIT, spread[@rate] $SPREADS, $DURATION, retrying; $ROUNDS rounds of old, new" >&2
: >"$TMP/results.jsonl"
run=0
for shape in $SPREADS; do
    spread=${shape%@*}
    rate=
    [ "$shape" = "$spread" ] || rate=${shape#*@}
    for round in $(seq 1 "$ROUNDS"); do
        for which in old new; do
            run=$((run + 1))
            bin="$TMP/tc-$which"
            name="$run-$which-$spread"
            echo "==> run $run: $which, spread $spread, ${rate:-flat out}${rate:+ spans/s} (round $round)" >&2
            post "http://127.0.0.1:$SINK_STATS/reset"
            "$bin" serve --config "$TMP/config.yaml" >"$TMP/$name.log" 2>&1 &
            TC=$!
            PIDS+=("$TC")
            wait_http "http://127.0.0.1:$ADMIN/readyz"
            get "http://127.0.0.1:$ADMIN/metrics" >"$TMP/$name.start.txt"
            loaded=$(python3 "$ROOT/benches/promtext.py" sum "$TMP/$name.start.txt" tracecheck_models_loaded)
            [ "$loaded" = "$MODELS" ] || { echo "$which loaded $loaded models, not $MODELS" >&2; cat "$TMP/$name.log" >&2; exit 1; }
            # Each build's own watch client: the stream's messages are its own.
            "$bin" watch --server "http://127.0.0.1:$ADMIN" --model overdraft-rolls-back \
                --verdict fail --format json >"$TMP/$name.fails.jsonl" 2>"$TMP/$name.watch.log" &
            WATCH=$!
            PIDS+=("$WATCH")
            sleep 0.5
            rss0=$(rss_kib "$TC")
            sampler "$TC" "$TMP/$name.samples" &
            SAMPLER=$!
            PIDS+=("$SAMPLER")
            cpu0=$(cpu_ticks "$TC")
            loadavg=$(cut -d' ' -f1 /proc/loadavg)
            t0=$(date +%s.%N)
            "$TRACECHECK" bench load --endpoint "http://127.0.0.1:$GRPC" --protocol grpc \
                --senders "$SENDERS" --spans-per-request "$SPANS_PER_REQUEST" --duration "$DURATION" \
                --split "$SPLIT" --spread "$spread" ${rate:+--rate "$rate"} --retry --max-retries 1000 \
                ${GZIP:+--gzip} --json-senders "$JSON_SENDERS" --json-endpoint "http://127.0.0.1:$HTTP/v1/traces" \
                --json >"$TMP/$name.load.json"
            accepted=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["spans_accepted"])' "$TMP/$name.load.json")
            for _ in $(seq 1 2400); do
                [ "$(sink_unique)" -ge "$accepted" ] && break
                sleep 0.05
            done
            t1=$(date +%s.%N)
            # Until every trace is settled and judged (NEW: settle 6 s after
            # the last span; OLD: root_settle 500 ms after the root).
            wait_settled "http://127.0.0.1:$ADMIN"
            cpu1=$(cpu_ticks "$TC")
            hwm=$(hwm_kib "$TC")
            get "http://127.0.0.1:$ADMIN/metrics" >"$TMP/$name.metrics.txt"
            kill -TERM "$SAMPLER" 2>/dev/null || true
            wait "$SAMPLER" 2>/dev/null || true
            kill -TERM "$WATCH" 2>/dev/null || true
            wait "$WATCH" 2>/dev/null || true
            kill -TERM "$TC" 2>/dev/null || true
            wait "$TC" 2>/dev/null || true
            cp "$TMP/$name.metrics.txt" "$TMP/$name.load.json" "$TMP/$name.samples" "$TMP/$name.log" "$RAW/"
            python3 - "$which" "$shape" "$TMP/$name.load.json" "$(get "http://127.0.0.1:$SINK_STATS/stats")" \
                "$TMP/$name.metrics.txt" "$TMP/$name.samples" "$TMP/$name.fails.jsonl" \
                "$rss0" "$hwm" "$((cpu1 - cpu0))" "$(getconf CLK_TCK)" "$t0" "$t1" "$ROOT/benches" "$loadavg" >>"$TMP/results.jsonl" <<'PY'
import json, math, sys
which, spread, load_file, stats, metrics_file, samples_file, fails_file = sys.argv[1:8]
rss0, hwm, ticks, hz = (int(x) for x in sys.argv[8:12])
t0, t1 = float(sys.argv[12]), float(sys.argv[13])
sys.path.insert(0, sys.argv[14])
loadavg = float(sys.argv[15])
import promtext

load = json.load(open(load_file))
stats = json.loads(stats)

def total(name, **labels):
    return int(sum(v for n, l, v in promtext.samples(metrics_file)
                   if n == name and all(l.get(k) == w for k, w in labels.items())))

samples = []
for line in open(samples_file):
    t, rss, spans, nbytes = line.split()
    spans, nbytes = float(spans), float(nbytes)
    if not math.isnan(spans):
        samples.append((float(t), int(rss), int(spans), nbytes))
peak = max(samples, key=lambda s: s[2]) if samples else None
# The buffer's plateau, and the first sample at 90 % of it: the buffer full.
high = sorted(s[2] for s in samples if peak and s[2] >= peak[2] / 2)
plateau = high[len(high) // 2] if high else None
full = next((s for s in samples if plateau and s[2] >= 0.9 * plateau), None)
fails = [json.loads(l)["trace_id"] for l in open(fails_file) if l.strip()]
accepted = load["spans_accepted"]
completed = {l.get("reason", "?"): int(v) for n, l, v in promtext.samples(metrics_file)
             if n == "tracecheck_traces_completed_total"}
print(json.dumps({
    "daemon": which,
    "spread": spread,
    "loadavg_at_start": loadavg,
    "accepted_per_sec": load["accepted_spans_per_sec"],
    "delivered_per_sec": stats["unique_spans"] / (t1 - t0),
    "elapsed_secs": load["elapsed_secs"],
    "drain_secs": load["split"]["drain_secs"],
    "spans_accepted": accepted,
    "spans_refused": load["spans_refused"],
    "retries": load["retries"],
    "bytes_per_span": load["bytes_accepted"] / accepted if accepted else None,
    "cpu_us_per_span": ticks / hz * 1e6 / accepted if accepted else None,
    "rss_before_mib": rss0 / 1024,
    "rss_peak_mib": hwm / 1024,
    "buffered_spans_peak": peak[2] if peak else None,
    "buffer_bytes_at_peak": peak[3] if peak else None,
    "rss_at_buffer_peak_mib": peak[1] / 1024 if peak else None,
    "buffered_spans_plateau": plateau,
    "seconds_to_fill": full[0] if full else None,
    "rss_per_buffered_span": (full[1] - rss0) * 1024 / full[2] if full and full[2] else None,
    "rss_grown_after_fill_mib": (hwm - full[1]) / 1024 if full else None,
    "lost": max(0, accepted - stats["unique_spans"]),
    "duplicates": stats["duplicate_spans"],
    "traces_started": load["split"]["traces_started"],
    "traces_sent": load["traces_sent"],
    "violating_sent": load["violating_traces_sent"],
    "judged": total("tracecheck_model_verdicts_total", model="overdraft-rolls-back"),
    "failed": total("tracecheck_model_verdicts_total", model="overdraft-rolls-back", verdict="fail"),
    "fails_watched": len(fails),
    "fails_watched_distinct": len(set(fails)),
    "late_spans": total("tracecheck_late_spans_total"),
    "completed": completed,
}))
PY
            tail -1 "$TMP/results.jsonl" | python3 -c 'import json, sys; r = json.load(sys.stdin); print("    accepted/s %.0f, RSS peak %.0f MiB, buffered %s, %s B/span, failed %s of %s violating, judged %s of %s" % (r["accepted_per_sec"], r["rss_peak_mib"], r["buffered_spans_plateau"], r["rss_per_buffered_span"] and round(r["rss_per_buffered_span"]), r["failed"], r["violating_sent"], r["judged"], r["traces_sent"]))' >&2
        done
    done
done

python3 - "$TMP/results.jsonl" "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
json.dump(rows, open(sys.argv[2], "w"), indent=2)
head = ("run", "daemon", "spread", "load avg", "accepted/s", "delivered/s", "CPU µs/span", "RSS peak MiB",
        "buffered spans", "RSS B/buffered span", "RSS MiB grown after", "lost", "dup", "traces", "violating",
        "failed", "watched (distinct)", "judged", "late spans")
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
fmt = lambda v, f="{:,.0f}": "–" if v is None else f.format(v).replace(",", " ")
for i, r in enumerate(rows, 1):
    print("| " + " | ".join([
        str(i), r["daemon"], r["spread"], f"{r['loadavg_at_start']:.1f}", fmt(r["accepted_per_sec"]), fmt(r["delivered_per_sec"]),
        fmt(r["cpu_us_per_span"], "{:.2f}"), fmt(r["rss_peak_mib"]), fmt(r["buffered_spans_plateau"]),
        fmt(r["rss_per_buffered_span"]), fmt(r["rss_grown_after_fill_mib"]), str(r["lost"]), str(r["duplicates"]),
        fmt(r["traces_sent"]),
        fmt(r["violating_sent"]), fmt(r["failed"]),
        f"{r['fails_watched']} ({r['fails_watched_distinct']})", fmt(r["judged"]), fmt(r["late_spans"]),
    ]) + " |")
print()
print("Means per daemon and spread (new / old):")
for spread in dict.fromkeys(r["spread"] for r in rows):
    by = {d: [r for r in rows if r["spread"] == spread and r["daemon"] == d] for d in ("old", "new")}
    if not by["old"] or not by["new"]:
        continue
    for key, label in (("accepted_per_sec", "accepted/s"), ("delivered_per_sec", "delivered/s"),
                       ("cpu_us_per_span", "CPU µs/span"), ("rss_peak_mib", "RSS peak MiB"),
                       ("buffered_spans_plateau", "buffered spans"),
                       ("rss_per_buffered_span", "RSS B per buffered span"),
                       ("rss_grown_after_fill_mib", "RSS MiB grown after")):
        old = statistics.mean(r[key] for r in by["old"] if r[key] is not None)
        new = statistics.mean(r[key] for r in by["new"] if r[key] is not None)
        print(f"  {spread:>6} {label:24} old {old:12,.2f}  new {new:12,.2f}  new/old {new / old:.2f}x")
print(f"(results: {sys.argv[2]})")
bad = []
for i, r in enumerate(rows, 1):
    tag = f"run {i} ({r['daemon']}, {r['spread']})"
    if r["lost"] or r["duplicates"]:
        bad.append(f"{tag}: {r['lost']} lost, {r['duplicates']} duplicated")
    if r["traces_sent"] != r["traces_started"]:
        bad.append(f"{tag}: {r['traces_started']} traces begun, {r['traces_sent']} sent whole")
    if r["failed"] != r["violating_sent"]:
        bad.append(f"{tag}: {r['violating_sent']} violating traces sent, {r['failed']} fail verdicts")
    if r["fails_watched"] != r["fails_watched_distinct"]:
        bad.append(f"{tag}: {r['fails_watched']} failures watched on {r['fails_watched_distinct']} traces")
    if r["judged"] != r["traces_sent"]:
        bad.append(f"{tag}: {r['judged']} bank-model verdicts for {r['traces_sent']} traces")
for b in bad:
    print("CHECK FAILED:", b)
if not bad:
    print("checks: 0 lost, 0 duplicated; every trace sent whole and judged once; every violating trace failed exactly once")
sys.exit(1 if bad else 0)
PY
