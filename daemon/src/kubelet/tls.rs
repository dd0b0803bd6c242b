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
mod tests {
    use super::*;
    use crate::testutil::TestCa;
    use std::time::Duration;

    fn kubelet_conf(pem_path: &str) -> String {
        format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: eA==\n    server: https://127.0.0.1:6443\n  name: default-cluster\ncontexts:\n- context:\n    cluster: default-cluster\n    namespace: default\n    user: default-auth\n  name: default-context\ncurrent-context: default-context\nkind: Config\npreferences: {{}}\nusers:\n- name: default-auth\n  user:\n    client-certificate: {pem_path}\n    client-key: {pem_path}\n"
        )
    }

    fn joined(paths: &Paths, ca: &TestCa, node: &str) {
        let pki = paths.kubelet_dir().join("pki");
        std::fs::create_dir_all(&pki).unwrap();
        std::fs::create_dir_all(paths.kubernetes_dir()).unwrap();
        std::fs::write(
            pki.join("kubelet-client-2026-11-21-01-00-00.pem"),
            ca.kubelet_pem(node),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "kubelet-client-2026-11-21-01-00-00.pem",
            pki.join("kubelet-client-current.pem"),
        )
        .unwrap();
        std::fs::write(
            paths.kubelet_conf(),
            kubelet_conf("/var/lib/kubelet/pki/kubelet-client-current.pem"),
        )
        .unwrap();
    }

    #[test]
    fn kubeconfig_flags_in_a_command_line() {
        assert!(cmdline_has_kubeconfig(b"/usr/bin/kubelet\0--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf\0--kubeconfig=/etc/kubernetes/kubelet.conf\0"));
        assert!(!cmdline_has_kubeconfig(
            b"/usr/bin/kubelet\0--config=/var/lib/kubelet/config.yaml\0"
        ));
        assert!(!cmdline_has_kubeconfig(b""));
    }

    #[test]
    fn a_bootstrapped_kubelet_conf_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let ca = TestCa::new();
        joined(&paths, &ca, "worker-1");
        let creds = check_kubelet_conf(&paths, std::slice::from_ref(&ca.der), "worker-1").unwrap();
        assert_eq!(creds.server, "https://127.0.0.1:6443");
        assert!(creds.summary.subject.contains("system:node:worker-1"));
    }

    #[test]
    fn a_deleted_client_certificate_is_the_anonymous_kubelet_case() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let ca = TestCa::new();
        joined(&paths, &ca, "worker-1");
        std::fs::remove_file(
            paths
                .kubelet_dir()
                .join("pki/kubelet-client-2026-11-21-01-00-00.pem"),
        )
        .unwrap();
        match check_kubelet_conf(&paths, std::slice::from_ref(&ca.der), "worker-1") {
            Err(KubeletConfProblem::NoCertificate(why)) => assert!(
                why.contains("kubelet-client-current.pem cannot be read"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn another_clusters_certificate_or_name_is_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let ca = TestCa::new();
        joined(&paths, &ca, "worker-1");
        assert!(matches!(
            check_kubelet_conf(&paths, &[TestCa::new().der], "worker-1"),
            Err(KubeletConfProblem::Invalid(_))
        ));
        assert!(matches!(
            check_kubelet_conf(&paths, std::slice::from_ref(&ca.der), "worker-2"),
            Err(KubeletConfProblem::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn timeouts_name_what_the_kubelet_is_doing() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let ca = TestCa::new();
        let diagnosis = async |seen: KubeletView| {
            let deadline = Instant::now() + Duration::from_millis(200);
            wait_for_tls_bootstrap(
                &paths,
                std::slice::from_ref(&ca.der),
                "n",
                deadline,
                async || seen,
            )
            .await
            .unwrap_err()
            .to_string()
        };
        let running = || KubeletView {
            active: true,
            ..Default::default()
        };

        let text = diagnosis(running()).await;
        assert!(text.contains("standalone mode"), "{text}");

        // kubeadm removes bootstrap-kubelet.conf when it gives up, but a kubelet the
        // agent started with it is not standalone.
        let started_with_it = KubeletView {
            had_bootstrap_conf: true,
            ..running()
        };
        let text = diagnosis(started_with_it.clone()).await;
        assert!(
            text.contains("no certificate signing request")
                && text.contains("kubeadm:kubelet-bootstrap"),
            "{text}"
        );
        let error = |status| crate::apiserver::ApiError {
            what: "listing certificate signing requests".into(),
            detail: format!("HTTP {status}"),
            status: Some(status),
        };
        let forbidden = KubeletView {
            csr_list_error: Some(error(403)),
            ..started_with_it.clone()
        };
        let text = diagnosis(forbidden).await;
        assert!(
            text.contains("no certificate signing request can be made")
                && text.contains("kubeadm:kubelet-bootstrap"),
            "{text}"
        );
        let unlisted = KubeletView {
            csr_list_error: Some(error(500)),
            ..started_with_it
        };
        let text = diagnosis(unlisted).await;
        assert!(text.contains("could not be listed (listing"), "{text}");

        let pending = KubeletView {
            pending_csrs: vec!["node-csr-abc".into()],
            ..running()
        };
        let text = diagnosis(pending).await;
        assert!(
            text.contains("kubectl certificate approve node-csr-abc"),
            "{text}"
        );

        let flagless = KubeletView {
            started_without_kubeconfig: true,
            ..running()
        };
        let text = diagnosis(flagless).await;
        assert!(text.contains("10-kubeadm.conf"), "{text}");

        let text = diagnosis(KubeletView::default()).await;
        assert!(text.contains("not running"), "{text}");

        let crashing = KubeletView {
            state: "activating (auto-restart)".into(),
            restarts: 3,
            pending_csrs: vec!["node-csr-abc".into()],
            ..Default::default()
        };
        let text = diagnosis(crashing).await;
        assert!(
            text.contains("not running (activating (auto-restart)), restarted 3 times")
                && text.contains("node-csr-abc"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_wait_ends_when_the_kubelet_writes_its_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let ca = TestCa::new();
        let pem = ca.kubelet_pem("worker-1");
        let p = paths.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let pki = p.kubelet_dir().join("pki");
            std::fs::write(pki.join("kubelet-client-x.pem"), pem).unwrap();
            std::os::unix::fs::symlink(
                "kubelet-client-x.pem",
                pki.join("kubelet-client-current.pem"),
            )
            .unwrap();
            std::fs::write(
                p.kubelet_conf(),
                kubelet_conf("/var/lib/kubelet/pki/kubelet-client-current.pem"),
            )
            .unwrap();
        });
        let creds = wait_for_tls_bootstrap(
            &paths,
            std::slice::from_ref(&ca.der),
            "worker-1",
            Instant::now() + Duration::from_secs(10),
            async || KubeletView {
                active: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(creds.summary.expires_in_secs > 0);
    }
}
