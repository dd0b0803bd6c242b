//! What the kubelet is doing instead of finishing TLS bootstrap: is it running, was it
//! started with a kubeconfig at all, and which of its certificate signing requests
//! (listed with the bootstrap token, as kubeadm's RBAC allows) are still pending.

use super::KubeletView;
use crate::apiserver::ApiClient;
use crate::config::Settings;
use crate::discovery::ClusterInfo;
use crate::paths::Paths;
use crate::systemd::Systemd;

/// What the kubelet is doing: running, with or without a kubeconfig, and which of
/// its certificate signing requests are still pending.
pub async fn observe(
    systemd: &Systemd,
    paths: &Paths,
    s: &Settings,
    cluster: &ClusterInfo,
) -> KubeletView {
    let unit = &s.kubelet_unit;
    let (active, state) = match systemd.unit_info(unit).await {
        Ok(info) => (
            info.active_state == "active",
            format!("{} ({})", info.active_state, info.sub_state),
        ),
        Err(e) => (false, e.to_string()),
    };
    let restarts = systemd.restarts(unit).await.unwrap_or(0);
    let cmdline = match systemd.main_pid(unit).await {
        Ok(Some(pid)) => std::fs::read(paths.proc().join(pid.to_string()).join("cmdline")).ok(),
        _ => None,
    };
    let started_without_kubeconfig =
        cmdline.is_some_and(|c| !super::tls::cmdline_has_kubeconfig(&c));
    let username = format!("system:bootstrap:{}", s.join.token.id());
    let listed = match ApiClient::bootstrap(&s.join.api_server, &cluster.ca, &s.join.token) {
        Ok(client) => client.pending_csrs(&username).await,
        Err(e) => Err(e),
    };
    let (pending_csrs, csr_list_error) = match listed {
        Ok(names) => (names, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    KubeletView {
        active,
        state,
        restarts,
        started_without_kubeconfig,
        had_bootstrap_conf: paths.bootstrap_kubelet_conf().exists(),
        pending_csrs,
        csr_list_error,
    }
}
