//! A real Kubernetes v1.20.2 control plane on the loopback of a node's network namespace:
//! Debian's etcd-server, kube-apiserver and kube-controller-manager as host processes
//! inside the namespace (like the fake API server of [`crate::control_plane`]), so the
//! node reaches it at `https://127.0.0.1:6443`. Certificates, kubeconfigs and the objects a
//! join needs come from the built kubeadm's own init phases (tests/real/README.md).
//!
//! Layout of its directory (host paths): `kubeadm.yaml`, `pki/` (kubeadm's certificates),
//! `kubeconfig/` (`admin.conf`, `controller-manager.conf`, ...), `etcd/` (data),
//! `home/` (`$HOME` of kubectl and kubeadm), and one log per process: `etcd.log`,
//! `kube-apiserver.log`, `kube-controller-manager.log`, `setup.log` (every kubeadm and
//! kubectl command run here, with its output). Every process is tracked by PID and
//! stopped (SIGTERM, then SIGKILL) when the control plane drops.

use crate::cmd::{self, Output};
use crate::netns::Netns;
use crate::wait;
use anyhow::{Context, Result, anyhow, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The API server as the node sees it (`controlPlaneEndpoint`).
pub const ENDPOINT: &str = "127.0.0.1:6443";
/// The interface that gives the namespace a non-loopback address: kubeadm 1.20 refuses to
/// pick an advertise address from `lo`, and kubelet wants a node IP.
pub const NODE_IP_LINK: &str = "kja0";
/// Its address (the node's InternalIP) and prefix.
pub const NODE_IP: &str = "10.250.0.2";
const NODE_IP_CIDR: &str = "10.250.0.2/24";
const NODE_IP_GATEWAY: &str = "10.250.0.1";
/// The name kubeadm's InitConfiguration gives the (kubelet-less) control plane.
pub const CONTROL_PLANE_NAME: &str = "kja-control-plane";

/// A control-plane component run as a host process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// Debian's `/usr/bin/etcd` (3.4), plain HTTP on 127.0.0.1:2379/2380.
    Etcd,
    /// kube-apiserver on 127.0.0.1:6443.
    ApiServer,
    /// kube-controller-manager, secure port 127.0.0.1:10257.
    ControllerManager,
}

impl Component {
    /// The process name, also the log's name.
    pub fn name(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::ApiServer => "kube-apiserver",
            Component::ControllerManager => "kube-controller-manager",
        }
    }
}

struct Proc {
    child: Option<Child>,
    started: Option<Instant>,
}

/// A running real control plane. Stopped on drop.
pub struct RealControlPlane {
    dir: PathBuf,
    bins: PathBuf,
    netns: Arc<Netns>,
    procs: [Mutex<Proc>; 3],
    setup_log: Mutex<fs::File>,
}

fn slot(c: Component) -> usize {
    match c {
        Component::Etcd => 0,
        Component::ApiServer => 1,
        Component::ControllerManager => 2,
    }
}

/// Gives `netns` a non-loopback address ([`NODE_IP`] on a veth link [`NODE_IP_LINK`])
/// and a default route through it, unless it already has them. kubeadm takes its
/// advertise address from the default route's interface; kubelet its node IP.
pub fn add_node_address(netns: &Netns) -> Result<()> {
    let ns = netns.name();
    let links = cmd::host("ip", &["-n", ns, "-o", "link", "show"])?.stdout;
    if links.contains(&format!(" {NODE_IP_LINK}:")) {
        return Ok(());
    }
    // A veth pair with both ends inside (this kernel has no dummy links).
    let peer = format!("{NODE_IP_LINK}p");
    cmd::host(
        "ip",
        &[
            "-n",
            ns,
            "link",
            "add",
            NODE_IP_LINK,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ],
    )?;
    cmd::host("ip", &["-n", ns, "link", "set", &peer, "up"])?;
    cmd::host(
        "ip",
        &["-n", ns, "addr", "add", NODE_IP_CIDR, "dev", NODE_IP_LINK],
    )?;
    cmd::host("ip", &["-n", ns, "link", "set", NODE_IP_LINK, "up"])?;
    cmd::host(
        "ip",
        &[
            "-n",
            ns,
            "route",
            "add",
            "default",
            "via",
            NODE_IP_GATEWAY,
            "dev",
            NODE_IP_LINK,
        ],
    )?;
    Ok(())
}

impl RealControlPlane {
    /// Builds (if needed, [`super::binaries_dir`]) and starts a fresh control plane in
    /// `netns` with its files in `dir` (emptied first): certificates and kubeconfigs from
    /// `kubeadm init phase certs all` / `kubeconfig all`, etcd, kube-apiserver,
    /// kube-controller-manager, then `kubeadm init phase upload-config`, `bootstrap-token`
    /// and `addon kube-proxy` (kubeadm-config, kubelet-config-1.20, cluster-info, the join
    /// RBAC, the kube-proxy ConfigMap).
    /// Returns once all of it is in place (about 10-20 s).
    pub fn start(netns: &Arc<Netns>, dir: impl Into<PathBuf>) -> Result<Self> {
        let bins = super::binaries_dir()?;
        crate::paths::require_file(
            Path::new("/usr/bin/etcd"),
            "install Debian's etcd-server (tests/setup.sh)",
        )?;
        let dir: PathBuf = dir.into();
        let dir = if dir.is_absolute() {
            dir
        } else {
            std::env::current_dir()?.join(dir)
        };
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        for sub in ["pki", "kubeconfig", "etcd", "home"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        add_node_address(netns)?;
        let setup_log = fs::File::create(dir.join("setup.log"))?;
        let cp = RealControlPlane {
            dir,
            bins,
            netns: netns.clone(),
            procs: std::array::from_fn(|_| {
                Mutex::new(Proc {
                    child: None,
                    started: None,
                })
            }),
            setup_log: Mutex::new(setup_log),
        };
        let t0 = Instant::now();
        cp.bootstrap().with_context(|| {
            format!(
                "starting the real control plane in {} (logs there)",
                cp.dir.display()
            )
        })?;
        cp.note(&format!(
            "control plane ready after {:.1}s",
            t0.elapsed().as_secs_f64()
        ));
        Ok(cp)
    }

    fn bootstrap(&self) -> Result<()> {
        fs::write(self.dir.join("kubeadm.yaml"), self.kubeadm_config())?;
        let config = self.path("kubeadm.yaml");
        let kubeconfig_dir = self.path("kubeconfig");
        self.kubeadm_ok(&["init", "phase", "certs", "all", "--config", &config])?;
        self.kubeadm_ok(&[
            "init",
            "phase",
            "kubeconfig",
            "all",
            "--config",
            &config,
            "--kubeconfig-dir",
            &kubeconfig_dir,
        ])?;
        // kubeadm points these at the local API endpoint (the advertise address on kja0);
        // the API server listens on loopback only.
        for conf in ["controller-manager.conf", "scheduler.conf", "kubelet.conf"] {
            let path = self.dir.join("kubeconfig").join(conf);
            let text =
                fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let text = text.replace(
                &format!("server: https://{NODE_IP}:6443"),
                &format!("server: https://{ENDPOINT}"),
            );
            fs::write(&path, text)?;
        }
        self.start_component(Component::Etcd)?;
        self.start_component(Component::ApiServer)?;
        self.start_component(Component::ControllerManager)?;

        let admin = self.admin_conf_str();
        self.kubeadm_ok(&[
            "init",
            "phase",
            "upload-config",
            "kubeadm",
            "--config",
            &config,
            "--kubeconfig",
            &admin,
        ])?;
        // `upload-config kubelet` creates kubelet-config-1.20 and its RBAC, then waits
        // (about 2 minutes, and fails) to annotate its own Node, which never comes: run it
        // in the background and stop it once its RoleBinding, the last object, exists.
        let mut bg = self.netns.command(self.bins.join("kubeadm"))?;
        bg.args([
            "init",
            "phase",
            "upload-config",
            "kubelet",
            "--config",
            &config,
            "--kubeconfig",
            &admin,
        ])
        .env("HOME", self.dir.join("home"))
        .stdin(Stdio::null())
        .stdout(self.log_file("upload-config-kubelet.log")?)
        .stderr(self.log_file("upload-config-kubelet.log")?);
        let mut child = cmd::spawn_tied(bg, Signal::SIGTERM)?;
        let waited = wait::until_ok(
            "kubeadm's kubelet-config-1.20 RoleBinding",
            Duration::from_secs(60),
            Duration::from_millis(250),
            || {
                if let Some(status) = child.try_wait()? {
                    return Ok(Err(anyhow!(
                        "`kubeadm init phase upload-config kubelet` exited early with {status}: {}",
                        self.read_log("upload-config-kubelet.log")
                    )));
                }
                let out = self.kubectl(&[
                    "-n",
                    "kube-system",
                    "get",
                    "rolebinding",
                    "kubeadm:kubelet-config-1.20",
                    "-o",
                    "name",
                ])?;
                ensure!(out.success(), "{}", out.stderr.trim());
                Ok(Ok(()))
            },
        );
        stop_child(&mut child, Duration::from_secs(5));
        waited??;
        self.note("stopped `kubeadm init phase upload-config kubelet` once its objects existed");

        self.kubeadm_ok(&[
            "init",
            "phase",
            "bootstrap-token",
            "--config",
            &config,
            "--kubeconfig",
            &admin,
        ])?;
        // The kube-proxy ConfigMap and the Role that lets joining nodes read it, as every
        // kubeadm cluster has them (without, join warns that it cannot read them). Its
        // DaemonSet's pods stay Pending: there is no scheduler.
        self.kubeadm_ok(&[
            "init",
            "phase",
            "addon",
            "kube-proxy",
            "--config",
            &config,
            "--kubeconfig",
            &admin,
        ])?;
        Ok(())
    }

    fn kubeadm_config(&self) -> String {
        format!(
            "# Written by kja-e2e (real tier): a control plane on the namespace's loopback.
apiVersion: kubeadm.k8s.io/v1beta2
kind: InitConfiguration
nodeRegistration:
  name: {CONTROL_PLANE_NAME}
  criSocket: /run/containerd/containerd.sock
  taints: []
---
apiVersion: kubeadm.k8s.io/v1beta2
kind: ClusterConfiguration
kubernetesVersion: {version}
clusterName: kubernetes
controlPlaneEndpoint: {ENDPOINT}
certificatesDir: {pki}
etcd:
  external:
    endpoints:
    - http://127.0.0.1:2379
networking:
  serviceSubnet: 10.96.0.0/12
  dnsDomain: cluster.local
",
            version = super::VERSION,
            pki = self.path("pki"),
        )
    }

    fn args(&self, c: Component) -> Vec<String> {
        let pki = |f: &str| self.dir.join("pki").join(f).display().to_string();
        let conf = |f: &str| self.dir.join("kubeconfig").join(f).display().to_string();
        let v: Vec<String> = match c {
            Component::Etcd => vec![
                "--name=default".into(),
                format!("--data-dir={}", self.path("etcd")),
                "--listen-client-urls=http://127.0.0.1:2379".into(),
                "--advertise-client-urls=http://127.0.0.1:2379".into(),
                "--listen-peer-urls=http://127.0.0.1:2380".into(),
                "--initial-advertise-peer-urls=http://127.0.0.1:2380".into(),
                "--initial-cluster=default=http://127.0.0.1:2380".into(),
            ],
            Component::ApiServer => vec![
                "--advertise-address=127.0.0.1".into(),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=6443".into(),
                "--insecure-port=0".into(),
                // Loopback addresses are invalid in Endpoints.
                "--endpoint-reconciler-type=none".into(),
                "--allow-privileged=true".into(),
                "--authorization-mode=Node,RBAC".into(),
                "--enable-admission-plugins=NodeRestriction".into(),
                "--enable-bootstrap-token-auth=true".into(),
                "--etcd-servers=http://127.0.0.1:2379".into(),
                format!("--client-ca-file={}", pki("ca.crt")),
                format!("--tls-cert-file={}", pki("apiserver.crt")),
                format!("--tls-private-key-file={}", pki("apiserver.key")),
                format!(
                    "--kubelet-client-certificate={}",
                    pki("apiserver-kubelet-client.crt")
                ),
                format!(
                    "--kubelet-client-key={}",
                    pki("apiserver-kubelet-client.key")
                ),
                "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname".into(),
                format!("--proxy-client-cert-file={}", pki("front-proxy-client.crt")),
                format!("--proxy-client-key-file={}", pki("front-proxy-client.key")),
                "--requestheader-allowed-names=front-proxy-client".into(),
                format!(
                    "--requestheader-client-ca-file={}",
                    pki("front-proxy-ca.crt")
                ),
                "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
                "--requestheader-group-headers=X-Remote-Group".into(),
                "--requestheader-username-headers=X-Remote-User".into(),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", pki("sa.pub")),
                format!("--service-account-signing-key-file={}", pki("sa.key")),
                "--service-cluster-ip-range=10.96.0.0/12".into(),
            ],
            Component::ControllerManager => vec![
                format!("--kubeconfig={}", conf("controller-manager.conf")),
                format!(
                    "--authentication-kubeconfig={}",
                    conf("controller-manager.conf")
                ),
                format!(
                    "--authorization-kubeconfig={}",
                    conf("controller-manager.conf")
                ),
                "--bind-address=127.0.0.1".into(),
                "--port=0".into(),
                "--secure-port=10257".into(),
                "--leader-elect=false".into(),
                "--controllers=*,bootstrapsigner,tokencleaner".into(),
                format!("--client-ca-file={}", pki("ca.crt")),
                format!(
                    "--requestheader-client-ca-file={}",
                    pki("front-proxy-ca.crt")
                ),
                format!("--root-ca-file={}", pki("ca.crt")),
                format!("--cluster-signing-cert-file={}", pki("ca.crt")),
                format!("--cluster-signing-key-file={}", pki("ca.key")),
                format!("--service-account-private-key-file={}", pki("sa.key")),
                "--use-service-account-credentials=true".into(),
                "--cluster-name=kubernetes".into(),
            ],
        };
        v
    }

    fn program(&self, c: Component) -> PathBuf {
        match c {
            Component::Etcd => PathBuf::from("/usr/bin/etcd"),
            other => self.bins.join(other.name()),
        }
    }

    /// Starts `c` without waiting for it to serve; returns when it was spawned. Its output
    /// is appended to `<dir>/<name>.log`.
    pub fn spawn_component(&self, c: Component) -> Result<Instant> {
        let mut proc = self.procs[slot(c)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(child) = proc.child.as_mut()
            && child.try_wait()?.is_none()
        {
            bail!("{} is already running (PID {})", c.name(), child.id());
        }
        let log_name = format!("{}.log", c.name());
        let mut log = self.log_file(&log_name)?;
        writeln!(
            log,
            "===== kja-e2e: starting {} at {} =====",
            c.name(),
            now_rfc3339()
        )?;
        let mut command = self.netns.command(self.program(c))?;
        command
            .args(self.args(c))
            .env("HOME", self.dir.join("home"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let started = Instant::now();
        let child = cmd::spawn_tied(command, Signal::SIGTERM)?;
        self.note(&format!("started {} (PID {})", c.name(), child.id()));
        proc.child = Some(child);
        proc.started = Some(started);
        Ok(started)
    }

    /// Starts `c` and waits (60 s) until it serves: etcd's `/health`, the API server's
    /// `/readyz`, the controller manager's `/healthz`.
    pub fn start_component(&self, c: Component) -> Result<()> {
        self.spawn_component(c)?;
        self.wait_serving(c, Duration::from_secs(60))
    }

    /// Waits until `c` answers its health check with 200.
    pub fn wait_serving(&self, c: Component, timeout: Duration) -> Result<()> {
        let url = match c {
            Component::Etcd => "http://127.0.0.1:2379/health",
            Component::ApiServer => "https://127.0.0.1:6443/readyz",
            Component::ControllerManager => "https://127.0.0.1:10257/healthz",
        };
        wait::until_ok(
            &format!("{} to serve {url}", c.name()),
            timeout,
            Duration::from_millis(100),
            || {
                if !self.is_running(c) {
                    return Ok(Err(anyhow!(
                        "{} exited; last lines of its log:\n{}",
                        c.name(),
                        tail(&self.read_log(&format!("{}.log", c.name())), 30)
                    )));
                }
                let (code, body) = self.http_get(url, &[])?;
                ensure!(code == 200, "HTTP {code}: {}", body.trim());
                Ok(Ok(()))
            },
        )?
    }

    /// Stops `c`: SIGTERM, up to 10 s, then SIGKILL (by PID, only our child). No-op if it
    /// is not running.
    pub fn stop_component(&self, c: Component) {
        let child = self.procs[slot(c)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .child
            .take();
        if let Some(mut child) = child {
            let pid = child.id();
            stop_child(&mut child, Duration::from_secs(10));
            self.note(&format!("stopped {} (PID {pid})", c.name()));
        }
    }

    /// Whether `c` runs (was started and has not exited).
    pub fn is_running(&self, c: Component) -> bool {
        let mut proc = self.procs[slot(c)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match proc.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// PID of `c` while it runs.
    pub fn pid(&self, c: Component) -> Option<u32> {
        let proc = self.procs[slot(c)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        proc.child.as_ref().map(Child::id)
    }

    /// Stops kube-apiserver.
    pub fn stop_apiserver(&self) {
        self.stop_component(Component::ApiServer);
    }

    /// Starts kube-apiserver again and waits until `/readyz` says ok.
    pub fn start_apiserver(&self) -> Result<()> {
        self.start_component(Component::ApiServer)
    }

    /// Stops kube-controller-manager (no more CSR approval, JWS signing, token cleanup or
    /// node lifecycle).
    pub fn stop_controller_manager(&self) {
        self.stop_component(Component::ControllerManager);
    }

    /// Starts kube-controller-manager again and waits for its `/healthz`.
    pub fn start_controller_manager(&self) -> Result<()> {
        self.start_component(Component::ControllerManager)
    }

    /// The control plane's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, sub: &str) -> String {
        self.dir.join(sub).display().to_string()
    }

    /// `<dir>/kubeconfig/admin.conf` (system:masters).
    pub fn admin_conf(&self) -> PathBuf {
        self.dir.join("kubeconfig/admin.conf")
    }

    fn admin_conf_str(&self) -> String {
        self.admin_conf().display().to_string()
    }

    /// The cluster CA certificate, `<dir>/pki/ca.crt`.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("pki/ca.crt")
    }

    /// The CA pin `sha256:<hex>`: SHA-256 of the CA's DER SubjectPublicKeyInfo, computed
    /// with openssl (the harness has no crypto of its own).
    pub fn pin(&self) -> Result<String> {
        let script =
            "openssl x509 -in \"$1\" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum";
        let out = cmd::host(
            "sh",
            &["-c", script, "sh", &self.ca_cert().display().to_string()],
        )?;
        let hex = out.trimmed().split_whitespace().next().unwrap_or_default();
        ensure!(
            hex.len() == 64,
            "unexpected sha256sum output {:?}",
            out.stdout
        );
        Ok(format!("sha256:{hex}"))
    }

    /// Runs the built kubeadm on the host inside the namespace (60 s deadline). A non-zero
    /// exit is not an error here; the command and its output go to `setup.log`.
    pub fn kubeadm(&self, args: &[&str]) -> Result<Output> {
        let mut command = self.netns.command(self.bins.join("kubeadm"))?;
        command.args(args).env("HOME", self.dir.join("home"));
        self.logged(command, Duration::from_secs(60))
    }

    fn kubeadm_ok(&self, args: &[&str]) -> Result<Output> {
        self.kubeadm(args)?.ok()
    }

    /// Runs the built kubectl with admin.conf inside the namespace (30 s deadline). A
    /// non-zero exit is not an error here.
    pub fn kubectl(&self, args: &[&str]) -> Result<Output> {
        let mut command = self.netns.command(self.bins.join("kubectl"))?;
        command
            .arg("--kubeconfig")
            .arg(self.admin_conf())
            .args(args)
            .env("HOME", self.dir.join("home"));
        self.logged(command, Duration::from_secs(30))
    }

    fn logged(&self, mut command: Command, timeout: Duration) -> Result<Output> {
        let out = cmd::run(&mut command, None, timeout)?;
        let mut log = self.setup_log.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            log,
            "{} $ {}\n  -> {}\n{}{}",
            now_rfc3339(),
            out.command,
            out.status,
            indent(&out.stdout),
            indent(&out.stderr)
        );
        Ok(out)
    }

    /// `kubeadm token create` with a TTL of one hour; returns the token (`id.secret`).
    pub fn create_token(&self) -> Result<String> {
        self.create_token_with(&["--ttl", "1h"])
    }

    /// `kubeadm token create ARGS`; returns the token.
    pub fn create_token_with(&self, args: &[&str]) -> Result<String> {
        let admin = self.admin_conf_str();
        let mut argv = vec!["token", "create", "--kubeconfig", &admin];
        argv.extend_from_slice(args);
        let out = self.kubeadm_ok(&argv)?;
        let token = out.trimmed().lines().last().unwrap_or_default().to_string();
        ensure!(
            is_token(&token),
            "`kubeadm token create` printed no token: {out}"
        );
        Ok(token)
    }

    /// `kubeadm token delete ID` (a whole token or its id).
    pub fn delete_token(&self, token: &str) -> Result<()> {
        let id = token.split('.').next().unwrap_or(token);
        let admin = self.admin_conf_str();
        self.kubeadm_ok(&["token", "delete", id, "--kubeconfig", &admin])?;
        Ok(())
    }

    /// Waits until cluster-info carries a JWS signature for `token` (the bootstrap signer
    /// in the controller manager runs a moment after the token is created).
    pub fn wait_token_signed(&self, token: &str, timeout: Duration) -> Result<()> {
        let id = token.split('.').next().unwrap_or(token).to_string();
        wait::until_ok(
            &format!("cluster-info to carry jws-kubeconfig-{id}"),
            timeout,
            Duration::from_millis(200),
            || {
                let cm =
                    self.get_json(&["-n", "kube-public", "get", "configmap", "cluster-info"])?;
                let cm = cm.ok_or_else(|| anyhow!("no cluster-info ConfigMap"))?;
                ensure!(
                    cm["data"].get(format!("jws-kubeconfig-{id}")).is_some(),
                    "keys: {:?}",
                    cm["data"]
                        .as_object()
                        .map(|m| m.keys().cloned().collect::<Vec<_>>())
                );
                Ok(())
            },
        )
    }

    /// `kubectl get ARGS -o json`: `None` on NotFound.
    pub fn get_json(&self, args: &[&str]) -> Result<Option<Value>> {
        let mut argv = args.to_vec();
        argv.extend(["-o", "json"]);
        let out = self.kubectl(&argv)?;
        if !out.success() {
            if out.stderr.contains("NotFound") || out.stderr.contains("not found") {
                return Ok(None);
            }
            bail!("{out}");
        }
        Ok(Some(serde_json::from_str(&out.stdout).with_context(
            || format!("kubectl printed no JSON: {}", out.stdout),
        )?))
    }

    /// The Node object called `name`, if it exists.
    pub fn node(&self, name: &str) -> Result<Option<Value>> {
        self.get_json(&["get", "node", name])
    }

    /// The status of the Node's `Ready` condition (`True`, `False`, `Unknown`), `None` if
    /// the Node or the condition does not exist.
    pub fn node_ready(&self, name: &str) -> Result<Option<String>> {
        Ok(self.node(name)?.and_then(|n| condition(&n, "Ready")))
    }

    /// Deletes a Node (no error if absent).
    pub fn delete_node(&self, name: &str) -> Result<()> {
        self.kubectl(&["delete", "node", name, "--ignore-not-found"])?
            .ok()?;
        Ok(())
    }

    /// Every CertificateSigningRequest, as the admin sees it.
    pub fn csrs(&self) -> Result<Vec<Value>> {
        let list = self
            .get_json(&["get", "csr"])?
            .ok_or_else(|| anyhow!("no CSR list"))?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// GET `url` from inside the namespace with curl, TLS unverified, with extra curl
    /// arguments (for example `-H`, `Authorization: Bearer ...`; a later `--max-time`
    /// overrides the default 5 s). Returns (HTTP code, body); code 0 means no HTTP answer,
    /// and the body is then `curl exit N` (7: connection refused, 28: timeout).
    pub fn http_get(&self, url: &str, extra: &[&str]) -> Result<(u16, String)> {
        let mut command = self.netns.command("curl")?;
        command
            .args(["-sk", "--max-time", "5", "-w", "\n%{http_code}"])
            .args(extra)
            .arg(url);
        let out = cmd::run(&mut command, None, Duration::from_secs(10))?;
        let (body, code) = out.stdout.rsplit_once('\n').unwrap_or(("", &out.stdout));
        let code = code.trim().parse().unwrap_or(0);
        if code == 0 {
            let exit = out.code().map_or("a signal".to_string(), |c| c.to_string());
            return Ok((0, format!("curl exit {exit}")));
        }
        Ok((code, body.to_string()))
    }

    /// A log of the control plane's directory (`etcd.log`, `kube-apiserver.log`, ...).
    pub fn read_log(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    fn log_file(&self, name: &str) -> Result<fs::File> {
        let path = self.dir.join(name);
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))
    }

    fn note(&self, what: &str) {
        let mut log = self.setup_log.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(log, "{} # {what}", now_rfc3339());
    }

    /// Stops everything it started, newest first.
    pub fn stop(&self) {
        for c in [
            Component::ControllerManager,
            Component::ApiServer,
            Component::Etcd,
        ] {
            self.stop_component(c);
        }
    }
}

impl Drop for RealControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The status of condition `kind` of an object with `status.conditions`.
pub fn condition(obj: &Value, kind: &str) -> Option<String> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)?["status"]
        .as_str()
        .map(str::to_string)
}

fn is_token(s: &str) -> bool {
    let Some((id, secret)) = s.split_once('.') else {
        return false;
    };
    let ok = |p: &str, n: usize| {
        p.len() == n
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    };
    ok(id, 6) && ok(secret, 16)
}

/// SIGTERM, up to `grace`, then SIGKILL; reaps the child. Only this child, by PID.
fn stop_child(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Wall-clock time, UTC, with milliseconds (for logs that are compared with journals).
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format_utc(now.as_secs() as i64, now.subsec_millis())
}

fn format_utc(secs: i64, millis: u32) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        millis
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_recognized() {
        assert!(is_token("abcdef.0123456789abcdef"));
        assert!(!is_token("abcdef.0123456789abcde"));
        assert!(!is_token("ABCDEF.0123456789abcdef"));
        assert!(!is_token("[kubeadm] token"));
    }

    #[test]
    fn clock_formats_known_dates() {
        assert_eq!(format_utc(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc(1_700_000_000, 42), "2023-11-14T22:13:20.042Z");
        assert_eq!(format_utc(951_782_400, 999), "2000-02-29T00:00:00.999Z");
        assert_eq!(now_rfc3339().len(), 24);
    }
}
