//! Nodes for the benchmark: made, booted and dropped one at a time (or a few at a time
//! where that does not distort a measure), each with its own fake control plane.

use super::logs::{self, Event, Invocation};
use anyhow::{Context, Result, anyhow, bail};
use kja_e2e::install::{self, DEFAULT_TOKEN, Install, KUBEADM_INVOCATIONS_LOG};
use kja_e2e::node::{Node, NodeSpec};
use kja_e2e::{FakeControlPlane, artifacts, cmd};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where units enabled at boot are linked.
const WANTS: &str = "/etc/systemd/system/multi-user.target.wants";
/// The JoinConfiguration a by-hand join uses.
pub const BY_HAND_CONFIG: &str = "/root/bench-join.yaml";

/// What a measurement runs against.
#[derive(Debug, Clone)]
pub enum Subject {
    /// An agent binary.
    Agent(PathBuf),
    /// No agent: the fakes only, kubeadm run by hand.
    NoAgent,
}

/// A node and its control plane; the node powers off first when dropped.
pub struct BenchNode {
    pub node: Node,
    pub cp: FakeControlPlane,
    label: String,
}

impl BenchNode {
    /// A fresh node named after `label`, its fake API server with `knobs` (over the
    /// defaults), and `subject` installed (`customize` adds to it, given the CA pin);
    /// not booted.
    pub fn prepare(
        label: &str,
        subject: &Subject,
        knobs: Option<Value>,
        customize: impl FnOnce(Install, &str) -> Install,
    ) -> Result<BenchNode> {
        let node = Node::create(NodeSpec::new(&kja_e2e::node_name(label)))?;
        let cp = FakeControlPlane::start(node.netns(), node.dir().join("apiserver"))?;
        if let Some(k) = knobs {
            cp.set_knobs(k)?;
        }
        let pin = cp.pin()?;
        let what = match subject {
            Subject::Agent(bin) => {
                let mut what = Install {
                    agent_bin: Some(bin.clone()),
                    ..Install::agent(&pin)
                };
                // An agent runs with the configuration, unit and generator it was built
                // with: an older one refuses newer defaults' keys, and never lifts a
                // generator's mask it does not know.
                if let Some(tree) = tree_of(bin) {
                    what.default_config = Some(tree.join("config/config.toml"));
                    what.agent_unit = Some(tree.join("systemd/kube-join-agent.service"));
                    let generator = tree.join("systemd/kube-join-agent-generator");
                    what.generator = Some(generator.is_file().then_some(generator));
                }
                what
            }
            Subject::NoAgent => Install::fakes_only().file(
                BY_HAND_CONFIG,
                join_configuration(&kja_e2e::node_name(label), &pin, DEFAULT_TOKEN),
                0o600,
            ),
        };
        install::install(&node, &customize(what, &pin))?;
        Ok(BenchNode {
            node,
            cp,
            label: label.to_string(),
        })
    }

    /// Keeps the agent from starting at boot (it is started by hand later).
    pub fn agent_not_at_boot(&self) -> Result<()> {
        self.node
            .remove_file(&format!("{WANTS}/{}", install::AGENT_UNIT))
    }

    /// Boots and waits until systemd answers (not for boot to finish: a Type=notify
    /// agent may hold it until READY=1).
    pub fn boot(&self) -> Result<()> {
        self.node.start()?;
        self.node.wait_systemd()?;
        Ok(())
    }

    /// Boots and waits for `systemctl is-system-running --wait`.
    pub fn boot_running(&self) -> Result<()> {
        self.node.start()?;
        self.node.wait_running()?;
        Ok(())
    }

    /// The fake kubeadm's processes so far (its event log).
    pub fn kubeadm_runs(&self) -> Result<Vec<Invocation>> {
        let text = self
            .node
            .read_to_string(logs::KUBEADM_EVENTS_LOG)
            .unwrap_or_default();
        Ok(logs::invocations(&self.kubeadm_events_in(&text)?))
    }

    fn kubeadm_events_in(&self, text: &str) -> Result<Vec<Event>> {
        logs::parse_events(text)
            .with_context(|| format!("{} of {}", logs::KUBEADM_EVENTS_LOG, self.label))
    }

    /// Start times of kubeadm joins (its invocation log).
    pub fn join_starts(&self) -> Vec<u64> {
        logs::join_invocation_times(
            &self
                .node
                .read_to_string(KUBEADM_INVOCATIONS_LOG)
                .unwrap_or_default(),
        )
    }

    /// Runs `kubeadm join --config BY_HAND_CONFIG` in the node as a transient service (as
    /// root, under systemd, like an operator's shell or cloud-init would), and returns
    /// its invocation once it exited.
    pub fn join_by_hand(&self) -> Result<Invocation> {
        let before = self.kubeadm_runs()?.len();
        let out = self.node.exec_timeout(
            &[
                "systemd-run",
                "--quiet",
                "--wait",
                "--collect",
                "--service-type=exec",
                "--unit=bench-kubeadm-join",
                "-p",
                "StandardOutput=journal",
                "-p",
                "StandardError=journal",
                "--",
                "/usr/bin/kubeadm",
                "join",
                "--config",
                BY_HAND_CONFIG,
            ],
            Duration::from_secs(300),
        )?;
        let runs = self.kubeadm_runs()?;
        let run = runs
            .into_iter()
            .skip(before)
            .find(Invocation::is_join)
            .ok_or_else(|| anyhow!("no kubeadm join in the event log after {out}"))?;
        match run.exit {
            Some((_, 0)) => Ok(run),
            other => bail!(
                "kubeadm join by hand ended with {other:?}: {out}\n{}",
                self.node
                    .journal(Some("bench-kubeadm-join.service"))
                    .unwrap_or_default()
            ),
        }
    }

    /// One HTTPS request to the fake API server from inside the node's network namespace,
    /// so it rereads its knobs now (a new token is "first seen" now).
    pub fn poke_api_server(&self) -> Result<()> {
        let mut c = self.node.netns().command("curl")?;
        c.args([
            "-sk",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "https://127.0.0.1:6443/healthz",
        ]);
        cmd::run(&mut c, None, Duration::from_secs(10))?.ok()?;
        Ok(())
    }

    /// Times `systemctl daemon-reload` `n` times inside the node (µs each): what kubeadm
    /// pays before its `systemctl restart kubelet`.
    pub fn daemon_reload_us(&self, n: usize) -> Result<Vec<f64>> {
        let script = format!(
            "for i in $(seq {n}); do a=$(date +%s%N); systemctl daemon-reload || exit 1; \
             b=$(date +%s%N); echo $(( (b - a) / 1000 )); done"
        );
        let out = self.node.exec_ok(&["sh", "-c", &script])?;
        out.lines()
            .map(|l| l.trim().parse::<f64>().context("daemon-reload timing"))
            .collect()
    }

    /// VmHWM of a unit's main process, KiB.
    pub fn peak_rss_kib(&self, unit: &str) -> Result<u64> {
        let pid = self.main_pid(unit)?;
        let status = self
            .node
            .exec_ok(&["cat", &format!("/proc/{pid}/status")])?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| anyhow!("no VmHWM in /proc/{pid}/status"))
    }

    /// A unit's main PID as the node sees it.
    pub fn main_pid(&self, unit: &str) -> Result<u32> {
        let pid = self
            .node
            .exec_ok(&["systemctl", "show", "-p", "MainPID", "--value", unit])?;
        match pid.trim().parse() {
            Ok(0) | Err(_) => bail!("{unit} has no main process ({:?})", pid.trim()),
            Ok(p) => Ok(p),
        }
    }

    /// Waits up to `timeout` for `f` (polled every `poll`) to say yes.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        poll: Duration,
        mut f: impl FnMut(&BenchNode) -> Result<bool>,
    ) -> Result<()> {
        let t0 = Instant::now();
        loop {
            if f(self)? {
                return Ok(());
            }
            if t0.elapsed() >= timeout {
                bail!("{}: no {what} within {timeout:?}", self.label);
            }
            std::thread::sleep(poll);
        }
    }

    /// Saves the node's evidence (journal, logs) for a run that went wrong.
    pub fn save_evidence(&self) {
        match artifacts::save(&format!("bench-{}", self.label), &self.node, Some(&self.cp)) {
            Ok(dir) => eprintln!("bench: evidence of {} in {}", self.label, dir.display()),
            Err(e) => eprintln!("bench: saving evidence of {}: {e:#}", self.label),
        }
    }
}

/// The JoinConfiguration the agent would write for this node (kubeadm v1.29: v1beta3).
pub fn join_configuration(node: &str, pin: &str, token: &str) -> String {
    format!(
        "apiVersion: kubeadm.k8s.io/v1beta3
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: 127.0.0.1:6443
    token: {token}
    caCertHashes:
    - {pin}
    unsafeSkipCAVerification: false
  tlsBootstrapToken: {token}
  timeout: 300s
nodeRegistration:
  name: {node}
  criSocket: unix:///run/containerd/containerd.sock
"
    )
}

/// The source tree an agent binary was built in (`<tree>/target/release/kube-join-agent`).
fn tree_of(bin: &std::path::Path) -> Option<std::path::PathBuf> {
    bin.ancestors()
        .find(|d| {
            d.join("config/config.toml").is_file()
                && d.join("systemd/kube-join-agent.service").is_file()
        })
        .map(std::path::Path::to_path_buf)
}
