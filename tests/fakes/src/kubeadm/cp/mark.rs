//! `control-plane-join mark-control-plane` (phases/markcontrolplane), the deprecated
//! `update-status`, and `wait-control-plane`.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::admin_client;
use crate::klog::{self, Severity};
use crate::kubeadm::error::{KubeadmError, generic};
use crate::kubeadm::join::JoinData;

const LABELS: &[&str] = &[
    "node-role.kubernetes.io/control-plane",
    "node.kubernetes.io/exclude-from-external-load-balancers",
];
const TAINT: &str = "node-role.kubernetes.io/control-plane";

/// Labels and taints the Node, waiting for it to exist (kubernetesAPICall).
pub async fn mark_control_plane(data: &mut JoinData) -> Result<(), KubeadmError> {
    let client = admin_client(data)?;
    let name = data.cfg.node_name.clone();
    println!(
        "[mark-control-plane] Marking the node {name} as control-plane by adding the labels: [{}]",
        LABELS.join(" ")
    );
    println!(
        "[mark-control-plane] Marking the node {name} as control-plane by adding the taints [{TAINT}:NoSchedule]"
    );
    let fail = |e: String| {
        generic(format!(
            "error applying control-plane label and taints: {e}"
        ))
    };
    let path = format!("/api/v1/nodes/{name}");
    let deadline = Instant::now() + data.knobs.scale(data.cfg.timeouts.kubernetes_api_call);
    loop {
        if let Ok(r) = client.get(&path).await
            && r.status == 200
        {
            let node = r.json();
            let mut taints: Vec<serde_json::Value> = node["spec"]["taints"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|t| t["key"] != TAINT)
                .collect();
            taints.push(json!({"key": TAINT, "effect": "NoSchedule"}));
            let labels: serde_json::Map<String, serde_json::Value> =
                LABELS.iter().map(|l| (l.to_string(), json!(""))).collect();
            let patch = json!({"metadata": {"labels": labels}, "spec": {"taints": taints}});
            return match client
                .call(reqwest::Method::PATCH, &path, Some(&patch))
                .await
            {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(fail(r.error_text())),
                Err(e) => Err(fail(e)),
            };
        }
        if Instant::now() >= deadline {
            return Err(fail("timed out waiting for the condition".into()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A no-op since v1.22 that says so; removed in v1.31.
pub fn update_status(data: &JoinData) -> Result<(), KubeadmError> {
    if data.cfg.control_plane.is_some() {
        println!(
            "The 'update-status' phase is deprecated and will be removed in a future release. Currently it performs no operation"
        );
    }
    Ok(())
}

/// Skipped unless the WaitForAllControlPlaneComponents feature gate is on (off by
/// default): there are no control-plane components to wait for here.
pub fn wait_control_plane(data: &JoinData) -> Result<(), KubeadmError> {
    if data.verbosity >= 5 {
        klog::printf(
            Severity::Info,
            "waitcontrolplane.go:68",
            "[wait-control-plane] Skipping phase as the feature gate WaitForAllControlPlaneComponents is disabled",
        );
    }
    Ok(())
}
