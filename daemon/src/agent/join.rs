//! Join: the JoinConfiguration written (0600, removed when kubeadm exits) and kubeadm
//! run under supervision, whole or phase by phase for a control plane, with the handoff
//! to kubelet inside it (handoff.rs); its exit classified (kubeadm/outcome.rs).

use super::{Agent, Phase};
use crate::discovery::ClusterInfo;
use crate::failure::Failure;
use crate::kubeadm::{self, ConfigApi, JoinConfigInput, KubeadmVersion, Limits};
use crate::kubelet;
use crate::preflight;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

/// After the handoff, the kubelet normally has its certificate within a second or two
/// (real kubelet 1.20 and 1.29); past this, the agent looks at what holds it up.
const BOOTSTRAP_FIRST_LOOK: Duration = Duration::from_secs(15);
/// And looks again this often while kubeadm keeps waiting.
const BOOTSTRAP_LOOK_EVERY: Duration = Duration::from_secs(30);

impl Agent {
    /// kubeadm join (whole, or phase by phase for a control plane), with the handoff to
    /// kubelet the moment its files are valid.
    pub(super) async fn join(
        &self,
        version: KubeadmVersion,
        cluster: &ClusterInfo,
    ) -> Result<(), Failure> {
        let s = &self.settings;
        self.remove_leftovers().await?;
        self.enter(
            Phase::Join,
            &format!(
                "running kubeadm join ({version}, {})",
                ConfigApi::for_version(version).api_version()
            ),
        );
        let api = ConfigApi::for_version(version);
        let yaml =
            kubeadm::render(
                api,
                &JoinConfigInput {
                    api_server: &s.join.api_server,
                    token: &s.join.token,
                    ca_pins: &s.join.ca_pins,
                    unsafe_skip_ca_verification: s.join.unsafe_skip_ca_verification,
                    node_name: &s.join.node_name,
                    cri_socket: &s.containerd_socket,
                    discovery_timeout: s.timeouts.discovery,
                    tls_bootstrap_timeout: s.timeouts.tls_bootstrap,
                    control_plane: s.join.control_plane.as_ref().map(|cp| {
                        kubeadm::ControlPlaneInput {
                            certificate_key: &cp.certificate_key,
                            advertise_address: cp.advertise_address,
                        }
                    }),
                    registration: &s.join.registration,
                },
            )
            .map_err(|e| Failure::SettingUnsupported {
                detail: format!("{e}: this node's kubeadm is {version}"),
            })?;
        let config_path = self.paths.join_config();
        // The file holds the token: keep it on disk no longer than kubeadm needs it,
        // whatever ends this join (kubeadm's exit, an error, the future dropped at
        // SIGTERM, a panic unwinding).
        let _remove = RemoveOnDrop(config_path.clone());
        kubeadm::write_private(&config_path, &yaml).map_err(|e| Failure::Local {
            detail: format!("writing {}: {e}", config_path.display()),
        })?;
        let config = config_path.display().to_string();
        let result = if s.join.control_plane.is_some() {
            let job = crate::control_plane::ControlPlaneJoin {
                paths: &self.paths,
                settings: s,
                config_path: &config_path,
            };
            crate::control_plane::join(&job, async |args: Vec<String>| {
                // A whole join, or its kubelet-start phase, writes the kubelet files.
                let whole = !args.iter().any(|a| a == "phase");
                let handoff = whole || args.iter().any(|a| a == "kubelet-start");
                self.run_kubeadm(&args, handoff.then_some(cluster)).await
            })
            .await
        } else {
            let mut args = vec!["join".to_string(), "--config".to_string(), config];
            args.extend(kubeadm::extra_flags(&s.join.registration, None));
            self.run_kubeadm(&args, Some(cluster)).await
        };
        drop(_remove);
        result?;
        if !self.gate().kubelet_active().await? {
            // kubeadm succeeded without the agent seeing valid files (an older kubeadm
            // that waits differently): validate now and hand off.
            kubelet::wait_for_kubelet_files(
                &self.paths,
                &cluster.ca,
                Instant::now() + Duration::from_secs(10),
            )
            .await?;
            self.enter(Phase::Handoff, &format!("starting {}", s.kubelet_unit));
            self.gate().open().await?;
        }
        Ok(())
    }

    /// Files an earlier attempt left would fail kubeadm's preflight: `kubeadm reset -f`.
    async fn remove_leftovers(&self) -> Result<(), Failure> {
        let leftovers = preflight::leftovers::present(&self.paths);
        if !leftovers.is_empty() {
            warn!(
                "removing files from an earlier join attempt with `kubeadm reset -f`: {}",
                leftovers
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            self.reset().await?;
            self.gate().close().await?;
        }
        Ok(())
    }

    /// One supervised kubeadm run, classified. With `handoff`, kubelet is started the
    /// moment kubeadm's kubelet files are valid, while kubeadm waits for it; while it
    /// waits for the kubelet's TLS bootstrap, the agent looks at the kubelet side itself,
    /// so a bootstrap that does not finish is named (pending CSR, kubelet down, no CSR)
    /// instead of looking like a silent kubeadm.
    pub(super) async fn run_kubeadm(
        &self,
        args: &[String],
        handoff: Option<&ClusterInfo>,
    ) -> Result<(), Failure> {
        let s = &self.settings;
        let limits = Limits {
            deadline: s.timeouts.join_phase,
            no_progress: s.timeouts.no_progress,
        };
        let secrets = self.secrets();
        info!(
            phase = Phase::Join.name(),
            "running {} {}",
            s.kubeadm_path.display(),
            args.join(" ")
        );
        // kubeadm saying its own restart of kubelet failed: the gate was still closed
        // when it tried, so starting kubelet is the agent's job.
        let (restart_failed, restart_failed_seen) = tokio::sync::watch::channel(false);
        let watch = kubeadm::LineWatch {
            needle: kubeadm::KUBELET_RESTART_FAILED,
            seen: restart_failed,
        };
        let run = kubeadm::run_watching(&s.kubeadm_path, args, limits, &secrets, true, Some(watch));
        let deadline = Instant::now() + s.timeouts.join_phase;
        let cluster = handoff;
        let handoff = async {
            match cluster {
                Some(cluster) => self.hand_off(cluster, deadline, restart_failed_seen).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(run, handoff);
        let mut handed_off: Option<Instant> = None;
        let mut next_look: Option<Instant> = None;
        let mut last_said = String::new();
        let finished = loop {
            let look_at = next_look.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                finished = &mut run => break finished,
                result = &mut handoff, if handed_off.is_none() => {
                    // A failed handoff dooms this join: returning drops (kills) kubeadm.
                    result?;
                    handed_off = Some(Instant::now());
                    next_look = Some(Instant::now() + BOOTSTRAP_FIRST_LOOK);
                }
                _ = tokio::time::sleep_until(look_at), if next_look.is_some() => {
                    next_look = match (cluster, handed_off) {
                        (Some(cluster), Some(since)) => self
                            .look_at_bootstrap(cluster, since, &mut last_said)
                            .await
                            .then(|| Instant::now() + BOOTSTRAP_LOOK_EVERY),
                        _ => None,
                    };
                }
            }
        };
        let finished = finished?;
        info!(
            phase = Phase::Join.name(),
            "kubeadm exited with {} after {:.1}s",
            finished
                .code
                .map(|c| format!("code {c}"))
                .unwrap_or_else(|| format!("signal {}", finished.signal.unwrap_or(0))),
            finished.elapsed.as_secs_f64()
        );
        let outcome = kubeadm::classify(
            &finished,
            &s.join.node_name,
            s.join.token.id(),
            &s.join.token_source.to_string(),
        );
        // kubeadm waiting for the TLS bootstrap: it gave up itself, or printed nothing
        // until the watchdog stopped it. Either way the kubelet side says why.
        let waiting_for_bootstrap = handed_off.is_some()
            || finished.said(kubeadm::TLS_BOOTSTRAP_WAIT)
            || finished.said(kubeadm::KUBELET_HEALTH_WAIT);
        let kubeadm_said = match outcome {
            Err(Failure::TlsBootstrapStuck { detail }) => detail,
            Err(Failure::Hang { what, last_line }) if waiting_for_bootstrap => format!(
                "kubeadm waited for the kubelet's TLS bootstrap and {what}: killed its process group (last output: {last_line})"
            ),
            other => return other,
        };
        Err(self
            .bootstrap_failure(cluster, handed_off.is_some(), kubeadm_said, finished.code)
            .await)
    }
}

/// Removes a file when dropped.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Removes files holding secrets that an earlier run of the agent left behind (killed
/// with -9, powered off mid-join): at every start and before every exit.
pub fn remove_secret_files(paths: &crate::paths::Paths) {
    let config = paths.join_config();
    match std::fs::remove_file(&config) {
        Ok(()) => tracing::info!(
            "removed {}, a join configuration (holding the token) left by an earlier run",
            config.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove {}: {e}", config.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_join_configuration_goes_when_a_panic_unwinds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("join-config.yaml");
        std::fs::write(&path, "token").unwrap();
        let p = path.clone();
        let unwound = std::panic::catch_unwind(move || {
            let _remove = RemoveOnDrop(p);
            panic!("a bug");
        });
        assert!(unwound.is_err());
        assert!(!path.exists());
    }

    #[test]
    fn one_left_by_an_earlier_run_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let paths = crate::paths::Paths::new(dir.path());
        std::fs::create_dir_all(paths.runtime_dir()).unwrap();
        std::fs::write(paths.join_config(), "token").unwrap();
        remove_secret_files(&paths);
        assert!(!paths.join_config().exists());
        remove_secret_files(&paths);
    }
}
