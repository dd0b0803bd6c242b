#!/usr/bin/env bash
# Builds (once) the Debian 12 root that every test node boots from, and prints its path.
# The root is cached outside the checkout and keyed by this script's content, so a change
# here rebuilds it and an unchanged script reuses it in seconds.
set -euo pipefail

cache=${KJA_NODE_CACHE:-/var/cache/kube-join-agent}
# cloud-init: the packaging tests boot it with a NoCloud seed (debootstrap does not
# resolve virtual packages: python3-cffi-backend provides python3-cryptography's
# python3-cffi-backend-api-*). man-db: `systemd-analyze verify` runs man(1) for the
# unit's Documentation=man:kube-join-agent(8).
packages=systemd,systemd-sysv,dbus,containerd,runc,iproute2,procps,ca-certificates,cloud-init,python3-cffi-backend,man-db
# What real kubeadm 1.20's preflight looks for on a node, and the CNI plugins (in
# /usr/lib/cni, where Debian's containerd looks) behind the real tier's bridge config
# (tests/real/README.md).
packages=$packages,conntrack,iptables,ebtables,ethtool,socat,containernetworking-plugins
key=$(sha256sum "$0" | cut -c1-12)
root=$cache/bookworm-$key

if [ -f "$root/.complete" ]; then
  echo "$root"
  exit 0
fi

# The mirror apt already uses: the first deb URI in the sources (deb822 or one-line style).
mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1 || true)
if [ -z "$mirror" ]; then
  mirror=$(awk '$1 == "deb" && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
fi
[ -n "$mirror" ] || { echo "build-root: no Debian mirror found in apt's sources" >&2; exit 1; }

mkdir -p "$cache"
rm -rf "$root.tmp"
debootstrap --variant=minbase --include="$packages" bookworm "$root.tmp" "$mirror" >"$cache/debootstrap-$key.log" 2>&1 || {
  echo "build-root: debootstrap failed, last lines of $cache/debootstrap-$key.log:" >&2
  tail -n 20 "$cache/debootstrap-$key.log" >&2
  exit 1
}

# Shape the root like a node image before any join: kubelet packaged the way the real
# kubernetes packages do it (unit in /lib, kubeadm's drop-in in /etc/.../kubelet.service.d),
# containerd enabled, a machine-id per boot, no getty noise on the console.
r=$root.tmp
echo "kja-node" >"$r/etc/hostname"
: >"$r/etc/machine-id"
rm -f "$r/etc/systemd/system/getty.target.wants/"* || true
mkdir -p "$r/etc/sysctl.d"
cat >"$r/etc/sysctl.d/99-kubernetes.conf" <<'SYSCTL'
net.ipv4.ip_forward = 1
SYSCTL
# containerd's Debian default disables nothing we need; CRI is on by default in 1.6.
chroot "$r" systemctl enable containerd.service >/dev/null 2>&1 || true
apt_clean() { rm -rf "$r/var/cache/apt/archives/"*.deb "$r/var/lib/apt/lists/"* || true; }
apt_clean
touch "$r/.complete"
mv "$r" "$root"
echo "$root"
