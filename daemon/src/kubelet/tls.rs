//! The kubelet's own credentials after TLS bootstrap: `/etc/kubernetes/kubelet.conf`
//! pointing at `kubelet-client-current.pem`. Valid means: the kubeconfig loads, the
//! certificate chains to the cluster CA for client auth and is within its validity,
//! its subject is `O=system:nodes, CN=system:node:<name>`, and the key is its key.
//! Anything less and the kubelet runs anonymous or standalone (seeds 001 and 004).

use super::watch::{self, Check};
use crate::failure::Failure;
use crate::kubeconfig::Kubeconfig;
use crate::paths::Paths;
use crate::pki::{self, ClientCertSummary};
use base64::Engine;
use rustls::pki_types::CertificateDer;
use tokio::time::Instant;

/// Usable kubelet credentials.
#[derive(Debug, Clone)]
pub struct KubeletCredentials {
    /// API server URL from kubelet.conf.
    pub server: String,
    /// Client certificate PEM (chain).
    pub cert_pem: Vec<u8>,
    /// Client key PEM.
    pub key_pem: Vec<u8>,
    /// What the certificate says.
    pub summary: ClientCertSummary,
}

/// Why kubelet.conf is not usable (yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeletConfProblem {
    /// The file is not there.
    #[error("{0} does not exist")]
    Missing(String),
    /// It is there but not usable.
    #[error("{0}")]
    Invalid(String),
    /// It names a client certificate file that does not exist: while the kubelet waits
    /// for its CSR (kubelet writes kubelet.conf first when it rotates certificates), or
    /// after the certificate was deleted (seed 004: the kubelet runs anonymous).
    #[error("{0}")]
    NoCertificate(String),
}

/// Checks kubelet.conf and the certificate it points to against `ca`.
pub fn check_kubelet_conf(
    paths: &Paths,
    ca: &[CertificateDer<'static>],
    node: &str,
) -> Result<KubeletCredentials, KubeletConfProblem> {
    let conf = paths.kubelet_conf();
    if !conf.exists() {
        return Err(KubeletConfProblem::Missing(conf.display().to_string()));
    }
    let invalid = |e: String| KubeletConfProblem::Invalid(e);
    let kc = Kubeconfig::read(&conf).map_err(|e| invalid(e.to_string()))?;
    let server = kc.server().map_err(|e| invalid(e.to_string()))?.to_string();
    let user = kc.user().map_err(|e| invalid(e.to_string()))?;
    let (cert_pem, cert_what) = match (&user.client_certificate_data, &user.client_certificate) {
        (Some(data), _) => (
            decode(data, &conf, "client-certificate-data")?,
            format!("{} client-certificate-data", conf.display()),
        ),
        (None, Some(file)) => {
            let real = paths.resolve(file);
            // The kubelet's symlink points at a dated file; a dangling link is the
            // seed-004 state (certificate deleted, kubelet falls back to anonymous).
            let bytes = std::fs::read(&real).map_err(|e| {
                let why = format!(
                    "{}: client certificate {} cannot be read: {e}",
                    conf.display(),
                    file.display()
                );
                if e.kind() == std::io::ErrorKind::NotFound {
                    KubeletConfProblem::NoCertificate(why)
                } else {
                    KubeletConfProblem::Invalid(why)
                }
            })?;
            (bytes, file.display().to_string())
        }
        (None, None) => {
            return Err(invalid(format!(
                "{}: its user has no client certificate (a kubelet.conf from TLS bootstrap always has one)",
                conf.display()
            )));
        }
    };
    let key_pem = match (&user.client_key_data, &user.client_key) {
        (Some(data), _) => decode(data.expose(), &conf, "client-key-data")?,
        (None, Some(file)) => std::fs::read(paths.resolve(file)).map_err(|e| {
            KubeletConfProblem::Invalid(format!(
                "{}: client key {} cannot be read: {e}",
                conf.display(),
                file.display()
            ))
        })?,
        (None, None) => {
            return Err(invalid(format!(
                "{}: its user has no client key",
                conf.display()
            )));
        }
    };
    let summary = pki::check_kubelet_client_cert(&cert_pem, &key_pem, ca, node, &cert_what)
        .map_err(|e| invalid(e.to_string()))?;
    Ok(KubeletCredentials {
        server,
        cert_pem,
        key_pem,
        summary,
    })
}

fn decode(data: &str, conf: &std::path::Path, field: &str) -> Result<Vec<u8>, KubeletConfProblem> {
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| {
            KubeletConfProblem::Invalid(format!("{}: {field} is not base64: {e}", conf.display()))
        })
}

/// What the agent saw of the kubelet when TLS bootstrap did not finish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeletView {
    /// Whether kubelet.service was active.
    pub active: bool,
    /// Its state when not active ("activating (auto-restart)", "inactive (dead)", ...).
    pub state: String,
    /// How often systemd restarted it automatically: a kubelet that keeps exiting.
    pub restarts: u32,
    /// The running kubelet was started without --kubeconfig/--bootstrap-kubeconfig.
    pub started_without_kubeconfig: bool,
    /// The kubelet was started with bootstrap credentials: bootstrap-kubelet.conf
    /// existed when it was looked at, or the agent started kubelet after validating it
    /// (kubeadm removes the file when it gives up, but the kubelet read it at start).
    pub had_bootstrap_conf: bool,
    /// Pending CSRs requested with this node's bootstrap token.
    pub pending_csrs: Vec<String>,
    /// Why the CSRs could not be listed with the bootstrap token, if they could not.
    pub csr_list_error: Option<crate::apiserver::ApiError>,
}

/// Whether a kubelet command line (NUL-separated, as in /proc/PID/cmdline) names a
/// kubeconfig: without one the kubelet runs in standalone mode.
pub fn cmdline_has_kubeconfig(cmdline: &[u8]) -> bool {
    cmdline
        .split(|b| *b == 0)
        .any(|arg| arg.starts_with(b"--kubeconfig") || arg.starts_with(b"--bootstrap-kubeconfig"))
}

/// Waits (inotify) for valid kubelet credentials until `deadline`; on timeout, says
/// what the kubelet is doing instead (not running, standalone, waiting for its CSR).
pub async fn wait_for_tls_bootstrap(
    paths: &Paths,
    ca: &[CertificateDer<'static>],
    node: &str,
    deadline: Instant,
    view: impl AsyncFnOnce() -> KubeletView,
) -> Result<KubeletCredentials, Failure> {
    let dirs = [paths.kubernetes_dir(), paths.kubelet_dir().join("pki")];
    let result = watch::until(&dirs, deadline, || {
        match check_kubelet_conf(paths, ca, node) {
            Ok(creds) => Check::Ready(creds),
            Err(problem) => Check::NotYet(problem),
        }
    })
    .await
    .map_err(|e| Failure::Local {
        detail: format!("watching for kubelet.conf: {e}"),
    })?;
    match result {
        Ok(creds) => Ok(creds),
        Err(problem) => {
            let seen = view().await;
            Err(Failure::TlsBootstrapStuck {
                detail: diagnose(paths, Some(&problem), &seen),
            })
        }
    }
}

/// Names what the kubelet is doing instead of finishing TLS bootstrap.
pub fn diagnose(paths: &Paths, problem: Option<&KubeletConfProblem>, seen: &KubeletView) -> String {
    if let Some(KubeletConfProblem::Invalid(why)) = problem {
        return format!("kubelet.conf is not usable: {why}");
    }
    let pending = (!seen.pending_csrs.is_empty()).then(|| {
        format!(
            "kubelet's certificate signing request {} is pending approval: approve it on a control plane with `kubectl certificate approve {}`, or restore automatic approval for bootstrap tokens (kubeadm's ClusterRoleBinding kubeadm:node-autoapprove-bootstrap, and a running kube-controller-manager with its csrapproving controller)",
            seen.pending_csrs.join(", "),
            seen.pending_csrs.join(" ")
        )
    });
    if !seen.active {
        let state = if seen.state.is_empty() {
            String::new()
        } else {
            format!(" ({})", seen.state)
        };
        let restarts = match seen.restarts {
            0 => String::new(),
            n => format!(", restarted {n} times: it keeps exiting"),
        };
        let mut text = format!(
            "kubelet is not running{state}{restarts}, so it cannot perform TLS bootstrap; see `journalctl -u kubelet`"
        );
        if let Some(pending) = pending {
            text.push_str("; also, ");
            text.push_str(&pending);
        }
        return text;
    }
    if seen.started_without_kubeconfig {
        return "kubelet is running in standalone mode (\"kubeclient not set, assuming standalone kubelet\"): its unit passes no --kubeconfig or --bootstrap-kubeconfig, so it never contacts the API server; install kubeadm's drop-in (kubelet.service.d/10-kubeadm.conf, shipped with kubeadm) and restart kube-join-agent".into();
    }
    if let Some(pending) = pending {
        return pending;
    }
    if !seen.had_bootstrap_conf && !paths.kubelet_conf().exists() {
        return format!(
            "kubelet is running in standalone mode (\"kubeclient not set, assuming standalone kubelet\"): neither {} nor {} exists, so it never contacts the API server",
            paths.kubelet_conf().display(),
            paths.bootstrap_kubelet_conf().display()
        );
    }
    match &seen.csr_list_error {
        // kubeadm's one binding grants bootstrap tokens create, get and list on CSRs.
        Some(e) if e.status == Some(403) => format!(
            "kubelet is running with bootstrap credentials but no certificate signing request can be made: the bootstrap token may not even list them ({e}), so the cluster lacks kubeadm's ClusterRoleBinding kubeadm:kubelet-bootstrap (ClusterRole system:node-bootstrapper for group system:bootstrappers:kubeadm:default-node-token; `kubeadm init phase bootstrap-token` creates it)"
        ),
        Some(e) => format!(
            "kubelet is running with bootstrap credentials but has no client certificate yet, and its certificate signing requests could not be listed ({e}); see `journalctl -u kubelet` and `kubectl get csr`"
        ),
        None => "kubelet is running with bootstrap credentials but no certificate signing request from this node's bootstrap token exists: the kubelet could not create one; `journalctl -u kubelet` says why: \"forbidden\" means the cluster lacks kubeadm's ClusterRoleBinding kubeadm:kubelet-bootstrap (it lets bootstrap tokens create CSRs; `kubeadm init phase bootstrap-token` creates it), a connection error means the kubelet cannot reach the API server".into(),
    }
}

#[cfg(test)]
mod tests;
