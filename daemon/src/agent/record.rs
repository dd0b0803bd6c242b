//! The join record, where the fleet already looks: once joined, with the kubelet's own
//! credentials (the Node authorizer and NodeRestriction let a node write its own Node
//! and Events), annotations on the Node (when it joined, how many attempts, how long,
//! agent and kubeadm versions, the failure classes it went through) and an Event for
//! each failed attempt (reason JoinAttemptFailed) and one for the join (Joined), so
//! `kubectl get events --field-selector involvedObject.kind=Node,involvedObject.name=N`
//! tells the node's story. Attempts that failed before the node had credentials wait in
//! the state file. A busy or restarting API server gets asked again (serve.rs keeps the
//! time); if it refuses (RBAC, an old server), the agent says so once and carries on:
//! the record is a courtesy, never a reason to fail a joined node.

use super::{Agent, Joined};
use crate::apiserver::{ApiClient, ApiError};
use crate::state::{AttemptRecord, State};
use serde_json::{Map, Value, json};
use std::time::Duration;
use tracing::{info, warn};

/// The annotations' prefix.
pub const ANNOTATION_PREFIX: &str = "kube-join-agent.io/";
/// Node Events live in the default namespace (as the kubelet's own do).
const EVENT_NAMESPACE: &str = "default";
/// Events keep messages short; the state file and the journal have the whole text.
const MAX_MESSAGE: usize = 1024;

/// Whether the record is as complete as it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Posted, or refused for good (said once).
    Done,
    /// The API server was busy or away: ask again later.
    Later,
}

/// The join record's first retry after a busy answer; doubled up to RECORD_MAX.
const RECORD_FIRST: Duration = Duration::from_secs(10);
const RECORD_MAX: Duration = Duration::from_secs(600);

/// When the join record is tried again: never once it is done; while the API server is
/// busy, after a jittered pause that doubles (a recovering server is not met by the
/// whole fleet at once).
#[derive(Debug, Default)]
pub struct RecordRetry {
    next: Option<std::time::Instant>,
    pause: Duration,
}

impl RecordRetry {
    /// After a try: done, or due again after the next pause.
    pub fn after(&mut self, recorded: Recorded) {
        match recorded {
            Recorded::Done => self.next = None,
            Recorded::Later => {
                self.pause = if self.pause.is_zero() {
                    RECORD_FIRST
                } else {
                    (self.pause * 2).min(RECORD_MAX)
                };
                let jittered = self.pause.mul_f64(0.5 + fastrand::f64());
                self.next = Some(std::time::Instant::now() + jittered);
            }
        }
    }

    /// Whether the next try is due.
    pub fn due(&self) -> bool {
        self.next.is_some_and(|t| std::time::Instant::now() >= t)
    }

    /// How long until the next try; `None` when none is to come.
    pub fn wait(&self) -> Option<Duration> {
        self.next
            .map(|t| t.saturating_duration_since(std::time::Instant::now()))
    }
}

impl Agent {
    /// Posts what is not posted yet: the failed attempts' Events, then the annotations
    /// and the Joined Event (once per join).
    pub(super) async fn record_join(&self, joined: &Joined) -> Recorded {
        let (pending, needs_join_record) = {
            let state = self.state.lock().expect("state lock");
            let pending: Vec<AttemptRecord> = state
                .history
                .iter()
                .filter(|a| a.failure.is_some() && !a.posted)
                .cloned()
                .collect();
            (pending, !state.join_recorded)
        };
        if pending.is_empty() && !needs_join_record {
            return Recorded::Done;
        }
        let s = &self.settings;
        let client = match ApiClient::with_client_cert(
            &joined.creds.server,
            &joined.ca,
            &joined.creds.cert_pem,
            &joined.creds.key_pem,
        ) {
            Ok(c) => c,
            Err(e) => {
                warn!("cannot record the join on the Node: {e}");
                return Recorded::Done;
            }
        };
        let node = &s.join.node_name;
        for attempt in &pending {
            if let Err(e) = post_attempt(&client, node, attempt).await {
                return not_posted(&e);
            }
            self.mark_posted(attempt);
        }
        if !needs_join_record {
            return Recorded::Done;
        }
        let summary = summary(&self.state.lock().expect("state lock"));
        if let Err(e) = post_join(&client, node, &summary).await {
            return not_posted(&e);
        }
        let mut state = self.state.lock().expect("state lock");
        state.join_recorded = true;
        if let Err(e) = state.save(&self.paths.state_file()) {
            warn!("cannot save state: {e}");
        }
        info!("join recorded on Node \"{node}\": {}", summary.message);
        Recorded::Done
    }

    fn mark_posted(&self, attempt: &AttemptRecord) {
        let mut state = self.state.lock().expect("state lock");
        if let Some(a) = state
            .history
            .iter_mut()
            .find(|a| a.attempt == attempt.attempt && a.started_at == attempt.started_at)
        {
            a.posted = true;
        }
        if let Err(e) = state.save(&self.paths.state_file()) {
            warn!("cannot save state: {e}");
        }
    }
}

/// What the join record says: the annotations, the Joined Event's message, and when
/// the node joined.
pub struct JoinSummary {
    /// `kube-join-agent.io/...` annotations.
    pub annotations: Map<String, Value>,
    /// The Joined Event's message.
    pub message: String,
    /// When the node joined (RFC 3339).
    pub joined_at: String,
}

/// The join record a state file tells.
pub fn summary(state: &State) -> JoinSummary {
    let joined_at = state
        .joined_since
        .clone()
        .unwrap_or_else(crate::state::now_rfc3339);
    let attempts = state.history.len().max(1);
    let mut classes: Vec<&str> = Vec::new();
    for class in state.history.iter().filter_map(|a| a.failure.as_deref()) {
        if !classes.contains(&class) {
            classes.push(class);
        }
    }
    let duration = state
        .join_duration_ms
        .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
        .unwrap_or_default();
    let kubeadm = state.kubeadm_version.clone().unwrap_or_default();
    let agent = env!("CARGO_PKG_VERSION");
    let mut a = Map::new();
    let mut put = |k: &str, v: String| {
        a.insert(format!("{ANNOTATION_PREFIX}{k}"), Value::String(v));
    };
    put("joined-at", joined_at.clone());
    put("attempts", attempts.to_string());
    put("join-duration", duration.clone());
    put("agent-version", agent.to_string());
    put("kubeadm-version", kubeadm.clone());
    put("failure-classes", classes.join(","));
    let through = if classes.is_empty() {
        String::new()
    } else {
        format!(", through {}", classes.join(", "))
    };
    let message = format!(
        "joined in {duration} after {attempts} attempt(s){through} (kube-join-agent {agent}, kubeadm {kubeadm})"
    );
    JoinSummary {
        annotations: a,
        message,
        joined_at,
    }
}

/// Posts the JoinAttemptFailed Event of one failed attempt.
pub async fn post_attempt(
    client: &ApiClient,
    node: &str,
    attempt: &AttemptRecord,
) -> Result<(), ApiError> {
    let message = format!(
        "attempt {} failed ({}): {}",
        attempt.attempt,
        attempt.failure.as_deref().unwrap_or("unknown"),
        attempt.message.as_deref().unwrap_or("")
    );
    let e = event(
        node,
        attempt_event_name(node, attempt),
        "JoinAttemptFailed",
        "Warning",
        &message,
        &attempt.started_at,
    );
    client.create_event(EVENT_NAMESPACE, &e).await
}

/// Annotates the Node and posts the Joined Event.
pub async fn post_join(
    client: &ApiClient,
    node: &str,
    summary: &JoinSummary,
) -> Result<(), ApiError> {
    client.annotate_node(node, &summary.annotations).await?;
    let name = format!(
        "{node}.kube-join-agent.joined.{}",
        short_hash(&summary.joined_at)
    );
    let joined = event(
        node,
        name,
        "Joined",
        "Normal",
        &summary.message,
        &summary.joined_at,
    );
    client.create_event(EVENT_NAMESPACE, &joined).await
}

/// A busy API server is asked again later; a refusal is said once: the record is a
/// courtesy, never a reason to fail a joined node.
pub fn not_posted(e: &ApiError) -> Recorded {
    if e.is_transient() {
        info!("the API server did not take the join record yet ({e}); trying again later");
        Recorded::Later
    } else {
        warn!(
            "the API server refused the join record ({e}); the node is joined, its story stays in the journal and `kube-join-agent diagnose`"
        );
        Recorded::Done
    }
}

/// An Event about the Node `node`.
fn event(node: &str, name: String, reason: &str, kind: &str, message: &str, at: &str) -> Value {
    let message: String = message.chars().take(MAX_MESSAGE).collect();
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": EVENT_NAMESPACE},
        // The kubelet names its Node's uid after the node, so `kubectl describe node`
        // and field selectors find these alongside its own.
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node, "uid": node},
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": "kube-join-agent", "host": node},
        "reportingComponent": "kube-join-agent",
        "reportingInstance": node,
        "firstTimestamp": at,
        "lastTimestamp": at,
        "count": 1
    })
}

/// A stable name per attempt: posting it again after a lost answer is a 409, not a
/// second Event.
fn attempt_event_name(node: &str, attempt: &AttemptRecord) -> String {
    format!(
        "{node}.kube-join-agent.attempt-{}.{}",
        attempt.attempt,
        short_hash(&attempt.started_at)
    )
}

fn short_hash(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    hex::encode(&digest.as_ref()[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_record_is_tried_again_later_and_less_often() {
        let mut r = RecordRetry::default();
        assert!(!r.due());
        assert_eq!(r.wait(), None);
        r.after(Recorded::Later);
        let first = r.wait().expect("a try to come");
        assert!(
            first >= RECORD_FIRST / 2 && first <= RECORD_FIRST * 3 / 2,
            "{first:?}"
        );
        r.after(Recorded::Later);
        assert_eq!(r.pause, RECORD_FIRST * 2);
        for _ in 0..20 {
            r.after(Recorded::Later);
        }
        assert_eq!(r.pause, RECORD_MAX);
        r.after(Recorded::Done);
        assert!(!r.due());
        assert_eq!(r.wait(), None);
    }

    #[test]
    fn events_are_about_the_node_and_named_stably() {
        let a = AttemptRecord {
            attempt: 2,
            started_at: "2026-12-01T10:00:00Z".into(),
            failure: Some("hang".into()),
            ..AttemptRecord::default()
        };
        let name = attempt_event_name("worker-1", &a);
        assert_eq!(name, attempt_event_name("worker-1", &a));
        assert!(
            name.starts_with("worker-1.kube-join-agent.attempt-2."),
            "{name}"
        );
        let e = event(
            "worker-1",
            name,
            "JoinAttemptFailed",
            "Warning",
            &"x".repeat(5000),
            "t",
        );
        assert_eq!(e["involvedObject"]["kind"], "Node");
        assert_eq!(e["involvedObject"]["name"], "worker-1");
        assert_eq!(e["message"].as_str().unwrap().len(), MAX_MESSAGE);
    }
}
