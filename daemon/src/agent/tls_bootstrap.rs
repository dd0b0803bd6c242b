//! TLS bootstrap: kubelet.conf and `kubelet-client-current.pem` appear (inotify) and are
//! valid: chain to the pinned CA, `CN=system:node:<name>`, `O=system:nodes`, within
//! validity, key matches. A timeout says what the kubelet is doing instead.

use super::{Agent, Phase};
use crate::discovery::ClusterInfo;
use crate::failure::Failure;
use crate::kubelet::{self, KubeletCredentials};
use tokio::time::Instant;
use tracing::info;

impl Agent {
    /// Waits for the kubelet's credentials after kubeadm's join.
    pub(super) async fn tls_bootstrap(
        &self,
        cluster: &ClusterInfo,
    ) -> Result<KubeletCredentials, Failure> {
        let s = &self.settings;
        self.enter(
            Phase::TlsBootstrap,
            "waiting for kubelet.conf and the kubelet client certificate",
        );
        let creds = kubelet::wait_for_tls_bootstrap(
            &self.paths,
            &cluster.ca,
            &s.join.node_name,
            Instant::now() + s.timeouts.tls_bootstrap,
            async || kubelet::view::observe(&self.systemd, &self.paths, s, cluster).await,
        )
        .await?;
        info!(
            phase = Phase::TlsBootstrap.name(),
            "kubelet client certificate valid: {}, expires {}",
            creds.summary.subject,
            creds.summary.not_after
        );
        Ok(creds)
    }
}
