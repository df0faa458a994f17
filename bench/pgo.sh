#!/usr/bin/env bash
# bench/pgo.sh: builds Portico with profile-guided optimisation (PGO) and prints the binary's path.
#
#   bench/pgo.sh                       # -> <target>/pgo-use/release/portico
#
# 1. builds an instrumented Portico (its own target directory: the compiler flags differ);
# 2. trains it on loopback: one nginx origin on three ports, then wrk with keep-alive GETs,
#    GETs on new connections (`Connection: close`), 4 KiB POSTs, and admin /status and /metrics
#    scrapes, so the profile covers more than the benchmark's one request;
# 3. merges the profile with the toolchain's `llvm-profdata` (rustup component `llvm-tools`,
#    installed when missing) and builds Portico again with it (release profile: fat LTO, mimalloc).
#
# Needs what bench/run.sh needs (nginx, wrk, curl) and ~10 minutes on 2 cores. Every process it
# starts is stopped by pid on exit. Knobs: CARGO_TARGET_DIR (default <repo>/target), TRAIN (s).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
TRAIN=${TRAIN:-10}
WORK=$(mktemp -d /tmp/portico-pgo.XXXXXX)
PORTS=(19501 19502 19503)
LISTEN=19510
ADMIN=19511

host=$(rustc -vV | sed -n 's/^host: //p')
PROFDATA=$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata
if [ ! -x "$PROFDATA" ]; then
    echo "installing the llvm-tools rustup component (for llvm-profdata)" >&2
    rustup component add llvm-tools >&2
fi
for tool in nginx wrk curl; do
    command -v "$tool" >/dev/null || { echo "$tool is needed (see bench/run.sh)" >&2; exit 1; }
done

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"   # the profile is only needed by the second build
}
trap cleanup EXIT

# --- 1. instrumented build -------------------------------------------------------------------
echo "pgo: instrumented build into $TARGET/pgo-gen" >&2
(cd "$ROOT" && RUSTFLAGS="-Cprofile-generate=$WORK/raw" CARGO_TARGET_DIR=$TARGET/pgo-gen \
    cargo build --release --quiet --bin portico)
rm -rf "$WORK/raw"   # build scripts and proc macros ran instrumented too: not Portico's profile

# --- 2. training -----------------------------------------------------------------------------
listens=""
servers=""
for p in "${PORTS[@]}"; do
    listens+="listen 127.0.0.1:$p;"
    servers+="  - http://127.0.0.1:$p"$'\n'
done
cat >"$WORK/origin.conf" <<EOF
daemon off; master_process off; worker_processes 1; pid $WORK/origin.pid;
error_log $WORK/origin.err crit;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000;
       server { $listens location / { return 200 "ok"; } } }
EOF
nginx -c "$WORK/origin.conf" -p "$WORK" >/dev/null 2>&1 &
PIDS+=($!)
cat >"$WORK/portico.yaml" <<EOF
threads: 1
pid_file: $WORK/portico.pid
upgrade_sock: $WORK/portico.sock
listen: "127.0.0.1:$LISTEN"
strategy: round-robin
health_check_frequency: 1s
health_check: {path: /, timeout: 1s, rise: 1, fall: 3}
backends:
$servers
admin: {listen: "127.0.0.1:$ADMIN"}
access_log: false
EOF
"$TARGET/pgo-gen/release/portico" -c "$WORK/portico.yaml" >"$WORK/portico.log" 2>&1 &
portico=$!
PIDS+=($portico)
for _ in $(seq 100); do
    [ "$(curl -s --max-time 1 "http://127.0.0.1:$LISTEN/" || true)" = ok ] && break
    sleep 0.2
done
[ "$(curl -s --max-time 1 "http://127.0.0.1:$LISTEN/" || true)" = ok ] ||
    { echo "instrumented portico did not come up: $WORK/portico.log" >&2; exit 1; }
cat >"$WORK/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = string.rep("x", 4096)
EOF
echo "pgo: training for about $((TRAIN * 2)) s" >&2
url="http://127.0.0.1:$LISTEN/"
wrk -t1 -c50 -d"${TRAIN}s" "$url" >/dev/null
wrk -t1 -c10 -d"$((TRAIN / 4 + 1))s" -H "Connection: close" "$url" >/dev/null
wrk -t1 -c10 -d"$((TRAIN / 4 + 1))s" -s "$WORK/post.lua" "$url" >/dev/null
for _ in $(seq 20); do
    curl -s "http://127.0.0.1:$ADMIN/status" >/dev/null
    curl -s "http://127.0.0.1:$ADMIN/metrics" >/dev/null
done
kill -INT "$portico"   # the profile is written when the process exits
wait "$portico" || true
ls "$WORK"/raw/*.profraw >/dev/null 2>&1 || { echo "no profile was written" >&2; exit 1; }

# --- 3. optimised build ----------------------------------------------------------------------
"$PROFDATA" merge -o "$WORK/portico.profdata" "$WORK"/raw/*.profraw
echo "pgo: optimised build into $TARGET/pgo-use" >&2
(cd "$ROOT" && RUSTFLAGS="-Cprofile-use=$WORK/portico.profdata" CARGO_TARGET_DIR=$TARGET/pgo-use \
    cargo build --release --quiet --bin portico)
echo "$TARGET/pgo-use/release/portico"
