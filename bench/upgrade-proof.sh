#!/usr/bin/env bash
# Reproducible proof of zero-failure graceful upgrades, with a real load generator.
#
#   bench/upgrade-proof.sh            # 3 upgrades, 16 keep-alive connections
#   UPGRADES=5 CONNECTIONS=64 bench/upgrade-proof.sh
#
# Starts two small origins (python3), a release `portico` with a state file, adds the second
# origin through the admin API, runs `wrk` (keep-alive) against the proxy, performs $UPGRADES
# consecutive graceful upgrades (`portico -u`, then SIGQUIT to the old process) and a final
# SIGTERM, and reports requests sent and failed (connect/read/write/timeout errors and
# non-2xx answers). Exits non-zero if any request failed, any process exited non-zero, or the
# admin-added backend is missing after the last upgrade. Needs: cargo, python3, wrk, curl.
# The same proof without external tools: cargo test --test operations upgrades_under_load
set -euo pipefail
cd "$(dirname "$0")/.."

UPGRADES=${UPGRADES:-3}
CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-2}

for tool in python3 wrk curl; do
  command -v "$tool" >/dev/null || { echo "upgrade-proof: needs $tool" >&2; exit 2; }
done
cargo build --release --quiet --bin portico
BIN=$PWD/target/release/portico

dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

origin() { # origin NAME PORT: an HTTP/1.1 keep-alive origin answering its name
  python3 - "$1" "$2" <<'PY' &
import sys, http.server
name, port = sys.argv[1].encode(), int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    wbufsize = 1 << 16
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(name)))
        self.end_headers()
        self.wfile.write(name)
    def log_message(self, *a):
        pass
class S(http.server.ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True
    def handle_error(self, request, client_address):
        pass  # a connection closed by the gateway (an exiting old process) is expected
S(("127.0.0.1", port), H).serve_forever()
PY
  pids+=($!)
}

wait_for() { # wait_for SECONDS COMMAND...: poll until COMMAND succeeds
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then echo "upgrade-proof: timed out: $*" >&2; return 1; fi
    sleep 0.1
  done
}

o1=$(free_port); o2=$(free_port); port=$(free_port); admin=$(free_port)
origin one "$o1"; origin two "$o2"
wait_for 10 curl -sf "http://127.0.0.1:$o1/"; wait_for 10 curl -sf "http://127.0.0.1:$o2/"

cat >"$dir/portico.yaml" <<EOF
pid_file: $dir/portico.pid
upgrade_sock: $dir/upgrade.sock
grace_period_seconds: 10
graceful_shutdown_timeout_seconds: 2
listen: "127.0.0.1:$port"
health_check_frequency: 1s
health_check: {path: /, timeout: 1s, rise: 1, fall: 2}
admin: {listen: "127.0.0.1:$admin"}
state_file: $dir/state.json
access_log: false
backends: [http://127.0.0.1:$o1]
EOF

start() { # start [-u]: a portico process; its pid in $current
  "$BIN" "$@" -c "$dir/portico.yaml" >>"$dir/portico.log" 2>&1 &
  current=$!
  pids+=("$current")
}

start
wait_for 20 curl -sf "http://127.0.0.1:$admin/healthz"
curl -sS --fail-with-body -X POST -H "Content-Type: application/json" -d "{\"url\": \"http://127.0.0.1:$o2\"}" "http://127.0.0.1:$admin/backends" >/dev/null
wait_for 10 sh -c "curl -sf http://127.0.0.1:$port/ | grep -q two"  # the new backend serves

wrk -t"$THREADS" -c"$CONNECTIONS" -d10m --timeout 10s "http://127.0.0.1:$port/" >"$dir/wrk.txt" 2>&1 &
wrk_pid=$!
pids+=("$wrk_pid")
sleep 2

failed_exits=0
for i in $(seq 1 "$UPGRADES"); do
  old=$current
  start -u
  wait_for 20 test -S "$dir/upgrade.sock"
  kill -QUIT "$old"
  rc=0; wait "$old" || rc=$?
  echo "upgrade $i: old pid $old exited $rc, new pid $current"
  [ "$rc" -eq 0 ] || failed_exits=$((failed_exits + 1))
  sleep 1
done

kill -INT "$wrk_pid"; wait "$wrk_pid" || true
status=$(curl -sf "http://127.0.0.1:$admin/status")
kill -TERM "$current"
rc=0; wait "$current" || rc=$?
echo "final SIGTERM: pid $current exited $rc"
[ "$rc" -eq 0 ] || failed_exits=$((failed_exits + 1))

cat "$dir/wrk.txt"
sent=$(awk '/requests in/ {print $1}' "$dir/wrk.txt")
socket_errors=$(awk '/Socket errors/ {for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) n += $i} END {print n + 0}' "$dir/wrk.txt")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$dir/wrk.txt")
failed=$(( ${socket_errors:-0} + ${non2xx:-0} ))
kept=no
echo "$status" | grep -q "http://127.0.0.1:$o2" && kept=yes

echo
echo "upgrades: $UPGRADES   requests sent: ${sent:-0}   requests failed: $failed"
echo "admin-added backend still in the pool after the last upgrade: $kept"
echo "processes that exited non-zero: $failed_exits"
if [ "$failed" -ne 0 ] || [ "$kept" != yes ] || [ "$failed_exits" -ne 0 ] || [ "${sent:-0}" -eq 0 ]; then
  echo "upgrade-proof: FAILED (log: kept in $dir.log)"
  cp "$dir/portico.log" "$dir.log"
  exit 1
fi
echo "upgrade-proof: OK"
