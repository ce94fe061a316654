#!/usr/bin/env bash
# One pathological trace does not stall the others (issue 17): the same
# steady traffic, with and without chain traces among it, side by side.
#
# Each case starts a fresh daemon on its DEFAULT assembler and evaluation
# settings (settle 6 s, root_settle 500 ms, evaluation_budget 100 ms, one
# evaluation thread per CPU) with the same models: the bench set (MODELS),
# the two timing models and `chain-descendants` (`tracecheck bench models
# --timing --chain`: `match: span[name = "chain-root"]`, a descendant
# selector `span[name = "chain-root"] span[name = "link"]` with an
# assertion). `tracecheck bench load` sends RATE spans/s of ordinary
# traffic for DURATION; in the `chain` case it also sends a chain trace of
# CHAIN_SPANS spans, each the child of the one before, every CHAIN_EVERY
# from the start (on a connection of its own, in requests of
# CHAIN_SPANS_PER_REQUEST spans, deepest link first, root last).
#
# Printed per case, for the ORDINARY traffic only (the chain's spans and
# the chain model's verdicts left out):
# - accepted/s: the load generator's accepted spans over the run;
# - forwarded/s: spans at the sink (less the chain's) over the time from
#   the start of the load until the sink held every accepted span, and how
#   long after the load ended that was (drain);
# - verdicts/s: pass/fail/inconclusive counted (skips are counted in bulk
#   and left out), scraped every second; mean over the steady window (from
#   settle + 1 s after the start to the end of the load) and its slowest
#   second;
# - verdict delay p50/p99 (interpolated within buckets as
#   histogram_quantile does) and exact mean, over every model but
#   chain-descendants, and for verdict-early and verdict-settled; since
#   the buckets cannot show a stall of a few hundred milliseconds on top of
#   a 6 s settle, also the worst one-second mean delay of verdict-early and
#   verdict-settled (from _sum and _count scraped every second);
# and for the daemon: tracecheck_evaluation_duration_seconds (its count,
# mean, and observations above 95 ms, the bucket edge below the 100 ms
# budget), the chain model's verdicts, inconclusive verdicts by reason,
# slow evaluations and budget log lines.
#
# Usage: bash benches/chain.sh
#   RATE=20000 DURATION=30s SENDERS=4 SPANS_PER_REQUEST=400 MODELS=100
#   CHAIN_SPANS=100000 CHAIN_EVERY=10s CHAIN_SPANS_PER_REQUEST=5000
#   CASES="none chain"   OUT=target/chain.json
#   TRACECHECK=path/to/tracecheck (default: target/release/tracecheck)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RATE="${RATE:-20000}"
DURATION="${DURATION:-30s}"
SENDERS="${SENDERS:-4}"
SPANS_PER_REQUEST="${SPANS_PER_REQUEST:-400}"
MODELS="${MODELS:-100}"
CHAIN_SPANS="${CHAIN_SPANS:-100000}"
CHAIN_EVERY="${CHAIN_EVERY:-10s}"
CHAIN_SPANS_PER_REQUEST="${CHAIN_SPANS_PER_REQUEST:-5000}"
read -r -a CASES <<<"${CASES:-none chain}"
OUT="${OUT:-$ROOT/target/chain.json}"
TRACECHECK="${TRACECHECK:-$ROOT/target/release/tracecheck}"
[ -x "$TRACECHECK" ] || cargo build --release --quiet
CHAIN_MODEL=chain-descendants

# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
read -r SINK_GRPC SINK_STATS GRPC HTTP ADMIN <<<"$(free_ports 5)"

start_sink "$SINK_GRPC" "$SINK_STATS"
mkdir -p "$TMP/models"
"$TRACECHECK" bench models --count "$MODELS" --timing --chain >"$TMP/models/models.yaml"
default_config "$TMP/models" >"$TMP/config.yaml"

echo "==> $("$TRACECHECK" --version); $(nproc) CPUs; $MODELS models + verdict-early, verdict-settled, $CHAIN_MODEL; grpc, $SENDERS senders, $SPANS_PER_REQUEST spans a request, $RATE spans/s for $DURATION; chain case: $CHAIN_SPANS-span chain every $CHAIN_EVERY in requests of $CHAIN_SPANS_PER_REQUEST; default assembler and evaluation settings" >&2
: >"$TMP/results.jsonl"
for case in "${CASES[@]}"; do
    echo "==> $case" >&2
    post "http://127.0.0.1:$SINK_STATS/reset"
    "$TRACECHECK" serve --config "$TMP/config.yaml" >"$TMP/$case.serve.log" 2>&1 &
    TC=$!
    PIDS+=("$TC")
    wait_http "http://127.0.0.1:$ADMIN/readyz"
    # Verdicts of the ordinary traffic, and the sink's spans, once a second.
    python3 - "http://127.0.0.1:$ADMIN/metrics" "http://127.0.0.1:$SINK_STATS/stats" "$CHAIN_MODEL" "$ROOT/benches" >"$TMP/$case.samples.jsonl" <<'PY' &
import json, sys, time, urllib.request
metrics_url, stats_url, chain_model, benches = sys.argv[1:5]
sys.path.insert(0, benches)
import promtext
while True:
    t = time.time()
    try:
        text = urllib.request.urlopen(metrics_url, timeout=5).read().decode().splitlines()
        sink = json.loads(urllib.request.urlopen(stats_url, timeout=5).read())
    except OSError:
        break
    row = {"t": t, "verdicts": 0.0, "sink_spans": sink["unique_spans"]}
    for n, l, v in promtext.parse(text):
        if n == "tracecheck_model_verdicts_total":
            if l.get("model") != chain_model and l.get("verdict") != "skip":
                row["verdicts"] += v
        elif n.startswith("tracecheck_verdict_delay_seconds_") and l.get("model") in ("verdict-early", "verdict-settled"):
            kind = n.rpartition("_")[2]
            if kind in ("sum", "count"):
                row[f"{l['model']}_{kind}"] = v
    print(json.dumps(row), flush=True)
    time.sleep(max(0.0, 1.0 - (time.time() - t)))
PY
    SAMPLER=$!
    PIDS+=("$SAMPLER")
    CHAIN_ARGS=()
    [ "$case" != chain ] || CHAIN_ARGS=(--chain-spans "$CHAIN_SPANS" --chain-every "$CHAIN_EVERY" --chain-spans-per-request "$CHAIN_SPANS_PER_REQUEST")
    cpu0=$(cpu_ticks "$TC")
    t0=$(date +%s.%N)
    "$TRACECHECK" bench load --endpoint "http://127.0.0.1:$GRPC" --protocol grpc --senders "$SENDERS" \
        --spans-per-request "$SPANS_PER_REQUEST" --rate "$RATE" --duration "$DURATION" \
        --retry --max-retries 1000 "${CHAIN_ARGS[@]}" --json >"$TMP/$case.load.json"
    t_load=$(date +%s.%N)
    expected=$(python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(r["spans_accepted"] + (r.get("chain") or {}).get("spans_accepted", 0))' "$TMP/$case.load.json")
    for _ in $(seq 1 1200); do
        unique=$(get "http://127.0.0.1:$SINK_STATS/stats" | python3 -c 'import json, sys; print(json.load(sys.stdin)["unique_spans"])')
        [ "$unique" -ge "$expected" ] && break
        sleep 0.05
    done
    t_drained=$(date +%s.%N)
    wait_settled "http://127.0.0.1:$ADMIN"
    cpu1=$(cpu_ticks "$TC")
    get "http://127.0.0.1:$ADMIN/metrics" >"$TMP/$case.metrics.txt"
    get "http://127.0.0.1:$ADMIN/api/v1/results?model=$CHAIN_MODEL&limit=20" >"$TMP/$case.chain-results.json" || echo '{}' >"$TMP/$case.chain-results.json"
    kill -TERM "$SAMPLER" 2>/dev/null || true
    wait "$SAMPLER" 2>/dev/null || true
    kill -TERM "$TC"
    wait "$TC" 2>/dev/null || true
    stats=$(get "http://127.0.0.1:$SINK_STATS/stats")
    python3 - "$case" "$TMP" "$ROOT/benches" "$CHAIN_MODEL" "$t0" "$t_load" "$t_drained" "$((cpu1 - cpu0))" "$(getconf CLK_TCK)" "$stats" >>"$TMP/results.jsonl" <<'PY'
import json, math, sys
case, tmp, benches, chain_model = sys.argv[1:5]
t0, t_load, t_drained = (float(x) for x in sys.argv[5:8])
ticks, hz, stats = int(sys.argv[8]), int(sys.argv[9]), json.loads(sys.argv[10])
sys.path.insert(0, benches)
import promtext
metrics = f"{tmp}/{case}.metrics.txt"
load = json.load(open(f"{tmp}/{case}.load.json"))
chain = load.get("chain") or {}
samples = [json.loads(l) for l in open(f"{tmp}/{case}.samples.jsonl") if l.strip()]

def delay(**sel):
    buckets, total, count = promtext.histogram(metrics, "tracecheck_verdict_delay_seconds", **sel)
    spread, lower, below = {}, 0.0, 0.0
    for edge, c in buckets:
        if c > below:
            spread[f"({lower:g},{edge:g}]"] = (c - below) / count
        lower, below = edge, c
    return {"verdicts": int(count), "buckets": spread,
            "p50_ms": promtext.quantile(0.5, buckets) * 1e3,
            "p99_ms": promtext.quantile(0.99, buckets) * 1e3,
            "mean_ms": total / count * 1e3 if count else math.nan}

def total(name, **labels):
    return sum(v for n, l, v in promtext.samples(metrics)
               if n == name and all(l.get(k) == x for k, x in labels.items()))

def by(name, label):
    out = {}
    for n, l, v in promtext.samples(metrics):
        if n == name and v:
            out[l.get(label, "")] = out.get(l.get(label, ""), 0) + v
    return out

# Steady window: settled verdicts flow from ~settle (6 s) after the start
# until ~settle after the end of the load.
settle = 6.0
lo, hi = t0 + settle + 1.0, t_load
window = [s for s in samples if lo <= s["t"] <= hi]
rates = [(b["verdicts"] - a["verdicts"]) / (b["t"] - a["t"]) for a, b in zip(window, window[1:])]
mean_rate = ((window[-1]["verdicts"] - window[0]["verdicts"]) / (window[-1]["t"] - window[0]["t"])
             if len(window) > 1 else math.nan)

def worst_second(model):
    """The highest mean delay of `model`'s verdicts counted in one scrape
    interval (~1 s), when (seconds after the start of the load), and the
    median of those per-second means."""
    means = []
    for a, b in zip(samples, samples[1:]):
        n = b.get(f"{model}_count", 0) - a.get(f"{model}_count", 0)
        if n >= 50:
            means.append(((b[f"{model}_sum"] - a[f"{model}_sum"]) / n * 1e3, b["t"] - t0))
    if not means:
        return {"mean_ms": math.nan, "at_s": math.nan, "median_ms": math.nan}
    worst = max(means)
    return {"mean_ms": worst[0], "at_s": worst[1], "median_ms": sorted(means)[len(means) // 2][0]}

buckets, ev_sum, ev_count = promtext.histogram(metrics, "tracecheck_evaluation_duration_seconds")
finite = [(e, c) for e, c in buckets if e != math.inf]
over_95ms = ev_count - next((c for e, c in finite if e >= 0.095), ev_count)
slowest_bucket = None
previous = (0.0, 0.0)
for e, c in buckets:
    if c > previous[1]:
        slowest_bucket = [previous[0], e]
    previous = (e, c)

results = json.load(open(f"{tmp}/{case}.chain-results.json"))
records = results.get("results", results if isinstance(results, list) else [])
row = {
    "case": case,
    "accepted_per_s": load["accepted_spans_per_sec"],
    "spans_accepted": load["spans_accepted"],
    "traces_sent": load["traces_sent"],
    "forwarded_per_s": (stats["unique_spans"] - chain.get("spans_accepted", 0)) / (t_drained - t0),
    "drain_s": t_drained - t_load,
    "sink_duplicates": stats["duplicate_spans"],
    "verdicts_per_s": mean_rate,
    "slowest_second_verdicts_per_s": min(rates) if rates else math.nan,
    "delay_ordinary": delay(not_models=[chain_model]),
    "delay_early": delay(models=["verdict-early"]),
    "delay_settled": delay(models=["verdict-settled"]),
    "delay_chain": delay(models=[chain_model]),
    "worst_second_early": worst_second("verdict-early"),
    "worst_second_settled": worst_second("verdict-settled"),
    "evaluation": {"count": int(ev_count), "mean_us": ev_sum / ev_count * 1e6 if ev_count else math.nan,
                   "p99_us": promtext.quantile(0.99, buckets) * 1e6,
                   "over_95ms": int(over_95ms), "slowest_bucket_s": slowest_bucket},
    "chain_verdicts": {v: int(total("tracecheck_model_verdicts_total", model=chain_model, verdict=v))
                       for v in ("pass", "fail", "inconclusive", "skip")},
    "chain_records": [{k: r.get(k) for k in ("trace_id", "verdict", "inconclusive", "evaluated_at_unix_ms", "early")}
                      for r in records],
    "inconclusive_by_reason": {k: int(v) for k, v in by("tracecheck_inconclusive_verdicts_total", "reason").items()},
    "slow_evaluations": {k: int(v) for k, v in by("tracecheck_model_slow_evaluations_total", "model").items()},
    "budget_log_lines": sum("evaluation_budget" in l for l in open(f"{tmp}/{case}.serve.log")),
    "completed_by_reason": {k: int(v) for k, v in by("tracecheck_traces_completed_total", "reason").items()},
    "truncated_spans": int(total("tracecheck_buffer_truncated_spans_total")),
    "refused_spans": int(total("tracecheck_receiver_refused_spans_total")),
    "cpu_us_per_span": ticks / hz * 1e6 / max(1, load["spans_accepted"] + chain.get("spans_accepted", 0)),
    "load": load,
    "samples": [dict(x, t=x["t"] - t0) for x in samples],
}
print(json.dumps(row))
PY
done

python3 - "$TMP/results.jsonl" "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
json.dump(rows, open(sys.argv[2], "w"), indent=2)
f = lambda x: "nan" if x != x else f"{x:,.0f}".replace(",", " ")
g = lambda x: "nan" if x != x else f"{x:.1f}"
print("ordinary traffic:")
print(f"{'case':<6} {'accepted/s':>10} {'forwarded/s':>11} {'drain s':>7} {'verdicts/s':>10} {'slowest s':>9} "
      f"{'delay p50/p99/mean ms':>24} {'early p50/p99/mean':>22} {'settled p50/p99/mean':>24}")
for r in rows:
    d, e, s = r["delay_ordinary"], r["delay_early"], r["delay_settled"]
    print(f"{r['case']:<6} {f(r['accepted_per_s']):>10} {f(r['forwarded_per_s']):>11} {r['drain_s']:7.1f} "
          f"{f(r['verdicts_per_s']):>10} {f(r['slowest_second_verdicts_per_s']):>9} "
          f"{g(d['p50_ms']) + ' / ' + g(d['p99_ms']) + ' / ' + g(d['mean_ms']):>24} "
          f"{g(e['p50_ms']) + ' / ' + g(e['p99_ms']) + ' / ' + g(e['mean_ms']):>22} "
          f"{g(s['p50_ms']) + ' / ' + g(s['p99_ms']) + ' / ' + g(s['mean_ms']):>24}")
for r in rows:
    for name in ("delay_ordinary", "delay_early", "delay_settled"):
        spread = " ".join(f"{k}:{v:.1%}" for k, v in r[name]["buckets"].items())
        print(f"{r['case']:<6} {name[6:]:<8} buckets (s): {spread}")
    for name in ("early", "settled"):
        w = r[f"worst_second_{name}"]
        print(f"{r['case']:<6} {name:<8} worst 1-s mean delay {g(w['mean_ms'])} ms at {g(w['at_s'])} s "
              f"(median second {g(w['median_ms'])} ms)")
print("daemon:")
for r in rows:
    ev, c = r["evaluation"], r["load"].get("chain") or {}
    print(f"{r['case']:<6} evaluations {ev['count']}, mean {g(ev['mean_us'])} us, p99 {g(ev['p99_us'])} us, "
          f"{ev['over_95ms']} over 95 ms, slowest bucket {ev['slowest_bucket_s']} s; "
          f"CPU {r['cpu_us_per_span']:.2f} us/span; refused {r['refused_spans']}, truncated {r['truncated_spans']}, "
          f"sink duplicates {r['sink_duplicates']}")
    if c:
        print(f"       chains sent whole {c['traces_sent']}/{c['traces_started']} ({c['spans_accepted']} spans, "
              f"largest request {c['largest_request_bytes']} B, longest send {c['longest_send_secs']:.2f} s); "
              f"chain verdicts {r['chain_verdicts']}, delay {r['delay_chain']}")
        print(f"       inconclusive by reason {r['inconclusive_by_reason']}, slow evaluations {r['slow_evaluations']}, "
              f"budget log lines {r['budget_log_lines']}")
        for rec in r["chain_records"]:
            print(f"       result {rec}")
print(f"(all figures: {sys.argv[2]})")
PY
