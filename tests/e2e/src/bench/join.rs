//! The join stage: one fresh node per run and column, one at a time.
//!
//! With an agent (enabled at boot, as packaged), from this boot's journal and the fake
//! kubeadm's event log:
//! - handoff: kubeadm's `wrote` of the last of the three kubelet files (in its
//!   successful join) → the first journal entry for kubelet.service with
//!   JOB_RESULT=done and JOB_TYPE start or restart after it;
//! - kubelet-starts: such entries this boot (kubelet is gated from boot on);
//! - gate: systemd's "Starting kube-join-agent.service" → "Started" (written when
//!   READY=1 arrives); kubelet is not running then (ordered after the agent);
//! - join: the same "Starting" → the agent's `phase serve:` line;
//! - rss: VmHWM of the agent's main process once it serves;
//! - the gate's reference: `systemctl daemon-reload` timed inside the same node, five
//!   times once joined; the median is one sample.
//!
//! Without an agent (the fakes only, kubelet enabled and crash-looping as packaged), once
//! boot is done, `kubeadm join` runs by hand in a transient unit with the
//! JoinConfiguration the agent would write:
//! - handoff: as above, to the start job its own daemon-reload + restart ran;
//! - kubelet-starts: start jobs done between its first kubelet file and its exit;
//! - join: its `start` → `exit 0` events.

use super::logs::{self, MESSAGE_UNIT_STARTED, MESSAGE_UNIT_STARTING, ms};
use super::nodes::{BenchNode, Subject};
use super::{Bench, Column, Outcome};
use anyhow::{Context, Result, anyhow};
use kja_e2e::install::AGENT_UNIT;
use kja_e2e::scenario::{phase_lines, timestamp, wait_joined};
use serde_json::json;
use std::time::Duration;

const KUBELET: &str = "kubelet.service";
const AGENT_MEASURES: [&str; 6] = [
    "handoff",
    "kubelet-starts",
    "gate",
    "join",
    "join-before-kubeadm",
    "rss",
];
const REFERENCE_MEASURES: [&str; 3] = ["handoff", "kubelet-starts", "join"];

pub fn wanted(b: &Bench) -> bool {
    b.wants_any(&AGENT_MEASURES)
}

pub fn run(b: &Bench) {
    let mut columns: Vec<(Column, Subject)> = b.agents.clone();
    if b.wants_any(&REFERENCE_MEASURES) {
        columns.push((Column::Reference, Subject::NoAgent));
    }
    for run in 0..b.opts.runs {
        for (column, subject) in Bench::rotated(&columns, run) {
            let label = format!("bench-join-{}{run}", column.short());
            let result = match &subject {
                Subject::Agent(_) => with_agent(b, &label, &subject, column, run),
                Subject::NoAgent => by_hand(b, &label, run),
            };
            if let Err(e) = result {
                eprintln!("bench: {label}: {e:#}");
                let measures: &[&str] = match subject {
                    Subject::Agent(_) => &AGENT_MEASURES,
                    Subject::NoAgent => &REFERENCE_MEASURES,
                };
                b.record_failure(measures, column, run, &e);
            }
        }
    }
}

fn with_agent(b: &Bench, label: &str, subject: &Subject, column: Column, run: usize) -> Result<()> {
    let n = BenchNode::prepare(label, subject, None, |i, _| i)?;
    let measured = (|| -> Result<()> {
        n.boot()?;
        wait_joined(&n.node, Duration::from_secs(120))?;
        let entries = n.node.journal_entries(None)?;
        let first = |id| {
            logs::unit_messages(&entries, AGENT_UNIT, id)
                .map(timestamp)
                .min()
                .ok_or_else(|| anyhow!("no {id} entry for {AGENT_UNIT} this boot"))
        };
        let agent_start = first(MESSAGE_UNIT_STARTING)?;
        let ready = first(MESSAGE_UNIT_STARTED)?;
        let serve = phase_lines(&n.node)?
            .into_iter()
            .find(|(p, _, _)| p == "serve")
            .map(|(_, _, t)| t)
            .ok_or_else(|| anyhow!("no `phase serve:` line"))?;
        let starts = logs::start_jobs_done(&entries, KUBELET);
        let runs = n.kubeadm_runs()?;
        let joined = runs
            .iter()
            .rev()
            .find(|r| r.is_join() && matches!(r.exit, Some((_, 0))))
            .ok_or_else(|| anyhow!("no successful kubeadm join in its event log"))?;
        let last_file = joined
            .last_kubelet_file()
            .ok_or_else(|| anyhow!("kubeadm's event log shows no kubelet file written"))?;
        let kubelet_started = starts
            .iter()
            .copied()
            .filter(|t| *t >= last_file)
            .min()
            .ok_or_else(|| anyhow!("no kubelet start job done after kubeadm's last file"))?;
        let kubeadm_restart = joined
            .events
            .iter()
            .find(|e| e.what.starts_with("systemctl restart"))
            .map(|e| e.what.clone());
        if let Some((exit, _)) = joined.exit {
            eprintln!(
                "bench: run {run} join [{}]: before kubeadm {:.0} ms, kubeadm {:.0} ms, after {:.0} ms",
                column.name(),
                ms(agent_start, joined.start),
                ms(joined.start, exit),
                ms(exit, serve)
            );
        }
        // Everything that can fail before anything is recorded: a run counts whole or not.
        let rss = n.peak_rss_kib(AGENT_UNIT)?;
        let reloads = if b.wants("gate") {
            Some(n.daemon_reload_us(5).context("timing daemon-reload")?)
        } else {
            None
        };
        b.record(
            "handoff",
            column,
            run,
            Outcome::Value(ms(last_file, kubelet_started)),
            json!({"last_kubelet_file_us": last_file, "kubelet_start_done_us": kubelet_started,
                   "kubeadm_restart": kubeadm_restart}),
        );
        b.record(
            "kubelet-starts",
            column,
            run,
            Outcome::Value(starts.len() as f64),
            json!({"start_jobs_done_us": starts}),
        );
        b.record(
            "gate",
            column,
            run,
            Outcome::Value(ms(agent_start, ready)),
            json!({"starting_us": agent_start, "started_us": ready}),
        );
        b.record(
            "join",
            column,
            run,
            Outcome::Value(ms(agent_start, serve)),
            // Where the time goes: before kubeadm, kubeadm itself, after it.
            json!({"starting_us": agent_start, "serve_us": serve,
                   "kubeadm_runs": runs.len(), "kubeadm_start_us": joined.start,
                   "kubeadm_exit_us": joined.exit.map(|(t, _)| t)}),
        );
        b.record(
            "join-before-kubeadm",
            column,
            run,
            Outcome::Value(ms(agent_start, joined.start)),
            json!({"starting_us": agent_start, "kubeadm_start_us": joined.start}),
        );
        b.record(
            "rss",
            column,
            run,
            Outcome::Value(rss as f64 / 1024.0),
            json!({"vmhwm_kib": rss}),
        );
        if let Some(reloads) = reloads {
            let mut sorted = reloads.clone();
            sorted.sort_by(f64::total_cmp);
            b.record(
                "gate",
                Column::Reference,
                run,
                Outcome::Value(sorted[sorted.len() / 2] / 1000.0),
                json!({"node": column.name(), "daemon_reload_us": reloads}),
            );
        }
        Ok(())
    })();
    if measured.is_err() {
        n.save_evidence();
    }
    measured
}

fn by_hand(b: &Bench, label: &str, run: usize) -> Result<()> {
    let n = BenchNode::prepare(label, &Subject::NoAgent, None, |i, _| i)?;
    let measured = (|| -> Result<()> {
        n.boot_running()?;
        let inv = n.join_by_hand()?;
        let entries = n.node.journal_entries(None)?;
        let last_file = inv
            .last_kubelet_file()
            .ok_or_else(|| anyhow!("kubeadm's event log shows no kubelet file written"))?;
        let first_file = inv
            .first("wrote ")
            .ok_or_else(|| anyhow!("no file written"))?;
        let (exit, _) = inv.exit.ok_or_else(|| anyhow!("kubeadm did not exit"))?;
        let starts = logs::start_jobs_done(&entries, KUBELET);
        let kubelet_started = starts
            .iter()
            .copied()
            .filter(|t| *t >= last_file)
            .min()
            .ok_or_else(|| anyhow!("no kubelet start job done after kubeadm's last file"))?;
        let during: Vec<u64> = starts
            .iter()
            .copied()
            .filter(|t| (first_file..=exit).contains(t))
            .collect();
        let restart = inv
            .events
            .iter()
            .find(|e| e.what.starts_with("systemctl restart"))
            .map(|e| (e.at, e.what.clone()));
        b.record(
            "handoff",
            Column::Reference,
            run,
            Outcome::Value(ms(last_file, kubelet_started)),
            json!({"last_kubelet_file_us": last_file, "kubelet_start_done_us": kubelet_started,
                   "kubeadm_restart": restart}),
        );
        b.record(
            "kubelet-starts",
            Column::Reference,
            run,
            Outcome::Value(during.len() as f64),
            json!({"start_jobs_done_us": during}),
        );
        b.record(
            "join",
            Column::Reference,
            run,
            Outcome::Value(ms(inv.start, exit)),
            json!({"kubeadm_start_us": inv.start, "kubeadm_exit_us": exit}),
        );
        Ok(())
    })();
    if measured.is_err() {
        n.save_evidence();
    }
    measured
}
