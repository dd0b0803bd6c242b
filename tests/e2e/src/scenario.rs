//! Building blocks of the end-to-end scenarios: a prepared node with its fake control
//! plane, waits for the agent's outcomes, and the checks every join must pass.
//!
//! The agent's contract these hold it to: one journal line per phase with the field
//! `PHASE=<name>` and a message starting `phase <name>:`, phases in the order of
//! [`PHASES`]; `/var/lib/kube-join-agent/state.json` with `phase`, `attempt`, `joined`,
//! `last_error`; kubelet runtime-masked (`masked-runtime`) while it works; one line with
//! `FAILURE=<class>` per failure.

#![allow(missing_docs)]

use crate::control_plane::FakeControlPlane;
use crate::install::{
    self, AGENT_STATE_PATH, AGENT_UNIT, DEFAULT_TOKEN_SECRET, Install, KUBEADM_INVOCATIONS_LOG,
};
use crate::node::{Node, NodeSpec};
use crate::wait;
use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Phases of a fresh join, in order.
pub const PHASES: [&str; 10] = [
    "load-config",
    "already-joined",
    "gate-kubelet",
    "preflight",
    "discovery",
    "join",
    "handoff",
    "tls-bootstrap",
    "verify",
    "serve",
];
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(120);
pub const POLL: Duration = Duration::from_millis(500);

/// Root check, node (named after the test), fake API server in its netns, everything
/// installed; not booted yet.
pub fn prepare(test: &str, customize: impl FnOnce(Install) -> Install) -> (Node, FakeControlPlane) {
    if let Err(e) = crate::require_root() {
        panic!("{e:#}");
    }
    let node = Node::create(NodeSpec::new(&crate::node_name(test)))
        .unwrap_or_else(|e| panic!("creating the node: {e:#}"));
    let cp = FakeControlPlane::start(node.netns(), node.dir().join("apiserver"))
        .unwrap_or_else(|e| panic!("starting the fake API server: {e:#}"));
    let pin = cp.pin().unwrap_or_else(|e| panic!("{e:#}"));
    install::install(&node, &customize(Install::agent(&pin)))
        .unwrap_or_else(|e| panic!("installing into the node: {e:#}"));
    (node, cp)
}

pub fn must(r: Result<()>) {
    if let Err(e) = r {
        panic!("{e:#}");
    }
}

/// Boots and waits until systemd answers. Not `wait_running`: when the agent sends
/// READY=1 is its own business, and boot may be "starting" until it does.
pub fn boot(node: &Node) -> Result<Instant> {
    let t0 = Instant::now();
    node.start()?;
    let state = node.wait_systemd()?;
    eprintln!("node {} {state} after {:?}", node.name(), t0.elapsed());
    Ok(t0)
}

pub fn agent_state(node: &Node) -> Result<Value> {
    let text = node.read_to_string(AGENT_STATE_PATH)?;
    serde_json::from_str(&text).with_context(|| format!("state.json is not JSON: {text:?}"))
}

pub fn kubeadm_invocations(node: &Node) -> String {
    node.read_to_string(KUBEADM_INVOCATIONS_LOG)
        .unwrap_or_default()
}

/// Lines of the invocation log that record a `join` (whole join or `join phase ...`).
pub fn join_invocations(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            l.split(|c: char| !c.is_ascii_alphanumeric() && c != '-')
                .any(|w| w == "join")
        })
        .map(str::to_string)
        .collect()
}

/// Waits until, in this boot, the agent reached serve: its unit is active, this boot's
/// journal has its `phase serve:` line, and state.json says joined in phase serve (the
/// file alone is not enough: it persists from the previous boot). Gives up early if the
/// agent's unit has failed for good.
pub fn wait_joined(node: &Node, timeout: Duration) -> Result<Value> {
    wait::until_ok("the agent to reach serve, joined", timeout, POLL, || {
        let unit = node.unit_state(AGENT_UNIT)?;
        let state = agent_state(node);
        let seen = match &state {
            Ok(s) => s.to_string(),
            Err(e) => format!("no state ({e:#})"),
        };
        if unit == "failed" {
            return Ok(Err(anyhow!("{AGENT_UNIT} failed; state.json: {seen}")));
        }
        let phases: Vec<String> = phase_lines(node)?.into_iter().map(|(p, _, _)| p).collect();
        if let Ok(s) = &state
            && s["joined"] == Value::Bool(true)
            && s["phase"] == "serve"
            && unit == "active"
            && phases.iter().any(|p| p == "serve")
        {
            return Ok(Ok(s.clone()));
        }
        bail!("{AGENT_UNIT} is {unit}; phases this boot: {phases:?}; state.json: {seen}")
    })?
}

pub fn string_field<'a>(entry: &'a Value, field: &str) -> Option<&'a str> {
    entry.get(field)?.as_str()
}

pub fn timestamp(entry: &Value) -> u64 {
    string_field(entry, "__REALTIME_TIMESTAMP")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// The agent's phase lines of this boot, (phase, message, realtime µs): the entries whose
/// message reads `phase <name>: ...`. Each must carry the structured field PHASE=<name>
/// (other lines may carry PHASE= too, as context; they are not phase lines).
pub fn phase_lines(node: &Node) -> Result<Vec<(String, String, u64)>> {
    let mut lines = Vec::new();
    for e in node.journal_entries(Some(AGENT_UNIT))? {
        let message = string_field(&e, "MESSAGE").unwrap_or_default();
        let Some((name, _)) = message
            .strip_prefix("phase ")
            .and_then(|rest| rest.split_once(':'))
        else {
            continue;
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            continue;
        }
        let field = string_field(&e, "PHASE");
        ensure!(
            field == Some(name),
            "phase line {message:?} carries PHASE={field:?} instead of PHASE={name}"
        );
        lines.push((name.to_string(), message.to_string(), timestamp(&e)));
    }
    Ok(lines)
}

/// Every phase of `expected` appears, in that order (retries may repeat phases), each
/// line's message starting `phase <name>:`.
pub fn check_phases_in_order(lines: &[(String, String, u64)], expected: &[&str]) -> Result<()> {
    for (phase, message, _) in lines {
        ensure!(
            message.starts_with(&format!("phase {phase}:")),
            "PHASE={phase} line's message does not start with `phase {phase}:`: {message:?}"
        );
    }
    let seen: Vec<&str> = lines.iter().map(|(p, _, _)| p.as_str()).collect();
    let mut next = 0;
    for phase in &seen {
        if next < expected.len() && *phase == expected[next] {
            next += 1;
        }
    }
    ensure!(
        next == expected.len(),
        "phase lines out of order or missing: expected {expected:?} in order, \
         journal has {seen:?} (first missing: {})",
        expected[next]
    );
    Ok(())
}

/// The outcome every successful join must have.
pub fn check_joined(node: &Node, cp: &FakeControlPlane) -> Result<()> {
    check_joined_since(node, cp, 0)
}

/// [`check_joined`], where kubelet is held to starting only with its configuration from
/// `since_usec` (realtime µs) on: a node the agent was installed on while it ran had an
/// ungated kubelet before.
pub fn check_joined_since(node: &Node, cp: &FakeControlPlane, since_usec: u64) -> Result<()> {
    let state = agent_state(node)?;
    ensure!(
        state["joined"] == Value::Bool(true) && state["phase"] == "serve",
        "state.json: {state}"
    );
    ensure!(
        node.unit_state(AGENT_UNIT)? == "active",
        "the agent is not active"
    );
    let status = node.exec(&["kube-join-agent", "status"])?;
    ensure!(
        status.success() && status.stdout.contains("serve"),
        "`kube-join-agent status`: {status}"
    );
    wait::until_ok("kubelet active", Duration::from_secs(30), POLL, || {
        let s = node.unit_state("kubelet.service")?;
        if s == "active" {
            Ok(())
        } else {
            bail!("kubelet is {s}")
        }
    })?;
    let enablement = node.unit_enablement("kubelet.service")?;
    ensure!(
        enablement == "enabled",
        "kubelet is {enablement} after the join (still masked?)"
    );
    for f in [
        "/etc/kubernetes/kubelet.conf",
        "/var/lib/kubelet/pki/kubelet-client-current.pem",
        "/var/lib/kubelet/config.yaml",
    ] {
        ensure!(node.exists(f)?, "{f} missing after the join");
    }
    let obj = cp
        .node(node.name())
        .ok_or_else(|| anyhow!("no Node {} on the fake API server", node.name()))?;
    eprintln!("Node on the API server: {obj}");
    let early: Vec<String> = node
        .journal_entries(Some("kubelet.service"))?
        .iter()
        .filter(|e| timestamp(e) >= since_usec)
        .filter_map(|e| string_field(e, "MESSAGE").map(str::to_string))
        .filter(|m| m.contains("failed to load kubelet config file"))
        .collect();
    ensure!(
        early.is_empty(),
        "kubelet was started before /var/lib/kubelet/config.yaml existed: {early:?}"
    );
    Ok(())
}

/// Kubelet gated: its first start this boot (systemd's job message) comes after the
/// agent's handoff line, and the agent said it masked kubelet before running kubeadm.
pub fn check_kubelet_gated(node: &Node, phases: &[(String, String, u64)]) -> Result<()> {
    let handoff = phases
        .iter()
        .find(|(p, _, _)| p == "handoff")
        .map(|(_, _, t)| *t)
        .ok_or_else(|| anyhow!("no handoff phase line"))?;
    let join_at = phases
        .iter()
        .find(|(p, _, _)| p == "join")
        .map(|(_, _, t)| *t)
        .ok_or_else(|| anyhow!("no join phase line"))?;
    let started = node
        .journal_entries(Some("kubelet.service"))?
        .into_iter()
        .filter(|e| {
            string_field(e, "UNIT") == Some("kubelet.service")
                && string_field(e, "JOB_TYPE") == Some("start")
                && string_field(e, "JOB_RESULT") == Some("done")
        })
        .map(|e| timestamp(&e))
        .min()
        .ok_or_else(|| anyhow!("systemd never logged a kubelet start"))?;
    ensure!(
        started >= handoff,
        "kubelet started {} ms before the agent's handoff phase (not gated)",
        (handoff - started) / 1000
    );
    let agent = node.journal_entries(Some(AGENT_UNIT))?;
    let said_masked = agent.iter().any(|e| {
        timestamp(e) <= join_at
            && string_field(e, "MESSAGE").is_some_and(|m| m.to_lowercase().contains("mask"))
    });
    ensure!(
        said_masked,
        "the agent's journal never says it masked kubelet before the join"
    );
    Ok(())
}

/// kubelet was started exactly once this boot (kubeadm's own restart racing the agent's
/// handoff must not start it twice): systemd's start and restart jobs that ended done.
pub fn check_kubelet_started_once(node: &Node) -> Result<()> {
    let starts: Vec<String> = node
        .journal_entries(Some("kubelet.service"))?
        .iter()
        .filter(|e| {
            string_field(e, "UNIT") == Some("kubelet.service")
                && matches!(string_field(e, "JOB_TYPE"), Some("start" | "restart"))
                && string_field(e, "JOB_RESULT") == Some("done")
        })
        .map(|e| {
            format!(
                "{} at {}",
                string_field(e, "JOB_TYPE").unwrap_or_default(),
                timestamp(e)
            )
        })
        .collect();
    ensure!(
        starts.len() == 1,
        "kubelet was started {} times this boot: {starts:?}",
        starts.len()
    );
    Ok(())
}

/// The token secret appears nowhere: journal (all fields, all boots), state.json, the
/// kubeadm invocation log.
pub fn check_secret_not_leaked(node: &Node) -> Result<()> {
    let journal = node.journalctl(&["-o", "export"])?;
    ensure!(
        !journal.contains(DEFAULT_TOKEN_SECRET),
        "the token secret is in the journal"
    );
    let state = node.read_to_string(AGENT_STATE_PATH)?;
    ensure!(
        !state.contains(DEFAULT_TOKEN_SECRET),
        "the token secret is in state.json"
    );
    let invocations = kubeadm_invocations(node);
    ensure!(
        !invocations.contains(DEFAULT_TOKEN_SECRET),
        "the token secret is in kubeadm's invocation log (on its command line?)"
    );
    // The fake redacts secret flags in its log: a redaction means the agent put a secret
    // on kubeadm's command line, where every user can read it in /proc/PID/cmdline.
    ensure!(
        !invocations.contains("<redacted>"),
        "the agent passed a secret flag on kubeadm's command line:\n{invocations}"
    );
    Ok(())
}

pub fn check_fresh_join(node: &Node, cp: &FakeControlPlane) -> Result<()> {
    check_joined(node, cp)?;
    let phases = phase_lines(node)?;
    check_phases_in_order(&phases, &PHASES)?;
    check_kubelet_gated(node, &phases)?;
    check_kubelet_started_once(node)?;
    let invocations = kubeadm_invocations(node);
    ensure!(
        !join_invocations(&invocations).is_empty(),
        "the kubeadm invocation log shows no join:\n{invocations}"
    );
    check_secret_not_leaked(node)
}

/// The agent's failure lines (all boots of this node's journal): (class, message).
pub fn failure_lines(node: &Node) -> Result<Vec<(String, String)>> {
    Ok(node
        .journal_entries(Some(AGENT_UNIT))?
        .iter()
        .filter_map(|e| {
            let class = string_field(e, "FAILURE")?;
            Some((
                class.to_string(),
                string_field(e, "MESSAGE").unwrap_or_default().to_string(),
            ))
        })
        .collect())
}

/// Waits for a `FAILURE=<class>` line from the agent; returns its message.
pub fn wait_failure(node: &Node, class: &str, timeout: Duration) -> Result<String> {
    wait::until_ok(&format!("a FAILURE={class} line"), timeout, POLL, || {
        let lines = failure_lines(node)?;
        match lines.iter().find(|(c, _)| c == class) {
            Some((_, message)) => Ok(message.clone()),
            None => bail!("failure lines so far: {lines:?}"),
        }
    })
}

/// `systemctl show` properties of a unit.
pub fn unit_props(node: &Node, unit: &str) -> Result<std::collections::HashMap<String, String>> {
    let out = node.exec_ok(&[
        "systemctl",
        "show",
        "-p",
        "ActiveState,SubState,ExecMainStatus,MainPID,NRestarts,Result",
        unit,
    ])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// Waits until the agent has failed for good (a final failure exits non-zero, so the
/// unit ends `failed`; "inactive" would also match a unit not started yet) and returns
/// its exit code.
pub fn wait_agent_exited(node: &Node, timeout: Duration) -> Result<i32> {
    wait::until_ok("the agent to exit", timeout, POLL, || {
        let p = unit_props(node, AGENT_UNIT)?;
        let state = p.get("ActiveState").cloned().unwrap_or_default();
        if state == "failed" {
            let code = p
                .get("ExecMainStatus")
                .and_then(|c| c.parse().ok())
                .unwrap_or(-1);
            return Ok(code);
        }
        bail!("agent is {state} ({:?})", p.get("SubState"))
    })
}

/// The outcome of a failure only an operator can fix: the agent exited with `code`
/// and stays down, kubelet is masked and not running, and the failure line of `class`
/// names the cause and the fix (`must_say`). Returns that line.
pub fn check_stopped(node: &Node, class: &str, code: i32, must_say: &[&str]) -> Result<String> {
    let exit = wait_agent_exited(node, Duration::from_secs(120))?;
    ensure!(
        exit == code,
        "the agent exited with {exit}, expected {code}"
    );
    // RestartPreventExitStatus: systemd must not bring it back.
    std::thread::sleep(Duration::from_secs(6));
    let p = unit_props(node, AGENT_UNIT)?;
    ensure!(
        p.get("ActiveState").map(String::as_str) != Some("active")
            && p.get("NRestarts").map(String::as_str) == Some("0"),
        "the agent was restarted after a final failure: {p:?}"
    );
    let enablement = node.unit_enablement("kubelet.service")?;
    ensure!(
        enablement == "masked-runtime",
        "kubelet is {enablement}, not masked, after the failure"
    );
    ensure!(
        node.unit_state("kubelet.service")? != "active",
        "kubelet runs after the failure"
    );
    let lines = failure_lines(node)?;
    let (_, message) = lines
        .iter()
        .rev()
        .find(|(c, _)| c == class)
        .ok_or_else(|| anyhow!("no FAILURE={class} line; failure lines: {lines:?}"))?;
    for needle in must_say {
        ensure!(
            message.contains(needle),
            "the FAILURE={class} line does not say {needle:?}: {message}"
        );
    }
    ensure!(
        !message.contains(DEFAULT_TOKEN_SECRET),
        "the failure line leaks the token secret"
    );
    Ok(message.clone())
}

/// Quick retries, so failure paths finish in seconds.
pub const FAST_RETRY: &str = "[retry]\ninitial_backoff = \"1s\"\nmax_backoff = \"2s\"\n";

/// Waits until the agent's journal (this node, all boots) contains `needle`.
pub fn journal_says(node: &Node, needle: &str, timeout: Duration) -> Result<()> {
    wait::until_ok(
        &format!("the agent to say {needle:?}"),
        timeout,
        POLL,
        || {
            let j = node.journal(Some(AGENT_UNIT))?;
            if j.contains(needle) {
                Ok(())
            } else {
                bail!("agent journal:\n{j}")
            }
        },
    )
}

/// kubeadm was never asked to join.
pub fn no_kubeadm_join(node: &Node) -> Result<()> {
    let joins = join_invocations(&kubeadm_invocations(node));
    ensure!(joins.is_empty(), "kubeadm ran: {joins:?}");
    Ok(())
}

/// The agent's peak resident memory (VmHWM) in KiB, from its main process.
pub fn agent_peak_rss_kib(node: &Node) -> Result<u64> {
    let pid = unit_props(node, AGENT_UNIT)?
        .get("MainPID")
        .cloned()
        .unwrap_or_default();
    ensure!(pid != "0" && !pid.is_empty(), "the agent is not running");
    let status = node.exec_ok(&["cat", &format!("/proc/{pid}/status")])?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmHWM in /proc/{pid}/status"))
}
