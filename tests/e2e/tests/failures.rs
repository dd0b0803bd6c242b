//! Every failure from the incidents ends joined, or with the agent stopped, kubelet
//! masked, and one journal line (`FAILURE=<class>`) that names the cause and the fix.
//! Each scenario makes its failure happen in a real systemd node and checks the outcome.

use anyhow::{Result, bail, ensure};
use kja_e2e::artifacts;
use kja_e2e::install::AGENT_UNIT;
use kja_e2e::scenario::*;
use kja_e2e::wait;
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn main_pid(node: &kja_e2e::Node) -> Result<String> {
    Ok(unit_props(node, AGENT_UNIT)?
        .get("MainPID")
        .cloned()
        .unwrap_or_default())
}

#[test]
fn kubeadm_missing_fails_fast() {
    let (node, cp) = prepare("kubeadm_missing", |i| i);
    let _a = artifacts::Guard::new("kubeadm_missing", &node, Some(&cp));
    must((|| {
        node.remove_file("/usr/bin/kubeadm")?;
        boot(&node)?;
        let line = check_stopped(&node, "kubeadm-missing", 78, &["kubeadm", "install"])?;
        eprintln!("{line}");
        let state = agent_state(&node)?;
        ensure!(
            state["attempt"] == 1,
            "retried although kubeadm is missing: {state}"
        );
        Ok(())
    })());
}

#[test]
fn kubeadm_rejecting_the_config_fails_fast() {
    // `kubeadm version` claims 1.21, so the agent writes a v1beta2 JoinConfiguration,
    // which this (1.29) kubeadm no longer decodes: exit 3. The version-skew check would
    // stop a kubeadm that old before it runs (kubeadm_older_than_the_control_plane):
    // downgraded here, so kubeadm gets to reject the configuration.
    let (node, cp) = prepare("kubeadm_rejects_config", |i| {
        i.kubeadm_env("REPORTED_VERSION=v1.21.0\n")
            .extra_toml("[preflight]\nwarn_only = [\"version-skew\"]\n")
    });
    let _a = artifacts::Guard::new("kubeadm_rejects_config", &node, Some(&cp));
    must((|| {
        boot(&node)?;
        check_stopped(&node, "config-invalid", 78, &["exit 3", "v1beta2"])?;
        ensure!(
            join_invocations(&kubeadm_invocations(&node)).len() == 1,
            "retried a rejected configuration"
        );
        Ok(())
    })());
}

#[test]
fn kubeadm_older_than_the_control_plane_is_stopped_before_it_runs() {
    let (node, cp) = prepare("kubeadm_older_than_cp", |i| {
        i.kubeadm_env("REPORTED_VERSION=v1.21.0\n")
    });
    let _a = artifacts::Guard::new("kubeadm_older_than_cp", &node, Some(&cp));
    must((|| {
        boot(&node)?;
        check_stopped(
            &node,
            "preflight-failed",
            78,
            &["version-skew", "v1.21.0", "v1.29.7", "kubeadm v1.29"],
        )?;
        no_kubeadm_join(&node)
    })());
}

#[test]
fn ca_pin_mismatch_fails_fast_naming_both_hashes() {
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let (node, cp) = prepare("ca_pin_mismatch", |mut i| {
        if let Some(j) = &mut i.join {
            j.ca_cert_hashes = vec![wrong.clone()];
        }
        i
    });
    let _a = artifacts::Guard::new("ca_pin_mismatch", &node, Some(&cp));
    must((|| {
        boot(&node)?;
        let actual = cp.pin()?;
        check_stopped(
            &node,
            "ca-pin-mismatch",
            78,
            &[wrong.as_str(), actual.as_str()],
        )?;
        no_kubeadm_join(&node)
    })());
}

#[test]
fn kubeadm_preflight_failure_names_the_check() {
    let (node, cp) = prepare("kubeadm_preflight_port", |i| i);
    let _a = artifacts::Guard::new("kubeadm_preflight_port", &node, Some(&cp));
    must((|| {
        // Something else holds the kubelet's port: kubeadm's preflight refuses (exit 1 from a
        // whole join: the phase runner hides the preflight exit code).
        let squatter = kja_e2e::FakeControlPlane::start_on(
            node.netns(),
            node.dir().join("squatter"),
            "127.0.0.1:10250",
        )?;
        boot(&node)?;
        check_stopped(&node, "preflight-failed", 78, &["Port-10250", "exit 1"])?;
        drop(squatter);
        Ok(())
    })());
}

#[test]
fn leftovers_of_an_earlier_attempt_are_cleaned_before_joining() {
    let (node, cp) = prepare("leftovers_cleaned", |i| {
        i.file(
            "/etc/kubernetes/pki/ca.crt",
            "left by an earlier attempt\n",
            0o644,
        )
        .file("/etc/kubernetes/bootstrap-kubelet.conf", "stale\n", 0o600)
    });
    let _a = artifacts::Guard::new("leftovers_cleaned", &node, Some(&cp));
    must((|| {
        boot(&node)?;
        wait_joined(&node, JOIN_TIMEOUT)?;
        check_joined(&node, &cp)?;
        let j = node.journal(Some(AGENT_UNIT))?;
        ensure!(
            j.contains("kubeadm reset -f"),
            "no cleanup before the join:\n{j}"
        );
        let log = kubeadm_invocations(&node);
        let reset = log
            .find(" reset")
            .ok_or_else(|| anyhow::anyhow!("no reset in:\n{log}"))?;
        let join = log
            .find(" join")
            .ok_or_else(|| anyhow::anyhow!("no join in:\n{log}"))?;
        ensure!(reset < join, "reset did not come before the join:\n{log}");
        Ok(())
    })());
}

#[test]
fn expired_token_waits_for_a_new_one_without_a_restart() {
    let (node, cp) = prepare("expired_token", |i| {
        i.extra_toml("[timeouts]\ndiscovery = \"15s\"\n")
    });
    let _a = artifacts::Guard::new("expired_token", &node, Some(&cp));
    must((|| {
        cp.set_knobs(
            json!({"tokens": [{"id": "abcdef", "secret": "0123456789abcdef", "expired": true}]}),
        )?;
        boot(&node)?;
        let line = wait_failure(&node, "token-invalid", Duration::from_secs(90))?;
        ensure!(
            line.contains("abcdef") && line.contains("kubeadm token create"),
            "{line}"
        );
        ensure!(line.contains("waiting for a new token"), "{line}");
        no_kubeadm_join(&node)?;
        ensure!(
            node.unit_enablement("kubelet.service")? == "masked-runtime",
            "kubelet not masked while waiting"
        );
        let pid = main_pid(&node)?;
        // The operator creates a new token and drops it in.
        cp.set_knobs(json!({"tokens": [
            {"id": "abcdef", "secret": "0123456789abcdef", "expired": true},
            {"id": "ghijkl", "secret": "ghijklmnopqrstuv"}
        ]}))?;
        node.write_file(
            "/etc/kube-join-agent/token",
            b"ghijkl.ghijklmnopqrstuv\n",
            0o600,
        )?;
        wait_joined(&node, JOIN_TIMEOUT)?;
        check_joined(&node, &cp)?;
        ensure!(
            main_pid(&node)? == pid,
            "the agent restarted instead of picking up the new token"
        );
        let journal = node.journalctl(&["-o", "export"])?;
        ensure!(
            !journal.contains("ghijklmnopqrstuv"),
            "the new token's secret is in the journal"
        );
        Ok(())
    })());
}

#[test]
fn api_server_down_then_up_is_waited_for() {
    let (node, cp) = prepare("api_server_down", |i| i.extra_toml(FAST_RETRY));
    let _a = artifacts::Guard::new("api_server_down", &node, Some(&cp));
    must((|| {
        // First refusing connections, then answering 503 for a while: neither may
        // start kubeadm.
        let state_dir = cp.dir().to_path_buf();
        cp.stop();
        let t0 = boot(&node)?;
        journal_says(&node, "waiting: [wait] api-server", Duration::from_secs(30))?;
        let cp = kja_e2e::FakeControlPlane::restart(node.netns(), state_dir)?;
        cp.set_knobs(json!({"unavailable_until_unix": now_unix() + 15.0}))?;
        journal_says(&node, "503", Duration::from_secs(30))?;
        no_kubeadm_join(&node)?;
        ensure!(
            node.unit_enablement("kubelet.service")? == "masked-runtime",
            "kubelet not masked while waiting"
        );
        wait_joined(&node, JOIN_TIMEOUT)?;
        eprintln!("joined {:?} after boot", t0.elapsed());
        check_joined(&node, &cp)
    })());
}

#[test]
fn containerd_never_ready_is_diagnosed() {
    let (node, cp) = prepare("containerd_never_ready", |i| {
        i.containerd_enabled(false)
            .extra_toml("[containerd]\nready_timeout = \"10s\"\n[retry]\nmax_attempts = 1\n")
    });
    let _a = artifacts::Guard::new("containerd_never_ready", &node, Some(&cp));
    must((|| {
        boot(&node)?;
        check_stopped(
            &node,
            "containerd-not-ready",
            69,
            &["containerd", "systemctl status containerd"],
        )?;
        no_kubeadm_join(&node)
    })());
}

#[test]
fn containerd_remediation_restarts_it() {
    let (node, cp) = prepare("containerd_remediation", |i| {
        i.containerd_enabled(false)
            .extra_toml("[containerd]\nrestart_when_not_ready = true\nrestart_after = \"5s\"\n")
    });
    let _a = artifacts::Guard::new("containerd_remediation", &node, Some(&cp));
    must((|| {
        boot(&node)?;
        wait_joined(&node, JOIN_TIMEOUT)?;
        check_joined(&node, &cp)?;
        let j = node.journal(Some(AGENT_UNIT))?;
        ensure!(
            j.contains("restarting containerd.service"),
            "no remediation line:\n{j}"
        );
        Ok(())
    })());
}

/// containerd stops between the agent's runtime check and kubeadm's: kubeadm's preflight
/// fails its `CRI` check (`crictl info`), which is a runtime not ready, not a preflight
/// failure that needs an operator. The agent retries, its preflight waits for
/// containerd, restarts it (remediation on), and the node joins, the same process.
#[test]
fn containerd_gone_at_kubeadms_preflight_is_waited_for() {
    let real_crictl =
        std::fs::read(kja_e2e::paths::fake_bin("fake-crictl")).unwrap_or_else(|e| panic!("{e}"));
    // kubeadm's first `crictl info` (its CRI check) finds containerd just stopped.
    let shim = "#!/bin/sh\n\
        if [ ! -e /var/tmp/containerd-stopped-once ]; then\n\
        \ttouch /var/tmp/containerd-stopped-once\n\
        \tsystemctl stop containerd.service\n\
        fi\n\
        exec /usr/bin/crictl.real \"$@\"\n";
    let (node, cp) = prepare("containerd_gone_at_kubeadm", |i| {
        i.file("/usr/bin/crictl.real", real_crictl, 0o755)
            .file("/usr/bin/crictl", shim, 0o755)
            .extra_toml(&format!(
                "{FAST_RETRY}[containerd]\nrestart_when_not_ready = true\nrestart_after = \"3s\"\n"
            ))
    });
    let _a = artifacts::Guard::new("containerd_gone_at_kubeadm", &node, Some(&cp));
    must((|| {
        boot(&node)?;
        let line = wait_failure(&node, "containerd-not-ready", Duration::from_secs(60))?;
        ensure!(
            line.contains("[ERROR CRI]") && line.contains("retrying"),
            "the failure does not name kubeadm's CRI check and the retry: {line}"
        );
        let pid = main_pid(&node)?;
        wait_joined(&node, JOIN_TIMEOUT)?;
        check_joined(&node, &cp)?;
        ensure!(main_pid(&node)? == pid, "the agent restarted to get there");
        let classes: Vec<String> = failure_lines(&node)?.into_iter().map(|(c, _)| c).collect();
        ensure!(
            !classes.iter().any(|c| c == "preflight-failed"),
            "a runtime restart was called a preflight failure: {classes:?}"
        );
        Ok(())
    })());
}

#[test]
fn a_lingering_ready_node_is_waited_out() {
    let (node, cp) = prepare("lingering_node", |i| i);
    let _a = artifacts::Guard::new("lingering_node", &node, Some(&cp));
    must((|| {
        // The machine was reset; its old Node stays Ready until its lease runs out.
        cp.set_knobs(json!({"nodes": {node.name(): {"ready_for_secs": 30}}}))?;
        let t0 = boot(&node)?;
        journal_says(
            &node,
            "already exists and is Ready",
            Duration::from_secs(30),
        )?;
        journal_says(
            &node,
            "turns NotReady about 40 s after",
            Duration::from_secs(5),
        )?;
        no_kubeadm_join(&node)?;
        wait_joined(&node, JOIN_TIMEOUT)?;
        ensure!(
            t0.elapsed() >= Duration::from_secs(25),
            "joined while the old Node was still Ready"
        );
        check_joined(&node, &cp)
    })());
}

#[test]
fn a_live_duplicate_name_stops_the_agent() {
    let (node, cp) = prepare("live_duplicate", |i| {
        i.extra_toml("[join]\nnode_conflict_wait = \"15s\"\n")
    });
    let _a = artifacts::Guard::new("live_duplicate", &node, Some(&cp));
    must((|| {
        cp.set_knobs(json!({"nodes": {node.name(): {"ready_for_secs": 100000}}}))?;
        boot(&node)?;
        check_stopped(
            &node,
            "node-name-conflict",
            78,
            &["live machine", "node_name"],
        )?;
        no_kubeadm_join(&node)?;
        let obj = cp
            .node(node.name())
            .ok_or_else(|| anyhow::anyhow!("the Ready Node was deleted"))?;
        eprintln!("the other machine's Node is intact: {obj}");
        Ok(())
    })());
}

#[test]
fn a_pending_csr_is_named() {
    let (node, cp) = prepare("pending_csr", |i| {
        i.kubeadm_env("TIMEOUT_SCALE=0.1\n")
            .extra_toml("[retry]\nmax_attempts = 1\n")
    });
    let _a = artifacts::Guard::new("pending_csr", &node, Some(&cp));
    must((|| {
        cp.set_knobs(json!({"csr_approval": "manual"}))?;
        boot(&node)?;
        let line = check_stopped(
            &node,
            "tls-bootstrap-stuck",
            69,
            &["csr-", "kubectl certificate approve csr-"],
        )?;
        eprintln!("{line}");
        Ok(())
    })());
}

#[test]
fn kubelet_without_kubeadm_drop_in_is_refused_before_it_runs_standalone() {
    let (node, cp) = prepare("standalone_kubelet", |i| i);
    let _a = artifacts::Guard::new("standalone_kubelet", &node, Some(&cp));
    must((|| {
        node.remove_file("/etc/systemd/system/kubelet.service.d/10-kubeadm.conf")?;
        boot(&node)?;
        check_stopped(
            &node,
            "preflight-failed",
            78,
            &["standalone", "10-kubeadm.conf"],
        )?;
        no_kubeadm_join(&node)
    })());
}

#[test]
fn a_hung_kubeadm_is_killed_and_retried() {
    let (node, cp) = prepare("kubeadm_hang", |i| {
        i.kubeadm_env("HANG_AFTER=discovery\n")
            .extra_toml(&format!("{FAST_RETRY}[timeouts]\nno_progress = \"5s\"\n"))
    });
    let _a = artifacts::Guard::new("kubeadm_hang", &node, Some(&cp));
    must((|| {
        boot(&node)?;
        let line = wait_failure(&node, "hang", Duration::from_secs(60))?;
        ensure!(line.contains("printed nothing for 5s"), "{line}");
        // The hang's cause goes away (in real life: the network comes back).
        node.write_file("/etc/fake-k8s/kubeadm.env", b"", 0o644)?;
        wait_joined(&node, JOIN_TIMEOUT)?;
        check_joined(&node, &cp)?;
        let ps = node.exec_ok(&["ps", "-eo", "pid,args"])?;
        ensure!(
            !ps.contains("kubeadm join"),
            "a killed kubeadm survives:\n{ps}"
        );
        Ok(())
    })());
}

#[test]
fn transient_kubeadm_failures_are_retried_with_cleanup() {
    let (node, cp) = prepare("transient_failures", |i| {
        i.kubeadm_env("FAIL_TIMES=2\n").extra_toml(FAST_RETRY)
    });
    let _a = artifacts::Guard::new("transient_failures", &node, Some(&cp));
    must((|| {
        boot(&node)?;
        let state = wait_joined(&node, JOIN_TIMEOUT)?;
        ensure!(
            state["attempt"] == 3,
            "expected the third attempt to join: {state}"
        );
        let failures: Vec<_> = failure_lines(&node)?
            .into_iter()
            .filter(|(c, _)| c == "kubeadm-failed")
            .collect();
        ensure!(
            failures.len() == 2,
            "expected two kubeadm-failed lines: {failures:?}"
        );
        ensure!(
            kubeadm_invocations(&node).matches(" reset").count() >= 2,
            "no cleanup between attempts"
        );
        check_joined(&node, &cp)
    })());
}

#[test]
fn retries_are_bounded() {
    let (node, cp) = prepare("retries_bounded", |i| {
        i.kubeadm_env("FAIL_TIMES=10\n")
            .extra_toml(&format!("{FAST_RETRY}max_attempts = 2\n"))
    });
    let _a = artifacts::Guard::new("retries_bounded", &node, Some(&cp));
    must((|| {
        boot(&node)?;
        check_stopped(&node, "kubeadm-failed", 69, &["giving up", "max_attempts"])?;
        let joins = join_invocations(&kubeadm_invocations(&node));
        ensure!(
            joins.len() == 2,
            "expected exactly 2 kubeadm joins: {joins:?}"
        );
        Ok(())
    })());
}

/// Kills the agent with SIGKILL once `ready` holds; systemd must restart it and the
/// node must end joined. `kubeadm_env` can hold kubeadm in place until the kill.
fn crash_at(
    test: &str,
    knobs: serde_json::Value,
    kubeadm_env: &str,
    ready: impl Fn(&kja_e2e::Node) -> Result<bool>,
    heal: serde_json::Value,
) {
    let (node, cp) = prepare(test, |i| i.extra_toml(FAST_RETRY).kubeadm_env(kubeadm_env));
    let _a = artifacts::Guard::new(test, &node, Some(&cp));
    must((|| {
        cp.set_knobs(knobs.clone())?;
        boot(&node)?;
        wait::until_ok(
            "the moment to crash",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || {
                if ready(&node)? {
                    Ok(())
                } else {
                    bail!("not yet")
                }
            },
        )?;
        let pid = main_pid(&node)?;
        node.exec_ok(&["kill", "-9", &pid])?;
        eprintln!("killed the agent (pid {pid})");
        cp.set_knobs(heal.clone())?;
        node.write_file("/etc/fake-k8s/kubeadm.env", b"", 0o644)?;
        wait::until_ok(
            "systemd to restart the agent",
            Duration::from_secs(30),
            POLL,
            || {
                let p = unit_props(&node, AGENT_UNIT)?;
                if p.get("NRestarts").is_some_and(|n| n != "0") {
                    Ok(())
                } else {
                    bail!("{p:?}")
                }
            },
        )?;
        wait_joined(&node, JOIN_TIMEOUT)?;
        check_joined(&node, &cp)
    })());
}

fn agent_in_phase(node: &kja_e2e::Node, phase: &str) -> Result<bool> {
    Ok(phase_lines(node)?.iter().any(|(p, _, _)| p == phase))
}

#[test]
fn crash_before_discovery() {
    crash_at(
        "crash_before_discovery",
        json!({"unavailable_until_unix": now_unix() + 3600.0}),
        "",
        |n| agent_in_phase(n, "discovery"),
        json!({}),
    );
}

#[test]
fn crash_during_kubeadm_and_tls_bootstrap() {
    // With CSRs held for approval, kubeadm waits for the kubelet's TLS bootstrap: the
    // agent dies while kubeadm runs and kubelet has been started.
    crash_at(
        "crash_during_kubeadm",
        json!({"csr_approval": "manual"}),
        "",
        |n| Ok(agent_in_phase(n, "handoff")? && n.unit_state("kubelet.service")? == "active"),
        json!({"csr_approval": "auto"}),
    );
}

#[test]
fn crash_during_kubeadm_before_kubelet_starts() {
    // kubeadm hangs after discovery: the agent dies while kubeadm runs and kubelet is
    // still gated; the restarted agent cleans up what kubeadm left and joins.
    crash_at(
        "crash_before_handoff",
        json!({}),
        "HANG_AFTER=discovery\n",
        |n| {
            Ok(agent_in_phase(n, "join")?
                && n.exec_ok(&["ps", "-eo", "args"])?.contains("kubeadm join"))
        },
        json!({}),
    );
}

#[test]
fn power_loss_mid_join_ends_joined_on_next_boot() {
    let (node, cp) = prepare("power_loss", |i| i.extra_toml(FAST_RETRY));
    let _a = artifacts::Guard::new("power_loss", &node, Some(&cp));
    must((|| {
        cp.set_knobs(json!({"csr_approval": "manual"}))?;
        boot(&node)?;
        wait::until_ok(
            "kubeadm under way",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || {
                if agent_in_phase(&node, "handoff")? {
                    Ok(())
                } else {
                    bail!("not yet")
                }
            },
        )?;
        node.poweroff()?;
        cp.set_knobs(json!({"csr_approval": "auto"}))?;
        node.start()?;
        node.wait_systemd()?;
        wait_joined(&node, JOIN_TIMEOUT)?;
        check_joined(&node, &cp)?;
        ensure!(
            node.unit_enablement("kubelet.service")? == "enabled",
            "kubelet left masked"
        );
        Ok(())
    })());
}

#[test]
fn secrets_never_leak_at_any_verbosity() {
    let (node, cp) = prepare("secrets_never_leak", |i| {
        i.file(
            "/etc/systemd/system/kube-join-agent.service.d/50-trace.conf",
            "[Service]\nEnvironment=KUBE_JOIN_AGENT_LOG=trace\n",
            0o644,
        )
    });
    let _a = artifacts::Guard::new("secrets_never_leak", &node, Some(&cp));
    must((|| {
        let secret = kja_e2e::install::DEFAULT_TOKEN_SECRET;
        let t0 = boot(&node)?;
        // Sample every process's command line on the machine during the join.
        let mut samples = 0;
        let mut leaks = Vec::new();
        while t0.elapsed() < Duration::from_secs(60) {
            for entry in std::fs::read_dir("/proc")?.flatten() {
                if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
                    && String::from_utf8_lossy(&cmdline).contains(secret)
                {
                    leaks.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
                }
            }
            samples += 1;
            if agent_state(&node).is_ok_and(|s| s["joined"] == true) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        ensure!(
            leaks.is_empty(),
            "the token secret was on a command line: {leaks:?}"
        );
        eprintln!("{samples} samples of /proc/*/cmdline, none with the secret");
        wait_joined(&node, JOIN_TIMEOUT)?;
        let journal = node.journalctl(&["-o", "export"])?;
        ensure!(
            journal.contains("TRACE") || journal.contains("PRIORITY=7"),
            "the agent did not log at trace level"
        );
        check_secret_not_leaked(&node)?;
        let status = node.exec_ok(&["kube-join-agent", "status", "--json"])?;
        ensure!(!status.contains(secret), "`status` shows the secret");
        Ok(())
    })());
}

#[test]
fn a_bad_config_exits_78_and_changes_nothing() {
    let (node, cp) = prepare("bad_config", |i| {
        i.extra_toml("[join]\napi_sever = \"10.0.0.1:6443\"\n")
    });
    let _a = artifacts::Guard::new("bad_config", &node, Some(&cp));
    must((|| {
        boot(&node)?;
        let exit = wait_agent_exited(&node, Duration::from_secs(60))?;
        ensure!(
            exit == 78,
            "the agent exited with {exit}, expected 78 (EX_CONFIG)"
        );
        let lines = failure_lines(&node)?;
        let (_, line) = lines
            .iter()
            .find(|(c, _)| c == "config-invalid")
            .ok_or_else(|| anyhow::anyhow!("no FAILURE=config-invalid line: {lines:?}"))?;
        ensure!(
            line.contains("/etc/kube-join-agent/config.d/50-join.toml")
                && line.contains("unknown field `api_sever`"),
            "the line does not name the file and the key: {line}"
        );
        ensure!(line.contains("nothing was changed"), "{line}");
        // Nothing changed by the agent: no kubeadm, no state written, no mask of its own.
        // kubelet stays held by the generator's boot-time mask (no kubelet.conf, agent
        // enabled), and the line says how to go on.
        ensure!(
            line.contains("held by the agent's generator")
                && line.contains("systemctl restart kube-join-agent")
                && line.contains("systemctl disable kube-join-agent"),
            "{line}"
        );
        ensure!(
            !node.exists("/run/systemd/system/kubelet.service")?,
            "the agent masked kubelet itself"
        );
        ensure!(
            node.unit_state("kubelet.service")? != "active",
            "kubelet runs without its configuration"
        );
        no_kubeadm_join(&node)?;
        ensure!(
            !node.exists(kja_e2e::install::AGENT_STATE_PATH)?,
            "state.json was written"
        );
        Ok(())
    })());
}

#[test]
fn kubelet_unit_in_etc_is_gated_with_a_drop_in() {
    // An administrator's copy of the unit in /etc outranks a runtime mask.
    let unit =
        std::fs::read(kja_e2e::paths::workspace_root().join("tests/fakes/units/kubelet.service"))
            .unwrap();
    let (node, cp) = prepare("kubelet_unit_in_etc", |i| {
        i.file("/etc/systemd/system/kubelet.service", unit, 0o644)
    });
    let _a = artifacts::Guard::new("kubelet_unit_in_etc", &node, Some(&cp));
    must((|| {
        boot(&node)?;
        wait_joined(&node, JOIN_TIMEOUT)?;
        let phases = phase_lines(&node)?;
        check_kubelet_gated(&node, &phases)?;
        check_joined(&node, &cp)?;
        let j = node.journal(Some(AGENT_UNIT))?;
        ensure!(
            j.contains("ConditionDropIn"),
            "the agent did not gate with the drop-in:\n{j}"
        );
        ensure!(
            !node.exists("/run/systemd/system/kubelet.service.d/50-kube-join-agent-gate.conf")?,
            "the gate drop-in is left behind after the join"
        );
        Ok(())
    })());
}

#[test]
fn a_stale_node_is_deleted_with_the_configured_credential() {
    let (node, cp) = prepare("stale_node_deleted", |i| {
        i.extra_toml("[join]\nnode_delete_kubeconfig = \"/etc/kube-join-agent/admin.conf\"\n")
    });
    let _a = artifacts::Guard::new("stale_node_deleted", &node, Some(&cp));
    must((|| {
        // The fake API server's admin identity, as a kubeconfig only root can read.
        let cert = std::fs::read(cp.dir().join("admin.crt"))?;
        let key = std::fs::read(cp.dir().join("admin.key"))?;
        node.write_file("/etc/kube-join-agent/admin.crt", &cert, 0o600)?;
        node.write_file("/etc/kube-join-agent/admin.key", &key, 0o600)?;
        let kubeconfig = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority: /etc/kubernetes/pki/ca.crt\ncontexts:\n- name: a\n  context: {cluster: c, user: admin}\ncurrent-context: a\nusers:\n- name: admin\n  user:\n    client-certificate: /etc/kube-join-agent/admin.crt\n    client-key: /etc/kube-join-agent/admin.key\n";
        node.write_file(
            "/etc/kube-join-agent/admin.conf",
            kubeconfig.as_bytes(),
            0o600,
        )?;
        // A reset machine's old Node, already NotReady.
        cp.set_knobs(json!({"nodes": {node.name(): {"ready_for_secs": 0}}}))?;
        boot(&node)?;
        wait_joined(&node, JOIN_TIMEOUT)?;
        check_joined(&node, &cp)?;
        journal_says(&node, "deleted the stale Node", Duration::from_secs(5))?;
        ensure!(
            cp.requests_log().contains("DELETE /api/v1/nodes/"),
            "no DELETE reached the API server"
        );
        Ok(())
    })());
}
