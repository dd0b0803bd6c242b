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

mod requests;
pub use requests::{NodeReadiness, pending_in, readiness};

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
}
