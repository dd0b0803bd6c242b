//! TOML fragments and their merge: every field optional, later files win key by key,
//! and each value remembers the file that set it, so validation blames the right file.

use super::ConfigError;
use crate::paths::{ConfigSource, Paths};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fragment {
    join: Option<JoinFragment>,
    kubeadm: Option<KubeadmFragment>,
    retry: Option<RetryFragment>,
    timeouts: Option<TimeoutsFragment>,
    containerd: Option<ContainerdFragment>,
    kubelet: Option<KubeletFragment>,
    preflight: Option<PreflightFragment>,
    etcd: Option<EtcdFragment>,
    metrics: Option<MetricsFragment>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsFragment {
    listen: Option<String>,
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
    ignore_preflight_errors: Option<Vec<String>>,
    labels: Option<BTreeMap<String, String>>,
    taints: Option<Vec<String>>,
    kubelet_extra_args: Option<BTreeMap<String, String>>,
    cri_socket: Option<String>,
    patches: Option<PathBuf>,
    skip_phases: Option<Vec<String>>,
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
    certificate_warning: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreflightFragment {
    min_memory_mib: Option<i64>,
    min_disk_free_mib: Option<i64>,
    warn_only: Option<Vec<String>>,
}

impl Fragment {
    /// Whether the file writes the token itself (`join.token`), so it must be private.
    pub fn holds_token(&self) -> bool {
        self.join.as_ref().is_some_and(|j| j.token.is_some())
    }
}

/// A value together with the file that set it, so validation can blame the right file.
#[derive(Debug, Clone)]
pub struct Sourced<T> {
    pub value: T,
    pub file: PathBuf,
}

/// The merged, not yet validated, configuration.
#[derive(Debug, Default)]
pub struct Merged {
    pub api_server: Option<Sourced<String>>,
    pub token: Option<Sourced<String>>,
    pub token_file: Option<Sourced<PathBuf>>,
    pub ca_cert_hashes: Option<Sourced<Vec<String>>>,
    pub node_name: Option<Sourced<String>>,
    pub unsafe_skip_ca_verification: Option<Sourced<bool>>,
    pub node_conflict_wait: Option<Sourced<String>>,
    pub node_delete_kubeconfig: Option<Sourced<PathBuf>>,
    pub control_plane: Option<Sourced<bool>>,
    pub certificate_key_file: Option<Sourced<PathBuf>>,
    pub advertise_address: Option<Sourced<String>>,
    pub ignore_preflight_errors: Option<Sourced<Vec<String>>>,
    pub labels: Option<Sourced<BTreeMap<String, String>>>,
    pub taints: Option<Sourced<Vec<String>>>,
    pub kubelet_extra_args: Option<Sourced<BTreeMap<String, String>>>,
    pub cri_socket: Option<Sourced<String>>,
    pub patches: Option<Sourced<PathBuf>>,
    pub skip_phases: Option<Sourced<Vec<String>>>,
    pub restart_when_not_ready: Option<Sourced<bool>>,
    pub restart_after: Option<Sourced<String>>,
    pub remove_stale_learners: Option<Sourced<bool>>,
    pub etcd_endpoints: Option<Sourced<Vec<String>>>,
    pub etcd_healthy_timeout: Option<Sourced<String>>,
    pub learner_sync_timeout: Option<Sourced<String>>,
    pub kubeadm_path: Option<Sourced<PathBuf>>,
    pub max_attempts: Option<Sourced<i64>>,
    pub initial_backoff: Option<Sourced<String>>,
    pub max_backoff: Option<Sourced<String>>,
    pub discovery: Option<Sourced<String>>,
    pub join_phase: Option<Sourced<String>>,
    pub no_progress: Option<Sourced<String>>,
    pub tls_bootstrap: Option<Sourced<String>>,
    pub node_registration: Option<Sourced<String>>,
    pub containerd_socket: Option<Sourced<PathBuf>>,
    pub containerd_ready_timeout: Option<Sourced<String>>,
    pub kubelet_unit: Option<Sourced<String>>,
    pub certificate_warning: Option<Sourced<String>>,
    pub min_memory_mib: Option<Sourced<i64>>,
    pub min_disk_free_mib: Option<Sourced<i64>>,
    pub warn_only: Option<Sourced<Vec<String>>>,
    pub metrics_listen: Option<Sourced<String>>,
    /// Files read, in order (shown by `check` and used to detect config changes).
    pub files: Vec<PathBuf>,
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
    pub fn apply(&mut self, fragment: Fragment, file: &Path) {
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
            // Tables and lists are replaced whole by a later file, never merged: what a
            // file says is what the node gets.
            take!(
                self.ignore_preflight_errors,
                j.ignore_preflight_errors,
                file
            );
            take!(self.labels, j.labels, file);
            take!(self.taints, j.taints, file);
            take!(self.kubelet_extra_args, j.kubelet_extra_args, file);
            take!(self.cri_socket, j.cri_socket, file);
            take!(self.patches, j.patches, file);
            take!(self.skip_phases, j.skip_phases, file);
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
            take!(self.certificate_warning, k.certificate_warning, file);
        }
        if let Some(p) = fragment.preflight {
            take!(self.min_memory_mib, p.min_memory_mib, file);
            take!(self.min_disk_free_mib, p.min_disk_free_mib, file);
            take!(self.warn_only, p.warn_only, file);
        }
        if let Some(m) = fragment.metrics {
            take!(self.metrics_listen, m.listen, file);
        }
        self.files.push(file.to_path_buf());
    }
}

/// The fragment files to read, in merge order.
pub fn fragment_files(paths: &Paths) -> Result<Vec<PathBuf>, ConfigError> {
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
pub fn toml_error(file: &Path, text: &str, err: &toml::de::Error) -> ConfigError {
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
