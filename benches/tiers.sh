#!/bin/bash
# Three tiers of reputation servers kept in step by delta sync, end to end with real
# processes on 127.0.0.1 (docs/performance.md, "Tiers").
#
# Usage: benches/tiers.sh [WEBREP_BINARY] [CHANGES] [ENTRIES]
#   (defaults: target/dist/webrep, 20 changes, 1,000,000 entries)
#
# global -> regional -> site `webrep server`s and a `webrep proxy` using the site server, with
# a Python origin behind `shop.test`. It measures:
# 1. propagation: CHANGES verdict changes of `shop.test/` written on the global tier
#    (alternately dangerous and safe); for each, the time until the proxy's answer changes
#    (403 or 200, polled every 10 ms);
# 2. an outage of the global tier: stop it for 2 s, start it, write a change; the time from
#    the global tier answering again to the proxy showing the change (3 runs);
# 3. bytes on the tier link: the global table gets ENTRIES entries (imported offline), a fresh
#    follower copies it (snapshot bytes), then 1,000 single-entry writes on the global tier
#    reach it (change bytes); both counted by the follower (answer bodies;
#    webrep_server_upstream_{snapshot,change}_bytes_total);
# 4. resume: that follower restarted resumes by delta (no new snapshot) and a change written
#    while it was down arrives.
# Ports 18490-18493 (servers), 13129 (proxy), 18082 (origin); override with BASE_PORT (the
# first of five), PROXY_PORT, ORIGIN_PORT.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(realpath "${1:-$ROOT/target/dist/webrep}")
CHANGES=${2:-20}
ENTRIES=${3:-1000000}
BP=${BASE_PORT:-18490}
GP=$BP RP=$((BP + 1)) SP=$((BP + 2)) FP=$((BP + 3)) FM=$((BP + 4))
PP=${PROXY_PORT:-13129}
OP=${ORIGIN_PORT:-18082}
CLIENT=client-token-0123456789
ADMIN=admin-token-0123456789
D=$(mktemp -d)
cd "$D" || exit 1
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; cd /; rm -rf "$D"' EXIT

server_yaml() { # NAME PORT [UPSTREAM_PORT] [METRICS_PORT]
    {
        echo "log: { level: info }"
        echo "server:"
        echo "  listen: \"127.0.0.1:$2\""
        echo "  store: \"$D/$1.db\""
        echo "  client_tokens: [\"$CLIENT\"]"
        echo "  admin_tokens: [\"$ADMIN\"]"
        [ -n "${4:-}" ] && echo "  metrics_listen: \"127.0.0.1:$4\""
        [ -n "${3:-}" ] && printf '  upstream:\n    url: "http://127.0.0.1:%s"\n    token: "%s"\n' "$3" "$CLIENT"
    } >"$1.yaml"
}
server_yaml global $GP
server_yaml regional $RP $GP
server_yaml site $SP $RP
server_yaml fresh $FP $GP $FM
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
write() { # PORT SCORE CATEGORY [KEY]
    write_entry "$1" "${4:-shop.test/}" "$2" "$3"
}
status() { proxied_status "$PP" "http://shop.test:$OP/"; }
flip() { # RUN: writes the next verdict on the global tier, prints the seconds until seen
    if [ $(($1 % 2)) = 1 ]; then want=403 score=2 cat=malware; else want=200 score=95 cat=news; fi
    t0=$(now)
    write $GP $score $cat
    until [ "$(status)" = $want ]; do sleep 0.01; done
    python3 -c "print(f'{$(now) - $t0:.3f}')"
}
metric() { curl -s "http://127.0.0.1:$FM/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
stats() { python3 -c "import sys,statistics as s; v=sorted(float(x) for x in sys.argv[1:]); print(f'median {s.median(v):.3f} s, max {v[-1]:.3f} s, min {v[0]:.3f} s over {len(v)}')" "$@"; }

python3 -m http.server "$OP" --bind 127.0.0.1 >/dev/null 2>&1 &
until curl -s -o /dev/null "http://127.0.0.1:$OP/"; do sleep 0.05; done
"$BIN" server --config global.yaml 2>global.log &
GS=$!
up $GP
write $GP 95 news
"$BIN" server --config regional.yaml 2>regional.log &
up $RP
"$BIN" server --config site.yaml 2>site.log &
up $SP
"$BIN" proxy --config proxy.yaml 2>proxy.log &
until [ "$(status)" = 200 ]; do sleep 0.05; done
sleep 1

echo "1. propagation global -> regional -> site -> proxy decision, $CHANGES changes:"
times=()
for r in $(seq "$CHANGES"); do times+=("$(flip "$r")"); sleep 0.2; done
echo "   ${times[*]}"
echo "   $(stats "${times[@]}")"

echo "2. after a 2 s outage of the global tier (server back -> decision changed):"
out=()
for r in 1 2 3; do
    kill -TERM $GS; wait $GS; sleep 2
    "$BIN" server --config global.yaml 2>>global.log &
    GS=$!
    up $GP
    out+=("$(flip $((CHANGES + r)))")
    sleep 1
done
echo "   ${out[*]}"
echo "   $(stats "${out[@]}")"

echo "3. bytes on the tier link, $ENTRIES entries:"
kill -TERM $GS; wait $GS
python3 - "$ENTRIES" >bulk.jsonl <<'P'
import sys
for i in range(int(sys.argv[1])):
    print('{"key":"bulk%d.example/","score":%d,"categories":["malware"]}' % (i, 5 + i % 90))
P
t0=$(now)
"$BIN" import --format jsonl --feed bulk --store "$D/global.db" bulk.jsonl >/dev/null || exit 1
echo "   offline import: $(python3 -c "print(f'{$(now) - $t0:.1f}')") s"
"$BIN" server --config global.yaml 2>>global.log &
GS=$!
up $GP
t0=$(now)
"$BIN" server --config fresh.yaml 2>fresh.log &
FS=$!
up $FP
until grep -q "snapshot of the upstream complete" fresh.log; do sleep 0.1; done
snap=$(metric webrep_server_upstream_snapshot_bytes_total)
echo "   snapshot: $(python3 -c "print(f'{$(now) - $t0:.1f}')") s, $snap bytes"
c0=$(metric webrep_server_upstream_change_bytes_total)
for i in $(seq 1000); do write $GP 7 phishing "change$i.example/"; done
until [ "$(curl -s -H "authorization: Bearer $CLIENT" "http://127.0.0.1:$FP/v1/lookup?url=http://change1000.example/" | grep -c dangerous)" = 1 ]; do sleep 0.05; done
c1=$(metric webrep_server_upstream_change_bytes_total)
python3 -c "d=$c1-$c0; print(f'   1,000 changes: {d} bytes = 1/{$snap/d:.0f} of the snapshot')"

echo "4. the follower restarted after the snapshot:"
kill -TERM $FS; wait $FS
write $GP 9 malware "while-down.example/"
"$BIN" server --config fresh.yaml 2>fresh2.log &
FS=$!
up $FP
t0=$(now)
until [ "$(curl -s -H "authorization: Bearer $CLIENT" "http://127.0.0.1:$FP/v1/lookup?url=http://while-down.example/" | grep -c dangerous)" = 1 ]; do sleep 0.01; done
echo "   change written while down seen $(python3 -c "print(f'{$(now) - $t0:.2f}')") s after restart; snapshots since restart: $(metric webrep_server_upstream_snapshots_total); 'taking a snapshot' logged: $(grep -c 'taking a snapshot' fresh2.log)"
