//! Every wait listens for what would end it: a fix dropped in while the agent waits (a
//! new token, a corrected fragment) is acted on without a restart, long before the wait
//! would have ended on its own. And the handoff leaves kubelet started once, and
//! startable after a reboot in the middle of a join.

use anyhow::{Result, anyhow, bail, ensure};
use kja_e2e::artifacts;
use kja_e2e::install::AGENT_UNIT;
use kja_e2e::scenario::*;
use kja_e2e::wait;
use serde_json::json;
use std::time::Duration;

/// The token the fake API server knows besides the default one.
const NEW_TOKEN: &str = "ghijkl.ghijklmnopqrstuv";

fn main_pid(node: &kja_e2e::Node) -> Result<String> {
    Ok(unit_props(node, AGENT_UNIT)?
        .get("MainPID")
        .cloned()
        .unwrap_or_default())
}

fn known_tokens(cp: &kja_e2e::FakeControlPlane) -> Result<()> {
    cp.set_knobs(json!({"tokens": [
        {"id": "abcdef", "secret": "0123456789abcdef"},
        {"id": "ghijkl", "secret": "ghijklmnopqrstuv"}
    ]}))
}

/// Joined, by the same agent process that waited, and the journal says why it started
/// over.
fn joined_without_a_restart(
    node: &kja_e2e::Node,
    cp: &kja_e2e::FakeControlPlane,
    pid: &str,
) -> Result<()> {
    wait_joined(node, JOIN_TIMEOUT)?;
    check_joined(node, cp)?;
    ensure!(
        main_pid(node)? == pid,
        "the agent restarted instead of picking up the fix"
    );
    journal_says(
        node,
        "the configuration changed while waiting",
        Duration::from_secs(1),
    )
}

/// The configured token is not known (yet): the agent gives it 60 s, in case it was
/// created moments ago. Once the agent has said so, and `said_too`, a known token is
/// dropped into the token file: the same process joins with it before the grace ends.
fn token_fixed_during_the_grace(
    node: &kja_e2e::Node,
    cp: &kja_e2e::FakeControlPlane,
    said_too: &str,
) -> Result<()> {
    cp.set_knobs(json!({"tokens": [{"id": "ghijkl", "secret": "ghijklmnopqrstuv"}]}))?;
    boot(node)?;
    journal_says(
        node,
        "cluster-info has no signature for token id \"abcdef\"",
        Duration::from_secs(60),
    )?;
    journal_says(node, said_too, Duration::from_secs(1))?;
    let pid = main_pid(node)?;
    node.write_file(
        "/etc/kube-join-agent/token",
        format!("{NEW_TOKEN}\n").as_bytes(),
        0o600,
    )?;
    joined_without_a_restart(node, cp, &pid)?;
    let failures = failure_lines(node)?;
    ensure!(
        failures.is_empty(),
        "the grace ran out before the fix was used: {failures:?}"
    );
    Ok(())
}

#[test]
fn a_token_fixed_during_the_discovery_grace_is_used_at_once() {
    let (node, cp) = prepare("fix_in_discovery_grace", |i| i);
    let _a = artifacts::Guard::new("fix_in_discovery_grace", &node, Some(&cp));
    must(token_fixed_during_the_grace(
        &node,
        &cp,
        "kubeadm token create",
    ));
}

/// A node whose root has used up its inotify instances (fs.inotify.max_user_instances:
/// kubelet, containerd and pods running as root draw on the same budget). systemd's
/// seccomp filter gives the agent the kernel's own answer, EMFILE, from
/// `inotify_init1`. The agent says so once, names the limit, and looks instead: the fix
/// is still used without a restart, and the handoff still sees kubeadm's files.
#[test]
fn without_inotify_a_fix_is_still_used_at_once() {
    let (node, cp) = prepare("fix_without_inotify", |i| {
        i.file(
            "/etc/systemd/system/kube-join-agent.service.d/90-inotify-used-up.conf",
            "[Service]\nSystemCallFilter=~inotify_init inotify_init1\nSystemCallErrorNumber=EMFILE\n",
            0o644,
        )
    });
    let _a = artifacts::Guard::new("fix_without_inotify", &node, Some(&cp));
    must((|| {
        token_fixed_during_the_grace(
            &node,
            &cp,
            "inotify instances are used up (fs.inotify.max_user_instances)",
        )?;
        let journal = node.journal(Some(AGENT_UNIT))?;
        let warnings = journal.matches("cannot watch files with inotify").count();
        ensure!(
            warnings == 1,
            "said {warnings} times, once is enough:\n{journal}"
        );
        Ok(())
    })());
}

/// The delay the agent announced in its last `retrying in Xs` line, in seconds.
fn announced_delay(node: &kja_e2e::Node) -> Result<Option<f64>> {
    let j = node.journal(Some(AGENT_UNIT))?;
    Ok(j.lines()
        .rev()
        .find_map(|l| l.split("retrying in ").nth(1))
        .and_then(|rest| rest.split('s').next())
        .and_then(|n| n.trim().parse().ok()))
}

#[test]
fn a_fix_during_a_backoff_sleep_is_used_at_once() {
    let (node, cp) = prepare("fix_in_backoff", |i| {
        i.kubeadm_env("FAIL_TIMES=100\n").extra_toml(
            "[retry]\nmax_attempts = 100\ninitial_backoff = \"10m\"\nmax_backoff = \"10m\"\n",
        )
    });
    let _a = artifacts::Guard::new("fix_in_backoff", &node, Some(&cp));
    must((|| {
        known_tokens(&cp)?;
        boot(&node)?;
        // Full jitter draws the sleep from [0, 10m]: wait for a sleep long enough that
        // its end cannot be mistaken for the fix being picked up.
        let delay = wait::until_ok(
            "a backoff sleep of a minute or more",
            Duration::from_secs(300),
            POLL,
            || match announced_delay(&node)? {
                Some(d) if d >= 60.0 => Ok(d),
                other => bail!("announced delay so far: {other:?}"),
            },
        )?;
        let before = join_invocations(&kubeadm_invocations(&node)).len();
        let pid = main_pid(&node)?;
        node.write_file("/etc/fake-k8s/kubeadm.env", b"", 0o644)?;
        let fixed_at = std::time::Instant::now();
        node.write_file(
            "/etc/kube-join-agent/token",
            format!("{NEW_TOKEN}\n").as_bytes(),
            0o600,
        )?;
        wait::until_ok(
            "kubeadm to run again",
            Duration::from_secs(30),
            POLL,
            || {
                let now = join_invocations(&kubeadm_invocations(&node)).len();
                if now > before {
                    Ok(())
                } else {
                    bail!("{now} join invocations")
                }
            },
        )?;
        ensure!(
            fixed_at.elapsed().as_secs_f64() < delay,
            "kubeadm ran again only when the {delay}s sleep was over"
        );
        joined_without_a_restart(&node, &cp, &pid)
    })());
}

#[test]
fn a_new_node_name_during_the_conflict_wait_is_used_at_once() {
    let (node, cp) = prepare("fix_in_name_conflict", |i| {
        i.extra_toml("[join]\nnode_conflict_wait = \"10m\"\n")
    });
    let _a = artifacts::Guard::new("fix_in_name_conflict", &node, Some(&cp));
    must((|| {
        // Another live machine holds this name.
        cp.set_knobs(json!({"nodes": {node.name(): {"ready_for_secs": 100000}}}))?;
        boot(&node)?;
        journal_says(
            &node,
            "already exists and is Ready",
            Duration::from_secs(60),
        )?;
        no_kubeadm_join(&node)?;
        let pid = main_pid(&node)?;
        let other = format!("{}-b", node.name());
        node.write_file(
            "/etc/kube-join-agent/config.d/60-name.toml",
            format!("[join]\nnode_name = \"{other}\"\n").as_bytes(),
            0o644,
        )?;
        wait_joined(&node, JOIN_TIMEOUT)?;
        ensure!(main_pid(&node)? == pid, "the agent restarted");
        ensure!(
            cp.node(&other).is_some(),
            "no Node {other} on the API server"
        );
        let failures = failure_lines(&node)?;
        ensure!(failures.is_empty(), "{failures:?}");
        Ok(())
    })());
}

#[test]
fn a_reboot_during_the_join_leaves_kubelet_startable() {
    let (node, cp) = prepare("reboot_mid_join", |i| i);
    let _a = artifacts::Guard::new("reboot_mid_join", &node, Some(&cp));
    must((|| {
        // The bootstrap cannot finish: the node is caught right after the handoff.
        cp.set_knobs(json!({"csr_approval": "manual"}))?;
        boot(&node)?;
        wait::until_ok(
            "the handoff",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || {
                let phases = phase_lines(&node)?;
                if phases.iter().any(|(p, _, _)| p == "handoff") {
                    Ok(())
                } else {
                    Err(anyhow!("not yet"))
                }
            },
        )?;
        node.poweroff()?;
        // The agent is gone from the next boot (say, removed from the image): nothing of
        // its gate may outlive the reboot.
        node.remove_file(&format!(
            "/etc/systemd/system/multi-user.target.wants/{AGENT_UNIT}"
        ))?;
        cp.set_knobs(json!({"csr_approval": "auto"}))?;
        node.start()?;
        node.wait_systemd()?;
        let enablement = node.unit_enablement("kubelet.service")?;
        ensure!(
            !enablement.starts_with("masked"),
            "kubelet is {enablement} after a reboot"
        );
        ensure!(
            !node.exists("/run/systemd/system/kubelet.service.d/50-kube-join-agent-gate.conf")?,
            "the gate's drop-in survived the reboot"
        );
        node.systemctl(&["restart", "kubelet.service"])?.ok()?;
        wait::until_ok("kubelet active", Duration::from_secs(30), POLL, || {
            let state = node.unit_state("kubelet.service")?;
            if state == "active" {
                Ok(())
            } else {
                bail!("kubelet is {state}")
            }
        })?;
        Ok(())
    })());
}
