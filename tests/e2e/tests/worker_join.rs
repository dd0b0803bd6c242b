//! Worker join scenarios: a real systemd node (systemd-nspawn), real containerd, the agent
//! under its unit, fake kubeadm/kubelet inside the node and a fake API server in the node's
//! network namespace. Each test boots its own node, so they can run in parallel.
//!
//! The agent's contract these tests hold it to: one journal line per phase with the field
//! `PHASE=<name>` and a message starting `phase <name>:`, phases in the order of
//! [`PHASES`]; `/var/lib/kube-join-agent/state.json` with `phase`, `attempt`, `joined`,
//! `last_error`; kubelet runtime-masked (`masked-runtime`) while it works.

use anyhow::{Context, Result, anyhow, bail, ensure};
use kja_e2e::control_plane::FakeControlPlane;
use kja_e2e::install::{
    self, AGENT_STATE_PATH, AGENT_UNIT, DEFAULT_TOKEN_SECRET, Install, KUBEADM_INVOCATIONS_LOG,
};
use kja_e2e::node::{Node, NodeSpec};
use kja_e2e::{artifacts, wait};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Phases of a fresh join, in order.
const PHASES: [&str; 10] = [
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
const JOIN_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(500);

/// Root check, node (named after the test), fake API server in its netns, everything
/// installed; not booted yet.
fn prepare(test: &str, customize: impl FnOnce(Install) -> Install) -> (Node, FakeControlPlane) {
    if let Err(e) = kja_e2e::require_root() {
        panic!("{e:#}");
    }
    let node = Node::create(NodeSpec::new(&kja_e2e::node_name(test)))
        .unwrap_or_else(|e| panic!("creating the node: {e:#}"));
    let cp = FakeControlPlane::start(node.netns(), node.dir().join("apiserver"))
        .unwrap_or_else(|e| panic!("starting the fake API server: {e:#}"));
    let pin = cp.pin().unwrap_or_else(|e| panic!("{e:#}"));
    install::install(&node, &customize(Install::agent(&pin)))
        .unwrap_or_else(|e| panic!("installing into the node: {e:#}"));
    (node, cp)
}

fn must(r: Result<()>) {
    if let Err(e) = r {
        panic!("{e:#}");
    }
}

/// Boots and waits until systemd answers. Not `wait_running`: when the agent sends
/// READY=1 is its own business, and boot may be "starting" until it does.
fn boot(node: &Node) -> Result<Instant> {
    let t0 = Instant::now();
    node.start()?;
    let state = node.wait_systemd()?;
    eprintln!("node {} {state} after {:?}", node.name(), t0.elapsed());
    Ok(t0)
}

fn agent_state(node: &Node) -> Result<Value> {
    let text = node.read_to_string(AGENT_STATE_PATH)?;
    serde_json::from_str(&text).with_context(|| format!("state.json is not JSON: {text:?}"))
}

fn kubeadm_invocations(node: &Node) -> String {
    node.read_to_string(KUBEADM_INVOCATIONS_LOG)
        .unwrap_or_default()
}

/// Lines of the invocation log that record a `join` (whole join or `join phase ...`).
fn join_invocations(log: &str) -> Vec<String> {
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
fn wait_joined(node: &Node, timeout: Duration) -> Result<Value> {
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

fn string_field<'a>(entry: &'a Value, field: &str) -> Option<&'a str> {
    entry.get(field)?.as_str()
}

fn timestamp(entry: &Value) -> u64 {
    string_field(entry, "__REALTIME_TIMESTAMP")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// The agent's phase lines of this boot, (phase, message, realtime µs): the entries whose
/// message reads `phase <name>: ...`. Each must carry the structured field PHASE=<name>
/// (other lines may carry PHASE= too, as context; they are not phase lines).
fn phase_lines(node: &Node) -> Result<Vec<(String, String, u64)>> {
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
fn check_phases_in_order(lines: &[(String, String, u64)], expected: &[&str]) -> Result<()> {
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
fn check_joined(node: &Node, cp: &FakeControlPlane) -> Result<()> {
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
    let kubelet = node.journal(Some("kubelet.service"))?;
    ensure!(
        !kubelet.contains("failed to load kubelet config file"),
        "kubelet was started before /var/lib/kubelet/config.yaml existed:\n{kubelet}"
    );
    Ok(())
}

/// Kubelet gated: its first start this boot (systemd's job message) comes after the
/// agent's handoff line, and the agent said it masked kubelet before running kubeadm.
fn check_kubelet_gated(node: &Node, phases: &[(String, String, u64)]) -> Result<()> {
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

/// The token secret appears nowhere: journal (all fields, all boots), state.json, the
/// kubeadm invocation log.
fn check_secret_not_leaked(node: &Node) -> Result<()> {
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

fn check_fresh_join(node: &Node, cp: &FakeControlPlane) -> Result<()> {
    check_joined(node, cp)?;
    let phases = phase_lines(node)?;
    check_phases_in_order(&phases, &PHASES)?;
    check_kubelet_gated(node, &phases)?;
    let invocations = kubeadm_invocations(node);
    ensure!(
        !join_invocations(&invocations).is_empty(),
        "the kubeadm invocation log shows no join:\n{invocations}"
    );
    check_secret_not_leaked(node)
}

#[test]
fn fresh_node_joins() {
    let (node, cp) = prepare("fresh_node_joins", |i| i);
    let _artifacts = artifacts::Guard::new("fresh_node_joins", &node, Some(&cp));
    must((|| {
        let t0 = boot(&node)?;
        let state = wait_joined(&node, JOIN_TIMEOUT)?;
        eprintln!("joined {:?} after boot start: {state}", t0.elapsed());
        check_fresh_join(&node, &cp)
    })());
}

#[test]
fn containerd_late_start() {
    let (node, cp) = prepare("containerd_late_start", |i| i.containerd_enabled(false));
    let _artifacts = artifacts::Guard::new("containerd_late_start", &node, Some(&cp));
    must((|| {
        let t0 = boot(&node)?;
        ensure!(
            node.unit_state("containerd.service")? != "active",
            "containerd is active although it is disabled (does the agent's unit pull it in?)"
        );
        // The agent notices and waits.
        wait::until_ok(
            "the agent to mention containerd",
            Duration::from_secs(15),
            POLL,
            || {
                let j = node.journal(Some(AGENT_UNIT))?;
                if j.contains("containerd") {
                    Ok(())
                } else {
                    bail!("agent journal:\n{j}")
                }
            },
        )?;
        let check_waiting = || -> Result<()> {
            let enablement = node.unit_enablement("kubelet.service")?;
            ensure!(
                enablement == "masked-runtime",
                "kubelet is {enablement} while the agent waits for containerd"
            );
            let joins = join_invocations(&kubeadm_invocations(&node));
            ensure!(
                joins.is_empty(),
                "kubeadm ran before containerd was up: {joins:?}"
            );
            if let Ok(s) = agent_state(&node) {
                ensure!(
                    s["joined"] != Value::Bool(true),
                    "joined without containerd: {s}"
                );
            }
            ensure!(
                node.unit_state("kubelet.service")? != "active",
                "kubelet runs before the join"
            );
            Ok(())
        };
        check_waiting()?;
        let start_at = t0 + Duration::from_secs(20);
        std::thread::sleep(start_at.saturating_duration_since(Instant::now()));
        // Still waiting after 20 s, then containerd comes up.
        check_waiting()?;
        node.systemctl(&["start", "containerd.service"])?.ok()?;
        eprintln!("containerd started {:?} after boot start", t0.elapsed());
        let state = wait_joined(&node, JOIN_TIMEOUT)?;
        eprintln!("joined {:?} after boot start: {state}", t0.elapsed());
        check_fresh_join(&node, &cp)
    })());
}

#[test]
fn second_boot_is_harmless() {
    let (node, cp) = prepare("second_boot_is_harmless", |i| i);
    let _artifacts = artifacts::Guard::new("second_boot_is_harmless", &node, Some(&cp));
    must((|| {
        boot(&node)?;
        wait_joined(&node, JOIN_TIMEOUT)?;
        check_joined(&node, &cp)?;
        let first_log = kubeadm_invocations(&node);
        let first_joins = join_invocations(&first_log);
        ensure!(
            !first_joins.is_empty(),
            "no join in the invocation log:\n{first_log}"
        );

        let t0 = Instant::now();
        node.reboot()?;
        let boot_state = node.wait_systemd()?;
        eprintln!("rebooted ({boot_state}) in {:?}", t0.elapsed());
        let state = wait_joined(&node, JOIN_TIMEOUT)?;
        eprintln!("second boot: {state}");
        check_joined(&node, &cp)?;
        let second_log = kubeadm_invocations(&node);
        ensure!(
            join_invocations(&second_log) == first_joins,
            "kubeadm joined again on the second boot:\nbefore:\n{first_log}\nafter:\n{second_log}"
        );
        ensure!(
            second_log == first_log,
            "kubeadm ran on the second boot:\nbefore:\n{first_log}\nafter:\n{second_log}"
        );
        let phases = phase_lines(&node)?;
        let seen: Vec<&str> = phases.iter().map(|(p, _, _)| p.as_str()).collect();
        ensure!(
            seen.contains(&"already-joined"),
            "no already-joined phase this boot: {seen:?}"
        );
        ensure!(
            !seen.contains(&"join"),
            "the agent ran its join phase again: {seen:?}"
        );
        let kubelet = node.journal(Some("kubelet.service"))?;
        ensure!(
            !kubelet.contains("assuming standalone kubelet"),
            "kubelet in standalone mode on the second boot:\n{kubelet}"
        );
        check_secret_not_leaked(&node)
    })());
}

#[test]
fn phase_order_check_is_strict() {
    let line = |p: &str| (p.to_string(), format!("phase {p}: x"), 0);
    let good: Vec<_> = PHASES.iter().map(|p| line(p)).collect();
    check_phases_in_order(&good, &PHASES).unwrap();
    let mut retried = good.clone();
    retried.insert(5, line("preflight"));
    check_phases_in_order(&retried, &PHASES).unwrap();
    let mut swapped = good.clone();
    swapped.swap(4, 5);
    assert!(check_phases_in_order(&swapped, &PHASES).is_err());
    let mut bad_text = good.clone();
    bad_text[0].1 = "loading config".into();
    assert!(check_phases_in_order(&bad_text, &PHASES).is_err());
    assert_eq!(
        join_invocations("2026-11-21T01:00:00Z kubeadm join --config /run/x\nkubeadm version\n")
            .len(),
        1
    );
}
