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

use crate::config::{Registration, Settings};
use crate::etcd::checks::{self, EtcdFinding};
use crate::etcd::progress::{Progress, Seen, Tracker};
use crate::etcd::{Client, EtcdError, TlsFiles, client as etcd_client, learner, members};
use crate::failure::Failure;
use crate::kubeadm::{self, KubeadmVersion};
use crate::paths::Paths;
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

/// What the agent hands to the control-plane join.
pub struct ControlPlaneJoin<'a> {
    /// File-system root.
    pub paths: &'a Paths,
    /// Validated settings; `settings.join.control_plane` is set.
    pub settings: &'a Settings,
    /// The JoinConfiguration, mode 0600.
    pub config_path: &'a Path,
}

/// How often the learner is looked at while it catches up.
const WATCH_EVERY: Duration = Duration::from_secs(2);
/// Log an unchanged learner state at most this often.
const REPEAT_LOG: Duration = Duration::from_secs(15);
/// kubeadm waits this long for the cluster to be available after a promotion
/// (etcdHealthyCheckRetries × etcdHealthyCheckInterval, phases/etcd/local.go).
const AVAILABLE_AFTER_PROMOTION: Duration = Duration::from_secs(40);

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

/// Where the etcd phase stands after kubeadm refused or the agent stepped in.
enum AfterRefusal {
    /// Run `control-plane-join etcd` again: kubeadm will find the member and promote.
    RunPhaseAgain,
    /// The member is a voter now; the phase's remaining work is checked by the agent.
    Promoted,
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
async fn check_etcd(s: &Settings, client: &Client, own: &Own) -> Result<Vec<String>, Failure> {
    step(&format!(
        "checking etcd at {} (waiting up to {} for a leader)",
        s.etcd.endpoints.join(", "),
        humantime::format_duration(s.etcd.healthy_timeout)
    ));
    let inspection =
        checks::wait_for_leader(client, &s.etcd.endpoints, s.etcd.healthy_timeout, |why| {
            info!(
                phase = "join",
                check = checks::CHECK,
                "waiting for etcd: {why}"
            )
        })
        .await?;
    info!(
        phase = "join",
        check = checks::CHECK,
        "[pass] etcd: {}",
        inspection.health.describe(&inspection.members)
    );
    let endpoints = inspection.endpoints(&s.etcd.endpoints);
    checks::log(&checks::name_finding(&s.join.node_name).await);

    let findings =
        checks::membership_findings(&inspection, &own.peer_url, s.etcd.remove_stale_learners).await;
    findings.iter().for_each(checks::log);
    // Stale learners first: they block this join whatever else is wrong, and their
    // closed peer ports are not the peers' fault.
    for f in &findings {
        match f {
            EtcdFinding::StaleLearners {
                learners,
                removable: true,
                ..
            } => {
                for m in learners {
                    warn!(
                        phase = "join",
                        check = checks::CHECK,
                        "removing stale etcd learner {} ([etcd] remove_stale_learners = true)",
                        m.describe()
                    );
                    learner::remove(client, &endpoints, m).await.map_err(|e| {
                        Failure::EtcdUnhealthy {
                            detail: format!("removing stale learner {}: {e}", m.describe()),
                        }
                    })?;
                    info!(
                        phase = "join",
                        check = checks::CHECK,
                        "removed {}",
                        m.describe()
                    );
                }
            }
            EtcdFinding::StaleLearners { .. } => {
                if let Some(failure) = f.failure() {
                    return Err(failure);
                }
            }
            EtcdFinding::OwnMember { member } => {
                remove_own_leftover(client, &endpoints, member).await?
            }
            _ => {}
        }
    }
    if let Some(failure) = findings.iter().find_map(EtcdFinding::failure) {
        return Err(failure);
    }
    Ok(endpoints)
}

/// A member with this node's peer URL before kubeadm adds it: an earlier attempt's.
/// kubeadm's reset (before this attempt) wiped the data it belonged to, so it can
/// never start again; remove it unless it answers (then its etcd runs here and
/// kubeadm's preflight has a say).
async fn remove_own_leftover(
    client: &Client,
    endpoints: &[String],
    member: &members::Member,
) -> Result<(), Failure> {
    if !member.is_learner {
        for url in &member.client_urls {
            if client.status(url).await.is_ok() {
                warn!(
                    phase = "join",
                    check = checks::CHECK,
                    "this node's peer URL belongs to voting member {}, which answers at {url}; leaving it to kubeadm",
                    member.describe()
                );
                return Ok(());
            }
        }
    }
    warn!(
        phase = "join",
        check = checks::CHECK,
        "removing {} left by an earlier join attempt of this node, so kubeadm can add it afresh",
        member.describe()
    );
    learner::remove(client, endpoints, member)
        .await
        .map_err(|e| Failure::EtcdUnhealthy {
            detail: format!(
                "removing this node's leftover member {}: {e}",
                member.describe()
            ),
        })
}

fn says(f: &Failure, what: &str) -> bool {
    f.to_string().contains(what)
}

/// `control-plane-join etcd`, with the learner watched through etcd's refusals.
#[allow(clippy::too_many_arguments)]
async fn etcd_phase(
    s: &Settings,
    client: &Client,
    endpoints: &[String],
    own: &Own,
    plan: PhasePlan,
    paths: &Paths,
    config: &Path,
    kubeadm: &mut impl AsyncFnMut(Vec<String>) -> Result<(), Failure>,
) -> Result<(), Failure> {
    // One deadline for the whole wait, from etcd's first refusal: re-runs of the phase
    // do not extend it.
    let mut sync_deadline: Option<Instant> = None;
    let mut runs = 0u32;
    loop {
        runs += 1;
        let failure = match kubeadm(phase_args(
            &s.join.registration,
            &["control-plane-join", "etcd"],
            config,
        ))
        .await
        {
            Ok(()) => return Ok(()),
            Err(f) => f,
        };
        if says(&failure, etcd_client::LEARNER_NOT_READY) {
            let deadline =
                *sync_deadline.get_or_insert_with(|| Instant::now() + s.etcd.learner_sync_timeout);
            warn!(
                phase = "join",
                check = checks::CHECK,
                "etcd refused to promote this node's learner (not in sync with the leader yet; run {runs}); watching it for up to {}s more",
                deadline.saturating_duration_since(Instant::now()).as_secs()
            );
            match watch_learner(s, client, endpoints, own, plan, deadline).await? {
                AfterRefusal::RunPhaseAgain => continue,
                AfterRefusal::Promoted => {
                    return finish_after_promotion(client, endpoints, own, paths).await;
                }
            }
        }
        if says(&failure, etcd_client::TOO_MANY_LEARNERS) {
            // Another learner appeared after the agent's check. One that never started
            // stops the join when it may not be removed; when it may, the retry's check
            // removes it. A running one belongs to a control plane joining at the same
            // time, and the normal retry waits for it to be promoted.
            if let Ok(inspection) = checks::inspect(client, endpoints).await {
                for f in checks::membership_findings(&inspection, &own.peer_url, false).await {
                    if let EtcdFinding::StaleLearners { .. } = f {
                        checks::log(&f);
                        if !s.etcd.remove_stale_learners
                            && let Some(stale) = f.failure()
                        {
                            return Err(stale);
                        }
                    }
                }
            }
        }
        // Any other failure: take this node's learner out again, so the next attempt
        // (after kubeadm reset) is not blocked by it.
        cleanup_own(client, endpoints, own).await;
        return Err(failure);
    }
}

/// Watches this node's learner until it can be promoted, or `deadline`.
async fn watch_learner(
    s: &Settings,
    client: &Client,
    endpoints: &[String],
    own: &Own,
    plan: PhasePlan,
    deadline: Instant,
) -> Result<AfterRefusal, Failure> {
    let started = Instant::now();
    let mut tracker = Tracker::new(started);
    let mut last_line = String::new();
    let mut last_logged = started;
    loop {
        let now = Instant::now();
        let seen = match learner::look(client, endpoints, &own.peer_url, &own.client_url).await {
            Ok((seen, _)) => seen,
            Err(e) => Seen::Silent(e.to_string()),
        };
        let progress = tracker.observe(seen, now);
        let line = progress.describe();
        if line != last_line || now.duration_since(last_logged) >= REPEAT_LOG {
            info!(
                phase = "join",
                check = checks::CHECK,
                "etcd learner {}: {line}",
                own.peer_url
            );
            last_line = line.clone();
            last_logged = now;
        }
        match &progress {
            Progress::Promoted => return Ok(AfterRefusal::Promoted),
            Progress::Gone => {
                return Err(Failure::EtcdLearnerNotInSync {
                    detail: format!(
                        "this node's learner {} disappeared from the member list while it caught up (removed by someone else?)",
                        own.peer_url
                    ),
                });
            }
            Progress::InSync { .. } if plan.idempotent_learner_add => {
                return Ok(AfterRefusal::RunPhaseAgain);
            }
            Progress::InSync { .. } => match promote(client, endpoints, own).await {
                Ok(()) => return Ok(AfterRefusal::Promoted),
                Err(e) if e.is_learner_not_ready() => {}
                Err(e) => warn!(
                    phase = "join",
                    check = checks::CHECK,
                    "promoting the learner: {e}"
                ),
            },
            _ => {}
        }
        if Instant::now() + WATCH_EVERY > deadline {
            cleanup_own(client, endpoints, own).await;
            return Err(Failure::EtcdLearnerNotInSync {
                detail: format!(
                    "{} was not promoted within {} ([etcd] learner_sync_timeout); last seen: {line}",
                    own.peer_url,
                    humantime::format_duration(s.etcd.learner_sync_timeout)
                ),
            });
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

/// `MemberPromote` of this node's learner: what kubeadm's own retry would do, for
/// kubeadm releases whose phase cannot be re-run over an existing member.
async fn promote(client: &Client, endpoints: &[String], own: &Own) -> Result<(), EtcdError> {
    let (_, list) = client
        .first(endpoints, async |c, ep| c.member_list(ep).await)
        .await?;
    let Some(m) = members::own_member(&list, &own.peer_url) else {
        return Ok(());
    };
    if !m.is_learner {
        return Ok(());
    }
    client
        .first(endpoints, async |c, ep| c.member_promote(ep, m.id).await)
        .await?;
    info!(
        phase = "join",
        check = checks::CHECK,
        "promoted this node's learner {} to a voting member",
        m.describe()
    );
    Ok(())
}

/// After the agent promoted the learner, what kubeadm's phase would still have done:
/// the etcd static pod manifest is on disk (written before the promotion), and the
/// cluster, this member included, answers.
async fn finish_after_promotion(
    client: &Client,
    endpoints: &[String],
    own: &Own,
    paths: &Paths,
) -> Result<(), Failure> {
    let manifest = paths.kubernetes_dir().join("manifests/etcd.yaml");
    if !manifest.exists() {
        return Err(Failure::KubeadmFailed {
            code: 1,
            detail: format!(
                "etcd member {} was promoted but kubeadm left no {}",
                own.peer_url,
                manifest.display()
            ),
        });
    }
    let mut urls = vec![own.client_url.clone()];
    urls.extend(endpoints.iter().cloned());
    let inspection = checks::wait_for_leader(client, &urls, AVAILABLE_AFTER_PROMOTION, |why| {
        info!(
            phase = "join",
            check = checks::CHECK,
            "waiting for the new etcd member: {why}"
        )
    })
    .await?;
    let answered = inspection
        .health
        .answers
        .iter()
        .any(|a| a.endpoint == own.client_url && !a.is_learner);
    info!(
        phase = "join",
        check = checks::CHECK,
        "[pass] etcd: {}{}",
        inspection.health.describe(&inspection.members),
        if answered {
            "; this node's member answers"
        } else {
            ""
        }
    );
    Ok(())
}

/// Removes this node's learner (not a voter: that would cost the cluster a vote) after
/// a failed etcd phase. Failures are logged: the next attempt's checks retry it.
async fn cleanup_own(client: &Client, endpoints: &[String], own: &Own) {
    let listed = client
        .first(endpoints, async |c, ep| c.member_list(ep).await)
        .await;
    let Ok((_, list)) = listed else {
        return;
    };
    let Some(m) = members::own_member(&list, &own.peer_url) else {
        return;
    };
    if !m.is_learner {
        return;
    }
    match learner::remove(client, endpoints, m).await {
        Ok(()) => info!(
            phase = "join",
            check = checks::CHECK,
            "removed this node's learner {} so the next attempt starts clean",
            m.describe()
        ),
        Err(e) => warn!(
            phase = "join",
            check = checks::CHECK,
            "could not remove this node's learner {}: {e}; the next attempt removes it",
            m.describe()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
