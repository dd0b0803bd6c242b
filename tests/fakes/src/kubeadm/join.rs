//! `kubeadm join` and `kubeadm join phase <name>`: argument checks, then the worker
//! phases preflight → kubelet-start, with discovery done lazily by whichever phase first
//! needs the cluster (as upstream's join data does).

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::args::Parsed;
use super::config::{self, JoinConfig};
use super::discovery::{self, Discovered};
use super::env::{self, HangPoint, Knobs};
use super::error::{KubeadmError, generic, validation};
use super::systemd::Systemctl;
use super::{cp, hang, kubelet_start, preflight};
use crate::fsroot::Root;
use crate::httpclient::{ApiClient, Trust};
use crate::kubeconfig::Auth;

/// Flags that may accompany `--config` (validation.ValidateMixedArguments), plus `skip-*`.
const ALLOWED_WITH_CONFIG: &[&str] = &[
    "config",
    "ignore-preflight-errors",
    "dry-run",
    "kubeconfig",
    "node-name",
    "kubeconfig-dir",
    "upload-certs",
    "print-join-command",
    "rootfs",
    "v",
    "log-file",
];

/// The join phases `kubeadm join phase` accepts (check-etcd is hidden upstream);
/// control-plane phases are no-ops on workers.
pub const PHASES: &[&str] = &[
    "preflight",
    "control-plane-prepare",
    "kubelet-start",
    "control-plane-join",
    "wait-control-plane",
];

/// One runnable step of the join workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// preflight
    Preflight,
    /// control-plane-prepare/download-certs
    DownloadCerts,
    /// control-plane-prepare/certs
    Certs,
    /// control-plane-prepare/kubeconfig
    Kubeconfig,
    /// control-plane-prepare/control-plane
    ControlPlaneManifests,
    /// check-etcd (hidden; only in a full join)
    CheckEtcd,
    /// kubelet-start
    KubeletStart,
    /// control-plane-join/etcd
    EtcdJoin,
    /// control-plane-join/update-status (deprecated no-op; removed in v1.31)
    UpdateStatus,
    /// control-plane-join/mark-control-plane
    MarkControlPlane,
    /// wait-control-plane (v1.31+)
    WaitControlPlane,
}

impl Step {
    /// The name the workflow runner prints in `error execution phase <name>`.
    pub fn name(self) -> &'static str {
        match self {
            Step::Preflight => "preflight",
            Step::DownloadCerts => "control-plane-prepare/download-certs",
            Step::Certs => "control-plane-prepare/certs",
            Step::Kubeconfig => "control-plane-prepare/kubeconfig",
            Step::ControlPlaneManifests => "control-plane-prepare/control-plane",
            Step::CheckEtcd => "check-etcd",
            Step::KubeletStart => "kubelet-start",
            Step::EtcdJoin => "control-plane-join/etcd",
            Step::UpdateStatus => "control-plane-join/update-status",
            Step::MarkControlPlane => "control-plane-join/mark-control-plane",
            Step::WaitControlPlane => "wait-control-plane",
        }
    }
}

fn has_update_status(v: crate::kubeversion::KubeVersion) -> bool {
    !v.at_least(1, 31)
}

/// The steps of a whole `kubeadm join`, in upstream's order.
pub fn all_steps(v: crate::kubeversion::KubeVersion) -> Vec<Step> {
    let mut steps = vec![
        Step::Preflight,
        Step::DownloadCerts,
        Step::Certs,
        Step::Kubeconfig,
        Step::ControlPlaneManifests,
        Step::CheckEtcd,
        Step::KubeletStart,
        Step::EtcdJoin,
    ];
    if has_update_status(v) {
        steps.push(Step::UpdateStatus);
    }
    steps.push(Step::MarkControlPlane);
    if v.at_least(1, 31) {
        steps.push(Step::WaitControlPlane);
    }
    steps
}

/// The steps of `kubeadm join phase <phase> [<sub>]`; `Err` is cobra's complaint, `Ok(None)`
/// a parent phase named without a sub-phase (cobra prints its help).
pub fn phase_steps(
    phase: &str,
    sub: Option<&str>,
    v: crate::kubeversion::KubeVersion,
) -> Result<Option<Vec<Step>>, String> {
    let unknown = |parent: &str, sub: &str| {
        format!("unknown command {sub:?} for \"kubeadm join phase {parent}\"")
    };
    let steps = match (phase, sub) {
        ("preflight", None) => vec![Step::Preflight],
        ("kubelet-start", None) => vec![Step::KubeletStart],
        ("wait-control-plane", None) if v.at_least(1, 31) => vec![Step::WaitControlPlane],
        ("control-plane-prepare", None) | ("control-plane-join", None) => return Ok(None),
        ("control-plane-prepare", Some("all")) => vec![
            Step::DownloadCerts,
            Step::Certs,
            Step::Kubeconfig,
            Step::ControlPlaneManifests,
        ],
        ("control-plane-prepare", Some("download-certs")) => vec![Step::DownloadCerts],
        ("control-plane-prepare", Some("certs")) => vec![Step::Certs],
        ("control-plane-prepare", Some("kubeconfig")) => vec![Step::Kubeconfig],
        ("control-plane-prepare", Some("control-plane")) => vec![Step::ControlPlaneManifests],
        ("control-plane-join", Some("all")) => {
            let mut s = vec![Step::EtcdJoin];
            if has_update_status(v) {
                s.push(Step::UpdateStatus);
            }
            s.push(Step::MarkControlPlane);
            s
        }
        ("control-plane-join", Some("etcd")) => vec![Step::EtcdJoin],
        ("control-plane-join", Some("update-status")) if has_update_status(v) => {
            vec![Step::UpdateStatus]
        }
        ("control-plane-join", Some("mark-control-plane")) => vec![Step::MarkControlPlane],
        (parent @ ("control-plane-prepare" | "control-plane-join"), Some(other)) => {
            return Err(unknown(parent, other));
        }
        ("wait-control-plane", _) => {
            return Err("unknown command \"wait-control-plane\" for \"kubeadm join phase\"".into());
        }
        (parent, Some(arg)) => {
            return Err(format!(
                "unknown command {arg:?} for \"kubeadm join phase {parent}\""
            ));
        }
        (other, None) => {
            return Err(format!(
                "unknown command {other:?} for \"kubeadm join phase\""
            ));
        }
    };
    Ok(Some(steps))
}

const JOIN_DONE: &str = "
This node has joined the cluster:
* Certificate signing request was sent to apiserver and a response was received.
* The Kubelet was informed of the new secure connection details.

Run 'kubectl get nodes' on the control-plane to see this node join the cluster.
";

/// Everything the phases share.
pub struct JoinData {
    /// Path root.
    pub root: Root,
    /// Knobs.
    pub knobs: Knobs,
    /// The validated configuration.
    pub cfg: JoinConfig,
    /// `--v`.
    pub verbosity: u32,
    /// Preflight errors to ignore.
    pub ignore: BTreeSet<String>,
    /// systemctl, if present.
    pub systemctl: Option<Systemctl>,
    /// The hostname, lowercased.
    pub hostname: String,
    discovered: Option<Discovered>,
    kubelet_config: Option<String>,
    cluster_configuration: Option<String>,
}

impl JoinData {
    /// Discovery, once.
    pub async fn discovered(&mut self) -> Result<Discovered, KubeadmError> {
        if let Some(d) = &self.discovered {
            return Ok(d.clone());
        }
        if self.knobs.hang_after == Some(HangPoint::Discovery) {
            hang();
        }
        let d = discovery::discover(&self.cfg, &self.knobs, self.verbosity).await?;
        self.discovered = Some(d.clone());
        Ok(d)
    }

    /// A client authenticated with the TLS bootstrap token, trusting the discovered CA.
    pub fn bootstrap_client(&self, d: &Discovered) -> Result<ApiClient, KubeadmError> {
        let auth = Auth::Token(self.cfg.tls_bootstrap_token.expose());
        ApiClient::new(
            &d.server,
            Trust::Ca(&d.ca_pem),
            &auth,
            Duration::from_secs(10),
        )
        .map_err(|e| {
            generic(format!(
                "couldn't create client from the bootstrap token: {e:#}"
            ))
        })
    }

    /// "Reading configuration from the cluster": kubeadm-config and the kubelet's
    /// component config, fetched once with the bootstrap token. Returns the kubelet
    /// config YAML kubelet-start writes to config.yaml.
    pub async fn kubelet_config(&mut self) -> Result<String, KubeadmError> {
        if let Some(k) = &self.kubelet_config {
            return Ok(k.clone());
        }
        let d = self.discovered().await?;
        println!("[preflight] Reading configuration from the cluster...");
        println!(
            "[preflight] FYI: You can look at this config file with 'kubectl -n kube-system get cm kubeadm-config -o yaml'"
        );
        let client = self.bootstrap_client(&d)?;
        let timeout = self.knobs.scale(self.cfg.timeouts.kubernetes_api_call);
        let kubeadm_config = get_config_map(&client, "kubeadm-config", timeout)
            .await
            .map_err(|e| {
                generic(format!(
                    "unable to fetch the kubeadm-config ConfigMap: failed to get config map: {e}"
                ))
            })?;
        self.cluster_configuration = kubeadm_config["data"]["ClusterConfiguration"]
            .as_str()
            .map(str::to_owned);
        // The kubelet component config's defaulting (componentconfigs/kubelet.go) asks
        // whether systemd-resolved runs, to point resolvConf at its file; the cluster's
        // config already names that file, so only the question is asked here.
        match &self.systemctl {
            Some(s) => {
                let _ = s.is_active("systemd-resolved");
            }
            None => crate::klog::printf(
                crate::klog::Severity::Warning,
                "kubelet.go:213",
                "cannot determine if systemd-resolved is active: no supported init system detected, skipping checking for services",
            ),
        }
        // The kubelet-config ConfigMap lost its version suffix in v1.24.
        let v = self.knobs.version;
        let name = if v.at_least(1, 24) {
            "kubelet-config".to_owned()
        } else {
            format!("kubelet-config-{}.{}", v.major, v.minor)
        };
        let cm = get_config_map(&client, &name, timeout)
            .await
            .map_err(|e| generic(format!("failed to get config map: {e}")))?;
        let text = cm["data"]["kubelet"]
            .as_str()
            .ok_or_else(|| {
                generic(format!(
                    "unexpected error when reading {name} ConfigMap: kubelet key value pair missing"
                ))
            })?
            .to_owned();
        self.kubelet_config = Some(text.clone());
        Ok(text)
    }

    /// The cluster's ClusterConfiguration (from kubeadm-config), read once.
    pub async fn cluster_configuration(&mut self) -> Result<cp::ClusterCfg, KubeadmError> {
        if self.cluster_configuration.is_none() {
            self.kubelet_config().await?;
        }
        Ok(cp::ClusterCfg::parse(
            self.cluster_configuration.as_deref().unwrap_or_default(),
        ))
    }
}

/// GET a kube-system ConfigMap, retrying transport errors and 5xx every 0.5 s.
async fn get_config_map(
    client: &ApiClient,
    name: &str,
    timeout: Duration,
) -> Result<serde_json::Value, String> {
    let path = format!("/api/v1/namespaces/kube-system/configmaps/{name}");
    let deadline = Instant::now() + timeout;
    loop {
        let err = match client.get(&path).await {
            Ok(r) if r.status == 200 => return Ok(r.json()),
            Ok(r) if r.status < 500 && r.status != 429 => return Err(r.error_text()),
            Ok(r) => r.error_text(),
            Err(e) => e,
        };
        if Instant::now() + Duration::from_millis(500) > deadline {
            return Err(err);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn check_mixed_args(p: &Parsed) -> Result<(), KubeadmError> {
    if !p.changed("config") {
        return Ok(());
    }
    let bad: Vec<String> = p
        .names()
        .into_iter()
        .filter(|n| !ALLOWED_WITH_CONFIG.contains(&n.as_str()) && !n.starts_with("skip-"))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(validation(format!(
            "can not mix '--config' with arguments [{}]",
            bad.join(" ")
        )))
    }
}

/// Runs `kubeadm join` (steps `None`) or the steps of one phase. Returns the exit code.
pub async fn run(p: &Parsed, phase: Option<Vec<Step>>, root: Root, knobs: Knobs) -> i32 {
    let verbosity = p.verbosity();
    match run_inner(p, phase, root, knobs).await {
        Ok(()) => 0,
        Err(e) => e.report(verbosity),
    }
}

async fn run_inner(
    p: &Parsed,
    phase: Option<Vec<Step>>,
    root: Root,
    knobs: Knobs,
) -> Result<(), KubeadmError> {
    check_mixed_args(p)?;
    let Some(config_path) = p.value("config") else {
        return Err(validation(
            "fake-kubeadm implements only `kubeadm join --config FILE` (bootstrap-token discovery in a JoinConfiguration)",
        ));
    };
    if p.bool("dry-run") {
        return Err(validation("fake-kubeadm: --dry-run is not implemented"));
    }
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().trim().to_lowercase())
        .unwrap_or_default();
    let cfg = config::load(
        &root,
        config_path,
        knobs.version,
        p.value("node-name"),
        &hostname,
    )?;
    let ignore = preflight::ignore_set(
        &p.list("ignore-preflight-errors"),
        &cfg.ignore_preflight_errors,
    )?;
    let skip: BTreeSet<String> = p.list("skip-phases").into_iter().collect();
    let whole = phase.is_none();
    let steps: Vec<Step> = match phase {
        Some(steps) => steps,
        None => all_steps(knobs.version)
            .into_iter()
            .filter(|st| {
                let name = st.name();
                let parent = name.split('/').next().unwrap_or(name);
                !skip.contains(name) && !skip.contains(parent)
            })
            .collect(),
    };
    let systemctl = Systemctl::detect(&root);
    let mut data = JoinData {
        root,
        knobs,
        cfg,
        verbosity: p.verbosity(),
        ignore,
        systemctl,
        hostname,
        discovered: None,
        kubelet_config: None,
        cluster_configuration: None,
    };
    for (i, st) in steps.iter().enumerate() {
        if i == 0 {
            inject_failure(&data, st.name())?;
        }
        let control_plane = data.cfg.control_plane.is_some();
        let result = match st {
            Step::Preflight => preflight_phase(&mut data).await,
            Step::KubeletStart => kubelet_start::run(&mut data).await,
            // Control-plane phases do nothing on a worker (cfg.ControlPlane == nil).
            _ if !control_plane => Ok(()),
            Step::DownloadCerts => cp::prepare::download_certs(&mut data).await,
            Step::Certs => cp::prepare::certs(&mut data).await,
            Step::Kubeconfig => cp::prepare::kubeconfigs(&mut data).await,
            Step::ControlPlaneManifests => cp::prepare::manifests(&mut data).await,
            Step::CheckEtcd => cp::etcd::check_etcd(&mut data).await,
            Step::EtcdJoin => cp::etcd::join(&mut data).await,
            Step::UpdateStatus => cp::mark::update_status(&data),
            Step::MarkControlPlane => cp::mark::mark_control_plane(&mut data).await,
            Step::WaitControlPlane => cp::mark::wait_control_plane(&data),
        };
        result.map_err(|e| e.in_phase(st.name()))?;
    }
    if whole {
        if data.cfg.control_plane.is_some() {
            print!("{}", cp::JOIN_DONE_CONTROL_PLANE);
        } else {
            print!("{JOIN_DONE}");
        }
        println!();
    }
    Ok(())
}

/// FAIL_TIMES: the first N joins fail at their first phase.
fn inject_failure(data: &JoinData, phase: &str) -> Result<(), KubeadmError> {
    match env::take_injected_failure(&data.root, &data.knobs) {
        Ok(Some((n, total))) => Err(generic(format!(
            "fake-kubeadm: injected failure {n} of {total} (FAIL_TIMES)"
        ))
        .in_phase(phase)),
        Ok(None) => Ok(()),
        Err(e) => Err(generic(format!("fake-kubeadm: FAIL_TIMES: {e:#}"))),
    }
}

async fn preflight_phase(data: &mut JoinData) -> Result<(), KubeadmError> {
    println!("[preflight] Running pre-flight checks");
    preflight::run_join_checks(
        &data.root,
        &data.cfg,
        &data.ignore,
        data.systemctl.as_ref(),
        data.knobs.version,
    )?;
    data.kubelet_config().await?;
    if data.cfg.control_plane.is_some() {
        cp::preflight(data).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubeadm::args::{GLOBAL, JOIN, parse};

    fn parsed(a: &[&str]) -> Parsed {
        parse(
            &a.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            &[GLOBAL, JOIN],
        )
        .unwrap()
    }

    #[test]
    fn phase_names_follow_the_release() {
        let v = |s: &str| crate::kubeversion::KubeVersion::parse(s).unwrap();
        let names = |steps: Vec<Step>| steps.iter().map(|s| s.name()).collect::<Vec<_>>();
        assert_eq!(
            names(all_steps(v("v1.29.7")))[5..],
            [
                "check-etcd",
                "kubelet-start",
                "control-plane-join/etcd",
                "control-plane-join/update-status",
                "control-plane-join/mark-control-plane"
            ]
        );
        assert_eq!(
            names(all_steps(v("v1.31.2")))[7..],
            [
                "control-plane-join/etcd",
                "control-plane-join/mark-control-plane",
                "wait-control-plane"
            ]
        );
        assert_eq!(
            phase_steps("control-plane-join", Some("etcd"), v("v1.29.7")).unwrap(),
            Some(vec![Step::EtcdJoin])
        );
        assert!(phase_steps("control-plane-join", Some("update-status"), v("v1.31.0")).is_err());
        assert!(phase_steps("wait-control-plane", None, v("v1.29.7")).is_err());
        assert!(phase_steps("check-etcd", None, v("v1.29.7")).is_err());
        assert_eq!(
            phase_steps("control-plane-prepare", None, v("v1.29.7")).unwrap(),
            None
        );
        assert_eq!(
            phase_steps("control-plane-prepare", Some("all"), v("v1.29.7"))
                .unwrap()
                .unwrap()
                .len(),
            4
        );
    }

    #[test]
    fn mixed_arguments_are_rejected_like_upstream() {
        assert!(
            check_mixed_args(&parsed(&[
                "--config",
                "f",
                "--v=5",
                "--ignore-preflight-errors=Swap",
                "--node-name=n",
                "--skip-phases=x"
            ]))
            .is_ok()
        );
        let e = check_mixed_args(&parsed(&[
            "--config",
            "f",
            "--token",
            "abcdef.0123456789abcdef",
            "--discovery-token-ca-cert-hash",
            "sha256:x",
        ]))
        .unwrap_err();
        assert_eq!(e.exit_code(), 3);
        assert_eq!(
            e.message(),
            "can not mix '--config' with arguments [discovery-token-ca-cert-hash token]"
        );
    }
}
