//! kubeadm's init-system helpers (kubeadm/util/initsystem): plain `systemctl` commands
//! with output discarded, failures reported as Go's `exit status N`.

use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};

use super::events;
use crate::fsroot::Root;

/// `systemctl`, found on PATH like Go's `exec.LookPath`.
#[derive(Debug, Clone)]
pub struct Systemctl {
    path: PathBuf,
    /// Where the event log goes.
    root: Root,
}

/// `exit=<code>` for the event log.
fn exit_text(status: &std::io::Result<ExitStatus>) -> String {
    match status.as_ref().map(|s| s.code()) {
        Ok(Some(c)) => c.to_string(),
        Ok(None) => "signal".to_owned(),
        Err(_) => "error".to_owned(),
    }
}

impl Systemctl {
    /// `None` when there is no systemctl ("No supported init system detected"). Calls
    /// are recorded in the event log under `root`.
    pub fn detect(root: &Root) -> Option<Self> {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join("systemctl"))
            .find(|p| {
                std::fs::metadata(p)
                    .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false)
            })
            .map(|path| Self {
                path,
                root: root.clone(),
            })
    }

    fn record(&self, args: &[&str], status: &std::io::Result<ExitStatus>) {
        events::record(
            &self.root,
            &format!("systemctl {} exit={}", args.join(" "), exit_text(status)),
        );
    }

    /// A systemctl at `path` recording events under `root` (tests).
    pub fn at(path: impl Into<PathBuf>, root: Root) -> Self {
        Self {
            path: path.into(),
            root,
        }
    }

    /// Runs `systemctl args...`; Err carries Go's wording (`exit status 1`).
    fn run(&self, args: &[&str]) -> Result<(), String> {
        let status = Command::new(&self.path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        self.record(args, &status);
        let status = status.map_err(|e| format!("fork/exec {}: {e}", self.path.display()))?;
        match status.code() {
            Some(0) => Ok(()),
            Some(c) => Err(format!("exit status {c}")),
            None => Err("signal: killed".to_owned()),
        }
    }

    /// `ServiceExists`: `systemctl status` does not say the unit is not found.
    pub fn service_exists(&self, svc: &str) -> bool {
        let out = Command::new(&self.path)
            .args(["status", svc])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        self.record(
            &["status", svc],
            &out.as_ref().map(|o| o.status).map_err(|e| e.kind().into()),
        );
        match out {
            Ok(o) => {
                let text = String::from_utf8_lossy(&o.stdout);
                !text.contains("Loaded: not-found") && !text.contains("could not be found")
            }
            Err(_) => true,
        }
    }

    /// `ServiceIsActive`: `systemctl is-active` prints `active` or `activating` (the
    /// exit code is ignored: it is non-zero while activating).
    pub fn is_active(&self, svc: &str) -> bool {
        let out = Command::new(&self.path)
            .args(["is-active", svc])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        out.is_ok_and(|o| {
            matches!(
                String::from_utf8_lossy(&o.stdout).trim(),
                "active" | "activating"
            )
        })
    }

    /// `ServiceIsEnabled`: `systemctl is-enabled` succeeds.
    pub fn is_enabled(&self, svc: &str) -> bool {
        self.run(&["is-enabled", svc]).is_ok()
    }

    /// `ServiceRestart`: daemon-reload, then restart.
    pub fn restart(&self, svc: &str) -> Result<(), String> {
        self.run(&["daemon-reload"])
            .map_err(|e| format!("failed to reload systemd: {e}"))?;
        self.run(&["restart", svc])
    }

    /// `ServiceStop`.
    pub fn stop(&self, svc: &str) -> Result<(), String> {
        self.run(&["stop", svc])
    }
}
