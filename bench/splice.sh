#!/usr/bin/env bash
# The zero-copy relay in one run: 1 MiB HTTPS responses (hey, keep-alive) straight to nginx,
# through HAProxy relaying plain TCP with splice (option splice-request/splice-response), and
# through webrep's CONNECT tunnel with proxy.splice on and off; then 1 MiB plain HTTP (wrk,
# absolute-form) straight to nginx, through HAProxy as an HTTP relay (heads parsed, bodies
# spliced: the floor of a relay that parses HTTP) and through webrep. For each relay it reports req/s, MB/s
# and the CPU seconds the relay process spent per GiB moved (utime+stime from /proc, the
# figure least disturbed by other load on the machine). Loopback only.
#
#   nice -n 19 cargo build --profile bench && bench/splice.sh   # the bench profile builds into target/release
#
# Knobs: CONCS ("32 128", for CONNECT), TARGETS (all four), HTTP (1: the plain HTTP pair
# too), HTTP_CONC (128), DURATION (8 s), ROUNDS (3), WEBREP_BIN (target/release/webrep),
# PROXY_EXTRA (one more `key: value` line under `proxy:` for both webrep instances). Needs
# nginx, haproxy, hey, wrk, openssl, curl
# (apt-get install nginx-light haproxy hey wrk); installs nothing itself. Ports 19080 and
# 19443 (nginx), 19445 (haproxy), 3131 and 3132 (webrep splice on / off).
set -euo pipefail
source "$(dirname "$0")/../benches/lib.sh"
CONCS=${CONCS:-"32 128"}
HTTP_CONC=${HTTP_CONC:-128}
TARGETS=${TARGETS:-"direct haproxy-splice webrep-splice webrep-copy"}
HTTP=${HTTP:-1}
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
BIN=${WEBREP_BIN:-target/release/webrep}
LUA=${LUA:-$(dirname "$0")/../../shared/bench/wrk-report.lua}
for tool in nginx haproxy hey wrk openssl curl "$BIN"; do
  command -v "$tool" >/dev/null || { echo "splice.sh: $tool not found" >&2; exit 2; }
done
[[ -f $LUA ]] || { echo "splice.sh: $LUA not found (set LUA)" >&2; exit 2; }

bench_scratch splice-bench

head -c 1048576 /dev/urandom >"$work/1m.bin"
nginx_origin "$work" "127.0.0.1:19080" "127.0.0.1:19443 ssl"

cat >"$work/haproxy.cfg" <<EOF
global
  nbthread 2
  maxconn 4096
  maxpipes 4096
defaults
  mode tcp
  option splice-request
  option splice-response
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen relay
  bind 127.0.0.1:19445
  server origin 127.0.0.1:19443
# The plain-HTTP floor: an HTTP relay that parses each head and splices the bodies.
listen http_relay
  mode http
  option http-keep-alive
  bind 127.0.0.1:19446
  server origin 127.0.0.1:19080
EOF
haproxy -f "$work/haproxy.cfg" -D -p "$work/haproxy.pid"

start_webrep() { # port, splice
  cat >"$work/webrep-$1.yaml" <<EOF
proxy:
  listen: ["127.0.0.1:$1"]
  connect_ports: [19443]
  splice: $2
${PROXY_EXTRA:+  $PROXY_EXTRA
}  destinations:
    allow_internal: true
access_log:
  enabled: false
log:
  level: warn
policy:
  enabled: false
EOF
  "$BIN" proxy --config "$work/webrep-$1.yaml" 2>"$work/webrep-$1.log" &
  pids+=($!)
}
start_webrep 3131 true
spliced_pid=${pids[-1]}
start_webrep 3132 false
copied_pid=${pids[-1]}

for _ in $(seq 50); do
  curl -sk -o /dev/null https://127.0.0.1:19445/1m.bin &&
    curl -sk -o /dev/null -x http://127.0.0.1:3131 https://127.0.0.1:19443/1m.bin &&
    curl -sk -o /dev/null -x http://127.0.0.1:3132 https://127.0.0.1:19443/1m.bin && break
  sleep 0.1
done

cpu_ticks() { # pid: utime+stime in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat"
}
hz=$(getconf CLK_TCK)

# One measurement: prints "req/s MB/s cpu-s/GiB" (cpu "-" without a relay pid).
# measure PID|- KIND args...   KIND: hey (HTTPS, maybe through -x) or wrk (plain HTTP)
measure() {
  local pid=$1 kind=$2 out before after
  shift 2
  before=$([[ $pid == - ]] && echo 0 || cpu_ticks "$pid")
  if [[ $kind == hey ]]; then
    out=$(timeout $((DURATION + 30)) hey -z "${DURATION}s" "$@" 2>&1)
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    bytes=$(awk '/Total data:/ {print $3}' <<<"$out")
    ok=$(awk '/^ *\[200\]/ {print $2}' <<<"$out")
  else
    out=$(timeout $((DURATION + 30)) wrk -t 2 -d "${DURATION}s" --timeout 10s -s "$LUA" "$@" 2>&1)
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    bytes=$(sed -n 's/.*BENCH .* bytes=\([0-9]*\) .*/\1/p' <<<"$out")
    ok=-
  fi
  after=$([[ $pid == - ]] && echo 0 || cpu_ticks "$pid")
  awk -v r="$rps" -v b="${bytes:-0}" -v d="$DURATION" -v c=$((after - before)) -v hz="$hz" \
    -v p="$pid" -v ok="${ok:-0}" 'BEGIN {
      cpu = (p == "-" || b == 0) ? "-" : sprintf("%.2f", c / hz / (b / 2^30));
      printf "%9.1f %8.1f %9s %7s", r, b / d / 1e6, cpu, ok }'
}

printf '%-5s %-16s %5s %9s %8s %9s %7s\n' round target conns "req/s" "MB/s" "cpu-s/GiB" "200s"
for round in $(seq "$ROUNDS"); do
  for c in $CONCS; do
    for target in $TARGETS; do
      case $target in
        direct) r=$(measure - hey -c "$c" https://127.0.0.1:19443/1m.bin) ;;
        haproxy-splice) r=$(measure "$(cat "$work/haproxy.pid")" hey -c "$c" https://127.0.0.1:19445/1m.bin) ;;
        webrep-splice) r=$(measure "$spliced_pid" hey -c "$c" -x http://127.0.0.1:3131 https://127.0.0.1:19443/1m.bin) ;;
        webrep-copy) r=$(measure "$copied_pid" hey -c "$c" -x http://127.0.0.1:3132 https://127.0.0.1:19443/1m.bin) ;;
      esac
      printf '%-5s %-16s %5s %s\n' "$round" "connect-$target" "$c" "$r"
    done
  done
  [[ $HTTP == 1 ]] || continue
  r=$(measure - wrk -c "$HTTP_CONC" http://127.0.0.1:19080/1m.bin)
  printf '%-5s %-16s %5s %s\n' "$round" "http-direct" "$HTTP_CONC" "$r"
  r=$(measure "$(cat "$work/haproxy.pid")" wrk -c "$HTTP_CONC" http://127.0.0.1:19446/1m.bin)
  printf '%-5s %-16s %5s %s\n' "$round" "http-haproxy" "$HTTP_CONC" "$r"
  r=$(export BENCH_ABS_URL=http://127.0.0.1:19080/1m.bin BENCH_HOST=127.0.0.1:19080
    measure "$spliced_pid" wrk -c "$HTTP_CONC" http://127.0.0.1:3131/1m.bin)
  printf '%-5s %-16s %5s %s\n' "$round" "http-webrep" "$HTTP_CONC" "$r"
done
