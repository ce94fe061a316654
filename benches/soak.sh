#!/usr/bin/env bash
# Overload without loss (issue 6 item 6, issue 8's soak): offers RATE spans/s
# (by default 3x what this box sustains, measured first) for DURATION with
# retrying senders, into tracecheck with MODELS models forwarding to a
# counting sink, and checks what a user would:
#
#   - resident memory, sampled every second (samples in $OUT_DIR/rss.csv),
#     stays under its bound: assembler.max_memory_mib + the forwarding
#     queue's bound (QUEUE requests of SPANS_PER_REQUEST spans) + OVERHEAD_MIB
#     (RELIABILITY.md, "Soak", says what the overhead holds);
#   - senders were told to retry (refusals counted by reason), and none gave
#     up;
#   - every accepted span reached the sink exactly once (lost = 0, dup = 0);
#   - every trace got one verdict of the overdraft model, and it failed
#     exactly the violating traces the generator sent.
#
# Exits 1 if any check fails.
#
# Usage: bash benches/soak.sh
#   DURATION=10m RATE=(spans/s; default 3x a 20 s flat-out calibration run)
#   MODELS=100 SENDERS=4 SPANS_PER_REQUEST=400 MEMORY_MIB=384 QUEUE=200
#   OVERHEAD_MIB=192 OUT_DIR=target/soak
#   SPLIT=1 SPREAD=300ms (production's shape: SPLIT=4, each trace's spans
#   over 4 requests from different senders, the root last, SPREAD apart)
#   JSON_SENDERS=0 (of SENDERS, how many send OTLP/HTTP JSON)
#   TRACECHECK=path/to/tracecheck (default: target/release/tracecheck)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RATE="${RATE:-}"
DURATION="${DURATION:-10m}"
MODELS="${MODELS:-100}"
SENDERS="${SENDERS:-4}"
SPANS_PER_REQUEST="${SPANS_PER_REQUEST:-400}"
MEMORY_MIB="${MEMORY_MIB:-384}"
QUEUE="${QUEUE:-200}"
OVERHEAD_MIB="${OVERHEAD_MIB:-192}"
OUT_DIR="${OUT_DIR:-$ROOT/target/soak}"
SPLIT="${SPLIT:-1}"
SPREAD="${SPREAD:-300ms}"
JSON_SENDERS="${JSON_SENDERS:-0}"
TRACECHECK="${TRACECHECK:-$ROOT/target/release/tracecheck}"
[ -x "$TRACECHECK" ] || cargo build --release --quiet
mkdir -p "$OUT_DIR"

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
assembler:
  max_memory_mib: $MEMORY_MIB
exporters:
  otlp:
    endpoint: http://127.0.0.1:$SINK_GRPC
    protocol: grpc
    queue_size: $QUEUE
admin:
  endpoint: "127.0.0.1:$ADMIN"
EOF
load() { # ARGS... -> JSON on stdout
    "$TRACECHECK" bench load --endpoint "http://127.0.0.1:$GRPC" --protocol grpc --senders "$SENDERS" \
        --spans-per-request "$SPANS_PER_REQUEST" --retry --max-retries 100000 --retry-backoff 50ms \
        --split "$SPLIT" --spread "$SPREAD" \
        --json-senders "$JSON_SENDERS" --json-endpoint "http://127.0.0.1:$HTTP/v1/traces" --json "$@"
}
serve() { # -> TC
    "$TRACECHECK" serve --config "$TMP/config.yaml" >>"$TMP/serve.log" 2>&1 &
    TC=$!
    PIDS+=("$TC")
    wait_http "http://127.0.0.1:$ADMIN/readyz"
}

if [ -z "$RATE" ]; then
    # What this box sustains: flat out with retrying senders, on a daemon
    # of its own (so that its counts do not mix with the soak's).
    serve
    load --duration 20s >"$OUT_DIR/calibration.json"
    kill -TERM "$TC"
    wait "$TC" 2>/dev/null || true
    SUSTAINED=$(python3 -c 'import json, sys; print(int(json.load(open(sys.argv[1]))["accepted_spans_per_sec"]))' "$OUT_DIR/calibration.json")
    RATE=$((3 * SUSTAINED))
    echo "==> calibration: $SUSTAINED spans/s sustained flat out for 20 s; soak at 3x = $RATE spans/s" >&2
    post "http://127.0.0.1:$SINK_STATS/reset"
fi
serve

echo "second,rss_mib,buffer_spans,buffer_mib,exporter_queue,account_mib" >"$OUT_DIR/rss.csv"
(
    start=$SECONDS
    while kill -0 "$TC" 2>/dev/null; do
        rss=$(awk '/^VmRSS/ {print $2}' "/proc/$TC/status" 2>/dev/null || echo 0)
        get "http://127.0.0.1:$ADMIN/metrics" >"$TMP/sample.txt" 2>/dev/null || true
        buf=$(awk '/^tracecheck_buffer_spans / {print int($2)}' "$TMP/sample.txt")
        bytes=$(awk '/^tracecheck_buffer_bytes / {print int($2 / 1048576)}' "$TMP/sample.txt")
        queue=$(awk '/^tracecheck_exporter_queue_size\{/ {print int($2)}' "$TMP/sample.txt")
        account=$(awk '/^tracecheck_memory_bytes\{/ {s += $2} END {print int(s / 1048576)}' "$TMP/sample.txt")
        echo "$((SECONDS - start)),$((rss / 1024)),${buf:-0},${bytes:-0},${queue:-0},${account:-0}" >>"$OUT_DIR/rss.csv"
        sleep 1
    done
) &
SAMPLER=$!

echo "==> offering $RATE spans/s for $DURATION ($SENDERS senders of which $JSON_SENDERS JSON, $SPANS_PER_REQUEST spans a request, traces split in $SPLIT over $SPREAD, retrying) into tracecheck with $MODELS models" >&2
load --rate "$RATE" --duration "$DURATION" >"$OUT_DIR/load.json"

accepted=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["spans_accepted"])' "$OUT_DIR/load.json")
traces=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["traces_sent"])' "$OUT_DIR/load.json")
for _ in $(seq 1 3000); do
    unique=$(get "http://127.0.0.1:$SINK_STATS/stats" | python3 -c 'import json, sys; print(json.load(sys.stdin)["unique_spans"])')
    get "http://127.0.0.1:$ADMIN/metrics" >"$TMP/scrape.txt"
    judged=$(metric "$TMP/scrape.txt" tracecheck_model_verdicts_total 'model="overdraft-rolls-back"')
    done_traces=$(metric "$TMP/scrape.txt" tracecheck_traces_completed_total "")
    [ "$unique" -ge "$accepted" ] && [ "$done_traces" -ge "$traces" ] &&
        { [ "$MODELS" -eq 0 ] || [ "$judged" -ge "$traces" ]; } && break
    sleep 0.1
done
sleep 0.5
get "http://127.0.0.1:$ADMIN/metrics" >"$OUT_DIR/metrics.txt"
stats=$(get "http://127.0.0.1:$SINK_STATS/stats")
kill "$SAMPLER" 2>/dev/null || true
# The logs say why the exporter retried, if it did.
cp "$TMP/serve.log" "$TMP/sink.log" "$OUT_DIR/" 2>/dev/null || true

python3 - "$OUT_DIR/load.json" "$stats" "$OUT_DIR/rss.csv" \
    "$(metric "$OUT_DIR/metrics.txt" tracecheck_model_verdicts_total 'model="overdraft-rolls-back",verdict="fail"')" \
    "$(metric "$OUT_DIR/metrics.txt" tracecheck_traces_completed_total "")" \
    "$(metric "$OUT_DIR/metrics.txt" tracecheck_receiver_refused_spans_total "")" \
    "$(metric "$OUT_DIR/metrics.txt" tracecheck_traces_completed_total 'reason="evicted"')" "$MODELS" \
    "$(metric "$OUT_DIR/metrics.txt" tracecheck_model_verdicts_total 'model="overdraft-rolls-back"')" \
    "$MEMORY_MIB" "$QUEUE" "$SPANS_PER_REQUEST" "$OVERHEAD_MIB" "$SENDERS" \
    "$(metric "$OUT_DIR/metrics.txt" tracecheck_late_fragments_total "")" \
    "$(metric "$OUT_DIR/metrics.txt" tracecheck_verdicts_flipped_total 'model="overdraft-rolls-back",from="skip",to="fail"')" \
    "$(metric "$OUT_DIR/metrics.txt" tracecheck_verdicts_flipped_total 'model="overdraft-rolls-back",from="pass",to="fail"')" \
    "$(metric "$OUT_DIR/metrics.txt" tracecheck_verdicts_flipped_total 'model="overdraft-rolls-back",from="fail",to="pass"')" \
    "$(($(metric "$OUT_DIR/metrics.txt" tracecheck_verdicts_flipped_total 'model="overdraft-rolls-back",from="pass",to="inconclusive"') + \
        $(metric "$OUT_DIR/metrics.txt" tracecheck_verdicts_flipped_total 'model="overdraft-rolls-back",from="skip",to="inconclusive"')))" <<'PY'
import csv, json, sys
load = json.load(open(sys.argv[1]))
stats = json.loads(sys.argv[2])
rows = list(csv.DictReader(open(sys.argv[3])))
failed, completed, refused, evicted, models, judged, memory_mib, queue, spans_per_request, overhead_mib, senders, late_fragments, \
    to_fail, pass_to_fail, fail_to_pass, to_inconclusive = (int(x) for x in sys.argv[4:20])
# Late spans merged into their trace can turn its verdict into a failure
# (or undo one); those that came after it was forgotten make what they
# could change inconclusive instead.
to_fail += pass_to_fail
rss = [int(r["rss_mib"]) for r in rows]
account = [int(r.get("account_mib") or 0) for r in rows]
half = rss[len(rss) // 2:] or rss
# The forwarding queue holds whole received requests: QUEUE of them, at the
# generator's ~231 B a span encoded.
queue_mib = queue * spans_per_request * 231 / 2**20
bound = memory_mib + queue_mib + overhead_mib
checks = [
    ("spans accepted = unique at the sink (nothing lost)", load["spans_accepted"], stats["unique_spans"]),
    ("duplicates at the sink", 0, stats["duplicate_spans"]),
    ("spans refused for good (after retries)", 0, load["spans_refused"]),
    # A retried request can carry spans of traces that completed meanwhile:
    # those come as late fragments, completions of their own.
    ("traces completed, late fragments aside: those sent whole, and at most one open one per sender", True,
     load["traces_sent"] <= completed - late_fragments <= load["traces_sent"] + senders),
    (f"peak RSS within max_memory_mib {memory_mib} + queue {queue_mib:.0f} + overhead {overhead_mib} = {bound:.0f} MiB",
     True, max(rss) <= bound),
    # Sampled once a second; it may pass the limit only by the bodies being
    # read at that instant, counted before admission refuses them: at most
    # a request per sender (400 spans: ~0.1 MB protobuf, ~0.2 MB JSON).
    (f"memory account within its limit {memory_mib} MiB (+{senders} MiB of bodies in flight)",
     True, max(account) <= memory_mib + senders),
]
if models > 0:
    # Traces still open when the load stopped were sent in part: at most one
    # per sender is judged beyond `traces_sent`.
    checks.append(("one overdraft-model verdict per trace", True,
                   load["traces_sent"] <= judged <= load["traces_sent"] + senders))
    # Every violating trace fails, or, when senders' retries split it past
    # what could be merged, is marked inconclusive: never hidden. And no
    # more fail than were violating: no false failure.
    final_failed = failed + to_fail - fail_to_pass
    checks.append(("failures (after late spans' flips) at most the violating traces sent",
                   True, final_failed <= load["violating_traces_sent"]))
    checks.append(("violating traces failed or made inconclusive by late spans (none hidden)",
                   True, load["violating_traces_sent"] <= final_failed + to_inconclusive))
    print(f"overdraft: {failed} failed when judged, flips to fail {to_fail}, fail to pass {fail_to_pass}, "
          f"to inconclusive (late) {to_inconclusive}; violating sent {load['violating_traces_sent']}")
print(f"offered {load['spans_sent'] / load['elapsed_secs']:.0f} spans/s over {load['elapsed_secs']:.0f} s, "
      f"accepted {load['accepted_spans_per_sec']:.0f} spans/s; {load['retries']} retries; "
      f"refusals told to retry (spans): {refused}; errors {load['errors']}")
print(f"RSS: peak {max(rss)} MiB (bound {bound:.0f}), peak in the second half {max(half)} MiB, last {rss[-1]} MiB ({len(rss)} samples); "
      f"memory account: peak {max(account)} MiB of its {memory_mib} MiB limit; evicted traces: {evicted}")
if "split" in load:
    print(f"split: {load['split']['fragments']} fragments over {load['split']['spread_secs']} s; JSON senders {load.get('json_senders', 0)} of {senders}")
print(f"verdicts of the overdraft model: {judged} for {load['traces_sent']} traces sent whole; "
      f"traces completed {completed}, of them late fragments {late_fragments}")
ok = True
for name, want, got in checks:
    good = want == got
    ok &= good
    print(f"{'ok  ' if good else 'FAIL'} {name}: expected {want}, got {got}")
sys.exit(0 if ok else 1)
PY
