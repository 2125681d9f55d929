#!/bin/sh
# Installs the Debian package on this machine and checks it as an admin would use it, then
# purges it (also when a check fails), so that no /etc/webrep is left behind.
#
# usage: packaging/check-deb.sh [PACKAGE.deb]     (as root, on Debian)
#
# Without an argument the package is built first (packaging/build-deb.sh). Checks: the
# files `dpkg -L` lists and which are conffiles; the user, directories and generated tokens
# with their owners and modes; `webrep --version`, `webrep config check` and `webrep policy
# check` on the installed files, run as the service user; the manual page and the bash
# completion; `systemd-analyze verify` of the installed units and that they are enabled;
# then, in a network namespace of its own (no port of this machine is touched), the server
# and the proxy started from the installed configuration as the units would start them:
# a sample URL gets the block page, the access log has its line, and logrotate rotates it;
# last, `apt-get purge` removes /etc/webrep, /var/lib/webrep and /var/log/webrep.
#
# Needs apt-get, curl, logrotate, systemd-analyze, unshare and ip (iproute2); .ci/run
# installs them. Exit status 0 when every check passed, 1 when one failed (it says which),
# 2 when something it needs is missing or webrep is already installed.
set -eu
cd "$(dirname "$0")/.."

fail() {
  echo "check-deb: FAILED: $*" >&2
  exit 1
}

for tool in apt-get curl logrotate systemd-analyze unshare ip; do
  command -v "$tool" >/dev/null 2>&1 || { echo "check-deb: $tool is missing" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "check-deb: run as root" >&2; exit 2; }
# dpkg's state of the package: installed, config-files, half-configured, ...; empty when unknown.
state() { dpkg-query -W -f='${db:Status-Status}' webrep 2>/dev/null || true; }
if [ "$(state)" = installed ]; then
  echo "check-deb: webrep is installed already; purge it first (apt-get purge webrep)" >&2
  exit 2
fi

deb=${1:-}
if [ -z "$deb" ]; then
  deb=$(packaging/build-deb.sh | tail -n 1)
fi
case "$deb" in
  /*) ;;
  *) deb="$(pwd)/$deb" ;;
esac
[ -f "$deb" ] || fail "no package at $deb"

tmp=$(mktemp -d)
cleanup() {
  status=$?
  if [ -n "$(state)" ] && [ "$(state)" != not-installed ]; then
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -q webrep >"$tmp/purge.log" 2>&1 ||
      { cat "$tmp/purge.log" >&2; status=1; }
  fi
  rm -rf "$tmp"
  exit $status
}
trap cleanup EXIT
trap 'exit 1' INT TERM

echo "check-deb: installing $deb"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$deb"

# The files, and which of them dpkg keeps as conffiles.
dpkg -L webrep >"$tmp/files"
for f in /usr/bin/webrep \
  /usr/lib/systemd/system/webrep-proxy.service /usr/lib/systemd/system/webrep-server.service \
  /usr/lib/sysusers.d/webrep.conf /etc/webrep/webrep.yaml /etc/webrep/policy.yaml \
  /etc/logrotate.d/webrep /usr/share/man/man1/webrep.1.gz /usr/share/man/man1/webrep-proxy.1.gz \
  /usr/share/bash-completion/completions/webrep /usr/share/zsh/vendor-completions/_webrep \
  /usr/share/fish/vendor_completions.d/webrep.fish /usr/share/doc/webrep/copyright \
  /usr/share/doc/webrep/README.md /usr/share/doc/webrep/webrep.example.yaml; do
  grep -qx "$f" "$tmp/files" || fail "dpkg -L webrep does not list $f"
  [ -e "$f" ] || fail "$f is listed but missing"
done
dpkg-query -W -f='${Conffiles}\n' webrep >"$tmp/conffiles"
for f in /etc/webrep/webrep.yaml /etc/webrep/policy.yaml /etc/logrotate.d/webrep; do
  grep -q " $f " "$tmp/conffiles" || fail "$f is not a conffile"
done
grep -q "Apache License" /usr/share/doc/webrep/copyright || fail "copyright lacks the license"

# What postinst made.
getent passwd webrep >/dev/null || fail "no user webrep"
mode_of() { stat -c '%U:%G %a' "$1"; }
for d in /var/lib/webrep /var/log/webrep; do
  [ "$(mode_of "$d")" = "webrep:webrep 750" ] || fail "$d is $(mode_of "$d")"
done
for f in /etc/webrep/tokens /etc/webrep/proxy-token /etc/webrep/admin-token; do
  [ "$(mode_of "$f")" = "root:webrep 640" ] || fail "$f is $(mode_of "$f")"
done
client=$(awk '$1 == "client" { print $2 }' /etc/webrep/tokens)
[ "${#client}" -ge 16 ] || fail "no client token in /etc/webrep/tokens"
[ "$(cat /etc/webrep/proxy-token)" = "$client" ] || fail "proxy-token is not the client token"
for unit in webrep-server.service webrep-proxy.service; do
  [ -L "/etc/systemd/system/multi-user.target.wants/$unit" ] || fail "$unit is not enabled"
done

# The binary on the installed files, as the service user.
as_webrep() { setpriv --reuid=webrep --regid=webrep --init-groups "$@"; }
version=$(webrep --version)
[ "$version" = "webrep $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)" ] ||
  fail "webrep --version says '$version'"
as_webrep webrep config check /etc/webrep/webrep.yaml || fail "webrep config check"
as_webrep webrep policy check /etc/webrep/policy.yaml >/dev/null || fail "webrep policy check"
zcat /usr/share/man/man1/webrep.1.gz | grep -q '^\.TH webrep 1' || fail "webrep.1 is no manual page"
bash -c '. /usr/share/bash-completion/completions/webrep && complete -p webrep' >/dev/null ||
  fail "the bash completion does not load"
systemd-analyze verify --man=no /usr/lib/systemd/system/webrep-server.service \
  /usr/lib/systemd/system/webrep-proxy.service || fail "systemd-analyze verify"

# The services from the installed configuration, as their units start them (user webrep,
# through setpriv, which execs the command so that killing it stops webrep; working directory
# /var/lib/webrep), in a network namespace of their own.
cat >"$tmp/run.sh" <<'RUN'
set -eu
tmp=$1
ip link set lo up
cd /var/lib/webrep
setpriv --reuid=webrep --regid=webrep --init-groups webrep server --config /etc/webrep/webrep.yaml 2>"$tmp/server.log" &
server=$!
setpriv --reuid=webrep --regid=webrep --init-groups webrep proxy --config /etc/webrep/webrep.yaml 2>"$tmp/proxy.log" &
proxy=$!
trap 'kill $proxy $server 2>/dev/null; wait' EXIT
up=no
for _ in $(seq 1 100); do
  if curl -sf -o /dev/null http://127.0.0.1:3128/healthz; then up=yes; break; fi
  sleep 0.2
done
if [ $up = no ]; then
  cat "$tmp/server.log" "$tmp/proxy.log" >&2
  echo "the proxy did not come up" >&2
  exit 1
fi
# The sample entry malware.example is blocked once the server has answered.
code=000
for _ in $(seq 1 50); do
  code=$(curl -s -o "$tmp/page" -w '%{http_code}' -x http://127.0.0.1:3128 http://malware.example/)
  [ "$code" = 403 ] && break
  sleep 0.2
done
if [ "$code" != 403 ] || ! grep -qi "blocked" "$tmp/page"; then
  cat "$tmp/server.log" "$tmp/proxy.log" "$tmp/page" >&2
  echo "http://malware.example/ got $code, not the block page" >&2
  exit 1
fi
for _ in $(seq 1 30); do
  grep -q malware.example /var/log/webrep/access.log 2>/dev/null && break
  sleep 0.2
done
grep -q malware.example /var/log/webrep/access.log || { echo "no access log line" >&2; exit 1; }
logrotate -f -s "$tmp/logrotate.state" /etc/logrotate.d/webrep
[ -s /var/log/webrep/access.log.1 ] || { echo "logrotate did not rotate the access log" >&2; exit 1; }
[ "$(stat -c '%U:%G %a' /var/log/webrep/access.log)" = "webrep:webrep 640" ] ||
  { echo "logrotate made no new access.log for webrep" >&2; exit 1; }
RUN
unshare --net sh "$tmp/run.sh" "$tmp" || fail "the installed services do not filter"

echo "check-deb: removing"
DEBIAN_FRONTEND=noninteractive apt-get purge -y -q webrep >"$tmp/purge.log" 2>&1 ||
  { cat "$tmp/purge.log" >&2; fail "apt-get purge"; }
for p in /etc/webrep /var/lib/webrep /var/log/webrep /usr/bin/webrep \
  /etc/systemd/system/multi-user.target.wants/webrep-proxy.service; do
  [ ! -e "$p" ] || fail "$p is still there after purge"
done
echo "check-deb: ok"
