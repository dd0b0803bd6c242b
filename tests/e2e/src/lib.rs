//! End-to-end harness for kube-join-agent.
//!
//! Boots real systemd test nodes with `systemd-nspawn` over a cached Debian 12 root
//! (`tests/node/build-root.sh`), each on its own overlayfs (cheap, isolated, persistent
//! across reboots of the same [`Node`]) and in its own network namespace, where a fake
//! API server ([`control_plane::FakeControlPlane`]) runs as a host process on
//! 127.0.0.1:6443. See design/test-environment.md for the facts this relies on.
//!
//! Typical flow:
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use kja_e2e::{control_plane::FakeControlPlane, install::{self, Install}, node::{Node, NodeSpec}};
//! let node = Node::create(NodeSpec::new("fresh-node"))?; // overlay + netns, not booted
//! let cp = FakeControlPlane::start(node.netns(), node.dir().join("apiserver"))?;
//! install::install(&node, &Install::agent(&cp.pin()?))?;
//! let _artifacts = kja_e2e::artifacts::Guard::new("fresh_node", &node, Some(&cp));
//! node.start()?;
//! node.wait_running()?;
//! # Ok(()) }
//! ```
//! Everything needs root; [`require_root`] says so clearly.

#![deny(unused_must_use)]
#![warn(missing_docs)]

pub mod artifacts;
pub mod cmd;
pub mod control_plane;
pub mod etcd;
pub mod install;
pub mod netns;
pub mod node;
pub mod package;
pub mod paths;
pub mod real;
pub mod scenario;
pub mod wait;

pub use cmd::Output;
pub use control_plane::FakeControlPlane;
pub use install::Install;
pub use node::{Node, NodeSpec};

/// Fails with a clear message unless running as root (the harness mounts, creates network
/// namespaces and cgroups, and runs systemd-nspawn).
pub fn require_root() -> anyhow::Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        anyhow::bail!(
            "the kja-e2e tests boot systemd-nspawn nodes and must run as root \
             (for example `sudo -E cargo test -p kja-e2e`); they are never skipped"
        )
    }
}

/// A node name (hostname, machine name, Kubernetes Node name) derived from a test name:
/// lowercase, `_` turned into `-`, at most 40 characters. `$KJA_E2E_NAME_PREFIX` goes in
/// front, so two checkouts can run the same scenarios at once without sharing node
/// directories or network namespaces.
pub fn node_name(test_name: &str) -> String {
    let prefix = std::env::var("KJA_E2E_NAME_PREFIX").unwrap_or_default();
    prefixed_node_name(&prefix, test_name)
}

fn prefixed_node_name(prefix: &str, test_name: &str) -> String {
    let mut name: String = format!("{prefix}{test_name}")
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    name.truncate(40);
    name.trim_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn node_names_are_dns_labels() {
        let name = |test| super::prefixed_node_name("", test);
        assert_eq!(name("fresh_node_joins"), "fresh-node-joins");
        assert_eq!(name("Second::Boot_"), "second--boot");
        assert!(name(&"x".repeat(80)).len() <= 40);
        assert_eq!(super::prefixed_node_name("m-", "a_b"), "m-a-b");
    }
}
