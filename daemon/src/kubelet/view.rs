//! What the kubelet is doing instead of finishing TLS bootstrap: is it running, was it
//! started with a kubeconfig at all, and which of its certificate signing requests
//! (listed with the bootstrap token, as kubeadm's RBAC allows) are still pending.

use super::{Gate, KubeletView};
use crate::apiserver::ApiClient;
use crate::config::Settings;
use crate::discovery::ClusterInfo;
use crate::paths::Paths;
use crate::systemd::Systemd;
use tracing::warn;

/// What the kubelet is doing: running, with or without a kubeconfig, and which of
/// its certificate signing requests are still pending.
pub async fn observe(
    systemd: &Systemd,
    paths: &Paths,
    s: &Settings,
    cluster: &ClusterInfo,
) -> KubeletView {
    let active = Gate::new(systemd, paths, &s.kubelet_unit)
        .kubelet_active()
        .await
        .unwrap_or(false);
    let cmdline = match systemd.main_pid(&s.kubelet_unit).await {
        Ok(Some(pid)) => std::fs::read(paths.proc().join(pid.to_string()).join("cmdline")).ok(),
        _ => None,
    };
    let started_without_kubeconfig =
        cmdline.is_some_and(|c| !super::tls::cmdline_has_kubeconfig(&c));
    let username = format!("system:bootstrap:{}", s.join.token.id());
    let pending_csrs = match ApiClient::bootstrap(&s.join.api_server, &cluster.ca, &s.join.token) {
        Ok(client) => client.pending_csrs(&username).await.unwrap_or_else(|e| {
            warn!("cannot list certificate signing requests: {e}");
            Vec::new()
        }),
        Err(e) => {
            warn!("{e}");
            Vec::new()
        }
    };
    KubeletView {
        active,
        started_without_kubeconfig,
        pending_csrs,
    }
}
