//! The checks the agent runs between kubeadm's phases (and `kube-join-agent check`
//! runs on demand), each with a typed result that becomes a preflight finding or a
//! classified failure: a leader, stale learners, this node's own member, the peers'
//! port 2380, and this node's name.

use super::client::{self, Client, EtcdError};
use super::health::{self, Health};
use super::members::{self, EtcdctlTls, Member, MemberId};
use crate::failure::Failure;
use crate::preflight::{Finding, Verdict};
use std::net::IpAddr;
use std::time::Duration;
use tokio::time::Instant;
use tracing::info;

/// The check name in `kube-join-agent check` and `preflight.warn_only`.
pub const CHECK: &str = "etcd";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The member list as one endpoint returned it, and what the members say about
/// leadership.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The endpoint that answered the member list.
    pub endpoint: String,
    /// The members.
    pub members: Vec<Member>,
    /// Leadership.
    pub health: Health,
}

impl Inspection {
    /// The endpoints to use from now on: the configured ones, then the members'.
    pub fn endpoints(&self, configured: &[String]) -> Vec<String> {
        let mut eps = vec![self.endpoint.clone()];
        for e in health::endpoints_to_ask(configured, &self.members) {
            if !eps.contains(&e) {
                eps.push(e);
            }
        }
        eps
    }
}

/// Member list from the first endpoint that answers, then Status from every member.
pub async fn inspect(client: &Client, configured: &[String]) -> Result<Inspection, EtcdError> {
    let (endpoint, members) = client
        .first(configured, async |c, ep| c.member_list(ep).await)
        .await?;
    let health = health::observe(client, configured, &members).await;
    Ok(Inspection {
        endpoint,
        members,
        health,
    })
}

/// Waits, with backoff, until a quorum of voting members agrees on a leader, or
/// `timeout` passes (then: `EtcdUnhealthy` with what was last seen). `report` is
/// called with each new reason for waiting.
pub async fn wait_for_leader(
    client: &Client,
    configured: &[String],
    timeout: Duration,
    mut report: impl FnMut(&str),
) -> Result<Inspection, Failure> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(500);
    let mut last_reason = String::new();
    loop {
        let reason = match inspect(client, configured).await {
            Ok(i) if i.health.has_leader() => return Ok(i),
            Ok(i) => i.health.describe(&i.members),
            Err(e) => e.to_string(),
        };
        if reason != last_reason {
            report(&reason);
            last_reason = reason.clone();
        }
        if Instant::now() + pause > deadline {
            return Err(Failure::EtcdUnhealthy {
                detail: format!(
                    "after waiting {} ([etcd] healthy_timeout): {reason}",
                    humantime::format_duration(timeout)
                ),
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// A peer whose port 2380 does not accept connections from this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerProblem {
    /// The member.
    pub member: Member,
    /// The peer URL tried.
    pub url: String,
    /// What connecting said.
    pub detail: String,
}

impl PeerProblem {
    /// `https://10.0.0.13:2380 of cp3 (id …): connection refused`.
    pub fn describe(&self) -> String {
        format!(
            "{} of {}: {}",
            self.url,
            self.member.describe(),
            self.detail
        )
    }
}

/// TCP connects to every member's peer URL, except this node's own and `skip`
/// (learners being removed). A learner that syncs needs the leader's 2380 (and the
/// leader needs the learner's); a closed port here is the incident's "port 2380
/// blocked".
pub async fn unreachable_peers(
    members: &[Member],
    own_peer_url: &str,
    skip: &[MemberId],
) -> Vec<PeerProblem> {
    let targets: Vec<(&Member, &String)> = members
        .iter()
        .filter(|m| !m.has_peer_url(own_peer_url) && !skip.contains(&m.id))
        .flat_map(|m| m.peer_urls.iter().map(move |u| (m, u)))
        .collect();
    let tries = targets.iter().map(|(m, url)| async move {
        let detail = match members::host_port(url) {
            None => Some("not an https://host:port URL".to_string()),
            Some((host, port)) => {
                match tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    tokio::net::TcpStream::connect((host.as_str(), port)),
                )
                .await
                {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some(format!(
                        "no answer within {}s (filtered?)",
                        CONNECT_TIMEOUT.as_secs()
                    )),
                }
            }
        };
        detail.map(|detail| PeerProblem {
            member: (*m).clone(),
            url: (*url).clone(),
            detail,
        })
    });
    futures_util::future::join_all(tries)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// getaddrinfo on this node's name, as the other members' tools and logs will use it.
pub async fn resolve(name: &str) -> Result<IpAddr, String> {
    match tokio::net::lookup_host((name, 0)).await {
        Ok(mut addrs) => addrs
            .next()
            .map(|a| a.ip())
            .ok_or_else(|| "no address".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The address kubeadm will advertise for this control plane: the configured one, else
/// the source address of the default route (what kubeadm's `ChooseHostInterface`
/// picks on a typical host), else the one used to reach the API server.
pub fn advertise_address(configured: Option<IpAddr>, api_server_host: &str) -> Option<IpAddr> {
    if configured.is_some() {
        return configured;
    }
    // connect() on UDP sends nothing: it only asks the kernel which source address
    // the route to the target uses.
    let via = |target: (&str, u16)| {
        let sock = std::net::UdpSocket::bind(("0.0.0.0", 0)).ok()?;
        sock.connect(target).ok()?;
        sock.local_addr().ok().map(|a| a.ip())
    };
    via(("192.0.2.1", 9)).or_else(|| via((api_server_host, 6443)))
}

/// One check's typed result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtcdFinding {
    /// kubeadm has not written the etcd client certificates yet.
    NoCertificates {
        /// The first missing file.
        missing: String,
    },
    /// No endpoint answered the member list.
    NoAnswer {
        /// Why.
        detail: String,
    },
    /// A leader agreed by a quorum.
    Leader {
        /// Who, and how many agree.
        detail: String,
    },
    /// No leader (yet).
    NoLeader {
        /// What was seen.
        detail: String,
    },
    /// Learners that never started block this join.
    StaleLearners {
        /// The learners.
        learners: Vec<Member>,
        /// The endpoint to give etcdctl.
        endpoint: String,
        /// Whether the agent may remove them (`[etcd] remove_stale_learners`).
        removable: bool,
    },
    /// No stale learners.
    NoStaleLearners,
    /// A member with this node's peer URL exists already (an earlier attempt's).
    OwnMember {
        /// It.
        member: Member,
    },
    /// Every peer port accepted a connection.
    PeersReachable {
        /// How many peer URLs were tried.
        count: usize,
    },
    /// Some peer ports did not.
    PeersUnreachable {
        /// Which, and why.
        problems: Vec<PeerProblem>,
    },
    /// This node's name resolves.
    NameResolves {
        /// The name.
        name: String,
        /// To what.
        address: IpAddr,
    },
    /// It does not.
    NameUnresolved {
        /// The name.
        name: String,
        /// getaddrinfo's answer.
        detail: String,
    },
    /// The advertise address could not be determined.
    NoAddress,
}

/// The etcdctl TLS flags for this node (node paths, as the operator types them).
pub fn etcdctl_tls() -> EtcdctlTls {
    EtcdctlTls {
        ca: client::CA_CERT.into(),
        cert: client::CLIENT_CERT.into(),
        key: client::CLIENT_KEY.into(),
    }
}

/// The diagnosis for learners that block the join, with their removal commands.
pub fn stale_learner_detail(learners: &[Member], endpoint: &str) -> String {
    let each: Vec<String> = learners
        .iter()
        .map(|m| {
            format!(
                "{} never started (no name, no client URLs), a leftover of an earlier join that failed; remove it on this node with `{}`",
                m.describe(),
                members::removal_command(endpoint, &etcdctl_tls(), m)
            )
        })
        .collect();
    format!(
        "stale etcd learner blocks this control-plane join (etcd allows one learner at a time: \"too many learner members in cluster\"): {}; or set [etcd] remove_stale_learners = true to let the agent remove learners that never started",
        each.join("; ")
    )
}

impl EtcdFinding {
    /// The failure this finding means for a join, if any.
    pub fn failure(&self) -> Option<Failure> {
        match self {
            EtcdFinding::NoAnswer { detail } | EtcdFinding::NoLeader { detail } => {
                Some(Failure::EtcdUnhealthy {
                    detail: detail.clone(),
                })
            }
            EtcdFinding::StaleLearners {
                learners,
                endpoint,
                removable: false,
            } => Some(Failure::EtcdStaleLearner {
                detail: stale_learner_detail(learners, endpoint),
            }),
            EtcdFinding::PeersUnreachable { problems } => Some(Failure::EtcdPeerUnreachable {
                detail: problems
                    .iter()
                    .map(PeerProblem::describe)
                    .collect::<Vec<_>>()
                    .join("; "),
            }),
            _ => None,
        }
    }

    /// As a `kube-join-agent check` line.
    pub fn to_finding(&self) -> Finding {
        let verdict = match self {
            EtcdFinding::NoCertificates { missing } => Verdict::Pass(format!(
                "{missing} is not here yet (kubeadm's control-plane-prepare phase writes it during the join); member checks run then"
            )),
            EtcdFinding::NoAnswer { detail } => Verdict::Wait(detail.clone()),
            EtcdFinding::Leader { detail } => Verdict::Pass(detail.clone()),
            EtcdFinding::NoLeader { detail } => Verdict::Wait(detail.clone()),
            EtcdFinding::StaleLearners {
                learners,
                endpoint,
                removable: true,
            } => Verdict::Warn {
                reason: format!(
                    "{} stale learner(s) that never started: {}",
                    learners.len(),
                    learners.iter().map(Member::describe).collect::<Vec<_>>().join(", ")
                ),
                fix: format!(
                    "none needed: [etcd] remove_stale_learners = true, the agent removes them (as `{}` would)",
                    learners
                        .first()
                        .map(|m| members::removal_command(endpoint, &etcdctl_tls(), m))
                        .unwrap_or_default()
                ),
            },
            EtcdFinding::StaleLearners { learners, endpoint, .. } => Verdict::Fail {
                reason: stale_learner_detail(learners, endpoint),
                fix: learners
                    .iter()
                    .map(|m| members::removal_command(endpoint, &etcdctl_tls(), m))
                    .collect::<Vec<_>>()
                    .join(" && "),
            },
            EtcdFinding::NoStaleLearners => Verdict::Pass("no stale learners".into()),
            EtcdFinding::OwnMember { member } => Verdict::Warn {
                reason: format!(
                    "this node's peer URL is already a member: {} (left by an earlier attempt)",
                    member.describe()
                ),
                fix: "none needed: the agent removes it before kubeadm adds this node again".into(),
            },
            EtcdFinding::PeersReachable { count } => Verdict::Pass(format!(
                "all {count} peer URL(s) accept TCP connections from this node"
            )),
            EtcdFinding::PeersUnreachable { problems } => Verdict::Fail {
                reason: format!(
                    "peer port unreachable from this node: {}",
                    problems.iter().map(PeerProblem::describe).collect::<Vec<_>>().join("; ")
                ),
                fix: "open TCP 2380 between the control planes (firewall, security group); if that member is gone for good, remove it with etcdctl member remove".into(),
            },
            EtcdFinding::NameResolves { name, address } => {
                Verdict::Pass(format!("node name {name} resolves to {address}"))
            }
            EtcdFinding::NameUnresolved { name, detail } => Verdict::Warn {
                reason: format!("node name {name} does not resolve: {detail}"),
                fix: format!(
                    "add {name} to DNS or /etc/hosts; etcd's peers use addresses, but operators and tools use the member's name"
                ),
            },
            EtcdFinding::NoAddress => Verdict::Fail {
                reason: "cannot tell which address this control plane will advertise (no default route)".into(),
                fix: "set [join] advertise_address".into(),
            },
        };
        Finding {
            check: CHECK,
            verdict,
        }
    }
}

/// The node-name check as a finding.
pub async fn name_finding(name: &str) -> EtcdFinding {
    match resolve(name).await {
        Ok(address) => EtcdFinding::NameResolves {
            name: name.to_string(),
            address,
        },
        Err(detail) => EtcdFinding::NameUnresolved {
            name: name.to_string(),
            detail,
        },
    }
}

/// The checks of the member list: stale learners, own member, peers.
pub async fn membership_findings(
    inspection: &Inspection,
    own_peer_url: &str,
    remove_stale: bool,
) -> Vec<EtcdFinding> {
    let mut out = Vec::new();
    let stale: Vec<Member> = members::stale_learners(&inspection.members, own_peer_url)
        .into_iter()
        .cloned()
        .collect();
    let skip: Vec<MemberId> = stale.iter().map(|m| m.id).collect();
    out.push(if stale.is_empty() {
        EtcdFinding::NoStaleLearners
    } else {
        EtcdFinding::StaleLearners {
            learners: stale,
            endpoint: inspection.endpoint.clone(),
            removable: remove_stale,
        }
    });
    if let Some(own) = members::own_member(&inspection.members, own_peer_url) {
        out.push(EtcdFinding::OwnMember {
            member: own.clone(),
        });
    }
    let peers = inspection
        .members
        .iter()
        .filter(|m| !m.has_peer_url(own_peer_url) && !skip.contains(&m.id))
        .map(|m| m.peer_urls.len())
        .sum();
    let problems = unreachable_peers(&inspection.members, own_peer_url, &skip).await;
    out.push(if problems.is_empty() {
        EtcdFinding::PeersReachable { count: peers }
    } else {
        EtcdFinding::PeersUnreachable { problems }
    });
    out
}

/// Logs a finding as the join goes (pass lines at info, the rest at warn).
pub fn log(f: &EtcdFinding) {
    let line = f.to_finding().to_string();
    match f.to_finding().verdict {
        Verdict::Pass(_) => info!(phase = "join", check = CHECK, "{line}"),
        _ => tracing::warn!(phase = "join", check = CHECK, "{line}"),
    }
}

#[cfg(test)]
mod tests;
