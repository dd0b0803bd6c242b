//! After the join: the Node object, read with the kubelet's own credentials (the same
//! identity the node will use from now on), exists and says whether it is Ready.

use crate::apiserver::{ApiClient, NodeReadiness};
use crate::failure::Failure;
use crate::kubelet::KubeletCredentials;
use rustls::pki_types::CertificateDer;
use std::time::Duration;
use tokio::time::Instant;

/// Polls the Node until it exists or `timeout` passes.
pub async fn wait_for_node(
    creds: &KubeletCredentials,
    ca: &[CertificateDer<'static>],
    node: &str,
    timeout: Duration,
) -> Result<NodeReadiness, Failure> {
    let fail = |detail: String| Failure::NodeNotRegistered {
        node: node.to_string(),
        detail,
    };
    let client = ApiClient::with_client_cert(&creds.server, ca, &creds.cert_pem, &creds.key_pem)
        .map_err(|e| fail(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    loop {
        let last = match client.node(node).await {
            Ok(Some(readiness)) => return Ok(readiness),
            Ok(None) => "not found yet".to_string(),
            Err(e) if matches!(e.status, Some(401 | 403)) => {
                return Err(fail(format!(
                    "the API server refused the kubelet's own credentials ({e}): the client certificate is not accepted by this cluster"
                )));
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(fail(format!(
                "not found within {}: last answer {last}",
                humantime::format_duration(timeout)
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
