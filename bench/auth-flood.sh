#!/usr/bin/env bash
# A wrong-password flood against proxy authentication, old and new code in one run: builds
# this tree's webrep and the one of $OLD_REV (bench profile: no LTO, same optimisation level),
# then runs benches/auth_flood.rs against each: CONNS connections sending wrong passwords for
# SECONDS while a logged-in user sends a request every 10 ms. Prints, per binary, the proxy's
# RSS (before, peak, 15 s after) and threads, and the user's p50/p99. Loopback only.
#
#   bench/auth-flood.sh                       # 128 connections, each from its own address
#   CONNS=64 ADDRS=one bench/auth-flood.sh    # all from one address (the failure budget's case)
#   OLD_REV= bench/auth-flood.sh              # this tree only
#
# Knobs: OLD_REV (7e9a6e8; empty: skip), CONNS (128), ADDRS (spread | one), SECONDS (15),
# PASSWORDS (random | same), RSS_LIMIT_MB (8192: a proxy beyond it is killed and reported so,
# so that a binary without bounds cannot take the machine). Builds share ./target; the old
# tree is unpacked under a temporary directory and removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD_REV=${OLD_REV-7e9a6e8}
work=$(mktemp -d /tmp/auth-flood.XXXXXX)
trap 'rm -rf "$work"' EXIT

cargo build --quiet --profile bench --bin webrep
cp target/release/webrep "$work/webrep-new"   # the bench profile builds into release/
bins=("$work/webrep-new")
if [[ -n $OLD_REV ]]; then
  mkdir "$work/old"
  git archive "$OLD_REV" | tar -x -C "$work/old"
  cargo build --quiet --profile bench --bin webrep --manifest-path "$work/old/Cargo.toml" \
    --target-dir "$PWD/target"
  cp target/release/webrep "$work/webrep-old"
  bins=("$work/webrep-old" "${bins[@]}")
  # The shared target's uplifted binary is the old one now: put this tree's back.
  cargo build --quiet --profile bench --bin webrep
fi
cargo bench --quiet --bench auth_flood --no-run
for bin in "${bins[@]}"; do
  WEBREP_BIN=$bin cargo bench --quiet --bench auth_flood
done
