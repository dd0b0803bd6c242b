//! The real-Kubernetes tier (tests/real/README.md): kubeadm, kubelet, kube-apiserver and
//! kube-controller-manager v1.20.2 built from Debian's source package, a real control
//! plane in the node's network namespace, a real systemd node. `real_bare_kubeadm_join`
//! runs without the agent: it proves the tier itself works, so that the agent's scenarios
//! (`agent.rs`, the agent installed from its .deb) fail only for the agent's reasons.
//! The first run builds the binaries (tests/real/build-kubernetes.sh, 16-30 minutes),
//! later runs reuse the cache. At most `KJA_REAL_PARALLEL` (default 4) scenarios run at
//! once, whatever `--test-threads` says.

mod agent;

use anyhow::{Result, ensure};
use kja_e2e::node::Node;
use kja_e2e::real::agent::Slot;
use kja_e2e::real::artifacts::Guard;
use kja_e2e::real::control_plane::{ENDPOINT, NODE_IP, RealControlPlane, condition};
use kja_e2e::real::timed;
use kja_e2e::wait;
use std::time::{Duration, Instant};

// The preflight checks real kubeadm 1.20 fails on these nodes. (kubeadm talks to a CRI
// runtime only through crictl; without it, it prints a warning and skips its `CRI` check
// instead of failing it.)
use kja_e2e::real::agent::PREFLIGHT_ERRORS_WITHOUT_CRICTL;

/// What kubeadm 1.20 prints (stdout) when it cannot talk to the CRI runtime.
const CRICTL_WARNING: &str = "[preflight] WARNING: Couldn't create the interface used for talking to the container runtime: crictl is required for container runtime: exec: \"crictl\": executable file not found in $PATH";

fn must(r: Result<()>) {
    if let Err(e) = r {
        panic!("{e:#}");
    }
}

/// A node with the real image, not booted, and a real control plane in its namespace.
fn prepare(test: &str) -> (Node, RealControlPlane) {
    kja_e2e::real::agent::prepare(test).unwrap_or_else(|e| panic!("{e:#}"))
}

/// `[ERROR <name>]` names in kubeadm's preflight output, sorted.
fn preflight_errors(output: &str) -> Vec<String> {
    let mut names: Vec<String> = output
        .lines()
        .filter_map(|l| l.split("[ERROR ").nth(1)?.split(']').next())
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn real_bare_kubeadm_join() {
    let _slot = Slot::take("real_bare_kubeadm_join");
    let (node, cp) = prepare("real_bare_kubeadm_join");
    let _artifacts = Guard::new("real_bare_kubeadm_join", &node, &cp);
    must((|| {
        let token = cp.create_token()?;
        // The pin as the harness computes it is the pin kubeadm itself prints.
        let pin = cp.pin()?;
        let admin = cp.admin_conf().display().to_string();
        let printed = cp
            .kubeadm(&[
                "token",
                "create",
                "--print-join-command",
                "--kubeconfig",
                &admin,
            ])?
            .ok()?;
        ensure!(
            printed
                .stdout
                .contains(&format!("--discovery-token-ca-cert-hash {pin}")),
            "kubeadm's join command does not carry the pin {pin}: {}",
            printed.stdout
        );
        cp.wait_token_signed(&token, Duration::from_secs(60))?;

        node.start()?;
        node.wait_running()?;
        let join = [
            "kubeadm",
            "join",
            ENDPOINT,
            "--token",
            &token,
            "--discovery-token-ca-cert-hash",
            &pin,
        ];

        // Without crictl, preflight fails on exactly the crictl check and changes nothing.
        // kubeadm 1.20 exits 1 here, not 2: its exit-code switch sees the phase runner's
        // wrapped error, not the preflight error type.
        let out = node.exec_timeout(&join, Duration::from_secs(120))?;
        let text = format!("{}{}", out.stdout, out.stderr);
        ensure!(
            out.code() == Some(1),
            "kubeadm join without ignored checks: expected exit code 1\n{out}"
        );
        ensure!(
            out.stdout.contains(CRICTL_WARNING),
            "no warning about crictl on stdout\n{out}"
        );
        ensure!(
            preflight_errors(&text) == PREFLIGHT_ERRORS_WITHOUT_CRICTL,
            "preflight errors {:?}, expected {PREFLIGHT_ERRORS_WITHOUT_CRICTL:?}\n{out}",
            preflight_errors(&text)
        );
        for file in [
            "/etc/kubernetes/bootstrap-kubelet.conf",
            "/var/lib/kubelet/config.yaml",
        ] {
            ensure!(
                !node.exists(file)?,
                "{file} exists after a failed preflight"
            );
        }

        // With them ignored, the join completes.
        let ignore = format!(
            "--ignore-preflight-errors={}",
            PREFLIGHT_ERRORS_WITHOUT_CRICTL.join(",")
        );
        let mut argv = join.to_vec();
        argv.push(&ignore);
        let t0 = Instant::now();
        let joined = timed::run_in_node(&node, &argv, Duration::from_secs(300))?;
        eprintln!("kubeadm join:\n{}", joined.transcript());
        ensure!(
            joined.code() == Some(0),
            "kubeadm join exited with {:?}:\n{}",
            joined.status,
            joined.transcript()
        );
        ensure!(
            joined.find("This node has joined the cluster").is_some(),
            "no join-complete message:\n{}",
            joined.transcript()
        );
        ensure!(
            !node.exists("/etc/kubernetes/bootstrap-kubelet.conf")?,
            "bootstrap-kubelet.conf is left behind"
        );
        for file in [
            "/etc/kubernetes/kubelet.conf",
            "/etc/kubernetes/pki/ca.crt",
            "/var/lib/kubelet/config.yaml",
            "/var/lib/kubelet/kubeadm-flags.env",
            "/var/lib/kubelet/pki/kubelet-client-current.pem",
        ] {
            ensure!(node.exists(file)?, "{file} is missing after the join");
        }
        ensure!(
            node.unit_state("kubelet.service")? == "active",
            "kubelet is not active"
        );

        // The Node registers with the namespace's address and turns Ready.
        let name = node.name().to_string();
        let ready = wait::until_ok(
            "the Node to be Ready",
            Duration::from_secs(180),
            Duration::from_millis(500),
            || {
                let n = cp
                    .node(&name)?
                    .ok_or_else(|| anyhow::anyhow!("no Node {name}"))?;
                let ready = condition(&n, "Ready");
                ensure!(ready.as_deref() == Some("True"), "Ready={ready:?}");
                Ok(n)
            },
        )?;
        eprintln!(
            "Node {name} Ready {:.1}s after kubeadm join started",
            t0.elapsed().as_secs_f64()
        );
        let addresses = ready["status"]["addresses"].to_string();
        ensure!(
            addresses.contains(NODE_IP),
            "the Node's addresses {addresses} lack {NODE_IP}"
        );
        ensure!(
            ready["metadata"]["annotations"]["kubeadm.alpha.kubernetes.io/cri-socket"]
                .as_str()
                .is_some(),
            "kubeadm did not annotate the Node with its CRI socket: {}",
            ready["metadata"]
        );

        // Its client certificate came through the CSR the controller manager approved.
        let id = token.split('.').next().unwrap_or_default();
        let csrs = cp.csrs()?;
        let csr = csrs
            .iter()
            .find(|c| c["spec"]["username"] == format!("system:bootstrap:{id}"))
            .ok_or_else(|| anyhow::anyhow!("no CSR from system:bootstrap:{id} in {csrs:?}"))?;
        ensure!(
            condition(csr, "Approved").as_deref() == Some("True")
                && csr["status"]["certificate"].is_string(),
            "the kubelet's CSR is not approved and signed: {csr}"
        );
        Ok(())
    })());
}

#[test]
fn preflight_errors_are_parsed() {
    let out = "[preflight] Running pre-flight checks\n\
        \t[WARNING SystemVerification]: x\n\
        error execution phase preflight: [preflight] Some fatal errors occurred:\n\
        \t[ERROR FileExisting-crictl]: crictl not found in system path\n\
        \t[ERROR KubeletVersion]: couldn't get kubelet version\n\
        \t[ERROR FileExisting-crictl]: again\n";
    assert_eq!(
        preflight_errors(out),
        ["FileExisting-crictl", "KubeletVersion"]
    );
}
