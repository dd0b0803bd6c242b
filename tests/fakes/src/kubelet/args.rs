//! kubelet's command line: the upstream flags the drop-in and kubeadm-flags.env pass, Go
//! pflag style. Unknown flags are warned about and ignored, so a newer drop-in or
//! kubeletExtraArgs never crash-loops the fake for the wrong reason.

use crate::klog::{self, Severity};

/// Flags the fake uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    /// `--bootstrap-kubeconfig`.
    pub bootstrap_kubeconfig: Option<String>,
    /// `--kubeconfig`.
    pub kubeconfig: Option<String>,
    /// `--config`.
    pub config: Option<String>,
    /// `--container-runtime-endpoint`.
    pub container_runtime_endpoint: Option<String>,
    /// `--pod-infra-container-image` (accepted, unused).
    pub pod_infra_container_image: Option<String>,
    /// `--node-ip`.
    pub node_ip: Option<String>,
    /// `--hostname-override`.
    pub hostname_override: Option<String>,
    /// `--address` (the kubelet API's bind address).
    pub address: Option<String>,
    /// `--cert-dir`.
    pub cert_dir: Option<String>,
    /// `--version`.
    pub version: bool,
    /// `--v` / `-v`: klog verbosity (lines at `V(n)` show when n <= it).
    pub verbosity: u32,
    /// Warnings about ignored arguments, logged once klog is "up".
    pub ignored: Vec<String>,
}

const VALUE_FLAGS: &[&str] = &[
    "bootstrap-kubeconfig",
    "kubeconfig",
    "config",
    "container-runtime-endpoint",
    "pod-infra-container-image",
    "node-ip",
    "hostname-override",
    "address",
    "cert-dir",
    "v",
];

/// Parses argv (without the program name).
pub fn parse(argv: &[String]) -> Flags {
    let mut f = Flags::default();
    let mut i = 0;
    while i < argv.len() {
        let tok = &argv[i];
        i += 1;
        let Some(body) = tok.strip_prefix("--").or_else(|| tok.strip_prefix('-')) else {
            f.ignored
                .push(format!("ignoring positional argument {tok:?}"));
            continue;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (body, None),
        };
        if name == "version" {
            f.version = inline.as_deref() != Some("false");
            continue;
        }
        let known = VALUE_FLAGS.contains(&name);
        // A separate value is the next word unless that word is itself a flag.
        let value = match inline {
            Some(v) => Some(v),
            None if i < argv.len() && !argv[i].starts_with('-') => {
                i += 1;
                Some(argv[i - 1].clone())
            }
            None => None,
        };
        if !known {
            f.ignored.push(format!("unknown flag --{name} ignored"));
            continue;
        }
        let Some(value) = value else {
            f.ignored
                .push(format!("flag --{name} needs an argument; ignored"));
            continue;
        };
        let slot = match name {
            "bootstrap-kubeconfig" => &mut f.bootstrap_kubeconfig,
            "kubeconfig" => &mut f.kubeconfig,
            "config" => &mut f.config,
            "container-runtime-endpoint" => &mut f.container_runtime_endpoint,
            "pod-infra-container-image" => &mut f.pod_infra_container_image,
            "node-ip" => &mut f.node_ip,
            "hostname-override" => &mut f.hostname_override,
            "address" => &mut f.address,
            "cert-dir" => &mut f.cert_dir,
            _ => {
                // --v
                match value.parse() {
                    Ok(n) => f.verbosity = n,
                    Err(_) => f
                        .ignored
                        .push(format!("invalid value {value:?} for --v; ignored")),
                }
                continue;
            }
        };
        *slot = Some(value).filter(|v| !v.is_empty());
    }
    f
}

impl Flags {
    /// Logs the ignored arguments as warnings.
    pub fn warn_ignored(&self) {
        for w in &self.ignored {
            klog::log(
                Severity::Warning,
                "flags.go:64",
                "Ignoring command-line argument",
                &[("reason", w)],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_drop_in_command_line() {
        let f = parse(&v(&[
            "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
            "--kubeconfig=/etc/kubernetes/kubelet.conf",
            "--config=/var/lib/kubelet/config.yaml",
            "--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock",
            "--pod-infra-container-image=registry.k8s.io/pause:3.9",
            "--node-ip",
            "10.0.0.5",
            "--fail-swap-on=false",
            "--max-pods",
            "50",
        ]));
        assert_eq!(f.config.as_deref(), Some("/var/lib/kubelet/config.yaml"));
        assert_eq!(f.node_ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(f.ignored.len(), 2);
        assert!(!f.version);
        assert!(parse(&v(&["--version"])).version);
        assert_eq!(parse(&v(&["--v=2"])).verbosity, 2);
        assert_eq!(parse(&v(&["-v", "4"])).verbosity, 4);
    }
}
