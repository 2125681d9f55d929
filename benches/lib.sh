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
