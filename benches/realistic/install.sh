#!/usr/bin/env bash
# benches/realistic/install.sh: the tools of the realistic workload (Debian/Ubuntu, as root).
# run.sh calls it when a tool is missing (or with INSTALL=1). squid-openssl is Squid built
# with OpenSSL, which ssl-bump needs; it replaces the GnuTLS "squid" package (same binary path).
set -eu
pkgs=(nginx-light squid-openssl squidguard dnsmasq-base curl python3 openssl procps iproute2 util-linux time)
if [[ $(id -u) != 0 ]]; then echo "install.sh: run as root (apt-get install ${pkgs[*]})" >&2; exit 1; fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
# The packages' own services are not used (the harness starts its own instances on loopback).
for s in nginx squid dnsmasq; do
  if command -v systemctl >/dev/null && systemctl is-active -q "$s" 2>/dev/null; then systemctl stop "$s" || true; fi
done
/usr/sbin/squid -v | grep -q -- '--with-openssl' || { echo "install.sh: squid lacks OpenSSL (ssl-bump)" >&2; exit 1; }
echo "install.sh: ok"
