//! Discovery by bootstrap token, as kubeadm does it, before kubeadm runs: so a dead
//! token, a wrong pin or an unreachable API server is diagnosed by name up front.
//!
//! 1. Fetch the `cluster-info` ConfigMap without verifying TLS (we do not know the CA).
//! 2. Verify the detached JWS for our token id over the kubeconfig it carries.
//! 3. Pin the CA in that kubeconfig by the SHA-256 of its SubjectPublicKeyInfo.
//! 4. Fetch again with that CA enforced; the kubeconfig must be byte-identical.
//!
//! Until step 2 succeeds, every answer comes from whoever is on the network path, and
//! a starting API server gives odd answers too (403 to anonymous requests until its RBAC
//! policy is in place, 5xx, 429). Only what the token's signature or the pin establishes
//! is final ([`DiscoveryError::is_verified`]); everything else is worth waiting out
//! until `timeouts.discovery`, as kubeadm itself does.

mod insecure;
pub mod jws;

use crate::config::{CaPin, Endpoint};
use crate::kubeconfig::Kubeconfig;
use crate::pki;
use crate::secret::BootstrapToken;
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const CLUSTER_INFO: &str = "/api/v1/namespaces/kube-public/configmaps/cluster-info";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why discovery failed. Every variant names its cause and what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DiscoveryError {
    /// Connect, TLS handshake, timeout or 5xx: worth retrying.
    #[error("API server {endpoint} unreachable: {detail}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// What happened.
        detail: String,
    },
    /// The API server is overloaded or not ready (429, 503), maybe saying when to
    /// come back.
    #[error("API server {endpoint} is busy: HTTP {status} for cluster-info{}", retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    Busy {
        /// The endpoint.
        endpoint: String,
        /// 429 or 503.
        status: u16,
        /// Its Retry-After.
        retry_after: Option<Duration>,
    },
    /// The API server answered cluster-info with a refusal (4xx other than 429).
    #[error("{}", refusal_text(endpoint, *status, message))]
    Refused {
        /// The endpoint.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The Status message the server sent, if any (shortened).
        message: String,
    },
    /// No `jws-kubeconfig-<id>`: the token does not exist (any more).
    #[error(
        "bootstrap token id \"{token_id}\" is invalid for this cluster or it has expired: cluster-info has no signature for it; create a new token with `kubeadm token create` on a control plane"
    )]
    TokenUnknown {
        /// The token id.
        token_id: String,
    },
    /// A signature exists but does not verify with our secret.
    #[error(
        "the cluster-info signature for token id \"{token_id}\" does not verify with this token's secret: the token secret is wrong, or something between this node and the API server altered cluster-info"
    )]
    BadSignature {
        /// The token id.
        token_id: String,
    },
    /// The CA is not the pinned one.
    #[error(
        "the cluster CA does not match any configured pin: expected {}, the API server presented {}; check join.ca_cert_hashes (`kubeadm token create --print-join-command` prints the right one), or you are talking to the wrong API server",
        join_pins(.expected), join_pins(.actual)
    )]
    CaPinMismatch {
        /// Configured pins.
        expected: Vec<CaPin>,
        /// Pins of the CA certificates in cluster-info.
        actual: Vec<CaPin>,
    },
    /// cluster-info is malformed.
    #[error("cluster-info from {endpoint} is invalid: {reason}")]
    InvalidClusterInfo {
        /// The endpoint.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
    /// The verified fetch failed TLS verification or returned other content.
    #[error("API server {endpoint} failed verification with the pinned CA: {detail}")]
    ServerIdentity {
        /// The endpoint.
        endpoint: String,
        /// What happened.
        detail: String,
    },
}

fn join_pins(pins: &[CaPin]) -> String {
    pins.iter()
        .map(|p| p.0.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a refusal means, and what fixes it when it lasts.
fn refusal_text(endpoint: &str, status: u16, message: &str) -> String {
    let said = if message.is_empty() {
        String::new()
    } else {
        format!(": \"{message}\"")
    };
    let meaning = match status {
        403 => {
            "anonymous requests for kube-public/cluster-info are forbidden; a starting API server answers so until its RBAC policy is in place, and if it lasts the cluster lacks the RoleBinding kubeadm:bootstrap-signer-clusterinfo that `kubeadm init phase bootstrap-token` creates"
        }
        401 => {
            "the API server refuses anonymous requests (kube-apiserver --anonymous-auth=false?); discovery by bootstrap token needs anonymous read access to kube-public/cluster-info"
        }
        404 => {
            "there is no cluster-info ConfigMap in kube-public: `kubeadm init phase bootstrap-token` publishes it; is this the API server of a kubeadm cluster?"
        }
        _ => "an unexpected answer to an anonymous read of kube-public/cluster-info",
    };
    format!("API server {endpoint} answered HTTP {status} for cluster-info{said}: {meaning}")
}

impl DiscoveryError {
    /// Established by the token's signature or the CA pin, so no retry can change it. Any
    /// other answer may come from a starting API server or from anyone on the path.
    pub fn is_verified(&self) -> bool {
        matches!(
            self,
            DiscoveryError::BadSignature { .. } | DiscoveryError::CaPinMismatch { .. }
        )
    }

    /// The API server is down, overloaded or not reachable (as opposed to answering
    /// something odd).
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            DiscoveryError::Unreachable { .. } | DiscoveryError::Busy { .. }
        )
    }

    /// How long the API server asked to be left alone, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DiscoveryError::Busy { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// What discovery established.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    /// The CA certificates, verified against the pins.
    pub ca: Vec<CertificateDer<'static>>,
    /// The CA as PEM (as kubeadm writes it to /etc/kubernetes/pki/ca.crt).
    pub ca_pem: Vec<u8>,
    /// The server URL published in cluster-info.
    pub server: String,
    /// Local clock minus the API server's Date header, in seconds, if it sent one.
    pub clock_skew_secs: Option<i64>,
}

/// One discovery attempt against `endpoint` with `token`.
pub async fn discover(
    endpoint: &Endpoint,
    token: &BootstrapToken,
    pins: &[CaPin],
) -> Result<ClusterInfo, DiscoveryError> {
    let url = format!("https://{endpoint}{CLUSTER_INFO}");
    let ep = endpoint.to_string();

    let insecure = client(insecure::config())?;
    let (first, _) = fetch(&insecure, &url, &ep, false).await?;
    let (kubeconfig_text, signature) = parse_cluster_info(&first, token.id(), &ep)?;
    let signature = signature.ok_or_else(|| DiscoveryError::TokenUnknown {
        token_id: token.id().to_string(),
    })?;
    jws::verify_detached(&signature, kubeconfig_text.as_bytes(), token).map_err(|_| {
        DiscoveryError::BadSignature {
            token_id: token.id().to_string(),
        }
    })?;

    let invalid = |reason: String| DiscoveryError::InvalidClusterInfo {
        endpoint: ep.clone(),
        reason,
    };
    let kubeconfig = Kubeconfig::parse(&kubeconfig_text, "cluster-info kubeconfig")
        .map_err(|e| invalid(e.to_string()))?;
    let server = kubeconfig
        .server()
        .map_err(|e| invalid(e.to_string()))?
        .to_string();
    let ca_pem = kubeconfig
        .embedded_ca_pem()
        .map_err(|e| invalid(e.to_string()))?;
    let ca =
        pki::pem_certificates(&ca_pem, "cluster-info CA").map_err(|e| invalid(e.to_string()))?;

    if !pins.is_empty() {
        let actual = ca
            .iter()
            .map(|c| pki::spki_pin(c, "cluster-info CA"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(e.to_string()))?;
        if !actual.iter().any(|a| pins.contains(a)) {
            return Err(DiscoveryError::CaPinMismatch {
                expected: pins.to_vec(),
                actual,
            });
        }
    }

    let mut roots = rustls::RootCertStore::empty();
    for c in &ca {
        roots
            .add(c.clone())
            .map_err(|e| invalid(format!("CA certificate unusable: {e}")))?;
    }
    let verified = client(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )?;
    let (second, date) = fetch(&verified, &url, &ep, true).await?;
    let (second_text, _) = parse_cluster_info(&second, token.id(), &ep)?;
    if second_text != kubeconfig_text {
        return Err(DiscoveryError::ServerIdentity {
            endpoint: ep,
            detail: "cluster-info changed between the unverified and the verified fetch".into(),
        });
    }

    let clock_skew_secs = date.map(|d| {
        let local = SystemTime::now();
        match local.duration_since(d) {
            Ok(ahead) => ahead.as_secs() as i64,
            Err(behind) => -(behind.duration().as_secs() as i64),
        }
    });
    Ok(ClusterInfo {
        ca,
        ca_pem,
        server,
        clock_skew_secs,
    })
}

fn client(config: rustls::ClientConfig) -> Result<reqwest::Client, DiscoveryError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| DiscoveryError::Unreachable {
            endpoint: "-".into(),
            detail: format!("cannot build an HTTPS client: {e}"),
        })
}

/// GET `url`; returns the body and the Date header.
async fn fetch(
    client: &reqwest::Client,
    url: &str,
    endpoint: &str,
    verified: bool,
) -> Result<(Vec<u8>, Option<SystemTime>), DiscoveryError> {
    let response = client.get(url).send().await.map_err(|e| {
        let detail = crate::failure::error_chain(&e);
        // With the CA pinned, a TLS failure is an identity problem, not an outage.
        if verified && (detail.contains("certificate") || detail.contains("Certificate")) {
            DiscoveryError::ServerIdentity {
                endpoint: endpoint.to_string(),
                detail,
            }
        } else {
            DiscoveryError::Unreachable {
                endpoint: endpoint.to_string(),
                detail,
            }
        }
    })?;
    let status = response.status();
    let retry_after = crate::body::retry_after(response.headers());
    let date = response
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let body = crate::body::read_capped(response, crate::body::CLUSTER_INFO_LIMIT)
        .await
        .map_err(|e| match e {
            crate::body::BodyError::Read(detail) => DiscoveryError::Unreachable {
                endpoint: endpoint.to_string(),
                detail,
            },
            too_large => DiscoveryError::InvalidClusterInfo {
                endpoint: endpoint.to_string(),
                reason: too_large.to_string(),
            },
        })?;
    if matches!(status.as_u16(), 429 | 503) {
        return Err(DiscoveryError::Busy {
            endpoint: endpoint.to_string(),
            status: status.as_u16(),
            retry_after,
        });
    }
    if status.is_server_error() {
        return Err(DiscoveryError::Unreachable {
            endpoint: endpoint.to_string(),
            detail: format!("HTTP {status} for cluster-info"),
        });
    }
    if !status.is_success() {
        return Err(DiscoveryError::Refused {
            endpoint: endpoint.to_string(),
            status: status.as_u16(),
            message: status_message(&body),
        });
    }
    Ok((body, date))
}

/// The `message` of a Kubernetes `Status` body, shortened and printable, or "".
fn status_message(body: &[u8]) -> String {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_string))
        .unwrap_or_default();
    let printable: String = message
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect();
    printable
}

/// Pulls `data.kubeconfig` and `data.jws-kubeconfig-<id>` out of the ConfigMap JSON.
pub fn parse_cluster_info(
    body: &[u8],
    token_id: &str,
    endpoint: &str,
) -> Result<(String, Option<String>), DiscoveryError> {
    let invalid = |reason: String| DiscoveryError::InvalidClusterInfo {
        endpoint: endpoint.to_string(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let data = value
        .get("data")
        .and_then(|d| d.as_object())
        .ok_or_else(|| invalid("the ConfigMap has no data".into()))?;
    let kubeconfig = data
        .get("kubeconfig")
        .and_then(|k| k.as_str())
        .ok_or_else(|| invalid("the ConfigMap has no data.kubeconfig string".into()))?;
    let signature = match data.get(&format!("jws-kubeconfig-{token_id}")) {
        None => None,
        Some(v) => Some(
            v.as_str()
                .ok_or_else(|| invalid(format!("jws-kubeconfig-{token_id} is not a string")))?
                .to_string(),
        ),
    };
    Ok((kubeconfig.to_string(), signature))
}

#[cfg(test)]
mod tests;
