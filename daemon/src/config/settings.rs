//! `Settings`: the validated configuration the rest of the agent trusts, and the value
//! types it is made of.

use crate::secret::{BootstrapToken, Secret};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// `host:port` of the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Endpoint {
    /// Parses `host:port` or `[v6]:port`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, port) = rest
                .split_once("]:")
                .ok_or("expected \"[IPv6]:port\"".to_string())?;
            (host, port)
        } else {
            text.rsplit_once(':')
                .ok_or("expected \"host:port\", for example \"10.0.0.10:6443\"".to_string())?
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(format!("{host:?} is not a host name or address"));
        }
        if !text.starts_with('[') && host.contains(':') {
            return Err("an IPv6 address must be written in brackets: \"[fd00::1]:6443\"".into());
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or(format!("{port:?} is not a port number (1-65535)"))?;
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }

    /// The host as it appears in a URL (IPv6 in brackets).
    pub fn url_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.url_host(), self.port)
    }
}

/// A `sha256:<hex>` pin over a CA's SubjectPublicKeyInfo, lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaPin(pub String);

impl CaPin {
    /// Parses kubeadm's pin format.
    pub fn parse(text: &str) -> Result<Self, String> {
        // kubeadm accepts the algorithm name in any case ("SHA256:...").
        let hex = text.get(..7).filter(|p| p.eq_ignore_ascii_case("sha256:")).map(|_| &text[7..]).ok_or(format!(
            "{text:?} is not a CA pin: expected \"sha256:<64 hex digits>\" (only sha256 is supported, as in kubeadm)"
        ))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "{text:?} is not a CA pin: the hash must be 64 hex digits"
            ));
        }
        Ok(Self(format!("sha256:{}", hex.to_ascii_lowercase())))
    }
}

impl fmt::Display for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where the token came from (named in diagnoses: "write a new token to ...").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `token_file = ...`
    File(PathBuf),
    /// `token = ...` in this fragment.
    Inline(PathBuf),
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::File(p) => write!(f, "{}", p.display()),
            TokenSource::Inline(p) => write!(f, "join.token in {}", p.display()),
        }
    }
}

/// `[join]`.
#[derive(Debug, Clone)]
pub struct JoinSettings {
    /// API server to join.
    pub api_server: Endpoint,
    /// The bootstrap token.
    pub token: BootstrapToken,
    /// Where the token was read from.
    pub token_source: TokenSource,
    /// CA pins; empty only with `unsafe_skip_ca_verification`.
    pub ca_pins: Vec<CaPin>,
    /// Name of the Node object.
    pub node_name: String,
    /// Join without CA pinning.
    pub unsafe_skip_ca_verification: bool,
    /// How long a Ready Node holding our name may block the join before the agent
    /// concludes a live machine owns the name.
    pub node_conflict_wait: Duration,
    /// A kubeconfig allowed to delete a conflicting Node (never the bootstrap token);
    /// `None`: never delete.
    pub node_delete_kubeconfig: Option<PathBuf>,
    /// Set for a control-plane join.
    pub control_plane: Option<ControlPlaneSettings>,
    /// What kubeadm's `nodeRegistration` (and the JoinConfiguration's `patches` and
    /// `skipPhases`) say beyond the name and the CRI socket.
    pub registration: Registration,
}

/// `ignore_preflight_errors`, `labels`, `taints`, `kubelet_extra_args`, `patches`,
/// `skip_phases` under `[join]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registration {
    /// kubeadm preflight checks whose errors are warnings, as kubeadm names them; `all`
    /// alone means every check.
    pub ignore_preflight_errors: Vec<String>,
    /// Node labels, set by the kubelet at registration (`--node-labels`).
    pub labels: BTreeMap<String, String>,
    /// Node taints; `None` leaves kubeadm's default (none for a worker, the control-plane
    /// taint for a control plane), `Some(vec![])` means no taints at all.
    pub taints: Option<Vec<Taint>>,
    /// Extra kubelet flags, without the leading dashes.
    pub kubelet_extra_args: BTreeMap<String, String>,
    /// kubeadm's `--patches` directory (kubeadm 1.22 and later).
    pub patches: Option<PathBuf>,
    /// kubeadm join phases to skip (kubeadm 1.22 and later).
    pub skip_phases: Vec<String>,
}

impl Registration {
    /// Whether kubeadm's preflight must ignore every check (only a command-line flag can
    /// say so: kubeadm refuses `all` in a configuration file).
    pub fn ignores_all_preflight_errors(&self) -> bool {
        self.ignore_preflight_errors
            .iter()
            .any(|e| e.eq_ignore_ascii_case("all"))
    }

    /// Whether `phase` ("control-plane-join/etcd") or its parent is to be skipped.
    pub fn skips(&self, phase: &str) -> bool {
        let parent = phase.split('/').next().unwrap_or(phase);
        self.skip_phases.iter().any(|p| p == phase || p == parent)
    }
}

/// A node taint, `key[=value]:Effect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    /// The key (a qualified name).
    pub key: String,
    /// The value, if any.
    pub value: Option<String>,
    /// NoSchedule, PreferNoSchedule or NoExecute.
    pub effect: String,
}

impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={}:{}", self.key, v, self.effect),
            None => write!(f, "{}:{}", self.key, self.effect),
        }
    }
}

/// `[join] control_plane = true` and its companions.
#[derive(Debug, Clone)]
pub struct ControlPlaneSettings {
    /// The key that decrypts the control-plane certificates kubeadm downloads
    /// (`kubeadm init phase upload-certs --upload-certs` prints it): 64 hex digits.
    pub certificate_key: Secret,
    /// The root-owned 0600 file it was read from.
    pub certificate_key_file: PathBuf,
    /// The address this control plane's API server and etcd advertise; `None` lets
    /// kubeadm pick the default route's address.
    pub advertise_address: Option<std::net::IpAddr>,
}

/// `[etcd]` (control-plane joins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// Client URLs of existing members to ask (`https://10.0.0.10:2379`). Default: the
    /// API server's host on port 2379 (stacked etcd, as kubeadm sets it up).
    pub endpoints: Vec<String>,
    /// Remove learners that never started (opt-in: it changes cluster membership).
    pub remove_stale_learners: bool,
    /// How long to wait for the etcd cluster to have a healthy leader.
    pub healthy_timeout: Duration,
    /// How long a learner may take to catch up before promotion is given up.
    pub learner_sync_timeout: Duration,
}

/// `[retry]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySettings {
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// First backoff.
    pub initial_backoff: Duration,
    /// Backoff cap.
    pub max_backoff: Duration,
}

/// `[timeouts]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Discovery may fail transiently this long.
    pub discovery: Duration,
    /// Deadline for one kubeadm run.
    pub join_phase: Duration,
    /// kubeadm killed after this long without output.
    pub no_progress: Duration,
    /// kubelet.conf and the client certificate must appear within this.
    pub tls_bootstrap: Duration,
    /// The Node must appear within this.
    pub node_registration: Duration,
}

/// `[preflight]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreflightSettings {
    /// Minimum memory.
    pub min_memory_mib: u64,
    /// Minimum free space under /var/lib.
    pub min_disk_free_mib: u64,
    /// Checks downgraded to warnings.
    pub warn_only: Vec<String>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSettings {
    /// A loopback TCP address to serve the metrics on besides the Unix socket; `None`:
    /// the Unix socket only.
    pub listen: Option<std::net::SocketAddr>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `[join]`.
    pub join: JoinSettings,
    /// `[kubeadm] path`.
    pub kubeadm_path: PathBuf,
    /// `[retry]`.
    pub retry: RetrySettings,
    /// `[timeouts]`.
    pub timeouts: Timeouts,
    /// `[containerd] socket`.
    pub containerd_socket: PathBuf,
    /// `[containerd] ready_timeout`.
    pub containerd_ready_timeout: Duration,
    /// `[containerd] restart_when_not_ready` with `restart_after`: restart containerd
    /// once after it has not been ready for this long. `None`: never.
    pub containerd_restart_after: Option<Duration>,
    /// `[etcd]`.
    pub etcd: EtcdSettings,
    /// `[kubelet] unit`.
    pub kubelet_unit: String,
    /// `[kubelet] certificate_warning`: once joined, warn this long before the
    /// kubelet's client certificate expires without having been rotated.
    pub certificate_warning: Duration,
    /// `[preflight]`.
    pub preflight: PreflightSettings,
    /// `[metrics]`.
    pub metrics: MetricsSettings,
    /// The files that made this configuration, in merge order.
    pub files: Vec<PathBuf>,
    /// A digest of the configuration's content (token excluded), to notice changes.
    pub fingerprint: String,
}

/// Names of the checks `warn_only` may list.
pub const CHECK_NAMES: &[&str] = &[
    "memory",
    "disk",
    "swap",
    "kernel-module-overlay",
    "kernel-module-br_netfilter",
    "ip_forward",
    "bridge-nf-call-iptables",
    "kubeadm",
    "container-runtime",
    "api-server",
    "dns",
    "leftovers",
    "kubelet-flags",
    "etcd",
    "version-skew",
];
