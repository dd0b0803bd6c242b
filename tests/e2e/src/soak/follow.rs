//! The agent's journal as it is written: one `journalctl -f` per boot, inside the node,
//! read by a thread, so a fault can follow a phase line within milliseconds (a join
//! takes a second or two; polling journalctl would miss most moments).

use anyhow::Result;
use kja_e2e::Node;
use kja_e2e::install::AGENT_UNIT;
use kja_e2e::node::NODE_PATH;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// What kubeadm prints (the agent forwards it) when it starts waiting for the kubelet's
/// TLS bootstrap.
const TLS_BOOTSTRAP_WAIT: &str = "Waiting for the kubelet to perform the TLS Bootstrap";

/// One entry of the agent's unit (its own lines and systemd's about it).
#[derive(Debug, Clone)]
pub struct Event {
    /// Which boot of the node (1 for the first).
    pub boot: usize,
    /// `__REALTIME_TIMESTAMP`, µs since the epoch.
    pub at_us: u64,
    pub message: String,
    /// The phase, for a phase line (`phase <name>: ...` with `PHASE=<name>`).
    pub phase: Option<String>,
    /// `FAILURE=`.
    pub failure: Option<String>,
}

impl Event {
    /// The agent is waiting on something (a runtime, an API server, a new token), or
    /// backing off after a failed attempt.
    pub fn is_wait(&self) -> bool {
        self.message.contains("waiting: ")
            || self.failure.as_deref() == Some("token-invalid")
            || (self.is_failed_attempt() && self.message.contains("retrying in"))
    }

    /// A failed attempt (the line the failure policy writes), not a warning that carries
    /// a class.
    pub fn is_failed_attempt(&self) -> bool {
        self.failure.is_some()
            && (self.message.starts_with("attempt ")
                || self.failure.as_deref() == Some("config-invalid"))
    }
}

fn field(e: &Value, name: &str) -> Option<String> {
    match e.get(name)? {
        Value::String(s) => Some(s.clone()),
        // journalctl writes fields that are not UTF-8 as arrays of bytes.
        Value::Array(bytes) => Some(
            String::from_utf8_lossy(
                &bytes
                    .iter()
                    .filter_map(|b| b.as_u64().map(|b| b as u8))
                    .collect::<Vec<u8>>(),
            )
            .into_owned(),
        ),
        _ => None,
    }
}

/// Parses one line of `journalctl -o json`.
pub fn parse(line: &str, boot: usize) -> Option<Event> {
    let e: Value = serde_json::from_str(line).ok()?;
    let message = field(&e, "MESSAGE").unwrap_or_default();
    let at_us = field(&e, "__REALTIME_TIMESTAMP")?.parse().ok()?;
    let phase = message
        .strip_prefix("phase ")
        .and_then(|rest| rest.split_once(':'))
        .map(|(name, _)| name.to_string())
        .filter(|name| field(&e, "PHASE").as_deref() == Some(name.as_str()));
    Some(Event {
        boot,
        at_us,
        phase,
        failure: field(&e, "FAILURE"),
        message,
    })
}

/// The events of every boot so far, and the follower of the current one.
pub struct Follower {
    events: Arc<Mutex<Vec<Event>>>,
    child: Option<Child>,
    boot: usize,
}

impl Follower {
    pub fn new() -> Self {
        Follower {
            events: Arc::new(Mutex::new(Vec::new())),
            child: None,
            boot: 0,
        }
    }

    /// Starts following the node's current boot (call after each boot).
    pub fn follow(&mut self, node: &Node) -> Result<()> {
        self.stop();
        self.boot += 1;
        let leader = node
            .leader()
            .ok_or_else(|| anyhow::anyhow!("node {} is not booted", node.name()))?;
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(leader.to_string())
            .arg("-a")
            .arg("--")
            .args(["env", "-i", &format!("PATH={NODE_PATH}")])
            .args([
                "journalctl",
                "-f",
                "-b",
                "-n",
                "all",
                "-o",
                "json",
                "-u",
                AGENT_UNIT,
            ])
            .arg("--output-fields=MESSAGE,PHASE,FAILURE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = kja_e2e::cmd::spawn_tied(cmd, Signal::SIGKILL)?;
        let stdout = child.stdout.take().expect("piped stdout");
        let events = self.events.clone();
        let boot = self.boot;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(e) = parse(&line, boot) {
                    events.lock().unwrap().push(e);
                }
            }
        });
        self.child = Some(child);
        Ok(())
    }

    /// The current boot (1 for the first).
    pub fn boot(&self) -> usize {
        self.boot
    }

    /// Every event so far, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Where the join is in the current boot: its last phase line, and in the handoff,
    /// whether kubeadm is waiting for the kubelet's TLS bootstrap (the agent's
    /// tls-bootstrap phase only checks its result, after kubeadm exits).
    pub fn phase(&self) -> Option<String> {
        let events = self.events.lock().unwrap();
        let mut bootstrapping = false;
        for e in events.iter().rev().take_while(|e| e.boot == self.boot) {
            if let Some(phase) = &e.phase {
                return Some(if phase == "handoff" && bootstrapping {
                    "handoff (TLS bootstrap)".into()
                } else {
                    phase.clone()
                });
            }
            bootstrapping |= e.message.contains(TLS_BOOTSTRAP_WAIT);
        }
        None
    }

    /// Stops following (our own child, by its PID).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_lines_need_their_field() {
        let line = r#"{"__REALTIME_TIMESTAMP":"1700000000000000","MESSAGE":"phase join: running kubeadm join","PHASE":"join"}"#;
        let e = parse(line, 1).unwrap();
        assert_eq!(e.phase.as_deref(), Some("join"));
        let context =
            r#"{"__REALTIME_TIMESTAMP":"1","MESSAGE":"phase join: x","PHASE":"preflight"}"#;
        assert_eq!(parse(context, 1).unwrap().phase, None);
        let failed = r#"{"__REALTIME_TIMESTAMP":"2","MESSAGE":"attempt 1 failed: kubeadm ...","FAILURE":"hang","PHASE":"join"}"#;
        let e = parse(failed, 2).unwrap();
        assert!(e.is_failed_attempt() && !e.is_wait());
        let bytes = r#"{"__REALTIME_TIMESTAMP":"3","MESSAGE":[104,105]}"#;
        assert_eq!(parse(bytes, 1).unwrap().message, "hi");
    }
}
