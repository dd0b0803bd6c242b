//! etcd fixtures for control-plane scenarios: real etcd members on loopback with TLS like kubeadm's.
//!
//! Debian's etcd 3.4 (`/usr/bin/etcd`, `/usr/bin/etcdctl`; tests/setup.sh installs them)
//! runs as host processes inside a node's network namespace, like the fake API server,
//! so the node reaches member N at `https://127.0.0.N:2379` (clients) and `:2380`
//! (peers). TLS is kubeadm's: an `etcd-ca`, a server/peer certificate per member, client
//! certificates required on both ports. The certificates come from the fakes' `fake-pki`
//! (the harness has no crypto of its own). Data lives under the fixture's directory;
//! every process is killed by PID when the fixture drops.
//!
//! [`EtcdCluster::play_static_pod`] plays kubelet for the joining node's etcd static pod:
//! once kubeadm has written `/etc/kubernetes/manifests/etcd.yaml` in the node and added
//! the learner, it starts that member (after a chosen delay) with the node's own
//! certificates and data directory, and stops it when the manifest goes away (reset).

use crate::cmd::{self, Output};
use crate::netns::Netns;
use crate::node::Node;
use crate::paths;
use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// TLS files of one etcd process.
#[derive(Debug, Clone)]
pub struct MemberTls {
    /// CA bundle.
    pub ca: PathBuf,
    /// Serving and peer certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// Peer certificate (kubeadm has a separate one).
    pub peer_cert: PathBuf,
    /// Its key.
    pub peer_key: PathBuf,
}

/// How to run one etcd process.
#[derive(Debug, Clone)]
pub struct MemberProcess {
    /// `--name`.
    pub name: String,
    /// The loopback address it listens on (client 2379, peer 2380).
    pub ip: String,
    /// `--data-dir` (host path).
    pub data_dir: PathBuf,
    /// `--initial-cluster`.
    pub initial_cluster: String,
    /// `--initial-cluster-state existing` (joining) rather than `new`.
    pub existing: bool,
    /// Certificates.
    pub tls: MemberTls,
}

impl MemberProcess {
    /// `https://<ip>:2379`.
    pub fn client_url(&self) -> String {
        format!("https://{}:2379", self.ip)
    }

    /// `https://<ip>:2380`.
    pub fn peer_url(&self) -> String {
        format!("https://{}:2380", self.ip)
    }
}

struct Running {
    spec: MemberProcess,
    child: Option<Child>,
    log: PathBuf,
}

/// A test etcd cluster (and any members started for joining nodes).
pub struct EtcdCluster {
    dir: PathBuf,
    netns: Arc<Netns>,
    members: Mutex<Vec<Running>>,
    stop_players: Arc<AtomicBool>,
}

fn fake_pki(args: &[&str]) -> Result<()> {
    let bin = paths::fake_bin("fake-pki");
    paths::require_file(&bin, "build the fakes first: cargo build -p kja-fakes")?;
    cmd::run(Command::new(&bin).args(args), None, Duration::from_secs(30))?.ok()?;
    Ok(())
}

impl EtcdCluster {
    /// Makes the PKI (`<dir>/pki/ca.{crt,key}`, a server/peer certificate per member, a
    /// client certificate for etcdctl) for members `etcd-1..` on `ips` (`127.0.0.1`,
    /// `127.0.0.2`, ...), one static bootstrap cluster. Starts nothing. `dir` is emptied.
    pub fn create(netns: &Arc<Netns>, dir: impl Into<PathBuf>, ips: &[&str]) -> Result<Self> {
        for bin in ["/usr/bin/etcd", "/usr/bin/etcdctl"] {
            paths::require_file(
                Path::new(bin),
                "install Debian's etcd-server and etcd-client (tests/setup.sh)",
            )?;
        }
        let dir: PathBuf = dir.into();
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        let pki = dir.join("pki");
        fs::create_dir_all(&pki)?;
        let s = |p: &Path| p.display().to_string();
        fake_pki(&["ca", "--cn", "etcd-ca", "--out", &s(&pki.join("ca"))])?;
        fake_pki(&[
            "leaf",
            "--ca",
            &s(&pki.join("ca")),
            "--cn",
            "kja-e2e-etcdctl",
            "--client",
            "--out",
            &s(&pki.join("etcdctl")),
        ])?;
        let names: Vec<String> = (1..=ips.len()).map(|i| format!("etcd-{i}")).collect();
        let initial_cluster = names
            .iter()
            .zip(ips)
            .map(|(n, ip)| format!("{n}=https://{ip}:2380"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (name, ip) in names.iter().zip(ips) {
            let out = pki.join(name);
            fake_pki(&[
                "leaf",
                "--ca",
                &s(&pki.join("ca")),
                "--cn",
                name,
                "--dns",
                name,
                "--dns",
                "localhost",
                "--ip",
                ip,
                "--ip",
                "127.0.0.1",
                "--server",
                "--client",
                "--out",
                &s(&out),
            ])?;
            members.push(Running {
                spec: MemberProcess {
                    name: name.clone(),
                    ip: ip.to_string(),
                    data_dir: dir.join(name).join("data"),
                    initial_cluster: initial_cluster.clone(),
                    existing: false,
                    tls: MemberTls {
                        ca: pki.join("ca.crt"),
                        cert: out.with_extension("crt"),
                        key: out.with_extension("key"),
                        peer_cert: out.with_extension("crt"),
                        peer_key: out.with_extension("key"),
                    },
                },
                child: None,
                log: dir.join(format!("{name}.log")),
            });
        }
        Ok(Self {
            dir,
            netns: netns.clone(),
            members: Mutex::new(members),
            stop_players: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The directory holding the etcd CA (`ca.crt`, `ca.key`): what the kubeadm-certs
    /// Secret must carry.
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.join("pki")
    }

    /// Client URLs of the bootstrap members, in order.
    pub fn client_urls(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|m| !m.spec.existing)
            .map(|m| m.spec.client_url())
            .collect()
    }

    /// `etcd-i` → client URL, for the fake API server's `etcd_pods` knob.
    pub fn pods_knob(&self) -> Value {
        let map: serde_json::Map<String, Value> = self
            .lock()
            .iter()
            .filter(|m| !m.spec.existing)
            .map(|m| (m.spec.name.clone(), Value::String(m.spec.client_url())))
            .collect();
        Value::Object(map)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Running>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts bootstrap member `i` (0-based).
    pub fn start(&self, i: usize) -> Result<()> {
        let mut members = self.lock();
        let m = members.get_mut(i).ok_or_else(|| anyhow!("no member {i}"))?;
        if m.child.is_some() {
            return Ok(());
        }
        m.child = Some(self.spawn(&m.spec, &m.log)?);
        Ok(())
    }

    /// Starts every bootstrap member.
    pub fn start_all(&self) -> Result<()> {
        let n = self.lock().len();
        (0..n).try_for_each(|i| self.start(i))
    }

    /// Stops bootstrap member `i`: SIGTERM, then SIGKILL (by PID).
    pub fn stop(&self, i: usize) {
        let mut members = self.lock();
        if let Some(m) = members.get_mut(i) {
            stop_child(&mut m.child);
        }
    }

    /// Starts a member for a joining node (`--initial-cluster-state existing`).
    pub fn start_joining(&self, spec: MemberProcess) -> Result<()> {
        let log = self.dir.join(format!("{}.log", spec.name));
        let child = self.spawn(&spec, &log)?;
        self.lock().push(Running {
            spec,
            child: Some(child),
            log,
        });
        Ok(())
    }

    /// Stops the joining member with this name, if running.
    pub fn stop_joining(&self, name: &str) {
        for m in self.lock().iter_mut() {
            if m.spec.existing && m.spec.name == name {
                stop_child(&mut m.child);
            }
        }
    }

    /// Whether a process named `name` runs.
    pub fn is_running(&self, name: &str) -> bool {
        self.lock().iter_mut().any(|m| {
            m.spec.name == name
                && m.child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
        })
    }

    fn spawn(&self, m: &MemberProcess, log: &Path) -> Result<Child> {
        fs::create_dir_all(&m.data_dir)?;
        let out = fs::OpenOptions::new().create(true).append(true).open(log)?;
        let mut cmd = self.netns.command("/usr/bin/etcd")?;
        let s = |p: &Path| p.display().to_string();
        cmd.args(["--name", &m.name])
            .args(["--data-dir", &s(&m.data_dir)])
            .args(["--listen-client-urls", &m.client_url()])
            .args(["--advertise-client-urls", &m.client_url()])
            .args(["--listen-peer-urls", &m.peer_url()])
            .args(["--initial-advertise-peer-urls", &m.peer_url()])
            .args(["--initial-cluster", &m.initial_cluster])
            .args([
                "--initial-cluster-state",
                if m.existing { "existing" } else { "new" },
            ])
            .args(["--initial-cluster-token", "kja-e2e"])
            .args(["--cert-file", &s(&m.tls.cert), "--key-file", &s(&m.tls.key)])
            .args([
                "--trusted-ca-file",
                &s(&m.tls.ca),
                "--client-cert-auth=true",
            ])
            .args([
                "--peer-cert-file",
                &s(&m.tls.peer_cert),
                "--peer-key-file",
                &s(&m.tls.peer_key),
            ])
            .args([
                "--peer-trusted-ca-file",
                &s(&m.tls.ca),
                "--peer-client-cert-auth=true",
            ])
            .args(["--snapshot-count", "10000"])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        cmd::spawn_tied(cmd, Signal::SIGTERM)
    }

    /// etcdctl (API v3) inside the namespace against `endpoints` (all bootstrap members
    /// if empty), with the fixture's client certificate.
    pub fn etcdctl(&self, endpoints: &[String], args: &[&str]) -> Result<Output> {
        let pki = self.ca_dir();
        let eps = if endpoints.is_empty() {
            self.client_urls()
        } else {
            endpoints.to_vec()
        };
        let mut cmd = self.netns.command("/usr/bin/etcdctl")?;
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", eps.join(",")))
            .arg(format!("--cacert={}", pki.join("ca.crt").display()))
            .arg(format!("--cert={}", pki.join("etcdctl.crt").display()))
            .arg(format!("--key={}", pki.join("etcdctl.key").display()))
            .args(["--dial-timeout=2s", "--command-timeout=5s"])
            .args(args);
        cmd::run(&mut cmd, None, Duration::from_secs(20))
    }

    /// `member list`: the members as etcdctl's JSON shows them (`ID`, `name`,
    /// `peerURLs`, `clientURLs`, `isLearner`).
    pub fn member_list(&self) -> Result<Vec<Value>> {
        let mut last = None;
        for ep in self.client_urls() {
            let out = self.etcdctl(std::slice::from_ref(&ep), &["member", "list", "-w", "json"])?;
            if out.success() {
                let v: Value = serde_json::from_str(&out.stdout)
                    .with_context(|| format!("member list JSON: {}", out.stdout))?;
                return Ok(v["members"].as_array().cloned().unwrap_or_default());
            }
            last = Some(out);
        }
        bail!(
            "no member answered the member list: {}",
            last.map(|o| o.to_string()).unwrap_or_default()
        )
    }

    /// The member whose first peer URL is `peer_url`.
    pub fn member(&self, peer_url: &str) -> Result<Option<Value>> {
        Ok(self.member_list()?.into_iter().find(|m| {
            m["peerURLs"]
                .as_array()
                .and_then(|a| a.first())
                .and_then(Value::as_str)
                == Some(peer_url)
        }))
    }

    /// Adds a learner that will never be started (a failed join's leftover); returns its
    /// ID in etcdctl's hex.
    pub fn add_stale_learner(&self, peer_url: &str) -> Result<String> {
        let out = self
            .etcdctl(
                &[],
                &[
                    "member",
                    "add",
                    "stale",
                    "--learner",
                    &format!("--peer-urls={peer_url}"),
                    "-w",
                    "json",
                ],
            )?
            .ok()?;
        let v: Value = serde_json::from_str(&out.stdout)
            .with_context(|| format!("member add JSON: {}", out.stdout))?;
        let id = v["member"]["ID"]
            .as_u64()
            .ok_or_else(|| anyhow!("member add gave no ID: {}", out.stdout))?;
        Ok(format!("{id:x}"))
    }

    /// Whether a bootstrap member reports a leader.
    pub fn has_leader(&self) -> bool {
        self.client_urls().iter().any(|ep| {
            self.etcdctl(
                std::slice::from_ref(ep),
                &["endpoint", "status", "-w", "json"],
            )
            .ok()
            .filter(Output::success)
            .and_then(|o| serde_json::from_str::<Value>(&o.stdout).ok())
            .and_then(|v| v[0]["Status"]["leader"].as_u64())
            .is_some_and(|l| l != 0)
        })
    }

    /// Waits until some member reports a leader.
    pub fn wait_leader(&self, timeout: Duration) -> Result<()> {
        crate::wait::until_ok(
            "an etcd leader",
            timeout,
            Duration::from_millis(300),
            || {
                if self.has_leader() {
                    Ok(())
                } else {
                    bail!("no member reports a leader")
                }
            },
        )
    }

    /// The last lines of every member's log, for failure messages.
    pub fn logs(&self) -> String {
        self.lock()
            .iter()
            .map(|m| {
                let text = fs::read_to_string(&m.log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "--- {} ---\n{}",
                    m.spec.name,
                    lines[lines.len().saturating_sub(15)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Plays kubelet for `node`'s etcd static pod: when the manifest exists in the node
    /// and the cluster lists a learner with the manifest's peer URL, start it `delay`
    /// later with the node's certificates and data directory; when the manifest goes
    /// away, stop it. Runs in a thread until the fixture drops.
    pub fn play_static_pod(self: &Arc<Self>, node: &Node, delay: Duration) -> Result<()> {
        let manifest = node.resolve("/etc/kubernetes/manifests/etcd.yaml")?;
        let pki = node.resolve("/etc/kubernetes/pki/etcd")?;
        let data_dir = node.resolve("/var/lib/etcd")?;
        // A weak reference: the thread must not keep the fixture (and its processes)
        // alive; it ends when the fixture is dropped.
        let weak = Arc::downgrade(self);
        let stop = Arc::clone(&self.stop_players);
        std::thread::spawn(move || {
            let mut seen_learner: Option<Instant> = None;
            let mut running: Option<String> = None;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                let Some(this) = weak.upgrade() else {
                    break;
                };
                let Ok(text) = fs::read_to_string(&manifest) else {
                    if let Some(name) = running.take() {
                        this.stop_joining(&name);
                    }
                    seen_learner = None;
                    continue;
                };
                if running.is_some() {
                    continue;
                }
                let flag = |f: &str| {
                    text.lines()
                        .filter_map(|l| l.trim().strip_prefix("- "))
                        .find_map(|a| a.strip_prefix(&format!("--{f}=")).map(str::to_string))
                };
                let (Some(name), Some(peer), Some(cluster)) = (
                    flag("name"),
                    flag("initial-advertise-peer-urls"),
                    flag("initial-cluster"),
                ) else {
                    continue;
                };
                let listed = this.member(&peer).ok().flatten().is_some();
                if !listed {
                    seen_learner = None;
                    continue;
                }
                let first = *seen_learner.get_or_insert_with(Instant::now);
                if first.elapsed() < delay {
                    continue;
                }
                let ip = peer
                    .trim_start_matches("https://")
                    .rsplit_once(':')
                    .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
                    .unwrap_or_default();
                let spec = MemberProcess {
                    name: name.clone(),
                    ip,
                    data_dir: data_dir.clone(),
                    initial_cluster: cluster,
                    existing: true,
                    tls: MemberTls {
                        ca: pki.join("ca.crt"),
                        cert: pki.join("server.crt"),
                        key: pki.join("server.key"),
                        peer_cert: pki.join("peer.crt"),
                        peer_key: pki.join("peer.key"),
                    },
                };
                match this.start_joining(spec) {
                    Ok(()) => {
                        eprintln!(
                            "kja-e2e: started etcd member {name} ({peer}) for the node's static pod"
                        );
                        running = Some(name);
                    }
                    Err(e) => eprintln!("kja-e2e: starting the node's etcd: {e:#}"),
                }
            }
        });
        Ok(())
    }
}

fn stop_child(child: &mut Option<Child>) {
    let Some(mut c) = child.take() else {
        return;
    };
    if matches!(c.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
    for _ in 0..150 {
        if matches!(c.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.stop_players.store(true, Ordering::Relaxed);
        for m in self.lock().iter_mut() {
            stop_child(&mut m.child);
        }
    }
}
