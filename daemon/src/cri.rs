//! The container runtime, asked over CRI (gRPC on its unix socket) the two questions
//! kubelet will ask first: which runtime and API version are you, and are you ready.
//!
//! The messages are the subset of k8s.io/cri-api `runtime/v1/api.proto` needed for
//! `RuntimeService/Version` and `RuntimeService/Status`, written as prost structs with
//! upstream's field numbers: a wire-compatible subset that needs no protoc at build time.

use std::path::Path;
use std::time::Duration;
use tonic::codegen::http::uri::PathAndQuery;

/// `runtime.v1.VersionRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionRequest {
    /// Version of the kubelet runtime API.
    #[prost(string, tag = "1")]
    pub version: String,
}

/// `runtime.v1.VersionResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionResponse {
    /// Version of the kubelet runtime API.
    #[prost(string, tag = "1")]
    pub version: String,
    /// Name of the container runtime.
    #[prost(string, tag = "2")]
    pub runtime_name: String,
    /// Version of the container runtime.
    #[prost(string, tag = "3")]
    pub runtime_version: String,
    /// API version of the container runtime (v1).
    #[prost(string, tag = "4")]
    pub runtime_api_version: String,
}

/// `runtime.v1.StatusRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {
    /// Ask for extra information.
    #[prost(bool, tag = "1")]
    pub verbose: bool,
}

/// `runtime.v1.RuntimeCondition`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RuntimeCondition {
    /// RuntimeReady, NetworkReady.
    #[prost(string, tag = "1")]
    pub r#type: String,
    /// Whether the condition holds.
    #[prost(bool, tag = "2")]
    pub status: bool,
    /// CamelCase reason.
    #[prost(string, tag = "3")]
    pub reason: String,
    /// Human-readable message.
    #[prost(string, tag = "4")]
    pub message: String,
}

/// `runtime.v1.RuntimeStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RuntimeStatus {
    /// The runtime's conditions.
    #[prost(message, repeated, tag = "1")]
    pub conditions: Vec<RuntimeCondition>,
}

/// `runtime.v1.StatusResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusResponse {
    /// The runtime's status.
    #[prost(message, optional, tag = "1")]
    pub status: Option<RuntimeStatus>,
}

/// What the runtime said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeReport {
    /// "containerd".
    pub runtime_name: String,
    /// "1.6.20~ds1".
    pub runtime_version: String,
    /// "v1".
    pub runtime_api_version: String,
    /// RuntimeReady.
    pub runtime_ready: Condition,
    /// NetworkReady (false until a CNI plugin is installed: expected before a join).
    pub network_ready: Condition,
}

/// One condition as reported (absent conditions are "not reported").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// Whether it holds.
    pub ok: bool,
    /// reason: message, or "not reported".
    pub detail: String,
}

/// Why the runtime could not be asked or answered badly.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// No socket at the path: containerd is not running (yet).
    #[error("no CRI socket at {socket}: containerd is not running")]
    NoSocket {
        /// The socket path.
        socket: String,
    },
    /// Connecting or the call failed.
    #[error("CRI {call} on {socket} failed: {detail}")]
    Call {
        /// The RPC.
        call: &'static str,
        /// The socket path.
        socket: String,
        /// The gRPC status or transport error.
        detail: String,
    },
}

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the runtime at `socket` for its version and status.
pub async fn probe(socket: &Path) -> Result<RuntimeReport, CriError> {
    let name = socket.display().to_string();
    if !socket.exists() {
        return Err(CriError::NoSocket { socket: name });
    }
    let call_err = |call: &'static str, name: &str| {
        let socket = name.to_string();
        move |e: &dyn std::fmt::Display| CriError::Call {
            call,
            socket,
            detail: e.to_string(),
        }
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("unix://{name}"))
        .map_err(|e| call_err("connect", &name)(&e))?
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect()
        .await
        .map_err(|e| call_err("connect", &name)(&e))?;
    let mut grpc = tonic::client::Grpc::new(channel);

    grpc.ready()
        .await
        .map_err(|e| call_err("connect", &name)(&e))?;
    let version: VersionResponse = grpc
        .unary(
            tonic::Request::new(VersionRequest {
                version: "v1".into(),
            }),
            PathAndQuery::from_static("/runtime.v1.RuntimeService/Version"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .map_err(|e| call_err("RuntimeService/Version", &name)(&e.message().to_string()))?
        .into_inner();

    grpc.ready()
        .await
        .map_err(|e| call_err("connect", &name)(&e))?;
    let status: StatusResponse = grpc
        .unary(
            tonic::Request::new(StatusRequest { verbose: false }),
            PathAndQuery::from_static("/runtime.v1.RuntimeService/Status"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .map_err(|e| call_err("RuntimeService/Status", &name)(&e.message().to_string()))?
        .into_inner();

    let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
    Ok(RuntimeReport {
        runtime_name: version.runtime_name,
        runtime_version: version.runtime_version,
        runtime_api_version: version.runtime_api_version,
        runtime_ready: condition(&conditions, "RuntimeReady"),
        network_ready: condition(&conditions, "NetworkReady"),
    })
}

fn condition(conditions: &[RuntimeCondition], kind: &str) -> Condition {
    match conditions.iter().find(|c| c.r#type == kind) {
        Some(c) => Condition {
            ok: c.status,
            detail: match (c.reason.is_empty(), c.message.is_empty()) {
                (true, true) => if c.status { "ready" } else { "not ready" }.to_string(),
                (false, true) => c.reason.clone(),
                (true, false) => c.message.clone(),
                (false, false) => format!("{}: {}", c.reason, c.message),
            },
        },
        None => Condition {
            ok: false,
            detail: "not reported".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn decodes_a_status_with_unknown_newer_fields() {
        // StatusResponse{status{conditions[{RuntimeReady,true},{NetworkReady,false,
        // NetworkPluginNotReady}]}} plus field 3 (runtime_handlers, newer cri-api),
        // which must be skipped.
        let resp = StatusResponse {
            status: Some(RuntimeStatus {
                conditions: vec![
                    RuntimeCondition {
                        r#type: "RuntimeReady".into(),
                        status: true,
                        ..Default::default()
                    },
                    RuntimeCondition {
                        r#type: "NetworkReady".into(),
                        status: false,
                        reason: "NetworkPluginNotReady".into(),
                        message: "cni plugin not initialized".into(),
                    },
                ],
            }),
        };
        let mut bytes = resp.encode_to_vec();
        bytes.extend_from_slice(&[0x1a, 0x02, 0x0a, 0x00]);
        let back = StatusResponse::decode(bytes.as_slice()).unwrap();
        let conds = back.status.unwrap().conditions;
        assert!(condition(&conds, "RuntimeReady").ok);
        let net = condition(&conds, "NetworkReady");
        assert!(!net.ok);
        assert_eq!(
            net.detail,
            "NetworkPluginNotReady: cni plugin not initialized"
        );
        assert_eq!(condition(&conds, "Other").detail, "not reported");
    }

    #[tokio::test]
    async fn missing_socket_is_named() {
        let err = probe(Path::new("/nonexistent/containerd.sock"))
            .await
            .unwrap_err();
        assert!(matches!(err, CriError::NoSocket { .. }));
        assert!(err.to_string().contains("/nonexistent/containerd.sock"));
    }
}
