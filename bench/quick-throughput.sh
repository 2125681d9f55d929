#!/usr/bin/env bash
# bench/quick-throughput.sh BINARY [BINARY...]: rough small-request throughput of webrep
# builds, one after the other on the same machine state: wrk (32 connections, 2 threads)
# through the proxy to a loopback origin (benches/memory.rs run with --origin), keep-alive and
# with `Connection: close` (a new client connection per request: the accept path). Loopback
# only; port 3199 (PORT). For figures against Squid and nginx use ../shared/bench/run.sh.
#
#   bench/quick-throughput.sh /tmp/webrep-old target/dist/webrep /tmp/webrep-old target/dist/webrep
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v wrk >/dev/null || { echo "quick-throughput: wrk not found (apt-get install wrk)" >&2; exit 2; }
ORIGIN_EXE=$(cargo build --bench memory --message-format=json \
  | grep '"kind":\["bench"\]' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
PORT=${PORT:-3199}; DUR=${DUR:-8}
for BIN in "$@"; do
dir=$(mktemp -d /tmp/tput.XXXXXX)
"$ORIGIN_EXE" --origin > "$dir/origin" & opid=$!
for i in $(seq 50); do [[ -s $dir/origin ]] && break; sleep 0.1; done
origin=$(head -1 "$dir/origin")
cat > "$dir/w.yaml" <<Y
proxy:
  listen: ["127.0.0.1:$PORT"]
  destinations:
    allow_internal: true
access_log:
  path: $dir/access.log
log:
  level: warn
policy:
  enabled: false
Y
"$BIN" proxy --config "$dir/w.yaml" 2> "$dir/proxy.err" & ppid=$!
for i in $(seq 100); do curl -s -o /dev/null -x "127.0.0.1:$PORT" "http://$origin/" && break; sleep 0.1; done
echo "wrk.path = \"http://$origin/\"" > "$dir/p.lua"
echo "== $BIN keep-alive"; wrk -t2 -c32 -d${DUR}s -s "$dir/p.lua" "http://127.0.0.1:$PORT/" | grep -E "Requests/sec|Latency"
echo "== $BIN close"; wrk -t2 -c32 -d${DUR}s -H "Connection: close" -s "$dir/p.lua" "http://127.0.0.1:$PORT/" | grep -E "Requests/sec|Latency"
kill $ppid; wait $ppid 2>/dev/null; kill $opid; wait $opid 2>/dev/null
rm -rf "$dir"
done
