//! Loading and validating a JoinConfiguration file the way kubeadm does
//! (kubeadm/util/config, kubeadm/apis/kubeadm/validation), for the API versions the
//! configured kubeadm VERSION knows. Every problem here is a validation error (exit 3).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_norway::Value;

use super::error::{KubeadmError, aggregate, generic, validation};
use crate::fsroot::{Root, go_path_error};
use crate::klog::{self, Severity};
use crate::kubeversion::KubeVersion;
use crate::token::BootstrapToken;
use crate::{apiserver::objects::is_dns_subdomain, gotime};

/// The default CRI endpoint from v1.24 (constants.DefaultCRISocket on Linux).
pub const DEFAULT_CRI_SOCKET: &str = "unix:///var/run/containerd/containerd.sock";
/// dockershim's socket, what releases before v1.24 fall back to when they detect no CRI
/// (constants.DefaultDockerCRISocket).
pub const DOCKERSHIM_SOCKET: &str = "/var/run/dockershim.sock";
const SCHEME: &str = "k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/scheme/scheme.go:31";

/// kubeadm's waits (unscaled), with upstream defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// timeouts.discovery (v1beta4) or discovery.timeout (older): 5m.
    pub discovery: Duration,
    /// timeouts.tlsBootstrap: 5m.
    pub tls_bootstrap: Duration,
    /// timeouts.kubeletHealthCheck: 4m (used by v1.31+ behaviour).
    pub kubelet_health_check: Duration,
    /// timeouts.kubernetesAPICall: 1m.
    pub kubernetes_api_call: Duration,
    /// timeouts.etcdAPICall: 2m (constants.EtcdAPICallTimeout before v1beta4).
    pub etcd_api_call: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            discovery: Duration::from_secs(300),
            tls_bootstrap: Duration::from_secs(300),
            kubelet_health_check: Duration::from_secs(240),
            kubernetes_api_call: Duration::from_secs(60),
            etcd_api_call: Duration::from_secs(120),
        }
    }
}

/// A validated join configuration (worker nodes, bootstrap-token discovery).
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// `kubeadm.k8s.io/v1beta3` etc.
    pub api_version: String,
    /// Discovery token.
    pub token: BootstrapToken,
    /// TLS bootstrap token (defaults to the discovery token).
    pub tls_bootstrap_token: BootstrapToken,
    /// `host:port`.
    pub api_server_endpoint: String,
    /// CA pins.
    pub ca_cert_hashes: Vec<String>,
    /// Skip pinning.
    pub unsafe_skip_ca_verification: bool,
    /// Node name (defaulted to the hostname).
    pub node_name: String,
    /// CRI endpoint URL.
    pub cri_socket: String,
    /// Extra kubelet flags, in file order.
    pub kubelet_extra_args: Vec<(String, String)>,
    /// nodeRegistration.ignorePreflightErrors.
    pub ignore_preflight_errors: Vec<String>,
    /// caCertPath.
    pub ca_cert_path: String,
    /// Waits.
    pub timeouts: Timeouts,
    /// Set for a control-plane join (`controlPlane` in the file).
    pub control_plane: Option<ControlPlane>,
}

/// `controlPlane`: what makes this join a control-plane join.
#[derive(Clone, PartialEq, Eq)]
pub struct ControlPlane {
    /// `certificateKey` (64 hex digits; decrypts the kubeadm-certs Secret). Secret.
    pub certificate_key: String,
    /// `localAPIEndpoint.advertiseAddress` (defaulted to the default route's address).
    pub advertise_address: std::net::IpAddr,
    /// `localAPIEndpoint.bindPort` (6443).
    pub bind_port: u16,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("certificate_key", &"<redacted>")
            .field("advertise_address", &self.advertise_address)
            .field("bind_port", &self.bind_port)
            .finish()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawControlPlane {
    #[serde(default)]
    certificate_key: String,
    #[serde(default, rename = "localAPIEndpoint")]
    local_api_endpoint: RawApiEndpoint,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawApiEndpoint {
    #[serde(default)]
    advertise_address: String,
    #[serde(default)]
    bind_port: Option<i64>,
}

/// The address kubeadm's `ChooseHostInterface` would pick: the default route's source.
fn default_route_address() -> Option<std::net::IpAddr> {
    // connect() on UDP sends nothing; it asks the kernel for the route's source.
    let sock = std::net::UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    sock.connect(("192.0.2.1", 9)).ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

fn control_plane(v: &Value, errs: &mut Vec<String>) -> Option<ControlPlane> {
    let raw: RawControlPlane = match serde_norway::from_value(v.clone()) {
        Ok(r) => r,
        Err(e) => {
            errs.push(format!("error decoding controlPlane: {e}"));
            return None;
        }
    };
    let ep = &raw.local_api_endpoint;
    let advertise_address = if ep.advertise_address.is_empty() {
        match default_route_address() {
            Some(a) => a,
            None => {
                errs.push("unable to select an IP from default routes.".into());
                return None;
            }
        }
    } else {
        match ep.advertise_address.parse() {
            Ok(a) => a,
            Err(_) => {
                errs.push(invalid(
                    "controlPlane.localAPIEndpoint.advertiseAddress",
                    &ep.advertise_address,
                    "couldn't use as advertise address, must be a valid IP address",
                ));
                return None;
            }
        }
    };
    let bind_port = match ep.bind_port {
        None | Some(0) => 6443,
        Some(p) if (1..=65535).contains(&p) => p as u16,
        Some(p) => {
            errs.push(invalid(
                "controlPlane.localAPIEndpoint.bindPort",
                &p.to_string(),
                "must be between 1 and 65535, inclusive",
            ));
            return None;
        }
    };
    Some(ControlPlane {
        certificate_key: raw.certificate_key,
        advertise_address,
        bind_port,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawJoin {
    #[serde(default)]
    discovery: RawDiscovery,
    #[serde(default)]
    node_registration: RawNodeRegistration,
    #[serde(default)]
    ca_cert_path: Option<String>,
    #[serde(default)]
    control_plane: Option<Value>,
    #[serde(default)]
    timeouts: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDiscovery {
    #[serde(default)]
    bootstrap_token: Option<RawBootstrapToken>,
    #[serde(default)]
    file: Option<Value>,
    #[serde(default)]
    tls_bootstrap_token: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBootstrapToken {
    #[serde(default)]
    token: String,
    #[serde(default)]
    api_server_endpoint: String,
    #[serde(default)]
    ca_cert_hashes: Vec<String>,
    // Upstream's JSON name keeps "CA" capitalised (camelCase would say "Ca").
    #[serde(default, rename = "unsafeSkipCAVerification")]
    unsafe_skip_ca_verification: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNodeRegistration {
    #[serde(default)]
    name: String,
    #[serde(default)]
    cri_socket: String,
    #[serde(default)]
    kubelet_extra_args: Option<Value>,
    #[serde(default)]
    ignore_preflight_errors: Vec<String>,
}

/// Which `kubeadm.k8s.io` versions this kubeadm version decodes.
fn check_api_version(version: &str, kind: &str, kv: KubeVersion) -> Result<(), String> {
    let old = |gv: &str, use_version: &str| {
        format!(
            "your configuration file uses an old API spec: \"kubeadm.k8s.io/{gv}\". Please use kubeadm {use_version} instead and run 'kubeadm config migrate --old-config old.yaml --new-config new.yaml', which will write the new, similar spec using a newer API version."
        )
    };
    let unregistered = || {
        format!(
            "no kind {kind:?} is registered for version \"kubeadm.k8s.io/{version}\" in scheme {SCHEME:?}"
        )
    };
    match version {
        "v1alpha1" => Err(old(version, "v1.11")),
        "v1alpha2" => Err(old(version, "v1.12")),
        "v1alpha3" => Err(old(version, "v1.14")),
        "v1beta1" => Err(old(version, "v1.15")),
        // v1beta2 became read-only in 1.22 and was removed in 1.27.
        "v1beta2" if kv.at_least(1, 27) => Err(old(version, "v1.22")),
        "v1beta2" => Ok(()),
        "v1beta3" if kv.at_least(1, 22) => Ok(()),
        "v1beta4" if kv.at_least(1, 31) => Ok(()),
        _ => Err(unregistered()),
    }
}

/// Splits a multi-document YAML stream.
fn documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else if let Some(last) = docs.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    docs.into_iter().filter(|d| !d.trim().is_empty()).collect()
}

/// Reads and validates `path` (a node path). `node_name_flag` is `--node-name`.
pub fn load(
    root: &Root,
    path: &str,
    kv: KubeVersion,
    node_name_flag: Option<&str>,
    hostname: &str,
) -> Result<JoinConfig, KubeadmError> {
    let text = std::fs::read_to_string(root.path(path)).map_err(|e| {
        validation(format!(
            "unable to read config from {path:?} : {}",
            go_path_error("open", path, &e)
        ))
    })?;
    let mut cfg = parse(&text, kv, node_name_flag, hostname)?;
    if cfg.cri_socket.is_empty() {
        cfg.cri_socket = detect_cri_socket(root).map_err(generic)?;
    }
    Ok(cfg)
}

/// `DetectCRISocket` before v1.24 (util/runtime/runtime.go), for an empty criSocket:
/// Docker's socket means dockershim; else containerd's, then CRI-O's; none means
/// dockershim; several is an error. Paths without a URL scheme, as those releases use.
pub fn detect_cri_socket(root: &Root) -> Result<String, String> {
    use std::os::unix::fs::FileTypeExt;
    let is_socket =
        |p: &str| std::fs::metadata(root.path(p)).is_ok_and(|m| m.file_type().is_socket());
    let mut found = Vec::new();
    if is_socket("/var/run/docker.sock") {
        found.push(DOCKERSHIM_SOCKET);
    } else if is_socket("/run/containerd/containerd.sock") {
        found.push("/run/containerd/containerd.sock");
    }
    if is_socket("/var/run/crio/crio.sock") {
        found.push("/var/run/crio/crio.sock");
    }
    match found.as_slice() {
        [] => Ok(DOCKERSHIM_SOCKET.to_owned()),
        [one] => Ok((*one).to_owned()),
        many => Err(format!(
            "Found multiple CRI sockets, please use --cri-socket to select one: {}",
            many.join(", ")
        )),
    }
}

/// Parses and validates JoinConfiguration YAML.
pub fn parse(
    text: &str,
    kv: KubeVersion,
    node_name_flag: Option<&str>,
    hostname: &str,
) -> Result<JoinConfig, KubeadmError> {
    let mut found: Option<(String, Value)> = None;
    for doc in documents(text) {
        let value: Value = serde_norway::from_str(&doc)
            .map_err(|e| validation(format!("error converting YAML to JSON: yaml: {e}")))?;
        if value.is_null() {
            continue;
        }
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let (group, version) = api_version
            .rsplit_once('/')
            .unwrap_or(("", api_version.as_str()));
        if api_version.is_empty() || kind.is_empty() {
            return Err(validation(format!(
                "invalid configuration for GroupVersionKind {group}/{version}, Kind={kind}: kind and apiVersion is mandatory information that must be specified"
            )));
        }
        if group != "kubeadm.k8s.io" {
            klog::printf(
                Severity::Warning,
                "common.go:206",
                &format!(
                    "[config] WARNING: Ignored YAML document with GroupVersionKind {group}/{version}, Kind={kind}"
                ),
            );
            continue;
        }
        check_api_version(version, &kind, kv).map_err(validation)?;
        match kind.as_str() {
            "JoinConfiguration" => found = Some((api_version.clone(), value)),
            "InitConfiguration"
            | "ClusterConfiguration"
            | "ResetConfiguration"
            | "UpgradeConfiguration" => {
                klog::printf(
                    Severity::Warning,
                    "common.go:206",
                    &format!(
                        "[config] WARNING: Ignored YAML document with GroupVersionKind {group}/{version}, Kind={kind}"
                    ),
                );
            }
            other => {
                return Err(validation(format!(
                    "no kind {other:?} is registered for version {api_version:?} in scheme {SCHEME:?}"
                )));
            }
        }
    }
    let (api_version, value) =
        found.ok_or_else(|| validation("no JoinConfiguration kind was found in the YAML file"))?;
    let raw: RawJoin = serde_norway::from_value(value)
        .map_err(|e| validation(format!("error decoding JoinConfiguration: {e}")))?;
    validate(raw, &api_version, kv, node_name_flag, hostname)
}

fn invalid(field: &str, value: &str, detail: &str) -> String {
    format!("{field}: Invalid value: {value:?}: {detail}")
}

/// Shows a token-shaped value in an error only when it is empty: a near-miss token is
/// still mostly a secret.
fn token_repr(t: &str) -> &str {
    if t.is_empty() { "" } else { "<redacted>" }
}

fn extra_args(v: Option<&Value>, v1beta4: bool) -> Result<Vec<(String, String)>, String> {
    let to_s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    };
    match (v, v1beta4) {
        (None | Some(Value::Null), _) => Ok(vec![]),
        (Some(Value::Mapping(m)), false) => Ok(m.iter().map(|(k, v)| (to_s(k), to_s(v))).collect()),
        (Some(Value::Sequence(items)), true) => items
            .iter()
            .map(|i| match (i.get("name"), i.get("value")) {
                (Some(n), v) => Ok((to_s(n), v.map(to_s).unwrap_or_default())),
                _ => Err("nodeRegistration.kubeletExtraArgs: each item needs a name".to_owned()),
            })
            .collect(),
        (Some(_), false) => Err("json: cannot unmarshal array into Go struct field NodeRegistrationOptions.nodeRegistration.kubeletExtraArgs of type map[string]string".into()),
        (Some(_), true) => Err("json: cannot unmarshal object into Go struct field NodeRegistrationOptions.nodeRegistration.kubeletExtraArgs of type []v1beta4.Arg".into()),
    }
}

fn validate(
    raw: RawJoin,
    api_version: &str,
    kv: KubeVersion,
    node_name_flag: Option<&str>,
    hostname: &str,
) -> Result<JoinConfig, KubeadmError> {
    let v1beta4 = api_version.ends_with("/v1beta4");
    let mut errs = Vec::new();
    let d = &raw.discovery;
    match (&d.bootstrap_token, &d.file) {
        (None, None) => errs.push(invalid(
            "discovery",
            "",
            "bootstrapToken or file must be set",
        )),
        (Some(_), Some(_)) => errs.push(invalid(
            "discovery",
            "",
            "bootstrapToken and file cannot both be set",
        )),
        _ => {}
    }
    let bt = d.bootstrap_token.as_ref();
    let token_str = bt.map(|b| b.token.clone()).unwrap_or_default();
    // SetDefaults_Discovery: the TLS bootstrap token defaults to the discovery token.
    let tls_str = d
        .tls_bootstrap_token
        .clone()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| token_str.clone());
    if let Some(b) = bt {
        if b.api_server_endpoint.is_empty() {
            errs.push(
                "discovery.bootstrapToken: Required value: APIServerEndpoint is not set".into(),
            );
        }
        if b.ca_cert_hashes.is_empty() && !b.unsafe_skip_ca_verification {
            errs.push(invalid("discovery.bootstrapToken", "", "using token-based discovery without caCertHashes can be unsafe. Set unsafeSkipCAVerification as true in your kubeadm config file or pass --discovery-token-unsafe-skip-ca-verification flag to continue"));
        }
        if BootstrapToken::parse(&b.token).is_none() {
            errs.push(invalid(
                "discovery.bootstrapToken.token",
                token_repr(&b.token),
                "the bootstrap token is invalid",
            ));
        }
        if !b.api_server_endpoint.is_empty() && split_host_port(&b.api_server_endpoint).is_none() {
            errs.push(invalid(
                "discovery.bootstrapToken.apiServerEndpoints",
                &b.api_server_endpoint,
                &format!("address {}: missing port in address", b.api_server_endpoint),
            ));
        }
        if BootstrapToken::parse(&tls_str).is_none() {
            errs.push(invalid(
                "discovery.tlsBootstrapToken",
                token_repr(&tls_str),
                "the bootstrap token is invalid",
            ));
        }
    }

    let nr = &raw.node_registration;
    let node_name = match node_name_flag {
        Some(n) if !n.is_empty() => n.to_owned(),
        _ if !nr.name.is_empty() => nr.name.clone(),
        _ => hostname.trim().to_lowercase(),
    };
    if node_name.is_empty() {
        errs.push("nodeRegistration: Required value: --node-name or .nodeRegistration.name in the config file is a required value. It seems like this value couldn't be automatically detected in your environment, please specify the desired value using the CLI or config file.".into());
    } else if !is_dns_subdomain(&node_name) {
        errs.push(invalid("nodeRegistration.name", &node_name, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"));
    }
    let cri_socket = normalize_cri_socket(&nr.cri_socket, kv);
    // Before v1.24 a bare absolute path is the usual form, and an empty one is detected
    // (in `load`, which can look at the node).
    let bare_ok = !kv.at_least(1, 24) && (cri_socket.is_empty() || cri_socket.starts_with('/'));
    match cri_socket.split_once("://") {
        _ if bare_ok => {}
        Some(("unix", p)) if p.starts_with('/') => {}
        Some(("unix", _)) => errs.push(invalid(
            "nodeRegistration.criSocket",
            &cri_socket,
            "path is not absolute",
        )),
        Some((scheme, _)) => errs.push(invalid(
            "nodeRegistration.criSocket",
            &cri_socket,
            &format!("URL scheme {scheme} is not supported"),
        )),
        None => errs.push(invalid(
            "nodeRegistration.criSocket",
            &cri_socket,
            "path is not absolute",
        )),
    }
    let kubelet_extra_args =
        extra_args(nr.kubelet_extra_args.as_ref(), v1beta4).unwrap_or_else(|e| {
            errs.push(e);
            vec![]
        });
    let ca_cert_path = raw
        .ca_cert_path
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/etc/kubernetes/pki/ca.crt".into());
    if !ca_cert_path.starts_with('/') || !ca_cert_path.ends_with(".crt") {
        errs.push(invalid(
            "caCertPath",
            &ca_cert_path,
            "the ca certificate path must be an absolute path",
        ));
    }

    let mut timeouts = Timeouts::default();
    if v1beta4 {
        for (key, value) in raw.timeouts.iter().flatten() {
            let slot = match key.as_str() {
                "discovery" => &mut timeouts.discovery,
                "tlsBootstrap" => &mut timeouts.tls_bootstrap,
                "kubeletHealthCheck" => &mut timeouts.kubelet_health_check,
                "kubernetesAPICall" => &mut timeouts.kubernetes_api_call,
                "etcdAPICall" => &mut timeouts.etcd_api_call,
                // controlPlaneComponentHealthCheck, upgradeManifests: unused here.
                _ => continue,
            };
            match gotime::parse(value) {
                Ok(d) => *slot = d,
                Err(e) => errs.push(invalid(&format!("timeouts.{key}"), value, &e.to_string())),
            }
        }
    } else if let Some(t) = d.timeout.as_deref().filter(|t| !t.is_empty()) {
        match gotime::parse(t) {
            Ok(dur) => timeouts.discovery = dur,
            Err(e) => errs.push(invalid("discovery.timeout", t, &e.to_string())),
        }
    }

    let control_plane = raw
        .control_plane
        .as_ref()
        .filter(|v| !v.is_null())
        .and_then(|v| control_plane(v, &mut errs));
    if !errs.is_empty() {
        return Err(validation(aggregate(&errs)));
    }
    if d.file.is_some() {
        return Err(validation(
            "fake-kubeadm: discovery.file is not implemented; use discovery.bootstrapToken",
        ));
    }
    let b = bt.ok_or_else(|| validation("discovery: bootstrapToken must be set"))?;
    let token = BootstrapToken::parse(&b.token).ok_or_else(|| {
        validation("discovery.bootstrapToken.token: the bootstrap token is invalid")
    })?;
    let tls_bootstrap_token = BootstrapToken::parse(&tls_str)
        .ok_or_else(|| validation("discovery.tlsBootstrapToken: the bootstrap token is invalid"))?;
    Ok(JoinConfig {
        api_version: api_version.to_owned(),
        token,
        tls_bootstrap_token,
        api_server_endpoint: b.api_server_endpoint.clone(),
        ca_cert_hashes: b.ca_cert_hashes.clone(),
        unsafe_skip_ca_verification: b.unsafe_skip_ca_verification,
        node_name,
        cri_socket,
        kubelet_extra_args,
        ignore_preflight_errors: nr.ignore_preflight_errors.clone(),
        ca_cert_path,
        timeouts,
        control_plane,
    })
}

/// From v1.24 an empty socket gets the default and a bare path gets `unix://` with
/// upstream's warning; earlier releases keep what the file says.
fn normalize_cri_socket(s: &str, kv: KubeVersion) -> String {
    if !kv.at_least(1, 24) {
        return s.to_owned();
    }
    if s.is_empty() {
        return DEFAULT_CRI_SOCKET.to_owned();
    }
    if s.contains("://") {
        return s.to_owned();
    }
    klog::printf(
        Severity::Warning,
        "initconfiguration.go:125",
        &format!(
            "Usage of CRI endpoints without URL scheme is deprecated and can cause kubelet errors in the future. Automatically prepending scheme \"unix\" to the \"criSocket\" with value {s:?}. Please update your configuration!"
        ),
    );
    format!("unix://{s}")
}

/// Go's `net.SplitHostPort`, enough for `host:port` and `[v6]:port`.
pub fn split_host_port(ep: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = ep.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        (h, p)
    } else {
        let (h, p) = ep.rsplit_once(':')?;
        if h.contains(':') {
            return None;
        }
        (h, p)
    };
    Some((host.to_owned(), port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> KubeVersion {
        KubeVersion::parse(s).unwrap()
    }

    const GOOD: &str = "apiVersion: kubeadm.k8s.io/v1beta3
kind: JoinConfiguration
discovery:
  bootstrapToken:
    token: abcdef.0123456789abcdef
    apiServerEndpoint: 127.0.0.1:6443
    caCertHashes: [\"sha256:00\"]
nodeRegistration:
  name: node-1
  kubeletExtraArgs:
    node-ip: 10.0.0.5
";

    fn err(text: &str, ver: &str) -> KubeadmError {
        parse(text, v(ver), None, "host").unwrap_err()
    }

    #[test]
    fn parses_v1beta3() {
        let c = parse(GOOD, v("v1.29.7"), None, "Host").unwrap();
        assert_eq!(c.token.id(), "abcdef");
        assert_eq!(c.tls_bootstrap_token, c.token);
        assert_eq!(c.node_name, "node-1");
        assert_eq!(c.cri_socket, DEFAULT_CRI_SOCKET);
        assert_eq!(
            c.kubelet_extra_args,
            vec![("node-ip".to_owned(), "10.0.0.5".to_owned())]
        );
        assert_eq!(c.timeouts, Timeouts::default());
        let c = parse(GOOD, v("v1.29.7"), Some("other"), "Host").unwrap();
        assert_eq!(c.node_name, "other");
    }

    #[test]
    fn cri_socket_before_v1_24_is_kept_or_detected_without_a_scheme() {
        let text = GOOD.replace("v1beta3", "v1beta2").replace(
            "  name: node-1\n",
            "  name: node-1\n  criSocket: /run/containerd/containerd.sock\n",
        );
        let c = parse(&text, v("v1.20.2"), None, "h").unwrap();
        assert_eq!(c.cri_socket, "/run/containerd/containerd.sock");
        // v1.24 on: the scheme is prepended.
        let text3 = GOOD.replace(
            "  name: node-1\n",
            "  name: node-1\n  criSocket: /run/containerd/containerd.sock\n",
        );
        let c = parse(&text3, v("v1.29.7"), None, "h").unwrap();
        assert_eq!(c.cri_socket, "unix:///run/containerd/containerd.sock");
        // Empty before v1.24: detected on the node.
        let c = parse(&GOOD.replace("v1beta3", "v1beta2"), v("v1.20.2"), None, "h").unwrap();
        assert_eq!(c.cri_socket, "");
        let dir = tempfile::tempdir().unwrap();
        let root = Root::at(dir.path());
        assert_eq!(detect_cri_socket(&root).unwrap(), DOCKERSHIM_SOCKET);
        std::fs::create_dir_all(dir.path().join("run/containerd")).unwrap();
        let _l = std::os::unix::net::UnixListener::bind(
            dir.path().join("run/containerd/containerd.sock"),
        )
        .unwrap();
        assert_eq!(
            detect_cri_socket(&root).unwrap(),
            "/run/containerd/containerd.sock"
        );
        std::fs::create_dir_all(dir.path().join("var/run/crio")).unwrap();
        let _m = std::os::unix::net::UnixListener::bind(dir.path().join("var/run/crio/crio.sock"))
            .unwrap();
        assert!(
            detect_cri_socket(&root)
                .unwrap_err()
                .starts_with("Found multiple CRI sockets")
        );
    }

    #[test]
    fn hostname_default_is_lowercased() {
        let text = GOOD.replace("  name: node-1\n", "");
        assert_eq!(
            parse(&text, v("v1.29.7"), None, "MyHost")
                .unwrap()
                .node_name,
            "myhost"
        );
    }

    #[test]
    fn v1beta4_timeouts_and_version_gates() {
        let text = GOOD.replace("v1beta3", "v1beta4").replace(
            "    node-ip: 10.0.0.5\n",
            "  - name: node-ip\n    value: 10.0.0.5\n",
        ) + "timeouts:\n  discovery: 1m30s\n  tlsBootstrap: 2m\n  kubeletHealthCheck: 10s\n";
        let c = parse(&text, v("v1.31.0"), None, "h").unwrap();
        assert_eq!(c.timeouts.discovery, Duration::from_secs(90));
        assert_eq!(c.timeouts.tls_bootstrap, Duration::from_secs(120));
        assert_eq!(c.timeouts.kubelet_health_check, Duration::from_secs(10));
        let e = parse(&text, v("v1.29.7"), None, "h").unwrap_err();
        assert_eq!(e.exit_code(), 3);
        assert_eq!(
            e.message(),
            format!(
                "no kind \"JoinConfiguration\" is registered for version \"kubeadm.k8s.io/v1beta4\" in scheme \"{SCHEME}\""
            )
        );
        let e = err(&GOOD.replace("v1beta3", "v1beta2"), "v1.29.7");
        assert!(
            e.message()
                .contains("old API spec: \"kubeadm.k8s.io/v1beta2\". Please use kubeadm v1.22")
        );
        assert!(parse(&GOOD.replace("v1beta3", "v1beta2"), v("v1.25.0"), None, "h").is_ok());
        assert!(
            err(&GOOD.replace("v1beta3", "v1beta9"), "v1.29.7")
                .message()
                .contains("no kind \"JoinConfiguration\"")
        );
    }

    #[test]
    fn validation_errors_name_the_problem() {
        let e = err(
            &GOOD.replace("kind: JoinConfiguration", "kind: InitConfiguration"),
            "v1.29.7",
        );
        assert_eq!(
            e.message(),
            "no JoinConfiguration kind was found in the YAML file"
        );
        let e = err(
            &GOOD.replace("kind: JoinConfiguration", "kind: Banana"),
            "v1.29.7",
        );
        assert!(e.message().starts_with("no kind \"Banana\" is registered"));
        let e = err(
            &GOOD.replace("abcdef.0123456789abcdef", "abcdef.SECRETSECRET"),
            "v1.29.7",
        );
        assert_eq!(e.exit_code(), 3);
        assert_eq!(
            e.message(),
            "[discovery.bootstrapToken.token: Invalid value: \"<redacted>\": the bootstrap token is invalid, discovery.tlsBootstrapToken: Invalid value: \"<redacted>\": the bootstrap token is invalid]"
        );
        assert!(!e.message().contains("SECRET"));
        let e = err(
            &GOOD.replace("    token: abcdef.0123456789abcdef\n", ""),
            "v1.29.7",
        );
        assert!(e.message().contains(
            "discovery.bootstrapToken.token: Invalid value: \"\": the bootstrap token is invalid"
        ));
        let e = err(
            &GOOD.replace("    caCertHashes: [\"sha256:00\"]\n", ""),
            "v1.29.7",
        );
        assert!(e.message().contains("without caCertHashes can be unsafe"));
        let e = err(&GOOD.replace("127.0.0.1:6443", "127.0.0.1"), "v1.29.7");
        assert!(e.message().contains("missing port in address"));
        let e = err(&GOOD.replace("name: node-1", "name: Node_1"), "v1.29.7");
        assert!(
            e.message()
                .starts_with("nodeRegistration.name: Invalid value: \"Node_1\"")
        );
        let e = err("kind: JoinConfiguration\n", "v1.29.7");
        assert!(e.message().contains("kind and apiVersion is mandatory"));
        let e = err(
            &format!("{GOOD}controlPlane:\n  localAPIEndpoint:\n    advertiseAddress: nope\n"),
            "v1.29.7",
        );
        assert!(
            e.message()
                .contains("controlPlane.localAPIEndpoint.advertiseAddress")
        );
    }

    #[test]
    fn control_plane_section() {
        let text = format!(
            "{GOOD}controlPlane:\n  certificateKey: {}\n  localAPIEndpoint:\n    advertiseAddress: 10.0.0.12\n    bindPort: 6443\n",
            "ab".repeat(32)
        );
        let c = parse(&text, v("v1.29.7"), None, "h").unwrap();
        let cp = c.control_plane.unwrap();
        assert_eq!(cp.advertise_address.to_string(), "10.0.0.12");
        assert_eq!(cp.bind_port, 6443);
        assert!(!format!("{cp:?}").contains("abab"));
        assert!(
            parse(GOOD, v("v1.29.7"), None, "h")
                .unwrap()
                .control_plane
                .is_none()
        );
    }

    #[test]
    fn other_groups_are_ignored() {
        let text = format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n---\n{GOOD}"
        );
        assert!(parse(&text, v("v1.29.7"), None, "h").is_ok());
    }

    #[test]
    fn host_port() {
        assert_eq!(
            split_host_port("127.0.0.1:6443"),
            Some(("127.0.0.1".into(), 6443))
        );
        assert_eq!(split_host_port("[::1]:6443"), Some(("::1".into(), 6443)));
        assert_eq!(split_host_port("host"), None);
    }
}
