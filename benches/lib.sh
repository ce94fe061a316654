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

# delay_quantiles FILE: p50 and p99 (ms, interpolated within buckets as
# PromQL's histogram_quantile does) of tracecheck_verdict_delay_seconds, and
# the share of verdicts within 50 ms of their trace's completion condition.
delay_quantiles() {
    python3 - "$1" <<'PY'
import sys
buckets = []
for line in open(sys.argv[1]).read().splitlines():
    if line.startswith("tracecheck_verdict_delay_seconds_bucket{"):
        le = line.split('le="')[1].split('"')[0]
        buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
buckets.sort()
total = buckets[-1][1] if buckets else 0
def q(p):
    if not total:
        return float("nan")
    rank, lo, below = p * total, 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return lo * 1e3
            return (lo + (le - lo) * (rank - below) / max(count - below, 1e-9)) * 1e3
        lo, below = le, count
within = next((c for le, c in buckets if abs(le - 0.05) < 1e-9), 0)
print(f"{q(0.5):.1f} {q(0.99):.1f} {within / total if total else float('nan'):.4f}")
PY
}

# cpu_ticks PID: utime + stime of the process, in clock ticks.
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
