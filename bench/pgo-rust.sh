#!/usr/bin/env bash
# bench/pgo-rust.sh: the fast Portico binary, profile-guided, with nothing but the Rust toolchain.
#
#   bench/pgo-rust.sh            # prints the binary's path: <target>/pgo-rust/use/release/portico
#   TRAIN=20 bench/pgo-rust.sh   # longer training (seconds of keep-alive load; default 10)
#   DEB=1 bench/pgo-rust.sh      # also the .deb, holding that binary (`cargo deb --no-build`;
#                                # needs cargo-deb); prints the package's path last
#
# 1. builds an instrumented Portico (`-Cprofile-generate`, its own target directory);
# 2. trains it on loopback: the instrumented Portico itself serves its three `--demo` origins
#    (127.0.0.1:9001-9003) and proxies to them, and bench/loadgen (a small tokio HTTP/1.1 load
#    generator, built here) sends keep-alive GETs, GETs on new connections, 4 KiB POSTs and
#    admin /status and /metrics scrapes;
# 3. merges the profile with `llvm-profdata` and builds Portico again with it (release profile:
#    fat LTO, mimalloc).
#
# `llvm-profdata` must come from the same LLVM major version as rustc's (`rustc -vV`, line
# "LLVM version"). Looked up in this order: $LLVM_PROFDATA; the rustup component `llvm-tools`
# (`rustup component add llvm-tools`); `llvm-profdata-<major>` on the PATH or in
# /usr/lib/llvm-<major>/bin (Debian: `apt-get install llvm-<major>`; for rustc 1.95, LLVM 22,
# Debian 12 has `llvm-22` in bookworm-security); a plain `llvm-profdata` of that major version.
#
# No nginx, wrk, curl or Python. ~2 full release builds (the instrumented one is reused on the
# next run if the sources of the dependencies did not change). Every process it starts is stopped
# by pid on exit. Knobs: CARGO_TARGET_DIR (default <repo>/target), TRAIN (s), and the ports
# LISTEN, ADMIN (default 19710, 19711); the demo origins' ports are fixed.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/common.sh
. "$HERE/common.sh"
ROOT=$(dirname "$HERE")
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$TARGET/pgo-rust
TRAIN=${TRAIN:-10}
LISTEN=${LISTEN:-19710}
ADMIN=${ADMIN:-19711}
WORK=$(mktemp -d /tmp/portico-pgo-rust.XXXXXX)

# --- llvm-profdata of rustc's LLVM major version -------------------------------------------------
major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
host=$(rustc -vV | sed -n 's/^host: //p')
profdata_major() { "$1" --version 2>/dev/null | sed -n 's/.*LLVM version \([0-9]*\).*/\1/p' | head -1; }
find_profdata() {
    local c
    for c in "${LLVM_PROFDATA:-}" \
        "$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata" \
        "$(command -v "llvm-profdata-$major" || true)" \
        "/usr/lib/llvm-$major/bin/llvm-profdata" \
        "$(command -v llvm-profdata || true)"; do
        if [ -n "$c" ] && [ -x "$c" ] && [ "$(profdata_major "$c")" = "$major" ]; then
            echo "$c"
            return 0
        fi
    done
    return 1
}
PROFDATA=$(find_profdata) || {
    rustup component add llvm-tools >&2 2>/dev/null || true
    PROFDATA=$(find_profdata) || {
        echo "pgo: no llvm-profdata of LLVM $major (rustc's). Install one of:" >&2
        echo "  rustup component add llvm-tools" >&2
        echo "  apt-get install llvm-$major        # Debian/Ubuntu" >&2
        echo "or set LLVM_PROFDATA=/path/to/llvm-profdata (LLVM $major)." >&2
        exit 1
    }
}
echo "pgo: llvm-profdata: $PROFDATA (LLVM $major)" >&2

PIDS=()
trap 'interrupt_all "$WORK"' EXIT

# --- 1. the load generator and the instrumented build --------------------------------------------
LOADGEN=$(build_loadgen)
# A fixed profile directory keeps RUSTFLAGS (and so the instrumented build) the same run to run.
RAW=$OUT/raw
echo "pgo: instrumented build into $OUT/gen" >&2
(cd "$ROOT" && RUSTFLAGS="-Cprofile-generate=$RAW" CARGO_TARGET_DIR=$OUT/gen \
    cargo build --release --locked --quiet --bin portico)
rm -rf "$RAW"   # build scripts and proc macros ran instrumented too: not Portico's profile

# --- 2. training ---------------------------------------------------------------------------------
cat >"$WORK/portico.yaml" <<CONF
threads: 1
pid_file: $WORK/portico.pid
upgrade_sock: $WORK/portico.sock
listen: "127.0.0.1:$LISTEN"
strategy: round-robin
health_check_frequency: 1s
backends: [http://127.0.0.1:9001, http://127.0.0.1:9002, http://127.0.0.1:9003]
admin: {listen: "127.0.0.1:$ADMIN"}
access_log: false
CONF
"$OUT/gen/release/portico" --demo -c "$WORK/portico.yaml" >"$WORK/portico.log" 2>&1 &
portico=$!
PIDS+=("$portico")
"$LOADGEN" wait "http://127.0.0.1:$LISTEN/" --timeout 60 ||
    { echo "pgo: the instrumented portico did not come up:" >&2; cat "$WORK/portico.log" >&2; exit 1; }
echo "pgo: training for about $((TRAIN * 2 + 2)) s" >&2
url="http://127.0.0.1:$LISTEN/"
"$LOADGEN" load "$url" -c 50 -d "$TRAIN" >&2
"$LOADGEN" load "$url" -c 10 -d "$((TRAIN / 4 + 1))" --close >&2
"$LOADGEN" load "$url" -c 10 -d "$((TRAIN / 4 + 1))" --post 4096 >&2
"$LOADGEN" load "http://127.0.0.1:$ADMIN/status" -c 1 -d 1 >&2
"$LOADGEN" load "http://127.0.0.1:$ADMIN/metrics" -c 1 -d 1 >&2
kill -INT "$portico"   # the profile is written when the process exits
wait "$portico" || true
ls "$RAW"/*.profraw >/dev/null 2>&1 || { echo "pgo: no profile was written" >&2; exit 1; }

# --- 3. optimised build --------------------------------------------------------------------------
"$PROFDATA" merge -o "$WORK/portico.profdata" "$RAW"/*.profraw
# Named after its content: a new profile changes RUSTFLAGS, so Cargo rebuilds everything with it.
sum=$(cksum <"$WORK/portico.profdata" | cut -d' ' -f1)
mkdir -p "$OUT"
cp "$WORK/portico.profdata" "$OUT/portico-$sum.profdata"
echo "pgo: optimised build into $OUT/use" >&2
(cd "$ROOT" && RUSTFLAGS="-Cprofile-use=$OUT/portico-$sum.profdata" CARGO_TARGET_DIR=$OUT/use \
    cargo build --release --locked --quiet --bin portico)
echo "$OUT/use/release/portico"

# --- 4. the package, from this binary ------------------------------------------------------------
if [ "${DEB:-0}" = 1 ]; then
    command -v cargo-deb >/dev/null 2>&1 || cargo install --locked --quiet cargo-deb
    mkdir -p "$OUT/debian"
    rm -f "$OUT"/debian/portico_*.deb
    # cargo-deb maps the asset `target/release/portico` into CARGO_TARGET_DIR: the PGO binary.
    (cd "$ROOT" && CARGO_TARGET_DIR=$OUT/use cargo deb --no-build --quiet -o "$OUT/debian" >&2)
    echo "$OUT"/debian/portico_*.deb
fi
