//! Evidence from failed tests: the node's journal and console, the agent's state, the fake
//! kubeadm's invocation log, and the fake API server's request log and output, saved to
//! `<target>/e2e-artifacts/<test>/`.

use crate::control_plane::FakeControlPlane;
use crate::install::{AGENT_STATE_PATH, KUBEADM_INVOCATIONS_LOG};
use crate::node::Node;
use crate::paths;
use anyhow::{Context, Result};
use std::fs;
use std::path::PathBuf;

/// Saves artifacts when dropped during a panic (a failing assertion), or always when
/// `KJA_E2E_KEEP_ARTIFACTS` is set. Declare it after the node and control plane so it
/// drops before them.
pub struct Guard<'a> {
    test: String,
    node: &'a Node,
    cp: Option<&'a FakeControlPlane>,
}

impl<'a> Guard<'a> {
    /// Watches `node` (and `cp`) for the test called `test`.
    pub fn new(test: &str, node: &'a Node, cp: Option<&'a FakeControlPlane>) -> Self {
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
            Ok(dir) => {
                if panicking {
                    let journal = fs::read_to_string(dir.join("journal.txt")).unwrap_or_default();
                    let lines: Vec<&str> = journal.lines().collect();
                    eprintln!(
                        "---- last 80 journal lines of node {} (all in {}) ----\n{}\n----",
                        self.node.name(),
                        dir.display(),
                        lines[lines.len().saturating_sub(80)..].join("\n")
                    );
                }
            }
            Err(e) => eprintln!("kja-e2e: saving artifacts of {}: {e:#}", self.test),
        }
    }
}

/// Saves everything worth reading about `node` (and `cp`) now; returns the directory.
pub fn save(test: &str, node: &Node, cp: Option<&FakeControlPlane>) -> Result<PathBuf> {
    let dir = paths::artifacts_dir().join(test);
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let put = |name: &str, contents: Result<Vec<u8>>| {
        let data = contents.unwrap_or_else(|e| format!("(unavailable: {e:#})\n").into_bytes());
        let _ = fs::write(dir.join(name), data);
    };
    if node.is_booted() {
        let _ = node.exec(&["journalctl", "--sync"]);
    }
    // All boots: the reboot scenario needs both.
    put(
        "journal.txt",
        node.journalctl(&["-o", "short-precise"])
            .map(String::into_bytes),
    );
    put(
        "journal-agent.json",
        node.journalctl(&["-o", "json", "-u", "kube-join-agent.service"])
            .map(String::into_bytes),
    );
    put(
        "console.log",
        fs::read(node.console_log()).map_err(Into::into),
    );
    put("state.json", node.read_file(AGENT_STATE_PATH));
    put(
        "kubeadm-invocations.log",
        node.read_file(KUBEADM_INVOCATIONS_LOG),
    );
    if node.is_booted() {
        let status = node
            .systemctl(&[
                "status",
                "--no-pager",
                "--full",
                "kube-join-agent.service",
                "kubelet.service",
                "containerd.service",
            ])
            .map(|o| o.stdout.into_bytes());
        put("systemctl-status.txt", status);
        put(
            "failed-units.txt",
            node.systemctl(&["list-units", "--failed", "--no-pager"])
                .map(|o| o.stdout.into_bytes()),
        );
    }
    put(
        "boot-timings.txt",
        Ok(format!("{:#?}\n", node.boot_timings()).into_bytes()),
    );
    if let Some(cp) = cp {
        put(
            "apiserver-requests.log",
            fs::read(cp.dir().join("requests.log")).map_err(Into::into),
        );
        put("apiserver-stdio.log", Ok(cp.stdio().into_bytes()));
        put(
            "apiserver-knobs.json",
            Ok(serde_json::to_vec_pretty(&cp.knobs()).unwrap_or_default()),
        );
    }
    Ok(dir)
}
