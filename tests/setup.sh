#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian 12 machine (as root), and
# builds the cached test-node root. Idempotent: a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in debootstrap systemd-container iproute2 etcd-server etcd-client rpm lintian; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "setup: cargo is required (rustup toolchain)" >&2; exit 1; }
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

root=$(tests/node/build-root.sh)
echo "setup: test node root at $root"

# Every test node's systemd, journald, D-Bus and containerd run as the host's root and
# draw on root's one inotify budget (fs.inotify.max_user_instances, 128 by default);
# three scenarios' nodes at once come close to it. Raised as kind documents for running
# many nodes on one machine. The agent copes without inotify (a scenario in
# tests/e2e/tests/fixes.rs takes it away); systemd inside a node copes less well.
instances=/proc/sys/fs/inotify/max_user_instances
if [ -w "$instances" ] && [ "$(cat "$instances")" -lt 512 ]; then
  echo "setup: fs.inotify.max_user_instances $(cat "$instances") -> 512"
  echo 512 > "$instances"
fi
