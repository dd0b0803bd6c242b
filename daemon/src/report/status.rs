//! `kube-join-agent status [--json]`: the phase, the attempt, how long in this phase,
//! the last failure, and since when the node is joined, from the state file.

use crate::state::State;
use serde::Serialize;
use std::time::SystemTime;

/// `kube-join-agent.status/v1`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Always `kube-join-agent.status/v1`.
    pub schema: &'static str,
    /// The Node name being joined.
    pub node_name: String,
    /// The phase last entered ("" before the agent ever ran).
    pub phase: String,
    /// When it was entered (RFC 3339), "" if unknown.
    pub phase_since: String,
    /// Seconds since then, if known.
    pub seconds_in_phase: Option<u64>,
    /// The attempt number (per boot and configuration).
    pub attempt: u32,
    /// Whether the node is joined.
    pub joined: bool,
    /// When it joined (RFC 3339).
    pub joined_since: Option<String>,
    /// From the agent's start to joined, in seconds.
    pub join_duration_seconds: Option<f64>,
    /// The last failure, while the node is not joined.
    pub last_failure: Option<LastFailure>,
    /// Once joined: what the agent sees wrong now (the kubelet's client certificate,
    /// the kubelet unit), each with its recovery; empty when all is well.
    pub problems: Vec<String>,
    /// When the state file was last written (RFC 3339).
    pub updated_at: String,
}

/// A failure class and its message.
#[derive(Debug, Serialize)]
pub struct LastFailure {
    /// `FAILURE=` class.
    pub class: String,
    /// Cause and fix.
    pub message: String,
}

/// The status the state file tells, at `now`.
pub fn from_state(state: &State, now: SystemTime) -> Status {
    let seconds_in_phase = humantime::parse_rfc3339(&state.phase_since)
        .ok()
        .and_then(|since| now.duration_since(since).ok())
        .map(|d| d.as_secs());
    Status {
        schema: "kube-join-agent.status/v1",
        node_name: state.node_name.clone(),
        phase: state.phase.clone(),
        phase_since: state.phase_since.clone(),
        seconds_in_phase,
        attempt: state.attempt,
        joined: state.joined,
        joined_since: state.joined_since.clone(),
        join_duration_seconds: state.join_duration_ms.map(|ms| ms as f64 / 1000.0),
        last_failure: state.failure.as_ref().map(|class| LastFailure {
            class: class.clone(),
            message: state.last_error.clone().unwrap_or_default(),
        }),
        problems: state.watch.clone(),
        updated_at: state.updated_at.clone(),
    }
}

/// The status as a terminal shows it.
pub fn text(s: &Status) -> String {
    if s.phase.is_empty() {
        return "no state yet: the agent has not run\n".into();
    }
    let mut out = format!("node:       {}\n", s.node_name);
    match (&s.joined_since, s.joined) {
        (Some(since), true) => out += &format!("joined:     yes, since {since}\n"),
        (_, true) => out += "joined:     yes\n",
        _ => out += "joined:     no\n",
    }
    if let Some(secs) = s.join_duration_seconds {
        out += &format!("join took:  {secs:.1}s\n");
    }
    let in_phase = s
        .seconds_in_phase
        .map(|n| {
            format!(
                " for {}",
                humantime::format_duration(std::time::Duration::from_secs(n))
            )
        })
        .unwrap_or_default();
    out += &format!("phase:      {}{in_phase}\n", s.phase);
    out += &format!("attempt:    {}\n", s.attempt);
    if let Some(f) = &s.last_failure {
        out += &format!("failure:    {}\nlast error: {}\n", f.class, f.message);
    }
    for p in &s.problems {
        out += &format!("problem:    {p}\n");
    }
    out += &format!("updated:    {}\n", s.updated_at);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn time_in_phase_and_the_last_failure() {
        let state = State {
            phase: "discovery".into(),
            phase_since: "2026-12-01T10:00:00Z".into(),
            attempt: 2,
            node_name: "n1".into(),
            failure: Some("api-server-unreachable".into()),
            last_error: Some("API server unreachable: ...".into()),
            ..State::default()
        };
        let now = humantime::parse_rfc3339("2026-12-01T10:01:30Z").unwrap();
        let s = from_state(&state, now);
        assert_eq!(s.seconds_in_phase, Some(90));
        let t = text(&s);
        assert!(t.contains("phase:      discovery for 1m 30s"), "{t}");
        assert!(t.contains("failure:    api-server-unreachable"), "{t}");
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["schema"], "kube-join-agent.status/v1");
        assert_eq!(v["last_failure"]["class"], "api-server-unreachable");
        assert_eq!(v["joined"], false);
        let _ = Duration::ZERO;
        assert_eq!(
            text(&from_state(&State::default(), now)),
            "no state yet: the agent has not run\n"
        );
    }
}
