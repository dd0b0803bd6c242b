//! Configuration: TOML fragments merged in order, then validated once into `Settings`.
//!
//! Every field of a fragment is optional so that a later file can override one key of
//! an earlier one. Validation happens after the merge; the rest of the agent only sees
//! `Settings`, whose values are known good. Errors name the file, the key and the reason.

use crate::paths::{ConfigSource, Paths};
use crate::secret::{BootstrapToken, Secret};
use serde::Deserialize;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration problem: which file, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file at fault, when one is.
    pub file: Option<PathBuf>,
    /// The key at fault (`join.api_server`), or the line for syntax errors.
    pub key: String,
    /// What is wrong and how to fix it.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}: {}: {}", file.display(), self.key, self.reason),
            None => write!(f, "{}: {}", self.key, self.reason),
        }
    }
}

impl ConfigError {
    fn new(file: Option<&Path>, key: &str, reason: impl Into<String>) -> Self {
        Self {
            file: file.map(Path::to_path_buf),
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fragments: what one file may say.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fragment {
    join: Option<JoinFragment>,
    kubeadm: Option<KubeadmFragment>,
    retry: Option<RetryFragment>,
    timeouts: Option<TimeoutsFragment>,
    containerd: Option<ContainerdFragment>,
    kubelet: Option<KubeletFragment>,
    preflight: Option<PreflightFragment>,
    etcd: Option<EtcdFragment>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EtcdFragment {
    endpoints: Option<Vec<String>>,
    remove_stale_learners: Option<bool>,
    healthy_timeout: Option<String>,
    learner_sync_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinFragment {
    api_server: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    ca_cert_hashes: Option<Vec<String>>,
    node_name: Option<String>,
    unsafe_skip_ca_verification: Option<bool>,
    node_conflict_wait: Option<String>,
    node_delete_kubeconfig: Option<PathBuf>,
    control_plane: Option<bool>,
    certificate_key_file: Option<PathBuf>,
    advertise_address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KubeadmFragment {
    path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryFragment {
    max_attempts: Option<i64>,
    initial_backoff: Option<String>,
    max_backoff: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutsFragment {
    discovery: Option<String>,
    join_phase: Option<String>,
    no_progress: Option<String>,
    tls_bootstrap: Option<String>,
    node_registration: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContainerdFragment {
    socket: Option<PathBuf>,
    ready_timeout: Option<String>,
    restart_when_not_ready: Option<bool>,
    restart_after: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KubeletFragment {
    unit: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreflightFragment {
    min_memory_mib: Option<i64>,
    min_disk_free_mib: Option<i64>,
    warn_only: Option<Vec<String>>,
}

/// A value together with the file that set it, so validation can blame the right file.
#[derive(Debug, Clone)]
struct Sourced<T> {
    value: T,
    file: PathBuf,
}

/// The merged, not yet validated, configuration.
#[derive(Debug, Default)]
struct Merged {
    api_server: Option<Sourced<String>>,
    token: Option<Sourced<String>>,
    token_file: Option<Sourced<PathBuf>>,
    ca_cert_hashes: Option<Sourced<Vec<String>>>,
    node_name: Option<Sourced<String>>,
    unsafe_skip_ca_verification: Option<Sourced<bool>>,
    node_conflict_wait: Option<Sourced<String>>,
    node_delete_kubeconfig: Option<Sourced<PathBuf>>,
    control_plane: Option<Sourced<bool>>,
    certificate_key_file: Option<Sourced<PathBuf>>,
    advertise_address: Option<Sourced<String>>,
    restart_when_not_ready: Option<Sourced<bool>>,
    restart_after: Option<Sourced<String>>,
    remove_stale_learners: Option<Sourced<bool>>,
    etcd_endpoints: Option<Sourced<Vec<String>>>,
    etcd_healthy_timeout: Option<Sourced<String>>,
    learner_sync_timeout: Option<Sourced<String>>,
    kubeadm_path: Option<Sourced<PathBuf>>,
    max_attempts: Option<Sourced<i64>>,
    initial_backoff: Option<Sourced<String>>,
    max_backoff: Option<Sourced<String>>,
    discovery: Option<Sourced<String>>,
    join_phase: Option<Sourced<String>>,
    no_progress: Option<Sourced<String>>,
    tls_bootstrap: Option<Sourced<String>>,
    node_registration: Option<Sourced<String>>,
    containerd_socket: Option<Sourced<PathBuf>>,
    containerd_ready_timeout: Option<Sourced<String>>,
    kubelet_unit: Option<Sourced<String>>,
    min_memory_mib: Option<Sourced<i64>>,
    min_disk_free_mib: Option<Sourced<i64>>,
    warn_only: Option<Sourced<Vec<String>>>,
    /// Files read, in order (shown by `check` and used to detect config changes).
    files: Vec<PathBuf>,
}

macro_rules! take {
    ($merged:ident . $field:ident, $value:expr, $file:expr) => {
        if let Some(value) = $value {
            $merged.$field = Some(Sourced {
                value,
                file: $file.to_path_buf(),
            });
        }
    };
}

impl Merged {
    fn apply(&mut self, fragment: Fragment, file: &Path) {
        if let Some(j) = fragment.join {
            take!(self.api_server, j.api_server, file);
            // `token` and `token_file` are one setting written two ways: a later file
            // choosing one form replaces the other.
            if j.token.is_some() {
                self.token_file = None;
            }
            if j.token_file.is_some() {
                self.token = None;
            }
            take!(self.token, j.token, file);
            take!(self.token_file, j.token_file, file);
            take!(self.ca_cert_hashes, j.ca_cert_hashes, file);
            take!(self.node_name, j.node_name, file);
            take!(
                self.unsafe_skip_ca_verification,
                j.unsafe_skip_ca_verification,
                file
            );
            take!(self.node_conflict_wait, j.node_conflict_wait, file);
            take!(self.node_delete_kubeconfig, j.node_delete_kubeconfig, file);
            take!(self.control_plane, j.control_plane, file);
            take!(self.certificate_key_file, j.certificate_key_file, file);
            take!(self.advertise_address, j.advertise_address, file);
        }
        if let Some(e) = fragment.etcd {
            take!(self.etcd_endpoints, e.endpoints, file);
            take!(self.remove_stale_learners, e.remove_stale_learners, file);
            take!(self.etcd_healthy_timeout, e.healthy_timeout, file);
            take!(self.learner_sync_timeout, e.learner_sync_timeout, file);
        }
        if let Some(k) = fragment.kubeadm {
            take!(self.kubeadm_path, k.path, file);
        }
        if let Some(r) = fragment.retry {
            take!(self.max_attempts, r.max_attempts, file);
            take!(self.initial_backoff, r.initial_backoff, file);
            take!(self.max_backoff, r.max_backoff, file);
        }
        if let Some(t) = fragment.timeouts {
            take!(self.discovery, t.discovery, file);
            take!(self.join_phase, t.join_phase, file);
            take!(self.no_progress, t.no_progress, file);
            take!(self.tls_bootstrap, t.tls_bootstrap, file);
            take!(self.node_registration, t.node_registration, file);
        }
        if let Some(c) = fragment.containerd {
            take!(self.containerd_socket, c.socket, file);
            take!(self.containerd_ready_timeout, c.ready_timeout, file);
            take!(self.restart_when_not_ready, c.restart_when_not_ready, file);
            take!(self.restart_after, c.restart_after, file);
        }
        if let Some(k) = fragment.kubelet {
            take!(self.kubelet_unit, k.unit, file);
        }
        if let Some(p) = fragment.preflight {
            take!(self.min_memory_mib, p.min_memory_mib, file);
            take!(self.min_disk_free_mib, p.min_disk_free_mib, file);
            take!(self.warn_only, p.warn_only, file);
        }
        self.files.push(file.to_path_buf());
    }
}

// ---------------------------------------------------------------------------------------
// Settings: what the rest of the agent trusts.

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
    /// `[preflight]`.
    pub preflight: PreflightSettings,
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
];

/// Reads, merges and validates the configuration below `paths`.
pub fn load(paths: &Paths) -> Result<Settings, ConfigError> {
    let files = fragment_files(paths)?;
    let mut merged = Merged::default();
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    for file in &files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| ConfigError::new(Some(file), "(file)", format!("cannot read: {e}")))?;
        let fragment: Fragment = toml::from_str(&text).map_err(|e| toml_error(file, &text, &e))?;
        if fragment.join.as_ref().is_some_and(|j| j.token.is_some()) {
            check_private(file, "join.token")?;
        }
        digest.update(file.as_os_str().as_encoded_bytes());
        digest.update(text.as_bytes());
        merged.apply(fragment, file);
    }
    validate(paths, merged, hex::encode(&digest.finish().as_ref()[..8]))
}

/// The fragment files to read, in merge order.
fn fragment_files(paths: &Paths) -> Result<Vec<PathBuf>, ConfigError> {
    let mut files = Vec::new();
    for source in paths.config_sources() {
        match source {
            ConfigSource::File(path) => {
                if path.exists() {
                    files.push(path);
                }
            }
            ConfigSource::Dir(dir) => {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(ConfigError::new(
                            Some(&dir),
                            "(directory)",
                            format!("cannot list: {e}"),
                        ));
                    }
                };
                let mut names: Vec<PathBuf> = entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                    .collect();
                names.sort();
                files.extend(names);
            }
        }
    }
    Ok(files)
}

/// Turns toml's error into "file: line N: message".
fn toml_error(file: &Path, text: &str, err: &toml::de::Error) -> ConfigError {
    let line = err
        .span()
        .map(|span| {
            text.as_bytes()[..span.start.min(text.len())]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1
        })
        .map(|n| format!("line {n}"))
        .unwrap_or_else(|| "(syntax)".to_string());
    ConfigError::new(Some(file), &line, err.message().trim().to_string())
}

/// A file holding the token must belong to the agent's user (root) and be private.
fn check_private(file: &Path, key: &str) -> Result<(), ConfigError> {
    let meta = std::fs::metadata(file)
        .map_err(|e| ConfigError::new(Some(file), key, format!("cannot stat: {e}")))?;
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(ConfigError::new(
            Some(file),
            key,
            format!(
                "holds the bootstrap token but is owned by uid {}, not {uid}: chown root:root {}",
                meta.uid(),
                file.display()
            ),
        ));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::new(
            Some(file),
            key,
            format!(
                "holds the bootstrap token but is readable by group or others (mode {mode:04o}): chmod 600 {}",
                file.display()
            ),
        ));
    }
    Ok(())
}

fn duration(
    field: &Option<Sourced<String>>,
    key: &str,
    default: &str,
) -> Result<Duration, ConfigError> {
    let (text, file) = match field {
        Some(s) => (s.value.as_str(), Some(s.file.as_path())),
        None => (default, None),
    };
    let d = humantime::parse_duration(text).map_err(|e| {
        ConfigError::new(
            file,
            key,
            format!(
                "{text:?} is not a duration ({e}); write it like \"90s\", \"5m\" or \"1h 30m\""
            ),
        )
    })?;
    if d.is_zero() {
        return Err(ConfigError::new(file, key, "must be greater than zero"));
    }
    Ok(d)
}

fn positive(
    field: &Option<Sourced<i64>>,
    key: &str,
    default: i64,
    max: i64,
) -> Result<u64, ConfigError> {
    match field {
        None => Ok(default as u64),
        Some(s) if (1..=max).contains(&s.value) => Ok(s.value as u64),
        Some(s) => Err(ConfigError::new(
            Some(&s.file),
            key,
            format!("{} is out of range: must be 1 to {max}", s.value),
        )),
    }
}

fn validate(paths: &Paths, m: Merged, fingerprint: String) -> Result<Settings, ConfigError> {
    let api_server = match &m.api_server {
        None => {
            return Err(ConfigError::new(
                None,
                "join.api_server",
                "not set: put `api_server = \"<host>:6443\"` under [join] in /etc/kube-join-agent/config.d/<name>.toml",
            ));
        }
        Some(s) => Endpoint::parse(&s.value)
            .map_err(|reason| ConfigError::new(Some(&s.file), "join.api_server", reason))?,
    };

    let (token, token_source) = match (&m.token, &m.token_file) {
        (Some(t), None) => (
            BootstrapToken::parse(&t.value)
                .map_err(|e| ConfigError::new(Some(&t.file), "join.token", e.to_string()))?,
            TokenSource::Inline(t.file.clone()),
        ),
        (None, Some(f)) => {
            if !f.value.is_absolute() {
                return Err(ConfigError::new(
                    Some(&f.file),
                    "join.token_file",
                    format!("{:?} must be an absolute path", f.value),
                ));
            }
            let real = paths.resolve(&f.value);
            check_private(&real, "join.token_file").map_err(|mut e| {
                // Blame the token file itself, and say which fragment named it.
                e.reason = format!("{} (named in {})", e.reason, f.file.display());
                e
            })?;
            let text = std::fs::read_to_string(&real).map_err(|e| {
                ConfigError::new(
                    Some(&real),
                    "join.token_file",
                    format!("cannot read the token file: {e}"),
                )
            })?;
            (
                BootstrapToken::parse(&text)
                    .map_err(|e| ConfigError::new(Some(&real), "join.token_file", e.to_string()))?,
                TokenSource::File(f.value.clone()),
            )
        }
        (None, None) => {
            return Err(ConfigError::new(
                None,
                "join.token_file",
                "no bootstrap token: set `token_file = \"/etc/kube-join-agent/token\"` (a root-owned 0600 file) under [join]",
            ));
        }
        (Some(_), Some(_)) => unreachable!("merge keeps only one of token and token_file"),
    };

    let mut ca_pins = Vec::new();
    if let Some(s) = &m.ca_cert_hashes {
        for (i, text) in s.value.iter().enumerate() {
            ca_pins.push(CaPin::parse(text).map_err(|reason| {
                ConfigError::new(Some(&s.file), &format!("join.ca_cert_hashes[{i}]"), reason)
            })?);
        }
    }
    let unsafe_skip = m
        .unsafe_skip_ca_verification
        .as_ref()
        .is_some_and(|s| s.value);
    if ca_pins.is_empty() && !unsafe_skip {
        return Err(ConfigError::new(
            m.ca_cert_hashes.as_ref().map(|s| s.file.as_path()),
            "join.ca_cert_hashes",
            "no CA pin: set ca_cert_hashes = [\"sha256:...\"] (from `kubeadm token create --print-join-command` on a control plane); joining without one needs unsafe_skip_ca_verification = true",
        ));
    }

    let node_name = match &m.node_name {
        Some(s) if !s.value.is_empty() => {
            validate_node_name(&s.value)
                .map_err(|reason| ConfigError::new(Some(&s.file), "join.node_name", reason))?;
            s.value.clone()
        }
        _ => {
            let host = nix::unistd::gethostname()
                .map_err(|e| {
                    ConfigError::new(
                        None,
                        "join.node_name",
                        format!("not set, and the hostname cannot be read: {e}"),
                    )
                })?
                .to_string_lossy()
                .to_lowercase();
            validate_node_name(&host).map_err(|reason| {
                ConfigError::new(
                    None,
                    "join.node_name",
                    format!("not set, and the hostname is not a valid node name: {reason}; set node_name under [join]"),
                )
            })?;
            host
        }
    };

    let node_conflict_wait = duration(&m.node_conflict_wait, "join.node_conflict_wait", "5m")?;
    let node_delete_kubeconfig = match &m.node_delete_kubeconfig {
        Some(s) if s.value.as_os_str().is_empty() => None,
        Some(s) if !s.value.is_absolute() => {
            return Err(ConfigError::new(
                Some(&s.file),
                "join.node_delete_kubeconfig",
                format!("{:?} must be an absolute path", s.value),
            ));
        }
        Some(s) => {
            check_private(&paths.resolve(&s.value), "join.node_delete_kubeconfig")?;
            Some(s.value.clone())
        }
        None => None,
    };
    let control_plane = if m.control_plane.as_ref().is_some_and(|s| s.value) {
        let file = match &m.certificate_key_file {
            Some(s) if s.value.is_absolute() => s,
            Some(s) => {
                return Err(ConfigError::new(
                    Some(&s.file),
                    "join.certificate_key_file",
                    format!("{:?} must be an absolute path", s.value),
                ));
            }
            None => {
                return Err(ConfigError::new(
                    m.control_plane.as_ref().map(|s| s.file.as_path()),
                    "join.certificate_key_file",
                    "a control-plane join needs the certificate key: set certificate_key_file to a root-owned 0600 file holding the key `kubeadm init phase upload-certs --upload-certs` printed",
                ));
            }
        };
        let real = paths.resolve(&file.value);
        check_private(&real, "join.certificate_key_file")?;
        let text = std::fs::read_to_string(&real).map_err(|e| {
            ConfigError::new(
                Some(&real),
                "join.certificate_key_file",
                format!("cannot read: {e}"),
            )
        })?;
        let key = text.trim();
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ConfigError::new(
                Some(&real),
                "join.certificate_key_file",
                "not a certificate key: expected 64 hex digits (32 bytes, as kubeadm prints it)",
            ));
        }
        let advertise_address = match &m.advertise_address {
            Some(s) if !s.value.is_empty() => Some(s.value.parse().map_err(|_| {
                ConfigError::new(
                    Some(&s.file),
                    "join.advertise_address",
                    format!("{:?} is not an IP address", s.value),
                )
            })?),
            _ => None,
        };
        Some(ControlPlaneSettings {
            certificate_key: Secret::new(key.to_ascii_lowercase()),
            certificate_key_file: file.value.clone(),
            advertise_address,
        })
    } else {
        None
    };
    let containerd_restart_after = if m.restart_when_not_ready.as_ref().is_some_and(|s| s.value) {
        Some(duration(
            &m.restart_after,
            "containerd.restart_after",
            "2m",
        )?)
    } else {
        None
    };
    let mut endpoints = Vec::new();
    if let Some(s) = &m.etcd_endpoints {
        for (i, url) in s.value.iter().enumerate() {
            let ok = url
                .strip_prefix("https://")
                .and_then(|rest| Endpoint::parse(rest.trim_end_matches('/')).ok())
                .is_some();
            if !ok {
                return Err(ConfigError::new(
                    Some(&s.file),
                    &format!("etcd.endpoints[{i}]"),
                    format!("{url:?} is not an etcd client URL like \"https://10.0.0.10:2379\""),
                ));
            }
            endpoints.push(url.trim_end_matches('/').to_string());
        }
    }
    if endpoints.is_empty() {
        endpoints.push(format!("https://{}:2379", api_server.url_host()));
    }
    let etcd = EtcdSettings {
        endpoints,
        remove_stale_learners: m.remove_stale_learners.as_ref().is_some_and(|s| s.value),
        healthy_timeout: duration(&m.etcd_healthy_timeout, "etcd.healthy_timeout", "5m")?,
        learner_sync_timeout: duration(&m.learner_sync_timeout, "etcd.learner_sync_timeout", "5m")?,
    };

    let kubeadm_path = m
        .kubeadm_path
        .as_ref()
        .map(|s| s.value.clone())
        .unwrap_or_else(|| PathBuf::from("kubeadm"));

    let max_attempts = positive(&m.max_attempts, "retry.max_attempts", 5, 1000)? as u32;
    let initial_backoff = duration(&m.initial_backoff, "retry.initial_backoff", "5s")?;
    let max_backoff = duration(&m.max_backoff, "retry.max_backoff", "5m")?;
    if max_backoff < initial_backoff {
        // Blame whichever of the two was set last: that file made them disagree.
        let position = |f: &Option<Sourced<String>>| {
            f.as_ref()
                .and_then(|s| m.files.iter().position(|p| *p == s.file))
        };
        let (key, file) = if position(&m.initial_backoff) >= position(&m.max_backoff) {
            ("retry.initial_backoff", m.initial_backoff.as_ref())
        } else {
            ("retry.max_backoff", m.max_backoff.as_ref())
        };
        return Err(ConfigError::new(
            file.map(|s| s.file.as_path()),
            key,
            format!(
                "retry.initial_backoff ({}) is longer than retry.max_backoff ({})",
                humantime::format_duration(initial_backoff),
                humantime::format_duration(max_backoff)
            ),
        ));
    }

    let timeouts = Timeouts {
        discovery: duration(&m.discovery, "timeouts.discovery", "5m")?,
        join_phase: duration(&m.join_phase, "timeouts.join_phase", "10m")?,
        no_progress: duration(&m.no_progress, "timeouts.no_progress", "3m")?,
        tls_bootstrap: duration(&m.tls_bootstrap, "timeouts.tls_bootstrap", "5m")?,
        node_registration: duration(&m.node_registration, "timeouts.node_registration", "2m")?,
    };

    let containerd_socket = match &m.containerd_socket {
        Some(s) if !s.value.is_absolute() => {
            return Err(ConfigError::new(
                Some(&s.file),
                "containerd.socket",
                format!("{:?} must be an absolute path", s.value),
            ));
        }
        Some(s) => s.value.clone(),
        None => PathBuf::from("/run/containerd/containerd.sock"),
    };
    let containerd_ready_timeout = duration(
        &m.containerd_ready_timeout,
        "containerd.ready_timeout",
        "5m",
    )?;

    let kubelet_unit = match &m.kubelet_unit {
        Some(s) if !s.value.ends_with(".service") || s.value.contains('/') => {
            return Err(ConfigError::new(
                Some(&s.file),
                "kubelet.unit",
                format!(
                    "{:?} is not a service unit name (like \"kubelet.service\")",
                    s.value
                ),
            ));
        }
        Some(s) => s.value.clone(),
        None => "kubelet.service".to_string(),
    };

    let warn_only = match &m.warn_only {
        None => Vec::new(),
        Some(s) => {
            for name in &s.value {
                if !CHECK_NAMES.contains(&name.as_str()) {
                    return Err(ConfigError::new(
                        Some(&s.file),
                        "preflight.warn_only",
                        format!(
                            "unknown check {name:?}; known checks: {}",
                            CHECK_NAMES.join(", ")
                        ),
                    ));
                }
            }
            s.value.clone()
        }
    };
    let preflight = PreflightSettings {
        min_memory_mib: positive(&m.min_memory_mib, "preflight.min_memory_mib", 1024, 1 << 30)?,
        min_disk_free_mib: positive(
            &m.min_disk_free_mib,
            "preflight.min_disk_free_mib",
            2048,
            1 << 40,
        )?,
        warn_only,
    };

    Ok(Settings {
        join: JoinSettings {
            api_server,
            token,
            token_source,
            ca_pins,
            node_name,
            unsafe_skip_ca_verification: unsafe_skip,
            node_conflict_wait,
            node_delete_kubeconfig,
            control_plane,
        },
        kubeadm_path,
        retry: RetrySettings {
            max_attempts,
            initial_backoff,
            max_backoff,
        },
        timeouts,
        containerd_socket,
        containerd_ready_timeout,
        containerd_restart_after,
        etcd,
        kubelet_unit,
        preflight,
        files: m.files,
        fingerprint,
    })
}

/// A Node name must be a DNS-1123 subdomain (what the API server accepts).
fn validate_node_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')"
        ))
    }
}

#[cfg(test)]
mod tests;
