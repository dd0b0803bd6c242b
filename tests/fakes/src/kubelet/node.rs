//! Node registration and status heartbeats (pkg/kubelet/kubelet_node_status.go).

use std::time::Duration;

use serde_json::{Value, json};

use crate::httpclient::ApiClient;
use crate::klog::{self, Severity};

/// How often the kubelet posts its status (nodeStatusUpdateFrequency).
pub const HEARTBEAT: Duration = Duration::from_secs(10);

fn node_object(name: &str, ip: &str, version: &str) -> Value {
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

/// Registers the Node (an existing one is fine) with backoff, then posts status every
/// [`HEARTBEAT`] forever.
pub async fn register_and_heartbeat(client: ApiClient, name: String, ip: String, version: String) {
    let node = node_object(&name, &ip, version.as_str());
    let mut backoff = Duration::from_millis(100);
    loop {
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
        klog::log(
            Severity::Error,
            "kubelet_node_status.go:96",
            "Unable to register node with API server",
            &[("err", &err), ("node", &name)],
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(7));
    }
    let path = format!("/api/v1/nodes/{name}/status");
    loop {
        let err = match client.call(reqwest::Method::PUT, &path, Some(&node)).await {
            Ok(r) if r.status == 200 => None,
            Ok(r) => Some(r.error_text()),
            Err(e) => Some(e),
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
