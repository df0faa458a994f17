#!/usr/bin/env bash
# bench/mixes.sh: traffic "mixes" beyond bench/run.sh's small keep-alive GET, for nginx, HAProxy
# and Portico side by side, on loopback, on this machine, in one run. Method as in BENCHMARKS.md:
# CPU time of the proxy process (utime+stime from /proc/PID/stat) per request, ratios vs nginx
# and HAProxy. One Markdown table per mix (bench/mixes_report.py).
#
#   bench/mixes.sh                     # every mix, 3 rounds of 8 s per proxy (~12 min)
#   QUICK=1 bench/mixes.sh             # 1 round of 3 s, c10k with 2,000 connections (~2 min)
#   MIXES="h2 upload" bench/mixes.sh   # some mixes only
#
# Mixes (MIXES: a subset, run in this order):
#   tls-ecdsa  TLS 1.3 handshakes/s: wrk over https with `Connection: close` (a new connection
#              and a full handshake per request, see TLS_RESUME), ECDSA P-256 certificate
#   tls-rsa    the same with an RSA 2048 certificate
#   h2         HTTP/2 over TLS (ECDSA): h2load, 10 connections x 100 concurrent streams
#   64k        64 KiB responses, HTTP/1.1 keep-alive, wrk -c50
#   1m         1 MiB responses, HTTP/1.1 keep-alive, wrk -c20
#   upload     4 MiB POST bodies, HTTP/1.1 keep-alive, wrk -c16 (the origin reads the whole body)
#   c10k       10,000 concurrent keep-alive connections doing 2-byte GETs (wrk --timeout 10s)
#   threads2   the 2-byte keep-alive GET (wrk -t2 -c100) with every proxy on two workers, NOT
#              pinned: proxies, origin and wrk share both vCPUs
#
# Knobs (environment):
#   ROUNDS (3), DURATION (8s; whole seconds), MIXES, PROXIES (subset/order of: nginx haproxy
#   portico), C10K_CONNS (10000), LOAD_CPU, PROXY_CPU (0, 1: taskset cores of origin + load
#   generator and of each proxy, in every mix but threads2)
#   PORTICO_BIN                path of the Portico binary (default <target>/release/portico)
#   PORTICO_ALT="name=/path/to/portico ..."   extra Portico binaries, same configuration
#   TLS_RESUME=1               let wrk resume TLS sessions (its own behaviour: it keeps each
#                              connection's last session and offers it on the next connect) and
#                              measure resumed handshakes; default: a full handshake every time
#                              (an LD_PRELOAD shim, compiled here with cc, drops wrk's session)
#   NGINX_BUFFERING=off        nginx proxy with `proxy_request_buffering off; proxy_buffering off`
#                              (default: nginx's defaults, which spool a 4 MiB request body, and
#                              large responses a slow client cannot take at once, to temp files)
#   SKIP_BUILD=1               do not `cargo build --release` Portico first
#   CARGO_TARGET_DIR (default <repo>/target), OUT (results directory, default a new mktemp -d)
#   QUICK=1                    ROUNDS=1, DURATION=3s, C10K_CONNS=2000 (unless set)
#
# Layout (every mix but threads2): the origin (one nginx worker on three ports: `200 ok`, static
# 64 KiB and 1 MiB files with sendfile, POST /upload read in full) and the load generator share
# LOAD_CPU; each proxy runs alone on PROXY_CPU with one worker (threads: 1, worker_processes 1,
# nbthread 1). Upstream: plain HTTP/1.1 with keep-alive to the origin, round-robin over its three
# ports. Access logs off. The proxies of a mix run side by side and are measured in turn, in
# each round, after a 1 s warm-up each; a mix starts its own proxies and stops them by pid at its
# end; every process this script starts is stopped by pid on exit.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source=bench/common.sh
. "$HERE/common.sh"
ALL_MIXES="tls-ecdsa tls-rsa h2 64k 1m upload c10k threads2"
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    ROUNDS=${ROUNDS:-1}; DURATION=${DURATION:-3s}; C10K_CONNS=${C10K_CONNS:-2000}
else
    ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-8s}; C10K_CONNS=${C10K_CONNS:-10000}
fi
MIXES=${MIXES:-$ALL_MIXES}
PROXIES=${PROXIES:-"nginx haproxy portico"}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
PORTICO_ALT=${PORTICO_ALT:-}
NGINX_BUFFERING=${NGINX_BUFFERING:-on}
TLS_RESUME=${TLS_RESUME:-0}
RESUME_CHECK_PORT=18299   # the origin's TLS port that logs whether each handshake was resumed
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PORTICO_BIN=${PORTICO_BIN:-$TARGET/release/portico}
OUT=${OUT:-$(mktemp -d /tmp/portico-mixes.XXXXXX)}
ORIGIN_PORTS=(19201 19202 19203)
PORT_BASE=18201   # proxy number i (0-8): plain i*10+18201, TLS +1, Portico's admin +2
CLK_TCK=$(getconf CLK_TCK)
SECS=${DURATION%s}
if ! [[ "$SECS" =~ ^[0-9]+$ ]] || [ "$SECS" -lt 1 ]; then
    echo "DURATION must be whole seconds (e.g. 8s), not '$DURATION'" >&2; exit 2
fi
for m in $MIXES; do
    case " $ALL_MIXES " in *" $m "*) ;; *) echo "unknown mix '$m' (mixes: $ALL_MIXES)" >&2; exit 2 ;; esac
done
case $NGINX_BUFFERING in on|off) ;; *) echo "NGINX_BUFFERING must be on or off" >&2; exit 2 ;; esac
for p in $PROXIES; do
    case $p in nginx|haproxy|portico) ;; *) echo "unknown proxy '$p' (nginx haproxy portico)" >&2; exit 2 ;; esac
done
mkdir -p "$OUT"

# --- tools -----------------------------------------------------------------------------------
missing=()
for tool in wrk nginx haproxy h2load openssl taskset curl python3; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: wrk nginx-light haproxy nghttp2-client openssl curl python3 (missing: ${missing[*]})"
    apt-get install -y wrk nginx-light haproxy nghttp2-client openssl curl python3 >/dev/null
fi
if ! nginx -V 2>&1 | grep -q -- --with-http_v2_module || ! nginx -V 2>&1 | grep -q -- --with-http_ssl_module; then
    echo "this nginx lacks http_ssl_module or http_v2_module (nginx -V): install nginx-light or nginx" >&2
    exit 1
fi
raise_fd_limit $((C10K_CONNS + 1000)) "C10K_CONNS=$C10K_CONNS"
NOFILE=$(ulimit -n)

# --- build -----------------------------------------------------------------------------------
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    echo "building portico (release) into $TARGET"
    (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release --quiet --bin portico)
fi

# The proxies: nginx, haproxy, portico (as PROXIES orders them), then PORTICO_ALT's.
NAMES=()
declare -A BIN PLAIN TLSP ADMIN
for p in $PROXIES; do
    NAMES+=("$p")
    if [ "$p" = portico ]; then BIN[portico]=$PORTICO_BIN; fi
done
for alt in $PORTICO_ALT; do
    if ! [[ "$alt" =~ ^[A-Za-z0-9_.-]+=. ]] || [[ " ${NAMES[*]} " == *" ${alt%%=*} "* ]]; then
        echo "PORTICO_ALT: '$alt' is not a new name=/path/to/portico" >&2; exit 2
    fi
    NAMES+=("${alt%%=*}")
    BIN[${alt%%=*}]=${alt#*=}
done
if [ ${#NAMES[@]} -gt 9 ]; then echo "at most 9 proxies (ports 18201-18299)" >&2; exit 2; fi
i=0
for n in "${NAMES[@]}"; do
    PLAIN[$n]=$((PORT_BASE + 10 * i)); TLSP[$n]=$((PORT_BASE + 10 * i + 1)); ADMIN[$n]=$((PORT_BASE + 10 * i + 2))
    i=$((i + 1))
    if [ -n "${BIN[$n]:-}" ] && [ ! -x "${BIN[$n]}" ]; then
        echo "$n: no executable at ${BIN[$n]} (SKIP_BUILD=1 without a build? set PORTICO_BIN)" >&2
        exit 1
    fi
done

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for n in "${NAMES[@]}"; do
    for port in "${PLAIN[$n]}" "${TLSP[$n]}" "${ADMIN[$n]}"; do
        if port_busy "$port"; then
            echo "port $port is already in use: stop what listens there first" >&2; exit 1
        fi
    done
done
for port in "${ORIGIN_PORTS[@]}" "$RESUME_CHECK_PORT"; do
    if port_busy "$port"; then echo "port $port is already in use: stop what listens there first" >&2; exit 1; fi
done

# --- processes -------------------------------------------------------------------------------
PIDS=()   # everything started and not yet stopped (nginx workers of threads2 included)
declare -A STOPSIG   # pid -> first signal, when not INT

# stop_pids PID...: SIGINT (fast shutdown for nginx and Pingora; `timeout` passes it on to
# wrk/h2load) or STOPSIG's (HAProxy: TERM, as a background job's SIGINT is ignored), then TERM,
# then KILL for what is still there; each step waits up to 3 s. Reaps the script's own children
# and drops every PID from PIDS.
stop_pids() {
    local sig pid gone
    for sig in FIRST TERM KILL; do
        for pid in "$@"; do
            if [ "$sig" = FIRST ]; then
                kill -"${STOPSIG[$pid]:-INT}" "$pid" 2>/dev/null || true
            else
                kill -"$sig" "$pid" 2>/dev/null || true
            fi
        done
        for _ in $(seq 30); do
            gone=1
            for pid in "$@"; do kill -0 "$pid" 2>/dev/null && gone=0; done
            [ "$gone" = 1 ] && break
            sleep 0.1
        done
        [ "$gone" = 1 ] && break
    done
    for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
    forget_pids "$@"
}
forget_pids() {   # forget_pids PID...: drops them from PIDS (they have exited and been reaped)
    local p keep=()
    for p in "${PIDS[@]}"; do
        case " $* " in *" $p "*) ;; *) keep+=("$p") ;; esac
    done
    PIDS=("${keep[@]}")
}
cleanup() {
    if [ ${#PIDS[@]} -gt 0 ]; then stop_pids "${PIDS[@]}"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

declare -A PID
MIX_PIDS=()

# Waits until `port` answers `ok` (bounded); stops the run if it does not.
wait_ready() {
    local name=$1 port=$2 log=$3
    wait_ok "$port" "${PID[$name]:-$$}" && return 0
    echo "$name on port $port did not come up; log: $log" >&2
    exit 1
}

# --- origin, certificates, bodies ------------------------------------------------------------
mkdir -p "$OUT/www" "$OUT/tmp"
head -c 65536 /dev/urandom >"$OUT/www/64k"
head -c 1048576 /dev/urandom >"$OUT/www/1m"
printf 'ok' >"$OUT/www/upload"   # POST on a static file: 405, turned into `200 ok` below
head -c 4194304 /dev/zero | tr '\0' 'a' >"$OUT/upload.bin"
for kind in ecdsa rsa; do
    if [ "$kind" = ecdsa ]; then newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1); else newkey=(-newkey rsa:2048); fi
    openssl req -x509 "${newkey[@]}" -nodes -days 30 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$OUT/$kind.key" -out "$OUT/$kind.crt" 2>/dev/null
    cat "$OUT/$kind.crt" "$OUT/$kind.key" >"$OUT/$kind.pem"   # HAProxy: certificate and key in one file
done
{   # wrk: 4 MiB POST bodies, and bench/wrk-report.lua's RESULT line
    printf 'wrk.method = "POST"\nwrk.body = string.rep("a", 4194304)\n'
    printf 'wrk.headers["Content-Type"] = "application/octet-stream"\n'
    cat "$HERE/wrk-report.lua"
} >"$OUT/upload.lua"

# wrk closes a connection with SSL_shutdown + SSL_clear and reuses the SSL object: SSL_clear keeps
# the last session, so its next SSL_connect offers it and the server resumes it (no certificate
# signature). This shim drops that session: every wrk connection is a full handshake.
WRK_ENV=()
if [[ " $MIXES " =~ " tls-" ]] && ! getent ahostsv4 localhost | grep -q '^127\.0\.0\.1 '; then
    echo "localhost does not resolve to 127.0.0.1 (the TLS mixes connect to https://localhost:PORT/)" >&2
    exit 1
fi
if [ "$TLS_RESUME" != 1 ] && [[ " $MIXES " =~ " tls-" ]]; then
    if ! command -v cc >/dev/null 2>&1; then
        echo "the TLS mixes need a C compiler for wrk's no-resumption shim (apt-get install gcc)," \
            "or TLS_RESUME=1 to measure resumed handshakes" >&2
        exit 1
    fi
    cat >"$OUT/noresume.c" <<'C'
/* LD_PRELOAD into wrk: SSL_clear, then forget the session, so the next connect is a full handshake */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;
int SSL_set_session(SSL *s, SSL_SESSION *session);
int SSL_clear(SSL *s) {
    static int (*real)(SSL *);
    if (!real) real = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_clear");
    int r = real(s);
    SSL_set_session(s, NULL);
    return r;
}
C
    cc -shared -fPIC -O2 -o "$OUT/noresume.so" "$OUT/noresume.c" -ldl
    WRK_ENV=(env "LD_PRELOAD=$OUT/noresume.so")
fi

# The origin: origin_conf's shape, plus the large files and the upload. nginx answers `return`
# before it has read a request body (it discards the rest afterwards), so /upload reads the body
# first (mirror_request_body; the mirror subrequest is a no-op), then the static module's 405 for
# a POST becomes `200 ok`.
origin_conf_mixes() {
    local listens="" p
    for p in "${ORIGIN_PORTS[@]}"; do listens+="        listen 127.0.0.1:$p reuseport backlog=4096;"$'\n'; done
    cat <<CONF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $OUT/origin.pid;
error_log $OUT/origin.err crit;
events { worker_connections $((NOFILE - 100)); }
http {
    access_log off;
    sendfile on;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_temp_path $OUT/tmp/origin-body;
    server {
$listens        root $OUT/www;
        default_type text/plain;
        client_max_body_size 8m;
        client_body_buffer_size 8m;
        location / { return 200 "ok"; }
        location = /64k { default_type application/octet-stream; }
        location = /1m { default_type application/octet-stream; }
        location = /upload { mirror /read-body; mirror_request_body on; error_page 405 =200 @ok; }
        location = /read-body { internal; return 204; }
        location @ok { return 200 "ok"; }
        location = /origin-status { stub_status; }   # accepted connections: the proxies' new upstream ones
    }
    log_format resumed '\$ssl_session_reused';
    server {   # what wrk does: full or resumed TLS handshakes (\$ssl_session_reused: r or .)
        listen 127.0.0.1:$RESUME_CHECK_PORT ssl;
        ssl_certificate $OUT/ecdsa.crt;
        ssl_certificate_key $OUT/ecdsa.key;
        ssl_protocols TLSv1.3;
        access_log $OUT/resume-check.log resumed;
        location / { return 200 "ok"; }
    }
}
CONF
}

origin_conf_mixes >"$OUT/origin.conf"
taskset -c "$LOAD_CPU" nginx -c "$OUT/origin.conf" -p "$OUT" >"$OUT/origin.log" 2>&1 &
PID[origin]=$!
PIDS+=($!)
wait_ready origin "${ORIGIN_PORTS[0]}" "$OUT/origin.log"
for port in "${ORIGIN_PORTS[@]}"; do
    got=$(curl -s -H 'Expect:' --data-binary @"$OUT/upload.bin" -w ' %{http_code}' "http://127.0.0.1:$port/upload")
    if [ "$got" != "ok 200" ]; then echo "origin :$port: POST /upload answered '$got'" >&2; exit 1; fi
done

# --- proxies ---------------------------------------------------------------------------------
is_tls() { case $1 in tls-ecdsa|tls-rsa|h2) return 0 ;; *) return 1 ;; esac; }
cert_of() { if [ "$1" = tls-rsa ]; then echo rsa; else echo ecdsa; fi; }

nginx_conf() {   # nginx_conf MIX DIR
    local mix=$1 dir=$2 workers=1 master=off servers="" tls="" p kind buffering=""
    if [ "$mix" = threads2 ]; then workers=2; master=on; fi
    if [ "$NGINX_BUFFERING" = off ]; then
        buffering="            proxy_request_buffering off;
            proxy_buffering off;
"
    fi
    for p in "${ORIGIN_PORTS[@]}"; do servers+="        server 127.0.0.1:$p;"$'\n'; done
    if is_tls "$mix"; then
        kind=$(cert_of "$mix")
        tls="        listen 127.0.0.1:${TLSP[nginx]} ssl http2 backlog=4096;
        ssl_certificate $OUT/$kind.crt;
        ssl_certificate_key $OUT/$kind.key;
        ssl_protocols TLSv1.3;
"
    fi
    cat <<EOF
daemon off;
master_process $master;
worker_processes $workers;
worker_rlimit_nofile $NOFILE;
pid $dir/nginx.pid;
error_log $dir/nginx.err warn;
events { worker_connections $((NOFILE - 100)); }
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_max_body_size 8m;
    client_body_temp_path $OUT/tmp/nginx-body;
    proxy_temp_path $OUT/tmp/nginx-proxy;
    upstream origin {
$servers        keepalive 128;
    }
    server {
        listen 127.0.0.1:${PLAIN[nginx]} backlog=4096;
$tls        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
$buffering        }
    }
}
EOF
}

haproxy_conf() {   # haproxy_conf MIX
    local mix=$1 threads=1 tls=""
    if [ "$mix" = threads2 ]; then threads=2; fi
    if is_tls "$mix"; then
        tls="    bind 127.0.0.1:${TLSP[haproxy]} ssl crt $OUT/$(cert_of "$mix").pem alpn h2,http/1.1 ssl-min-ver TLSv1.3"$'\n'
    fi
    haproxy_lb_conf "$threads" $((C10K_CONNS + 500)) "${PLAIN[haproxy]}" "$tls" "${ORIGIN_PORTS[@]}"
}

portico_mix_conf() {   # portico_mix_conf MIX DIR NAME: common.sh's portico_conf, plus TLS / threads
    local mix=$1 dir=$2 name=$3 extra="" kind
    if [ "$mix" = c10k ]; then   # its default, (ulimit -n - 256) / 2, is below 10,000 here
        extra="max_connections: $((C10K_CONNS + 500))"
        portico_conf "$dir" "$name" "${PLAIN[$name]}" "${ADMIN[$name]}" "$extra" "${ORIGIN_PORTS[@]}" \
            >"$dir/$name.yaml"
        if ! "${BIN[$name]}" -t -c "$dir/$name.yaml" >/dev/null 2>&1; then
            extra=""   # a build before `max_connections`: no cap on client connections
        fi
    fi
    portico_conf "$dir" "$name" "${PLAIN[$name]}" "${ADMIN[$name]}" "$extra" "${ORIGIN_PORTS[@]}" \
        >"$dir/$name.yaml"
    if [ "$mix" = threads2 ]; then sed -i 's/^threads: 1$/threads: 2/' "$dir/$name.yaml"; fi
    if is_tls "$mix"; then
        kind=$(cert_of "$mix")
        printf 'tls:\n  listen: "127.0.0.1:%s"\n  cert: %s\n  key: %s\n' \
            "${TLSP[$name]}" "$OUT/$kind.crt" "$OUT/$kind.key" >>"$dir/$name.yaml"
    fi
    if ! "${BIN[$name]}" -t -c "$dir/$name.yaml" >"$dir/$name.check" 2>&1; then
        echo "$name: configuration $dir/$name.yaml rejected:" >&2; cat "$dir/$name.check" >&2; exit 1
    fi
}

# start_proxies MIX: every proxy of the run, configured for MIX, pinned to PROXY_CPU (threads2:
# not pinned); waits until each answers `ok` on its plain port.
start_proxies() {
    local mix=$1 dir=$OUT/$1 n pin=(taskset -c "$PROXY_CPU") child children=()
    if [ "$mix" = threads2 ]; then pin=(); fi
    mkdir -p "$dir"
    MIX_PIDS=()
    for n in "${NAMES[@]}"; do
        for port in "${PLAIN[$n]}" "${TLSP[$n]}" "${ADMIN[$n]}"; do   # the previous mix's sockets
            for _ in $(seq 50); do port_busy "$port" || break; sleep 0.1; done
        done
        case $n in
        nginx)
            nginx_conf "$mix" "$dir" >"$dir/nginx.conf"
            "${pin[@]}" nginx -c "$dir/nginx.conf" -p "$OUT" >"$dir/nginx.log" 2>&1 & ;;
        haproxy)
            haproxy_conf "$mix" >"$dir/haproxy.cfg"
            "${pin[@]}" haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 & ;;
        *)
            portico_mix_conf "$mix" "$dir" "$n"
            "${pin[@]}" "${BIN[$n]}" -c "$dir/$n.yaml" >"$dir/$n.log" 2>&1 & ;;
        esac
        PID[$n]=$!; PIDS+=($!); MIX_PIDS+=($!)
        if [ "$n" = haproxy ]; then STOPSIG[$!]=TERM; fi
    done
    for n in "${NAMES[@]}"; do
        case $n in nginx) log=$dir/nginx.err ;; *) log=$dir/$n.log ;; esac
        wait_ready "$n" "${PLAIN[$n]}" "$log"
    done
    if [ "$mix" = threads2 ] && [ -n "${PID[nginx]:-}" ]; then   # nginx's workers: stopped with it
        read -r -a children <"/proc/${PID[nginx]}/task/${PID[nginx]}/children" || true
        for child in "${children[@]}"; do
            PIDS+=("$child"); MIX_PIDS+=("$child")
        done
    fi
}

# --- checks ----------------------------------------------------------------------------------
# How many of wrk's handshakes the origin's TLS port saw resumed, with the TLS mixes' wrk (1 s).
RESUME_CHECKED=0
check_resume() {
    local total reused mode=full
    [ "$TLS_RESUME" = 1 ] && mode=resumed
    : >"$OUT/resume-check.log"
    taskset -c "$LOAD_CPU" timeout 60 "${WRK_ENV[@]}" wrk -t1 -c50 -d1s -H "Connection: close" \
        "https://localhost:$RESUME_CHECK_PORT/" >/dev/null 2>&1 || true
    total=$(wc -l <"$OUT/resume-check.log")
    reused=$(grep -c '^r' "$OUT/resume-check.log" || true)
    echo "wrk, TLS_RESUME=$TLS_RESUME: $reused of $total handshakes resumed (checked on the origin's TLS port; wanted: $mode handshakes)" \
        | tee "$OUT/resume.txt" | sed 's/^/  /'
    if { [ "$mode" = full ] && [ "$reused" != 0 ]; } || [ "$total" = 0 ]; then
        echo "  WARNING: not the $mode handshakes this run means to measure" | tee -a "$OUT/resume.txt"
    fi
    RESUME_CHECKED=1
}

SKIP=()   # "mix name": failed its check, not measured
check_fail() { echo "  CHECK FAILED $1 $2: $3 (not measured)"; SKIP+=("$1 $2"); printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$OUT/skipped.tsv"; }

# What a default OpenSSL client (wrk links OpenSSL, offers TLS 1.2 and 1.3, no ALPN) negotiates,
# and whether TLS 1.2 is refused.
check_tls() {
    local mix=$1 n=$2 port=${TLSP[$2]} s proto cipher group sig t12
    s=$(timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername localhost </dev/null 2>&1 || true)
    proto=$(sed -n 's/^New, \([^,]*\), Cipher is .*/\1/p' <<<"$s" | head -1)
    cipher=$(sed -n 's/^New, [^,]*, Cipher is //p' <<<"$s" | head -1)
    group=$(sed -n 's/^Server Temp Key: *//p' <<<"$s" | head -1)
    sig=$(sed -n 's/^Peer signature type: *//p' <<<"$s" | head -1)
    if timeout 10 openssl s_client -connect "127.0.0.1:$port" -tls1_2 </dev/null >/dev/null 2>&1; then t12=accepted; else t12=refused; fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mix" "$n" "${proto:-?}" "${cipher:-?}" "${group:-?}" "${sig:-?}" "$t12" >>"$OUT/tls.tsv"
    echo "  tls $n: ${proto:-?} ${cipher:-?}, key exchange ${group:-?}, signature ${sig:-?}; TLS 1.2 $t12"
    [ "$proto" = TLSv1.3 ] || check_fail "$mix" "$n" "negotiated '${proto:-nothing}', not TLSv1.3"
}

check_mix() {   # check_mix MIX NAME: the proxy serves what the mix asks for, before any load
    local mix=$1 n=$2 got
    case $mix in
    tls-ecdsa|tls-rsa)
        [ "$RESUME_CHECKED" = 1 ] || check_resume
        check_tls "$mix" "$n" ;;
    h2)
        got=$(timeout 20 h2load -n 200 -c 2 -m 10 "https://127.0.0.1:${TLSP[$n]}/" 2>&1 || true)
        local proto succeeded
        proto=$(sed -n 's/^Application protocol: *//p' <<<"$got")
        succeeded=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' <<<"$got")
        printf '%s\t%s\t%s\t%s\n' "$mix" "$n" "$(sed -n 's/^TLS Protocol: *//p' <<<"$got")" "ALPN ${proto:-none}" >>"$OUT/tls.tsv"
        echo "  h2 $n: $(sed -n 's/^TLS Protocol: *//p' <<<"$got"), ALPN ${proto:-none}, ${succeeded:-0}/200 succeeded"
        if [ "$proto" != h2 ] || [ "${succeeded:-0}" != 200 ]; then check_fail "$mix" "$n" "h2load: ALPN '${proto:-none}', ${succeeded:-0}/200 succeeded"; fi ;;
    64k|1m)
        local size=65536
        if [ "$mix" = 1m ]; then size=1048576; fi
        got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "http://127.0.0.1:${PLAIN[$n]}/$mix" || true)
        [ "$got" = "200 $size" ] || check_fail "$mix" "$n" "GET /$mix: '$got', wanted '200 $size'" ;;
    upload)
        got=$(curl -s -H 'Expect:' --data-binary @"$OUT/upload.bin" -w ' %{http_code} %{size_upload}' \
            "http://127.0.0.1:${PLAIN[$n]}/upload" || true)
        echo "  upload $n: 4 MiB POST answered '$got' (body, status, bytes sent)"
        [ "$got" = "ok 200 4194304" ] || check_fail "$mix" "$n" "POST /upload: '$got'" ;;
    esac
}

# --- load ------------------------------------------------------------------------------------
# ticks (utime+stime) of PID and of its children (nginx's workers when master_process is on)
cpu_ticks() {
    local pid=$1 total=0 t c
    for c in "$pid" $(cat "/proc/$pid/task/$pid/children" 2>/dev/null); do
        t=$(sed 's/^.*) //' "/proc/$c/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
# connections the origin has accepted so far (this query's own included)
origin_accepts() {
    { curl -s --max-time 5 "http://127.0.0.1:${ORIGIN_PORTS[0]}/origin-status" || true; } |
        awk 'NR == 3 {n = $1} END {print n + 0}'
}
# "busy idle" ticks of core $1 ("" = the whole machine)
core_ticks() { awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4 + $7 + $8, $5 + $6}' /proc/stat; }
idle_pct() { echo $(( 100 * ($4 - $2) / ($3 - $1 + $4 - $2 + 1) )); }   # busy0 idle0 busy1 idle1

# load_cmd MIX NAME DURATION H2LOG: the load generator's command line, into the array LOAD.
# wrk's TLS URLs name `localhost` (127.0.0.1 here): wrk sends the URL's host as SNI, and an IP
# address there is illegal SNI, which rustls logs (and Portico writes) once per handshake.
load_cmd() {
    local mix=$1 n=$2 d=$3 log=$4 pin=(taskset -c "$LOAD_CPU") to=$((${3%s} + 60))
    local wrk=(wrk -t1 -d"$d" -s "$HERE/wrk-report.lua")
    if [ "$mix" = threads2 ]; then pin=(); fi
    case $mix in
    tls-ecdsa|tls-rsa) LOAD=("${WRK_ENV[@]}" "${wrk[@]}" -c50 -H "Connection: close" "https://localhost:${TLSP[$n]}/") ;;
    h2) LOAD=(h2load -t1 -c10 -m100 -D "$d" --warm-up-time=1s --log-file="$log" "https://127.0.0.1:${TLSP[$n]}/") ;;
    64k) LOAD=("${wrk[@]}" -c50 "http://127.0.0.1:${PLAIN[$n]}/64k") ;;
    1m) LOAD=("${wrk[@]}" -c20 "http://127.0.0.1:${PLAIN[$n]}/1m") ;;
    upload) LOAD=(wrk -t1 -d"$d" -c16 -s "$OUT/upload.lua" "http://127.0.0.1:${PLAIN[$n]}/upload") ;;
    c10k) LOAD=("${wrk[@]}" -c"$C10K_CONNS" --timeout 10s "http://127.0.0.1:${PLAIN[$n]}/") ;;
    threads2) LOAD=(wrk -t2 -d"$d" -c100 -s "$HERE/wrk-report.lua" "http://127.0.0.1:${PLAIN[$n]}/") ;;
    esac
    LOAD=("${pin[@]}" timeout "$to" "${LOAD[@]}")
}

payload_of() { case $1 in 64k) echo 65536 ;; 1m) echo 1048576 ;; upload) echo 4194304 ;; *) echo 0 ;; esac; }

# run_load MIX NAME ROUND DURATION: one run; ROUND 0 is the warm-up (not recorded). The CPU
# window is the load generator's run (h2load: its main phase, after its own 1 s warm-up).
run_load() {
    local mix=$1 n=$2 round=$3 d=$4 dir=$OUT/$1 raw log lpid rc=0 before after lb0 li0 lb1 li1 pb0 pi0 pb1 pi1
    local acc0 acc1
    local load_core=$LOAD_CPU line
    raw=$dir/$n.r$round.out; log=$dir/h2.log
    [ "$mix" = threads2 ] && load_core=""
    load_cmd "$mix" "$n" "$d" "$log"
    acc0=$(origin_accepts)
    before=$(cpu_ticks "${PID[$n]}")
    read -r lb0 li0 <<<"$(core_ticks "$load_core")"
    read -r pb0 pi0 <<<"$(core_ticks "$PROXY_CPU")"
    : >"$raw"
    "${LOAD[@]}" >"$raw" 2>&1 &
    lpid=$!; PIDS+=("$lpid")
    if [ "$mix" = h2 ]; then   # measure from the end of h2load's warm-up (its log and counts do)
        for _ in $(seq 3000); do
            grep -q "Main benchmark duration is started" "$raw" && break
            kill -0 "$lpid" 2>/dev/null || break
            sleep 0.01
        done
        acc0=$(origin_accepts)
        before=$(cpu_ticks "${PID[$n]}")
        read -r lb0 li0 <<<"$(core_ticks "$load_core")"
        read -r pb0 pi0 <<<"$(core_ticks "$PROXY_CPU")"
    fi
    wait "$lpid" || rc=$?
    after=$(cpu_ticks "${PID[$n]}")
    read -r lb1 li1 <<<"$(core_ticks "$load_core")"
    read -r pb1 pi1 <<<"$(core_ticks "$PROXY_CPU")"
    acc1=$(origin_accepts)
    forget_pids "$lpid"
    if [ "$mix" = h2 ]; then
        line=$(python3 "$HERE/mixes_report.py" h2load "$raw" "$log" || true)
        rm -f "$log"
    else
        line=$(grep '^RESULT' "$raw" || true)
    fi
    if [ -z "$line" ]; then
        echo "  $mix $n round $round: no result (exit $rc); output: $raw" >&2
        line="RESULT 0 $SECS 0 0 0 1"
    fi
    [ "$round" = 0 ] && return 0
    local _r reqs secs p50 p99 non2xx sockerr proxy_idle load_idle
    read -r _r reqs secs p50 p99 non2xx sockerr <<<"$line"
    load_idle=$(idle_pct "$lb0" "$li0" "$lb1" "$li1")
    proxy_idle=$(idle_pct "$pb0" "$pi0" "$pb1" "$pi1")
    [ "$mix" = threads2 ] && proxy_idle=-1
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mix" "$n" "$round" "$reqs" "$secs" \
        "$p50" "$p99" "$non2xx" "$sockerr" "$((after - before))" "$load_idle" "$proxy_idle" \
        "$(payload_of "$mix")" "$((acc1 - acc0 - 1))" >>"$OUT/runs.tsv"
    local idle="load core idle ${load_idle}%, proxy core idle ${proxy_idle}%"
    [ "$mix" = threads2 ] && idle="machine idle ${load_idle}%"
    echo "  round $round $n: $reqs requests in ${secs}s, p99 ${p99}us, errors $((non2xx + sockerr))," \
        "cpu $((after - before)) ticks, $((acc1 - acc0 - 1)) new upstream connections, $idle"
}

# log_warnings MIX NAME: what the proxy logged beyond notices (nginx: bodies or responses
# buffered to temporary files, fd shortage; HAProxy: alerts and warnings; Portico: WARN, ERROR),
# counted, into warnings.tsv
log_warnings() {
    local mix=$1 n=$2 dir=$OUT/$1 count msg
    case $n in
    nginx) [ -s "$dir/nginx.err" ] || return 0
        grep -v '\[notice\]' "$dir/nginx.err" | sed -E 's/^[0-9\/]+ [0-9:]+ \[([a-z]+)\] [0-9#]+: (\*[0-9]+ )?/[\1] /;
            s/, client: .*//; s/(temporary file) [^ ]+/\1/' ;;
    haproxy) grep -E '^\[(ALERT|WARNING)\]' "$dir/haproxy.log" | sed -E 's/^\[([A-Z]+)\] +\([0-9]+\) : /[\1] /' ;;
    *) grep -E '^\[[^ ]+ (WARN|ERROR) ' "$dir/$n.log" | sed -E 's/^\[[^ ]+ ([A-Z]+) +[^]]*\] /[\1] /' ;;
    esac | sed -E 's/127\.0\.0\.1:[0-9]+/127.0.0.1:*/g' | cut -c1-200 | sort | uniq -c | sort -rn | head -5 |
    while read -r count msg; do
        printf '%s\t%s\t%s\t%s\n' "$mix" "$n" "$count" "$msg" >>"$OUT/warnings.tsv"
        echo "  $n log: $count x $msg"
    done || true   # grep finds nothing: nothing to say
}

# --- the run ---------------------------------------------------------------------------------
nmix=$(wc -w <<<"$MIXES")
est=$(( nmix * ${#NAMES[@]} * (ROUNDS * SECS + 1) + nmix * 8 ))
case " $MIXES " in *" h2 "*) est=$((est + ${#NAMES[@]} * (ROUNDS + 1))) ;; esac
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) vCPUs, $(sed -n 's/^model name\t*: //p' /proc/cpuinfo | head -1)"
    echo "nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //'); haproxy: $(haproxy -v | head -1 | awk '{print $3}');" \
        "wrk: $(wrk -v 2>&1 | head -1 | awk '{print $2}'); $(h2load --version | head -1); $(openssl version | awk '{print $1, $2}')"
    for n in "${NAMES[@]}"; do
        [ -n "${BIN[$n]:-}" ] && echo "$n: ${BIN[$n]} ($("${BIN[$n]}" --version 2>&1 | head -1))"
    done
    echo "rounds: $ROUNDS x $DURATION per proxy and mix; c10k: $C10K_CONNS connections; fd limit $NOFILE;" \
        "nginx proxy buffering: $NGINX_BUFFERING; TLS_RESUME=$TLS_RESUME"
} >"$OUT/meta.txt"
cat "$OUT/meta.txt"
echo "mixes: $MIXES; proxies: ${NAMES[*]}; results in $OUT; about $((est / 60 + 1)) min"
: >"$OUT/runs.tsv"; : >"$OUT/tls.tsv"; : >"$OUT/skipped.tsv"; : >"$OUT/warnings.tsv"
for mix in $MIXES; do
    if [ "$mix" = threads2 ]; then
        echo "== $mix: nothing pinned (proxies with 2 workers, origin and wrk -t2 share all $(nproc) vCPUs)"
        taskset -pc "0-$(($(nproc) - 1))" "${PID[origin]}" >/dev/null
    else
        echo "== $mix: origin + load on cpu $LOAD_CPU, each proxy on cpu $PROXY_CPU"
    fi
    start_proxies "$mix"
    for n in "${NAMES[@]}"; do check_mix "$mix" "$n"; done
    measured=()
    for n in "${NAMES[@]}"; do
        case " ${SKIP[*]:-} " in *" $mix $n "*) ;; *) measured+=("$n") ;; esac
    done
    for n in "${measured[@]}"; do run_load "$mix" "$n" 0 1s; done   # warm-up
    for round in $(seq "$ROUNDS"); do
        for n in "${measured[@]}"; do run_load "$mix" "$n" "$round" "$DURATION"; done
    done
    stop_pids "${MIX_PIDS[@]}"
    if [ "$mix" = threads2 ]; then taskset -pc "$LOAD_CPU" "${PID[origin]}" >/dev/null; fi
    for n in "${NAMES[@]}"; do log_warnings "$mix" "$n"; done
done

# --- report ----------------------------------------------------------------------------------
python3 "$HERE/mixes_report.py" report "$OUT" "$CLK_TCK" "$C10K_CONNS" | tee "$OUT/report.md"
echo "raw results and logs: $OUT"
