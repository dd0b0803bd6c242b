//! Tests of the harness itself: a node boots, is reachable, keeps its disk across a
//! reboot, and cleans up after itself; the fake control plane answers from inside it and a
//! hand-run fake kubeadm join works there.

use anyhow::{Context, Result, bail, ensure};
use kja_e2e::control_plane::FakeControlPlane;
use kja_e2e::install::{self, DEFAULT_TOKEN, Install, KUBEADM_INVOCATIONS_LOG};
use kja_e2e::node::{Node, NodeSpec};
use kja_e2e::{artifacts, wait};
use std::path::Path;
use std::time::Duration;

fn must(r: Result<()>) {
    if let Err(e) = r {
        panic!("{e:#}");
    }
}

/// Node plumbing only (no fakes needed): boot, exec, files, journal, reboot persistence,
/// network isolation, cleanup.
#[test]
fn node_lifecycle() {
    must(kja_e2e::require_root());
    let name = kja_e2e::node_name("node_lifecycle");
    let node = Node::create(NodeSpec::new(&name)).expect("create node");
    let _artifacts = artifacts::Guard::new("node_lifecycle", &node, None);
    must(lifecycle(&node));
    let dir = node.dir().to_path_buf();
    let merged = node.merged().to_path_buf();
    let netns = node.netns().path().to_path_buf();
    drop(_artifacts);
    drop(node);
    assert!(
        !is_mounted(&merged),
        "{} still mounted after drop",
        merged.display()
    );
    assert!(
        !netns.exists(),
        "{} still there after drop",
        netns.display()
    );
    assert!(
        !dir.exists(),
        "{} still there after a passing test",
        dir.display()
    );
}

fn is_mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(&*path.to_string_lossy()))
}

fn lifecycle(node: &Node) -> Result<()> {
    // Pre-seeded before boot, straight into the tree.
    node.write_file("/etc/kja-e2e-marker", b"seeded\n", 0o600)?;
    node.start()?;
    let state = node.wait_running()?;
    eprintln!("boot 1: {state}, {:?}", node.boot_timings());
    ensure!(
        node.exec_ok(&["cat", "/proc/1/comm"])?.trim() == "systemd",
        "PID 1 is not systemd"
    );
    ensure!(
        node.exec_ok(&["hostname"])?.trim() == node.name(),
        "hostname is not the node name"
    );
    let machine_id = node.exec_ok(&["cat", "/etc/machine-id"])?;
    ensure!(machine_id.trim().len() == 32, "machine-id {machine_id:?}");
    ensure!(node.read_to_string("/etc/kja-e2e-marker")? == "seeded\n");
    // Only lo in the node's network; IPv4 forwarding on (set by the harness for the netns).
    let links = node.exec_ok(&["ip", "-o", "link"])?;
    ensure!(
        links.lines().count() == 1 && links.contains("lo:"),
        "unexpected links:\n{links}"
    );
    ensure!(
        node.exec_ok(&["cat", "/proc/sys/net/ipv4/ip_forward"])?
            .trim()
            == "1"
    );
    // exec reports exit codes and stderr, and enforces its deadline.
    let out = node.exec(&["sh", "-c", "echo out; echo err >&2; exit 3"])?;
    ensure!(
        out.code() == Some(3) && out.stdout == "out\n" && out.stderr == "err\n",
        "{out}"
    );
    let t = std::time::Instant::now();
    ensure!(
        node.exec_timeout(&["sleep", "30"], Duration::from_secs(1))
            .is_err()
    );
    ensure!(t.elapsed() < Duration::from_secs(5), "timeout not enforced");
    // Files in /run go through exec; the rest through the merged tree.
    node.write_file("/run/kja-e2e/volatile", b"v\n", 0o644)?;
    ensure!(node.read_to_string("/run/kja-e2e/volatile")? == "v\n");
    node.write_file("/var/lib/kja-e2e/persistent", b"p\n", 0o644)?;
    ensure!(node.exec_ok(&["cat", "/var/lib/kja-e2e/persistent"])? == "p\n");
    ensure!(
        node.unit_state("containerd")? == "active",
        "containerd not active"
    );
    ensure!(node.exists("/run/containerd/containerd.sock")?);
    node.exec_ok(&["logger", "-t", "kja-e2e", "marker-boot-1"])?;
    let journal = wait::until_ok(
        "the marker in the journal",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || {
            let j = node.journal(None)?;
            if j.contains("marker-boot-1") {
                Ok(j)
            } else {
                bail!("not yet")
            }
        },
    )?;
    ensure!(journal.contains("Reached target") || journal.contains("Startup finished"));
    let first_boot = node.exec_ok(&["cat", "/proc/sys/kernel/random/boot_id"])?;

    node.reboot()?;
    let state = node.wait_running()?;
    eprintln!("boot 2: {state}, {:?}", node.boot_timings());
    let second_boot = node.exec_ok(&["cat", "/proc/sys/kernel/random/boot_id"])?;
    ensure!(first_boot != second_boot, "boot id did not change");
    ensure!(
        node.exec_ok(&["cat", "/var/lib/kja-e2e/persistent"])? == "p\n",
        "disk not kept"
    );
    ensure!(
        !node.exists("/run/kja-e2e/volatile")?,
        "/run survived a reboot"
    );
    ensure!(
        machine_id == node.exec_ok(&["cat", "/etc/machine-id"])?,
        "machine-id changed"
    );
    ensure!(
        !node.journal(None)?.contains("marker-boot-1"),
        "-b shows the previous boot"
    );
    ensure!(
        node.journalctl(&["-o", "cat"])?.contains("marker-boot-1"),
        "journal not persistent across boots"
    );
    let timings = node.boot_timings();
    ensure!(timings.len() == 2 && !timings[0].killed, "{timings:?}");
    // Pulling the plug: SIGKILL to the container's PID 1 takes everything in the node
    // with it, so the next boot's containerd gets its database lock.
    node.poweroff_within(Duration::ZERO)?;
    ensure!(
        node.boot_timings()[1].killed,
        "forced poweroff not recorded"
    );
    node.start()?;
    node.wait_running()?;
    ensure!(
        node.unit_state("containerd")? == "active",
        "containerd not active after a forced poweroff"
    );
    node.poweroff()?;
    ensure!(!node.is_booted());
    // The journal is still readable from the host after poweroff (for artifacts).
    ensure!(node.journalctl(&["-o", "cat"])?.contains("marker-boot-1"));
    Ok(())
}

/// The whole fake world, driven by hand: containerd, the fake API server seen from inside
/// the node, and a manual `kubeadm join` with the fake kubeadm and kubelet; then a reboot.
#[test]
fn harness_smoke() {
    must(kja_e2e::require_root());
    let name = kja_e2e::node_name("harness_smoke");
    let node = Node::create(NodeSpec::new(&name)).expect("create node");
    let cp = FakeControlPlane::start(node.netns(), node.dir().join("apiserver"))
        .expect("start the fake API server");
    let _artifacts = artifacts::Guard::new("harness_smoke", &node, Some(&cp));
    must(smoke(&node, &cp));
}

fn join_configuration(node: &str, pin: &str) -> String {
    format!(
        "apiVersion: kubeadm.k8s.io/v1beta3
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: 127.0.0.1:6443
    token: {DEFAULT_TOKEN}
    caCertHashes:
    - {pin}
nodeRegistration:
  name: {node}
  criSocket: unix:///run/containerd/containerd.sock
"
    )
}

/// GET over TLS from inside the node (the root has no curl, but openssl), verifying the
/// server against the CA at `ca` (a path in the node).
fn https_get_from_node(node: &Node, path: &str, ca: &str) -> Result<String> {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:6443\r\nConnection: close\r\n\r\n");
    let out = node.exec_with(
        &[
            "openssl",
            "s_client",
            "-connect",
            "127.0.0.1:6443",
            "-quiet",
            "-ign_eof",
            "-CAfile",
            ca,
            "-verify_return_error",
        ],
        Some(request.as_bytes()),
        Duration::from_secs(20),
    )?;
    Ok(out.stdout)
}

fn smoke(node: &Node, cp: &FakeControlPlane) -> Result<()> {
    install::install(node, &Install::fakes_only())?;
    node.start()?;
    let state = node.wait_running()?;
    eprintln!("boot 1: {state}, {:?}", node.boot_timings());
    ensure!(
        node.exec_ok(&["cat", "/proc/1/comm"])?.trim() == "systemd",
        "PID 1 is not systemd"
    );
    ensure!(
        node.unit_state("containerd")? == "active",
        "containerd is not active"
    );
    ensure!(
        node.exists("/run/containerd/containerd.sock")?,
        "no CRI socket"
    );

    // The node reaches the fake API server on its own 127.0.0.1:6443, the server proves
    // it holds the CA the harness pins, and the pin is SHA-256 over that CA's SPKI.
    let ca = std::fs::read(cp.dir().join("ca.crt")).context("reading the fake CA")?;
    node.write_file("/root/ca.crt", &ca, 0o644)?;
    let pin = cp.pin()?;
    let spki_hash = node.exec_ok(&[
        "sh",
        "-c",
        "openssl x509 -in /root/ca.crt -noout -pubkey | openssl pkey -pubin -outform der | sha256sum",
    ])?;
    ensure!(
        pin == format!(
            "sha256:{}",
            spki_hash.split_whitespace().next().unwrap_or_default()
        ),
        "pin {pin} is not the CA's SPKI hash {spki_hash}"
    );
    let health = https_get_from_node(node, "/healthz", "/root/ca.crt")?;
    ensure!(
        health
            .lines()
            .next()
            .is_some_and(|l| l.starts_with("HTTP/1.") && l.contains(" 200"))
            && health.trim_end().ends_with("ok"),
        "healthz from inside the node:\n{health}"
    );

    // kubelet enabled but without config: it must not be running a join yet.
    ensure!(!node.exists("/etc/kubernetes/kubelet.conf")?);
    node.write_file(
        "/root/join.yaml",
        join_configuration(node.name(), &pin).as_bytes(),
        0o600,
    )?;
    let join = node.exec_timeout(
        &["kubeadm", "join", "--config", "/root/join.yaml"],
        Duration::from_secs(180),
    )?;
    ensure!(join.success(), "kubeadm join failed: {join}");
    eprintln!("kubeadm join output:\n{}{}", join.stdout, join.stderr);

    wait::until_ok(
        "kubelet active",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || {
            let s = node.unit_state("kubelet")?;
            if s == "active" {
                Ok(())
            } else {
                bail!("kubelet is {s}")
            }
        },
    )?;
    for f in [
        "/etc/kubernetes/kubelet.conf",
        "/var/lib/kubelet/pki/kubelet-client-current.pem",
    ] {
        ensure!(node.exists(f)?, "{f} missing after the join");
    }
    ensure!(
        !node.exists("/etc/kubernetes/bootstrap-kubelet.conf")?,
        "bootstrap-kubelet.conf left behind"
    );
    let node_obj = wait::until_ok(
        "the Node on the fake API server",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || cp.node(node.name()).context("no Node object yet"),
    )?;
    eprintln!("Node object: {node_obj}");
    let invocations_before = node
        .read_to_string(KUBEADM_INVOCATIONS_LOG)
        .unwrap_or_default();
    ensure!(
        invocations_before.contains("join"),
        "invocation log has no join:\n{invocations_before}"
    );
    // Without the agent nothing gates kubelet: enabled like the Debian package, it started
    // at boot before kubeadm wrote its config and failed, exactly the line the worker_join
    // scenarios require to be absent (so that check can fail).
    let kubelet_journal = node.journal(Some("kubelet.service"))?;
    ensure!(
        kubelet_journal.contains("failed to load kubelet config file"),
        "the ungated fake kubelet did not fail for lack of config at boot:\n{kubelet_journal}"
    );

    node.reboot()?;
    let state = node.wait_running()?;
    eprintln!("boot 2: {state}, {:?}", node.boot_timings());
    wait::until_ok(
        "kubelet active after reboot",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || {
            let s = node.unit_state("kubelet")?;
            if s == "active" {
                Ok(())
            } else {
                bail!("kubelet is {s}")
            }
        },
    )?;
    let invocations_after = node
        .read_to_string(KUBEADM_INVOCATIONS_LOG)
        .unwrap_or_default();
    ensure!(
        invocations_after == invocations_before,
        "kubeadm ran again on reboot:\n{invocations_after}"
    );
    let kubelet_journal = node.journal(Some("kubelet.service"))?;
    ensure!(
        !kubelet_journal.contains("assuming standalone kubelet"),
        "kubelet fell back to standalone mode after reboot:\n{kubelet_journal}"
    );
    Ok(())
}
