//! What the agent asks the API server: a Node's readiness, the join record (annotations
//! and Events), a stale Node's deletion, this node's pending CSRs.

use super::{ApiClient, ApiError};

/// A Node's readiness as the API server reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReadiness {
    /// Ready condition status: "True", "False", "Unknown" or "".
    pub ready: String,
    /// The condition's lastHeartbeatTime, if reported.
    pub last_heartbeat: String,
    /// The condition's "reason: message".
    pub detail: String,
}

impl ApiClient {
    /// The Node's readiness, or `None` when it does not exist.
    pub async fn node(&self, name: &str) -> Result<Option<NodeReadiness>, ApiError> {
        let what = format!("reading Node {name}");
        let (status, body) = self
            .send(
                reqwest::Method::GET,
                &format!("/api/v1/nodes/{name}"),
                &what,
            )
            .await?;
        match status {
            404 => Ok(None),
            200 => {
                let node: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|e| ApiError {
                        what,
                        detail: format!("not JSON: {e}"),
                        status: Some(200),
                    })?;
                Ok(Some(readiness(&node)))
            }
            other => Err(ApiError {
                what,
                detail: format!("HTTP {other}"),
                status: Some(other),
            }),
        }
    }

    /// Merges `annotations` into the Node's (a JSON merge patch, as the kubelet does for
    /// its own Node).
    pub async fn annotate_node(
        &self,
        name: &str,
        annotations: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), ApiError> {
        let what = format!("annotating Node {name}");
        let patch = serde_json::json!({"metadata": {"annotations": annotations}});
        let (status, _) = self
            .send_body(
                reqwest::Method::PATCH,
                &format!("/api/v1/nodes/{name}"),
                &what,
                Some((
                    "application/merge-patch+json",
                    serde_json::to_vec(&patch).expect("a patch serializes"),
                )),
            )
            .await?;
        match status {
            200 | 201 => Ok(()),
            other => Err(ApiError {
                what,
                detail: format!("HTTP {other}"),
                status: Some(other),
            }),
        }
    }

    /// Creates `event` in `namespace`; an Event that already exists (a retry after a
    /// lost answer) counts as created.
    pub async fn create_event(
        &self,
        namespace: &str,
        event: &serde_json::Value,
    ) -> Result<(), ApiError> {
        let what = format!("creating an Event in {namespace}");
        let (status, _) = self
            .send_body(
                reqwest::Method::POST,
                &format!("/api/v1/namespaces/{namespace}/events"),
                &what,
                Some((
                    "application/json",
                    serde_json::to_vec(event).expect("an Event serializes"),
                )),
            )
            .await?;
        match status {
            200 | 201 | 409 => Ok(()),
            other => Err(ApiError {
                what,
                detail: format!("HTTP {other}"),
                status: Some(other),
            }),
        }
    }

    /// Deletes the Node.
    pub async fn delete_node(&self, name: &str) -> Result<(), ApiError> {
        let what = format!("deleting Node {name}");
        let (status, _) = self
            .send(
                reqwest::Method::DELETE,
                &format!("/api/v1/nodes/{name}"),
                &what,
            )
            .await?;
        match status {
            200 | 202 | 404 => Ok(()),
            other => Err(ApiError {
                what,
                detail: format!("HTTP {other}"),
                status: Some(other),
            }),
        }
    }

    /// Names of CSRs requested by `username` that are neither approved nor denied.
    pub async fn pending_csrs(&self, username: &str) -> Result<Vec<String>, ApiError> {
        let what = "listing certificate signing requests".to_string();
        let (status, body) = self
            .send(
                reqwest::Method::GET,
                "/apis/certificates.k8s.io/v1/certificatesigningrequests",
                &what,
            )
            .await?;
        if status != 200 {
            return Err(ApiError {
                what,
                detail: format!("HTTP {status}"),
                status: Some(status),
            });
        }
        let list: serde_json::Value = serde_json::from_slice(&body).map_err(|e| ApiError {
            what,
            detail: format!("not JSON: {e}"),
            status: Some(200),
        })?;
        Ok(pending_in(&list, username))
    }
}

/// The Ready condition of a Node object.
pub fn readiness(node: &serde_json::Value) -> NodeReadiness {
    let conditions = node["status"]["conditions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    match conditions.iter().find(|c| c["type"] == "Ready") {
        Some(c) => NodeReadiness {
            ready: c["status"].as_str().unwrap_or("").to_string(),
            last_heartbeat: c["lastHeartbeatTime"].as_str().unwrap_or("").to_string(),
            detail: format!(
                "{}: {}",
                c["reason"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            ),
        },
        None => NodeReadiness {
            ready: String::new(),
            last_heartbeat: String::new(),
            detail: "the kubelet has not reported a Ready condition yet".into(),
        },
    }
}

/// The pending CSRs of `username` in a CertificateSigningRequestList.
pub fn pending_in(list: &serde_json::Value, username: &str) -> Vec<String> {
    list["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|csr| csr["spec"]["username"] == username)
        .filter(|csr| {
            !csr["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    c["type"] == "Approved" || c["type"] == "Denied" || c["type"] == "Failed"
                })
            })
        })
        .filter_map(|csr| csr["metadata"]["name"].as_str().map(str::to_string))
        .collect()
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
        let r = readiness(&node);
        assert_eq!(r.ready, "False");
        assert!(r.detail.contains("cni plugin not initialized"));
        assert_eq!(readiness(&serde_json::json!({})).ready, "");
        assert_eq!(
            readiness(&serde_json::json!({"status": {"conditions": 5}})).ready,
            ""
        );
    }

    #[test]
    fn pending_csrs_are_those_of_this_token_without_a_verdict() {
        let list = serde_json::json!({"items": [
            {"metadata": {"name": "node-csr-a"}, "spec": {"username": "system:bootstrap:abcdef"}, "status": {}},
            {"metadata": {"name": "node-csr-b"}, "spec": {"username": "system:bootstrap:abcdef"},
             "status": {"conditions": [{"type": "Approved", "status": "True"}]}},
            {"metadata": {"name": "node-csr-c"}, "spec": {"username": "system:bootstrap:zzzzzz"}, "status": {}},
            {"metadata": {"name": "node-csr-d"}, "spec": {"username": "system:bootstrap:abcdef"},
             "status": {"conditions": [{"type": "Denied", "status": "True"}]}}
        ]});
        assert_eq!(
            pending_in(&list, "system:bootstrap:abcdef"),
            vec!["node-csr-a"]
        );
        assert!(pending_in(&serde_json::json!({}), "x").is_empty());
        assert!(pending_in(&serde_json::json!({"items": 3}), "x").is_empty());
    }
}
