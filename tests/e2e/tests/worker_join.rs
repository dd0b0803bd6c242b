//! Worker join scenarios: a real systemd node (systemd-nspawn), real containerd, the agent
//! under its unit, fake kubeadm/kubelet inside the node and a fake API server in the node's
//! network namespace. Each test boots its own node, so they can run in parallel. The
//! contract the checks hold the agent to is described in `kja_e2e::scenario`.

use anyhow::{Result, ensure};
use kja_e2e::artifacts;
use kja_e2e::scenario::*;
use serde_json::Value;
use std::time::{Duration, Instant};

#[test]
fn fresh_node_joins() {
    let (node, cp) = prepare("fresh_node_joins", |i| i);
    let _artifacts = artifacts::Guard::new("fresh_node_joins", &node, Some(&cp));
    must((|| {
        let t0 = boot(&node)?;
        let state = wait_joined(&node, JOIN_TIMEOUT)?;
        eprintln!("joined {:?} after boot start: {state}", t0.elapsed());
        check_fresh_join(&node, &cp)?;
        // No core dump may carry the token the agent holds in memory.
        let core = node.exec_ok(&[
            "systemctl",
            "show",
            "-p",
            "LimitCORE",
            "--value",
            "kube-join-agent.service",
        ])?;
        ensure!(
            core.trim() == "0",
            "the agent may dump core (LimitCORE={core})"
        );
        Ok(())
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
        // The agent notices and waits: its preflight says so. (Not just any line that
        // mentions containerd: every line carries this node's host name.)
        journal_says(
            &node,
            "waiting: [wait] container-runtime",
            Duration::from_secs(60),
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

        // A join interrupted after the kubelet got its certificate (the machine stopped
        // before kubeadm returned) leaves kubeadm's bootstrap kubeconfig, with the
        // token, behind: the next boot finds the node joined and removes it.
        ensure!(
            !node.exists("/etc/kubernetes/bootstrap-kubelet.conf")?,
            "kubeadm left bootstrap-kubelet.conf after a completed join"
        );
        let bootstrap_conf = format!(
            "apiVersion: v1\nkind: Config\nusers:\n- name: tls-bootstrap-token-user\n  user:\n    token: {}\n",
            kja_e2e::install::DEFAULT_TOKEN
        );
        node.write_file(
            "/etc/kubernetes/bootstrap-kubelet.conf",
            bootstrap_conf.as_bytes(),
            0o600,
        )?;

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
        ensure!(
            !node.exists("/etc/kubernetes/bootstrap-kubelet.conf")?,
            "the bootstrap kubeconfig (with the token) outlived the second boot"
        );
        journal_says(
            &node,
            "removed /etc/kubernetes/bootstrap-kubelet.conf",
            Duration::from_secs(5),
        )?;
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
