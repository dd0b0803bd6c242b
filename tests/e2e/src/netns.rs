//! Network namespaces made by the harness (`ip netns add kja-<node>`): the node joins one
//! with `--network-namespace-path`, and host processes (the fake API server) can be started
//! inside the same one, so the node's 127.0.0.1:6443 is theirs.

use crate::cmd;
use anyhow::{Context, Result};
use nix::sched::{CloneFlags, setns};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// A named network namespace with only `lo` (up) and `net.ipv4.ip_forward = 1`.
/// Deleted (`ip netns del`) when the last handle drops.
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    /// Creates the namespace, replacing a stale one of the same name left by an earlier run
    /// (processes still inside that one keep it alive, but nobody can enter it by name).
    pub fn create(name: &str) -> Result<Arc<Netns>> {
        let path = Path::new("/run/netns").join(name);
        if path.exists() {
            cmd::host("ip", &["netns", "del", name])
                .with_context(|| format!("removing stale network namespace {name}"))?;
        }
        cmd::host("ip", &["netns", "add", name])?;
        let ns = Arc::new(Netns {
            name: name.to_string(),
            path,
        });
        cmd::host("ip", &["-n", name, "link", "set", "lo", "up"])?;
        // Inside nspawn /proc/sys is read-only, so the node's sysctl.d cannot set this;
        // a real node image would have it, and net.* sysctls belong to the namespace.
        cmd::host(
            "ip",
            &[
                "netns",
                "exec",
                name,
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
            ],
        )?;
        Ok(ns)
    }

    /// `kja-<node>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, for `--network-namespace-path`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A host command that will run inside this namespace (setns before exec).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        let fd =
            File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        let mut cmd = Command::new(program);
        // SAFETY: setns(2) is async-signal-safe; the fd was opened before fork.
        unsafe {
            cmd.pre_exec(move || {
                setns(&fd, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
            });
        }
        Ok(cmd)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = cmd::host("ip", &["netns", "del", &self.name]) {
            eprintln!("kja-e2e: deleting network namespace {}: {e:#}", self.name);
        }
    }
}
