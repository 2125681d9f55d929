#!/usr/bin/env python3
"""Data of the realistic workload (benches/realistic/run.sh and curves.sh).

  gen-data.py table DIR HOSTS TOTAL [--squidguard]
      DIR/table.jsonl (for `webrep import --format jsonl`), DIR/blocked-hosts.txt and, with
      --squidguard, the same entries as squidGuard lists in DIR/sg/<category>/{domains,urls}.
  gen-data.py bodies DIR
      DIR/www/1k.bin and DIR/www/sizes/b1..b1024 (log-normal quantiles), DIR/sizes.txt.
  gen-data.py policy OUT BASE_POLICY LIST_ENTRIES [INTERCEPT]
      BASE_POLICY with its `interception:` section replaced by the harness's (intercept the
      traffic hosts with an even N, tunnel the rest) when INTERCEPT is 1 (the default), and
      LIST_ENTRIES blocked-list entries (hosts that never appear in the traffic) added.

Traffic hosts are h<N>.bench.test, N = Zipf rank 1..HOSTS (three labels: the origin's
wildcard certificate *.bench.test is one that rustls and OpenSSL accept).
  - N % 200 in (100, 101) -> dangerous: score 10, category malware (1 %, even and odd N
                             alike, so both the intercepted and the tunnelled half have some)
  - N % 40 in (10, 31)    -> a content category the default policy allows, score 85-95 (5 %)
  - everything else untested (no entry)
Entries for hosts that never appear in the traffic fill the table up to TOTAL: x<M>.test,
70 % host keys, 30 % host/path keys (x<M>.test/d<j>/), scores 0-50, malware/phishing/spam.
"""
import math
import os
import random
import re
import statistics
import sys

DOMAIN = "bench.test"
CONTENT = ["news", "shopping", "technology", "education", "streaming", "travel", "games",
           "search-engines", "social-networking", "webmail"]
BAD = ["malware"] * 6 + ["phishing"] * 3 + ["spam"]


def table(out, hosts, total, squidguard):
    rng = random.Random(20261207)
    os.makedirs(out, exist_ok=True)
    sg = {c: {"domains": [], "urls": []} for c in ("malware", "phishing", "spam", "allowed")}
    n = 0
    line = '{"key":"%s","score":%d,"categories":["%s"],"source":"feed:bench"}\n'
    with open(os.path.join(out, "table.jsonl.tmp"), "w") as t, \
            open(os.path.join(out, "blocked-hosts.txt"), "w") as bh:
        for r in range(1, hosts + 1):
            h = f"h{r}.{DOMAIN}"
            if r % 200 in (100, 101):
                t.write(line % (h + "/", 10, "malware"))
                sg["malware"]["domains"].append(h)
                bh.write(h + "\n")
                n += 1
            elif r % 40 in (10, 31):
                t.write(line % (h + "/", 85 + r % 11, CONTENT[(r // 40) % len(CONTENT)]))
                sg["allowed"]["domains"].append(h)
                n += 1
        m = 0
        while n < total:
            m += 1
            h = f"x{m}.test"
            cat = BAD[rng.randrange(len(BAD))]
            score = rng.randrange(0, 51)
            if rng.random() < 0.7:
                key = h + "/"
                if squidguard:
                    sg[cat]["domains"].append(h)
            else:
                p = f"d{rng.randrange(1, 50)}"
                key = f"{h}/{p}/"
                if squidguard:
                    sg[cat]["urls"].append(f"{h}/{p}")
            t.write(line % (key, score, cat))
            n += 1
    os.rename(os.path.join(out, "table.jsonl.tmp"), os.path.join(out, "table.jsonl"))
    if squidguard:
        for c, lists in sg.items():
            d = os.path.join(out, "sg", c)
            os.makedirs(d, exist_ok=True)
            for kind, items in lists.items():
                with open(os.path.join(d, kind), "w") as f:
                    f.write("\n".join(items) + ("\n" if items else ""))
    print(f"table: {n} entries ({hosts} traffic hosts)")


def bodies(out):
    www = os.path.join(out, "www")
    os.makedirs(os.path.join(www, "sizes"), exist_ok=True)
    with open(os.path.join(www, "1k.bin"), "wb") as f:
        f.write(os.urandom(1024))
    # Log-normal, median 16 KiB, sigma 1.5, capped at 2 MiB: 1024 files at the quantiles
    # (i - 0.5) / 1024; a uniform pick among them samples the distribution.
    nq, med, sigma, cap = 1024, 16384, 1.5, 2 * 1024 * 1024
    nd = statistics.NormalDist()
    blob = os.urandom(cap)
    sizes = []
    for i in range(1, nq + 1):
        s = min(cap, max(1, int(round(med * math.exp(sigma * nd.inv_cdf((i - 0.5) / nq))))))
        sizes.append(s)
        with open(os.path.join(www, "sizes", f"b{i}"), "wb") as f:
            f.write(blob[:s])
    with open(os.path.join(out, "sizes.txt"), "w") as f:
        f.write(f"# lognormal median {med} sigma {sigma} cap {cap}: {nq} quantile files, "
                f"mean {sum(sizes) / nq:.0f} bytes\n")
    print(f"bodies: 1 KiB and {nq} log-normal files, mean {sum(sizes) / nq:.0f} B")


INTERCEPTION = f"""interception:
  # The harness's split: HTTPS to the traffic hosts with an even N is decrypted, the rest
  # tunnelled (host entries are matched before categories and the default).
  default: tunnel
  intercept_hosts: ["h*0.{DOMAIN}", "h*2.{DOMAIN}", "h*4.{DOMAIN}", "h*6.{DOMAIN}", "h*8.{DOMAIN}"]
  non_tls: block
"""


def policy(out, base, entries, intercept):
    text = open(base).read()
    # Drop the top-level sections the harness writes itself.
    for key in (["interception"] if intercept else []) + (["lists"] if entries else []):
        text = re.sub(r"(?ms)^%s:.*?(?=^\S|\Z)" % key, "", text)
    parts = [text.rstrip() + "\n"]
    if intercept:
        parts.append("\n" + INTERCEPTION)
    if entries:
        parts.append("\nlists:\n  blocked:\n")
        parts.extend(f"    - y{i}.blocked.test\n" for i in range(1, entries + 1))
    with open(out, "w") as f:
        f.write("".join(parts))


def main():
    mode = sys.argv[1]
    if mode == "table":
        table(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), "--squidguard" in sys.argv)
    elif mode == "bodies":
        bodies(sys.argv[2])
    elif mode == "policy":
        policy(sys.argv[2], sys.argv[3], int(sys.argv[4]),
               (sys.argv[5] if len(sys.argv) > 5 else "1") == "1")
    else:
        sys.exit("usage: gen-data.py table|bodies|policy ...")


if __name__ == "__main__":
    main()
