//! Before kubelet-start: etcd's leader, stale learners, this node's own leftover member,
//! the peers' ports.

use super::{Own, step};
use crate::config::Settings;
use crate::etcd::checks::{self, EtcdFinding};
use crate::etcd::{Client, learner, members};
use crate::failure::Failure;
use tracing::{info, warn};

pub(super) async fn check_etcd(
    s: &Settings,
    client: &Client,
    own: &Own,
) -> Result<Vec<String>, Failure> {
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
