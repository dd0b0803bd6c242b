//! The kubelet-start phase (kubeadm/cmd/phases/join/kubelet.go): write the kubelet's
//! bootstrap credentials and configuration, (re)start it, wait for the TLS bootstrap,
//! and always remove bootstrap-kubelet.conf on the way out.

use std::path::PathBuf;
use std::time::Duration;

use super::error::{KubeadmError, generic};
use super::events;
use super::join::JoinData;
use super::waits::{self, JOIN_FAIL_MSG};
use super::{env::HangPoint, hang};
use crate::fsroot::write_atomic;
use crate::httpclient::ApiClient;
use crate::klog::{self, Severity};
use crate::kubeconfig;

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

/// `KUBELET_KUBEADM_ARGS`: kubeadm's flags, then kubeletExtraArgs overriding them,
/// sorted by flag name as `ArgumentsToCommand` does.
pub fn kubeadm_flags(data: &JoinData) -> String {
    let mut flags = std::collections::BTreeMap::new();
    flags.insert(
        "container-runtime-endpoint".to_owned(),
        data.cfg.cri_socket.clone(),
    );
    let pause = if data.knobs.version.at_least(1, 31) {
        "3.10"
    } else {
        "3.9"
    };
    flags.insert(
        "pod-infra-container-image".to_owned(),
        format!("registry.k8s.io/pause:{pause}"),
    );
    if data.cfg.node_name != data.hostname {
        flags.insert("hostname-override".to_owned(), data.cfg.node_name.clone());
    }
    for (k, v) in &data.cfg.kubelet_extra_args {
        flags.insert(k.trim_start_matches('-').to_owned(), v.clone());
    }
    let args: Vec<String> = flags.iter().map(|(k, v)| format!("--{k}={v}")).collect();
    format!("KUBELET_KUBEADM_ARGS=\"{}\"\n", args.join(" "))
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
                "[kubelet-start] Couldn't detect a kubelet service, can't make sure the kubelet not running for a short period of time while setting up configuration for it."
            );
        }
        if let Err(e) = s.stop("kubelet") {
            klog::printf(
                Severity::Warning,
                "kubelet.go:112",
                &format!(
                    "[kubelet-start] WARNING: unable to stop the kubelet service momentarily: [{e}]"
                ),
            );
        }
    } else {
        println!(
            "[kubelet-start] No supported init system detected, won't make sure the kubelet not running for a short period of time while setting up configuration for it."
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
            "[kubelet-start] No supported init system detected, won't make sure the kubelet is running properly."
        );
        return;
    };
    if !s.service_exists("kubelet") {
        println!(
            "[kubelet-start] Couldn't detect a kubelet service, can't make sure the kubelet is running properly."
        );
    }
    if let Err(e) = s.restart("kubelet") {
        klog::printf(
            Severity::Warning,
            "kubelet.go:157",
            &format!("[kubelet-start] WARNING: unable to start the kubelet service: [{e}]"),
        );
        klog::printf(
            Severity::Warning,
            "kubelet.go:158",
            "[kubelet-start] Please ensure kubelet is reloaded and running manually.",
        );
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
