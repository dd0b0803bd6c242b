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
//!
//! At boot the agent's generator (systemd/kube-join-agent-generator) has usually masked
//! kubelet already, from systemd's generator.early directory: then closing the gate
//! costs no daemon-reload. Lifting it writes /run/kube-join-agent/kubelet-allowed, which
//! the generator reads at the next reload (kubeadm's own) and masks no more.

use crate::failure::Failure;
use crate::paths::Paths;
use crate::systemd::{JobResults, ReloadsEnding, Systemd};
use std::path::PathBuf;
use std::time::Duration;

const JOB_LIMIT: Duration = Duration::from_secs(90);
/// kubelet (Restart=always, RestartSec=10) may be mid-restart when the agent looks.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);
const DROP_IN: &str = "50-kube-join-agent-gate.conf";
/// kubeadm runs `systemctl daemon-reload` and `systemctl restart kubelet` right after
/// writing kubelet's files (0.13-0.37 s from config.yaml to kubelet started, real
/// kubeadm 1.20 and 1.29). Past this without its reload or its restart, the agent
/// starts kubelet itself.
const FOLLOW_KUBEADM: Duration = Duration::from_secs(2);

/// What lifting the gate on disk found.
#[derive(Debug, Clone, Copy)]
pub struct Lifted {
    /// The condition drop-in was in place (systemd holds it until a reload).
    had_drop_in: bool,
}

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

    /// Stops kubelet and keeps it from starting. Cancels a queued start job too. At most
    /// one daemon-reload, and none when kubelet is already gated and stopped (every
    /// retry closes the gate again).
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
        // Without the flag, the generator masks kubelet again at the next daemon-reload.
        let _ = std::fs::remove_file(self.allowed());
        let reload = match method {
            GateMethod::RuntimeMask => {
                if !self.mask_on_disk() {
                    self.systemd.mask_runtime(self.unit).await.map_err(local)?;
                }
                info.load_state != "masked"
            }
            GateMethod::ConditionDropIn => {
                tracing::warn!(
                    "{} is defined in {}, where a runtime mask has no effect; gating it with a runtime drop-in ({}) instead. Packages install it in /lib/systemd/system with overrides in {}.d/",
                    self.unit,
                    self.paths.etc_systemd_system().display(),
                    self.drop_in().display(),
                    self.unit
                );
                let path = self.drop_in();
                let text = format!(
                    "# Written by kube-join-agent while it joins this node; removed when kubelet may start.\n[Unit]\nConditionPathExists={}\n",
                    strip_root(self.paths, &self.allowed())
                );
                if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                    std::fs::create_dir_all(path.parent().expect("drop-in has a parent"))
                        .map_err(io_local)?;
                    std::fs::write(&path, text).map_err(io_local)?;
                }
                let loaded = strip_root(self.paths, &path);
                !info.drop_in_paths.contains(&loaded)
            }
        };
        if reload {
            self.systemd.reload().await.map_err(local)?;
        }
        let stopped = matches!(info.active_state.as_str(), "inactive" | "failed");
        if !stopped || info.has_job {
            self.systemd
                .stop(self.unit, JOB_LIMIT)
                .await
                .map_err(|e| Failure::Local {
                    detail: e.to_string(),
                })?;
        }
        Ok(method)
    }

    /// The flag file the condition drop-in waits for.
    fn allowed(&self) -> PathBuf {
        self.paths.runtime_dir().join("kubelet-allowed")
    }

    /// Whether the runtime mask's symlink is in place.
    fn mask_on_disk(&self) -> bool {
        self.paths
            .run_systemd_system()
            .join(self.unit)
            .read_link()
            .is_ok_and(|t| t == std::path::Path::new("/dev/null"))
    }

    /// Lifts the gate on disk, without a reload: the mask's symlink or the drop-in goes,
    /// and the drop-in's condition is met at once. Returns whether systemd must reload
    /// to see it (a loaded mask or drop-in).
    async fn lift_on_disk(&self) -> Result<bool, Failure> {
        let lifted = self.lift_files()?;
        self.needs_reload(lifted).await
    }

    /// Lifts the gate on disk with file operations only, no D-Bus round trip: the flag
    /// first (the drop-in's condition, and the generator's sign not to mask kubelet at
    /// the next daemon-reload), then the drop-in or the runtime mask's symlink, which
    /// is what `systemctl unmask --runtime` removes.
    pub fn lift_files(&self) -> Result<Lifted, Failure> {
        std::fs::create_dir_all(self.paths.runtime_dir()).map_err(io_local)?;
        std::fs::write(self.allowed(), "").map_err(io_local)?;
        let drop_in = self.drop_in();
        let had_drop_in = drop_in.exists();
        if had_drop_in {
            std::fs::remove_file(&drop_in).map_err(io_local)?;
        }
        if self.mask_on_disk() {
            std::fs::remove_file(self.paths.run_systemd_system().join(self.unit))
                .map_err(io_local)?;
        }
        Ok(Lifted { had_drop_in })
    }

    /// Whether systemd must reload to see a gate lifted on disk: kubelet is masked in
    /// memory (the agent's runtime mask, or the generator's at boot) or had the drop-in.
    async fn needs_reload(&self, lifted: Lifted) -> Result<bool, Failure> {
        Ok(self.masked_in_memory().await? || lifted.had_drop_in)
    }

    /// Whether systemd holds kubelet masked now (the agent's runtime mask, or the
    /// generator's at boot). Asked before kubeadm writes its files: afterwards its own
    /// reload may already have picked up the lifted gate.
    pub async fn masked_in_memory(&self) -> Result<bool, Failure> {
        let info = self.systemd.unit_info(self.unit).await.map_err(local)?;
        Ok(info.load_state == "masked")
    }

    /// Lifts the gate and starts kubelet, waiting for the job's result, then for the
    /// unit to settle active: for a kubelet nobody else starts (an already joined node).
    pub async fn open(&self) -> Result<(), Failure> {
        if self.lift_on_disk().await? {
            self.systemd.reload().await.map_err(local)?;
        }
        self.start().await
    }

    /// With the gate `lifted` on disk ([`Gate::lift_files`], the moment kubeadm's files
    /// were valid) and `held` in memory before that ([`Gate::masked_in_memory`]), lets
    /// kubeadm's own `systemctl daemon-reload`
    /// and `systemctl restart kubelet` (kubelet-start, right after writing kubelet's
    /// files): its reload picks the lifted gate up, and its restart starts kubelet, so
    /// the handoff costs no reload of the agent's and kubelet starts once. When the
    /// reload that ends next still finds kubelet masked (kubeadm's began before the gate
    /// was lifted), or none comes within `FOLLOW_KUBEADM`, the agent reloads and starts
    /// kubelet itself. `reloads` must have been watched since before kubeadm wrote its
    /// files, so a reload that ended before the gate was lifted is seen too.
    pub async fn open_after_kubeadm(
        &self,
        held: bool,
        lifted: Lifted,
        reloads: &mut ReloadsEnding,
        jobs: &mut JobResults,
        mut kubeadm_restart_failed: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), Failure> {
        // Not held in memory before kubeadm wrote its files: no reload is needed to
        // lift anything (and kubeadm's may already be over), so start kubelet now.
        if !held && !lifted.had_drop_in {
            return self.start().await;
        }
        let waited = tokio::time::sleep(FOLLOW_KUBEADM);
        tokio::pin!(waited);
        let mut reloaded = false;
        loop {
            tokio::select! {
                ended = reloads.next(), if !reloaded => {
                    if ended.is_none() {
                        break;
                    }
                    let info = self.systemd.unit_info(self.unit).await.map_err(local)?;
                    if info.load_state == "masked" {
                        // That reload began before the gate was lifted.
                        tracing::debug!("a daemon-reload ended without seeing the lifted gate");
                        break;
                    }
                    reloaded = true;
                    waited.as_mut().reset(tokio::time::Instant::now() + FOLLOW_KUBEADM);
                }
                Some(_) = jobs.next_of(self.unit) => {
                    if self.kubelet_active().await? {
                        tracing::debug!("kubeadm's restart started {}", self.unit);
                        return Ok(());
                    }
                }
                _ = &mut waited => {
                    if self.kubelet_active().await? {
                        return Ok(());
                    }
                    break;
                }
            }
        }
        if !reloaded {
            self.systemd.reload().await.map_err(local)?;
        }
        // kubeadm's restart may still be on its way (queued behind the agent's reload):
        // starting kubelet now could have it restarted right after. Start it once
        // kubeadm said its restart failed, or when a short wait brought nothing.
        let restart_failed = kubeadm_restart_failed.wait_for(|failed| *failed);
        let quiet = tokio::time::sleep(FOLLOW_KUBEADM);
        tokio::pin!(restart_failed, quiet);
        loop {
            tokio::select! {
                _ = &mut restart_failed => break,
                _ = &mut quiet => break,
                Some(_) = jobs.next_of(self.unit) => {
                    if self.kubelet_active().await? {
                        tracing::debug!("kubeadm's restart started {}", self.unit);
                        return Ok(());
                    }
                }
            }
        }
        self.start().await
    }

    /// Starts kubelet, waits for the job's result, then for the unit to settle active.
    /// kubeadm restarts kubelet itself once it has written its files, so a stop/start
    /// right after ours is expected and waited through.
    async fn start(&self) -> Result<(), Failure> {
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
