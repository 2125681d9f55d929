#!/usr/bin/env bash
# benches/realistic/run.sh: webrep beside Squid and Squid + squidGuard on office-like traffic
# (Zipf over 100,000 host names, a 1,000,000-entry table, 70 % HTTPS of which half is
# intercepted and half tunnelled, keep-alive connections of varying length, real DNS through
# a local dnsmasq), loopback only. From the repository root, after `cargo build --profile dist`:
#
#   benches/realistic/run.sh                          # every target, 1 KiB bodies, 32 and 128 connections
#   BODIES="1k lognormal" benches/realistic/run.sh    # plus log-normal bodies
#   TARGETS="direct webrep" DURATION=10 benches/realistic/run.sh
#   benches/realistic/report.py /tmp/webrep-realistic-results/XXXX   # re-render a run's tables
#
# Knobs and what every target is: benches/realistic/README.md.
set -u -o pipefail
LABEL=${LABEL:-}
OUT=${OUT:-/tmp/webrep-realistic-results/$(date +%Y%m%d-%H%M%S)${LABEL:+-$LABEL}}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TARGETS=${TARGETS:-"direct squid squidguard webrep webrep-nofilter"}
BODIES=${BODIES:-"1k"}                        # 1k and/or lognormal
CONCS=${CONCS:-"32 128"}
SAMPLE_CHECK=${SAMPLE_CHECK:-1}
POLICY_LIST=${POLICY_LIST:-0}                 # extra blocked-list entries in webrep's policy

preflight nginx squid squidGuard dnsmasq
if [[ " $TARGETS " == *" squid"* ]] && ! squid -v | grep -q -- --with-openssl; then
  # The GnuTLS build (Debian's "squid") has no ssl-bump; squid-openssl replaces it.
  [[ $INSTALL == 0 ]] && die "this squid has no ssl-bump (benches/realistic/install.sh installs squid-openssl)"
  "$HERE/install.sh" >&2 || die "install.sh failed"
fi
build_loadgen
prepare_table "$HOSTS" "$TABLE" --squidguard
TD=$(table_dir "$HOSTS" "$TABLE")
prepare_bodies
prepare_pki
write_policy "$POLICY_LIST" "$WORK/policy.yaml"; cp "$WORK/policy.yaml" "$OUT/webrep-policy.yaml"
cp "$TD/squidGuard.conf" "$OUT/"
start_dns
start_origin

{
  echo "date: $(date -Is)"; echo "host: $(nproc --all) CPUs, $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
  echo "webrep: $("$WEBREP" --version) ($WEBREP, $(stat -c %y "$WEBREP")); git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)"
  echo "squid: $(squid -v | head -1); squidGuard: $(squidGuard -v 2>&1 | head -1)"
  echo "dnsmasq: $(dnsmasq -v | head -1); nginx: $(nginx -v 2>&1); loadgen: $LOADGEN"
  echo "table: $(wc -l <"$TD/table.jsonl") entries, $HOSTS traffic hosts (Zipf s=$ZIPF_S)"
  echo "settings: TARGETS='$TARGETS' BODIES='$BODIES' CONCS='$CONCS' DURATION=$DURATION WARMUP=$WARMUP MIX='$MIX' POLICY_LIST=$POLICY_LIST"
  echo "pinning: load (loadgen, nginx, dnsmasq, script) on CPU $LOAD_CPUS; proxy (+server/helpers) on CPU $PROXY_CPUS"
  echo "origin keepalive_timeout $ORIGIN_KEEPALIVE; SG_CHILDREN=$SG_CHILDREN; WEBREP_DNS=$WEBREP_DNS; WEBREP_PROXY_EXTRA='$WEBREP_PROXY_EXTRA'; fd limit $(ulimit -n)"
  echo "load before start: $(cat /proc/loadavg)"
} >"$OUT/setup.txt"

# After the load: which URLs does this target block? 200 listed-dangerous traffic hosts and
# 800 random ones over HTTP, 100 listed path prefixes of other hosts (inside and outside the
# prefix), and 100 dangerous + 100 random hosts over HTTPS ("connect/status" per URL).
sample_check() {
  [[ "$SAMPLE_CHECK" == 1 && -n "$PROXY_ADDR" ]] || return 0
  [[ -s "$WORK/sample-urls.txt" ]] || python3 - "$TD" "$HOSTS" "$ORIGIN_PORT" "$ORIGIN_TLS_PORT" "$DOMAIN" >"$WORK/sample-urls.txt" <<'PY'
import random, sys
td, n, port, tport, dom = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
r = random.Random(7)
blocked = [l.strip() for l in open(td + "/blocked-hosts.txt")]
for h in r.sample(blocked, min(200, len(blocked))) + ["h%d.%s" % (r.randrange(1, n + 1), dom) for _ in range(800)]:
    print("http://%s:%s/p%d" % (h, port, r.randrange(1, 21)))
urls = [l.strip() for l in open(td + "/sg/phishing/urls")]
for u in r.sample(urls, min(100, len(urls))):
    host, path = u.split("/", 1)
    print("http://%s:%s/%s/x" % (host, port, path))
    print("http://%s:%s/p7" % (host, port))
for h in r.sample(blocked, min(100, len(blocked))) + ["h%d.%s" % (r.randrange(1, n + 1), dom) for _ in range(100)]:
    print("https://%s:%s/p%d" % (h, tport, r.randrange(1, 21)))
PY
  local cfg="$WORK/curl-$TARGET.cfg"
  awk '{ print "url = \"" $0 "\""; print "output = \"/dev/null\"" }' "$WORK/sample-urls.txt" >"$cfg"
  curl -s --noproxy '' -x "http://$PROXY_ADDR" --cacert "$DATA/pki/all-cas.pem" --max-time 10 -K "$cfg" \
    -w '%{http_connect}/%{http_code} %{url_effective}\n' >"$OUT/sample-$BODY-$TARGET.txt" 2>/dev/null
  log "  sample check: $(awk '{c[$1]++} END {for (k in c) printf "%s x%d ", k, c[k]}' "$OUT/sample-$BODY-$TARGET.txt")"
}

run_target() {
  TARGET=$1; MAIN_PID=""; AUX_PID=""; PROXY_ADDR=""; TDIR=""
  log "=== $BODY / $TARGET"
  local ok=0
  case $TARGET in
    direct) ok=1 ;;
    squid) start_squid 0 && ok=1 ;;
    squidguard) start_squid 1 "$TD" && ok=1 ;;
    webrep) start_webrep on split "$TD" "$WORK/policy.yaml" && ok=1 ;;
    webrep-nofilter) start_webrep off none && ok=1 ;;
    webrep-nofilter-icpt) start_webrep off all && ok=1 ;;
    *) die "unknown target $TARGET" ;;
  esac
  if [[ $ok == 1 && -n "$PROXY_ADDR" ]]; then
    local s; s=$(sanity); log "  sanity (connect/status): $s"
    [[ $s == *"h1.$DOMAIN:$ORIGIN_PORT/p1 000/200"* ]] || { log "  $TARGET does not forward; skipped"; ok=0; }
  fi
  if [[ $ok == 1 ]]; then
    local c; for c in $CONCS; do LABELS="body=$BODY" MNAME="$BODY-$TARGET" measure "$c"; done
    sample_check
    if [[ -n "$TDIR" ]]; then
      mkdir -p "$OUT/raw/$BODY-$TARGET"
      cp "$TDIR"/*.yaml "$TDIR"/*.conf "$OUT/raw/$BODY-$TARGET/" 2>/dev/null
      tail -30 "$TDIR"/*.log "$TDIR"/cache.log >"$OUT/raw/$BODY-$TARGET/logs-tail.txt" 2>/dev/null
      [[ -f "$TDIR/access.log" ]] && wc -l "$TDIR/access.log" >>"$OUT/raw/$BODY-$TARGET/logs-tail.txt"
    fi
  fi
  stop_named tgt-
  [[ -n "$TDIR" ]] && rm -rf "$TDIR/rep.db"* "$TDIR/access.log"
  sleep 2
}

for BODY in $BODIES; do
  for tg in $TARGETS; do run_target "$tg"; done
done
stop_named nginx; stop_named dnsmasq
python3 "$HERE/report.py" "$OUT" | tee "$OUT/table.txt"
log "done: $OUT"
