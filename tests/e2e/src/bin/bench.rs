//! Measures the agent on real systemd nodes: time from the agent's start to `serve`
//! (joined), the kubelet handoff latency (kubeadm writes its last kubelet file → kubelet
//! is started), and the agent's peak memory. `cargo run -p kja-e2e --bin bench [RUNS]`
//! prints a Markdown table for the README. Needs root, like every scenario.

use anyhow::{Context, Result, anyhow};
use kja_e2e::install::AGENT_UNIT;
use kja_e2e::scenario::{boot, prepare, string_field, timestamp, wait_joined};
use std::time::Duration;

struct Sample {
    join_ms: f64,
    handoff_ms: f64,
    peak_rss_kib: u64,
}

fn main() -> Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(5);
    let mut samples = Vec::new();
    for run in 0..runs {
        let name = format!("bench_{run}");
        let (node, _cp) = prepare(&name, |i| i);
        boot(&node)?;
        wait_joined(&node, Duration::from_secs(120))?;
        let sample = measure(&node).with_context(|| format!("run {run}"))?;
        eprintln!(
            "run {run}: joined {:.0} ms after the agent started, kubelet started {:.0} ms after kubeadm's last kubelet file, peak RSS {} KiB",
            sample.join_ms, sample.handoff_ms, sample.peak_rss_kib
        );
        samples.push(sample);
        node.poweroff()?;
    }
    let bin = std::fs::metadata(kja_e2e::paths::agent_bin())?.len();
    println!(
        "| measure ({runs} runs, debug build of {} KiB) | min | median | max |",
        bin / 1024
    );
    println!("| --- | --- | --- | --- |");
    row(
        "agent start → node joined (ms)",
        samples.iter().map(|s| s.join_ms).collect(),
    );
    row(
        "kubeadm writes kubelet files → kubelet started (ms)",
        samples.iter().map(|s| s.handoff_ms).collect(),
    );
    row(
        "agent peak RSS (KiB)",
        samples.iter().map(|s| s.peak_rss_kib as f64).collect(),
    );
    Ok(())
}

fn row(what: &str, mut values: Vec<f64>) {
    values.sort_by(|a, b| a.total_cmp(b));
    let median = values[values.len() / 2];
    println!(
        "| {what} | {:.0} | {:.0} | {:.0} |",
        values[0],
        median,
        values[values.len() - 1]
    );
}

fn measure(node: &kja_e2e::Node) -> Result<Sample> {
    let entries = node.journal_entries(None)?;
    let at = |pred: &dyn Fn(&serde_json::Value) -> bool| -> Result<u64> {
        entries
            .iter()
            .filter(|e| pred(e))
            .map(timestamp)
            .min()
            .ok_or_else(|| anyhow!("event not in the journal"))
    };
    let message =
        |e: &serde_json::Value| string_field(e, "MESSAGE").unwrap_or_default().to_string();
    let agent_start = at(&|e| {
        string_field(e, "UNIT") == Some(AGENT_UNIT) && string_field(e, "JOB_TYPE") == Some("start")
    })
    .or_else(|_| at(&|e| message(e).starts_with("phase load-config:")))?;
    let serve = at(&|e| message(e).starts_with("phase serve:"))?;
    let files_written = at(&|e| message(e).contains("Writing kubelet environment file"))?;
    let kubelet_started = at(&|e| {
        string_field(e, "UNIT") == Some("kubelet.service")
            && string_field(e, "JOB_TYPE") == Some("start")
            && string_field(e, "JOB_RESULT") == Some("done")
    })?;
    let pid = node.exec_ok(&["systemctl", "show", "-p", "MainPID", "--value", AGENT_UNIT])?;
    let status = node.exec_ok(&["cat", &format!("/proc/{}/status", pid.trim())])?;
    let peak_rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow!("no VmHWM in /proc/{}/status", pid.trim()))?;
    Ok(Sample {
        join_ms: (serve.saturating_sub(agent_start)) as f64 / 1000.0,
        handoff_ms: (kubelet_started.saturating_sub(files_written)) as f64 / 1000.0,
        peak_rss_kib,
    })
}
