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
                KubeletConfProblem::Invalid(format!(
                    "{}: client certificate {} cannot be read: {e}",
                    conf.display(),
                    file.display()
                ))
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
#[derive(Debug, Clone, Default)]
pub struct KubeletView {
    /// Whether kubelet.service was active.
    pub active: bool,
    /// The running kubelet was started without --kubeconfig/--bootstrap-kubeconfig.
    pub started_without_kubeconfig: bool,
    /// Pending CSRs requested with this node's bootstrap token.
    pub pending_csrs: Vec<String>,
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
    let bootstrap = paths.bootstrap_kubelet_conf();
    if let Some(KubeletConfProblem::Invalid(why)) = problem {
        return format!("kubelet.conf is not usable: {why}");
    }
    if !seen.active {
        return "kubelet is not running, so it cannot perform TLS bootstrap; see `journalctl -u kubelet`".into();
    }
    if seen.started_without_kubeconfig {
        return "kubelet is running in standalone mode (\"kubeclient not set, assuming standalone kubelet\"): its unit passes no --kubeconfig or --bootstrap-kubeconfig, so it never contacts the API server; install kubeadm's drop-in (kubelet.service.d/10-kubeadm.conf, shipped with kubeadm) and restart kube-join-agent".into();
    }
    if !seen.pending_csrs.is_empty() {
        return format!(
            "kubelet's certificate signing request {} is pending approval: approve it on a control plane with `kubectl certificate approve {}`, or restore automatic approval for bootstrap tokens (kubeadm's csrapprover ClusterRoleBinding for system:bootstrappers)",
            seen.pending_csrs.join(", "),
            seen.pending_csrs.join(" ")
        );
    }
    if !bootstrap.exists() && !paths.kubelet_conf().exists() {
        return format!(
            "kubelet is running in standalone mode (\"kubeclient not set, assuming standalone kubelet\"): neither {} nor {} exists, so it never contacts the API server",
            paths.kubelet_conf().display(),
            bootstrap.display()
        );
    }
    format!(
        "kubelet is running with {} but has no client certificate yet, and no pending certificate signing request from this node's token is visible; see `journalctl -u kubelet` and `kubectl get csr`",
        bootstrap.display()
    )
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
            Err(KubeletConfProblem::Invalid(why)) => assert!(
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

        std::fs::write(paths.bootstrap_kubelet_conf(), "x").unwrap();
        let text = diagnosis(running()).await;
        assert!(text.contains("kubectl get csr"), "{text}");

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
