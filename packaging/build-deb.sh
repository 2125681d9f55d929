#!/bin/sh
# Builds the Debian package: the `dist` binary (fat LTO), its manual pages and shell
# completions (`webrep generate`, into target/dist/packaging/), then `cargo deb --no-build`
# with the [package.metadata.deb] table of Cargo.toml. Prints the .deb's path as its last
# line.
#
# usage: packaging/build-deb.sh
#
# Needs cargo-deb (`cargo install --locked cargo-deb`), and dpkg-dev for the shared-library
# dependencies ($auto). Exit status 0 with the package built, 2 when cargo-deb is missing,
# else that of the step that failed.
set -eu
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
  echo "cargo-deb is not installed: cargo install --locked cargo-deb" >&2
  exit 2
fi

out=${CARGO_TARGET_DIR:-target}/dist
cargo build --profile dist --locked --bin webrep >&2

gen=$out/packaging
rm -rf "$gen"
mkdir -p "$gen/man" "$gen/completions"
"$out/webrep" generate man "$gen/man" >/dev/null
gzip -9n "$gen"/man/*.1
"$out/webrep" generate completions bash >"$gen/completions/webrep"
"$out/webrep" generate completions zsh >"$gen/completions/_webrep"
"$out/webrep" generate completions fish >"$gen/completions/webrep.fish"

# cargo-deb prints the package's path on its last line of standard output.
cargo deb --profile dist --no-build | tail -n 1
