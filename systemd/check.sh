#!/bin/sh
# Checks the systemd units: `systemd-analyze verify` must pass and
# `systemd-analyze security --offline=true` must rate each unit at most 2.5 ("OK" or better).
# Prints one line per unit: its name, exposure score and rating.
#
# usage: systemd/check.sh [WEBREP_BINARY]
#
# verify insists that ExecStart's binary exists, so the units are checked as copies whose
# /usr/bin/webrep is replaced by WEBREP_BINARY (default /usr/bin/webrep; the
# tests pass the freshly built one). Exit status 0 when all is well, 1 when a check fails,
# 2 when the tools or the binary are missing.
set -eu

dir=$(cd "$(dirname "$0")" && pwd)
bin=${1:-/usr/bin/webrep}
max=2.5

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "systemd-analyze is not installed (Debian: apt-get install systemd)" >&2
  exit 2
fi
if [ ! -x "$bin" ]; then
  echo "$bin: not an executable; pass the webrep binary as the first argument" >&2
  exit 2
fi
case "$bin" in
  /*) ;;
  *) bin="$(pwd)/$bin" ;;
esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
units="webrep-proxy.service webrep-server.service"
for unit in $units; do
  sed "s|/usr/bin/webrep|$bin|g" "$dir/$unit" >"$tmp/$unit"
done

status=0
cd "$tmp"
# --man=no: the Documentation= page is installed with the units, not on a build machine.
if ! systemd-analyze verify --man=no $units; then
  echo "systemd-analyze verify failed" >&2
  status=1
fi
for unit in $units; do
  if ! out=$(systemd-analyze security --offline=true --no-pager "./$unit" 2>&1); then
    echo "$out" >&2
    echo "$unit: systemd-analyze security failed" >&2
    status=1
    continue
  fi
  # "→ Overall exposure level for webrep-proxy.service: 1.2 OK 🙂"
  line=$(printf '%s\n' "$out" | grep 'Overall exposure level' || true)
  score=$(printf '%s\n' "$line" | sed -n 's/.*: \([0-9.]*\) \([A-Z]*\).*/\1/p')
  rating=$(printf '%s\n' "$line" | sed -n 's/.*: \([0-9.]*\) \([A-Z]*\).*/\2/p')
  if [ -z "$score" ]; then
    echo "$out" >&2
    echo "$unit: no exposure level in the output" >&2
    status=1
    continue
  fi
  echo "$unit exposure $score $rating"
  if ! awk -v s="$score" -v m="$max" 'BEGIN { exit !(s <= m) }'; then
    printf '%s\n' "$out" | grep '✗' >&2 || true
    echo "$unit: exposure $score is above $max" >&2
    status=1
  fi
done
exit $status
