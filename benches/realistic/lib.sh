# benches/realistic/lib.sh: the pieces of the realistic workload, sourced by run.sh and
# curves.sh (see README.md there). Everything binds 127.0.0.1; every process this starts is
# recorded with its PID and start time and stopped by PID on exit (also on error and
# interrupt); /etc/resolv.conf is only replaced when WEBREP_DNS=system asks for it, and then
# restored on exit.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
WEBREP=${WEBREP:-$REPO/target/dist/webrep}
LOADGEN=${LOADGEN:-}                          # empty: built with cargo (bench profile)
POLICY=${POLICY:-$REPO/policies/default.yaml}
DATA=${DATA:-/tmp/webrep-realistic-data}      # generated tables, lists, bodies, CAs (cached)
DURATION=${DURATION:-30}
WARMUP=${WARMUP:-5}
HOSTS=${HOSTS:-${ZIPF_N:-100000}}             # distinct traffic hosts (Zipf ranks)
ZIPF_S=${ZIPF_S:-1.0}
TABLE=${TABLE:-1000000}                       # reputation table entries
MIX=${MIX:-"https=70,rpc_mean=10,rpc_max=100"}
LOAD_CPUS=${LOAD_CPUS:-0}                     # load generator, nginx, dnsmasq, this script
PROXY_CPUS=${PROXY_CPUS:-1}                   # proxy (+ reputation server / helpers)
ORIGIN_PORT=${ORIGIN_PORT:-18080}
ORIGIN_TLS_PORT=${ORIGIN_TLS_PORT:-18443}
ORIGIN_KEEPALIVE=${ORIGIN_KEEPALIVE:-2s}
SQUID_PORT=${SQUID_PORT:-13128}
SG_CHILDREN=${SG_CHILDREN:-32}
WR_SERVER_PORT=${WR_SERVER_PORT:-8690}
WR_PROXY_PORT=${WR_PROXY_PORT:-8691}
WR_METRICS_PORT=${WR_METRICS_PORT:-8692}
WR_ADMIN_PORT=${WR_ADMIN_PORT:-8693}
WEBREP_DNS=${WEBREP_DNS:-hickory}             # hickory: asks dnsmasq; system: getaddrinfo (swaps resolv.conf)
WEBREP_PROXY_EXTRA=${WEBREP_PROXY_EXTRA:-}    # extra "key: value" lines under proxy:, ";"-separated
INSTALL=${INSTALL:-auto}                      # auto: install.sh when a tool is missing; 1: always; 0: never
CLK_TCK=$(getconf CLK_TCK)
TS=$(date +%Y%m%d-%H%M%S)
DOMAIN=bench.test

log() { local l; l=$(printf '[%s] %s' "$(date +%H:%M:%S)" "$*"); echo "$l" >&2; [[ -n "${OUT:-}" ]] && echo "$l" >>"$OUT/run.log"; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- processes (by PID only)
STARTED=()
starttime() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; s=${s##*) }; set -- $s; echo "${20}"; }
alive() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; s=${s##*) }; set -- $s; [[ $1 != Z && $1 != X ]]; }
track() { local st; st=$(starttime "$1") || return 1; STARTED+=("$1:$st:$2"); }
stop_pid() {  # pid starttime name
  local i st; st=$(starttime "$1") || return 0; [[ "$st" == "$2" ]] || return 0
  kill -TERM "$1" 2>/dev/null
  for ((i = 0; i < 80; i++)); do alive "$1" || break; sleep 0.1; done
  if alive "$1" && [[ "$(starttime "$1")" == "$2" ]]; then log "  $3 ($1) ignored TERM, KILL"; kill -KILL "$1" 2>/dev/null; sleep 0.3; fi
  wait "$1" 2>/dev/null || true
}
stop_named() {  # name prefix ("" = all), newest first
  local i e keep=() pid st name
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    e=${STARTED[i]}; pid=${e%%:*}; st=${e#*:}; st=${st%%:*}; name=${e#*:*:}
    if [[ "$name" == "$1"* ]]; then stop_pid "$pid" "$st" "$name"; else keep=("$e" "${keep[@]}"); fi
  done
  STARTED=("${keep[@]}")
}
RESOLV_SAVED=""
cleanup() {
  local rc=$?; trap - EXIT INT TERM
  ((${#STARTED[@]})) && { log "cleanup: stopping ${#STARTED[@]} process(es) by PID"; stop_named ""; }
  if [[ -n "$RESOLV_SAVED" ]]; then cat "$RESOLV_SAVED" >/etc/resolv.conf && log "restored /etc/resolv.conf"; fi
  [[ -n "${WORK:-}" && -d "$WORK" && "${KEEP_WORK:-0}" != 1 ]] && rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT; trap 'log interrupted; exit 130' INT TERM
descendants() { ps -e -o pid=,ppid= | awk -v r="$1" '{k[$2]=k[$2]" "$1} END{q[1]=r;n=1;h=1;while(h<=n){p=q[h++];print p;m=split(k[p],a," ");for(i=1;i<=m;i++)q[++n]=a[i]}}'; }
port_up() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
wait_port() { local i; for ((i = 0; i < 600; i++)); do port_up "$1" && return 0; alive "$2" || return 1; sleep 0.1; done; return 1; }
P1() { echo taskset -c "$PROXY_CPUS"; }
P0() { echo taskset -c "$LOAD_CPUS"; }

# ---------------------------------------------------------------- preflight
preflight() {  # tools...
  local t missing=()
  for t in "$@" taskset python3 ss curl openssl; do command -v "$t" >/dev/null || missing+=("$t"); done
  if [[ $INSTALL == 1 || ( $INSTALL == auto && ${#missing[@]} -gt 0 ) ]]; then
    log "installing tools (missing: ${missing[*]:-none})"; "$HERE/install.sh" >&2 || die "install.sh failed"
    missing=(); for t in "$@"; do command -v "$t" >/dev/null || missing+=("$t"); done
  fi
  ((${#missing[@]} == 0)) || die "missing ${missing[*]} (benches/realistic/install.sh)"
  [[ -x "$WEBREP" ]] || die "no webrep binary at $WEBREP (cargo build --profile dist, or WEBREP=...)"
  local p; for p in 53 $ORIGIN_PORT $ORIGIN_TLS_PORT $SQUID_PORT $WR_SERVER_PORT $WR_PROXY_PORT $WR_METRICS_PORT $WR_ADMIN_PORT; do
    port_up "$p" && die "port $p already in use"; done
  ulimit -n "$(ulimit -Hn)"
  taskset -cp "$LOAD_CPUS" $$ >/dev/null   # this script and its helpers on the load CPU
  mkdir -p "$OUT"; WORK=$(mktemp -d /tmp/webrep-realistic-run.XXXXXX); chmod 755 "$WORK"
  log "results in $OUT, scratch $WORK; fd limit $(ulimit -n)"
}

build_loadgen() {  # sets LOADGEN
  [[ -n "$LOADGEN" ]] && { [[ -x "$LOADGEN" ]] || die "LOADGEN=$LOADGEN is not executable"; return; }
  # The dist profile reuses the dependencies `cargo build --profile dist` compiled.
  log "building the load generator (cargo build --profile dist --bench loadgen)"
  LOADGEN=$(cd "$REPO" && nice -n 19 cargo build --profile dist --bench loadgen --message-format=json 2>>"$OUT/run.log" \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "loadgen" and m.get("executable"):
        print(m["executable"])' | tail -1)
  [[ -x "$LOADGEN" ]] || die "no load generator built (see $OUT/run.log)"
}

# ---------------------------------------------------------------- data (cached in $DATA)
table_dir() { echo "$DATA/table-h$1-t$2"; }   # hosts total
prepare_table() {  # hosts total [--squidguard]: table.jsonl + rep.db (+ squidGuard db)
  local d; d=$(table_dir "$1" "$2")
  if [[ ! -s "$d/table.jsonl" || ( "${3:-}" == --squidguard && ! -s "$d/sg/allowed/domains" ) ]]; then
    log "generating a $2-entry table for $1 hosts in $d"
    python3 "$HERE/gen-data.py" table "$d" "$1" "$2" ${3:-} >>"$OUT/run.log" 2>&1 || die "gen-data table failed"
    rm -f "$d/rep.db"* "$d/sg/"*/*.db
  fi
  if [[ ! -s "$d/rep.db" ]]; then
    log "importing $d/table.jsonl"
    ( cd "$d" && /usr/bin/time -v "$WEBREP" import --format jsonl --store rep.db table.jsonl ) >"$d/import.log" 2>&1 \
      || die "import failed: $(tail -3 "$d/import.log")"
  fi
  if [[ "${3:-}" == --squidguard ]]; then
    mkdir -p "$d/sglog"
    cat >"$d/squidGuard.conf" <<EOF
dbhome $d/sg
logdir $d/sglog
dest allowed { domainlist allowed/domains }
dest malware { domainlist malware/domains
               urllist malware/urls }
dest phishing { domainlist phishing/domains
                urllist phishing/urls }
dest spam { domainlist spam/domains
            urllist spam/urls }
acl {
	default {
		pass allowed !malware !phishing !spam all
		redirect http://blocked.invalid/sg?u=%u
	}
}
EOF
    if [[ ! -s "$d/sg/malware/domains.db" ]]; then
      log "building the squidGuard databases"
      squidGuard -c "$d/squidGuard.conf" -C all >"$d/sgbuild.log" 2>&1 || die "squidGuard -C failed"
    fi
    chown -R proxy:proxy "$d/sg" "$d/sglog"
  fi
}

prepare_bodies() {
  [[ -s "$DATA/www/1k.bin" && -d "$DATA/www/sizes" ]] && return
  log "generating origin bodies in $DATA/www"
  python3 "$HERE/gen-data.py" bodies "$DATA" >>"$OUT/run.log" 2>&1 || die "gen-data bodies failed"
}

# Throwaway CAs, generated once per data directory (never in the repository): the origin's
# (a *.bench.test certificate for nginx), Squid's ssl-bump CA and webrep's interception CA.
prepare_pki() {
  local p="$DATA/pki"; mkdir -p "$p"; chmod 700 "$p"
  if [[ ! -s "$p/origin.pem" ]]; then
    log "generating the throwaway CAs in $p"
    ( cd "$p" && {
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=webrep bench origin CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -keyout origin-ca.key -out origin-ca.pem
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=*.$DOMAIN" -keyout origin.key -out origin.csr
      printf 'subjectAltName=DNS:*.%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$DOMAIN" >origin.ext
      openssl x509 -req -in origin.csr -CA origin-ca.pem -CAkey origin-ca.key -CAcreateserial -days 30 -extfile origin.ext -out origin.pem
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=webrep bench squid CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -keyout squid-ca.key -out squid-ca.pem
    } ) >"$p/gen.log" 2>&1 || die "openssl failed: $(tail -3 "$p/gen.log")"
    rm -rf "$p/webrep-ca"
  fi
  if [[ ! -s "$p/webrep-ca/ca.pem" ]]; then
    "$WEBREP" ca init --dir "$p/webrep-ca" --permit test >"$p/webrep-ca.log" 2>&1 || die "webrep ca init failed: $(cat "$p/webrep-ca.log")"
  fi
  chmod 644 "$p"/*.pem; chmod 600 "$p"/*.key; chmod 711 "$p"
  cp "$p/squid-ca.key" "$p/squid-ca-proxy.key"; chown proxy "$p/squid-ca-proxy.key"
  cat "$p/origin-ca.pem" "$p/squid-ca.pem" "$p/webrep-ca/ca.pem" >"$p/all-cas.pem"; chmod 644 "$p/all-cas.pem"
}

# ---------------------------------------------------------------- DNS: dnsmasq on 127.0.0.1:53
start_dns() {
  cat >"$WORK/dnsmasq.conf" <<EOF
port=53
listen-address=127.0.0.1
bind-interfaces
no-resolv
no-hosts
no-poll
address=/test/127.0.0.1
address=/invalid/
local-ttl=300
cache-size=10000
log-facility=$WORK/dnsmasq.log
user=root
EOF
  $(P0) dnsmasq -k -C "$WORK/dnsmasq.conf" >"$WORK/dnsmasq.out" 2>&1 &
  DNSMASQ_PID=$!; track $DNSMASQ_PID dnsmasq
  sleep 0.5; alive $DNSMASQ_PID || die "dnsmasq failed: $(cat "$WORK/dnsmasq.out")"
  if [[ $WEBREP_DNS == system ]]; then
    cp /etc/resolv.conf "$WORK/resolv.conf.orig"; RESOLV_SAVED="$WORK/resolv.conf.orig"
    printf 'nameserver 127.0.0.1\n' >/etc/resolv.conf
    getent hosts "h12345.$DOMAIN" >/dev/null || die "getent hosts h12345.$DOMAIN fails"
  fi
  log "dnsmasq pid $DNSMASQ_PID on 127.0.0.1:53 (answers *.test with 127.0.0.1, forwards nothing)"
}
dns_queries() {  # queries answered so far (dnsmasq SIGUSR1 statistics)
  kill -USR1 "$DNSMASQ_PID"; sleep 0.3
  grep -o 'queries answered locally [0-9]*' "$WORK/dnsmasq.log" | tail -1 | awk '{print $4}'
}

# ---------------------------------------------------------------- origin: nginx, HTTP + TLS
start_origin() {
  mkdir -p "$WORK/nginx-tmp"
  cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile 20000;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 19000; }
http {
  access_log off;
  default_type text/html;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_timeout $ORIGIN_KEEPALIVE;
  keepalive_requests 10000000;
  ssl_certificate $DATA/pki/origin.pem;
  ssl_certificate_key $DATA/pki/origin.key;
  ssl_session_cache shared:bench:20m;
  client_body_temp_path $WORK/nginx-tmp/body; proxy_temp_path $WORK/nginx-tmp/proxy;
  fastcgi_temp_path $WORK/nginx-tmp/fastcgi; uwsgi_temp_path $WORK/nginx-tmp/uwsgi; scgi_temp_path $WORK/nginx-tmp/scgi;
  server {
    listen 127.0.0.1:$ORIGIN_PORT default_server reuseport backlog=4096;
    listen 127.0.0.1:$ORIGIN_TLS_PORT ssl default_server reuseport backlog=4096;
    server_name _;
    root $DATA/www;
    location = /nginx_status { stub_status; }
    location ~ ^/p[0-9]+\$ { rewrite ^ /1k.bin break; }
    location ~ ^/p[0-9]+/(b[0-9]+)\$ { rewrite ^/p[0-9]+/(b[0-9]+)\$ /sizes/\$1 break; }
  }
}
EOF
  chmod -R a+rX "$DATA/www"
  $(P0) nginx -p "$WORK" -e "$WORK/nginx-error.log" -c "$WORK/nginx.conf" -g 'daemon off;' >"$WORK/nginx.out" 2>&1 &
  NGINX_PID=$!; track $NGINX_PID nginx
  wait_port "$ORIGIN_TLS_PORT" $NGINX_PID || die "nginx failed: $(cat "$WORK/nginx.out" "$WORK/nginx-error.log")"
  sleep 0.3; local p; for p in $(descendants $NGINX_PID); do [[ $p == "$NGINX_PID" ]] || track "$p" nginx-child; done
  local c
  c=$(curl -s --noproxy '*' --cacert "$DATA/pki/origin-ca.pem" --resolve "h5.$DOMAIN:$ORIGIN_TLS_PORT:127.0.0.1" \
    -o /dev/null -w '%{http_code}:%{size_download}' "https://h5.$DOMAIN:$ORIGIN_TLS_PORT/p3")
  [[ $c == 200:1024 ]] || die "origin TLS check failed ($c)"
  log "origin nginx pid $NGINX_PID: http 127.0.0.1:$ORIGIN_PORT, https 127.0.0.1:$ORIGIN_TLS_PORT (*.$DOMAIN), keepalive_timeout $ORIGIN_KEEPALIVE"
}
origin_reqs() { curl -s --noproxy '*' "http://127.0.0.1:$ORIGIN_PORT/nginx_status" | awk 'NR==3{print $3}'; }

# ---------------------------------------------------------------- targets
# Each sets MAIN_PID, AUX_PID (or ""), PROXY_ADDR ("" = direct), TDIR (its directory).
start_squid() {  # $1 = 1 with squidGuard, $2 = the table directory (for squidGuard)
  # Fresh for every start: security_file_certgen -c refuses an existing database.
  local d="$WORK/squid$1"; rm -rf "$d"; mkdir -p "$d"; TDIR=$d
  /usr/lib/squid/security_file_certgen -c -s "$d/ssl_db" -M 64MB >"$d/certgen.log" 2>&1 || { log "security_file_certgen -c failed"; return 1; }
  cat >"$d/squid.conf" <<EOF
http_port 127.0.0.1:$SQUID_PORT ssl-bump tls-cert=$DATA/pki/squid-ca.pem tls-key=$DATA/pki/squid-ca-proxy.key generate-host-certificates=on dynamic_cert_mem_cache_size=64MB
sslcrtd_program /usr/lib/squid/security_file_certgen -s $d/ssl_db -M 64MB
sslcrtd_children 8 startup=4 idle=1
tls_outgoing_options cafile=$DATA/pki/origin-ca.pem
acl step1 at_step SslBump1
acl bump_hosts ssl::server_name_regex ^h[0-9]*[02468]\.${DOMAIN//./\\.}\$
ssl_bump peek step1
ssl_bump bump bump_hosts
ssl_bump splice all
visible_hostname bench-squid
pid_filename $d/squid.pid
cache_log $d/cache.log
access_log none
cache_store_log none
coredump_dir $d
cache deny all
cache_mem 0 MB
dns_nameservers 127.0.0.1
pinger_enable off
icp_port 0
htcp_port 0
shutdown_lifetime 1 seconds
max_filedescriptors 20000
acl bench_clients src 127.0.0.1/32
acl bench_dst dst 127.0.0.0/8
http_access allow bench_clients bench_dst
http_access deny all
cache_effective_user proxy
EOF
  if [[ $1 == 1 ]]; then
    cat >>"$d/squid.conf" <<EOF
url_rewrite_program /usr/bin/squidGuard -c $2/squidGuard.conf
url_rewrite_children $SG_CHILDREN startup=$SG_CHILDREN idle=4 concurrency=0 queue-size=1024
url_rewrite_bypass off
acl sg_blocked dstdomain blocked.invalid
# A CONNECT rewritten to squidGuard's redirect URL comes out as "CONNECT http:443".
acl sg_blocked_connect dstdomain http
adapted_http_access deny sg_blocked
adapted_http_access deny CONNECT sg_blocked_connect
adapted_http_access allow all
EOF
  fi
  chown -R proxy: "$d"
  squid -k parse -f "$d/squid.conf" >"$d/parse.log" 2>&1 || { log "squid parse failed: $(grep -i 'error\|fatal' "$d/parse.log" | head -5)"; return 1; }
  $(P1) squid -N -f "$d/squid.conf" >"$d/squid.out" 2>&1 &
  MAIN_PID=$!; track $MAIN_PID "tgt-squid"
  wait_port $SQUID_PORT $MAIN_PID || { log "squid failed: $(tail -5 "$d/cache.log")"; return 1; }
  sleep 2; local p; for p in $(descendants $MAIN_PID); do [[ $p == "$MAIN_PID" ]] || track "$p" tgt-squid-child; done
  PROXY_ADDR=127.0.0.1:$SQUID_PORT; AUX_PID=""
}

WR_TOK=bench-client-token-0123456789abcdef; WR_ADM=bench-admin-token-0123456789abcdef
# $1 = on | off (filtering), $2 = intercept: split (the policy's even/odd split) | all | none,
# $3 = table directory (its rep.db is copied), $4 = policy file (filtering on).
start_webrep() {
  local d="$WORK/webrep-$1-$2"; rm -rf "$d"; mkdir -p "$d/spool"; TDIR=$d
  local icpt=true; [[ $2 == none ]] && icpt=false
  local extra=""; [[ -n "$WEBREP_PROXY_EXTRA" ]] && extra=$(tr ';' '\n' <<<"$WEBREP_PROXY_EXTRA" | sed 's/^ */  /')
  local dns='dns_nameservers: ["127.0.0.1:53"]'; [[ $WEBREP_DNS == system ]] && dns='dns_resolver: system'
  cat >"$d/proxy.yaml" <<EOF
proxy:
  listen: ["127.0.0.1:$WR_PROXY_PORT"]
  connect_ports: [$ORIGIN_TLS_PORT]
  destinations: { allow_internal: true }
  $dns
$extra
reputation:
  sources: [{ url: "http://127.0.0.1:$WR_SERVER_PORT", token: "$WR_TOK" }]
feedback: { enabled: $([[ $1 == on ]] && echo true || echo false), spool_dir: "$d/spool" }
access_log: { path: "$d/access.log" }
policy: { enabled: $([[ $1 == on ]] && echo true || echo false), file: "${4:-$POLICY}" }
intercept: { enabled: $icpt, ca_dir: "$DATA/pki/webrep-ca", upstream_ca_file: "$DATA/pki/origin-ca.pem" }
admin: { listen: "127.0.0.1:$WR_ADMIN_PORT" }
log: { level: warn }
EOF
  "$WEBREP" config check "$d/proxy.yaml" >"$d/check.log" 2>&1 || { log "webrep config check failed: $(cat "$d/check.log")"; return 1; }
  AUX_PID=""
  if [[ $1 == on ]]; then
    # A fresh copy, so that the feedback an earlier target stored does not carry over
    # (NO_STORE_COPY=1: the cached store itself, for the big tables of curves.sh).
    local store="$d/rep.db"
    if [[ ${NO_STORE_COPY:-0} == 1 ]]; then store="$3/rep.db"; else cp "$3/rep.db" "$store"; fi
    cat >"$d/server.yaml" <<EOF
server:
  listen: "127.0.0.1:$WR_SERVER_PORT"
  metrics_listen: "127.0.0.1:$WR_METRICS_PORT"
  store: "$store"
  client_tokens: ["$WR_TOK"]
  admin_tokens: ["$WR_ADM"]
log: { level: warn }
EOF
    $(P1) "$WEBREP" server --config "$d/server.yaml" >"$d/server.log" 2>&1 &
    AUX_PID=$!; track $AUX_PID tgt-webrep-server
    wait_port $WR_SERVER_PORT $AUX_PID || { log "webrep server failed: $(tail -3 "$d/server.log")"; return 1; }
  fi
  ( cd "$d" && exec $(P1) "$WEBREP" proxy --config "$d/proxy.yaml" ) >"$d/proxy.log" 2>&1 &
  MAIN_PID=$!; track $MAIN_PID tgt-webrep-proxy
  wait_port $WR_PROXY_PORT $MAIN_PID || { log "webrep proxy failed: $(tail -3 "$d/proxy.log")"; return 1; }
  sleep 0.5
  PROXY_ADDR=127.0.0.1:$WR_PROXY_PORT
}

# The harness's policy: POLICY with the even/odd interception split and $1 extra blocked-list
# entries; written to $2.
write_policy() {
  python3 "$HERE/gen-data.py" policy "$2" "$POLICY" "$1" 1 || die "gen-data policy failed"
  "$WEBREP" policy check "$2" >"$2.check" 2>&1 || die "policy check failed: $(head -5 "$2.check")"
}

# What a target answers: h1 (allowed), h100 and h101 (listed malware) over HTTP and HTTPS
# (h2 and h100 intercepted, h1 and h101 tunnelled by the split).
sanity() {
  local ca=(--cacert "$DATA/pki/all-cas.pem") u
  local out=""
  for u in "http://h1.$DOMAIN:$ORIGIN_PORT/p1" "http://h100.$DOMAIN:$ORIGIN_PORT/p1" \
           "https://h1.$DOMAIN:$ORIGIN_TLS_PORT/p1" "https://h2.$DOMAIN:$ORIGIN_TLS_PORT/p1" \
           "https://h100.$DOMAIN:$ORIGIN_TLS_PORT/p1" "https://h101.$DOMAIN:$ORIGIN_TLS_PORT/p1"; do
    out+="${u#*//} $(curl -s --noproxy '' -x "http://$PROXY_ADDR" "${ca[@]}" --max-time 10 -o /dev/null -w '%{http_connect}/%{http_code}' "$u") "
  done
  echo "$out"
}

# ---------------------------------------------------------------- measurement
ticks() { local p s sum=0; for p in "$@"; do s=$(cat /proc/$p/stat 2>/dev/null) || continue; s=${s##*) }; set -- $s; sum=$((sum + ${12} + ${13})); done; echo $sum; }
cpu_line() { awk -v c="cpu$1" '$1==c{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
rss_sum() { local p s=0 k v; for p in "$@"; do while read -r k v _; do [[ $k == VmRSS: ]] && { s=$((s + v)); break; }; done 2>/dev/null </proc/$p/status; done; echo $s; }
pss_sum() { local p s=0; for p in "$@"; do s=$((s + $(awk '/^Pss:/{print $2}' /proc/$p/smaps_rollup 2>/dev/null || echo 0))); done; echo $s; }

mix_args() {  # MIX "https=70,rpc_mean=10,rpc_max=100" -> loadgen flags
  local kv; for kv in ${MIX//,/ }; do printf -- '--%s %s ' "${kv%%=*}" "${kv#*=}" | tr _ -; done
}
run_load() {  # conns secs outfile [hosts]
  local tgt=(--direct); [[ -n "$PROXY_ADDR" ]] && tgt=(--proxy "$PROXY_ADDR")
  # shellcheck disable=SC2046
  timeout $(($2 + 60)) $(P0) "$LOADGEN" "${tgt[@]}" --conns "$1" --duration "$2" --hosts "${4:-$HOSTS}" \
    --zipf-s "$ZIPF_S" --body "${BODY:-1k}" --http-port "$ORIGIN_PORT" --https-port "$ORIGIN_TLS_PORT" \
    --ca "$DATA/pki/all-cas.pem" --seed "$RANDOM" $(mix_args) >"$3" 2>&1
}
webrep_snap() {  # tag
  [[ $TARGET == webrep* ]] || return 0
  curl -s --noproxy '*' "http://127.0.0.1:$WR_ADMIN_PORT/stats" >"$MDIR/stats-$1.json"
  curl -s --noproxy '*' "http://127.0.0.1:$WR_ADMIN_PORT/metrics" >"$MDIR/proxy-metrics-$1.txt"
  [[ -n "$AUX_PID" ]] && curl -s --noproxy '*' "http://127.0.0.1:$WR_METRICS_PORT/metrics" >"$MDIR/server-metrics-$1.txt"
  return 0
}

# One measurement at $1 connections: warm-up, then DURATION seconds with the proxy's CPU,
# RSS, both CPUs' busy time, DNS queries and origin requests around it. Appends one
# "RESULT key=value ..." line (labels from $LABELS, then the load generator's fields, then
# these) to $OUT/results.txt. $2: hosts for the load generator (default HOSTS).
measure() {
  local conc=$1 hosts=${2:-$HOSTS} main aux
  MDIR="$OUT/raw/${MNAME:-$TARGET}-c$conc"; mkdir -p "$MDIR"
  log "  warm-up ${WARMUP}s at c=$conc"; run_load "$conc" "$WARMUP" "$MDIR/warmup.out" "$hosts"
  mapfile -t main < <([[ -n "$MAIN_PID" ]] && descendants "$MAIN_PID")
  mapfile -t aux < <([[ -n "$AUX_PID" ]] && descendants "$AUX_PID")
  # Squid: its helpers (squidGuard, certificate generators) are the main process's children.
  if [[ $TARGET == squid* && ${#main[@]} -gt 1 ]]; then aux=("${main[@]:1}"); main=("${main[0]}"); fi
  local m0 a0 o0 q0 c00 c10 m1 a1 o1 q1 c01 c11
  webrep_snap before
  q0=$(dns_queries); o0=$(origin_reqs)
  m0=$(ticks "${main[@]}"); a0=$(ticks "${aux[@]}")
  c00=($(cpu_line "${LOAD_CPUS%%[,-]*}")); c10=($(cpu_line "${PROXY_CPUS%%[,-]*}"))
  ( mx=0; ax=0; n=0; while ((n < (DURATION + 30) * 2)); do
      a=$(rss_sum "${main[@]}"); b=$(rss_sum "${aux[@]}")
      ((a > mx)) && mx=$a; ((b > ax)) && ax=$b; echo "$mx $ax" >"$MDIR/rss.peak"; n=$((n + 1)); sleep 0.5; done ) &
  local sp=$!; track $sp rss-sampler
  run_load "$conc" "$DURATION" "$MDIR/load.out" "$hosts"
  m1=$(ticks "${main[@]}"); a1=$(ticks "${aux[@]}")
  c01=($(cpu_line "${LOAD_CPUS%%[,-]*}")); c11=($(cpu_line "${PROXY_CPUS%%[,-]*}"))
  stop_named rss-sampler
  o1=$(origin_reqs); q1=$(dns_queries)
  webrep_snap after
  local line rm ra pss
  line=$(grep '^LOADGEN ' "$MDIR/load.out" | tail -1)
  [[ -n "$line" ]] || { log "  no load result: $(tail -3 "$MDIR/load.out")"; return; }
  read -r rm ra <"$MDIR/rss.peak" 2>/dev/null || { rm=NA; ra=NA; }
  pss=$(pss_sum "${main[@]}" "${aux[@]}")
  [[ -z "$MAIN_PID" ]] && { rm=NA; ra=NA; pss=NA; }
  line="RESULT ${LABELS:-} target=$TARGET conns=$conc hosts=$hosts ${line#LOADGEN } main_cpu_ticks=$((m1 - m0)) aux_cpu_ticks=$((a1 - a0)) clk_tck=$CLK_TCK"
  line+=" has_proxy=$([[ -n "$MAIN_PID" ]] && echo 1 || echo 0) rss_main_kb=$rm rss_aux_kb=$ra pss_end_kb=$pss"
  line+=" cpu0_busy=$((c01[0] - c00[0])) cpu0_total=$((c01[1] - c00[1])) cpu1_busy=$((c11[0] - c10[0])) cpu1_total=$((c11[1] - c10[1]))"
  line+=" dns_queries=$(( ${q1:-0} - ${q0:-0} )) origin_reqs=$(( ${o1:-0} - ${o0:-0} - 1 )) mdir=${MDIR#$OUT/}"
  echo "$line" >>"$OUT/results.txt"
  python3 "$HERE/report.py" --line "$line" | tee -a "$OUT/run.log" >&2
}
