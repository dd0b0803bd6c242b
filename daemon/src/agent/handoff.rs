//! Handoff: the moment kubeadm's three kubelet files are valid (inotify), kubelet is
//! unmasked and started; then, while kubeadm waits for the kubelet's TLS bootstrap, the
//! agent watches the kubelet side, so a bootstrap that does not finish is named (a
//! pending CSR, kubelet down, no CSR at all) instead of looking like a silent kubeadm.

use super::{Agent, Phase};
use crate::discovery::ClusterInfo;
use crate::failure::Failure;
use crate::kubelet::{self, KubeletView};
use crate::telemetry;
use tokio::time::Instant;
use tracing::{info, warn};

impl Agent {
    /// Waits until kubeadm's kubelet files are valid, then lifts the gate in time for
    /// kubeadm's own reload and restart of kubelet (or starts kubelet itself when
    /// kubeadm's come too early or not at all), and waits until kubelet runs.
    pub(super) async fn hand_off(
        &self,
        cluster: &ClusterInfo,
        deadline: Instant,
        kubeadm_restart_failed: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), Failure> {
        let s = &self.settings;
        let bus = |e: crate::systemd::SystemdError| Failure::Local {
            detail: e.to_string(),
        };
        // Watched from before kubeadm writes the files, so its reload and its restart
        // job are seen even if they come before the gate is lifted.
        let mut reloads = self.systemd.reloads_ending().await.map_err(bus)?;
        let mut jobs = self.systemd.job_results().await.map_err(bus)?;
        // kubeadm runs `systemctl daemon-reload` tens of milliseconds after its last
        // file: the gate is lifted on disk in the same moment the files are found valid,
        // before the phase line and the state file (fsync).
        let gate = self.gate();
        let held = gate.masked_in_memory().await?;
        let lifted =
            kubelet::wait_for_kubelet_files_then(&self.paths, &cluster.ca, deadline, || {
                gate.lift_files()
            })
            .await??;
        self.announce(
            Phase::Handoff,
            &format!(
                "kubeadm's kubelet files are valid; unmasking {} for kubeadm's restart",
                s.kubelet_unit
            ),
        );
        let opened = gate
            .open_after_kubeadm(
                held,
                lifted,
                &mut reloads,
                &mut jobs,
                kubeadm_restart_failed,
            )
            .await;
        self.record_phase(Phase::Handoff);
        opened?;
        info!(phase = Phase::Handoff.name(), "{} started", s.kubelet_unit);
        Ok(())
    }

    /// One look at a TLS bootstrap kubeadm is still waiting for, `since` the handoff:
    /// says what holds it up when that changed. False once the kubelet has its
    /// credentials (nothing left to watch).
    pub(super) async fn look_at_bootstrap(
        &self,
        cluster: &ClusterInfo,
        since: Instant,
        last_said: &mut String,
    ) -> bool {
        let node = &self.settings.join.node_name;
        if kubelet::check_kubelet_conf(&self.paths, &cluster.ca, node).is_ok() {
            return false;
        }
        let why = self.kubelet_side(cluster, true).await;
        if why != *last_said {
            warn!(
                phase = Phase::TlsBootstrap.name(),
                "kubelet has not finished TLS bootstrap {}s after it started: {why}",
                since.elapsed().as_secs()
            );
            telemetry::notify_status(&format!(
                "join: waiting for the kubelet's TLS bootstrap: {why}"
            ));
            *last_said = why;
        }
        true
    }

    /// kubeadm ended in its TLS-bootstrap wait (`kubeadm_said` is how): the failure,
    /// with what the kubelet side shows. `started`: the agent handed off to kubelet.
    pub(super) async fn bootstrap_failure(
        &self,
        cluster: Option<&ClusterInfo>,
        started: bool,
        kubeadm_said: String,
        code: Option<i32>,
    ) -> Failure {
        let node = &self.settings.join.node_name;
        if let Some(cluster) = cluster
            && kubelet::check_kubelet_conf(&self.paths, &cluster.ca, node).is_ok()
        {
            // The kubelet finished just as kubeadm stopped: its TLS bootstrap did work.
            return Failure::KubeadmFailed {
                code: code.unwrap_or(-1),
                detail: kubeadm_said,
            };
        }
        let why = match cluster {
            Some(cluster) => self.kubelet_side(cluster, started).await,
            None => kubelet::tls::diagnose(&self.paths, None, &KubeletView::default()),
        };
        Failure::TlsBootstrapStuck {
            detail: format!("{kubeadm_said}; {why}"),
        }
    }

    /// What the kubelet side shows while its TLS bootstrap does not finish. `started`:
    /// the agent started kubelet with kubeadm's validated bootstrap credentials.
    pub(super) async fn kubelet_side(&self, cluster: &ClusterInfo, started: bool) -> String {
        let mut seen =
            kubelet::view::observe(&self.systemd, &self.paths, &self.settings, cluster).await;
        seen.had_bootstrap_conf |= started;
        kubelet::tls::diagnose(&self.paths, None, &seen)
    }
}
