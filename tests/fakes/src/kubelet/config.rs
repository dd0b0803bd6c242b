//! The KubeletConfiguration file (`--config`), reduced to the fields the fake acts on.

use anyhow::{Result, bail};
use serde::Deserialize;

/// The kubelet's default container runtime endpoint (v1.27+).
pub const DEFAULT_RUNTIME_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";

/// What the fake uses from config.yaml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletConfig {
    /// `rotateCertificates`: bootstrap "in the background" (kubelet.conf first).
    pub rotate_certificates: bool,
    /// `healthzBindAddress`.
    pub healthz_bind_address: String,
    /// `healthzPort`.
    pub healthz_port: u16,
    /// `address` (kubelet API, port 10250).
    pub address: String,
    /// `containerRuntimeEndpoint`.
    pub container_runtime_endpoint: String,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        Self {
            rotate_certificates: false,
            healthz_bind_address: "127.0.0.1".into(),
            healthz_port: 10248,
            address: "0.0.0.0".into(),
            container_runtime_endpoint: DEFAULT_RUNTIME_ENDPOINT.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    rotate_certificates: Option<bool>,
    #[serde(default)]
    healthz_bind_address: Option<String>,
    #[serde(default)]
    healthz_port: Option<u16>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    container_runtime_endpoint: Option<String>,
}

/// Parses config.yaml text.
pub fn parse(text: &str) -> Result<KubeletConfig> {
    let raw: Raw = serde_norway::from_str(text)?;
    if raw.kind != "KubeletConfiguration" || raw.api_version != "kubelet.config.k8s.io/v1beta1" {
        bail!(
            "no kind {:?} is registered for version {:?} in scheme \"pkg/kubelet/apis/config/scheme/scheme.go:33\"",
            raw.kind,
            raw.api_version
        );
    }
    let d = KubeletConfig::default();
    let non_empty =
        |v: Option<String>, default: String| v.filter(|s| !s.is_empty()).unwrap_or(default);
    Ok(KubeletConfig {
        rotate_certificates: raw.rotate_certificates.unwrap_or(d.rotate_certificates),
        healthz_bind_address: non_empty(raw.healthz_bind_address, d.healthz_bind_address),
        healthz_port: raw.healthz_port.unwrap_or(d.healthz_port),
        address: non_empty(raw.address, d.address),
        container_runtime_endpoint: non_empty(
            raw.container_runtime_endpoint,
            d.container_runtime_endpoint,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kubeadm_config() {
        let c = parse(crate::apiserver::objects::KUBELET_CONFIG).unwrap();
        assert!(c.rotate_certificates);
        assert_eq!(c.healthz_port, 10248);
        assert_eq!(c.container_runtime_endpoint, DEFAULT_RUNTIME_ENDPOINT);
        assert!(parse("kind: Pod\napiVersion: v1\n").is_err());
        assert!(parse(": :").is_err());
    }
}
