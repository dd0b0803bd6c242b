//! The shape of `kube-join-agent diagnose --json` (schema kube-join-agent.diagnose/v1):
//! documented in docs/json.md and kept stable.

use super::super::Row;
use super::super::status::Status;
use crate::state::AttemptRecord;
use serde::Serialize;

/// `kube-join-agent.diagnose/v1`.
#[derive(Debug, Serialize)]
pub struct Diagnosis {
    /// Always `kube-join-agent.diagnose/v1`.
    pub schema: &'static str,
    /// The configuration, secrets redacted (`null` when it does not load).
    pub configuration: Option<Configuration>,
    /// Why the configuration does not load, if it does not.
    pub configuration_error: Option<String>,
    /// Where the join stands (as `status --json`).
    pub status: Status,
    /// Every attempt of this join, oldest first.
    pub attempts: Vec<AttemptRecord>,
    /// kubelet, containerd and the agent, as systemd sees them.
    pub units: Vec<UnitReport>,
    /// kubeadm's, kubelet's and the API server's versions ("" when unknown, with why in
    /// `notes`).
    pub versions: Versions,
    /// kubeadm's kubelet files and kubelet.conf: present, valid, and why not.
    pub kubelet_files: Vec<FileReport>,
    /// The kubelet's client certificate, when kubelet.conf names a readable one.
    pub client_certificate: Option<CertificateReport>,
    /// Signs of trouble in kubelet's journal this boot.
    pub kubelet_journal: Vec<JournalSign>,
    /// This node's pending certificate signing requests, when the API server can be
    /// asked with the bootstrap token.
    pub pending_csrs: Vec<String>,
    /// etcd findings on a control plane.
    pub etcd: Vec<Row>,
    /// What could not be looked at, and why.
    pub notes: Vec<String>,
}

/// The configuration, with the token's secret and the certificate key left out.
#[derive(Debug, Serialize)]
pub struct Configuration {
    /// Files read, in merge order.
    pub files: Vec<String>,
    /// `join.api_server`.
    pub api_server: String,
    /// The token's id (its secret is never shown).
    pub token_id: String,
    /// Where the token comes from.
    pub token_source: String,
    /// `join.ca_cert_hashes`.
    pub ca_cert_hashes: Vec<String>,
    /// `join.node_name` (or the hostname).
    pub node_name: String,
    /// A control-plane join.
    pub control_plane: bool,
    /// `[join]` labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// `[join]` taints.
    pub taints: Option<Vec<String>>,
    /// `[join]` kubelet flags.
    pub kubelet_extra_args: std::collections::BTreeMap<String, String>,
    /// `[join]` ignored preflight errors.
    pub ignore_preflight_errors: Vec<String>,
    /// The CRI socket.
    pub cri_socket: String,
    /// kubeadm's path.
    pub kubeadm: String,
}

/// A unit as systemd sees it.
#[derive(Debug, Serialize)]
pub struct UnitReport {
    /// The unit.
    pub unit: String,
    /// loaded, masked, not-found, ...
    pub load_state: String,
    /// active, failed, ...
    pub active_state: String,
    /// running, dead, auto-restart, ...
    pub sub_state: String,
    /// enabled, masked-runtime, ...
    pub unit_file_state: String,
    /// Automatic restarts since it was last started by hand or by a job.
    pub restarts: u32,
}

/// Versions.
#[derive(Debug, Default, Serialize)]
pub struct Versions {
    /// kube-join-agent's own.
    pub agent: String,
    /// `kubeadm version`.
    pub kubeadm: String,
    /// `kubelet --version`.
    pub kubelet: String,
    /// The API server's /version.
    pub api_server: String,
}

/// One file.
#[derive(Debug, Serialize)]
pub struct FileReport {
    /// The node path.
    pub path: String,
    /// Whether it exists.
    pub present: bool,
    /// Whether it is valid (`null`: not judged, for example without the cluster CA).
    pub valid: Option<bool>,
    /// Why not.
    pub problem: Option<String>,
}

/// The kubelet's client certificate.
#[derive(Debug, Serialize)]
pub struct CertificateReport {
    /// Subject.
    pub subject: String,
    /// Issuer.
    pub issuer: String,
    /// NotAfter.
    pub not_after: String,
    /// Seconds until it expires (negative: expired).
    pub expires_in_seconds: i64,
    /// Whether it chains to the cluster CA for client auth, is within its validity, has
    /// the node's subject and its key.
    pub valid: bool,
    /// Why not.
    pub problem: Option<String>,
}

/// A kind of trouble the kubelet's journal shows.
#[derive(Debug, Serialize)]
pub struct JournalSign {
    /// `standalone`, `anonymous`, `unauthorized`, `no-config`.
    pub sign: &'static str,
    /// What it means.
    pub meaning: &'static str,
    /// How many lines this boot.
    pub count: usize,
    /// The last such line.
    pub last: String,
}
