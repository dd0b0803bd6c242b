//! The kubelet-start phase (kubeadm/cmd/phases/join/kubelet.go): write the kubelet's
//! bootstrap credentials and configuration, (re)start it, wait for the TLS bootstrap,
//! and always remove bootstrap-kubelet.conf on the way out.

use std::path::PathBuf;
use std::time::Duration;

use super::config::{DOCKERSHIM_SOCKET, JoinConfig};
use super::error::{KubeadmError, generic};
use super::events;
use super::join::JoinData;
use super::waits::{self, JOIN_FAIL_MSG};
use super::{env::HangPoint, hang};
use crate::fsroot::write_atomic;
use crate::httpclient::ApiClient;
use crate::klog::{self, Severity};
use crate::kubeconfig;
use crate::kubeversion::KubeVersion;

const BOOTSTRAP_KUBECONFIG: &str = "/etc/kubernetes/bootstrap-kubelet.conf";
const KUBELET_CONFIG: &str = "/var/lib/kubelet/config.yaml";
const KUBELET_ENV: &str = "/var/lib/kubelet/kubeadm-flags.env";
/// The node annotation kubeadm sets after the bootstrap.
const CRI_SOCKET_ANNOTATION: &str = "kubeadm.alpha.kubernetes.io/cri-socket";

/// Removes a file when dropped: upstream's `defer os.Remove(bootstrapKubeConfigFile)`.
/// Like a Go defer it does not run if the process is killed.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn write(data: &JoinData, node_path: &str, content: &[u8], mode: u32) -> Result<(), KubeadmError> {
    write_atomic(&data.root.path(node_path), content, mode)
        .map_err(|e| generic(format!("failed to write {node_path}: {e:#}")))?;
    events::record(&data.root, &format!("wrote {node_path}"));
    Ok(())
}

/// The pause image kubeadm names for its release (constants.PauseVersion, in the default
/// image repository: k8s.gcr.io until v1.25 made it registry.k8s.io).
pub fn pause_image(v: KubeVersion) -> String {
    let tag = match (v.major, v.minor) {
        (1, ..=20) => "3.2",
        (1, 21) => "3.4.1",
        (1, 22) => "3.5",
        (1, 23) => "3.6",
        (1, 24) => "3.7",
        (1, 25) => "3.8",
        (1, 26..=30) => "3.9",
        _ => "3.10",
    };
    let repo = if v.at_least(1, 25) {
        "registry.k8s.io"
    } else {
        "k8s.gcr.io"
    };
    format!("{repo}/pause:{tag}")
}

/// `KUBELET_KUBEADM_ARGS` as each release's phases/kubelet/flags.go builds it, then
/// kubeletExtraArgs overriding, sorted by flag name (`BuildArgumentListFromMap`):
/// - before v1.24, dockershim's socket: `--network-plugin=cni` (and, in v1.20 only, the
///   pause image); any other socket: `--container-runtime=remote
///   --container-runtime-endpoint=<criSocket as configured>`;
/// - from v1.21 the pause image for every runtime (kubernetes PR #99476);
/// - v1.24 and v1.25: `--container-runtime=remote`, the endpoint, the pause image;
/// - from v1.26 (PR #112000) the endpoint and the pause image;
/// - `--hostname-override` when the node name is not the hostname.
pub fn kubeadm_flags(data: &JoinData) -> String {
    kubeadm_flags_for(data.knobs.version, &data.cfg, &data.hostname)
}

/// [`kubeadm_flags`] for a release, a configuration and the hostname.
pub fn kubeadm_flags_for(v: KubeVersion, cfg: &JoinConfig, hostname: &str) -> String {
    let socket = cfg.cri_socket.clone();
    let mut flags = std::collections::BTreeMap::new();
    let dockershim = !v.at_least(1, 24) && socket == DOCKERSHIM_SOCKET;
    if dockershim {
        flags.insert("network-plugin".to_owned(), "cni".to_owned());
    } else {
        if !v.at_least(1, 26) {
            flags.insert("container-runtime".to_owned(), "remote".to_owned());
        }
        flags.insert("container-runtime-endpoint".to_owned(), socket);
    }
    if v.at_least(1, 21) || dockershim {
        flags.insert("pod-infra-container-image".to_owned(), pause_image(v));
    }
    if cfg.node_name != hostname {
        flags.insert("hostname-override".to_owned(), cfg.node_name.clone());
    }
    for (k, val) in &cfg.kubelet_extra_args {
        flags.insert(k.trim_start_matches('-').to_owned(), val.clone());
    }
    let args: Vec<String> = flags
        .iter()
        .map(|(k, val)| format!("--{k}={val}"))
        .collect();
    format!("KUBELET_KUBEADM_ARGS=\"{}\"\n", args.join(" "))
}

/// Where one line of kubeadm's output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// `fmt.Printf` / `fmt.Println`: stdout as is.
    Plain(String),
    /// `klog.Warningf`: a klog `W` line on stderr.
    Warning(String),
}

/// What `TryStartKubelet` prints when `systemctl restart kubelet` fails (a masked
/// unit): the warning is `fmt.Printf` up to v1.23 and `klog.Warningf` from v1.24
/// (kubernetes PR #107467, "all warning messages are printed to stderr"); the hint
/// after it stays a plain line in every release (v1.31's included).
pub fn restart_failed(v: KubeVersion, err: &str) -> Vec<Out> {
    let warning = format!("[kubelet-start] WARNING: unable to start the kubelet service: [{err}]");
    vec![
        if v.at_least(1, 24) {
            Out::Warning(warning)
        } else {
            Out::Plain(warning)
        },
        Out::Plain(
            "[kubelet-start] Please ensure kubelet is reloaded and running manually.".into(),
        ),
    ]
}

fn emit(out: &[Out], source: &str) {
    for o in out {
        match o {
            Out::Plain(l) => println!("{l}"),
            Out::Warning(l) => klog::printf(Severity::Warning, source, l),
        }
    }
}

/// kubeadm's warnings about the kubelet service: `fmt.Printf` on stdout up to v1.23,
/// `klog.Warningf` on stderr from v1.24.
fn warn(data: &JoinData, source: &str, line: &str) {
    if data.knobs.version.at_least(1, 24) {
        emit(&[Out::Warning(line.to_owned())], source);
    } else {
        emit(&[Out::Plain(line.to_owned())], source);
    }
}

/// The `[kubelet-start]` notices about the init system: lower case in v1.20's
/// phases/kubelet/kubelet.go, capitalised by v1.31 (the fake switches with the klog
/// change at v1.24; the exact release is not verified).
fn notice(data: &JoinData, lower: &str) -> String {
    if data.knobs.version.at_least(1, 24) {
        let mut c = lower.chars();
        match c.next() {
            Some(f) => format!("[kubelet-start] {}{}", f.to_uppercase(), c.as_str()),
            None => "[kubelet-start] ".to_owned(),
        }
    } else {
        format!("[kubelet-start] {lower}")
    }
}

/// Runs the phase.
pub async fn run(data: &mut JoinData) -> Result<(), KubeadmError> {
    let kubelet_config = data.kubelet_config().await?;
    let d = data.discovered().await?;
    let _cleanup = RemoveOnDrop(data.root.path(BOOTSTRAP_KUBECONFIG));

    let bootstrap =
        kubeconfig::bootstrap(&d.server, &d.ca_pem, &data.cfg.tls_bootstrap_token.expose());
    write(data, BOOTSTRAP_KUBECONFIG, bootstrap.as_bytes(), 0o600)
        .map_err(|e| generic(format!("couldn't save bootstrap-kubelet.conf to disk: {e}")))?;
    // The CA lands on disk before the Node check, so a join refused for a duplicate name
    // leaves ca.crt behind (and the next preflight trips over it), as upstream's does.
    let ca_path = data.cfg.ca_cert_path.clone();
    if !data.root.path(&ca_path).exists() {
        write(data, &ca_path, &d.ca_pem, 0o644)
            .map_err(|e| generic(format!("couldn't save the CA certificate to disk: {e}")))?;
    }

    check_existing_node(data, &d).await?;

    if let Some(s) = &data.systemctl {
        if !s.service_exists("kubelet") {
            println!(
                "{}",
                notice(
                    data,
                    "couldn't detect a kubelet service, can't make sure the kubelet not running for a short period of time while setting up configuration for it."
                )
            );
        }
        if let Err(e) = s.stop("kubelet") {
            warn(
                data,
                "kubelet.go:112",
                &format!(
                    "[kubelet-start] WARNING: unable to stop the kubelet service momentarily: [{e}]"
                ),
            );
        }
    } else {
        println!(
            "{}",
            notice(
                data,
                "no supported init system detected, won't make sure the kubelet not running for a short period of time while setting up configuration for it."
            )
        );
    }

    println!("[kubelet-start] Writing kubelet configuration to file {KUBELET_CONFIG:?}");
    if data.knobs.hang_after == Some(HangPoint::KubeletStart) {
        hang();
    }
    write(data, KUBELET_CONFIG, kubelet_config.as_bytes(), 0o644)?;
    println!("[kubelet-start] Writing kubelet environment file with flags to file {KUBELET_ENV:?}");
    write(data, KUBELET_ENV, kubeadm_flags(data).as_bytes(), 0o644)?;

    println!("[kubelet-start] Starting the kubelet");
    try_start_kubelet(data);

    wait(data, &kubelet_config).await?;
    annotate_cri_socket(data).await
}

/// Refuses to take over the name of a Node that is Ready (a live machine).
async fn check_existing_node(
    data: &JoinData,
    d: &super::discovery::Discovered,
) -> Result<(), KubeadmError> {
    let name = &data.cfg.node_name;
    if data.verbosity >= 1 {
        klog::printf(
            Severity::Info,
            "kubelet.go:142",
            &format!(
                "[kubelet-start] Checking for an existing Node in the cluster with name {name:?} and status \"Ready\""
            ),
        );
    }
    let client = data.bootstrap_client(d)?;
    let resp = client
        .get(&format!("/api/v1/nodes/{name}"))
        .await
        .map_err(|e| generic(format!("cannot get Node {name:?}: {e}")))?;
    match resp.status {
        404 => Ok(()),
        200 => {
            let node = resp.json();
            let ready = node["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            if ready {
                Err(generic(format!(
                    "a Node with name {name:?} and status \"Ready\" already exists in the cluster. You must delete the existing Node or change the name of this new joining Node"
                )))
            } else {
                Ok(())
            }
        }
        _ => Err(generic(format!(
            "cannot get Node {name:?}: {}",
            resp.error_text()
        ))),
    }
}

/// `TryStartKubelet`: daemon-reload + restart; failure is only a warning.
fn try_start_kubelet(data: &JoinData) {
    let Some(s) = &data.systemctl else {
        println!(
            "{}",
            notice(
                data,
                "no supported init system detected, won't make sure the kubelet is running properly."
            )
        );
        return;
    };
    if !s.service_exists("kubelet") {
        println!(
            "{}",
            notice(
                data,
                "couldn't detect a kubelet service, can't make sure the kubelet is running properly."
            )
        );
    }
    if let Err(e) = s.restart("kubelet") {
        emit(&restart_failed(data.knobs.version, &e), "kubelet.go:157");
    }
}

async fn wait(data: &JoinData, kubelet_config: &str) -> Result<(), KubeadmError> {
    let k = &data.knobs;
    let tls_timeout = k.scale(data.cfg.timeouts.tls_bootstrap);
    // kubeadm polled for kubelet.conf every 5 s in v1.20 and every 1 s by v1.29.
    let interval = if k.version.at_least(1, 25) {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    let name = data.cfg.node_name.clone();
    let result = if k.version.at_least(1, 31) {
        let (addr, port) = waits::healthz_endpoint(kubelet_config);
        let health =
            waits::wait_for_kubelet(&addr, port, k.scale(data.cfg.timeouts.kubelet_health_check))
                .await;
        match health {
            Err(e) => Err(e),
            Ok(()) => {
                println!("[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap");
                waits::tls_bootstrap(
                    &data.root,
                    &name,
                    interval,
                    tls_timeout,
                    "context deadline exceeded",
                )
                .await
            }
        }
    } else {
        println!("[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap...");
        tokio::select! {
            e = waits::legacy_healthz(k) => Err(e),
            r = waits::tls_bootstrap(&data.root, &name, interval, tls_timeout, "timed out waiting for the condition") => r,
        }
    };
    result.map_err(|e| {
        print!("{}", JOIN_FAIL_MSG.replace("{err}", &e));
        generic(e)
    })
}

/// Records the CRI socket on the Node, waiting for the kubelet to register it.
async fn annotate_cri_socket(data: &JoinData) -> Result<(), KubeadmError> {
    let name = &data.cfg.node_name;
    let fail = |e: String| generic(format!("error uploading crisocket: {e}"));
    let resolved = kubeconfig::load(&data.root, "/etc/kubernetes/kubelet.conf")
        .map_err(|e| fail(format!("{e:#}")))?;
    let client = ApiClient::from_kubeconfig(&resolved, Duration::from_secs(10))
        .map_err(|e| fail(format!("{e:#}")))?;
    let limit = if data.knobs.version.at_least(1, 31) {
        data.cfg.timeouts.kubernetes_api_call
    } else {
        Duration::from_secs(120)
    };
    let deadline = tokio::time::Instant::now() + data.knobs.scale(limit);
    let patch = serde_json::json!({"metadata": {"annotations": {CRI_SOCKET_ANNOTATION: data.cfg.cri_socket}}});
    let path = format!("/api/v1/nodes/{name}");
    loop {
        if let Ok(r) = client.get(&path).await
            && r.status == 200
        {
            return match client
                .call(reqwest::Method::PATCH, &path, Some(&patch))
                .await
            {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(fail(r.error_text())),
                Err(e) => Err(fail(e)),
            };
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(fail("timed out waiting for the condition".into()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> KubeVersion {
        KubeVersion::parse(s).unwrap()
    }

    fn cfg(version: &str, api: &str, cri: Option<&str>) -> JoinConfig {
        let cri = cri
            .map(|c| format!("  criSocket: {c}\n"))
            .unwrap_or_default();
        let text = format!(
            "apiVersion: kubeadm.k8s.io/{api}\nkind: JoinConfiguration\ndiscovery:\n  bootstrapToken:\n    token: abcdef.0123456789abcdef\n    apiServerEndpoint: 127.0.0.1:6443\n    unsafeSkipCAVerification: true\nnodeRegistration:\n  name: node-1\n{cri}"
        );
        super::super::config::parse(&text, v(version), None, "node-1").unwrap()
    }

    #[test]
    fn kubeadm_flags_follow_each_release() {
        // v1.20 measured: remote runtime, the socket as configured, no pause image.
        let c = cfg(
            "v1.20.2",
            "v1beta2",
            Some("/run/containerd/containerd.sock"),
        );
        assert_eq!(
            kubeadm_flags_for(v("v1.20.2"), &c, "node-1"),
            "KUBELET_KUBEADM_ARGS=\"--container-runtime=remote --container-runtime-endpoint=/run/containerd/containerd.sock\"\n"
        );
        // dockershim before v1.24: network plugin, and the pause image in v1.20.
        let mut d = c.clone();
        d.cri_socket = DOCKERSHIM_SOCKET.into();
        assert_eq!(
            kubeadm_flags_for(v("v1.20.2"), &d, "node-1"),
            "KUBELET_KUBEADM_ARGS=\"--network-plugin=cni --pod-infra-container-image=k8s.gcr.io/pause:3.2\"\n"
        );
        let c = cfg(
            "v1.22.17",
            "v1beta3",
            Some("unix:///run/containerd/containerd.sock"),
        );
        assert_eq!(
            kubeadm_flags_for(v("v1.22.17"), &c, "node-1"),
            "KUBELET_KUBEADM_ARGS=\"--container-runtime=remote --container-runtime-endpoint=unix:///run/containerd/containerd.sock --pod-infra-container-image=k8s.gcr.io/pause:3.5\"\n"
        );
        let c = cfg("v1.25.16", "v1beta3", None);
        assert_eq!(
            kubeadm_flags_for(v("v1.25.16"), &c, "node-1"),
            "KUBELET_KUBEADM_ARGS=\"--container-runtime=remote --container-runtime-endpoint=unix:///var/run/containerd/containerd.sock --pod-infra-container-image=registry.k8s.io/pause:3.8\"\n"
        );
        let c = cfg("v1.29.7", "v1beta3", None);
        assert_eq!(
            kubeadm_flags_for(v("v1.29.7"), &c, "other-host"),
            "KUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock --hostname-override=node-1 --pod-infra-container-image=registry.k8s.io/pause:3.9\"\n"
        );
        let c = cfg("v1.31.2", "v1beta4", None);
        assert!(kubeadm_flags_for(v("v1.31.2"), &c, "node-1").contains("pause:3.10\""));
        assert_eq!(pause_image(v("v1.24.0")), "k8s.gcr.io/pause:3.7");
        assert_eq!(pause_image(v("v1.21.0")), "k8s.gcr.io/pause:3.4.1");
    }

    #[test]
    fn a_failed_restart_is_printed_as_each_release_prints_it() {
        assert_eq!(
            restart_failed(v("v1.20.2"), "exit status 1"),
            vec![
                Out::Plain(
                    "[kubelet-start] WARNING: unable to start the kubelet service: [exit status 1]"
                        .into()
                ),
                Out::Plain(
                    "[kubelet-start] Please ensure kubelet is reloaded and running manually."
                        .into()
                ),
            ]
        );
        let out = restart_failed(v("v1.29.7"), "exit status 1");
        assert!(matches!(&out[0], Out::Warning(l) if l.ends_with("[exit status 1]")));
        assert!(matches!(&out[1], Out::Plain(_)));
    }
}
