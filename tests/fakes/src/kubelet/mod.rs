//! `fake-kubelet`, installed as `/usr/bin/kubelet` and run by kubelet.service with
//! kubeadm's drop-in: loads its config, bootstraps a client certificate with the
//! bootstrap token (or runs "standalone" without credentials), waits for the container
//! runtime, serves healthz, registers the Node and heartbeats. Logs klog lines on stderr.

pub mod args;
pub mod bootstrap;
pub mod config;
pub mod cri;
pub mod node;
pub mod serve;

use crate::fsroot::{Root, go_path_error};
use crate::klog::{self, Severity};
use crate::kubeconfig::{self, Resolved};
use args::Flags;
use bootstrap::CertStore;
use config::KubeletConfig;

/// The version the fake kubelet reports.
pub const VERSION: &str = crate::DEFAULT_KUBERNETES_VERSION;
const DEFAULT_CERT_DIR: &str = "/var/lib/kubelet/pki";

/// How the kubelet will talk to the API server.
enum ClientPlan {
    /// kubelet.conf is usable as is.
    Ready,
    /// A client certificate must be requested with these bootstrap credentials.
    Bootstrap(Resolved, String),
    /// No usable credentials: standalone mode.
    Standalone,
}

/// The kubelet's fatal exit: `"command failed" err="..."`, exit 1.
fn command_failed(err: &str) -> i32 {
    klog::log(
        Severity::Error,
        "run.go:74",
        "command failed",
        &[("err", err)],
    );
    1
}

fn load_config(root: &Root, path: &str) -> Result<KubeletConfig, String> {
    let wrap = |e: String| format!("failed to load kubelet config file, path: {path}, error: {e}");
    let text = std::fs::read_to_string(root.path(path))
        .map_err(|e| wrap(go_path_error("open", path, &e)))?;
    config::parse(&text).map_err(|e| wrap(format!("{e:#}")))
}

fn plan_client(root: &Root, flags: &Flags) -> Result<ClientPlan, String> {
    let Some(kubeconfig_path) = flags.kubeconfig.clone() else {
        return Ok(ClientPlan::Standalone);
    };
    if bootstrap::usable_kubeconfig(root, &kubeconfig_path).is_some() {
        klog::log(
            Severity::Info,
            "bootstrap.go:101",
            "Current kubeconfig file contents are still valid, no bootstrap necessary",
            &[],
        );
        return Ok(ClientPlan::Ready);
    }
    match &flags.bootstrap_kubeconfig {
        Some(b) if bootstrap::exists(root, b) => {
            let r = kubeconfig::load(root, b).map_err(|e| {
                format!("failed to run Kubelet: unable to load bootstrap kubeconfig: {e:#}")
            })?;
            Ok(ClientPlan::Bootstrap(r, kubeconfig_path))
        }
        _ => Ok(ClientPlan::Standalone),
    }
}

/// The certificate manager's name for the kubelet's client certificate (its signer).
const CLIENT_MANAGER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// `wait.PollInfinite(32*time.Second, m.rotateCerts)` once the backoff is spent.
pub const ROTATION_POLL: std::time::Duration = std::time::Duration::from_secs(32);

/// The pause after the `failures`-th failed attempt in a row, as client-go's certificate
/// manager (`Start`) retries: `ExponentialBackoff{Duration: 2s, Factor: 2, Jitter: 0.1,
/// Steps: 5}` sleeps 2, 4, 8 and 16 s (each stretched by `jitter` × 10 %, jitter in
/// [0, 1)) between its five tries; after the fifth failure it reports "Reached backoff
/// limit" and polls every 32 s forever.
pub fn rotation_pause(failures: u32, jitter: f64) -> std::time::Duration {
    match failures {
        1..=4 => {
            let base = 2u64 << (failures - 1);
            std::time::Duration::from_secs_f64(base as f64 * (1.0 + jitter.clamp(0.0, 1.0) * 0.1))
        }
        _ => ROTATION_POLL,
    }
}

/// `utilruntime.HandleError` of `rotateCerts`: an unstructured klog error line
/// (`klog.ErrorDepth`), `<manager>: <what>: <err>`.
fn rotation_error_line(e: &bootstrap::ObtainError) -> (&'static str, String) {
    use bootstrap::ObtainError as E;
    let (source, what) = match e {
        E::Generate(_) => (
            "certificate_manager.go:541",
            "Unable to generate a certificate signing request",
        ),
        E::Client(_) => (
            "certificate_manager.go:551",
            "Unable to load a client to request certificates",
        ),
        E::Request(_) => (
            "certificate_manager.go:562",
            "Failed while requesting a signed certificate from the control plane",
        ),
        E::NotSigned(_) => (
            "certificate_manager.go:579",
            "certificate request was not signed",
        ),
        E::Store(_) => (
            "certificate_manager.go:588",
            "Unable to store the new cert/key pair",
        ),
    };
    (source, format!("{CLIENT_MANAGER}: {what}: {e}"))
}

fn jitter() -> f64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 2];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    f64::from(u16::from_le_bytes(b)) / 65536.0
}

/// Requests the client certificate until it is issued, in the background, as the
/// certificate manager does with client rotation on: every failure (a 403 because the
/// bootstrap token may not create CSRs, an unreachable server, a denied CSR, one not
/// signed within 15 min) is logged and retried on its backoff, never fatal; every try is
/// a new key and a new `csr-XXXXX`.
async fn bootstrap_until_done(root: Root, store: CertStore, boot: Resolved, node_name: String) {
    let mut failures = 0u32;
    loop {
        match bootstrap::rotate_once(&root, &store, &boot, &node_name).await {
            Ok(()) => return,
            Err(e) => {
                let (source, line) = rotation_error_line(&e);
                klog::printf(Severity::Error, source, &line);
            }
        }
        failures = failures.saturating_add(1);
        if failures == 5 {
            klog::printf(
                Severity::Error,
                "certificate_manager.go:445",
                &format!(
                    "{CLIENT_MANAGER}: Reached backoff limit, still unable to rotate certs: timed out waiting for the condition"
                ),
            );
        }
        tokio::time::sleep(rotation_pause(failures, jitter())).await;
    }
}

async fn main_flow(flags: Flags) -> i32 {
    let root = Root::from_env();
    klog::log(
        Severity::Info,
        "server.go:487",
        "Kubelet version",
        &[("kubeletVersion", VERSION)],
    );
    klog::log(
        Severity::Info,
        "server.go:489",
        "Golang settings",
        &[("GOGC", ""), ("GOMAXPROCS", ""), ("GOTRACEBACK", "")],
    );
    klog::set_verbosity(flags.verbosity);
    flags.warn_ignored();
    let cfg = match &flags.config {
        Some(p) => match load_config(&root, p) {
            Ok(c) => c,
            Err(e) => return command_failed(&e),
        },
        None => KubeletConfig::default(),
    };
    let node_name = flags.hostname_override.clone().unwrap_or_else(|| {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().trim().to_lowercase())
            .unwrap_or_default()
    });
    let endpoint = flags
        .container_runtime_endpoint
        .clone()
        .unwrap_or_else(|| cfg.container_runtime_endpoint.clone());
    let store = CertStore {
        dir: flags
            .cert_dir
            .clone()
            .unwrap_or_else(|| DEFAULT_CERT_DIR.to_owned()),
    };

    let plan = match plan_client(&root, &flags) {
        Ok(p) => p,
        Err(e) => return command_failed(&e),
    };
    let mut anonymous_until_cert: Option<Resolved> = None;
    let kubeconfig_path = flags.kubeconfig.clone().unwrap_or_default();
    match &plan {
        ClientPlan::Bootstrap(boot, path) if cfg.rotate_certificates => {
            // Upstream's LoadClientConfig: kubelet.conf pointing at the (not yet
            // existing) current pem is written first; the certificate follows, and
            // until it does the kubelet's requests carry no client certificate.
            klog::log(
                Severity::Info,
                "server.go:895",
                "Client rotation is on, will bootstrap in background",
                &[],
            );
            if let Err(e) = bootstrap::write_kubeconfig(&root, path, boot, &store) {
                return command_failed(&format!("failed to run Kubelet: {e:#}"));
            }
            anonymous_until_cert = Some(boot.clone());
            tokio::spawn(bootstrap_until_done(
                root.clone(),
                store.clone(),
                boot.clone(),
                node_name.clone(),
            ));
        }
        ClientPlan::Bootstrap(boot, path) => {
            klog::log(
                Severity::Info,
                "bootstrap.go:154",
                "Using bootstrap kubeconfig to generate TLS client cert, key and kubeconfig file",
                &[],
            );
            if let Err(e) = bootstrap::obtain(&root, &store, boot, &node_name).await {
                return command_failed(&format!("failed to run Kubelet: {e:#}"));
            }
            if let Err(e) = bootstrap::write_kubeconfig(&root, path, boot, &store) {
                return command_failed(&format!("failed to run Kubelet: {e:#}"));
            }
        }
        ClientPlan::Ready => {}
        ClientPlan::Standalone => {
            klog::log(
                Severity::Info,
                "server.go:700",
                "No API server defined - no events will be sent to API server",
                &[],
            );
            klog::log(
                Severity::Info,
                "kubelet.go:412",
                "kubeclient not set, assuming standalone kubelet",
                &[],
            );
        }
    }

    cri::wait_for_runtime(&root, &endpoint).await;
    let address = flags.address.clone().unwrap_or_else(|| cfg.address.clone());
    let api_port = match serve::bind_api_port(&address).await {
        Ok(l) => l,
        Err(e) => {
            klog::log(
                Severity::Error,
                "server.go:162",
                "Failed to listen and serve",
                &[("err", &e)],
            );
            return 1;
        }
    };
    tokio::spawn(serve::hold_api_port(api_port));
    tokio::spawn(serve::serve_healthz(
        cfg.healthz_bind_address.clone(),
        cfg.healthz_port,
    ));

    if matches!(plan, ClientPlan::Standalone) {
        klog::log(
            Severity::Info,
            "kubelet.go:1587",
            "Skipping CSINode initialization, kubelet running in standalone mode",
            &[],
        );
        return std::future::pending().await;
    }
    let clients = node::Clients {
        root: root.clone(),
        kubeconfig: kubeconfig_path,
        anonymous: anonymous_until_cert,
    };
    let ip = flags
        .node_ip
        .clone()
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    node::register_and_heartbeat(clients, node_name, ip, VERSION.to_owned()).await;
    0
}

/// Runs the kubelet with `argv` (including the program name); returns the exit code.
pub fn run(argv: Vec<String>) -> i32 {
    let flags = args::parse(argv.get(1..).unwrap_or_default());
    if flags.version {
        println!("Kubernetes {VERSION}");
        return 0;
    }
    crate::install_crypto_provider();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return command_failed(&format!("starting the runtime: {e}")),
    };
    rt.block_on(async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => return command_failed(&format!("installing the SIGTERM handler: {e}")),
            };
        tokio::select! {
            code = main_flow(flags) => code,
            _ = term.recv() => {
                klog::log(Severity::Info, "server.go:263", "Shutting down kubelet on SIGTERM", &[]);
                0
            }
            _ = tokio::signal::ctrl_c() => 0,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rotation_retries_like_the_certificate_manager() {
        let pauses: Vec<Duration> = (1..=7).map(|n| rotation_pause(n, 0.0)).collect();
        let secs = |s: u64| Duration::from_secs(s);
        assert_eq!(
            pauses,
            [
                secs(2),
                secs(4),
                secs(8),
                secs(16),
                secs(32),
                secs(32),
                secs(32)
            ]
        );
        // Jitter stretches the backoff steps by at most 10 %, not the 32 s poll.
        let stretched = rotation_pause(4, 0.999_999);
        assert!(
            stretched > Duration::from_millis(17_590) && stretched <= Duration::from_millis(17_600)
        );
        assert_eq!(rotation_pause(5, 0.5), secs(32));
    }

    #[test]
    fn rotation_errors_read_as_upstream() {
        let e = bootstrap::ObtainError::Request(anyhow::anyhow!(
            "cannot create certificate signing request: certificatesigningrequests.certificates.k8s.io is forbidden: User \"system:bootstrap:abcdef\" cannot create resource \"certificatesigningrequests\" in API group \"certificates.k8s.io\" at the cluster scope"
        ));
        let (source, line) = rotation_error_line(&e);
        assert_eq!(source, "certificate_manager.go:562");
        assert_eq!(
            line,
            "kubernetes.io/kube-apiserver-client-kubelet: Failed while requesting a signed certificate from the control plane: cannot create certificate signing request: certificatesigningrequests.certificates.k8s.io is forbidden: User \"system:bootstrap:abcdef\" cannot create resource \"certificatesigningrequests\" in API group \"certificates.k8s.io\" at the cluster scope"
        );
    }
}
