//! Is this node's learner catching up, or stuck? etcd refuses to promote a learner
//! whose log lags the leader's ("can only promote a learner member which is in sync
//! with leader"); the same words cover a learner that is merely behind and one that
//! will never catch up (its etcd is not running, or port 2380 is blocked). Comparing
//! its raft applied index with the leader's over time tells them apart.

use std::time::Duration;
use tokio::time::Instant;

/// etcd promotes a learner once its progress reaches 90 % of the leader's
/// (`readyPercent` in etcd's server/etcdserver/server.go).
const READY_PERCENT: u64 = 90;
/// No progress for this long while behind: stuck, not slow.
pub const STALL: Duration = Duration::from_secs(10);

/// What was seen of the learner at one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// No member has this node's peer URL.
    Gone,
    /// It is a voting member now.
    Promoted,
    /// A learner whose etcd never started (no name, no client URLs).
    NotStarted,
    /// Started, but its Status could not be read.
    Silent(String),
    /// Its applied index, and the leader's (`None`: the leader did not answer).
    Applied {
        /// The learner's raft applied index.
        learner: u64,
        /// The leader's raft applied index.
        leader: Option<u64>,
    },
}

/// The judgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// As seen.
    Gone,
    /// As seen.
    Promoted,
    /// Its etcd is not running: the static pod did not start (image, kubelet) or
    /// crashed; it cannot catch up until it runs.
    NotStarted,
    /// Running but not answering.
    Silent(String),
    /// Behind and moving.
    CatchingUp {
        /// Learner's applied index.
        learner: u64,
        /// Leader's applied index.
        leader: u64,
    },
    /// Behind and not moving for `for_secs`.
    Stuck {
        /// Learner's applied index.
        learner: u64,
        /// Leader's applied index.
        leader: u64,
        /// Seconds without progress.
        for_secs: u64,
    },
    /// Close enough for etcd to accept the promotion.
    InSync {
        /// Learner's applied index.
        learner: u64,
        /// Leader's applied index.
        leader: u64,
    },
}

impl Progress {
    /// Worth asking etcd to promote now.
    pub fn ready(&self) -> bool {
        matches!(self, Progress::InSync { .. })
    }

    /// For the journal and the final diagnosis.
    pub fn describe(&self) -> String {
        match self {
            Progress::Gone => "this node's learner is no longer in the member list".into(),
            Progress::Promoted => "this node's member has been promoted to a voting member".into(),
            Progress::NotStarted => "stuck: the learner's etcd has not started (no name and no client URLs in the member list); check the etcd static pod (`crictl ps -a --name etcd`, `journalctl -u kubelet`)".into(),
            Progress::Silent(why) => format!("the learner's etcd does not answer: {why}"),
            Progress::CatchingUp { learner, leader } => format!(
                "catching up: learner applied index {learner} of the leader's {leader}"
            ),
            Progress::Stuck { learner, leader, for_secs } => format!(
                "stuck: learner applied index {learner} of the leader's {leader}, no progress for {for_secs}s; check that TCP 2380 is open both ways between this node and the leader"
            ),
            Progress::InSync { learner, leader } => format!(
                "in sync: learner applied index {learner} of the leader's {leader}"
            ),
        }
    }
}

/// Remembers the learner's last applied index and when it last moved.
#[derive(Debug, Clone)]
pub struct Tracker {
    last: Option<u64>,
    moved_at: Instant,
}

impl Tracker {
    /// A tracker starting now.
    pub fn new(now: Instant) -> Self {
        Self {
            last: None,
            moved_at: now,
        }
    }

    /// Judges one look.
    pub fn observe(&mut self, seen: Seen, now: Instant) -> Progress {
        match seen {
            Seen::Gone => Progress::Gone,
            Seen::Promoted => Progress::Promoted,
            Seen::NotStarted => Progress::NotStarted,
            Seen::Silent(why) => Progress::Silent(why),
            Seen::Applied { learner, leader } => {
                if self.last.is_none_or(|l| learner > l) {
                    self.last = Some(learner);
                    self.moved_at = now;
                }
                let Some(leader) = leader else {
                    return Progress::CatchingUp { learner, leader: 0 };
                };
                if learner.saturating_mul(100) >= leader.saturating_mul(READY_PERCENT) {
                    return Progress::InSync { learner, leader };
                }
                let still = now.saturating_duration_since(self.moved_at);
                if still >= STALL {
                    Progress::Stuck {
                        learner,
                        leader,
                        for_secs: still.as_secs(),
                    }
                } else {
                    Progress::CatchingUp { learner, leader }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catching_up_then_stuck_then_in_sync() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0);
        let seen = |learner, leader| Seen::Applied {
            learner,
            leader: Some(leader),
        };
        assert_eq!(
            t.observe(seen(10, 1000), t0),
            Progress::CatchingUp {
                learner: 10,
                leader: 1000
            }
        );
        assert!(matches!(
            t.observe(seen(500, 1000), t0 + Duration::from_secs(5)),
            Progress::CatchingUp { .. }
        ));
        // No progress for 12 s.
        let p = t.observe(seen(500, 1000), t0 + Duration::from_secs(17));
        assert_eq!(
            p,
            Progress::Stuck {
                learner: 500,
                leader: 1000,
                for_secs: 12
            }
        );
        assert!(p.describe().contains("2380"));
        let p = t.observe(seen(950, 1000), t0 + Duration::from_secs(18));
        assert!(p.ready(), "{p:?}");
    }

    #[test]
    fn unstarted_and_gone_are_reported_as_such() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0);
        let p = t.observe(Seen::NotStarted, t0);
        assert!(!p.ready());
        assert!(
            p.describe()
                .starts_with("stuck: the learner's etcd has not started")
        );
        assert_eq!(t.observe(Seen::Promoted, t0), Progress::Promoted);
        assert_eq!(t.observe(Seen::Gone, t0), Progress::Gone);
    }
}
