//! Preflight: host (memory, disk, swap), kernel, kubeadm and its version, kubelet's
//! unit flags, then the checks worth waiting for: the container runtime over CRI and
//! the API server's DNS name and port.

use super::wait::{Look, Pace};
use super::{Agent, Phase, Stop};
use crate::failure::Failure;
use crate::kubeadm::{self, KubeadmVersion};
use crate::preflight::{self, Verdict};
use crate::skew;
use crate::telemetry;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

/// The runtime's unit, restarted by the optional remediation.
const CONTAINERD_UNIT: &str = "containerd.service";
/// The runtime and the API server are looked at again this often, at most: both are
/// cheap to ask, and a node should go on the moment they are up.
const MAX_POLL: Duration = Duration::from_secs(2);

/// What preflight found out about the tools the join uses.
pub(super) struct Tools {
    /// kubeadm's release: it decides the JoinConfiguration's API.
    pub kubeadm: KubeadmVersion,
    /// The kubelet's release, or why it is unknown.
    pub kubelet: Result<KubeadmVersion, String>,
}

impl Agent {
    /// Host, kernel, kubeadm, kubelet's flags, then the waitable checks (runtime, API
    /// server); returns kubeadm's and the kubelet's versions.
    pub(super) async fn preflight(&self) -> Result<Tools, Stop> {
        let s = &self.settings;
        self.enter(
            Phase::Preflight,
            "checking host, kernel, kubeadm, container runtime and API server",
        );
        for finding in preflight::static_checks(&self.paths, s) {
            log_finding(&finding);
        }
        if let Some(f) = preflight::first_failure(&preflight::static_checks(&self.paths, s)) {
            return Err(failure_of(f).into());
        }
        // Each of these execs or asks systemd: at once, not one after the other (a real
        // kubeadm or kubelet binary takes a good part of a second to say its version).
        let (version, kubelet, flags) = tokio::join!(
            kubeadm::query_version(&s.kubeadm_path),
            skew::kubelet_version(),
            self.kubelet_flags()
        );
        let version = version?;
        self.state.lock().expect("state lock").kubeadm_version = Some(version.to_string());
        info!(
            phase = Phase::Preflight.name(),
            "[pass] kubeadm: {version} at {}",
            s.kubeadm_path.display()
        );

        for finding in preflight::downgrade(vec![flags], &s.preflight.warn_only) {
            log_finding(&finding);
            if matches!(finding.verdict, Verdict::Fail { .. }) {
                return Err(failure_of(&finding).into());
            }
        }

        // Waitable checks: the runtime and the API server may simply not be up yet.
        let started = Instant::now();
        let mut restarted_containerd = false;
        let mut last_reported = String::new();
        // Looked at again every 0.5-2 s, and at once when the runtime's socket appears.
        let pace = Pace::doubling(Duration::from_millis(500), MAX_POLL);
        let socket = [self.paths.resolve(&s.containerd_socket)];
        self.wait_until(pace, &socket, async || {
            let (runtime, network) = tokio::join!(
                preflight::runtime::check(&s.containerd_socket),
                preflight::network::check(&s.join.api_server)
            );
            let mut findings = vec![runtime];
            findings.extend(network);
            let findings = preflight::downgrade(findings, &s.preflight.warn_only);
            if let Some(f) = preflight::first_failure(&findings) {
                return Look::Done(Err(failure_of(f)));
            }
            let waiting: Vec<_> = findings
                .iter()
                .filter(|f| matches!(f.verdict, Verdict::Wait(_)))
                .collect();
            if waiting.is_empty() {
                findings.iter().for_each(log_finding);
                return Look::Done(Ok(()));
            }
            let waited = started.elapsed();
            for f in &waiting {
                let Verdict::Wait(why) = &f.verdict else {
                    continue;
                };
                if f.check == "container-runtime"
                    && !restarted_containerd
                    && s.containerd_restart_after
                        .is_some_and(|after| waited >= after)
                {
                    restarted_containerd = true;
                    warn!(
                        phase = Phase::Preflight.name(),
                        "containerd has not been ready for {} ({why}): restarting containerd.service (containerd.restart_when_not_ready)",
                        humantime::format_duration(Duration::from_secs(waited.as_secs()))
                    );
                    match self
                        .systemd
                        .restart(CONTAINERD_UNIT, Duration::from_secs(90))
                        .await
                    {
                        Ok(()) => info!(
                            phase = Phase::Preflight.name(),
                            "containerd.service restarted"
                        ),
                        Err(e) => warn!("restarting containerd.service failed: {e}"),
                    }
                }
                if f.check == "container-runtime" && waited >= s.containerd_ready_timeout {
                    return Look::Done(Err(Failure::ContainerdNotReady {
                        detail: why.clone(),
                        waited,
                    }));
                }
                if f.check != "container-runtime" && waited >= s.timeouts.discovery {
                    return Look::Done(Err(Failure::ApiServerUnreachable {
                        detail: why.clone(),
                        port: s.join.api_server.port,
                    }));
                }
            }
            let summary = waiting
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            if summary != last_reported {
                info!(phase = Phase::Preflight.name(), "waiting: {summary}");
                telemetry::notify_status(&format!("preflight: waiting: {summary}"));
                last_reported = summary;
            }
            Look::Again
        })
        .await?;
        Ok(Tools {
            kubeadm: version,
            kubelet,
        })
    }

    /// kubelet must be started with a kubeconfig, or after the join it runs standalone.
    async fn kubelet_flags(&self) -> preflight::Finding {
        preflight::kubelet_unit::finding(&self.systemd, &self.paths, &self.settings.kubelet_unit)
            .await
    }

    /// The version-skew policy, once the API server's version can be read with the
    /// verified CA: a kubelet or kubeadm the cluster does not support stops the join
    /// with both versions and the rule (unless `preflight.warn_only` lists
    /// version-skew); an API server that will not say its version is only a warning.
    pub(super) async fn version_skew(
        &self,
        tools: &Tools,
        client: &crate::apiserver::ApiClient,
    ) -> Result<(), Failure> {
        let s = &self.settings;
        let findings = match skew::findings(client, &tools.kubelet, Some(tools.kubeadm)).await {
            Ok(findings) => findings,
            Err(why) => {
                warn!(
                    phase = Phase::Discovery.name(),
                    check = skew::CHECK,
                    "{why}"
                );
                return Ok(());
            }
        };
        let findings = preflight::downgrade(findings, &s.preflight.warn_only);
        findings.iter().for_each(log_finding);
        match preflight::first_failure(&findings) {
            Some(f) => Err(failure_of(f)),
            None => Ok(()),
        }
    }
}

fn log_finding(f: &preflight::Finding) {
    match &f.verdict {
        Verdict::Warn { .. } => warn!(phase = Phase::Preflight.name(), check = f.check, "{f}"),
        _ => info!(phase = Phase::Preflight.name(), check = f.check, "{f}"),
    }
}

fn failure_of(f: &preflight::Finding) -> Failure {
    match &f.verdict {
        Verdict::Fail { reason, fix } => Failure::HostNotReady {
            check: f.check.to_string(),
            reason: reason.clone(),
            fix: fix.clone(),
        },
        other => Failure::Local {
            detail: format!("{}: {other:?}", f.check),
        },
    }
}
