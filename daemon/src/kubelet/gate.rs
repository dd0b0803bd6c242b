//! Keeping kubelet from starting until its configuration is valid.
//!
//! Normally a runtime mask (a /dev/null symlink in /run/systemd/system): it makes
//! kubeadm's own `systemctl restart kubelet` fail harmlessly, and vanishes on reboot,
//! so a crash plus reboot can never leave kubelet masked for good (the agent gates
//! again on the next boot, before kubelet's start job runs: the unit is ordered
//! Before=kubelet.service).
//!
//! A unit file in /etc/systemd/system outranks /run, so a runtime mask does nothing
//! there. Masking it persistently would replace the administrator's file with a
//! symlink. For that case the gate is a runtime drop-in with a condition that only the
//! agent satisfies: starts are skipped ("condition failed") until the drop-in goes.

use crate::failure::Failure;
use crate::paths::Paths;
use crate::systemd::Systemd;
use std::path::PathBuf;
use std::time::Duration;

const JOB_LIMIT: Duration = Duration::from_secs(90);
/// kubelet (Restart=always, RestartSec=10) may be mid-restart when the agent looks.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);
const DROP_IN: &str = "50-kube-join-agent-gate.conf";

/// How the gate holds kubelet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateMethod {
    /// `systemctl mask --runtime`.
    RuntimeMask,
    /// A runtime drop-in with an unmet condition (unit file in /etc/systemd/system).
    ConditionDropIn,
}

/// The kubelet gate.
pub struct Gate<'a> {
    systemd: &'a Systemd,
    paths: &'a Paths,
    unit: &'a str,
}

impl<'a> Gate<'a> {
    /// A gate for `unit`.
    pub fn new(systemd: &'a Systemd, paths: &'a Paths, unit: &'a str) -> Self {
        Self {
            systemd,
            paths,
            unit,
        }
    }

    /// Which method works for this unit's installation.
    pub fn method(&self) -> GateMethod {
        method_for(self.paths, self.unit)
    }

    fn drop_in(&self) -> PathBuf {
        self.paths
            .run_systemd_system()
            .join(format!("{}.d", self.unit))
            .join(DROP_IN)
    }

    /// Stops kubelet and keeps it from starting. Cancels a queued start job too.
    pub async fn close(&self) -> Result<GateMethod, Failure> {
        let info = self.systemd.unit_info(self.unit).await.map_err(local)?;
        if info.load_state == "not-found" {
            return Err(Failure::HostNotReady {
                check: "kubelet".into(),
                reason: format!("{} is not installed", self.unit),
                fix: "install the kubelet package (it provides the unit and kubeadm's drop-in)"
                    .into(),
            });
        }
        let method = self.method();
        match method {
            GateMethod::RuntimeMask => self.systemd.mask_runtime(self.unit).await.map_err(local)?,
            GateMethod::ConditionDropIn => {
                tracing::warn!(
                    "{} is defined in {}, where a runtime mask has no effect; gating it with a runtime drop-in ({}) instead. Packages install it in /lib/systemd/system with overrides in {}.d/",
                    self.unit,
                    self.paths.etc_systemd_system().display(),
                    self.drop_in().display(),
                    self.unit
                );
                let path = self.drop_in();
                let allowed = self.paths.runtime_dir().join("kubelet-allowed");
                let _ = std::fs::remove_file(&allowed);
                std::fs::create_dir_all(path.parent().expect("drop-in has a parent"))
                    .map_err(io_local)?;
                std::fs::write(
                    &path,
                    format!(
                        "# Written by kube-join-agent while it joins this node; removed when kubelet may start.\n[Unit]\nConditionPathExists={}\n",
                        strip_root(self.paths, &allowed)
                    ),
                )
                .map_err(io_local)?;
                self.systemd.reload().await.map_err(local)?;
            }
        }
        self.systemd
            .stop(self.unit, JOB_LIMIT)
            .await
            .map_err(|e| Failure::Local {
                detail: e.to_string(),
            })?;
        Ok(method)
    }

    /// Lifts the gate (both kinds, whichever is there) and reloads.
    pub async fn lift(&self) -> Result<(), Failure> {
        let drop_in = self.drop_in();
        let had_drop_in = drop_in.exists();
        if had_drop_in {
            std::fs::remove_file(&drop_in).map_err(io_local)?;
        }
        let masked = self
            .paths
            .run_systemd_system()
            .join(self.unit)
            .read_link()
            .is_ok_and(|t| t == std::path::Path::new("/dev/null"));
        if masked {
            self.systemd
                .unmask_runtime(self.unit)
                .await
                .map_err(local)?;
        } else if had_drop_in {
            self.systemd.reload().await.map_err(local)?;
        }
        Ok(())
    }

    /// Lifts the gate and starts kubelet, waiting for the job's result, then for the
    /// unit to settle active. kubeadm restarts kubelet itself once it has written its
    /// files, so a stop/start right after ours is expected and waited through.
    pub async fn open(&self) -> Result<(), Failure> {
        self.lift().await?;
        self.systemd
            .start(self.unit, JOB_LIMIT)
            .await
            .map_err(|e| Failure::KubeletStartFailed {
                detail: e.to_string(),
            })?;
        let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
        loop {
            let info = self.systemd.unit_info(self.unit).await.map_err(local)?;
            match info.active_state.as_str() {
                "active" => return Ok(()),
                "failed" => {
                    return Err(Failure::KubeletStartFailed {
                        detail: format!(
                            "{} failed ({}) right after starting",
                            self.unit, info.sub_state
                        ),
                    });
                }
                state if tokio::time::Instant::now() >= deadline => {
                    return Err(Failure::KubeletStartFailed {
                        detail: format!(
                            "{} is {state} ({}) {}s after its start job",
                            self.unit,
                            info.sub_state,
                            SETTLE_LIMIT.as_secs()
                        ),
                    });
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Whether kubelet's unit is active now.
    pub async fn kubelet_active(&self) -> Result<bool, Failure> {
        let info = self.systemd.unit_info(self.unit).await.map_err(local)?;
        Ok(info.active_state == "active")
    }
}

/// A unit file in /etc/systemd/system (a real file, or a link to one) defeats a runtime
/// mask; a link to /dev/null there is a persistent mask the administrator set.
pub fn method_for(paths: &Paths, unit: &str) -> GateMethod {
    let etc_unit = paths.etc_systemd_system().join(unit);
    match std::fs::symlink_metadata(&etc_unit) {
        Ok(meta) if meta.is_file() => GateMethod::ConditionDropIn,
        Ok(meta) if meta.file_type().is_symlink() => match std::fs::read_link(&etc_unit) {
            Ok(target) if target == std::path::Path::new("/dev/null") => GateMethod::RuntimeMask,
            Ok(_) => GateMethod::ConditionDropIn,
            Err(_) => GateMethod::RuntimeMask,
        },
        _ => GateMethod::RuntimeMask,
    }
}

/// The path as seen on the node (drop-ins name absolute node paths).
fn strip_root(paths: &Paths, p: &std::path::Path) -> String {
    let root = paths.at("/");
    match p.strip_prefix(&root) {
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => p.display().to_string(),
    }
}

fn local(e: crate::systemd::SystemdError) -> Failure {
    Failure::Local {
        detail: e.to_string(),
    }
}

fn io_local(e: std::io::Error) -> Failure {
    Failure::Local {
        detail: format!("writing the kubelet gate drop-in: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_depends_on_where_the_unit_file_is() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let etc = paths.etc_systemd_system();
        std::fs::create_dir_all(&etc).unwrap();
        let unit = etc.join("kubelet.service");
        assert_eq!(
            method_for(&paths, "kubelet.service"),
            GateMethod::RuntimeMask
        );
        std::os::unix::fs::symlink("/dev/null", &unit).unwrap();
        assert_eq!(
            method_for(&paths, "kubelet.service"),
            GateMethod::RuntimeMask
        );
        std::fs::remove_file(&unit).unwrap();
        std::fs::write(&unit, "[Service]\n").unwrap();
        assert_eq!(
            method_for(&paths, "kubelet.service"),
            GateMethod::ConditionDropIn
        );
        std::fs::remove_file(&unit).unwrap();
        std::os::unix::fs::symlink("/opt/kubelet/kubelet.service", &unit).unwrap();
        assert_eq!(
            method_for(&paths, "kubelet.service"),
            GateMethod::ConditionDropIn
        );
    }
}
