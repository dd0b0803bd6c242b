//! Discovery meets what real API servers and networks answer: a starting API server's
//! 403 to anonymous requests (real kube-apiserver 1.20.2 answers so for about 5 s after
//! its port opens), a 403 that never ends (RBAC without kubeadm's cluster-info binding),
//! and hostile bodies on the unverified first fetch. Only the token's signature and the
//! CA pin may stop the agent at once; everything else is waited out until
//! `timeouts.discovery`.

use anyhow::ensure;
use kja_e2e::artifacts;
use kja_e2e::scenario::*;
use serde_json::json;
use std::time::Duration;

#[test]
fn a_warming_api_server_is_waited_out() {
    let (node, cp) = prepare("warming_api_server", |i| i);
    let _a = artifacts::Guard::new("warming_api_server", &node, Some(&cp));
    must((|| {
        cp.set_knobs(json!({"anonymous_forbidden_for_secs": 15}))?;
        boot(&node)?;
        journal_says(&node, "HTTP 403", Duration::from_secs(60))?;
        no_kubeadm_join(&node)?;
        wait_joined(&node, JOIN_TIMEOUT)?;
        check_joined(&node, &cp)?;
        let j = node.journal(Some(kja_e2e::install::AGENT_UNIT))?;
        ensure!(
            j.contains("waiting: API server") && j.contains("system:anonymous"),
            "the journal does not say what was waited for:\n{j}"
        );
        let failures = failure_lines(&node)?;
        ensure!(
            failures.is_empty(),
            "a warm-up counted as a failure: {failures:?}"
        );
        Ok(())
    })());
}

#[test]
fn a_403_that_never_ends_is_named_at_the_discovery_deadline() {
    let (node, cp) = prepare("forbidden_forever", |i| {
        i.extra_toml("[timeouts]\ndiscovery = \"20s\"\n")
    });
    let _a = artifacts::Guard::new("forbidden_forever", &node, Some(&cp));
    must((|| {
        cp.set_knobs(json!({"anonymous_forbidden": true}))?;
        let t0 = boot(&node)?;
        let line = check_stopped(
            &node,
            "cluster-info-invalid",
            78,
            &[
                "HTTP 403",
                "system:anonymous",
                "kubeadm:bootstrap-signer-clusterinfo",
                "timeouts.discovery",
            ],
        )?;
        eprintln!("{line}");
        ensure!(
            t0.elapsed() >= Duration::from_secs(20),
            "stopped before the discovery deadline"
        );
        no_kubeadm_join(&node)
    })());
}

#[test]
fn hostile_cluster_info_bodies_are_refused_and_retried() {
    let (node, cp) = prepare("hostile_cluster_info", |i| i);
    let _a = artifacts::Guard::new("hostile_cluster_info", &node, Some(&cp));
    must((|| {
        // A declared 768 MiB body, then an endless chunked one.
        cp.set_knobs(json!({"cluster_info_body": "oversized", "cluster_info_body_mib": 768}))?;
        boot(&node)?;
        journal_says(&node, "Content-Length 805306368", Duration::from_secs(60))?;
        cp.set_knobs(json!({"cluster_info_body": "endless"}))?;
        journal_says(&node, "cut off at the limit", Duration::from_secs(60))?;
        no_kubeadm_join(&node)?;
        let peak = agent_peak_rss_kib(&node)?;
        ensure!(
            peak < 64 * 1024,
            "the agent grew to {peak} KiB reading hostile bodies"
        );
        // The path is clean again: the agent, still retrying, joins.
        cp.set_knobs(json!({}))?;
        wait_joined(&node, JOIN_TIMEOUT)?;
        check_joined(&node, &cp)?;
        eprintln!("agent peak RSS while refusing the bodies: {peak} KiB");
        Ok(())
    })());
}
