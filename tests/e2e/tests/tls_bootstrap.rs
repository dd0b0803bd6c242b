//! kubeadm waiting for the kubelet's TLS bootstrap that never finishes. Real kubeadm
//! prints `[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap...`, 40 s
//! later `[kubelet-check] Initial timeout of 40s passed.`, and then nothing until its
//! own 5-minute timeout: the agent's no-progress watchdog (3 min) usually stops it first.
//! Either way the failure must say what the kubelet side shows.
//!
//! The fake kubeadm runs with TIMEOUT_SCALE=0.1 (initial timeout 4 s, TLS-bootstrap
//! timeout 30 s); the agent's watchdog is scaled alike where the scenario is about it.

use anyhow::{Result, ensure};
use kja_e2e::artifacts;
use kja_e2e::scenario::*;
use serde_json::json;
use std::time::Duration;

/// kubeadm's waits at a tenth of upstream's, one attempt so the outcome is final.
fn scaled(i: kja_e2e::Install, agent_toml: &str) -> kja_e2e::Install {
    i.kubeadm_env("TIMEOUT_SCALE=0.1\n")
        .extra_toml(&format!("[retry]\nmax_attempts = 1\n{agent_toml}"))
}

/// No FAILURE=hang: a silent kubeadm waiting for the kubelet is not called a hang.
fn not_called_a_hang(node: &kja_e2e::Node) -> Result<()> {
    let lines = failure_lines(node)?;
    ensure!(
        lines.iter().all(|(class, _)| class != "hang"),
        "called a hang: {lines:?}"
    );
    Ok(())
}

#[test]
fn a_silent_kubeadm_with_a_pending_csr_names_the_csr() {
    // The watchdog (20 s, as 3 min is to real kubeadm's timings) stops kubeadm at about
    // 4 + 20 s, before its own 30 s timeout: the order real kubeadm meets.
    let (node, cp) = prepare("silent_pending_csr", |i| {
        scaled(i, "[timeouts]\nno_progress = \"20s\"\n")
    });
    let _a = artifacts::Guard::new("silent_pending_csr", &node, Some(&cp));
    must((|| {
        cp.set_knobs(json!({"csr_approval": "manual"}))?;
        boot(&node)?;
        // While kubeadm still waits, the agent already names the CSR.
        journal_says(
            &node,
            "has not finished TLS bootstrap",
            Duration::from_secs(90),
        )?;
        let j = node.journal(Some(kja_e2e::install::AGENT_UNIT))?;
        ensure!(
            j.contains("Initial timeout of 4s passed"),
            "kubeadm did not reach its silent wait:\n{j}"
        );
        let line = check_stopped(
            &node,
            "tls-bootstrap-stuck",
            69,
            &[
                "printed nothing for 20s",
                // With rotation on, the kubelet names its CSR csr-XXXXX, as the real one.
                "kubelet's certificate signing request csr-",
                "kubectl certificate approve csr-",
            ],
        )?;
        eprintln!("{line}");
        not_called_a_hang(&node)
    })());
}

#[test]
fn a_kubelet_stopped_during_the_bootstrap_is_named() {
    let (node, cp) = prepare("bootstrap_kubelet_stopped", |i| scaled(i, ""));
    let _a = artifacts::Guard::new("bootstrap_kubelet_stopped", &node, Some(&cp));
    must((|| {
        // Pending approval keeps the bootstrap from finishing before kubelet is stopped.
        cp.set_knobs(json!({"csr_approval": "manual"}))?;
        boot(&node)?;
        journal_says(&node, "kubelet.service started", Duration::from_secs(90))?;
        node.systemctl(&["stop", "kubelet.service"])?.ok()?;
        let line = check_stopped(
            &node,
            "tls-bootstrap-stuck",
            69,
            &["kubelet is not running", "journalctl -u kubelet"],
        )?;
        eprintln!("{line}");
        not_called_a_hang(&node)
    })());
}

#[test]
fn a_kubelet_that_cannot_create_its_csr_is_named() {
    // The cluster lacks the binding that lets bootstrap tokens create (and list) CSRs.
    let (node, cp) = prepare("bootstrap_no_csr", |i| scaled(i, ""));
    let _a = artifacts::Guard::new("bootstrap_no_csr", &node, Some(&cp));
    must((|| {
        cp.set_knobs(json!({"csr_create_forbidden": true}))?;
        boot(&node)?;
        let line = check_stopped(
            &node,
            "tls-bootstrap-stuck",
            69,
            &[
                "no certificate signing request can be made",
                "kubeadm:kubelet-bootstrap",
                "timed out waiting for the condition",
            ],
        )?;
        eprintln!("{line}");
        ensure!(
            !line.contains("standalone"),
            "a kubelet started with bootstrap credentials called standalone: {line}"
        );
        Ok(())
    })());
}
