//! What the agent's unit hardening costs at every start, before the agent runs: systemd
//! sets up a mount namespace (ProtectSystem=, PrivateTmp=, PrivateDevices=,
//! ProtectKernelTunables=, ...), seccomp and capabilities first. In one booted node
//! without an agent, two oneshot units run `/bin/true`: one with every `[Service]`
//! setting of the agent's unit that is not about what runs or how it restarts, one
//! without; each run starts both once (`systemctl start`, which waits for the oneshot
//! to finish), in turn, so that load falls on both alike.

use super::nodes::{BenchNode, Subject};
use super::{Bench, Column, Outcome};
use anyhow::{Context, Result};
use serde_json::json;

const HARDENED: &str = "bench-hardened.service";
const BARE: &str = "bench-bare.service";

/// The `[Service]` lines of `unit` that shape the sandbox: not the type, the command,
/// restarts or the watchdog, and not the command run before (it is not the sandbox's).
fn hardening(unit: &str) -> String {
    const NOT_SANDBOX: [&str; 6] = [
        "Type=",
        "ExecStart=",
        "ExecStartPre=",
        "Restart",
        "Watchdog",
        "TimeoutStopSec=",
    ];
    unit.lines()
        .skip_while(|l| l.trim() != "[Service]")
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| !NOT_SANDBOX.iter().any(|k| l.starts_with(k)))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn oneshot(settings: &str) -> String {
    format!("[Service]\nType=oneshot\nExecStart=/bin/true\n{settings}")
}

pub fn run(b: &Bench) {
    if let Err(e) = measure(b) {
        eprintln!("bench: sandbox: {e:#}");
        for run in 0..b.opts.runs {
            b.record_failure(&["sandbox"], Column::Agent, run, &e);
        }
    }
}

fn measure(b: &Bench) -> Result<()> {
    let unit_path = kja_e2e::paths::agent_unit();
    let unit = std::fs::read_to_string(&unit_path)
        .with_context(|| format!("reading {}", unit_path.display()))?;
    let n = BenchNode::prepare("bench-sandbox", &Subject::NoAgent, None, |i, _| {
        i.file(
            &format!("/etc/systemd/system/{HARDENED}"),
            oneshot(&hardening(&unit)),
            0o644,
        )
        .file(&format!("/etc/systemd/system/{BARE}"), oneshot(""), 0o644)
    })?;
    let measured = (|| -> Result<()> {
        n.boot_running()?;
        for run in 0..b.opts.runs {
            let order = if run % 2 == 0 {
                [(HARDENED, Column::Agent), (BARE, Column::Reference)]
            } else {
                [(BARE, Column::Reference), (HARDENED, Column::Agent)]
            };
            for (unit, column) in order {
                let us = start_us(&n, unit)?;
                b.record(
                    "sandbox",
                    column,
                    run,
                    Outcome::Value(us / 1000.0),
                    json!({"unit": unit, "start_us": us}),
                );
            }
        }
        Ok(())
    })();
    if measured.is_err() {
        n.save_evidence();
    }
    measured
}

/// `systemctl start` of a oneshot, timed inside the node.
fn start_us(n: &BenchNode, unit: &str) -> Result<f64> {
    let script = format!(
        "a=$(date +%s%N); systemctl start {unit} || exit 1; b=$(date +%s%N); echo $(( (b - a) / 1000 ))"
    );
    n.node
        .exec_ok(&["sh", "-c", &script])?
        .trim()
        .parse::<f64>()
        .with_context(|| format!("timing `systemctl start {unit}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_is_the_units_hardening_and_nothing_it_runs() {
        let unit = std::fs::read_to_string(kja_e2e::paths::agent_unit()).unwrap();
        let settings = hardening(&unit);
        for wanted in [
            "ProtectSystem=",
            "PrivateTmp=",
            "SystemCallFilter=",
            "NoNewPrivileges=",
        ] {
            assert!(settings.contains(wanted), "{wanted} missing:\n{settings}");
        }
        for unwanted in [
            "ExecStart",
            "Type=",
            "Restart",
            "WatchdogSec",
            "WantedBy",
            "Before=",
        ] {
            assert!(!settings.contains(unwanted), "{unwanted} kept:\n{settings}");
        }
    }
}
