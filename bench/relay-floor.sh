#!/usr/bin/env bash
# What one relay hop costs on this machine, whatever the relay: 1 KiB HTTPS GETs (oha, keep-alive)
# straight to nginx, through HAProxy relaying plain TCP to nginx (no CONNECT, no parsing: the
# cheapest relay there is, in C), and through webrep's CONNECT tunnel, in one run. The ratio
# HAProxy gets is the ceiling for "HTTPS through CONNECT against direct" on this harness
# (issue 2 asks 0.9x). Loopback only: every listener is on 127.0.0.1 and oha only talks to it.
#
#   cargo build --profile dist && bench/relay-floor.sh       # unpinned
#   PIN=1 bench/relay-floor.sh                               # relays on CPU 1, oha + nginx on CPU 0
#
# Knobs: PIN (0), CONCS ("32 128"), DURATION (8 s), ROUNDS (2), OHA (path), WEBREP_BIN.
# Needs nginx, haproxy, openssl and oha (../shared/bench/install-tools.sh; apt-get install
# haproxy). Ports 19080/19443 (nginx), 19444 (haproxy), 3129 (webrep).
set -euo pipefail
source "$(dirname "$0")/../benches/lib.sh"
PIN=${PIN:-0}
CONCS=${CONCS:-"32 128"}
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-2}
BIN=${WEBREP_BIN:-target/dist/webrep}
OHA=${OHA:-$(command -v oha || echo /tmp/bench-cargo/oha-root/bin/oha)}
for tool in nginx haproxy openssl "$OHA" "$BIN"; do
  command -v "$tool" >/dev/null || { echo "relay-floor: $tool not found" >&2; exit 2; }
done

bench_scratch relay-floor

load_cpus=0,1 relay_cpus=0,1 relay_threads=2
if [[ $PIN == 1 ]]; then load_cpus=0 relay_cpus=1 relay_threads=1; fi

head -c 1024 /dev/urandom >"$work/1k.bin"
ORIGIN_CPUS=$load_cpus nginx_origin "$work" "127.0.0.1:19443 ssl"

cat >"$work/haproxy.cfg" <<EOF
global
  nbthread $relay_threads
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen relay
  bind 127.0.0.1:19444
  server origin 127.0.0.1:19443
EOF
taskset -c "$relay_cpus" haproxy -f "$work/haproxy.cfg" -D -p "$work/haproxy.pid"

cat >"$work/webrep.yaml" <<EOF
proxy:
  listen: ["127.0.0.1:3129"]
  connect_ports: [19443]
  destinations:
    allow_internal: true
access_log:
  path: $work/access.log
log:
  level: warn
policy:
  enabled: false
EOF
taskset -c "$relay_cpus" "$BIN" proxy --config "$work/webrep.yaml" 2>"$work/webrep.log" &
pids+=($!)

# Ready when each path answers (bounded wait).
for _ in $(seq 50); do
  curl -sk -o /dev/null https://127.0.0.1:19444/1k.bin &&
    curl -sk -o /dev/null -x http://127.0.0.1:3129 https://127.0.0.1:19443/1k.bin && break
  sleep 0.1
done

rps() { # conc, oha args...
  local c=$1
  shift
  timeout $((DURATION + 30)) taskset -c "$load_cpus" "$OHA" --no-tui -z "${DURATION}s" -c "$c" \
    --insecure "$@" 2>/dev/null | awk '/Requests\/sec/ {printf "%d", $2}'
}

printf '%-6s %5s %10s %10s %10s %8s %8s\n' round conns direct haproxy webrep "hap/dir" "web/dir"
for round in $(seq "$ROUNDS"); do
  for c in $CONCS; do
    d=$(rps "$c" https://127.0.0.1:19443/1k.bin)
    h=$(rps "$c" https://127.0.0.1:19444/1k.bin)
    w=$(rps "$c" -x http://127.0.0.1:3129 https://127.0.0.1:19443/1k.bin)
    printf '%-6s %5s %10s %10s %10s %8.2f %8.2f\n' "$round" "$c" "$d" "$h" "$w" \
      "$(echo "$h / $d" | bc -l)" "$(echo "$w / $d" | bc -l)"
  done
done
