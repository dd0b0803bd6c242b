//! Does the cluster have a leader that a quorum of voting members agrees on?
//!
//! A control plane must not join a cluster without one: adding a learner needs a
//! leader, and a cluster that is still electing (the first control plane's etcd just
//! started, or half its members are down) refuses or times out in ways kubeadm reports
//! only as "context deadline exceeded".

use super::client::{Client, EtcdError, Status};
use super::members::{Member, MemberId};
use std::collections::BTreeMap;

/// What the members said about leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Voting members in the member list.
    pub voters: usize,
    /// Voters needed for a quorum.
    pub quorum: usize,
    /// The leader most answering voters name, if any names one.
    pub leader: Option<MemberId>,
    /// How many distinct voters name that leader.
    pub agreeing: usize,
    /// Answers, one per member that answered.
    pub answers: Vec<Status>,
    /// Client URLs that did not answer, with why.
    pub silent: Vec<(String, String)>,
}

impl Health {
    /// A leader agreed on by a quorum of voters.
    pub fn has_leader(&self) -> bool {
        self.leader.is_some() && self.voters > 0 && self.agreeing >= self.quorum
    }

    /// The leader's answer (its own Status), if it answered.
    pub fn leader_status(&self) -> Option<&Status> {
        let leader = self.leader?;
        self.answers.iter().find(|s| s.member == leader)
    }

    /// One line for the journal and for failures.
    pub fn describe(&self, members: &[Member]) -> String {
        let name = |id: MemberId| {
            members
                .iter()
                .find(|m| m.id == id)
                .map(Member::describe)
                .unwrap_or_else(|| format!("member {id}"))
        };
        let mut text = match self.leader {
            Some(l) if self.has_leader() => format!(
                "leader {} agreed by {} of {} voting members",
                name(l),
                self.agreeing,
                self.voters
            ),
            Some(l) => format!(
                "only {} of {} voting members name leader {} (a quorum needs {})",
                self.agreeing,
                self.voters,
                name(l),
                self.quorum
            ),
            None if self.answers.is_empty() => {
                format!("none of the {} voting members answered", self.voters)
            }
            None => format!(
                "no leader: {} of {} voting members answered and none knows a leader (an election is under way or a quorum is missing)",
                self.answers.iter().filter(|s| !s.is_learner).count(),
                self.voters
            ),
        };
        if !self.silent.is_empty() {
            text.push_str("; not answering: ");
            text.push_str(
                &self
                    .silent
                    .iter()
                    .map(|(url, why)| format!("{url} ({why})"))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
        text
    }
}

/// Judges leadership from the member list and the Status answers.
pub fn evaluate(members: &[Member], answers: Vec<Status>, silent: Vec<(String, String)>) -> Health {
    let voters: Vec<MemberId> = members
        .iter()
        .filter(|m| !m.is_learner)
        .map(|m| m.id)
        .collect();
    let quorum = voters.len() / 2 + 1;
    // One vote per voting member (several client URLs may reach the same member).
    let mut said: BTreeMap<MemberId, Option<MemberId>> = BTreeMap::new();
    for s in &answers {
        if voters.contains(&s.member) {
            said.entry(s.member).or_insert(s.leader);
        }
    }
    let mut tally: BTreeMap<MemberId, usize> = BTreeMap::new();
    for leader in said.values().flatten() {
        *tally.entry(*leader).or_default() += 1;
    }
    let best = tally.into_iter().max_by_key(|(_, n)| *n);
    Health {
        voters: voters.len(),
        quorum,
        leader: best.map(|(l, _)| l),
        agreeing: best.map(|(_, n)| n).unwrap_or(0),
        answers,
        silent,
    }
}

/// The client URLs worth asking: the configured ones first (they may be all there is
/// while members have not published their URLs), then every member's.
pub fn endpoints_to_ask(configured: &[String], members: &[Member]) -> Vec<String> {
    let mut urls: Vec<String> = configured.to_vec();
    for m in members {
        for u in &m.client_urls {
            let u = u.trim_end_matches('/').to_string();
            if !urls.contains(&u) {
                urls.push(u);
            }
        }
    }
    urls
}

/// Asks every endpoint for its Status, concurrently, and judges leadership.
pub async fn observe(client: &Client, configured: &[String], members: &[Member]) -> Health {
    let urls = endpoints_to_ask(configured, members);
    let results = futures_util::future::join_all(
        urls.iter()
            .map(|u| async move { (u, client.status(u).await) }),
    )
    .await;
    let mut answers: Vec<Status> = Vec::new();
    let mut silent = Vec::new();
    for (url, r) in results {
        match r {
            Ok(s) if answers.iter().any(|a| a.member == s.member) => {}
            Ok(s) => answers.push(s),
            Err(e) => silent.push((url.clone(), short(&e))),
        }
    }
    evaluate(members, answers, silent)
}

/// An error without the endpoint (already named next to it).
pub fn short(e: &EtcdError) -> String {
    match e {
        EtcdError::Connect { detail, .. } => detail.clone(),
        EtcdError::Rpc { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voter(id: u64) -> Member {
        Member {
            id: MemberId(id),
            name: format!("cp{id}"),
            peer_urls: vec![format!("https://10.0.0.{id}:2380")],
            client_urls: vec![format!("https://10.0.0.{id}:2379")],
            is_learner: false,
        }
    }

    fn status(member: u64, leader: u64) -> Status {
        Status {
            endpoint: format!("https://10.0.0.{member}:2379"),
            member: MemberId(member),
            leader: (leader != 0).then_some(MemberId(leader)),
            raft_term: 2,
            raft_index: 10,
            applied_index: 10,
            is_learner: false,
            errors: vec![],
            version: "3.4.23".into(),
        }
    }

    #[test]
    fn a_quorum_must_agree_on_the_leader() {
        let members = vec![voter(1), voter(2), voter(3)];
        let h = evaluate(&members, vec![status(1, 1), status(2, 1)], vec![]);
        assert!(h.has_leader());
        assert_eq!((h.quorum, h.agreeing), (2, 2));
        assert!(h.describe(&members).starts_with("leader cp1 (id 1"));

        // One member alone cannot make a quorum of three.
        let h = evaluate(
            &members,
            vec![status(1, 1)],
            vec![("https://10.0.0.2:2379".into(), "connection refused".into())],
        );
        assert!(!h.has_leader());
        assert!(h.describe(&members).contains("only 1 of 3"));
        assert!(
            h.describe(&members)
                .contains("https://10.0.0.2:2379 (connection refused)")
        );

        // Two members of two, no leader yet (the second just started).
        let two = vec![voter(1), voter(2)];
        let h = evaluate(&two, vec![status(1, 0)], vec![]);
        assert!(!h.has_leader());
        assert!(h.describe(&two).starts_with("no leader"));

        // Duplicate answers from one member count once; learners do not vote.
        let mut learner = voter(4);
        learner.is_learner = true;
        let members = vec![voter(1), voter(2), voter(3), learner];
        let mut dup = status(1, 1);
        dup.endpoint = "https://127.0.0.1:2379".into();
        let mut l = status(4, 1);
        l.is_learner = true;
        let h = evaluate(&members, vec![status(1, 1), dup, l], vec![]);
        assert_eq!(h.agreeing, 1);
        assert!(!h.has_leader());
    }

    #[test]
    fn configured_endpoints_come_first_without_duplicates() {
        let urls = endpoints_to_ask(&["https://10.0.0.1:2379".into()], &[voter(1), voter(2)]);
        assert_eq!(urls, vec!["https://10.0.0.1:2379", "https://10.0.0.2:2379"]);
    }
}
