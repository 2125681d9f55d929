# Shell helpers shared by the end-to-end bench scripts (benches/*.sh), sourced by them.
# Servers and proxies run on 127.0.0.1; write_entry needs ADMIN (an admin token) set.

# Now, in seconds with nanoseconds.
now() { date +%s.%N; }

# Waits until the reputation server on PORT answers /healthz.
up() { until curl -s -o /dev/null "http://127.0.0.1:$1/healthz"; do sleep 0.005; done; }

# Writes one entry on the server on PORT: write_entry PORT KEY SCORE CATEGORY.
write_entry() {
    curl -s -o /dev/null -H "authorization: Bearer $ADMIN" -H 'content-type: application/json' \
        -d "{\"upsert\":[{\"key\":\"$2\",\"score\":$3,\"categories\":[\"$4\"]}]}" \
        "http://127.0.0.1:$1/v1/entries"
}

# The status code of URL fetched through the proxy on PROXY_PORT: proxied_status PROXY_PORT URL.
proxied_status() { curl -s -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$1" "$2"; }

# A static nginx origin serving DIR (1 worker, sendfile, no access log, keep-alive without a
# request limit) with a self-signed ECDSA certificate for 127.0.0.1 written into DIR:
# nginx_origin DIR LISTEN... (each like "127.0.0.1:19443 ssl"), on the CPUs ORIGIN_CPUS lists
# if set. Stop it with kill "$(cat DIR/nginx.pid)".
nginx_origin() {
    local dir=$1 listen="" l
    shift
    for l in "$@"; do listen+="listen $l; "; done
    chmod 755 "$dir" # the nginx worker (not root) reads the files
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -keyout "$dir/key.pem" -out "$dir/cert.pem" -subj /CN=127.0.0.1 \
        -addext subjectAltName=IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE 2>/dev/null
    cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off; sendfile on; keepalive_requests 10000000;
  server { $listen ssl_certificate $dir/cert.pem; ssl_certificate_key $dir/key.pem; root $dir; }
}
CONF
    if [[ -n ${ORIGIN_CPUS:-} ]]; then
        taskset -c "$ORIGIN_CPUS" nginx -c "$dir/nginx.conf" -p "$dir"
    else
        nginx -c "$dir/nginx.conf" -p "$dir"
    fi
}

# A scratch directory for one bench run in $work and the PIDs it starts in $pids; on exit
# they are stopped, with the nginx and HAProxy whose pid files are in $work.
# Usage: bench_scratch NAME
bench_scratch() {
  work=$(mktemp -d "/tmp/$1.XXXXXX")
  pids=()
  trap bench_stop EXIT
}
bench_stop() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [[ -f $work/nginx.pid ]] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  [[ -f $work/haproxy.pid ]] && kill "$(cat "$work/haproxy.pid")" 2>/dev/null || true
}
