#!/usr/bin/env bash
# The proxy's resident memory under many connections (benches/memory.rs): idle, 2,000 quiet
# CONNECT tunnels, 10,000 silent connections, and waves of 10,000 keep-alive connections
# opened and closed. Loopback only. Raises the open-file limit first (the bench holds up to
# 10,000 sockets, the proxy up to 12,000).
#
#   bench/memory.sh                                   # this tree's webrep (bench profile)
#   WEBREP_BIN=/tmp/webrep-old bench/memory.sh        # another build, same steps
#   WEBREP_ENV="MALLOC_ARENA_MAX=2" bench/memory.sh   # environment for the proxy
#
#   STEPS=upstream bench/memory.sh                   # memory per idle upstream connection
#   STEPS=keepalive KEEPALIVE=18000 bench/memory.sh  # memory per idle keep-alive client
#
# Knobs: STEPS (tunnels,silent,waves; also upstream, keepalive), TUNNELS (2000), CONNS
# (10000), WAVES (5), QUIET_S (60), SETTLE_S (15), UPSTREAMS (3000), KEEPALIVE (18000),
# PROXY_EXTRA (YAML lines for the proxy section); see the bench's module docs. Figures:
# docs/performance.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
want=30000
if (( $(ulimit -Hn) < want )); then
  ulimit -Hn "$want" 2>/dev/null || true
fi
ulimit -n "$(( $(ulimit -Hn) < want ? $(ulimit -Hn) : want ))"
if (( $(ulimit -n) < 16000 )); then
  echo "memory.sh: the open-file limit is $(ulimit -n); the bench needs about 16000" >&2
  exit 2
fi
# The proxy as the benches build it (optimized, no LTO), unless WEBREP_BIN names another;
# the bench client itself in the dev profile (it only holds sockets).
if [[ -z ${WEBREP_BIN:-} ]]; then
  cargo build --profile bench --bin webrep
  export WEBREP_BIN=$PWD/target/release/webrep
fi
# The build also lists the webrep binary (the bench names it), in no fixed order: pick the
# bench's own artifact by its target kind.
exe=$(cargo build --bench memory --message-format=json \
  | grep '"kind":\["bench"\]' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[[ -x $exe ]] || { echo "memory.sh: the bench did not build" >&2; exit 2; }
"$exe"
