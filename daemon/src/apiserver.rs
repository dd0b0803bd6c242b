//! The few API server reads the agent makes on its own, with the bootstrap token (the
//! permissions kubeadm grants bootstrappers: get nodes, get/list CSRs), or with a
//! separately configured credential for the one write it may make (delete a Node).

use crate::config::Endpoint;
use crate::kubeconfig::Kubeconfig;
use crate::paths::Paths;
use crate::secret::BootstrapToken;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::Duration;

/// How often a request that met an overloaded API server (429, 503) is tried.
const BUSY_TRIES: u32 = 5;

/// A failed API call: what was asked and what came back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {detail}")]
pub struct ApiError {
    /// "reading Node worker-1".
    pub what: String,
    /// The HTTP status or transport error.
    pub detail: String,
    /// The HTTP status, when the server answered.
    pub status: Option<u16>,
}

impl ApiError {
    /// An answer a starting, restarting or overloaded API server gives: no answer at
    /// all, 429 (the client's own retries spent) or a 5xx. Worth asking again later.
    pub fn is_transient(&self) -> bool {
        match self.status {
            None => true,
            Some(status) => status == 429 || status >= 500,
        }
    }
}

/// An authenticated client for one API server.
pub struct ApiClient {
    base: String,
    client: reqwest::Client,
    bearer: Option<String>,
    /// The CA certificates it trusts.
    ca: Vec<CertificateDer<'static>>,
}

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
    /// A client authenticated with the bootstrap token, trusting `ca`.
    pub fn bootstrap(
        endpoint: &Endpoint,
        ca: &[CertificateDer<'static>],
        token: &BootstrapToken,
    ) -> Result<Self, ApiError> {
        let config = tls(ca, None).map_err(|detail| ApiError {
            what: "building the API client".into(),
            detail,
            status: None,
        })?;
        Ok(Self {
            base: format!("https://{endpoint}"),
            client: build(config)?,
            bearer: Some(token.expose_full()),
            ca: ca.to_vec(),
        })
    }

    /// An anonymous client trusting `ca` (for what anyone may read: /version).
    pub fn anonymous(
        endpoint: &Endpoint,
        ca: &[CertificateDer<'static>],
    ) -> Result<Self, ApiError> {
        let config = tls(ca, None).map_err(|detail| ApiError {
            what: "building the API client".into(),
            detail,
            status: None,
        })?;
        Ok(Self {
            base: format!("https://{endpoint}"),
            client: build(config)?,
            bearer: None,
            ca: ca.to_vec(),
        })
    }

    /// The CA certificates this client trusts.
    pub fn ca(&self) -> &[CertificateDer<'static>] {
        &self.ca
    }

    /// `GET /version`: the API server's gitVersion.
    pub async fn server_version(&self) -> Result<String, ApiError> {
        let what = "reading the API server's /version".to_string();
        let (status, body) = self.send(reqwest::Method::GET, "/version", &what).await?;
        if status != 200 {
            return Err(ApiError {
                what,
                detail: format!("HTTP {status}"),
                status: Some(status),
            });
        }
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| ApiError {
            what: what.clone(),
            detail: format!("not JSON: {e}"),
            status: Some(200),
        })?;
        v["gitVersion"]
            .as_str()
            .map(str::to_string)
            .ok_or(ApiError {
                what,
                detail: "no gitVersion".into(),
                status: Some(200),
            })
    }

    /// A client authenticated with a client certificate (PEM chain and key), at `server`.
    pub fn with_client_cert(
        server: &str,
        ca: &[CertificateDer<'static>],
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, ApiError> {
        let identity = (cert_pem.to_vec(), key_pem.to_vec());
        let config = tls(ca, Some(&identity)).map_err(|detail| ApiError {
            what: "building the API client".into(),
            detail,
            status: None,
        })?;
        Ok(Self {
            base: server.trim_end_matches('/').to_string(),
            client: build(config)?,
            bearer: None,
            ca: ca.to_vec(),
        })
    }

    /// A client from a kubeconfig file (client certificate or token), trusting `ca`
    /// in addition to the kubeconfig's own CA.
    pub fn from_kubeconfig(
        paths: &Paths,
        file: &std::path::Path,
        ca: &[CertificateDer<'static>],
    ) -> Result<Self, ApiError> {
        let err = |detail: String| ApiError {
            what: format!("using {}", file.display()),
            detail,
            status: None,
        };
        let kc = Kubeconfig::read(&paths.resolve(file)).map_err(|e| err(e.to_string()))?;
        let mut roots: Vec<CertificateDer<'static>> = ca.to_vec();
        if let Ok(pem) = kc.ca_pem(|p| paths.resolve(p)) {
            roots.extend(CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok));
        }
        let user = kc.user().map_err(|e| err(e.to_string()))?;
        let identity = match (&user.client_certificate, &user.client_key) {
            (Some(cert), Some(key)) => {
                let cert = std::fs::read(paths.resolve(cert)).map_err(|e| err(e.to_string()))?;
                let key = std::fs::read(paths.resolve(key)).map_err(|e| err(e.to_string()))?;
                Some((cert, key))
            }
            _ => None,
        };
        let config = tls(&roots, identity.as_ref()).map_err(err)?;
        let roots = roots.clone();
        Ok(Self {
            base: kc
                .server()
                .map_err(|e| err(e.to_string()))?
                .trim_end_matches('/')
                .to_string(),
            client: build(config)?,
            bearer: user.token.as_ref().map(|t| t.expose().to_string()),
            ca: roots,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        what: &str,
    ) -> Result<(u16, Vec<u8>), ApiError> {
        self.send_body(method, path, what, None).await
    }

    /// One request; an overloaded API server's 429 or 503 is retried a few times, no
    /// sooner than its Retry-After says (jittered, so a fleet does not come back in
    /// step), before the answer is returned as it is.
    async fn send_body(
        &self,
        method: reqwest::Method,
        path: &str,
        what: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<(u16, Vec<u8>), ApiError> {
        let err = |detail: String| ApiError {
            what: what.to_string(),
            detail,
            status: None,
        };
        let mut pause = Duration::from_secs(1);
        let mut tries = 0;
        loop {
            tries += 1;
            let mut request = self
                .client
                .request(method.clone(), format!("{}{path}", self.base));
            if let Some((content_type, bytes)) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, *content_type)
                    .body(bytes.clone());
            }
            if let Some(bearer) = &self.bearer {
                request = request.bearer_auth(bearer);
            }
            let response = request
                .send()
                .await
                .map_err(|e| err(crate::failure::error_chain(&e)))?;
            let status = response.status().as_u16();
            if matches!(status, 429 | 503) && tries < BUSY_TRIES {
                let after = crate::body::retry_after(response.headers()).unwrap_or(pause);
                tokio::time::sleep(after.mul_f64(1.0 + fastrand::f64() / 2.0)).await;
                pause = (pause * 2).min(Duration::from_secs(30));
                continue;
            }
            let body = crate::body::read_capped(response, crate::body::API_LIMIT)
                .await
                .map_err(|e| err(e.to_string()))?;
            return Ok((status, body));
        }
    }

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

fn tls(
    ca: &[CertificateDer<'static>],
    identity: Option<&(Vec<u8>, Vec<u8>)>,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in ca {
        roots
            .add(c.clone())
            .map_err(|e| format!("CA unusable: {e}"))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain: Vec<_> = CertificateDer::pem_slice_iter(cert)
                .filter_map(Result::ok)
                .collect();
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| format!("client key unusable: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate unusable: {e}"))
        }
    }
}

fn build(config: rustls::ClientConfig) -> Result<reqwest::Client, ApiError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| ApiError {
            what: "building the API client".into(),
            detail: e.to_string(),
            status: None,
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn busy_answers_are_transient_refusals_are_not() {
        let err = |status| super::ApiError {
            what: "reading Node n".into(),
            detail: "x".into(),
            status,
        };
        assert!(err(None).is_transient());
        assert!(err(Some(429)).is_transient());
        assert!(err(Some(503)).is_transient());
        assert!(err(Some(500)).is_transient());
        assert!(!err(Some(403)).is_transient());
        assert!(!err(Some(401)).is_transient());
    }

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
