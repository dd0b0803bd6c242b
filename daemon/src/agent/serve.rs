//! Serve: joined; stay running, and keep watching the kubelet's client certificate.

use super::{Agent, Exit, Joined, Phase};
use crate::kubelet;
use crate::pki;
use std::time::Duration;
use tracing::warn;

/// How often the serve phase rechecks the kubelet's client certificate.
const SERVE_CHECK: Duration = Duration::from_secs(600);
/// Warn this long before the kubelet client certificate expires.
const EXPIRY_WARNING_SECS: i64 = 7 * 24 * 3600;

impl Agent {
    /// Joined: report, then watch the kubelet's credentials until stopped.
    pub(super) async fn serve(self, joined: Joined) -> Exit {
        {
            let mut state = self.state.lock().expect("state lock");
            state.joined = true;
            state.failure = None;
            state.last_error = None;
        }
        self.enter(
            Phase::Serve,
            &format!(
                "node \"{}\" joined; kubelet running",
                self.settings.join.node_name
            ),
        );
        self.ready();
        let mut ca = joined.ca;
        loop {
            tokio::time::sleep(SERVE_CHECK).await;
            if let Ok(pem) = std::fs::read(self.paths.cluster_ca())
                && let Ok(fresh) = pki::pem_certificates(&pem, "cluster CA")
            {
                ca = fresh;
            }
            match kubelet::check_kubelet_conf(&self.paths, &ca, &self.settings.join.node_name) {
                Ok(creds) if creds.summary.expires_in_secs < EXPIRY_WARNING_SECS => warn!(
                    "the kubelet client certificate expires {} and has not been rotated; check that rotateCertificates is on and CSRs are approved",
                    creds.summary.not_after
                ),
                Ok(_) => {}
                Err(problem) => warn!(
                    failure = "tls-bootstrap-stuck",
                    "the kubelet's credentials are no longer valid ({problem}): the kubelet will run anonymous; restart kube-join-agent to rejoin"
                ),
            }
        }
    }
}
