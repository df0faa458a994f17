#!/usr/bin/env bash
# bench/pgo.sh: builds Portico with profile-guided optimisation (PGO) and prints the binary's path.
#
#   bench/pgo.sh                       # -> <target>/pgo-use/release/portico
#
# 1. builds an instrumented Portico (its own target directory: the compiler flags differ);
# 2. trains it on loopback (bench/run.sh's origin and Portico configuration, from
#    bench/common.sh, on ports of its own): wrk with keep-alive GETs, GETs on new connections
#    (`Connection: close`), 4 KiB POSTs, and admin /status and /metrics scrapes, so the
#    profile covers more than the benchmark's one request;
# 3. merges the profile with the toolchain's `llvm-profdata` (rustup component `llvm-tools`,
#    installed when missing) and builds Portico again with it (release profile: fat LTO, mimalloc).
#
# Needs what bench/run.sh needs (nginx, wrk, curl) and ~10 minutes on 2 cores. Every process it
# starts is stopped by pid on exit. Knobs: CARGO_TARGET_DIR (default <repo>/target), TRAIN (s).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source=bench/common.sh
. "$HERE/common.sh"
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
# The benchmark's own origin and Portico configuration (bench/common.sh).
origin_conf "$WORK" "${PORTS[@]}" >"$WORK/origin.conf"
nginx -c "$WORK/origin.conf" -p "$WORK" >/dev/null 2>&1 &
PIDS+=($!)
portico_conf "$WORK" portico "$LISTEN" "$ADMIN" "" "${PORTS[@]}" >"$WORK/portico.yaml"
"$TARGET/pgo-gen/release/portico" -c "$WORK/portico.yaml" >"$WORK/portico.log" 2>&1 &
portico=$!
PIDS+=($portico)
wait_ok "$LISTEN" "$portico" ||
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
