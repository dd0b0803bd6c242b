//! Fix → kubeadm started again, from each phase where the agent waits for something an
//! operator (or time) fixes, and the failure latency.
//!
//! Each run boots a node whose agent gets into the waiting phase, waits until it is
//! there (seen from outside: the API server's request log, or the agent's `FAILURE=`
//! line), then writes the fix into the node and measures from the moment the write is
//! complete (rename done) to the fake kubeadm's next `join` in its invocation log (µs
//! timestamps); nothing within the cap is "> cap".
//!
//! | phase | how it gets there | in the wait once | fix |
//! | --- | --- | --- | --- |
//! | fix-grace | the configured token has no signature in cluster-info | 2 s after its first cluster-info request | token file with a token the server knows |
//! | fix-token | the same, `[timeouts] discovery = "10s"` | 2 s after `FAILURE=token-invalid` | the same |
//! | fix-backoff | fake kubeadm `FAIL_TIMES=1`, `[retry] initial_backoff = "60s"`, `max_backoff = "120s"` | 1 s after the `FAILURE=` line and every kubeadm exited | token file with another known token |
//! | fix-name | a Ready Node with this node's name (`ready_for_secs: 100000`) | 2 s after its first bootstrap-token GET of that Node | `config.d/60-name.toml` with another `node_name` |
//!
//! failure: in the fix-backoff runs, kubeadm's `exit 1` event → the first journal entry
//! of the agent's unit with a `FAILURE=` field after it.

use super::logs::{self, ms, now_us};
use super::nodes::{BenchNode, Subject};
use super::{Bench, Column, Outcome};
use anyhow::{Result, anyhow, bail};
use kja_e2e::control_plane::default_knobs;
use kja_e2e::install::{AGENT_UNIT, DEFAULT_TOKEN, Install, TOKEN_PATH};
use kja_e2e::scenario::{string_field, timestamp};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A well-formed token the API server does not know.
const UNKNOWN_TOKEN: &str = "nosign.0123456789abcdef";
/// The token added for the backoff fix.
const SECOND_TOKEN_ID: &str = "second";
const SECOND_TOKEN: &str = "second.0123456789abcdef";
const NAME_FRAGMENT: &str = "/etc/kube-join-agent/config.d/60-name.toml";
/// How long getting into a waiting phase may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Grace,
    Token,
    Backoff,
    Name,
}

impl Phase {
    fn measure(self) -> &'static str {
        match self {
            Phase::Grace => "fix-grace",
            Phase::Token => "fix-token",
            Phase::Backoff => "fix-backoff",
            Phase::Name => "fix-name",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Phase::Grace => "grace",
            Phase::Token => "token",
            Phase::Backoff => "backoff",
            Phase::Name => "name",
        }
    }
}

fn phases(b: &Bench) -> Vec<Phase> {
    [Phase::Grace, Phase::Token, Phase::Backoff, Phase::Name]
        .into_iter()
        .filter(|p| b.wants(p.measure()) || (*p == Phase::Backoff && b.wants("failure")))
        .collect()
}

pub fn wanted(b: &Bench) -> bool {
    !phases(b).is_empty()
}

pub fn run(b: &Bench) {
    for run in 0..b.opts.runs {
        for phase in phases(b) {
            for (column, subject) in Bench::rotated(&b.agents, run) {
                let label = format!("bench-fix-{}-{}{run}", phase.short(), column.short());
                if let Err(e) = one(b, &label, phase, &subject, column, run) {
                    eprintln!("bench: {label}: {e:#}");
                    let mut measures = vec![phase.measure()];
                    if phase == Phase::Backoff {
                        measures.push("failure");
                    }
                    b.record_failure(&measures, column, run, &e);
                }
            }
        }
    }
}

/// The agent's entries with a `FAILURE=` field: (timestamp, class).
fn failure_lines(n: &BenchNode) -> Result<Vec<(u64, String)>> {
    Ok(n.node
        .journal_entries(Some(AGENT_UNIT))?
        .iter()
        .filter_map(|e| Some((timestamp(e), string_field(e, "FAILURE")?.to_string())))
        .collect())
}

fn one(
    b: &Bench,
    label: &str,
    phase: Phase,
    subject: &Subject,
    column: Column,
    run: usize,
) -> Result<()> {
    let name = kja_e2e::node_name(label);
    let knobs = (phase == Phase::Name)
        .then(|| json!({"nodes": {name.clone(): {"ready_for_secs": 100_000}}}));
    let n = BenchNode::prepare(label, subject, knobs, |i, _| match phase {
        Phase::Grace => Install {
            token: Some(format!("{UNKNOWN_TOKEN}\n")),
            ..i
        },
        Phase::Token => Install {
            token: Some(format!("{UNKNOWN_TOKEN}\n")),
            ..i
        }
        .extra_toml("[timeouts]\ndiscovery = \"10s\""),
        Phase::Backoff => i
            .kubeadm_env("FAIL_TIMES=1\n")
            .extra_toml("[retry]\ninitial_backoff = \"60s\"\nmax_backoff = \"120s\""),
        Phase::Name => i,
    })?;
    let measured = (|| -> Result<()> {
        n.boot()?;
        // Into the waiting phase.
        let mut detail = serde_json::Map::new();
        match phase {
            Phase::Grace => {
                n.wait_for("cluster-info request", SETUP_TIMEOUT, POLL, |n| {
                    Ok(logs::request_seen(
                        &n.cp.requests_log(),
                        "GET",
                        "/api/v1/namespaces/kube-public/configmaps/cluster-info",
                        "system:anonymous",
                        "200",
                    ))
                })?;
                std::thread::sleep(Duration::from_secs(2));
            }
            Phase::Token => {
                n.wait_for("FAILURE=token-invalid line", SETUP_TIMEOUT, POLL, |n| {
                    Ok(failure_lines(n)?.iter().any(|(_, c)| c == "token-invalid"))
                })?;
                std::thread::sleep(Duration::from_secs(2));
            }
            Phase::Backoff => {
                n.wait_for("kubeadm's failed join", SETUP_TIMEOUT, POLL, |n| {
                    Ok(n.kubeadm_runs()?
                        .iter()
                        .any(|r| r.is_join() && r.exit.is_some_and(|(_, code)| code != 0)))
                })?;
                n.wait_for("a FAILURE= line", SETUP_TIMEOUT, POLL, |n| {
                    Ok(!failure_lines(n)?.is_empty())
                })?;
                n.wait_for("every kubeadm to exit", SETUP_TIMEOUT, POLL, |n| {
                    Ok(n.kubeadm_runs()?.iter().all(|r| r.exit.is_some()))
                })?;
                std::thread::sleep(Duration::from_secs(1));
            }
            Phase::Name => {
                let path = format!("/api/v1/nodes/{name}");
                n.wait_for("the agent's look at the Node", SETUP_TIMEOUT, POLL, |n| {
                    Ok(logs::request_seen(
                        &n.cp.requests_log(),
                        "GET",
                        &path,
                        "system:bootstrap:",
                        "200",
                    ))
                })?;
                std::thread::sleep(Duration::from_secs(2));
            }
        }
        let joins_before = n.join_starts();
        let expected_before = usize::from(phase == Phase::Backoff);
        let waiting = joins_before.len() == expected_before;
        if !waiting && phase != Phase::Backoff {
            bail!(
                "kubeadm joined {} times before the fix (expected {expected_before}): the agent was not waiting",
                joins_before.len()
            );
        }
        if !waiting && b.wants(phase.measure()) {
            // The backoff drawn was shorter than the wait for it: nothing to fix.
            b.record(
                phase.measure(),
                column,
                run,
                Outcome::Failed("the agent retried on its own before the fix".into()),
                json!({"join_starts_us": joins_before}),
            );
        } else if b.wants(phase.measure()) {
            let fixing = now_us();
            match phase {
                Phase::Grace | Phase::Token => {
                    n.node.write_file(
                        TOKEN_PATH,
                        format!("{DEFAULT_TOKEN}\n").as_bytes(),
                        0o600,
                    )?;
                }
                Phase::Backoff => {
                    let mut tokens = default_knobs()["tokens"].clone();
                    if let Some(list) = tokens.as_array_mut() {
                        list.push(json!({"id": SECOND_TOKEN_ID, "secret": "0123456789abcdef"}));
                    }
                    n.cp.set_knobs(json!({ "tokens": tokens }))?;
                    n.node
                        .write_file(TOKEN_PATH, format!("{SECOND_TOKEN}\n").as_bytes(), 0o600)?;
                }
                Phase::Name => {
                    n.node.write_file(
                        NAME_FRAGMENT,
                        format!("[join]\nnode_name = \"{name}-b\"\n").as_bytes(),
                        0o644,
                    )?;
                }
            }
            let fixed = now_us();
            detail.insert("fix_written_us".into(), json!(fixed));
            let cap = b.opts.cap;
            let t0 = Instant::now();
            let next = loop {
                let starts = n.join_starts();
                if starts.len() > joins_before.len() {
                    break Some(starts[joins_before.len()]);
                }
                if t0.elapsed() >= cap {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let outcome = match next {
                Some(at) if at < fixing => Outcome::Failed(format!(
                    "kubeadm started again {:.0} ms before the fix was written (the wait ended on its own)",
                    ms(at, fixing)
                )),
                Some(at) => {
                    detail.insert("next_join_us".into(), json!(at));
                    Outcome::Value(ms(fixed, at) / 1000.0)
                }
                None => Outcome::OverCap(cap.as_secs_f64()),
            };
            b.record(phase.measure(), column, run, outcome, Value::Object(detail));
        }
        if phase == Phase::Backoff {
            failure_latency(b, &n, column, run)?;
        }
        Ok(())
    })();
    if measured.is_err() {
        n.save_evidence();
    }
    measured
}

fn failure_latency(b: &Bench, n: &BenchNode, column: Column, run: usize) -> Result<()> {
    let runs = n.kubeadm_runs()?;
    let (exit, code) = runs
        .iter()
        .filter(|r| r.is_join())
        .find_map(|r| r.exit.filter(|(_, c)| *c != 0))
        .ok_or_else(|| anyhow!("no failed kubeadm join in its event log"))?;
    let (line, class) = failure_lines(n)?
        .into_iter()
        .filter(|(t, _)| *t >= exit)
        .min_by_key(|(t, _)| *t)
        .ok_or_else(|| anyhow!("no FAILURE= line after kubeadm's exit"))?;
    b.record(
        "failure",
        column,
        run,
        Outcome::Value(ms(exit, line)),
        json!({"kubeadm_exit_us": exit, "kubeadm_exit_code": code,
               "failure_line_us": line, "class": class}),
    );
    Ok(())
}
