//! The JoinConfiguration handed to kubeadm with `--config`: the token travels in this
//! 0600 file, never on a command line (where /proc/PID/cmdline shows it to everyone).
//!
//! API versions by kubeadm release: v1beta2 before 1.22, v1beta3 up to 1.30, v1beta4
//! from 1.31 (v1beta4 moves discovery's timeout into a `timeouts` block, and turns
//! `kubeletExtraArgs` from a map into a list of name/value pairs). `patches` and
//! `skipPhases` exist from v1beta3 on.

use super::version::KubeadmVersion;
use crate::config::{CaPin, Endpoint, Registration};
use crate::secret::BootstrapToken;
use serde::Serialize;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

/// `kubeadm.k8s.io/<version>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigApi {
    /// kubeadm 1.15 to 1.21.
    V1beta2,
    /// kubeadm 1.22 to 1.30.
    V1beta3,
    /// kubeadm 1.31 and later.
    V1beta4,
}

impl ConfigApi {
    /// The API kubeadm `version` reads.
    pub fn for_version(v: KubeadmVersion) -> Self {
        match (v.major, v.minor) {
            (1, m) if m < 22 => ConfigApi::V1beta2,
            (1, m) if m <= 30 => ConfigApi::V1beta3,
            _ => ConfigApi::V1beta4,
        }
    }

    /// `kubeadm.k8s.io/v1beta3`.
    pub fn api_version(self) -> &'static str {
        match self {
            ConfigApi::V1beta2 => "kubeadm.k8s.io/v1beta2",
            ConfigApi::V1beta3 => "kubeadm.k8s.io/v1beta3",
            ConfigApi::V1beta4 => "kubeadm.k8s.io/v1beta4",
        }
    }
}

/// What goes into the JoinConfiguration.
#[derive(Debug, Clone)]
pub struct JoinConfigInput<'a> {
    /// API server.
    pub api_server: &'a Endpoint,
    /// Bootstrap token (discovery and TLS bootstrap).
    pub token: &'a BootstrapToken,
    /// CA pins.
    pub ca_pins: &'a [CaPin],
    /// Only when no pins are configured.
    pub unsafe_skip_ca_verification: bool,
    /// Node name.
    pub node_name: &'a str,
    /// containerd's socket path.
    pub cri_socket: &'a Path,
    /// kubeadm's own discovery timeout.
    pub discovery_timeout: Duration,
    /// kubeadm's TLS bootstrap timeout (v1beta4 only; earlier versions fix it at 5m).
    pub tls_bootstrap_timeout: Duration,
    /// Set for a control-plane join.
    pub control_plane: Option<ControlPlaneInput<'a>>,
    /// Labels, taints, kubelet flags, ignored preflight errors, patches, skipped phases.
    pub registration: &'a Registration,
}

/// A setting this kubeadm's JoinConfiguration cannot express.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "join.{key} needs kubeadm 1.22 or later (JoinConfiguration kubeadm.k8s.io/v1beta3), and this kubeadm reads {}", api.api_version()
)]
pub struct Unsupported {
    /// The setting.
    pub key: &'static str,
    /// The API this kubeadm reads.
    pub api: ConfigApi,
}

/// The `controlPlane` section of a control-plane join.
#[derive(Debug, Clone)]
pub struct ControlPlaneInput<'a> {
    /// Decrypts the certificates kubeadm downloads.
    pub certificate_key: &'a crate::secret::Secret,
    /// The address to advertise; `None` lets kubeadm choose.
    pub advertise_address: Option<std::net::IpAddr>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JoinConfiguration {
    api_version: &'static str,
    kind: &'static str,
    discovery: Discovery,
    node_registration: NodeRegistration,
    #[serde(skip_serializing_if = "Option::is_none")]
    control_plane: Option<ControlPlane>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeouts: Option<Timeouts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patches: Option<Patches>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    skip_phases: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Patches {
    directory: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ControlPlane {
    certificate_key: String,
    #[serde(rename = "localAPIEndpoint", skip_serializing_if = "Option::is_none")]
    local_api_endpoint: Option<LocalApiEndpoint>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LocalApiEndpoint {
    advertise_address: String,
    bind_port: u16,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Discovery {
    bootstrap_token: BootstrapTokenDiscovery,
    tls_bootstrap_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BootstrapTokenDiscovery {
    api_server_endpoint: String,
    token: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ca_cert_hashes: Vec<String>,
    #[serde(rename = "unsafeSkipCAVerification")]
    unsafe_skip_ca_verification: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeRegistration {
    name: String,
    cri_socket: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    taints: Option<Vec<TaintYaml>>,
    #[serde(skip_serializing_if = "KubeletArgs::is_empty")]
    kubelet_extra_args: KubeletArgs,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ignore_preflight_errors: Vec<String>,
}

#[derive(Serialize)]
struct TaintYaml {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    effect: String,
}

/// A map up to v1beta3, a list of name/value pairs in v1beta4.
#[derive(Serialize)]
#[serde(untagged)]
enum KubeletArgs {
    Map(std::collections::BTreeMap<String, String>),
    List(Vec<Arg>),
}

impl KubeletArgs {
    fn is_empty(&self) -> bool {
        match self {
            KubeletArgs::Map(m) => m.is_empty(),
            KubeletArgs::List(l) => l.is_empty(),
        }
    }
}

#[derive(Serialize)]
struct Arg {
    name: String,
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Timeouts {
    discovery: String,
    tls_bootstrap: String,
}

/// A Go duration string kubeadm's metav1.Duration accepts.
fn go_duration(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

/// The JoinConfiguration YAML. It contains the token: write it only with `write_private`.
pub fn render(api: ConfigApi, input: &JoinConfigInput<'_>) -> Result<String, Unsupported> {
    let token = input.token.expose_full();
    let socket = input.cri_socket.display().to_string();
    let reg = input.registration;
    if api == ConfigApi::V1beta2 {
        if reg.patches.is_some() {
            return Err(Unsupported {
                key: "patches",
                api,
            });
        }
        if !reg.skip_phases.is_empty() {
            return Err(Unsupported {
                key: "skip_phases",
                api,
            });
        }
    }
    // Labels reach the Node through the kubelet, which sets them when it registers.
    let mut kubelet_args = reg.kubelet_extra_args.clone();
    if !reg.labels.is_empty() {
        let labels: Vec<String> = reg.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        kubelet_args.insert("node-labels".into(), labels.join(","));
    }
    let kubelet_extra_args = match api {
        ConfigApi::V1beta4 => KubeletArgs::List(
            kubelet_args
                .into_iter()
                .map(|(name, value)| Arg { name, value })
                .collect(),
        ),
        _ => KubeletArgs::Map(kubelet_args),
    };
    let config = JoinConfiguration {
        api_version: api.api_version(),
        kind: "JoinConfiguration",
        discovery: Discovery {
            bootstrap_token: BootstrapTokenDiscovery {
                api_server_endpoint: input.api_server.to_string(),
                token: token.clone(),
                ca_cert_hashes: input.ca_pins.iter().map(|p| p.0.clone()).collect(),
                unsafe_skip_ca_verification: input.ca_pins.is_empty()
                    && input.unsafe_skip_ca_verification,
            },
            tls_bootstrap_token: token,
            timeout: (api != ConfigApi::V1beta4).then(|| go_duration(input.discovery_timeout)),
        },
        node_registration: NodeRegistration {
            name: input.node_name.to_string(),
            // v1beta3 deprecated bare paths for the CRI socket; a URL works from 1.22 on.
            cri_socket: match api {
                ConfigApi::V1beta2 => socket,
                _ => format!("unix://{socket}"),
            },
            taints: reg.taints.as_ref().map(|taints| {
                taints
                    .iter()
                    .map(|t| TaintYaml {
                        key: t.key.clone(),
                        value: t.value.clone(),
                        effect: t.effect.clone(),
                    })
                    .collect()
            }),
            kubelet_extra_args,
            // kubeadm refuses "all" in a configuration file: that one goes on the
            // command line (kubeadm::join_args).
            ignore_preflight_errors: if reg.ignores_all_preflight_errors() {
                Vec::new()
            } else {
                reg.ignore_preflight_errors.clone()
            },
        },
        control_plane: input.control_plane.as_ref().map(|cp| ControlPlane {
            certificate_key: cp.certificate_key.expose().to_string(),
            local_api_endpoint: cp.advertise_address.map(|a| LocalApiEndpoint {
                advertise_address: a.to_string(),
                bind_port: 6443,
            }),
        }),
        timeouts: (api == ConfigApi::V1beta4).then(|| Timeouts {
            discovery: go_duration(input.discovery_timeout),
            tls_bootstrap: go_duration(input.tls_bootstrap_timeout),
        }),
        patches: reg.patches.as_ref().map(|d| Patches {
            directory: d.display().to_string(),
        }),
        skip_phases: reg.skip_phases.clone(),
    };
    Ok(serde_norway::to_string(&config).expect("the JoinConfiguration serializes"))
}

/// The flags that go on kubeadm's command line next to `--config`: only
/// `--ignore-preflight-errors=all`, which kubeadm refuses in a configuration file.
/// `phase` is the `join phase` being run, if any: only preflight takes the flag.
pub fn extra_flags(reg: &Registration, phase: Option<&str>) -> Vec<String> {
    let takes_it = phase.is_none_or(|p| p == "preflight");
    if reg.ignores_all_preflight_errors() && takes_it {
        vec!["--ignore-preflight-errors=all".into()]
    } else {
        Vec::new()
    }
}

/// Writes `text` to `path` with mode 0600 in a 0700 directory, replacing any old file.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    // Remove first: an existing file keeps its mode through open(O_TRUNC).
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests;
