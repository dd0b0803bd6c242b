//! Evidence from failed real-tier tests: everything [`crate::artifacts::save`] keeps of
//! the node, plus the real control plane's logs and configuration, in
//! `<target>/e2e-artifacts/<test>/control-plane/`.

use super::RealControlPlane;
use crate::node::Node;
use anyhow::Result;
use std::fs;
use std::path::PathBuf;

/// Saves artifacts when dropped during a panic, or always with `KJA_E2E_KEEP_ARTIFACTS`.
/// Declare it after the node and the control plane so it drops before them.
pub struct Guard<'a> {
    test: String,
    node: &'a Node,
    cp: &'a RealControlPlane,
}

impl<'a> Guard<'a> {
    /// Watches `node` and `cp` for the test called `test`.
    pub fn new(test: &str, node: &'a Node, cp: &'a RealControlPlane) -> Self {
        Guard {
            test: test.to_string(),
            node,
            cp,
        }
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if !panicking && std::env::var_os("KJA_E2E_KEEP_ARTIFACTS").is_none() {
            return;
        }
        match save(&self.test, self.node, self.cp) {
            Ok(dir) => eprintln!(
                "kja-e2e: artifacts of {} (node and real control plane) in {}",
                self.test,
                dir.display()
            ),
            Err(e) => eprintln!("kja-e2e: saving artifacts of {}: {e:#}", self.test),
        }
    }
}

/// Saves the node's artifacts and the control plane's logs now; returns the directory.
pub fn save(test: &str, node: &Node, cp: &RealControlPlane) -> Result<PathBuf> {
    let dir = crate::artifacts::save(test, node, None)?;
    let out = dir.join("control-plane");
    fs::create_dir_all(&out)?;
    for name in [
        "setup.log",
        "etcd.log",
        "kube-apiserver.log",
        "kube-controller-manager.log",
        "upload-config-kubelet.log",
        "kubeadm.yaml",
    ] {
        let _ = fs::copy(cp.dir().join(name), out.join(name));
    }
    for (name, args) in [
        ("nodes.txt", &["get", "nodes", "-o", "wide"][..]),
        ("csrs.txt", &["get", "csr", "-o", "wide"][..]),
        ("nodes.yaml", &["get", "nodes", "-o", "yaml"][..]),
    ] {
        let text = match cp.kubectl(args) {
            Ok(out) => format!("{}{}", out.stdout, out.stderr),
            Err(e) => format!("(unavailable: {e:#})\n"),
        };
        let _ = fs::write(out.join(name), text);
    }
    Ok(dir)
}
