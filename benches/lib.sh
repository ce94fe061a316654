# Shared by the benchmark scripts (sourced, not run): a scratch directory
# and child processes cleaned up on exit, free loopback ports, HTTP GETs,
# and reading Prometheus text.

TMP="$(mktemp -d)"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

# free_ports N: N loopback ports that were free a moment ago.
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

get() { python3 -c 'import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=10).read().decode())' "$1"; }
post() { python3 -c 'import sys, urllib.request as u; u.urlopen(u.Request(sys.argv[1], data=b"", method="POST"), timeout=10)' "$1"; }

# wait_http URL: until it answers, or fail after a minute.
wait_http() {
    for _ in $(seq 1 600); do get "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "no answer from $1" >&2
    exit 1
}

# metric FILE NAME LABEL: the sum of NAME's samples whose labels contain LABEL.
metric() {
    python3 - "$1" "$2" "$3" <<'PY'
import sys
path, name, label = sys.argv[1:4]
text = open(path).read()
print(int(sum(float(l.rpartition(" ")[2]) for l in text.splitlines()
              if not l.startswith("#") and l.split("{")[0].split(" ")[0] == name and label in l)))
PY
}

# delay_quantiles FILE [--model ID]... [--not-model ID]...: p50 and p99 (ms,
# interpolated within buckets as PromQL's histogram_quantile does) of
# tracecheck_verdict_delay_seconds, and the share of verdicts within 50 ms.
# The histogram has a series per model (issue 17): they are summed bucket by
# bucket over the models selected (all by default), never mixed
# (benches/promtext.py).
delay_quantiles() {
    local file=$1
    shift
    python3 "$ROOT/benches/promtext.py" hist "$file" tracecheck_verdict_delay_seconds --within 0.05 "$@" |
        awk '{print $2, $3, $5}'
}

# delay_stats FILE [--model ID]... [--not-model ID]...: verdicts, p50 ms,
# p99 ms, mean ms (exact, from _sum / _count) of the verdict delay.
delay_stats() {
    local file=$1
    shift
    python3 "$ROOT/benches/promtext.py" hist "$file" tracecheck_verdict_delay_seconds "$@" |
        awk '{print $1, $2, $3, $4}'
}

# wait_settled ADMIN_URL: until the daemon's buffer is empty (every trace
# settled, late fragments too) and its verdict and flip counters stood
# still for half a second (every settled trace judged, every late fragment
# merged); fails after two minutes.
wait_settled() {
    local before=-1 now
    for _ in $(seq 1 240); do
        # A scrape that failed says nothing: an empty file would read as
        # an empty buffer and counters standing still.
        if ! get "$1/metrics" >"$TMP/settle-scrape.txt" 2>/dev/null; then
            before=-1
            sleep 0.5
            continue
        fi
        now="$(python3 "$ROOT/benches/promtext.py" sum "$TMP/settle-scrape.txt" tracecheck_model_verdicts_total) $(python3 "$ROOT/benches/promtext.py" sum "$TMP/settle-scrape.txt" tracecheck_verdicts_flipped_total)"
        if [ "$(python3 "$ROOT/benches/promtext.py" sum "$TMP/settle-scrape.txt" tracecheck_buffer_traces)" = 0 ] &&
            [ "$now" = "$before" ]; then
            return 0
        fi
        before=$now
        sleep 0.5
    done
    echo "wait_settled: the daemon did not settle within two minutes" >&2
    return 1
}

# cpu_ticks PID: utime + stime of the process, in clock ticks.
# The daemon's config for a benchmark on default assembler and evaluation
# settings: OTLP on $GRPC/$HTTP, models from $1, forwarding to the sink on
# $SINK_GRPC, admin on $ADMIN.
default_config() {
    cat <<EOF
receivers:
  otlp:
    grpc: { endpoint: "127.0.0.1:$GRPC" }
    http: { endpoint: "127.0.0.1:$HTTP" }
models:
  paths: [$1]
exporters:
  otlp: { endpoint: "http://127.0.0.1:$SINK_GRPC", protocol: grpc }
admin:
  endpoint: "127.0.0.1:$ADMIN"
EOF
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# start_sink GRPC_PORT STATS_PORT: the counting sink, cleaned up on exit;
# returns once it answers.
start_sink() {
    "$TRACECHECK" bench sink --grpc "127.0.0.1:$1" --stats "127.0.0.1:$2" >"$TMP/sink.log" 2>&1 &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$2/stats"
}

# models_dir N: a directory holding N generated models (none for 0), on stdout.
models_dir() {
    mkdir -p "$TMP/models"
    [ "$1" -eq 0 ] || "$TRACECHECK" bench models --count "$1" >"$TMP/models/models.yaml"
    echo "$TMP/models"
}
