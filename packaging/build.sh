#!/usr/bin/env bash
# Builds kube-join-agent's packages into target/packages/:
#   kube-join-agent_<version>-1_amd64.deb   (cargo-deb)
#   kube-join-agent-<version>-1.x86_64.rpm  (cargo-generate-rpm)
# One release build serves both. The packaging tools are installed on first use with
# `cargo install --locked` at pinned versions and cached (packaging/install-tools.sh).
# Timings on 2 cores: tools 98 s + 340 s once, release build about 5.5 min from clean,
# packaging itself seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
say() { printf 'build.sh: %s (+%ss)\n' "$1" "$(( $(date +%s) - started ))" >&2; }

target=$(cargo metadata --format-version 1 --no-deps --locked |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target" ] || { echo "build.sh: cannot find cargo's target directory" >&2; exit 1; }
out=$target/packages

say "packaging tools"
tools=$(packaging/install-tools.sh)
export PATH="$tools:$PATH"

# The Debian changelog's version must be the crate's.
version=$(cargo pkgid --locked -p kube-join-agent | sed 's/.*[#@]//')
changelog=$(sed -n '1s/^kube-join-agent (\([^)]*\)-[^-)]*).*/\1/p' packaging/debian/changelog)
if [ "$version" != "$changelog" ]; then
  echo "build.sh: packaging/debian/changelog is at $changelog but the crate is $version: add an entry" >&2
  exit 1
fi
# Reproducible dates (man page, archives): the last commit's, unless given.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

say "release build of kube-join-agent $version (and its man page generator)"
cargo build --release --locked -p kube-join-agent -p kja-manpage
bin=$target/release/kube-join-agent
if readelf -S "$bin" | grep -q '\.symtab'; then
  echo "build.sh: $bin is not stripped (profile.release.strip)" >&2
  exit 1
fi

say "man page"
rm -rf "$target/release/man"
"$target/release/kja-manpage" "$target/release/man" >/dev/null
gzip -9n "$target/release/man/kube-join-agent.8"
# groff must render it without a warning (lintian checks the same).
if warnings=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l "$target/release/man/kube-join-agent.8.gz" 2>&1 >/dev/null) && [ -n "$warnings" ]; then
  echo "build.sh: the man page has groff warnings:" >&2
  echo "$warnings" >&2
  exit 1
fi

rm -rf "$out"
mkdir -p "$out"
say "deb"
cargo deb --quiet --locked --no-build --no-strip -p kube-join-agent --output "$out/" >/dev/null
say "rpm"
cargo generate-rpm -p daemon --target-dir "$target" --output "$out/"

say "done"
for p in "$out"/*.deb "$out"/*.rpm; do
  printf '%s\t%s bytes\n' "$p" "$(stat -c %s "$p")"
done
