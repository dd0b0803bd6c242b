//! Validation: the merged fragments, checked in one pass, section by section, into the
//! `Settings` the rest of the agent trusts. Every error names the file and the key.

mod join;
mod registration;
mod sections;
pub(super) mod values;

use super::ConfigError;
use super::fragments::Merged;
use super::settings::Settings;
use crate::paths::Paths;

/// Checks every section; the first problem is the error.
pub fn validate(paths: &Paths, m: Merged, fingerprint: String) -> Result<Settings, ConfigError> {
    let join = join::join(paths, &m)?;
    let etcd = sections::etcd(&m, &join.api_server)?;
    let kubeadm_path = sections::kubeadm_path(&m);
    let retry = sections::retry(&m)?;
    let timeouts = sections::timeouts(&m)?;
    let containerd = sections::containerd(&m)?;
    let kubelet_unit = sections::kubelet_unit(&m)?;
    let certificate_warning =
        values::duration(&m.certificate_warning, "kubelet.certificate_warning", "7d")?;
    let preflight = sections::preflight(&m)?;
    let metrics = sections::metrics(&m)?;
    Ok(Settings {
        join,
        kubeadm_path,
        retry,
        timeouts,
        containerd_socket: containerd.socket,
        containerd_ready_timeout: containerd.ready_timeout,
        containerd_restart_after: containerd.restart_after,
        etcd,
        kubelet_unit,
        certificate_warning,
        preflight,
        metrics,
        files: m.files,
        fingerprint,
    })
}
