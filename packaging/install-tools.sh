#!/usr/bin/env bash
# Installs (once) the tools the build and CI use, at pinned versions with `cargo install
# --locked`, into a cache outside the checkout keyed by tool and version, and prints the
# directory holding their binaries. A second run takes milliseconds; a version bump here
# installs afresh.
#   cargo-deb           about 1 min on 2 cores   (packages)
#   cargo-generate-rpm  about 5 min on 2 cores   (packages)
#   cargo-deny          about 5 min on 2 cores   (licenses and duplicate crates, in CI)
set -euo pipefail

cache=${KJA_TOOLS_CACHE:-/var/cache/kube-join-agent/tools}
tools=("cargo-deb 3.8.0" "cargo-generate-rpm 0.21.1" "cargo-deny 0.20.2")

mkdir -p "$cache/bin"
for entry in "${tools[@]}"; do
  read -r tool version <<<"$entry"
  dest=$cache/$tool-$version
  if [ ! -x "$dest/bin/$tool" ]; then
    echo "install-tools: cargo install --locked $tool@$version (cached in $dest)" >&2
    start=$(date +%s)
    rm -rf "$dest.tmp"
    # A target dir of its own: never waits on (or pollutes) the workspace's build lock.
    cargo install --locked --quiet --version "$version" --root "$dest.tmp" \
      --target-dir "$cache/build-$tool" "$tool" >&2
    rm -rf "$cache/build-$tool"
    mv "$dest.tmp" "$dest"
    echo "install-tools: $tool@$version installed in $(( $(date +%s) - start ))s" >&2
  fi
  ln -sfn "../$tool-$version/bin/$tool" "$cache/bin/$tool"
done
echo "$cache/bin"
