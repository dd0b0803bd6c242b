//! Node registration and status heartbeats (pkg/kubelet/kubelet_node_status.go).

use std::time::Duration;

use serde_json::{Value, json};

use crate::fsroot::Root;
use crate::httpclient::{ApiClient, Trust};
use crate::klog::{self, Severity};
use crate::kubeconfig::{Auth, Resolved};

/// How often the kubelet posts its status (nodeStatusUpdateFrequency).
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// The Node a kubelet registers (`initialNode`, kubelet_node_status.go), trimmed.
pub fn node_object(name: &str, ip: &str, version: &str) -> Value {
    json!({
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "labels": {
                "beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            },
            "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"},
        },
        "spec": {},
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "nodeInfo": {"kubeletVersion": version, "operatingSystem": "linux", "architecture": "amd64",
                         "containerRuntimeVersion": "containerd://1.6.20"},
        },
    })
}

/// How often the fake says that its Node is not in the API server yet. Upstream's
/// status loop asks its lister every 100 ms and logs each miss (about ten lines a
/// second, measured with v1.20.2); the fake keeps the line and drops the flood.
pub const NODE_NOT_FOUND_EVERY: Duration = Duration::from_secs(2);

/// Where the kubelet's API client comes from, connection by connection: kubelet.conf
/// when its certificate is usable; while the certificate manager is still waiting for
/// one (client rotation on) the same server and CA with no client certificate, so the
/// API server sees `system:anonymous`.
pub struct Clients {
    /// Path root.
    pub root: Root,
    /// `--kubeconfig`.
    pub kubeconfig: String,
    /// The bootstrap server and CA, when requests may go out before the certificate.
    pub anonymous: Option<Resolved>,
}

impl Clients {
    /// A client for the next request.
    pub fn client(&self) -> Result<ApiClient, String> {
        let timeout = Duration::from_secs(10);
        match crate::kubelet::bootstrap::check_kubeconfig(&self.root, &self.kubeconfig) {
            Ok(r) => ApiClient::from_kubeconfig(&r, timeout).map_err(|e| format!("{e:#}")),
            Err(e) => match &self.anonymous {
                Some(b) => {
                    ApiClient::new(&b.server, Trust::Ca(&b.ca_pem), &Auth::Anonymous, timeout)
                        .map_err(|e| format!("{e:#}"))
                }
                None => Err(format!("{} is not usable: {e}", self.kubeconfig)),
            },
        }
    }
}

/// `Unable to register node with API server`, as the 1.29 kubelet logs it.
fn unable_to_register(name: &str, err: &str) {
    klog::log(
        Severity::Error,
        "kubelet_node_status.go:96",
        "Unable to register node with API server",
        &[("err", err), ("node", name)],
    );
}

/// Registers the Node (an existing one is fine) with upstream's backoff (100 ms,
/// doubling, at most 7 s), saying every [`NODE_NOT_FOUND_EVERY`] that the Node is not
/// there yet, then posts status every [`HEARTBEAT`] forever.
pub async fn register_and_heartbeat(clients: Clients, name: String, ip: String, version: String) {
    let node = node_object(&name, &ip, version.as_str());
    let not_found = format!("node {name:?} not found");
    let mut last_not_found: Option<tokio::time::Instant> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        if last_not_found.is_none_or(|t| t.elapsed() >= NODE_NOT_FOUND_EVERY) {
            klog::log(
                Severity::Error,
                "kubelet_node_status.go:733",
                "Error getting the current node from lister",
                &[("err", &not_found)],
            );
            last_not_found = Some(tokio::time::Instant::now());
        }
        let client = match clients.client() {
            Ok(c) => c,
            Err(e) => {
                unable_to_register(&name, &e);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(7));
                continue;
            }
        };
        klog::log(
            Severity::Info,
            "kubelet_node_status.go:73",
            "Attempting to register node",
            &[("node", &name)],
        );
        let err = match client
            .call(reqwest::Method::POST, "/api/v1/nodes", Some(&node))
            .await
        {
            Ok(r) if r.status == 201 || r.status == 200 => {
                klog::log(
                    Severity::Info,
                    "kubelet_node_status.go:76",
                    "Successfully registered node",
                    &[("node", &name)],
                );
                break;
            }
            Ok(r) if r.status == 409 => {
                klog::log(
                    Severity::Info,
                    "kubelet_node_status.go:108",
                    "Node was previously registered",
                    &[("node", &name)],
                );
                break;
            }
            Ok(r) => r.error_text(),
            Err(e) => e,
        };
        unable_to_register(&name, &err);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(7));
    }
    let path = format!("/api/v1/nodes/{name}/status");
    loop {
        let err = match clients.client() {
            Err(e) => Some(e),
            Ok(client) => match client.call(reqwest::Method::PUT, &path, Some(&node)).await {
                Ok(r) if r.status == 200 => None,
                Ok(r) => Some(r.error_text()),
                Err(e) => Some(e),
            },
        };
        if let Some(e) = err {
            klog::log(
                Severity::Error,
                "kubelet_node_status.go:540",
                "Error updating node status, will retry",
                &[("err", &e)],
            );
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
}
