#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds (default 60), one after
# another, on one core, and prints per target the executions and whether it
# crashed. The seed corpus in fuzz/corpus/<target>/ is read, never written:
# new inputs go to a scratch corpus under fuzz/target/. A crash leaves its
# input in fuzz/artifacts/<target>/; copy it to fuzz/regressions/<target>/
# so that `cargo test --test fuzz_regressions` replays it once fixed.
#
#   fuzz/run.sh [SECONDS]
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Exit status: 0 when no target crashed, 1 otherwise.
set -uo pipefail

seconds="${1:-60}"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."

targets=(otlp_protobuf otlp_json gzip config model tracetest)

# Release code with debug assertions (overflow checks on); no sanitizer:
# the code under test is safe Rust, and panics, aborts, timeouts and
# runaway memory are what is looked for.
flags=(-O -a --sanitizer none)

# One build for all targets, before any clock starts.
cargo +nightly fuzz build "${flags[@]}" || exit 2

crashed=0
results=()
for t in "${targets[@]}"; do
    scratch="$here/target/scratch-corpus/$t"
    mkdir -p "$scratch" "$here/artifacts/$t"
    log="$here/target/$t.log"
    # One process, in the foreground, on one core (no -jobs: with it
    # libFuzzer forks a worker that logs to ./fuzz-N.log instead).
    cargo +nightly fuzz run "${flags[@]}" "$t" "$scratch" "$here/corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 \
        -timeout=10 -print_final_stats=1 >"$log" 2>&1
    status=$?
    execs="$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -1)"
    if [ -z "$execs" ]; then
        execs="$(grep -Eo '#[0-9]+' "$log" | tail -1 | tr -d '#')"
    fi
    if [ "$status" -ne 0 ] || grep -qE 'ERROR: libFuzzer|panicked at|SUMMARY: .*Sanitizer' "$log"; then
        verdict="CRASH (see $log and fuzz/artifacts/$t/)"
        crashed=1
    else
        verdict="no crash"
    fi
    results+=("$(printf '%-14s %6ss  %12s execs  %s' "$t" "$seconds" "${execs:-?}" "$verdict")")
    echo "${results[-1]}"
done

echo
echo "target         duration  executions        result"
printf '%s\n' "${results[@]}"
exit "$crashed"
