//! What the agent costs once joined: wakeups while it serves, and its binary's size.
//!
//! Wakeups: a fresh node per run and agent, joined; then for 60 s the timeslice counts
//! (field 3 of /proc/PID/task/TID/schedstat, read from the host every second) of all the
//! agent's threads are summed (a thread that exits keeps its last count, a new one counts
//! from zero), the watchdog's pings (every WATCHDOG_USEC / 2, from the agent's
//! environment) are subtracted, and the rest is scaled to one minute. No latency depends
//! on this, so up to [`PARALLEL`] nodes are measured at once.
//!
//! Size: the binary `strip`ped into a temporary file.

use super::nodes::{BenchNode, Subject};
use super::{Bench, Column, Outcome};
use anyhow::{Context, Result, anyhow, bail};
use kja_e2e::install::AGENT_UNIT;
use kja_e2e::scenario::wait_joined;
use serde_json::json;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

pub const PARALLEL: usize = 4;
const WINDOW: Duration = Duration::from_secs(60);

pub fn run_wakeups(b: &Bench) {
    let mut jobs = Vec::new();
    for run in 0..b.opts.runs {
        for (column, subject) in Bench::rotated(&b.agents, run) {
            jobs.push((run, column, subject));
        }
    }
    for batch in jobs.chunks(PARALLEL) {
        std::thread::scope(|s| {
            for (run, column, subject) in batch {
                s.spawn(move || {
                    let label = format!("bench-wake-{}{run}", column.short());
                    if let Err(e) = wakeups(b, &label, subject, *column, *run) {
                        eprintln!("bench: {label}: {e:#}");
                        b.record_failure(&["wakeups"], *column, *run, &e);
                    }
                });
            }
        });
    }
}

fn wakeups(b: &Bench, label: &str, subject: &Subject, column: Column, run: usize) -> Result<()> {
    let n = BenchNode::prepare(label, subject, None, |i, _| i)?;
    let measured = (|| -> Result<()> {
        n.boot()?;
        wait_joined(&n.node, Duration::from_secs(180))?;
        let in_node = n.main_pid(AGENT_UNIT)?;
        let leader = n.node.leader().ok_or_else(|| anyhow!("node not booted"))?;
        let pid = host_pid(leader, in_node)?;
        let watchdog_us: f64 = fs::read(format!("/proc/{pid}/environ"))
            .context("reading the agent's environment")?
            .split(|b| *b == 0)
            .find_map(|kv| {
                std::str::from_utf8(kv)
                    .ok()?
                    .strip_prefix("WATCHDOG_USEC=")?
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0);
        let t0 = Instant::now();
        let mut first: BTreeMap<u32, u64> = BTreeMap::new();
        let mut last: BTreeMap<u32, u64> = BTreeMap::new();
        let mut initial = true;
        loop {
            for (tid, count) in timeslices(pid)? {
                if initial {
                    first.insert(tid, count);
                } else {
                    first.entry(tid).or_insert(0);
                }
                last.insert(tid, count);
            }
            initial = false;
            if t0.elapsed() >= WINDOW {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let window = t0.elapsed().as_secs_f64();
        if fs::metadata(format!("/proc/{pid}")).is_err() {
            bail!("the agent exited during the window");
        }
        let total: u64 = last.iter().map(|(tid, c)| c - first[tid]).sum();
        let pings = if watchdog_us > 0.0 {
            window * 1e6 / (watchdog_us / 2.0)
        } else {
            0.0
        };
        let per_minute = (total as f64 - pings) * 60.0 / window;
        b.record(
            "wakeups",
            column,
            run,
            Outcome::Value(per_minute),
            json!({"window_s": window, "timeslices": total, "threads": last.len(),
                   "watchdog_usec": watchdog_us, "watchdog_pings": pings,
                   "per_thread": last.iter().map(|(t, c)| (t.to_string(), c - first[t])).collect::<BTreeMap<_, _>>()}),
        );
        Ok(())
    })();
    if measured.is_err() {
        n.save_evidence();
    }
    measured
}

/// The host PID of the process that is `in_node` in the PID namespace of `leader`.
fn host_pid(leader: i32, in_node: u32) -> Result<u32> {
    let ns = fs::read_link(format!("/proc/{leader}/ns/pid"))?;
    for entry in fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if fs::read_link(format!("/proc/{pid}/ns/pid")).ok().as_ref() != Some(&ns) {
            continue;
        }
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let inner = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .and_then(|v| v.split_whitespace().last()?.parse::<u32>().ok());
        if inner == Some(in_node) {
            return Ok(pid);
        }
    }
    bail!("no host process is PID {in_node} in the node")
}

/// (TID, timeslices run) of every thread of `pid`.
fn timeslices(pid: u32) -> Result<Vec<(u32, u64)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(text) = fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        if let Some(n) = text.split_whitespace().nth(2).and_then(|v| v.parse().ok()) {
            out.push((tid, n));
        }
    }
    Ok(out)
}

pub fn run_size(b: &Bench) {
    for (column, subject) in &b.agents {
        let Subject::Agent(bin) = subject else {
            continue;
        };
        match stripped_size(bin) {
            Ok(bytes) => b.record(
                "size",
                *column,
                0,
                Outcome::Value(bytes as f64 / (1024.0 * 1024.0)),
                json!({"binary": bin, "unstripped_bytes": fs::metadata(bin).map(|m| m.len()).ok(),
                       "stripped_bytes": bytes}),
            ),
            Err(e) => b.record_failure(&["size"], *column, 0, &e),
        }
    }
}

fn stripped_size(bin: &Path) -> Result<u64> {
    let out = std::env::temp_dir().join(format!("kja-bench-strip-{}", std::process::id()));
    let status = std::process::Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(bin)
        .status()
        .context("running strip")?;
    let size = fs::metadata(&out).map(|m| m.len());
    let _ = fs::remove_file(&out);
    if !status.success() {
        bail!("strip {} failed: {status}", bin.display());
    }
    Ok(size?)
}
