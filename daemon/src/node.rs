//! After the join: the Node object, read with the kubelet's own credentials (the same
//! identity the node will use from now on), exists and says whether it is Ready.

use crate::failure::Failure;
use crate::kubelet::KubeletCredentials;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The Node's Ready condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// "True", "False", "Unknown", or "" when the kubelet has not reported yet.
    pub ready: String,
    /// The condition's reason/message.
    pub detail: String,
}

/// Polls `GET /api/v1/nodes/<name>` until the Node exists or `timeout` passes.
pub async fn wait_for_node(
    creds: &KubeletCredentials,
    ca: &[CertificateDer<'static>],
    node: &str,
    timeout: Duration,
) -> Result<NodeStatus, Failure> {
    let client = client(creds, ca).map_err(|detail| Failure::NodeNotRegistered {
        node: node.to_string(),
        detail,
    })?;
    let url = format!("{}/api/v1/nodes/{node}", creds.server.trim_end_matches('/'));
    let deadline = Instant::now() + timeout;
    let mut last: String;
    loop {
        match client.get(&url).send().await {
            Ok(resp) if resp.status().is_success() => {
                let bytes = resp.bytes().await.map_err(|e| Failure::NodeNotRegistered {
                    node: node.to_string(),
                    detail: format!("reading the Node: {e}"),
                })?;
                let body: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| Failure::NodeNotRegistered {
                        node: node.to_string(),
                        detail: format!("the API server's Node is not JSON: {e}"),
                    })?;
                return Ok(ready_condition(&body));
            }
            Ok(resp) if resp.status().as_u16() == 401 || resp.status().as_u16() == 403 => {
                return Err(Failure::NodeNotRegistered {
                    node: node.to_string(),
                    detail: format!(
                        "the API server refused the kubelet's own credentials (HTTP {}): the client certificate is not accepted by this cluster",
                        resp.status()
                    ),
                });
            }
            Ok(resp) => last = format!("HTTP {}", resp.status()),
            Err(e) => last = crate::discovery::error_chain(&e),
        }
        if Instant::now() >= deadline {
            return Err(Failure::NodeNotRegistered {
                node: node.to_string(),
                detail: format!(
                    "not found within {}: last answer {last}",
                    humantime::format_duration(timeout)
                ),
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn client(
    creds: &KubeletCredentials,
    ca: &[CertificateDer<'static>],
) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in ca {
        roots
            .add(c.clone())
            .map_err(|e| format!("cluster CA unusable: {e}"))?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&creds.cert_pem)
        .filter_map(Result::ok)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(&creds.key_pem)
        .map_err(|e| format!("kubelet key unusable: {e}"))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .map_err(|e| format!("kubelet certificate unusable: {e}"))?;
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
}

/// The Ready condition of a Node object.
pub fn ready_condition(node: &serde_json::Value) -> NodeStatus {
    let conditions = node["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    match conditions.iter().find(|c| c["type"] == "Ready") {
        Some(c) => NodeStatus {
            ready: c["status"].as_str().unwrap_or("").to_string(),
            detail: format!(
                "{}: {}",
                c["reason"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            ),
        },
        None => NodeStatus {
            ready: String::new(),
            detail: "the kubelet has not reported a Ready condition yet".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_ready_condition() {
        let node = serde_json::json!({"status": {"conditions": [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": "cni plugin not initialized"}
        ]}});
        let s = ready_condition(&node);
        assert_eq!(s.ready, "False");
        assert!(s.detail.contains("cni plugin not initialized"));
        assert_eq!(ready_condition(&serde_json::json!({})).ready, "");
        assert_eq!(
            ready_condition(&serde_json::json!({"status": {"conditions": 5}})).ready,
            ""
        );
    }
}
