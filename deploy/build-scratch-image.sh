#!/usr/bin/env bash
# Builds the FROM-scratch image (deploy/Dockerfile.scratch) with podman,
# offline, and proves it works without starting a container (containers
# cannot run on the CI machines): the image's root filesystem is exported
# and the binary run inside it with chroot, as the image's non-root user:
#
#   1. the binary is statically linked (no NEEDED entries, no interpreter);
#   2. `tracecheck --version` runs inside the exported root;
#   3. `tracecheck serve --config /etc/tracecheck/config.yaml` (the image's
#      CMD) starts inside it, in a network namespace of its own so the
#      config's fixed ports cannot collide with anything on the host, and
#      answers /healthz (through `tracecheck health`, the image's
#      HEALTHCHECK), /readyz, and /api/v1/models with the example models;
#      SIGTERM stops it with exit code 0.
#
# Usage: bash deploy/build-scratch-image.sh
#   TRACECHECK_STATIC_BIN=PATH  use this static binary instead of building
#   IMAGE=NAME                  image name (default localhost/tracecheck:scratch)
#   KEEP_ROOTFS=1               keep the exported root filesystem (path printed)
#
# Cost: the static binary is a separate release build for the explicit
# target triple (target/x86_64-unknown-linux-gnu/release), so it never
# invalidates the normal debug/release builds. Cold it took 4m16s on 2 cores,
# 9m12s while other builds shared the cores and the cargo lock; when the
# sources did not change cargo finds it fresh in seconds.
# The podman build and the checks take under a minute.
# Needs root (chroot, unshare) and podman.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET=x86_64-unknown-linux-gnu
IMAGE="${IMAGE:-localhost/tracecheck:scratch}"
NONROOT=65532

started=$SECONDS
say() { echo "    [$((SECONDS - started))s] $*"; }
fail() {
    echo "    FAILED: $*" >&2
    exit 1
}

if [ "$(id -u)" -ne 0 ]; then fail "needs root (chroot, unshare -n)"; fi
command -v podman >/dev/null 2>&1 || fail "podman not installed (apt-get install -y podman)"

# ------------------------------------------------------------ static binary
if [ -n "${TRACECHECK_STATIC_BIN:-}" ]; then
    BIN="$TRACECHECK_STATIC_BIN"
else
    say "cargo build --release --target $TARGET (crt-static)"
    # RUSTFLAGS apply to the target only because --target is explicit, so
    # build scripts and proc macros stay the normal host artifacts.
    (cd "$REPO" && RUSTFLAGS='-C target-feature=+crt-static' \
        cargo build --release --locked --target "$TARGET" --bin tracecheck)
    BIN="$REPO/target/$TARGET/release/tracecheck"
fi
[ -x "$BIN" ] || fail "$BIN is not an executable"
if command -v readelf >/dev/null 2>&1; then
    if readelf -d "$BIN" | grep -q '(NEEDED)' || readelf -lW "$BIN" | grep -q 'program interpreter'; then
        fail "$BIN is dynamically linked; it would not start in a scratch image"
    fi
    say "static: no shared libraries, no interpreter ($(du -h "$BIN" | cut -f1))"
fi

# ------------------------------------------------------------ build context
TMP="$(mktemp -d)"
cleanup() {
    if [ -n "${SERVE_PID:-}" ]; then kill "$SERVE_PID" 2>/dev/null || true; fi
    if [ -n "${CID:-}" ]; then podman rm -f "$CID" >/dev/null 2>&1 || true; fi
    if [ "${KEEP_ROOTFS:-}" = 1 ]; then
        echo "    root filesystem kept in $TMP/rootfs"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT

# A context of a few MB instead of the repository (whose target/ holds GBs).
CTX="$TMP/context"
mkdir -p "$CTX"
cp "$BIN" "$CTX/tracecheck"
strip --strip-debug "$CTX/tracecheck" 2>/dev/null || true
cp "$REPO/deploy/container/config.yaml" "$CTX/config.yaml"
cp -r "$REPO/config/models" "$CTX/models"
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
[ -s "$CA_BUNDLE" ] || fail "$CA_BUNDLE missing: install ca-certificates (the image trusts these for https://)"
cp "$CA_BUNDLE" "$CTX/ca-certificates.crt"
echo "nonroot:x:$NONROOT:$NONROOT:nonroot:/:/sbin/nologin" >"$CTX/passwd"
echo "nonroot:x:$NONROOT:" >"$CTX/group"

say "podman build -f deploy/Dockerfile.scratch -t $IMAGE"
build_started=$SECONDS
podman build --quiet --format docker --pull=never -f "$REPO/deploy/Dockerfile.scratch" -t "$IMAGE" "$CTX" >/dev/null
say "built in $((SECONDS - build_started))s; $(podman image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.1f MB", $1/1e6}')"
user="$(podman image inspect "$IMAGE" --format '{{.Config.User}}')"
[ "$user" = "$NONROOT:$NONROOT" ] || fail "image user is '$user', expected $NONROOT:$NONROOT"
cmd="$(podman image inspect "$IMAGE" --format '{{json .Config.Entrypoint}} {{json .Config.Cmd}}')"
say "entrypoint/cmd: $cmd; user $user"

# ------------------------------------------------------------ export rootfs
ROOT="$TMP/rootfs"
mkdir -p "$ROOT"
# podman create logs an error about systemd healthcheck timers on hosts
# without systemd; the container is never started, so that does not matter.
CID="$(podman create "$IMAGE" 2>"$TMP/create.log")" || { cat "$TMP/create.log" >&2; fail "podman create"; }
podman export "$CID" | tar -x -C "$ROOT"
podman rm -f "$CID" >/dev/null 2>&1
CID=
say "root filesystem: $(cd "$ROOT" && find . -type f | sort | tr '\n' ' ')"
# What every container runtime puts into a container and chroot does not:
# the device nodes. The static binary needs /dev/urandom (in a static
# binary the getrandom crate cannot look up glibc's getrandom() and reads
# the device instead).
mkdir -p "$ROOT/dev"
mknod -m 666 "$ROOT/dev/null" c 1 3
mknod -m 666 "$ROOT/dev/random" c 1 8
mknod -m 666 "$ROOT/dev/urandom" c 1 9

# ------------------------------------------------------------ run inside
in_root() { chroot --userspec="$NONROOT:$NONROOT" "$ROOT" /usr/local/bin/tracecheck "$@"; }
version="$(in_root --version)"
say "chroot: tracecheck --version -> $version"
[[ "$version" == tracecheck\ * ]] || fail "unexpected --version output: $version"

# The image's CMD, in a fresh network namespace (its own loopback): the
# config binds fixed ports on 0.0.0.0, which other processes on a shared CI
# host may hold.
unshare --net bash -s "$ROOT" "$NONROOT" <<'INNER' || fail "serve inside the exported image"
set -euo pipefail
ROOT="$1"
NONROOT="$2"
ip link set lo up
chroot --userspec="$NONROOT:$NONROOT" "$ROOT" /usr/local/bin/tracecheck serve --config /etc/tracecheck/config.yaml \
    >"$ROOT/../serve.log" 2>&1 &
pid=$!
ok=
for _ in $(seq 1 100); do
    if chroot --userspec="$NONROOT:$NONROOT" "$ROOT" /usr/local/bin/tracecheck health --url http://127.0.0.1:9464/healthz 2>/dev/null; then
        ok=1
        break
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$ok" ]; then
    echo "    /healthz never answered 200; serve log:" >&2
    sed 's/^/      /' "$ROOT/../serve.log" >&2
    kill "$pid" 2>/dev/null || true
    exit 1
fi
echo "    serve (the image's CMD) answers /healthz: tracecheck health exit 0"
ready=
for _ in $(seq 1 50); do
    if curl -fsS http://127.0.0.1:9464/readyz >/dev/null 2>&1; then ready=1; break; fi
    sleep 0.1
done
[ -n "$ready" ] || { echo "    /readyz never answered 200" >&2; kill "$pid"; exit 1; }
models="$(curl -fsS http://127.0.0.1:9464/api/v1/models | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["models"]) if isinstance(d, dict) else len(d))')"
echo "    /readyz 200; /api/v1/models lists $models models"
[ "$models" -ge 1 ] || { echo "    no models loaded from /etc/tracecheck/models" >&2; kill "$pid"; exit 1; }
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
echo "    SIGTERM -> exit $rc"
[ "$rc" -eq 0 ]
INNER
say "image $IMAGE works (static binary, non-root, serve + health inside its root filesystem)"
