//! A minimal Kubernetes API client for the node fakes (kubeadm, kubelet): reqwest with
//! rustls, exactly one trusted CA (or none, for kubeadm's unverified first discovery
//! fetch), optional client certificate or bearer token, and Go-like error texts.

use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::{Certificate, Client, Identity, Method};

use crate::kubeconfig::{Auth, Resolved};

/// How to verify the server.
pub enum Trust<'a> {
    /// Trust exactly this CA (PEM).
    Ca(&'a [u8]),
    /// Verify nothing: kubeadm's first cluster-info fetch, before the CA is known.
    Insecure,
}

/// An API client bound to one server and one identity.
#[derive(Clone)]
pub struct ApiClient {
    client: Client,
    base: String,
    bearer: Option<String>,
}

/// A response: status and body.
#[derive(Debug)]
pub struct ApiResponse {
    /// HTTP status.
    pub status: u16,
    /// Raw body.
    pub body: Vec<u8>,
}

impl ApiResponse {
    /// The body as JSON (Null when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// client-go's wording for a failed call: the Status message when the body is a
    /// Status, else the generic "an error on the server" text.
    pub fn error_text(&self) -> String {
        let v = self.json();
        match v.get("message").and_then(|m| m.as_str()) {
            Some(m) if v.get("kind").and_then(|k| k.as_str()) == Some("Status") => m.to_owned(),
            _ => format!(
                "an error on the server ({:?}) has prevented the request from succeeding",
                String::from_utf8_lossy(&self.body).trim()
            ),
        }
    }
}

impl ApiClient {
    /// Builds a client for `server` (`https://host:port`).
    pub fn new(server: &str, trust: Trust<'_>, auth: &Auth, timeout: Duration) -> Result<Self> {
        let mut builder = Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .no_proxy()
            .user_agent("kja-fakes");
        builder = match trust {
            Trust::Ca(pem) => {
                let certs = Certificate::from_pem_bundle(pem).context("parsing the cluster CA")?;
                builder.tls_certs_only(certs)
            }
            Trust::Insecure => builder.tls_danger_accept_invalid_certs(true),
        };
        let mut bearer = None;
        match auth {
            Auth::Anonymous => {}
            Auth::Token(t) => bearer = Some(t.clone()),
            Auth::ClientCert { cert_pem, key_pem } => {
                let mut pem = cert_pem.clone();
                pem.push(b'\n');
                pem.extend_from_slice(key_pem);
                let id =
                    Identity::from_pem(&pem).context("loading the client certificate and key")?;
                builder = builder.identity(id);
            }
        }
        let client = builder.build().context("building the HTTPS client")?;
        Ok(Self {
            client,
            base: server.trim_end_matches('/').to_owned(),
            bearer,
        })
    }

    /// A client from a resolved kubeconfig, trusting its CA.
    pub fn from_kubeconfig(r: &Resolved, timeout: Duration) -> Result<Self> {
        Self::new(&r.server, Trust::Ca(&r.ca_pem), &r.auth, timeout)
    }

    /// The full URL of an API path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request; transport failures come back as Go-worded errors. Like
    /// client-go's rest client (`checkWait`, with_retry.go), a 429 or 5xx that carries
    /// `Retry-After: <seconds>` is sent again after exactly that long, up to
    /// [`MAX_RETRIES`] times; then the last answer is returned.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<ApiResponse, String> {
        let url = self.url(path);
        let mut retries = 0;
        loop {
            let mut req = self.client.request(method.clone(), &url);
            if let Some(t) = &self.bearer {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                let content_type = if method == Method::PATCH {
                    "application/merge-patch+json"
                } else {
                    "application/json"
                };
                req = req
                    .header("Content-Type", content_type)
                    .body(serde_json::to_vec(b).unwrap_or_default());
            }
            let resp = req.send().await.map_err(|e| go_error(&method, &url, &e))?;
            let status = resp.status().as_u16();
            let wait = retry_wait(status, resp.headers());
            let body = resp
                .bytes()
                .await
                .map_err(|e| go_error(&method, &url, &e))?
                .to_vec();
            match wait {
                Some(wait) if retries < MAX_RETRIES => {
                    retries += 1;
                    tokio::time::sleep(wait).await;
                }
                _ => return Ok(ApiResponse { status, body }),
            }
        }
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Result<ApiResponse, String> {
        self.call(Method::GET, path, None).await
    }
}

/// client-go's default `maxRetries` for a request the server asked to send again later.
pub const MAX_RETRIES: u32 = 10;

/// client-go's `checkWait`: a 429 or any 5xx with an integer `Retry-After` is to be sent
/// again after that many seconds (no jitter, no cap).
pub fn retry_wait(status: u16, headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if !(status == 429 || status >= 500) {
        return None;
    }
    let secs: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

/// Words a transport error like Go's net/http: `Get "URL": dial tcp HOST:PORT: connect:
/// connection refused`. The agent and the tests grep kubeadm's output for such texts.
pub fn go_error(method: &Method, url: &str, err: &reqwest::Error) -> String {
    let verb = match *method {
        Method::GET => "Get",
        Method::POST => "Post",
        Method::PUT => "Put",
        Method::PATCH => "Patch",
        Method::DELETE => "Delete",
        _ => "Request",
    };
    let hostport = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
        .unwrap_or_default();
    if err.is_timeout() {
        return format!(
            "{verb} {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        );
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut chain = Vec::new();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            let what = match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_owned(),
                std::io::ErrorKind::TimedOut => "i/o timeout".to_owned(),
                std::io::ErrorKind::ConnectionReset => "read: connection reset by peer".to_owned(),
                _ => io.to_string(),
            };
            if err.is_connect() {
                return format!("{verb} {url:?}: dial tcp {hostport}: {what}");
            }
            return format!("{verb} {url:?}: {what}");
        }
        chain.push(e.to_string());
        source = e.source();
    }
    chain.dedup();
    format!("{verb} {url:?}: {}", chain.join(": "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_honoured_on_429_and_5xx_only() {
        use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_wait(429, &h), Some(Duration::from_secs(2)));
        assert_eq!(retry_wait(503, &h), Some(Duration::from_secs(2)));
        assert_eq!(retry_wait(409, &h), None);
        assert_eq!(retry_wait(429, &HeaderMap::new()), None);
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_wait(429, &h), None);
    }
}
