#!/usr/bin/env bash
# bench/idle-memory.sh: Portico's RSS with N idle keep-alive connections, with nothing but the
# Rust toolchain (bench/loadgen holds the connections; a second Portico with `--demo` is the
# origin). Memory is not CPU-sensitive: this can run on a busy machine.
#
#   bench/idle-memory.sh [PORTICO_BINARY...]     # default: target/release/portico
#   N=10000 HOLD=3 bench/idle-memory.sh
#
# Prints, per binary: connections held, RSS before and while held (KiB), KiB per connection.
# Every process it starts is stopped by pid on exit.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/common.sh
. "$HERE/common.sh"
ROOT=$(dirname "$HERE")
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
N=${N:-10000}
HOLD=${HOLD:-3}
ORIGIN_LISTEN=19620
ORIGIN_ADMIN=19621
LISTEN=19610
ADMIN=19611
WORK=$(mktemp -d /tmp/portico-idle.XXXXXX)
BINARIES=("$@")
[ ${#BINARIES[@]} -gt 0 ] || BINARIES=("$TARGET/release/portico")

raise_fd_limit $((N + 500)) "N=$N"

PIDS=()
trap 'interrupt_all "$WORK"' EXIT

LOADGEN=$(build_loadgen)

# portico_yaml NAME LISTEN ADMIN: one worker thread, the three demo origins as backends, access
# log off (as bench/run.sh runs it).
portico_yaml() {
    cat <<CONF
threads: 1
pid_file: $WORK/$1.pid
upgrade_sock: $WORK/$1.sock
listen: "127.0.0.1:$2"
health_check_frequency: 1s
backends: [http://127.0.0.1:9001, http://127.0.0.1:9002, http://127.0.0.1:9003]
admin: {listen: "127.0.0.1:$3"}
access_log: false
CONF
}

portico_yaml origin "$ORIGIN_LISTEN" "$ORIGIN_ADMIN" >"$WORK/origin.yaml"
"${BINARIES[0]}" --demo -c "$WORK/origin.yaml" >"$WORK/origin.log" 2>&1 &
PIDS+=($!)
"$LOADGEN" wait http://127.0.0.1:9001/ --timeout 30 ||
    { echo "the demo origins did not come up: $WORK/origin.log" >&2; exit 1; }

for bin in "${BINARIES[@]}"; do
    portico_yaml measured "$LISTEN" "$ADMIN" >"$WORK/measured.yaml"
    # Idle connections need no backend connection: lift the default cap ((fd limit - 256) / 2)
    # where the binary has one (older binaries do not know the key).
    echo "max_connections: $((N + 100))" >>"$WORK/measured.yaml"
    if ! "$bin" -t -c "$WORK/measured.yaml" >/dev/null 2>&1; then
        portico_yaml measured "$LISTEN" "$ADMIN" >"$WORK/measured.yaml"
    fi
    "$bin" -c "$WORK/measured.yaml" >"$WORK/measured.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    "$LOADGEN" wait "http://127.0.0.1:$LISTEN/" --timeout 30 ||
        { echo "$bin did not come up: $WORK/measured.log" >&2; exit 1; }
    read -r _ held before during < <("$LOADGEN" idle "http://127.0.0.1:$LISTEN/" -n "$N" \
        --hold "$HOLD" --pid "$pid")
    per=$(awk -v b="$before" -v d="$during" -v n="$held" 'BEGIN { printf "%.1f", (d - b) / n }')
    echo "$bin: $held connections held, RSS $before KiB before, $during KiB held, $per KiB each"
    kill -INT "$pid"
    wait "$pid" 2>/dev/null || true
done
