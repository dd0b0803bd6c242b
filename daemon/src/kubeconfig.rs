//! The parts of a kubeconfig the agent reads: the cluster (server, CA) and the user's
//! credentials (bootstrap token or client certificate files).

use crate::secret::Secret;
use base64::Engine;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A kubeconfig that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {reason}")]
pub struct KubeconfigError {
    /// The file, or "cluster-info" for the discovered one.
    pub origin: String,
    /// What is wrong.
    pub reason: String,
}

/// A parsed kubeconfig.
#[derive(Debug, Clone, Deserialize)]
pub struct Kubeconfig {
    #[serde(default, deserialize_with = "null_as_empty")]
    clusters: Vec<NamedCluster>,
    #[serde(default, deserialize_with = "null_as_empty")]
    users: Vec<NamedUser>,
    #[serde(default, deserialize_with = "null_as_empty")]
    contexts: Vec<NamedContext>,
    #[serde(rename = "current-context", default)]
    current_context: String,
    #[serde(skip)]
    origin: String,
}

#[derive(Debug, Clone, Deserialize)]
struct NamedCluster {
    #[serde(default)]
    name: String,
    cluster: Cluster,
}

/// A kubeconfig cluster entry.
#[derive(Debug, Clone, Deserialize)]
pub struct Cluster {
    /// The API server URL.
    #[serde(default)]
    pub server: String,
    #[serde(rename = "certificate-authority-data", default)]
    ca_data: Option<String>,
    #[serde(rename = "certificate-authority", default)]
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
struct NamedUser {
    #[serde(default)]
    name: String,
    #[serde(default)]
    user: User,
}

/// A kubeconfig user entry (only the fields kubeadm and kubelet write).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct User {
    /// Bearer token (the bootstrap kubeconfig).
    #[serde(default)]
    pub token: Option<Secret>,
    /// Client certificate file.
    #[serde(rename = "client-certificate", default)]
    pub client_certificate: Option<PathBuf>,
    /// Client key file.
    #[serde(rename = "client-key", default)]
    pub client_key: Option<PathBuf>,
    /// Inline client certificate (base64 PEM).
    #[serde(rename = "client-certificate-data", default)]
    pub client_certificate_data: Option<String>,
    /// Inline client key (base64 PEM).
    #[serde(rename = "client-key-data", default)]
    pub client_key_data: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
struct NamedContext {
    #[serde(default)]
    name: String,
    context: Context,
}

#[derive(Debug, Clone, Deserialize)]
struct Context {
    #[serde(default)]
    cluster: String,
    #[serde(default)]
    user: String,
}

/// kubeadm writes `contexts: null` and `users: null` in cluster-info's kubeconfig.
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

impl Kubeconfig {
    /// Parses kubeconfig YAML; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, KubeconfigError> {
        let mut config: Kubeconfig = serde_norway::from_str(text).map_err(|e| KubeconfigError {
            origin: origin.to_string(),
            reason: format!("not a valid kubeconfig: {e}"),
        })?;
        config.origin = origin.to_string();
        if config.clusters.is_empty() {
            return Err(config.error("has no clusters"));
        }
        Ok(config)
    }

    /// Reads and parses a kubeconfig file.
    pub fn read(path: &Path) -> Result<Self, KubeconfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| KubeconfigError {
            origin: origin.clone(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &origin)
    }

    fn error(&self, reason: impl Into<String>) -> KubeconfigError {
        KubeconfigError {
            origin: self.origin.clone(),
            reason: reason.into(),
        }
    }

    fn context(&self) -> Option<&Context> {
        self.contexts
            .iter()
            .find(|c| c.name == self.current_context)
            .map(|c| &c.context)
    }

    /// The current context's cluster, or the only/first one.
    pub fn cluster(&self) -> &Cluster {
        self.context()
            .and_then(|ctx| self.clusters.iter().find(|c| c.name == ctx.cluster))
            .unwrap_or(&self.clusters[0])
            .cluster_ref()
    }

    /// The current context's user, or the first one.
    pub fn user(&self) -> Result<&User, KubeconfigError> {
        self.context()
            .and_then(|ctx| self.users.iter().find(|u| u.name == ctx.user))
            .or(self.users.first())
            .map(|u| &u.user)
            .ok_or_else(|| self.error("has no users"))
    }

    /// The cluster CA as PEM (inline data, or the named file below `resolve`).
    pub fn ca_pem(&self, resolve: impl Fn(&Path) -> PathBuf) -> Result<Vec<u8>, KubeconfigError> {
        let cluster = self.cluster();
        if let Some(data) = &cluster.ca_data {
            return base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| self.error(format!("certificate-authority-data is not base64: {e}")));
        }
        if let Some(file) = &cluster.ca_file {
            return std::fs::read(resolve(file)).map_err(|e| {
                self.error(format!(
                    "cannot read certificate-authority {}: {e}",
                    file.display()
                ))
            });
        }
        Err(self.error("the cluster has no certificate-authority-data"))
    }

    /// The CA carried in the kubeconfig itself (`certificate-authority-data`) and
    /// nothing else: for a kubeconfig that came over the network (cluster-info), where a
    /// `certificate-authority: <path>` would have the agent read a local file as root
    /// (a FIFO that blocks, a huge file). kubeadm's discovery reads only the data too.
    pub fn embedded_ca_pem(&self) -> Result<Vec<u8>, KubeconfigError> {
        if self.cluster().ca_data.is_none() && self.cluster().ca_file.is_some() {
            return Err(self.error(
                "it names a certificate-authority file instead of carrying certificate-authority-data; a kubeconfig from the network may not point at files on this node",
            ));
        }
        self.ca_pem(|_| PathBuf::new())
    }

    /// The server URL, checked to be https.
    pub fn server(&self) -> Result<&str, KubeconfigError> {
        let server = self.cluster().server.as_str();
        if server.starts_with("https://") {
            Ok(server)
        } else {
            Err(self.error(format!("server {server:?} is not an https:// URL")))
        }
    }
}

impl NamedCluster {
    fn cluster_ref(&self) -> &Cluster {
        &self.cluster
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBELET_CONF: &str = r#"apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==
    server: https://10.0.0.10:6443
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: default-auth
  name: default-context
current-context: default-context
kind: Config
preferences: {}
users:
- name: default-auth
  user:
    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem
    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem
"#;

    #[test]
    fn reads_kubelet_conf_as_written_by_the_kubelet() {
        let k = Kubeconfig::parse(KUBELET_CONF, "kubelet.conf").unwrap();
        assert_eq!(k.server().unwrap(), "https://10.0.0.10:6443");
        assert_eq!(
            k.ca_pem(|p| p.to_path_buf()).unwrap(),
            b"-----BEGIN CERTIFICATE-----\n"
        );
        let user = k.user().unwrap();
        assert_eq!(
            user.client_certificate.as_deref(),
            Some(Path::new("/var/lib/kubelet/pki/kubelet-client-current.pem"))
        );
    }

    #[test]
    fn bootstrap_token_is_held_as_a_secret() {
        let text = KUBELET_CONF.replace(
            "client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem",
            "token: abcdef.0123456789abcdef",
        );
        let k = Kubeconfig::parse(&text, "bootstrap-kubelet.conf").unwrap();
        let user = k.user().unwrap();
        assert_eq!(
            user.token.as_ref().unwrap().expose(),
            "abcdef.0123456789abcdef"
        );
        assert!(!format!("{k:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn broken_kubeconfigs_are_errors_not_panics() {
        for text in [
            "",
            "[]",
            "clusters: 5",
            "clusters: []",
            "clusters:\n- name: x\n",
            ": : :",
        ] {
            let err = Kubeconfig::parse(text, "x.conf").unwrap_err();
            assert_eq!(err.origin, "x.conf");
        }
        let plain = KUBELET_CONF.replace("https://", "http://");
        assert!(Kubeconfig::parse(&plain, "x").unwrap().server().is_err());
        let bad_ca = KUBELET_CONF.replace("LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==", "nope@@@");
        assert!(
            Kubeconfig::parse(&bad_ca, "x")
                .unwrap()
                .ca_pem(|p| p.to_path_buf())
                .is_err()
        );
    }
}
