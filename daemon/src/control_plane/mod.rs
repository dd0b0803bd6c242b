//! The control-plane join: kubeadm phase by phase, with etcd checked between phases.
//!
//! The agent has written the JoinConfiguration (with its `controlPlane` section) and
//! hands over a runner for kubeadm invocations: `kubeadm(args)` runs one supervised
//! kubeadm (the agent starts kubelet during `kubelet-start`) and classifies its exit.
//!
//! The order is kubeadm's own (cmd/kubeadm/app/cmd/join.go): preflight,
//! control-plane-prepare, (check-etcd), kubelet-start, control-plane-join, and from
//! v1.31 wait-control-plane. kubeadm's check-etcd phase is hidden (it cannot be run on
//! its own); the agent's etcd checks take its place, after control-plane-prepare has
//! written the etcd CA and client certificate they need and before kubelet-start makes
//! the node a Node:
//! - a leader agreed by a quorum, waited for (the first control plane may still be
//!   starting);
//! - learners that never started (a failed earlier join's): removed when allowed,
//!   otherwise the join stops with the member and the etcdctl command that removes it;
//! - this node's own member from an earlier attempt: removed, it is ours;
//! - every peer's port 2380 reachable from here.
//!
//! Then `control-plane-join etcd`, where etcd may refuse the promotion ("can only
//! promote a learner member which is in sync with leader"): the agent watches its
//! learner (catching up or stuck), and once it is in sync has it promoted, until
//! `[etcd] learner_sync_timeout`. Any other failure of that phase removes this node's
//! learner first, so the next attempt does not trip over it.

//!
//! `etcd_checks.rs` holds the checks before kubelet-start, `promotion.rs` the etcd phase
//! and its learner.

mod etcd_checks;
mod promotion;

use etcd_checks::check_etcd;
use promotion::etcd_phase;

use crate::config::{Registration, Settings};
use crate::etcd::checks::{self};
use crate::etcd::{Client, TlsFiles, members};
use crate::failure::Failure;
use crate::kubeadm::{self, KubeadmVersion};
use crate::paths::Paths;
use std::path::Path;
use tracing::info;

/// What the agent hands to the control-plane join.
pub struct ControlPlaneJoin<'a> {
    /// File-system root.
    pub paths: &'a Paths,
    /// Validated settings; `settings.join.control_plane` is set.
    pub settings: &'a Settings,
    /// The JoinConfiguration, mode 0600.
    pub config_path: &'a Path,
}

/// Which phases a kubeadm release has, and how its learner add behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhasePlan {
    /// `control-plane-join update-status`: did real work (the ClusterStatus in the
    /// kubeadm-config ConfigMap) before v1.22, a deprecated no-op until v1.30, removed
    /// in v1.31. Run only where it does something.
    pub update_status: bool,
    /// `wait-control-plane` (join): v1.31 and later.
    pub wait_control_plane: bool,
    /// kubeadm's learner add skips a member whose peer URL exists (kubernetes PR
    /// #127491, in v1.28.15, v1.29.10, v1.30.6, v1.31.2 and later). Older releases
    /// fail a re-run with "Peer URLs already exists", so after an etcd refusal the
    /// agent promotes the learner itself instead of running the phase again.
    pub idempotent_learner_add: bool,
}

impl PhasePlan {
    /// The plan for a kubeadm release.
    pub fn for_version(v: KubeadmVersion) -> Self {
        let at_least = |minor: u32, patch: u32| {
            v.major > 1
                || (v.major == 1 && (v.minor > minor || (v.minor == minor && v.patch >= patch)))
        };
        let idempotent_learner_add = match (v.major, v.minor) {
            (1, 28) => v.patch >= 15,
            (1, 29) => v.patch >= 10,
            (1, 30) => v.patch >= 6,
            (1, 31) => v.patch >= 2,
            _ => at_least(32, 0),
        };
        Self {
            update_status: !at_least(22, 0),
            wait_control_plane: at_least(31, 0),
            idempotent_learner_add,
        }
    }
}

/// This node as etcd knows it.
struct Own {
    peer_url: String,
    client_url: String,
}

fn step(message: &str) {
    info!(phase = "join", "control-plane join: {message}");
}

/// `kubeadm join phase <names...> --config F`, with `--ignore-preflight-errors=all`
/// for the preflight phase when so configured.
fn phase_args(reg: &Registration, names: &[&str], config: &Path) -> Vec<String> {
    let mut args = vec!["join".to_string(), "phase".to_string()];
    args.extend(names.iter().map(|n| n.to_string()));
    args.push("--config".into());
    args.push(config.display().to_string());
    args.extend(kubeadm::extra_flags(reg, names.first().copied()));
    args
}

/// Whether `join.skip_phases` skips the phase `names` runs (its name as kubeadm's
/// skipPhases writes it: "control-plane-join/etcd"); a skipped phase is said so.
fn skipped(s: &Settings, names: &[&str]) -> bool {
    let name = match names {
        [phase, "all"] | [phase] => phase.to_string(),
        [phase, sub, ..] => format!("{phase}/{sub}"),
        [] => return false,
    };
    let skip = s.join.registration.skips(&name);
    if skip {
        step(&format!(
            "skipping kubeadm's {name} phase (join.skip_phases)"
        ));
    }
    skip
}

/// Runs the control-plane join.
pub async fn join(
    job: &ControlPlaneJoin<'_>,
    mut kubeadm: impl AsyncFnMut(Vec<String>) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let s = job.settings;
    let cp = s
        .join
        .control_plane
        .as_ref()
        .ok_or_else(|| Failure::Local {
            detail: "control-plane join requested without [join] control_plane = true".into(),
        })?;
    let version = kubeadm::query_version(&s.kubeadm_path).await?;
    let plan = PhasePlan::for_version(version);
    let address = checks::advertise_address(cp.advertise_address, &s.join.api_server.host)
        .ok_or_else(|| Failure::HostNotReady {
            check: checks::CHECK.into(),
            reason:
                "cannot tell which address this control plane will advertise (no default route)"
                    .into(),
            fix: "set [join] advertise_address".into(),
        })?;
    let own = Own {
        peer_url: members::peer_url(address),
        client_url: members::client_url(address),
    };
    let config = job.config_path;

    step("kubeadm preflight (control-plane checks included)");
    if !skipped(s, &["preflight"]) {
        kubeadm(phase_args(&s.join.registration, &["preflight"], config)).await?;
    }
    step(
        "kubeadm control-plane-prepare: certificates (downloaded with the certificate key), kubeconfigs, static pod manifests",
    );
    if !skipped(s, &["control-plane-prepare", "all"]) {
        kubeadm(phase_args(
            &s.join.registration,
            &["control-plane-prepare", "all"],
            config,
        ))
        .await?;
    }

    let client = Client::from_files(&TlsFiles::kubeadm(job.paths)).map_err(|e| Failure::Local {
        detail: format!("the etcd client certificate kubeadm's control-plane-prepare should have written is not usable: {e}"),
    })?;
    let endpoints = check_etcd(s, &client, &own).await?;

    step("kubeadm kubelet-start (the agent starts kubelet when its files are valid)");
    if !skipped(s, &["kubelet-start"]) {
        kubeadm(phase_args(&s.join.registration, &["kubelet-start"], config)).await?;
    }

    step(&format!(
        "kubeadm control-plane-join etcd: adding this node ({}) as an etcd learner, then promoting it",
        own.peer_url
    ));
    if !skipped(s, &["control-plane-join", "etcd"]) {
        etcd_phase(
            s,
            &client,
            &endpoints,
            &own,
            plan,
            job.paths,
            config,
            &mut kubeadm,
        )
        .await?;
    }

    if plan.update_status {
        step("kubeadm control-plane-join update-status");
        if !skipped(s, &["control-plane-join", "update-status"]) {
            kubeadm(phase_args(
                &s.join.registration,
                &["control-plane-join", "update-status"],
                config,
            ))
            .await?;
        }
    }
    step("kubeadm control-plane-join mark-control-plane: control-plane label and taint");
    if !skipped(s, &["control-plane-join", "mark-control-plane"]) {
        kubeadm(phase_args(
            &s.join.registration,
            &["control-plane-join", "mark-control-plane"],
            config,
        ))
        .await?;
    }
    if plan.wait_control_plane {
        step("kubeadm wait-control-plane");
        if !skipped(s, &["wait-control-plane"]) {
            kubeadm(phase_args(
                &s.join.registration,
                &["wait-control-plane"],
                config,
            ))
            .await?;
        }
    }
    step(&format!(
        "done; etcd member {} is a voting member",
        own.peer_url
    ));
    Ok(())
}

/// The agent's etcd checks between control-plane-prepare and kubelet-start. Returns
/// the endpoints to use from here on.
#[cfg(test)]
mod tests {
    use super::promotion::says;
    use super::*;
    use crate::etcd::client as etcd_client;

    fn v(s: &str) -> KubeadmVersion {
        KubeadmVersion::parse(s).unwrap()
    }

    #[test]
    fn phases_follow_the_kubeadm_release() {
        let p = PhasePlan::for_version(v("v1.29.7"));
        assert!(!p.update_status && !p.wait_control_plane && !p.idempotent_learner_add);
        assert!(PhasePlan::for_version(v("v1.29.10")).idempotent_learner_add);
        assert!(!PhasePlan::for_version(v("v1.30.5")).idempotent_learner_add);
        assert!(PhasePlan::for_version(v("v1.28.15")).idempotent_learner_add);
        let p = PhasePlan::for_version(v("v1.31.2"));
        assert!(p.wait_control_plane && p.idempotent_learner_add && !p.update_status);
        assert!(PhasePlan::for_version(v("v1.21.14")).update_status);
        assert!(PhasePlan::for_version(v("v1.33.0")).idempotent_learner_add);
    }

    #[test]
    fn phase_arguments_are_kubeadms() {
        assert_eq!(
            phase_args(
                &Registration::default(),
                &["control-plane-join", "etcd"],
                Path::new("/run/kube-join-agent/join-config.yaml")
            ),
            [
                "join",
                "phase",
                "control-plane-join",
                "etcd",
                "--config",
                "/run/kube-join-agent/join-config.yaml"
            ]
        );
    }

    #[test]
    fn refusals_are_recognized_in_classified_failures() {
        let f = Failure::KubeadmFailed {
            code: 1,
            detail: "error execution phase control-plane-join/etcd: error creating local etcd static pod manifest file: etcdserver: can only promote a learner member which is in sync with leader".into(),
        };
        assert!(says(&f, etcd_client::LEARNER_NOT_READY));
        assert!(!says(&f, etcd_client::TOO_MANY_LEARNERS));
    }
}
