//! Control-plane join scenarios (seed 000: a second control plane whose etcd learner
//! cannot be promoted). Each test boots its own node with the agent configured for a
//! control-plane join (`[join] control_plane = true`, a certificate key, an advertise
//! address of 127.0.0.10) against a real etcd 3.4 cluster running in the node's network
//! namespace (members on 127.0.0.1-3) and the fake API server serving the kubeadm-certs
//! Secret with that cluster's etcd CA. The harness plays kubelet for the node's etcd
//! static pod (`EtcdCluster::play_static_pod`).
//!
//! Every scenario first shows its fault (the failure or waiting line in the journal),
//! then, where the fault can be fixed, fixes it and sees the join complete.

use anyhow::{Result, anyhow, bail, ensure};
use kja_e2e::control_plane::FakeControlPlane;
use kja_e2e::etcd::EtcdCluster;
use kja_e2e::install::{self, AGENT_STATE_PATH, AGENT_UNIT, Install, KUBEADM_INVOCATIONS_LOG};
use kja_e2e::node::{Node, NodeSpec};
use kja_e2e::scenario::{boot, failure_lines, wait_joined};
use kja_e2e::{artifacts, wait};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The certificate key `kubeadm init phase upload-certs` would have printed.
const CERT_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const CERT_KEY_PATH: &str = "/etc/kube-join-agent/certificate-key";
const ADVERTISE: &str = "127.0.0.10";
const OWN_PEER_URL: &str = "https://127.0.0.10:2380";
const JOIN_TIMEOUT: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(500);

/// Field order matters: the etcd processes go first, the node last.
struct Scene {
    etcd: Arc<EtcdCluster>,
    api: FakeControlPlane,
    node: Node,
}

struct Options<'a> {
    /// Loopback addresses of the existing members.
    members: &'a [&'a str],
    /// `[etcd] remove_stale_learners`.
    remove_stale: bool,
    /// The fake kubeadm's knobs.
    kubeadm_env: &'a str,
}

fn must(r: Result<()>, scene: &Scene) {
    if let Err(e) = r {
        panic!("{e:#}\netcd logs:\n{}", scene.etcd.logs());
    }
}

/// Node, fake API server and etcd PKI, agent installed for a control-plane join; nothing
/// started but the API server.
fn prepare(test: &str, o: Options<'_>) -> Scene {
    if let Err(e) = kja_e2e::require_root() {
        panic!("{e:#}");
    }
    let node = Node::create(NodeSpec::new(&kja_e2e::node_name(test)))
        .unwrap_or_else(|e| panic!("creating the node: {e:#}"));
    let api = FakeControlPlane::start(node.netns(), node.dir().join("apiserver"))
        .unwrap_or_else(|e| panic!("starting the fake API server: {e:#}"));
    let etcd = Arc::new(
        EtcdCluster::create(node.netns(), node.dir().join("etcd"), o.members)
            .unwrap_or_else(|e| panic!("preparing etcd: {e:#}")),
    );
    api.set_knobs(json!({
        "kubeadm_certs": {
            "certificate_key": CERT_KEY,
            "etcd_ca_dir": etcd.ca_dir().display().to_string(),
        },
        "etcd_pods": etcd.pods_knob(),
    }))
    .unwrap_or_else(|e| panic!("{e:#}"));
    let pin = api.pin().unwrap_or_else(|e| panic!("{e:#}"));
    let toml = format!(
        "[join]\ncontrol_plane = true\ncertificate_key_file = \"{CERT_KEY_PATH}\"\nadvertise_address = \"{ADVERTISE}\"\n\
         [etcd]\nendpoints = [\"{}\"]\nhealthy_timeout = \"90s\"\nlearner_sync_timeout = \"90s\"\nremove_stale_learners = {}\n\
         [retry]\nmax_attempts = 12\ninitial_backoff = \"2s\"\nmax_backoff = \"4s\"\n",
        etcd.client_urls()[0],
        o.remove_stale
    );
    let what = Install::agent(&pin)
        .extra_toml(&toml)
        .kubeadm_env(o.kubeadm_env)
        .file(CERT_KEY_PATH, format!("{CERT_KEY}\n"), 0o600);
    install::install(&node, &what).unwrap_or_else(|e| panic!("installing into the node: {e:#}"));
    Scene { etcd, api, node }
}

/// The agent's journal entries of this boot.
fn agent_entries(node: &Node) -> Result<Vec<Value>> {
    node.journal_entries(Some(AGENT_UNIT))
}

fn message(e: &Value) -> &str {
    e["MESSAGE"].as_str().unwrap_or_default()
}

/// Waits for a journal line of the agent containing all of `needles`; returns it.
fn wait_for_line(node: &Node, what: &str, needles: &[&str], timeout: Duration) -> Result<String> {
    wait::until_ok(what, timeout, POLL, || {
        let entries = agent_entries(node)?;
        if let Some(e) = entries
            .iter()
            .find(|e| needles.iter().all(|n| message(e).contains(n)))
        {
            return Ok(message(e).to_string());
        }
        let tail: Vec<&str> = entries.iter().rev().take(5).map(message).collect();
        bail!("last agent lines: {tail:?}")
    })
}

/// What every successful control-plane join must show.
fn check_control_plane_joined(s: &Scene) -> Result<()> {
    let node = &s.node;
    let member = s
        .etcd
        .member(OWN_PEER_URL)?
        .ok_or_else(|| anyhow!("no etcd member with peer URL {OWN_PEER_URL}"))?;
    ensure!(
        member["isLearner"] != Value::Bool(true),
        "this node's member is still a learner: {member}"
    );
    ensure!(
        member["name"] == node.name(),
        "this node's member is not named after the node: {member}"
    );
    let obj = s
        .api
        .node(node.name())
        .ok_or_else(|| anyhow!("no Node {} on the fake API server", node.name()))?;
    ensure!(
        obj["metadata"]["labels"]
            .get("node-role.kubernetes.io/control-plane")
            .is_some(),
        "the Node has no control-plane label: {obj}"
    );
    ensure!(
        obj["spec"]["taints"]
            .to_string()
            .contains("node-role.kubernetes.io/control-plane"),
        "the Node has no control-plane taint: {obj}"
    );
    let invocations = node
        .read_to_string(KUBEADM_INVOCATIONS_LOG)
        .unwrap_or_default();
    let order = [
        "join phase preflight",
        "join phase control-plane-prepare all",
        "join phase kubelet-start",
        "join phase control-plane-join etcd",
        "join phase control-plane-join mark-control-plane",
    ];
    let mut at = 0;
    for step in order {
        at = invocations[at..]
            .find(step)
            .map(|i| at + i)
            .ok_or_else(|| {
                anyhow!("kubeadm invocations lack {step:?} (in order):\n{invocations}")
            })?;
    }
    ensure!(
        node.unit_state("kubelet.service")? == "active",
        "kubelet is not active after the join"
    );
    check_key_not_leaked(node)
}

/// The certificate key appears in no log: journal (all fields), state, invocations.
fn check_key_not_leaked(node: &Node) -> Result<()> {
    let journal = node.journalctl(&["-o", "export"])?;
    ensure!(
        !journal.contains(CERT_KEY),
        "the certificate key is in the journal"
    );
    ensure!(
        !node
            .read_to_string(KUBEADM_INVOCATIONS_LOG)
            .unwrap_or_default()
            .contains(CERT_KEY),
        "the certificate key is on kubeadm's command line"
    );
    ensure!(
        !node.read_to_string(AGENT_STATE_PATH)?.contains(CERT_KEY),
        "the certificate key is in state.json"
    );
    Ok(())
}

fn exit_status(node: &Node) -> Result<String> {
    Ok(node
        .systemctl(&["show", "-p", "ExecMainStatus", "--value", AGENT_UNIT])?
        .trimmed()
        .to_string())
}

#[test]
fn stale_learner_is_reported_with_its_removal_command() {
    let s = prepare(
        "cp_stale_learner_reported",
        Options {
            members: &["127.0.0.1"],
            remove_stale: false,
            kubeadm_env: "TIMEOUT_SCALE=0.1\n",
        },
    );
    let _artifacts = artifacts::Guard::new("cp_stale_learner_reported", &s.node, Some(&s.api));
    let r = (|| -> Result<()> {
        s.etcd.start_all()?;
        s.etcd.wait_leader(Duration::from_secs(20))?;
        // A failed join's leftover: added as a learner, its etcd never started.
        let stale = s.etcd.add_stale_learner("https://127.0.0.20:2380")?;
        s.etcd.play_static_pod(&s.node, Duration::ZERO)?;
        let t0 = boot(&s.node)?;
        wait::until_ok("the agent to stop", JOIN_TIMEOUT, POLL, || {
            let unit = s.node.unit_state(AGENT_UNIT)?;
            ensure!(unit == "failed", "{AGENT_UNIT} is {unit}");
            Ok(())
        })?;
        eprintln!("agent stopped {:?} after boot start", t0.elapsed());
        ensure!(
            exit_status(&s.node)? == "78",
            "exit status {}",
            exit_status(&s.node)?
        );
        let f = failure_lines(&s.node)?;
        let (_, text) = f
            .iter()
            .find(|(c, _)| c == "etcd-stale-learner")
            .ok_or_else(|| anyhow!("no FAILURE=etcd-stale-learner line; failures: {f:?}"))?;
        eprintln!("diagnosis: {text}");
        let command = format!(
            "etcdctl --endpoints https://127.0.0.1:2379 --cacert /etc/kubernetes/pki/etcd/ca.crt --cert /etc/kubernetes/pki/apiserver-etcd-client.crt --key /etc/kubernetes/pki/apiserver-etcd-client.key member remove {stale}"
        );
        ensure!(
            text.contains(&format!("id {stale}")),
            "member not named: {text}"
        );
        ensure!(
            text.contains(&command),
            "no removal command {command:?}: {text}"
        );
        ensure!(
            text.contains("remove_stale_learners"),
            "no hint at the setting: {text}"
        );
        ensure!(
            f.iter().all(|(c, _)| c == "etcd-stale-learner"),
            "other failures first: {f:?}"
        );
        // Nothing was changed: the learner is still there, this node never joined etcd.
        ensure!(
            s.etcd.member("https://127.0.0.20:2380")?.is_some(),
            "the stale learner is gone"
        );
        ensure!(
            s.etcd.member(OWN_PEER_URL)?.is_none(),
            "this node was added to etcd"
        );
        let invocations = s
            .node
            .read_to_string(KUBEADM_INVOCATIONS_LOG)
            .unwrap_or_default();
        ensure!(
            !invocations.contains("kubelet-start"),
            "kubeadm went past the etcd check:\n{invocations}"
        );
        ensure!(
            s.node.unit_state("kubelet.service")? != "active",
            "kubelet runs after a stopped join"
        );
        check_key_not_leaked(&s.node)
    })();
    must(r, &s);
}

#[test]
fn stale_learner_is_removed_when_allowed() {
    let s = prepare(
        "cp_stale_learner_removed",
        Options {
            members: &["127.0.0.1"],
            remove_stale: true,
            kubeadm_env: "TIMEOUT_SCALE=0.1\n",
        },
    );
    let _artifacts = artifacts::Guard::new("cp_stale_learner_removed", &s.node, Some(&s.api));
    let r = (|| -> Result<()> {
        s.etcd.start_all()?;
        s.etcd.wait_leader(Duration::from_secs(20))?;
        let stale = s.etcd.add_stale_learner("https://127.0.0.20:2380")?;
        s.etcd.play_static_pod(&s.node, Duration::from_secs(1))?;
        let t0 = boot(&s.node)?;
        let line = wait_for_line(
            &s.node,
            "the agent to remove the stale learner",
            &["removing stale etcd learner", &format!("id {stale}")],
            JOIN_TIMEOUT,
        )?;
        eprintln!("{line}");
        let state = wait_joined(&s.node, JOIN_TIMEOUT)?;
        eprintln!("joined {:?} after boot start: {state}", t0.elapsed());
        ensure!(
            s.etcd.member("https://127.0.0.20:2380")?.is_none(),
            "the stale learner is still a member"
        );
        ensure!(
            failure_lines(&s.node)?.is_empty(),
            "failures: {:?}",
            failure_lines(&s.node)?
        );
        check_control_plane_joined(&s)
    })();
    must(r, &s);
}

/// Our learner is added but its etcd starts only 25 s later, after kubeadm's own
/// promotion attempts (etcdAPICall 2m x TIMEOUT_SCALE 0.1 = 12 s) ran out. With
/// `rerun_phase` the kubeadm release's learner add is idempotent and the agent runs the
/// phase again once the learner is in sync; otherwise it promotes the learner itself.
fn learner_not_started_yet(test: &str, version: &str, rerun_phase: bool) {
    let s = prepare(
        test,
        Options {
            members: &["127.0.0.1"],
            remove_stale: false,
            kubeadm_env: &format!("VERSION={version}\nTIMEOUT_SCALE=0.1\n"),
        },
    );
    let _artifacts = artifacts::Guard::new(test, &s.node, Some(&s.api));
    let r = (|| -> Result<()> {
        s.etcd.start_all()?;
        s.etcd.wait_leader(Duration::from_secs(20))?;
        s.etcd.play_static_pod(&s.node, Duration::from_secs(25))?;
        let t0 = boot(&s.node)?;
        let refused = wait_for_line(
            &s.node,
            "kubeadm's promotion to be refused",
            &["can only promote a learner member which is in sync with leader"],
            JOIN_TIMEOUT,
        )?;
        eprintln!("{:?}: {refused}", t0.elapsed());
        let stuck = wait_for_line(
            &s.node,
            "the agent to report the learner not started",
            &["etcd learner", "has not started"],
            Duration::from_secs(30),
        )?;
        eprintln!("{:?}: {stuck}", t0.elapsed());
        ensure!(
            !s.etcd.is_running(s.node.name()),
            "the node's etcd already runs: the fault was not there"
        );
        let state = wait_joined(&s.node, JOIN_TIMEOUT)?;
        eprintln!("joined {:?} after boot start: {state}", t0.elapsed());
        let entries = agent_entries(&s.node)?;
        ensure!(
            entries
                .iter()
                .any(|e| message(e).contains("etcd refused to promote")),
            "the agent did not say it watches the learner"
        );
        ensure!(
            entries
                .iter()
                .any(|e| message(e).contains("in sync: learner applied index")),
            "the agent never saw the learner in sync"
        );
        let promoted_itself = entries
            .iter()
            .any(|e| message(e).contains("promoted this node's learner"));
        let invocations = s
            .node
            .read_to_string(KUBEADM_INVOCATIONS_LOG)
            .unwrap_or_default();
        let etcd_runs = invocations.matches("control-plane-join etcd").count();
        if rerun_phase {
            ensure!(
                etcd_runs == 2 && !promoted_itself,
                "expected kubeadm's etcd phase run twice and no promotion by the agent; runs {etcd_runs}, promoted by the agent: {promoted_itself}"
            );
        } else {
            ensure!(
                etcd_runs == 1 && promoted_itself,
                "expected one etcd phase run and the agent's own promotion; runs {etcd_runs}, promoted by the agent: {promoted_itself}"
            );
        }
        ensure!(
            failure_lines(&s.node)?.is_empty(),
            "failures: {:?}",
            failure_lines(&s.node)?
        );
        check_control_plane_joined(&s)
    })();
    must(r, &s);
}

#[test]
fn learner_not_started_yet_is_waited_for() {
    // v1.29.7 fails a re-run of the etcd phase on an existing learner ("Peer URLs already
    // exists"): the agent promotes the learner itself.
    learner_not_started_yet("cp_learner_not_in_sync", "v1.29.7", false);
}

#[test]
fn learner_not_started_yet_phase_rerun_on_fixed_kubeadm() {
    // v1.29.10 (kubernetes PR #127491) skips the add of an existing member: the agent
    // runs the phase again and kubeadm promotes.
    learner_not_started_yet("cp_learner_not_in_sync_rerun", "v1.29.10", true);
}

#[test]
fn closed_peer_port_is_named() {
    let s = prepare(
        "cp_peer_unreachable",
        Options {
            members: &["127.0.0.1", "127.0.0.2", "127.0.0.3"],
            remove_stale: false,
            kubeadm_env: "TIMEOUT_SCALE=0.1\n",
        },
    );
    let _artifacts = artifacts::Guard::new("cp_peer_unreachable", &s.node, Some(&s.api));
    let r = (|| -> Result<()> {
        s.etcd.start_all()?;
        s.etcd.wait_leader(Duration::from_secs(20))?;
        // Member 3 goes away: a quorum of two remains, but its port 2380 is closed.
        s.etcd.stop(2);
        s.etcd.play_static_pod(&s.node, Duration::from_secs(1))?;
        let t0 = boot(&s.node)?;
        let f = wait::until_ok(
            "a FAILURE=etcd-peer-unreachable line",
            JOIN_TIMEOUT,
            POLL,
            || {
                let f = failure_lines(&s.node)?;
                f.iter()
                    .find(|(c, _)| c == "etcd-peer-unreachable")
                    .map(|(_, m)| m.clone())
                    .ok_or_else(|| anyhow!("failures so far: {f:?}"))
            },
        )?;
        eprintln!("{:?}: {f}", t0.elapsed());
        ensure!(
            f.contains("https://127.0.0.3:2380"),
            "the closed URL is not named: {f}"
        );
        ensure!(f.contains("etcd-3"), "the member is not named: {f}");
        ensure!(
            s.etcd.member(OWN_PEER_URL)?.is_none(),
            "this node was added to etcd"
        );
        // Fixed: the member comes back; the agent's next attempt joins.
        s.etcd.start(2)?;
        let state = wait_joined(&s.node, JOIN_TIMEOUT)?;
        eprintln!("joined {:?} after boot start: {state}", t0.elapsed());
        check_control_plane_joined(&s)
    })();
    must(r, &s);
}

#[test]
fn leader_not_yet_elected_is_waited_for() {
    let s = prepare(
        "cp_no_leader_yet",
        Options {
            members: &["127.0.0.1", "127.0.0.2"],
            remove_stale: false,
            kubeadm_env: "TIMEOUT_SCALE=0.1\n",
        },
    );
    let _artifacts = artifacts::Guard::new("cp_no_leader_yet", &s.node, Some(&s.api));
    let r = (|| -> Result<()> {
        // One of two members: no quorum, no leader.
        s.etcd.start(0)?;
        s.etcd.play_static_pod(&s.node, Duration::from_secs(1))?;
        let t0 = boot(&s.node)?;
        let line = wait_for_line(
            &s.node,
            "the agent to wait for a leader",
            // A member without a quorum accepts TCP but serves no client until its
            // cluster has a leader: the agent says so.
            &["waiting for etcd", "once its cluster has a leader"],
            JOIN_TIMEOUT,
        )?;
        eprintln!("{:?}: {line}", t0.elapsed());
        ensure!(
            !s.etcd.has_leader(),
            "a leader exists: the fault was not there"
        );
        std::thread::sleep(Duration::from_secs(10));
        let invocations = s
            .node
            .read_to_string(KUBEADM_INVOCATIONS_LOG)
            .unwrap_or_default();
        ensure!(
            !invocations.contains("kubelet-start"),
            "the agent let kubeadm go on without an etcd leader:\n{invocations}"
        );
        s.etcd.start(1)?;
        eprintln!("{:?}: second member started", t0.elapsed());
        let state = wait_joined(&s.node, JOIN_TIMEOUT)?;
        eprintln!("joined {:?} after boot start: {state}", t0.elapsed());
        ensure!(
            failure_lines(&s.node)?.is_empty(),
            "failures: {:?}",
            failure_lines(&s.node)?
        );
        check_control_plane_joined(&s)
    })();
    must(r, &s);
}
