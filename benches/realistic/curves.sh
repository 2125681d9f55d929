#!/usr/bin/env bash
# benches/realistic/curves.sh: cost curves of webrep on the realistic workload - requests/s
# and CPU per request against the reputation table's size, the number of distinct hosts and
# the policy's list size, one thing varied at a time, the rest at the base point (100,000
# hosts, 1,000,000 entries, the default policy with the harness's interception split).
# Same pieces as run.sh (lib.sh): dnsmasq, nginx (HTTP + TLS), the load generator, webrep
# proxy + server pinned on CPU 1. From the repository root, after `cargo build --profile dist`:
#
#   benches/realistic/curves.sh                              # the default sweep (about 6 min once the data exists)
#   CURVES=hosts HOST_POINTS="1000 1000000" DURATION=20 benches/realistic/curves.sh
#
# Knobs: CURVES (table hosts policy), TABLE_POINTS (10000 100000 1000000 10000000),
# HOST_POINTS (1000 10000 100000 1000000), POLICY_POINTS (10 1000 100000), CONC (32),
# DURATION (10), WARMUP (3), FLOOR (1: webrep with filtering off beside each hosts point),
# and those of lib.sh (MIX, WEBREP, DATA, ...). The first run generates and imports the
# tables (the 10M one takes several minutes and about 2 GB under DATA); later runs reuse them.
set -u -o pipefail
LABEL=${LABEL:-curves}
OUT=${OUT:-/tmp/webrep-realistic-results/$(date +%Y%m%d-%H%M%S)-$LABEL}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
CURVES=${CURVES:-"table hosts policy"}
TABLE_POINTS=${TABLE_POINTS:-"10000 100000 1000000 10000000"}
HOST_POINTS=${HOST_POINTS:-"1000 10000 100000 1000000"}
POLICY_POINTS=${POLICY_POINTS:-"10 1000 100000"}
CONC=${CONC:-32}
FLOOR=${FLOOR:-1}
NO_STORE_COPY=1   # the server works on the cached store itself (no copy of a 10M-entry file)

preflight nginx dnsmasq
build_loadgen
prepare_bodies
prepare_pki
max_hosts=$HOSTS; for h in $HOST_POINTS; do ((h > max_hosts)) && max_hosts=$h; done
for c in $CURVES; do
  case $c in
    table) for t in $TABLE_POINTS; do prepare_table "$HOSTS" "$t"; done ;;
    hosts) prepare_table "$max_hosts" "$TABLE" ;;
    policy) prepare_table "$HOSTS" "$TABLE"
            for n in $POLICY_POINTS; do write_policy "$n" "$WORK/policy-$n.yaml"; done ;;
    *) die "unknown curve $c (table hosts policy)" ;;
  esac
done
write_policy 0 "$WORK/policy.yaml"
start_dns
start_origin
{
  echo "date: $(date -Is)"; echo "host: $(nproc --all) CPUs, kernel $(uname -r); load before start: $(cat /proc/loadavg)"
  echo "webrep: $("$WEBREP" --version) ($WEBREP); git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null); loadgen: $LOADGEN"
  echo "settings: CURVES='$CURVES' TABLE_POINTS='$TABLE_POINTS' HOST_POINTS='$HOST_POINTS' POLICY_POINTS='$POLICY_POINTS'"
  echo "          CONC=$CONC DURATION=$DURATION WARMUP=$WARMUP MIX='$MIX' base: HOSTS=$HOSTS TABLE=$TABLE"
  echo "pinning: load on CPU $LOAD_CPUS; proxy + server on CPU $PROXY_CPUS"
} >"$OUT/setup.txt"

point() {  # curve point target filtering(on|off) intercept(split|none) table_dir policy hosts
  TARGET=$3; MAIN_PID=""; AUX_PID=""; PROXY_ADDR=""; TDIR=""
  log "=== curve $1 point $2: $3"
  if start_webrep "$4" "$5" "$6" "$7"; then
    LABELS="curve=$1 point=$2" MNAME="$1-$2-$3" measure "$CONC" "$8"
  else
    log "  $3 did not start; point skipped"
  fi
  stop_named tgt-
  sleep 1
}

for c in $CURVES; do
  case $c in
    table)
      for t in $TABLE_POINTS; do point table "$t" webrep on split "$(table_dir "$HOSTS" "$t")" "$WORK/policy.yaml" "$HOSTS"; done ;;
    hosts)
      for h in $HOST_POINTS; do
        point hosts "$h" webrep on split "$(table_dir "$max_hosts" "$TABLE")" "$WORK/policy.yaml" "$h"
        [[ $FLOOR == 1 ]] && point hosts "$h" webrep-nofilter off none "" "" "$h"
      done ;;
    policy)
      for n in $POLICY_POINTS; do point policy "$n" webrep on split "$(table_dir "$HOSTS" "$TABLE")" "$WORK/policy-$n.yaml" "$HOSTS"; done ;;
  esac
done
stop_named nginx; stop_named dnsmasq
python3 "$HERE/report.py" "$OUT" | tee "$OUT/table.txt"
log "done: $OUT"
