#!/usr/bin/env bash
# Installs kube-join-agent's files into DESTDIR: the packaging-neutral install tree that
# the .deb and the .rpm also ship (packaging/README.md lists it; the package tests check
# that all three agree). For distributions without those packages, or image builders:
#
#   packaging/install.sh [--bin FILE] [--man FILE] [--unitdir DIR] DESTDIR
#
# --bin     the agent binary     (default: <target>/release/kube-join-agent)
# --man     the gzipped man page (default: <target>/release/man/kube-join-agent.8.gz)
# --unitdir where the unit goes  (default: /usr/lib/systemd/system; Debian's package
#           uses /lib/systemd/system); the generator goes to the sibling
#           system-generators directory
# Installs nothing outside DESTDIR and enables nothing. With DESTDIR=/ run
# `systemd-tmpfiles --create kube-join-agent.conf && systemctl daemon-reload` afterwards.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
target=${CARGO_TARGET_DIR:-$top/target}
bin=$target/release/kube-join-agent
man=$target/release/man/kube-join-agent.8.gz
unitdir=/usr/lib/systemd/system
while [ $# -gt 1 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --man) man=$2; shift 2 ;;
    --unitdir) unitdir=$2; shift 2 ;;
    *) break ;;
  esac
done
[ $# -eq 1 ] || { sed -n '6,15p' "$0" >&2; exit 2; }
dest=${1%/}

for f in "$bin" "$man"; do
  [ -f "$f" ] || { echo "install.sh: $f is missing (run packaging/build.sh)" >&2; exit 1; }
done

install -D -m 0755 "$bin" "$dest/usr/bin/kube-join-agent"
install -D -m 0644 "$top/systemd/kube-join-agent.service" "$dest$unitdir/kube-join-agent.service"
install -D -m 0755 "$top/systemd/kube-join-agent-generator" "$dest$(dirname "$unitdir")/system-generators/kube-join-agent-generator"
install -D -m 0644 "$here/tmpfiles.d-kube-join-agent.conf" "$dest/usr/lib/tmpfiles.d/kube-join-agent.conf"
install -D -m 0644 "$top/config/config.toml" "$dest/usr/lib/kube-join-agent/config.d/10-defaults.toml"
install -d -m 0755 "$dest/etc/kube-join-agent/config.d"
install -D -m 0644 "$man" "$dest/usr/share/man/man8/kube-join-agent.8.gz"
install -D -m 0644 "$top/README.md" "$dest/usr/share/doc/kube-join-agent/README.md"
install -D -m 0644 "$here/LICENSE" "$dest/usr/share/doc/kube-join-agent/LICENSE"
