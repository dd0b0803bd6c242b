//! `control-plane-join etcd`: the learner watched through etcd's refusals, promoted once
//! in sync, and removed when the phase fails otherwise.

use super::{Own, PhasePlan, phase_args};
use crate::config::Settings;
use crate::etcd::checks::{self, EtcdFinding};
use crate::etcd::progress::{Progress, Seen, Tracker};
use crate::etcd::{Client, EtcdError, client as etcd_client, learner, members};
use crate::failure::Failure;
use crate::paths::Paths;
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

/// How often the learner is looked at while it catches up.
const WATCH_EVERY: Duration = Duration::from_secs(2);
/// Log an unchanged learner state at most this often.
const REPEAT_LOG: Duration = Duration::from_secs(15);
/// kubeadm waits this long for the cluster to be available after a promotion
/// (etcdHealthyCheckRetries × etcdHealthyCheckInterval, phases/etcd/local.go).
const AVAILABLE_AFTER_PROMOTION: Duration = Duration::from_secs(40);

/// Where the etcd phase stands after kubeadm refused or the agent stepped in.
enum AfterRefusal {
    /// Run `control-plane-join etcd` again: kubeadm will find the member and promote.
    RunPhaseAgain,
    /// The member is a voter now; the phase's remaining work is checked by the agent.
    Promoted,
}

pub(super) fn says(f: &Failure, what: &str) -> bool {
    f.to_string().contains(what)
}

/// `control-plane-join etcd`, with the learner watched through etcd's refusals.
#[allow(clippy::too_many_arguments)]
pub(super) async fn etcd_phase(
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
