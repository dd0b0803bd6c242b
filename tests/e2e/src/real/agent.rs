//! The agent in the real tier: installed from its .deb (`bash packaging/build.sh`) with
//! dpkg inside a booted node of the real image, configured with a join fragment and a
//! token file (0600) for the real control plane, and held to the outcomes of its
//! fake-tier twins ([`crate::scenario`]): joined (the agent in serve, kubelet active with
//! credentials that chain to the cluster CA, the Node registered and Ready, kubelet
//! started only after its files were valid) or stopped with the right `FAILURE=` class,
//! kubelet masked.
//!
//! There is no kubeadm invocation log here (the fake kubeadm writes one): "kubeadm never
//! ran" is read from the agent's journal (it logs every kubeadm command line before it
//! runs it) and from a [`KubeadmWatch`] that samples the node's processes from the host.

use super::control_plane::{RealControlPlane, condition};
use super::node_image;
use crate::install::{AGENT_UNIT, JOIN_CONFIG_PATH, JoinConfig, TOKEN_PATH};
use crate::node::Node;
use crate::scenario::{POLL, agent_state, phase_lines, string_field, timestamp};
use crate::{cmd, package, wait};
use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The preflight checks real kubeadm 1.20 fails on these nodes: they have no crictl (no
/// registry here has one for 1.20, and the real tier runs no fakes).
pub const PREFLIGHT_ERRORS_WITHOUT_CRICTL: [&str; 1] = ["FileExisting-crictl"];

/// How long a real join may take from the agent's start: kubeadm 13-14 s, the Node Ready
/// about 10 s later, on a loaded machine several times that.
pub const REAL_JOIN_TIMEOUT: Duration = Duration::from_secs(240);

/// Real control planes (etcd, kube-apiserver, kube-controller-manager) with a real node
/// each that may run at once in this process: `$KJA_REAL_PARALLEL`, default 4. On the
/// 2-core machine all eight scenarios at once still passed (see tests/real/README.md);
/// four leave the timing-sensitive ones (the node lifecycle controller's 40 s, kubeadm's
/// 40 s silence against a 60 s watchdog) a wide margin.
pub fn parallel_limit() -> usize {
    std::env::var("KJA_REAL_PARALLEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(4)
}

/// A place among the [`parallel_limit`] real scenarios that may run at once; released on
/// drop, which prints how long the scenario waited for it and ran (visible with
/// `--nocapture`). Take it before creating the node and the control plane.
pub struct Slot {
    test: String,
    waited: Duration,
    since: Instant,
}

static SLOTS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

impl Slot {
    /// Waits for a free place for `test`.
    pub fn take(test: &str) -> Slot {
        let t0 = Instant::now();
        let (lock, cvar) = &SLOTS;
        let mut used = lock.lock().unwrap_or_else(|e| e.into_inner());
        while *used >= parallel_limit() {
            used = cvar.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += 1;
        Slot {
            test: test.to_string(),
            waited: t0.elapsed(),
            since: Instant::now(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        eprintln!(
            "real tier: {} ran {:.1}s (after {:.1}s waiting for one of {} places)",
            self.test,
            self.since.elapsed().as_secs_f64(),
            self.waited.as_secs_f64(),
            parallel_limit()
        );
        let (lock, cvar) = &SLOTS;
        let mut used = lock.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(1);
        cvar.notify_one();
    }
}

/// A node of the real image (created, not booted) and a real control plane in its
/// network namespace.
pub fn prepare(test: &str) -> Result<(Node, RealControlPlane)> {
    crate::require_root()?;
    let name = crate::node_name(test);
    let node = Node::create(node_image::node_spec(&name)).context("creating the node")?;
    node_image::install(&node).context("installing into the node")?;
    let cp = RealControlPlane::start(node.netns(), node.dir().join("control-plane"))
        .context("starting the real control plane")?;
    Ok((node, cp))
}

/// The join fragment for the real control plane: its endpoint, `pin`, the token file,
/// [`PREFLIGHT_ERRORS_WITHOUT_CRICTL`] ignored (unless `extra_toml` sets
/// `join.ignore_preflight_errors` itself), and `extra_toml` deep-merged over it.
pub fn join_config(pin: &str, extra_toml: &str) -> Result<JoinConfig> {
    let mut extra: toml::Table = extra_toml
        .parse()
        .with_context(|| format!("extra TOML does not parse:\n{extra_toml}"))?;
    let join = extra
        .entry("join")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| anyhow!("`join` in the extra TOML is not a table"))?;
    join.entry("ignore_preflight_errors").or_insert_with(|| {
        toml::Value::Array(
            PREFLIGHT_ERRORS_WITHOUT_CRICTL
                .iter()
                .map(|e| toml::Value::from(*e))
                .collect(),
        )
    });
    let mut config = JoinConfig::new(pin);
    config.api_server = super::control_plane::ENDPOINT.to_string();
    config.extra_toml = toml::to_string(&extra)?;
    Ok(config)
}

/// Installs the agent's .deb with dpkg inside the booted `node` (the package neither
/// enables nor starts it), then the join fragment (0644) and the token file (0600, root).
pub fn install_agent(node: &Node, join: &JoinConfig, token: &str) -> Result<()> {
    let deb = package::deb()?;
    let t0 = Instant::now();
    package::dpkg_install(node, &deb)?;
    eprintln!(
        "dpkg -i {} in {:.1}s",
        deb.file_name().unwrap_or_default().to_string_lossy(),
        t0.elapsed().as_secs_f64()
    );
    node.write_file(JOIN_CONFIG_PATH, join.render()?.as_bytes(), 0o644)?;
    write_token(node, token)
}

/// Writes the token file (0600, root), as an operator drops in a new token.
pub fn write_token(node: &Node, token: &str) -> Result<()> {
    node.write_file(TOKEN_PATH, format!("{token}\n").as_bytes(), 0o600)
}

/// Realtime µs now (the clock of the node's journal: the host's).
pub fn now_usec() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

/// Waits until the agent reached serve, joined, in a run that began at `since_usec` or
/// later: its unit active, a `phase serve:` line from then on, state.json joined in serve
/// (state.json and this boot's earlier lines may be left from an earlier run). Gives up
/// early if the unit has failed for good.
pub fn wait_joined_since(node: &Node, since_usec: u64, timeout: Duration) -> Result<Value> {
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
        let phases: Vec<String> = phase_lines(node)?
            .into_iter()
            .filter(|(_, _, t)| *t >= since_usec)
            .map(|(p, _, _)| p)
            .collect();
        if let Ok(s) = &state
            && s["joined"] == Value::Bool(true)
            && s["phase"] == "serve"
            && unit == "active"
            && phases.iter().any(|p| p == "serve")
        {
            return Ok(Ok(s.clone()));
        }
        bail!("{AGENT_UNIT} is {unit}; phases since: {phases:?}; state.json: {seen}")
    })?
}

/// Enables the agent and starts it without waiting for its start job (Type=notify: the
/// job ends only when the agent reports ready). Returns the realtime µs just before.
pub fn start_agent(node: &Node) -> Result<u64> {
    node.systemctl(&["enable", AGENT_UNIT])?.ok()?;
    let since = now_usec();
    node.systemctl(&["start", "--no-block", AGENT_UNIT])?.ok()?;
    Ok(since)
}

/// The agent's main PID (`0` when it is not running).
pub fn main_pid(node: &Node) -> Result<String> {
    Ok(node
        .systemctl(&["show", "-p", "MainPID", "--value", AGENT_UNIT])?
        .trimmed()
        .to_string())
}

/// One kubeadm process seen in the node.
#[derive(Debug, Clone)]
pub struct SeenProcess {
    /// When it was first seen.
    pub at: SystemTime,
    /// Host PID.
    pub pid: i32,
    /// Its command line, arguments separated by spaces.
    pub cmdline: String,
}

/// Samples, from the host, the processes in a node's cgroup (every 100 ms) and keeps
/// every kubeadm among them: independent evidence of when kubeadm ran, besides what the
/// agent says. Stops when dropped.
pub struct KubeadmWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<SeenProcess>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KubeadmWatch {
    /// Starts watching `node` (its processes are in `.../kja-e2e/<name>/`).
    pub fn start(node: &Node) -> KubeadmWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<Vec<SeenProcess>>> = Arc::default();
        let marker = format!("/kja-e2e/{}/", node.name());
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut known = std::collections::HashSet::new();
                while !stop.load(Ordering::Relaxed) {
                    for (pid, cmdline) in kubeadm_processes(&marker) {
                        if known.insert((pid, cmdline.clone())) {
                            seen.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(SeenProcess {
                                    at: SystemTime::now(),
                                    pid,
                                    cmdline,
                                });
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        KubeadmWatch {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Every kubeadm process seen so far, oldest first.
    pub fn seen(&self) -> Vec<SeenProcess> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The `kubeadm join` processes seen so far.
    pub fn joins(&self) -> Vec<SeenProcess> {
        self.seen()
            .into_iter()
            .filter(|p| p.cmdline.split(' ').nth(1) == Some("join"))
            .collect()
    }

    /// Fails if a `kubeadm join` was seen.
    pub fn ensure_no_join(&self) -> Result<()> {
        let joins = self.joins();
        ensure!(joins.is_empty(), "kubeadm join ran: {joins:?}");
        Ok(())
    }
}

impl Drop for KubeadmWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// (host PID, command line) of every kubeadm process whose cgroup path has `marker`.
fn kubeadm_processes(marker: &str) -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        let path = entry.path();
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_kubeadm = args
            .first()
            .is_some_and(|a| a.rsplit('/').next() == Some("kubeadm"));
        if !is_kubeadm {
            continue;
        }
        let in_node = std::fs::read_to_string(path.join("cgroup"))
            .map(|c| c.contains(marker))
            .unwrap_or(false);
        if in_node {
            found.push((pid, args.join(" ")));
        }
    }
    found
}

/// The agent's journal messages (all boots, or this boot only), with realtime µs.
pub fn agent_messages(node: &Node, this_boot: bool) -> Result<Vec<(u64, String)>> {
    let text = if this_boot {
        node.journalctl(&["-b", "-o", "json", "-u", AGENT_UNIT])?
    } else {
        node.journalctl(&["-o", "json", "-u", AGENT_UNIT])?
    };
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let e: Value = serde_json::from_str(line).with_context(|| format!("journal {line:?}"))?;
        if let Some(m) = string_field(&e, "MESSAGE") {
            out.push((timestamp(&e), m.to_string()));
        }
    }
    Ok(out)
}

/// The agent's lines that start a kubeadm command (`running <kubeadm> <args>`), with
/// realtime µs.
pub fn kubeadm_runs(node: &Node, this_boot: bool) -> Result<Vec<(u64, String)>> {
    Ok(agent_messages(node, this_boot)?
        .into_iter()
        .filter(|(_, m)| {
            m.strip_prefix("running ")
                .and_then(|rest| rest.split_whitespace().next())
                .is_some_and(|bin| bin.rsplit('/').next() == Some("kubeadm"))
        })
        .collect())
}

/// Files kubeadm's join writes (none may exist when it never ran).
pub const KUBEADM_JOIN_FILES: [&str; 5] = [
    "/etc/kubernetes/bootstrap-kubelet.conf",
    "/etc/kubernetes/kubelet.conf",
    "/etc/kubernetes/pki/ca.crt",
    "/var/lib/kubelet/config.yaml",
    "/var/lib/kubelet/kubeadm-flags.env",
];

/// kubeadm was never asked to join: no `join` phase line and no `running kubeadm join`
/// line in the agent's journal (all boots), no kubeadm join process seen by `watch`, none
/// of the files a join writes.
pub fn never_joined(node: &Node, watch: &KubeadmWatch) -> Result<()> {
    let joins: Vec<_> = kubeadm_runs(node, false)?
        .into_iter()
        .filter(|(_, m)| m.split_whitespace().nth(2) == Some("join"))
        .collect();
    ensure!(joins.is_empty(), "the agent ran kubeadm join: {joins:?}");
    let phases: Vec<String> = phase_lines(node)?.into_iter().map(|(p, _, _)| p).collect();
    ensure!(
        !phases.iter().any(|p| p == "join"),
        "the agent entered its join phase: {phases:?}"
    );
    watch.ensure_no_join()?;
    for f in KUBEADM_JOIN_FILES {
        ensure!(!node.exists(f)?, "{f} exists: kubeadm ran");
    }
    Ok(())
}

/// The Node called `name` once its Ready condition is True (waits up to `timeout`).
pub fn wait_node_ready(cp: &RealControlPlane, name: &str, timeout: Duration) -> Result<Value> {
    wait::until_ok(
        &format!("the Node {name} to be Ready"),
        timeout,
        POLL,
        || {
            let n = cp.node(name)?.ok_or_else(|| anyhow!("no Node {name}"))?;
            let ready = condition(&n, "Ready");
            ensure!(ready.as_deref() == Some("True"), "Ready={ready:?}");
            Ok(n)
        },
    )
}

/// A file of the node copied to a host temporary file (for openssl on the host).
fn host_copy(node: &Node, path: &str, dir: &std::path::Path) -> Result<PathBuf> {
    let data = node.read_file(path)?;
    let host = dir.join(path.trim_start_matches('/').replace('/', "_"));
    std::fs::write(&host, data)?;
    Ok(host)
}

/// kubelet's credentials are valid: kubelet.conf uses the rotated client certificate,
/// which chains to the cluster CA, names `system:node:<name>` in `system:nodes`, and is
/// within its validity period; the node's ca.crt is the cluster's.
pub fn check_kubelet_credentials(node: &Node, cp: &RealControlPlane) -> Result<()> {
    let conf = node.read_to_string("/etc/kubernetes/kubelet.conf")?;
    ensure!(
        conf.contains("client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem"),
        "kubelet.conf does not use the rotated client certificate:\n{conf}"
    );
    ensure!(
        node.read_file("/etc/kubernetes/pki/ca.crt")? == std::fs::read(cp.ca_cert())?,
        "the node's /etc/kubernetes/pki/ca.crt is not the cluster's CA"
    );
    let dir = node.dir().join("cred-check");
    std::fs::create_dir_all(&dir)?;
    let pem = host_copy(
        node,
        "/var/lib/kubelet/pki/kubelet-client-current.pem",
        &dir,
    )?;
    let pem = pem.display().to_string();
    let ca = cp.ca_cert().display().to_string();
    let verify = cmd::host("openssl", &["verify", "-CAfile", &ca, &pem])?;
    ensure!(
        verify.success() && verify.stdout.contains(": OK"),
        "kubelet's client certificate does not verify against the cluster CA: {verify}"
    );
    let subject = cmd::host(
        "openssl",
        &["x509", "-in", &pem, "-noout", "-subject", "-checkend", "0"],
    )?;
    let want_cn = format!("CN = system:node:{}", node.name());
    ensure!(
        subject.success()
            && subject.stdout.contains("O = system:nodes")
            && subject.stdout.contains(&want_cn),
        "kubelet's client certificate: {subject}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// kubelet was gated from `since_usec` on (the agent was started then; before, kubelet,
/// enabled by its package, crash-looped without its configuration): the agent said it
/// masked kubelet before its join phase, every start of kubelet (a start or restart job
/// that ended `done`) came after the agent's handoff line, and kubelet's journal from
/// then on has no start without its configuration. Returns how many times it started.
pub fn check_kubelet_started_after_handoff(node: &Node, since_usec: u64) -> Result<usize> {
    let phases: Vec<_> = phase_lines(node)?
        .into_iter()
        .filter(|(_, _, t)| *t >= since_usec)
        .collect();
    let at = |phase: &str| {
        phases
            .iter()
            .find(|(p, _, _)| p == phase)
            .map(|(_, _, t)| *t)
            .ok_or_else(|| anyhow!("no {phase} phase line since the agent started"))
    };
    let (join, handoff) = (at("join")?, at("handoff")?);
    let said_masked = node
        .journal_entries(Some(AGENT_UNIT))?
        .iter()
        .filter(|e| (since_usec..=join).contains(&timestamp(e)))
        .any(|e| string_field(e, "MESSAGE").is_some_and(|m| m.to_lowercase().contains("mask")));
    ensure!(
        said_masked,
        "the agent's journal never says it masked kubelet before the join"
    );
    let entries = node.journal_entries(Some("kubelet.service"))?;
    let starts: Vec<u64> = entries
        .iter()
        .filter(|e| timestamp(e) >= since_usec)
        .filter(|e| {
            string_field(e, "UNIT") == Some("kubelet.service")
                && matches!(string_field(e, "JOB_TYPE"), Some("start" | "restart"))
                && string_field(e, "JOB_RESULT") == Some("done")
        })
        .map(timestamp)
        .collect();
    ensure!(!starts.is_empty(), "kubelet was never started");
    if let Some(early) = starts.iter().find(|t| **t < handoff) {
        bail!(
            "kubelet started {} ms before the agent's handoff (not gated)",
            (handoff - early) / 1000
        );
    }
    let unconfigured: Vec<String> = entries
        .iter()
        .filter(|e| timestamp(e) >= since_usec)
        .filter_map(|e| string_field(e, "MESSAGE"))
        .filter(|m| {
            m.to_lowercase()
                .contains("failed to load kubelet config file")
        })
        .map(str::to_string)
        .collect();
    ensure!(
        unconfigured.is_empty(),
        "kubelet ran without /var/lib/kubelet/config.yaml after the agent started: {unconfigured:?}"
    );
    Ok(starts.len())
}

/// The outcome of every real join: state.json joined in serve, the agent active and
/// `kube-join-agent status` saying serve, kubelet enabled and active with valid
/// credentials, kubeadm's files in place, the Node registered and Ready. Returns the Node.
pub fn check_joined(node: &Node, cp: &RealControlPlane) -> Result<Value> {
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
        ensure!(s == "active", "kubelet is {s}");
        Ok(())
    })?;
    let enablement = node.unit_enablement("kubelet.service")?;
    ensure!(
        enablement == "enabled",
        "kubelet is {enablement} after the join (still masked?)"
    );
    for f in [
        "/etc/kubernetes/kubelet.conf",
        "/etc/kubernetes/pki/ca.crt",
        "/var/lib/kubelet/config.yaml",
        "/var/lib/kubelet/kubeadm-flags.env",
        "/var/lib/kubelet/pki/kubelet-client-current.pem",
    ] {
        ensure!(node.exists(f)?, "{f} missing after the join");
    }
    check_kubelet_credentials(node, cp)?;
    let n = wait_node_ready(cp, node.name(), Duration::from_secs(120))?;
    let addresses = n["status"]["addresses"].to_string();
    ensure!(
        addresses.contains(super::control_plane::NODE_IP),
        "the Node's addresses {addresses} lack {}",
        super::control_plane::NODE_IP
    );
    Ok(n)
}

/// The token secret (the part after the dot) appears nowhere in the journal (all
/// fields, all boots) nor in state.json.
pub fn check_secret_not_leaked(node: &Node, token: &str) -> Result<()> {
    let secret = token.split_once('.').map(|(_, s)| s).unwrap_or(token);
    ensure!(
        !node.journalctl(&["-o", "export"])?.contains(secret),
        "the token secret is in the journal"
    );
    ensure!(
        !node
            .read_to_string(crate::install::AGENT_STATE_PATH)
            .unwrap_or_default()
            .contains(secret),
        "the token secret is in state.json"
    );
    Ok(())
}
