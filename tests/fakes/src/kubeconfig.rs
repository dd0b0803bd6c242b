//! kubeconfig files in the shapes upstream writes them (field order as Go's YAML
//! encoder emits them: alphabetical), and a loader that resolves the current context.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::fsroot::{Root, go_path_error};

/// A kubeconfig (`kind: Config`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Kubeconfig {
    /// Always `v1`.
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    /// Named clusters.
    #[serde(default)]
    pub clusters: Option<Vec<NamedCluster>>,
    /// Named contexts.
    #[serde(default)]
    pub contexts: Option<Vec<NamedContext>>,
    /// The context in use.
    #[serde(rename = "current-context", default)]
    pub current_context: String,
    /// Always `Config`.
    #[serde(default)]
    pub kind: String,
    /// Always empty.
    #[serde(default)]
    pub preferences: BTreeMap<String, serde_norway::Value>,
    /// Named users.
    #[serde(default)]
    pub users: Option<Vec<NamedUser>>,
}

/// `clusters[]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NamedCluster {
    /// The cluster.
    pub cluster: Cluster,
    /// Its name.
    #[serde(default)]
    pub name: String,
}

/// A cluster entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    /// CA file path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    /// base64 of the CA PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    /// `https://host:port`.
    #[serde(default)]
    pub server: String,
}

/// `contexts[]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NamedContext {
    /// The context.
    pub context: ContextEntry,
    /// Its name.
    #[serde(default)]
    pub name: String,
}

/// A context entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContextEntry {
    /// Cluster name.
    #[serde(default)]
    pub cluster: String,
    /// Namespace (kubelet writes `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// User name.
    #[serde(default)]
    pub user: String,
}

/// `users[]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NamedUser {
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// The credentials.
    #[serde(default)]
    pub user: AuthInfo,
}

/// Credentials of a user.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AuthInfo {
    /// Client certificate file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// base64 of the client certificate PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_data: Option<String>,
    /// Client key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    /// base64 of the client key PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_data: Option<String>,
    /// Bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

// The writers below use templates rather than serde: Go's YAML encoder writes `""` for
// empty strings where serde_norway writes `''`, and the cluster-info bytes are what the
// JWS signs, so they should look exactly like upstream's.

/// The `cluster-info` kubeconfig: one unnamed cluster, nothing else.
pub fn cluster_info(server: &str, ca_pem: &[u8]) -> String {
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: \"\"\ncontexts: []\ncurrent-context: \"\"\nkind: Config\npreferences: {{}}\nusers: []\n",
        STANDARD.encode(ca_pem)
    )
}

/// kubeadm's `bootstrap-kubelet.conf` (kubeconfigutil.CreateWithToken).
pub fn bootstrap(server: &str, ca_pem: &[u8], token: &str) -> String {
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: kubernetes\ncontexts:\n- context:\n    cluster: kubernetes\n    user: tls-bootstrap-token-user\n  name: tls-bootstrap-token-user@kubernetes\ncurrent-context: tls-bootstrap-token-user@kubernetes\nkind: Config\npreferences: {{}}\nusers:\n- name: tls-bootstrap-token-user\n  user:\n    token: {token}\n",
        STANDARD.encode(ca_pem)
    )
}

/// The `kubelet.conf` kubelet writes after bootstrapping (writeKubeconfigFromBootstrapping).
pub fn kubelet(server: &str, ca_pem: &[u8], pem_path: &str) -> String {
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: default-cluster\ncontexts:\n- context:\n    cluster: default-cluster\n    namespace: default\n    user: default-auth\n  name: default-context\ncurrent-context: default-context\nkind: Config\npreferences: {{}}\nusers:\n- name: default-auth\n  user:\n    client-certificate: {pem_path}\n    client-key: {pem_path}\n",
        STANDARD.encode(ca_pem)
    )
}

/// Parses kubeconfig YAML.
pub fn parse(yaml: &str) -> Result<Kubeconfig> {
    serde_norway::from_str(yaml).map_err(|e| anyhow!("couldn't parse kubeconfig: {e}"))
}

/// How a resolved kubeconfig authenticates.
#[derive(Clone)]
pub enum Auth {
    /// No credentials.
    Anonymous,
    /// A bearer token.
    Token(String),
    /// A client certificate chain and key, both PEM.
    ClientCert {
        /// Certificate PEM.
        cert_pem: Vec<u8>,
        /// Key PEM.
        key_pem: Vec<u8>,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Anonymous => write!(f, "Anonymous"),
            Auth::Token(_) => write!(f, "Token(<redacted>)"),
            Auth::ClientCert { .. } => write!(f, "ClientCert"),
        }
    }
}

/// What a client needs from a kubeconfig: endpoint, CA and credentials.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// `https://host:port`.
    pub server: String,
    /// The cluster CA, PEM.
    pub ca_pem: Vec<u8>,
    /// Credentials.
    pub auth: Auth,
}

impl Kubeconfig {
    /// Resolves the current context (or the only cluster when there is no context, as
    /// in cluster-info), reading referenced files relative to `dir` through `root`.
    pub fn resolve(&self, root: &Root, dir: &Path) -> Result<Resolved> {
        let clusters = self.clusters.as_deref().unwrap_or_default();
        let users = self.users.as_deref().unwrap_or_default();
        let (cluster, user) = if self.current_context.is_empty() {
            match clusters {
                [only] => (&only.cluster, None),
                _ => bail!("invalid configuration: no configuration has been provided"),
            }
        } else {
            let ctx = self
                .contexts
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find(|c| c.name == self.current_context)
                .ok_or_else(|| {
                    anyhow!(
                        "context was not found for specified context: {}",
                        self.current_context
                    )
                })?;
            let cluster = clusters
                .iter()
                .find(|c| c.name == ctx.context.cluster)
                .ok_or_else(|| anyhow!("cluster {:?} not found", ctx.context.cluster))?;
            let user = users.iter().find(|u| u.name == ctx.context.user);
            (&cluster.cluster, user.map(|u| &u.user))
        };
        if cluster.server.is_empty() {
            bail!("invalid configuration: no server found for cluster");
        }
        let read = |what: &str, path: &str| -> Result<Vec<u8>> {
            let p = dir.join(path).display().to_string();
            std::fs::read(root.path(&p)).map_err(|e| {
                anyhow!(
                    "unable to read {what} {p} due to {}",
                    go_path_error("open", &p, &e)
                )
            })
        };
        let ca_pem = match (
            &cluster.certificate_authority_data,
            &cluster.certificate_authority,
        ) {
            (Some(data), _) => STANDARD
                .decode(data.trim())
                .context("certificate-authority-data is not valid base64")?,
            (None, Some(path)) => read("certificate-authority", path)?,
            (None, None) => bail!("kubeconfig has no certificate authority for its cluster"),
        };
        let auth = match user {
            None => Auth::Anonymous,
            Some(u) => {
                let cert = match (&u.client_certificate_data, &u.client_certificate) {
                    (Some(d), _) => Some(
                        STANDARD
                            .decode(d.trim())
                            .context("client-certificate-data is not valid base64")?,
                    ),
                    (None, Some(p)) => Some(read("client-certificate", p)?),
                    _ => None,
                };
                let key = match (&u.client_key_data, &u.client_key) {
                    (Some(d), _) => Some(
                        STANDARD
                            .decode(d.trim())
                            .context("client-key-data is not valid base64")?,
                    ),
                    (None, Some(p)) => Some(read("client-key", p)?),
                    _ => None,
                };
                match (cert, key, &u.token) {
                    (Some(cert_pem), Some(key_pem), _) => Auth::ClientCert { cert_pem, key_pem },
                    (Some(_), None, _) | (None, Some(_), _) => {
                        bail!("client-cert and client-key must both be specified")
                    }
                    (None, None, Some(t)) => Auth::Token(t.clone()),
                    (None, None, None) => Auth::Anonymous,
                }
            }
        };
        Ok(Resolved {
            server: cluster.server.clone(),
            ca_pem,
            auth,
        })
    }
}

/// Loads and resolves a kubeconfig file given by its node path.
pub fn load(root: &Root, node_path: &str) -> Result<Resolved> {
    let text = std::fs::read_to_string(root.path(node_path))
        .map_err(|e| anyhow!(go_path_error("open", node_path, &e)))?;
    let dir = Path::new(node_path).parent().unwrap_or(Path::new("/"));
    parse(&text)
        .with_context(|| format!("loading {node_path}"))?
        .resolve(root, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_info_shape_matches_upstream() {
        let y = cluster_info("https://127.0.0.1:6443", b"PEM");
        assert_eq!(
            y,
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: UEVN\n    server: https://127.0.0.1:6443\n  name: \"\"\ncontexts: []\ncurrent-context: \"\"\nkind: Config\npreferences: {}\nusers: []\n"
        );
        let r = parse(&y)
            .unwrap()
            .resolve(&Root::default(), Path::new("/"))
            .unwrap();
        assert_eq!(r.ca_pem, b"PEM");
        assert!(matches!(r.auth, Auth::Anonymous));
    }

    #[test]
    fn bootstrap_resolves_to_token() {
        let y = bootstrap("https://127.0.0.1:6443", b"PEM", "abcdef.0123456789abcdef");
        assert!(y.contains("current-context: tls-bootstrap-token-user@kubernetes\n"));
        let r = parse(&y)
            .unwrap()
            .resolve(&Root::default(), Path::new("/"))
            .unwrap();
        assert!(matches!(r.auth, Auth::Token(ref t) if t == "abcdef.0123456789abcdef"));
        assert_eq!(r.server, "https://127.0.0.1:6443");
    }

    #[test]
    fn kubelet_conf_reads_pem_through_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::at(dir.path());
        let pem = "/var/lib/kubelet/pki/kubelet-client-current.pem";
        std::fs::create_dir_all(root.path("/var/lib/kubelet/pki")).unwrap();
        std::fs::write(root.path(pem), "CERTKEY").unwrap();
        let y = kubelet("https://127.0.0.1:6443", b"PEM", pem);
        assert!(y.contains("client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem"));
        std::fs::create_dir_all(root.path("/etc/kubernetes")).unwrap();
        std::fs::write(root.path("/etc/kubernetes/kubelet.conf"), &y).unwrap();
        let r = load(&root, "/etc/kubernetes/kubelet.conf").unwrap();
        assert!(matches!(r.auth, Auth::ClientCert { ref cert_pem, .. } if cert_pem == b"CERTKEY"));
    }
}
