#!/bin/bash
# How long a verdict written right after a reputation server restart takes to reach a running
# proxy, end to end with real processes on 127.0.0.1 (docs/performance.md).
#
# Usage: benches/follower-restart.sh [WEBREP_BINARY] [RUNS] [OUTAGE_SECS]
#   (defaults: target/dist/webrep, 4 runs, 1 s outage)
#
# A `webrep server` on a store file and a `webrep proxy` following its change stream, with a
# Python origin behind `shop.test`. `shop.test/` starts safe and is looked up once through the
# proxy (cached for minutes). Each run stops the server (SIGTERM), waits OUTAGE_SECS, starts it
# again on the same store and port, writes `shop.test/` as dangerous (or back to safe), and
# polls through the proxy every 10 ms until the answer changes (403 or 200). It prints the
# time from the server answering again to the proxy showing the change. Ports: 18480 (server),
# 13128 (proxy), 18081 (origin); override with SERVER_PORT, PROXY_PORT, ORIGIN_PORT.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(realpath "${1:-$ROOT/target/dist/webrep}")
RUNS=${2:-4}
OUTAGE=${3:-1}
SP=${SERVER_PORT:-18480}
PP=${PROXY_PORT:-13128}
OP=${ORIGIN_PORT:-18081}
CLIENT=client-token-0123456789
ADMIN=admin-token-0123456789
D=$(mktemp -d)
cd "$D" || exit 1
cat >server.yaml <<Y
log: { level: warn }
server:
  listen: "127.0.0.1:$SP"
  store: "$D/rep.db"
  client_tokens: ["$CLIENT"]
  admin_tokens: ["$ADMIN"]
Y
cat >proxy.yaml <<Y
log: { level: warn }
access_log: { enabled: false }
proxy:
  listen: ["127.0.0.1:$PP"]
  hosts: { "shop.test": ["127.0.0.1"] }
  destinations: { allow_internal: true }
policy: { enabled: true, file: "$ROOT/policies/default.yaml" }
feedback: { enabled: false }
reputation:
  sources:
    - { url: "http://127.0.0.1:$SP", token: "$CLIENT" }
Y
. "$ROOT/benches/lib.sh"
write() { write_entry "$SP" shop.test/ "$1" "$2"; }
status() { proxied_status "$PP" "http://shop.test:$OP/"; }
python3 -m http.server "$OP" --bind 127.0.0.1 >/dev/null 2>&1 &
ORIGIN=$!
until curl -s -o /dev/null "http://127.0.0.1:$OP/"; do sleep 0.05; done
"$BIN" server --config server.yaml 2>server.log &
SRV=$!
up "$SP"
write 95 news
"$BIN" proxy --config proxy.yaml 2>proxy.log &
PX=$!
until [ "$(status)" = 200 ]; do sleep 0.05; done
sleep 1
for r in $(seq "$RUNS"); do
    if [ $((r % 2)) = 1 ]; then want=403 score=2 cat=malware; else want=200 score=95 cat=news; fi
    kill -TERM $SRV
    wait $SRV
    sleep "$OUTAGE"
    "$BIN" server --config server.yaml 2>>server.log &
    SRV=$!
    up "$SP"
    back=$(now)
    write $score $cat
    written=$(now)
    until [ "$(status)" = $want ]; do sleep 0.01; done
    seen=$(now)
    python3 -c "print(f'run $r: server back -> change seen {$seen - $back:.2f} s (write done after {$written - $back:.2f} s)')"
    sleep 1
done
kill -TERM $PX $SRV $ORIGIN
wait 2>/dev/null
cd / && rm -rf "$D"
