#!/usr/bin/env python3
"""Tables of a realistic-workload run (benches/realistic/run.sh or curves.sh).

  report.py RESULTS_DIR          the tables of a run (results.txt + raw/)
  report.py --line 'RESULT ...'  one measurement as a short line (printed during the run)

results.txt holds one "RESULT key=value ..." line per measurement: the labels (body, or
curve and point), the target, the load generator's counters (requests, latencies in
microseconds, blocks, errors by kind) and the harness's (proxy CPU ticks, peak RSS, busy
time of both CPUs, DNS queries, origin requests).
"""
import json
import os
import re
import sys


def parse(line):
    return dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)


def num(r, k, default=0.0):
    try:
        return float(r.get(k, default))
    except ValueError:
        return default


def derived(r):
    """req/s, CPU us per request, MB, busy %, errors, blocks."""
    d = {}
    secs = num(r, "duration_us") / 1e6 or 1
    req = num(r, "requests")
    d["rps"] = req / secs
    hz = num(r, "clk_tck", 100)
    main, aux = num(r, "main_cpu_ticks") / hz, num(r, "aux_cpu_ticks") / hz
    has = r.get("has_proxy") == "1"
    d["cpu_us"] = (main + aux) * 1e6 / req if has and req else None
    d["main_us"] = main * 1e6 / req if has and req else None
    d["aux_us"] = aux * 1e6 / req if has and req else None
    d["rss_mb"] = (num(r, "rss_main_kb") + num(r, "rss_aux_kb")) / 1024 if has else None
    d["rss_main_mb"] = num(r, "rss_main_kb") / 1024 if has else None
    d["cpu0"] = 100 * num(r, "cpu0_busy") / max(1, num(r, "cpu0_total"))
    d["cpu1"] = 100 * num(r, "cpu1_busy") / max(1, num(r, "cpu1_total"))
    d["errors"] = sum(int(num(r, k)) for k in r if k.startswith("err_"))
    d["blocked"] = int(num(r, "blocked"))  # includes blocked_connect
    d["dns_per_req"] = num(r, "dns_queries") / req if req else None
    d["origin_per_req"] = num(r, "origin_reqs") / req if req else None
    return d


def f(x, fmt="%.0f"):
    return "-" if x is None else fmt % x


def short(r):
    d = derived(r)
    lab = " ".join("%s=%s" % (k, r[k]) for k in ("body", "curve", "point") if k in r)
    return ("  %s %s c=%s: %s req/s, %s us/req (proxy %s + aux %s), p50 %s ms, p99 %s ms, RSS %s MB, "
            "403 %d, errors %d, cpu0 %s%% cpu1 %s%%" % (
                lab, r.get("target"), r.get("conns"), f(d["rps"]), f(d["cpu_us"], "%.1f"),
                f(d["main_us"], "%.1f"), f(d["aux_us"], "%.1f"), f(num(r, "p50_us") / 1e3, "%.2f"),
                f(num(r, "p99_us") / 1e3, "%.2f"), f(d["rss_mb"]), d["blocked"], d["errors"],
                f(d["cpu0"]), f(d["cpu1"])))


def main_table(rows):
    def key(r):
        return (r.get("body", ""), r.get("conns"))
    ref = {}
    for name in ("direct", "squid", "squidguard", "webrep-nofilter"):
        ref[name] = {key(r): derived(r)["rps"] for r in rows if r.get("target") == name}
    hdr = ("body", "target", "conns", "req/s", "x direct", "x squid", "x sq+sG", "x floor",
           "CPU us/req", "(proxy/aux)", "p50 ms", "p99 ms", "p99 http", "p99 https-icpt", "p99 https-tun",
           "RSS MB", "(proxy)", "403s", "errors", "cpu0%", "cpu1%", "DNS q/req", "origin/req")
    fmt = ("%-9s %-20s %5s %7s %8s %7s %7s %7s %10s %11s %7s %7s %8s %14s %13s %6s %7s %6s %6s %5s %5s %9s %10s")
    print(fmt % hdr)
    for r in rows:
        d, k = derived(r), key(r)
        x = {n: (f(d["rps"] / ref[n][k], "%.2f") if ref[n].get(k) else "-") for n in ref}
        print(fmt % (r.get("body", "-"), r.get("target"), r.get("conns"), f(d["rps"]), x["direct"], x["squid"],
                     x["squidguard"], x["webrep-nofilter"], f(d["cpu_us"], "%.1f"),
                     "%s/%s" % (f(d["main_us"]), f(d["aux_us"])), f(num(r, "p50_us") / 1e3, "%.2f"),
                     f(num(r, "p99_us") / 1e3, "%.2f"), f(num(r, "http_p99_us") / 1e3, "%.1f"),
                     f(num(r, "https_even_p99_us") / 1e3, "%.1f"), f(num(r, "https_odd_p99_us") / 1e3, "%.1f"),
                     f(d["rss_mb"]), f(d["rss_main_mb"]), d["blocked"], d["errors"], f(d["cpu0"]), f(d["cpu1"]),
                     f(d["dns_per_req"], "%.3f"), f(d["origin_per_req"], "%.2f")))
    print()
    print("requests by class (http / https to even hosts = intercepted by the policies / odd = tunnelled), "
          "errors by kind, connections:")
    for r in rows:
        errs = " ".join("%s=%s" % (k[4:], r[k]) for k in sorted(r) if k.startswith("err_") and r[k] != "0")
        print("  %-9s %-20s c=%-4s http %s, https-icpt %s, https-tun %s; 403 %s (to CONNECT %s); other status %s; "
              "errors: %s; connections %s (closed early %s)" % (
                  r.get("body", "-"), r.get("target"), r.get("conns"), r.get("http_requests"),
                  r.get("https_even_requests"), r.get("https_odd_requests"), r.get("blocked"),
                  r.get("blocked_connect"), r.get("status_other"), errs or "none", r.get("conns_opened", "-"),
                  r.get("early_close")))


def metrics(path):
    d = {}
    if not os.path.exists(path):
        return d
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"^(\S+?)(\{.*\})?\s+(\S+)$", line.strip())
        if m:
            try:
                d[m.group(1) + (m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return d


def delta(a, b, *path):
    """b[path] - a[path] for nested JSON counters (0 where missing)."""
    for p in path:
        a = a.get(p, {}) if isinstance(a, dict) else {}
        b = b.get(p, {}) if isinstance(b, dict) else {}
    return (b if isinstance(b, (int, float)) else 0) - (a if isinstance(a, (int, float)) else 0)


def webrep_details(out, rows):
    """Deltas of the proxy's /stats (admin listener) and the server's /metrics."""
    print()
    print("webrep details per measurement (deltas over the measured interval; /stats on the admin listener):")
    wfmt = "%-20s %-20s %5s %8s %8s %7s %8s %9s %9s %9s %8s %8s %8s %9s %8s %8s"
    print(wfmt % ("labels", "target", "conns", "requests", "cacheHit", "blocks", "srvLook", "look/req",
                  "dnsResolv", "dnsCached", "dnsNames", "fbQueued", "fbSent", "srvEvents", "fbDrop", "logDrop"))
    for r in rows:
        if not r.get("target", "").startswith("webrep"):
            continue
        d = os.path.join(out, r.get("mdir", ""))
        try:
            a = json.load(open(os.path.join(d, "stats-before.json")))
            b = json.load(open(os.path.join(d, "stats-after.json")))
        except (OSError, ValueError):
            continue
        if b.get("filter"):
            looked = sum(delta(a, b, "filter", "cache", k) for k in ("hit", "miss", "stale", "unavailable"))
            hit = f(100.0 * delta(a, b, "filter", "cache", "hit") / looked, "%.1f%%") if looked else "-"
            blk = "%d" % delta(a, b, "filter", "actions", "block")
        else:
            hit, blk = "off", "-"
        sa = metrics(os.path.join(d, "server-metrics-before.txt"))
        sb = metrics(os.path.join(d, "server-metrics-after.txt"))
        look_key = 'webrep_server_requests_total{route="lookup",status="2xx"}'
        lk = sb.get(look_key, 0) - sa.get(look_key, 0)
        ev_key = 'webrep_server_events_total{outcome="accepted"}'
        ev = sb.get(ev_key, 0) - sa.get(ev_key, 0)
        req = int(num(r, "requests"))
        fb_drop = sum(delta(a, b, "feedback", k) for k in ("dropped_queue", "dropped_spool", "dropped_damaged"))
        labels = ",".join("%s=%s" % (k, r[k]) for k in ("body", "curve", "point") if k in r)
        print(wfmt % (labels, r["target"], r["conns"], req, hit, blk, "%d" % lk, f(lk / req, "%.3f") if req else "-",
                      "%d" % delta(a, b, "dns", "resolved"), "%d" % delta(a, b, "dns", "cached"),
                      b.get("dns", {}).get("cached_names", "-"), "%d" % delta(a, b, "feedback", "queued"),
                      "%d" % delta(a, b, "feedback", "sent"), "%d" % ev, "%d" % fb_drop,
                      "%d" % delta(a, b, "access_log_dropped")))


def curves_table(rows):
    print("cost curves (one row per point; x first = req/s against the curve's first point):")
    fmt = "%-8s %10s %-16s %5s %8s %8s %10s %9s %9s %7s %7s %6s %6s %6s"
    print(fmt % ("curve", "point", "target", "conns", "req/s", "x first", "CPU us/req", "proxy us", "aux us",
                 "p50 ms", "p99 ms", "RSS MB", "403s", "errors"))
    first = {}
    for r in rows:
        d = derived(r)
        k = (r.get("curve"), r.get("target"), r.get("conns"))
        first.setdefault(k, d["rps"])
        print(fmt % (r.get("curve"), r.get("point"), r.get("target"), r.get("conns"), f(d["rps"]),
                     f(d["rps"] / first[k], "%.2f") if first[k] else "-", f(d["cpu_us"], "%.1f"),
                     f(d["main_us"], "%.1f"), f(d["aux_us"], "%.1f"), f(num(r, "p50_us") / 1e3, "%.2f"),
                     f(num(r, "p99_us") / 1e3, "%.2f"), f(d["rss_mb"]), d["blocked"], d["errors"]))


def samples(out):
    found = {}
    for fn in sorted(os.listdir(out)):
        m = re.match(r"sample-(.+?)-(.+)\.txt$", fn)
        if m:
            s = {}
            for line in open(os.path.join(out, fn)):
                p = line.split()
                if len(p) == 2:
                    s[p[1]] = p[0]
            found[(m.group(1), m.group(2))] = s
    if not found:
        return
    blocked = lambda code: "403" in code  # noqa: E731  (403 to the CONNECT or to the request)
    print()
    print("sample check (HTTP: 200 listed-dangerous + 800 random traffic hosts, 100 listed path prefixes inside"
          " and outside; HTTPS: 100 listed-dangerous + 100 random hosts), 'connect/status' codes:")
    for (body, t), s in found.items():
        codes = {}
        for c in s.values():
            codes[c] = codes.get(c, 0) + 1
        print("  %-9s %-20s %s" % (body, t, " ".join("%s x%d" % kv for kv in sorted(codes.items()))))
    for body in sorted({b for b, _ in found}):
        x, y = found.get((body, "squidguard")), found.get((body, "webrep"))
        if x and y:
            common = set(x) & set(y)
            bx = {u for u in common if blocked(x[u])}
            by = {u for u in common if blocked(y[u])}
            print("  %s: %d URLs in both; blocked by squidGuard %d, by webrep %d, by both %d; disagreements %d%s" % (
                body, len(common), len(bx), len(by), len(bx & by), len(bx ^ by),
                (": " + " ".join(sorted(bx ^ by)[:10])) if bx ^ by else ""))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--line":
        print(short(parse(sys.argv[2])))
        return
    out = sys.argv[1]
    rows = [parse(line) for line in open(os.path.join(out, "results.txt")) if line.startswith("RESULT ")]
    setup = os.path.join(out, "setup.txt")
    if os.path.exists(setup):
        print("# " + open(setup).read().rstrip().replace("\n", "\n# "))
        print()
    main_rows = [r for r in rows if "curve" not in r]
    curve_rows = [r for r in rows if "curve" in r]
    if main_rows:
        main_table(main_rows)
    if curve_rows:
        curves_table(curve_rows)
    webrep_details(out, rows)
    samples(out)


if __name__ == "__main__":
    main()
