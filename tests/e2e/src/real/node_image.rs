//! The real tier's node image: the cached node root (tests/node/build-root.sh, which
//! carries the Debian packages kubeadm 1.20's preflight wants and the CNI plugins) plus,
//! in the node's own overlay, the built kubeadm and kubelet laid out as the upstream .deb
//! packages do. The files come from `tests/real/node/`:
//!
//! | file | in the node |
//! | --- | --- |
//! | `kubelet.service` | `/lib/systemd/system/kubelet.service`, enabled (upstream's packaged unit) |
//! | `10-kubeadm.conf` | `/etc/systemd/system/kubelet.service.d/10-kubeadm.conf` (kubeadm's drop-in) |
//! | `default-kubelet` | `/etc/default/kubelet` (`KUBELET_EXTRA_ARGS`, see the README) |
//! | `10-bridge.conflist` | `/etc/cni/net.d/10-bridge.conflist` (NetworkReady, so the Node turns Ready) |
//!
//! and `/etc/kubernetes/manifests/`, containerd enabled. Boot it with a [`NodeSpec`] from
//! [`node_spec`]: its `real_kubelet` option gives the node what nspawn must add for a real
//! kubelet ([`nspawn_args`]).

use crate::node::{Node, NodeSpec, resolve_in_root};
use anyhow::{Context, Result};
use std::ffi::OsString;
use std::fs;
use std::path::Path;

const WANTS: &str = "/etc/systemd/system/multi-user.target.wants";

/// Kernel tunables kubelet 1.20's container manager insists on: it writes them unless
/// they already have these values, and fails to start when it cannot. They are global
/// (not per namespace), /proc/sys is read-only in nspawn, and the host's must not change:
/// the node sees read-only files with these values over them instead.
pub const KUBELET_SYSCTLS: [(&str, &str); 3] = [
    ("vm/overcommit_memory", "1"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
];

/// Where the node keeps the files bound over /proc/sys (inside its own tree: nspawn makes
/// mounts under /proc in the container, after it has left the host's file system).
const SYSCTL_DIR: &str = "/etc/kja-real-kubelet/sysctl";

/// The nspawn arguments of a node with `NodeSpec::real_kubelet`: /dev/kmsg bound
/// read-only (kubelet's OOM watcher reads it) with CAP_SYSLOG, and [`KUBELET_SYSCTLS`]
/// bound read-only over /proc/sys (files written by [`prepare_root`]).
pub fn nspawn_args() -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--bind-ro=/dev/kmsg".into(),
        "--capability=CAP_SYSLOG".into(),
    ];
    for (key, _) in KUBELET_SYSCTLS {
        args.push(
            format!(
                "--bind-ro={SYSCTL_DIR}/{}:/proc/sys/{key}",
                key.replace('/', ".")
            )
            .into(),
        );
    }
    args
}

/// Writes the files [`nspawn_args`] binds into the node's mounted root, before every boot.
pub fn prepare_root(merged: &Path) -> Result<()> {
    for (key, value) in KUBELET_SYSCTLS {
        let file = resolve_in_root(
            merged,
            Path::new(&format!("{SYSCTL_DIR}/{}", key.replace('/', "."))),
            true,
        )?;
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&file, format!("{value}\n"))
            .with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(())
}

/// A [`NodeSpec`] for a node that runs the real kubelet.
pub fn node_spec(name: &str) -> NodeSpec {
    let mut spec = NodeSpec::new(name);
    spec.real_kubelet = true;
    spec
}

/// Installs the real kubeadm and kubelet and their files into `node` (before boot).
pub fn install(node: &Node) -> Result<()> {
    for bin in ["kubeadm", "kubelet"] {
        node.copy_in(&super::bin(bin)?, &format!("/usr/bin/{bin}"), 0o755)?;
    }
    let files = super::real_dir().join("node");
    for (file, dest, mode) in [
        (
            "kubelet.service",
            "/lib/systemd/system/kubelet.service",
            0o644,
        ),
        (
            "10-kubeadm.conf",
            "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
            0o644,
        ),
        ("default-kubelet", "/etc/default/kubelet", 0o644),
        (
            "10-bridge.conflist",
            "/etc/cni/net.d/10-bridge.conflist",
            0o644,
        ),
    ] {
        let src = files.join(file);
        crate::paths::require_file(&src, "tests/real/node/ is part of the checkout")?;
        node.copy_in(&src, dest, mode)?;
    }
    node.symlink(
        "/lib/systemd/system/kubelet.service",
        &format!("{WANTS}/kubelet.service"),
    )?;
    node.symlink(
        "/lib/systemd/system/containerd.service",
        &format!("{WANTS}/containerd.service"),
    )?;
    let manifests = node.resolve("/etc/kubernetes/manifests")?;
    fs::create_dir_all(&manifests).with_context(|| format!("creating {}", manifests.display()))?;
    Ok(())
}
