#!/usr/bin/env bash
# Portico quick start: `./quickstart.sh demo` runs the gateway with three demo origins;
# `./quickstart.sh test` runs the whole test suite. Both first make sure the system packages
# are present: cmake and a C compiler (zlib-ng, mimalloc), protoc (etcd-client's protocol
# files), etcd (the fleet tests start one) and, for `test`, chromium (the status page test)
# and openssl (a TLS test's client).
set -euo pipefail
cd "$(dirname "$0")"

# need [PACKAGE...]: the build's dependencies, plus the given Debian packages (each named
# after the command it provides).
need() {
  local missing=()
  command -v cargo >/dev/null 2>&1 || {
    echo "quickstart: cargo not found: install Rust with rustup (https://rustup.rs), then retry." >&2
    exit 1
  }
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  command -v cc >/dev/null 2>&1 || missing+=(build-essential)
  command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
  command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
  local pkg
  for pkg in "$@"; do
    command -v "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "quickstart: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "quickstart: the build needs ${missing[*]}; install them (e.g. sudo apt-get install ${missing[*]}) and retry." >&2
    exit 1
  fi
}

case "${1:-}" in
  demo)
    need
    cargo build --locked --bin portico
    cat <<'HELP'

Portico is starting with three demo origins on 127.0.0.1:9001-9003.
In another terminal:
  curl localhost:8080/                 # answered by demo-origin-1, -2, -3 in turn
  curl localhost:8081/status           # the pool, its health and load
  curl -X POST localhost:8081/backends -H 'Content-Type: application/json' -d '{"url": "http://127.0.0.1:9004"}'
Stop with Ctrl-C.

HELP
    exec ./target/debug/portico --demo -c conf/portico.yaml
    ;;
  test)
    need chromium openssl
    exec cargo test --locked
    ;;
  *)
    echo "usage: $0 demo|test" >&2
    exit 2
    ;;
esac
