#!/usr/bin/env bash
# bench/run.sh: Portico side by side with nginx, HAProxy and a bare Pingora load balancer, on
# loopback, on this machine, in one run. See BENCHMARKS.md for what it measures and the results.
#
#   bench/run.sh                 # full run: 3 rounds of 10 s per proxy + 10,000 idle connections
#   QUICK=1 bench/run.sh         # 1 round of 3 s, 2,000 idle connections, no PGO (a smoke test)
#
# Knobs (environment):
#   ROUNDS, DURATION (load -d), CONNS (load connections), IDLE_CONNS
#   LOAD_CPU, PROXY_CPU        taskset cores of (origin + load generator) and of each proxy
#                              (0 and 1)
#   LOADGEN=oha                load with oha (Rust, tokio; `cargo install oha` when missing)
#                              instead of wrk, as a second opinion on the same layout
#   PROXIES                    subset/order of: nginx haproxy bare bare-tuned portico
#                              (bare-tuned: the bare LB built with Portico's levers: fat LTO,
#                              mimalloc, no compression module; the ceiling of those levers)
#   PGO=0                      skip the profile-guided build (bench/pgo.sh, ~10 min) and its
#                              `portico-pgo` row; default 1 (0 with QUICK=1)
#   LEVERS=1                   also Portico with `work_stealing: true` and with `false`
#   PORTICO_ALT="name=/path/to/portico ..."   extra Portico binaries, same configuration
#                              (e.g. a build without LTO, or a wrapper script setting env vars)
#   BARE_ALT="name=/path/to/bare-lb ..."      extra bare-LB binaries (e.g. built with the levers)
#   PROFILE=1                  perf record -e cpu-clock -g of each proxy in round 1, into
#                              OUT/<name>.perf.data (that round's CPU/request includes perf)
#   SKIP_BUILD=1, CARGO_TARGET_DIR (default <repo>/target), OUT (results directory)
#
# Layout: the origin (one nginx worker answering `200 ok` on three ports) and the load
# generator share LOAD_CPU; each proxy runs alone on PROXY_CPU with one worker thread. Every process this
# script starts is stopped by pid on exit.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source=bench/common.sh
. "$HERE/common.sh"
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    ROUNDS=${ROUNDS:-1}; DURATION=${DURATION:-3s}; IDLE_CONNS=${IDLE_CONNS:-2000}; PGO=${PGO:-0}
else
    ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-10s}; IDLE_CONNS=${IDLE_CONNS:-10000}
fi
CONNS=${CONNS:-50}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
PROXIES=${PROXIES:-"nginx haproxy bare bare-tuned portico"}
LEVERS=${LEVERS:-0}
LOADGEN=${LOADGEN:-wrk}
PGO=${PGO:-1}
PORTICO_ALT=${PORTICO_ALT:-}
BARE_ALT=${BARE_ALT:-}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$(mktemp -d /tmp/portico-bench.XXXXXX)}
ORIGIN_PORTS=(19001 19002 19003)
CLK_TCK=$(getconf CLK_TCK)
mkdir -p "$OUT"

# --- tools -----------------------------------------------------------------------------------
missing=()
for tool in wrk nginx haproxy taskset curl python3; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: wrk nginx-light haproxy (missing: ${missing[*]})"
    apt-get install -y wrk nginx-light haproxy curl python3 >/dev/null
fi
case "$LOADGEN" in
    wrk) ;;
    oha) command -v oha >/dev/null 2>&1 || cargo install --locked oha ;;
    *) echo "LOADGEN must be wrk or oha, not '$LOADGEN'" >&2; exit 2 ;;
esac
raise_fd_limit $((IDLE_CONNS + 1000)) "IDLE_CONNS=$IDLE_CONNS"

# --- build -----------------------------------------------------------------------------------
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    echo "building portico (release) and bench/bare-lb (defaults, and tuned) into $TARGET"
    (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release --quiet --bin portico)
    CARGO_TARGET_DIR=$TARGET cargo build --release --quiet \
        --manifest-path "$HERE/bare-lb/Cargo.toml"
    CARGO_TARGET_DIR=$TARGET cargo build --profile tuned --features tuned --quiet \
        --manifest-path "$HERE/bare-lb/Cargo.toml"
fi
PORTICO_BIN=$TARGET/release/portico
BARE_BIN=$TARGET/release/bare-lb
BARE_TUNED_BIN=$TARGET/tuned/bare-lb
if [ "$PGO" = 1 ]; then
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
        CARGO_TARGET_DIR=$TARGET "$HERE/pgo.sh" >/dev/null
    fi
    PROXIES="$PROXIES portico-pgo"
fi

# --- processes -------------------------------------------------------------------------------
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do   # SIGINT: fast shutdown for nginx, HAProxy and Pingora
        kill -INT "$pid" 2>/dev/null || true
    done
    for sig in TERM KILL; do   # HAProxy stops on TERM; KILL only for what is still there
        for pid in "${PIDS[@]}"; do
            for _ in $(seq 30); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -"$sig" "$pid" 2>/dev/null || true
        done
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

declare -A PID PORT
NAMES=()

# Waits until `port` answers `ok` (bounded); stops the run if it does not.
wait_ready() {
    local name=$1 port=$2
    wait_ok "$port" "${PID[$name]:-$$}" && return 0
    echo "$name on port $port did not come up; log: $OUT/$name.log" >&2
    exit 1
}

start_origin() {
    origin_conf "$OUT" "${ORIGIN_PORTS[@]}" >"$OUT/origin.conf"
    taskset -c "$LOAD_CPU" nginx -c "$OUT/origin.conf" -p "$OUT" >"$OUT/origin.log" 2>&1 &
    PID[origin]=$!
    PIDS+=($!)
    wait_ready origin "${ORIGIN_PORTS[0]}"
}

start_nginx() {
    local port=18081 servers=""
    for p in "${ORIGIN_PORTS[@]}"; do servers+="        server 127.0.0.1:$p;"$'\n'; done
    cat >"$OUT/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile $(ulimit -n);
pid $OUT/nginx.pid;
error_log $OUT/nginx.err crit;
events { worker_connections $((IDLE_CONNS + 2000)); }
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    upstream origin {
$servers        keepalive 128;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
}
EOF
    taskset -c "$PROXY_CPU" nginx -c "$OUT/nginx.conf" -p "$OUT" >"$OUT/nginx.log" 2>&1 &
    PID[nginx]=$!; PORT[nginx]=$port; PIDS+=($!); NAMES+=(nginx)
}

start_haproxy() {
    local port=18082
    haproxy_lb_conf 1 $((IDLE_CONNS + 500)) "$port" "" "${ORIGIN_PORTS[@]}" >"$OUT/haproxy.cfg"
    taskset -c "$PROXY_CPU" haproxy -db -f "$OUT/haproxy.cfg" >"$OUT/haproxy.log" 2>&1 &
    PID[haproxy]=$!; PORT[haproxy]=$port; PIDS+=($!); NAMES+=(haproxy)
}

# start_bare NAME BINARY PORT
start_bare() {
    local name=$1 bin=$2 port=$3 ups
    ups=$(printf '127.0.0.1:%s,' "${ORIGIN_PORTS[@]}")
    printf 'version: 1\nthreads: 1\npid_file: %s/%s.pid\nupgrade_sock: %s/%s.sock\n' \
        "$OUT" "$name" "$OUT" "$name" >"$OUT/$name.yaml"
    BARE_LISTEN=127.0.0.1:$port BARE_UPSTREAMS=${ups%,} \
        taskset -c "$PROXY_CPU" "$bin" -c "$OUT/$name.yaml" >"$OUT/$name.log" 2>&1 &
    PID[$name]=$!; PORT[$name]=$port; PIDS+=($!); NAMES+=("$name")
}

# start_portico NAME BINARY PORT [extra yaml line]
start_portico() {
    local name=$1 bin=$2 port=$3 extra=${4:-}
    portico_conf "$OUT" "$name" "$port" $((port + 1000)) "$extra" "${ORIGIN_PORTS[@]}" \
        >"$OUT/$name.yaml"
    # The idle-connection test holds IDLE_CONNS client connections without backend ones: lift
    # the default cap ((fd limit - 256) / 2) where the binary has it (older ones do not).
    echo "max_connections: $((IDLE_CONNS + 500))" >>"$OUT/$name.yaml"
    "$bin" -t -c "$OUT/$name.yaml" >/dev/null 2>&1 || sed -i '$d' "$OUT/$name.yaml"
    taskset -c "$PROXY_CPU" "$bin" -c "$OUT/$name.yaml" >"$OUT/$name.log" 2>&1 &
    PID[$name]=$!; PORT[$name]=$port; PIDS+=($!); NAMES+=("$name")
}

for port in "${ORIGIN_PORTS[@]}" 18081 18082 18083 18084 18085 18086 19084 19086 18090 18091 18092 18093; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is already in use: stop what listens there first" >&2
        exit 1
    fi
done
start_origin
for p in $PROXIES; do
    case $p in
        nginx) start_nginx ;;
        haproxy) start_haproxy ;;
        bare) start_bare bare "$BARE_BIN" 18083 ;;
        bare-tuned) start_bare bare-tuned "$BARE_TUNED_BIN" 18085 ;;
        portico) start_portico portico "$PORTICO_BIN" 18084 ;;
        portico-pgo) start_portico portico-pgo "$TARGET/pgo-use/release/portico" 18086 ;;
        *) echo "unknown proxy $p" >&2; exit 1 ;;
    esac
done
alt_port=18090
if [ "$LEVERS" = 1 ]; then
    start_portico portico-ws-on "$PORTICO_BIN" $alt_port "work_stealing: true"
    start_portico portico-ws-off "$PORTICO_BIN" $((alt_port + 1)) "work_stealing: false"
    alt_port=$((alt_port + 2))
fi
for alt in $BARE_ALT; do
    start_bare "${alt%%=*}" "${alt#*=}" $alt_port
    alt_port=$((alt_port + 1))
done
for alt in $PORTICO_ALT; do
    start_portico "${alt%%=*}" "${alt#*=}" $alt_port
    alt_port=$((alt_port + 1))
done
for n in "${NAMES[@]}"; do wait_ready "$n" "${PORT[$n]}"; done

# --- load ------------------------------------------------------------------------------------
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# "busy idle" ticks of the load core (wrk + origin): how much it waited on the proxy.
load_core() { awk -v c="cpu$LOAD_CPU" '$1 == c {print $2 + $3 + $4 + $7 + $8, $5 + $6}' /proc/stat; }

# One load run against port $1 for $2: prints `RESULT requests seconds p50_us p99_us non2xx
# socket_errors` (bench/wrk-report.lua; bench/oha-report.py turns oha's JSON into the same).
load() {
    case "$LOADGEN" in
    wrk) taskset -c "$LOAD_CPU" timeout 120 wrk -t1 -c"$CONNS" -d"$2" \
            -s "$HERE/wrk-report.lua" "http://127.0.0.1:$1/" | grep '^RESULT' ;;
    oha) taskset -c "$LOAD_CPU" timeout 120 oha -z "$2" -c "$CONNS" --no-tui \
            --output-format json "http://127.0.0.1:$1/" | python3 "$HERE/oha-report.py" ;;
    esac
}

echo "origin + $LOADGEN on cpu $LOAD_CPU, proxies on cpu $PROXY_CPU;" \
    "$ROUNDS round(s) of $LOADGEN, $CONNS connections, $DURATION"
for n in "${NAMES[@]}"; do   # warm-up: pools, allocator, page cache
    load "${PORT[$n]}" 1s >/dev/null
done
: >"$OUT/runs.tsv"
for round in $(seq "$ROUNDS"); do
    for n in "${NAMES[@]}"; do
        perf_pid=""
        if [ "${PROFILE:-0}" = 1 ] && [ "$round" = 1 ]; then   # cpu-clock: no hardware counters here
            perf record -q -e cpu-clock -F 2999 -g -p "${PID[$n]}" -o "$OUT/$n.perf.data" \
                -- sleep "${DURATION%s}" >/dev/null 2>&1 &
            perf_pid=$!
            PIDS+=("$perf_pid")
        fi
        before=$(cpu_ticks "${PID[$n]}")
        read -r busy0 idle0 <<<"$(load_core)"
        line=$(load "${PORT[$n]}" "$DURATION")
        after=$(cpu_ticks "${PID[$n]}")
        read -r busy1 idle1 <<<"$(load_core)"
        load_idle=$(( 100 * (idle1 - idle0) / (busy1 - busy0 + idle1 - idle0 + 1) ))
        if [ -n "$perf_pid" ]; then wait "$perf_pid" || true; fi
        read -r _ reqs secs p50 p99 non2xx sockerr <<<"$line"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$round" "$reqs" "$secs" "$p50" \
            "$p99" "$non2xx" "$sockerr" "$((after - before))" "$load_idle" >>"$OUT/runs.tsv"
        echo "  round $round $n: $reqs requests in ${secs}s, p99 ${p99}us, cpu $((after - before)) ticks," \
            "load core idle ${load_idle}%"
    done
done

# --- idle connections ------------------------------------------------------------------------
: >"$OUT/idle.tsv"
for n in "${NAMES[@]}"; do
    line=$(taskset -c "$LOAD_CPU" timeout 300 python3 "$HERE/idle_conns.py" 127.0.0.1 \
        "${PORT[$n]}" "${PID[$n]}" "$IDLE_CONNS" 3 | grep '^IDLE' || echo "IDLE 0 0 0")
    read -r _ ok before held <<<"$line"
    printf '%s\t%s\t%s\t%s\n' "$n" "$ok" "$before" "$held" >>"$OUT/idle.tsv"
    echo "  idle $n: $ok/$IDLE_CONNS connections held, RSS ${before} KiB -> ${held} KiB"
    sleep 1
done

# --- report ----------------------------------------------------------------------------------
python3 "$HERE/report.py" "$OUT/runs.tsv" "$OUT/idle.tsv" "$CLK_TCK" "$IDLE_CONNS" | tee "$OUT/report.md"
echo "raw results and logs: $OUT"
