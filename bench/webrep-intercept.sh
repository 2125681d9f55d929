#!/bin/sh
# webrep under `INTERCEPT=1 ../shared/bench/run.sh`: intercepting every CONNECT with its own CA
# (created in $WEBREP_BENCH_CA_DIR on first start; give its ca.pem to run.sh as PUT_CA) and
# trusting the harness's origin CA ($BENCH_ORIGIN_CA) upstream. Loopback only.
#   INTERCEPT=1 PROXY_UNDER_TEST=127.0.0.1:3128 PUT_NAME=webrep PUT_CA=/tmp/webrep-bench-ca/ca.pem \
#     PUT_CMD='bench/webrep-intercept.sh' ../shared/bench/run.sh
set -eu
ca_dir=${WEBREP_BENCH_CA_DIR:-/tmp/webrep-bench-ca}
bin=${WEBREP_BIN:-target/dist/webrep}
cfg=${BENCH_PUT_RUN_DIR:-/tmp}/webrep-intercept.yaml
cat > "$cfg" <<YAML
proxy:
  listen: ["127.0.0.1:3128"]
  connect_ports: [443, 18443]
  destinations:
    allow_internal: true
access_log:
  path: /tmp/webrep-bench-access.log
log:
  level: warn
policy:
  enabled: false
intercept:
  enabled: true
  create_ca: true
  ca_dir: "$ca_dir"
  upstream_ca_file: "$BENCH_ORIGIN_CA"
YAML
exec "$bin" proxy --config "$cfg"
