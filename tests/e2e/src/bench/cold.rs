//! The cold control plane: a bootstrap token created the moment the join starts, whose
//! signature appears in cluster-info 2.5 s later (the fake API server's
//! `signed_after_secs`), as the controller manager's bootstrap signer adds it a moment
//! after `kubeadm token create`.
//!
//! Each node boots with nothing joining (agent not enabled at boot; kubelet enabled and
//! crash-looping, as packaged); once boot is done the token is created (knobs written,
//! then one request makes the server see it), and at once either the agent is started
//! (`systemctl start --no-block`) or `kubeadm join` runs by hand. Measured: the agent's
//! "Starting" entry → its `phase serve:` line, and kubeadm's `start` → `exit 0` events;
//! the JSON keeps how long after the token's creation each started.

use super::logs::{self, MESSAGE_UNIT_STARTING, ms, now_us};
use super::nodes::{BY_HAND_CONFIG, BenchNode, Subject, join_configuration};
use super::{Bench, Column, Outcome};
use anyhow::{Result, anyhow};
use kja_e2e::control_plane::default_knobs;
use kja_e2e::install::{AGENT_UNIT, Install};
use kja_e2e::scenario::{phase_lines, timestamp, wait_joined};
use serde_json::{Value, json};
use std::time::Duration;

const TOKEN_ID: &str = "coldtk";
const TOKEN: &str = "coldtk.0123456789abcdef";
/// When the bootstrap signer signs a new token (2-3 s after its creation).
pub const SIGNED_AFTER_SECS: f64 = 2.5;

pub fn wanted(b: &Bench) -> bool {
    b.wants("cold")
}

/// The knobs with the new token added.
fn knobs_with_new_token() -> Value {
    let mut tokens = default_knobs()["tokens"].clone();
    if let Some(list) = tokens.as_array_mut() {
        list.push(json!({"id": TOKEN_ID, "secret": "0123456789abcdef",
                         "signed_after_secs": SIGNED_AFTER_SECS}));
    }
    json!({ "tokens": tokens })
}

pub fn run(b: &Bench) {
    let mut columns = b.agents.clone();
    columns.push((Column::Reference, Subject::NoAgent));
    for run in 0..b.opts.runs {
        for (column, subject) in Bench::rotated(&columns, run) {
            let label = format!("bench-cold-{}{run}", column.short());
            if let Err(e) = one(b, &label, &subject, column, run) {
                eprintln!("bench: {label}: {e:#}");
                b.record_failure(&["cold"], column, run, &e);
            }
        }
    }
}

fn one(b: &Bench, label: &str, subject: &Subject, column: Column, run: usize) -> Result<()> {
    let node_name = kja_e2e::node_name(label);
    let n = BenchNode::prepare(label, subject, None, |i, pin| match subject {
        Subject::Agent(_) => Install {
            token: Some(format!("{TOKEN}\n")),
            ..i
        },
        Subject::NoAgent => i.file(
            BY_HAND_CONFIG,
            join_configuration(&node_name, pin, TOKEN),
            0o600,
        ),
    })?;
    let measured = (|| -> Result<()> {
        if matches!(subject, Subject::Agent(_)) {
            n.agent_not_at_boot()?;
        }
        n.boot_running()?;
        n.cp.set_knobs(knobs_with_new_token())?;
        n.poke_api_server()?;
        let created = now_us();
        let (start, end) = match subject {
            Subject::Agent(_) => {
                n.node
                    .exec_ok(&["systemctl", "start", "--no-block", AGENT_UNIT])?;
                wait_joined(&n.node, Duration::from_secs(120))?;
                let entries = n.node.journal_entries(None)?;
                let start = logs::unit_messages(&entries, AGENT_UNIT, MESSAGE_UNIT_STARTING)
                    .map(timestamp)
                    .min()
                    .ok_or_else(|| anyhow!("no \"Starting\" entry for {AGENT_UNIT}"))?;
                let serve = phase_lines(&n.node)?
                    .into_iter()
                    .find(|(p, _, _)| p == "serve")
                    .map(|(_, _, t)| t)
                    .ok_or_else(|| anyhow!("no `phase serve:` line"))?;
                (start, serve)
            }
            Subject::NoAgent => {
                let inv = n.join_by_hand()?;
                let (exit, _) = inv.exit.ok_or_else(|| anyhow!("kubeadm did not exit"))?;
                (inv.start, exit)
            }
        };
        b.record(
            "cold",
            column,
            run,
            Outcome::Value(ms(start, end)),
            json!({"token_created_us": created, "start_us": start, "joined_us": end,
                   "started_after_token_ms": ms(created, start),
                   "signed_after_secs": SIGNED_AFTER_SECS}),
        );
        Ok(())
    })();
    if measured.is_err() {
        n.save_evidence();
    }
    measured
}
