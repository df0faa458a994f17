# shellcheck shell=bash
# bench/common.sh: what the bench scripts share (bench/run.sh and bench/pgo.sh: the very origin
# and Portico configuration the benchmark measures, so that the PGO training runs them; every
# script: the fd limit; the Rust-only scripts: bench/loadgen and their clean-up). Sourced, not run.

# origin_conf DIR PORT...: an nginx origin (one worker, access log off) answering `200 ok` on
# every PORT; its pid and error log go to DIR.
origin_conf() {
    local dir=$1 listens="" p
    shift
    for p in "$@"; do listens+="        listen 127.0.0.1:$p reuseport;"$'\n'; done
    cat <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $dir/origin.pid;
error_log $dir/origin.err crit;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {
$listens        default_type text/plain;
        location / { return 200 "ok"; }
    }
}
CONF
}

# portico_conf DIR NAME PORT ADMIN_PORT EXTRA ORIGIN_PORT...: Portico with all its features on
# (health checks every second, metrics, forwarding headers), one worker thread, round-robin
# over the origin ports, access log off; EXTRA is one more YAML line (may be empty).
portico_conf() {
    local dir=$1 name=$2 port=$3 admin=$4 extra=$5 backends="" p
    shift 5
    for p in "$@"; do backends+="  - http://127.0.0.1:$p"$'\n'; done
    cat <<CONF
threads: 1
pid_file: $dir/$name.pid
upgrade_sock: $dir/$name.sock
$extra
listen: "127.0.0.1:$port"
strategy: round-robin
health_check_frequency: 1s
health_check:
  path: /
  timeout: 1s
  rise: 1
  fall: 3
backends:
$backends
admin:
  listen: "127.0.0.1:$admin"
access_log: false
CONF
}

# wait_ok PORT [PID]: polls http://127.0.0.1:PORT/ until it answers `ok` (30 s at most, less
# if process PID dies first); the status says whether it did.
wait_ok() {
    local port=$1 pid=${2:-$$}
    for _ in $(seq 150); do
        if [ "$(curl -s --max-time 1 "http://127.0.0.1:$port/" || true)" = ok ]; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}

# raise_fd_limit NEEDED WHAT: raises the open-file limit as far as allowed (the hard limit; past
# it needs root) and stops the script when it stays below NEEDED; WHAT names the knob to lower.
raise_fd_limit() {
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    if [ "$(ulimit -n)" -lt "$1" ]; then
        echo "ulimit -n is $(ulimit -n): too low for $2" >&2
        exit 1
    fi
}

# build_loadgen: builds bench/loadgen (release, into $TARGET/loadgen); prints its path.
build_loadgen() {
    CARGO_TARGET_DIR=$TARGET/loadgen cargo build --release --quiet \
        --manifest-path "$HERE/loadgen/Cargo.toml" >&2
    echo "$TARGET/loadgen/release/loadgen"
}

# interrupt_all DIR: SIGINT to every pid in PIDS, waits for each, removes DIR. The Rust-only
# scripts' EXIT trap (Portico writes its PGO profile when it exits on SIGINT).
interrupt_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$1"
}

# haproxy_lb_conf THREADS MAXCONN PORT EXTRA_BIND ORIGIN_PORT...: HAProxy balancing round-robin
# over the origin ports with upstream keep-alive (`http-reuse always`) and X-Forwarded-For;
# EXTRA_BIND is one more `bind` line (e.g. TLS; may be empty).
haproxy_lb_conf() {
    local threads=$1 maxconn=$2 port=$3 extra_bind=$4 i=0 servers="" p
    shift 4
    for p in "$@"; do i=$((i + 1)); servers+="    server s$i 127.0.0.1:$p"$'\n'; done
    cat <<CONF
global
    nbthread $threads
    no strict-limits   # its 2 fds per connection rule wants more than this VM's fd limit allows
    maxconn $maxconn
defaults
    mode http
    option forwardfor
    http-reuse always
    timeout connect 2s
    timeout client 300s
    timeout server 30s
    timeout http-keep-alive 300s
frontend fe
    bind 127.0.0.1:$port
${extra_bind}    default_backend be
backend be
    balance roundrobin
$servers
CONF
}
