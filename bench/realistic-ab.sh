#!/usr/bin/env bash
# bench/realistic-ab.sh OLD NEW: two webrep builds on office-like traffic, alternately
# (OLD, NEW, OLD, NEW), each run beside Squid as the anchor: benches/realistic/run.sh (read
# its README: Zipf over 100,000 hosts, a 1,000,000-entry table, 70 % HTTPS, dnsmasq, nginx;
# loopback only; it installs its tools when missing). Compare ratios to Squid within a round,
# not absolute rates across rounds. Results: /tmp/webrep-realistic-results/*-{old,new}{1,2}/table.txt.
#
#   bench/realistic-ab.sh /tmp/webrep-before target/dist/webrep
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ $# -eq 2 ]] || { echo "usage: $0 OLD_BINARY NEW_BINARY" >&2; exit 2; }
HARNESS=${HARNESS:-benches/realistic/run.sh}
[[ -x $HARNESS ]] || { echo "realistic-ab: no harness at $HARNESS" >&2; exit 2; }
for round in 1 2; do
  for side in old new; do
    bin=$1; [[ $side == new ]] && bin=$2
    TARGETS=${TARGETS:-"squid webrep webrep-nofilter"} WEBREP=$(realpath "$bin") \
      LABEL=$side$round "$HARNESS" || exit $?
  done
done
