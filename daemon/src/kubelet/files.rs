//! kubeadm's kubelet files (phases/kubelet): the gate opens only once all three exist
//! and make sense, so kubelet never starts without its config (seed 001's crash loop)
//! and never against another cluster's CA.

use super::watch::{self, Check};
use crate::failure::Failure;
use crate::kubeconfig::Kubeconfig;
use crate::paths::Paths;
use crate::pki;
use rustls::pki_types::CertificateDer;
use std::path::Path;
use tokio::time::Instant;

/// Why the files are not ready yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilesNotReady {
    /// A file does not exist (yet).
    Missing(String),
    /// A file exists but is wrong.
    Invalid(String),
}

/// Checks bootstrap-kubelet.conf, config.yaml and kubeadm-flags.env once.
pub fn check_kubelet_files(
    paths: &Paths,
    ca: &[CertificateDer<'static>],
) -> Result<(), FilesNotReady> {
    let bootstrap = paths.bootstrap_kubelet_conf();
    let config = paths.kubelet_config_yaml();
    let flags = paths.kubeadm_flags_env();
    for file in [&bootstrap, &config, &flags] {
        if !file.exists() {
            return Err(FilesNotReady::Missing(file.display().to_string()));
        }
    }
    check_bootstrap_kubeconfig(&bootstrap, ca).map_err(FilesNotReady::Invalid)?;
    check_kubelet_config(&config).map_err(FilesNotReady::Invalid)?;
    check_flags(&flags).map_err(FilesNotReady::Invalid)?;
    Ok(())
}

fn check_bootstrap_kubeconfig(path: &Path, ca: &[CertificateDer<'static>]) -> Result<(), String> {
    let kc = Kubeconfig::read(path).map_err(|e| e.to_string())?;
    kc.server().map_err(|e| e.to_string())?;
    let ca_pem = kc.ca_pem(|p| p.to_path_buf()).map_err(|e| e.to_string())?;
    let certs =
        pki::pem_certificates(&ca_pem, &path.display().to_string()).map_err(|e| e.to_string())?;
    if !ca.is_empty() && !certs.iter().any(|c| ca.contains(c)) {
        return Err(format!(
            "{}: its CA is not the cluster CA verified during discovery",
            path.display()
        ));
    }
    let user = kc.user().map_err(|e| e.to_string())?;
    if user.token.is_none()
        && user.client_certificate.is_none()
        && user.client_certificate_data.is_none()
    {
        return Err(format!(
            "{}: its user has neither a token nor a client certificate",
            path.display()
        ));
    }
    Ok(())
}

fn check_kubelet_config(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let value: serde_norway::Value =
        serde_norway::from_str(&text).map_err(|e| format!("{}: not YAML: {e}", path.display()))?;
    let kind = value.get("kind").and_then(|k| k.as_str());
    let api = value
        .get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or("");
    if kind != Some("KubeletConfiguration") || !api.starts_with("kubelet.config.k8s.io/") {
        return Err(format!(
            "{}: not a KubeletConfiguration (kind {kind:?}, apiVersion {api:?})",
            path.display()
        ));
    }
    Ok(())
}

fn check_flags(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    if text
        .lines()
        .any(|l| l.trim_start().starts_with("KUBELET_KUBEADM_ARGS="))
    {
        Ok(())
    } else {
        Err(format!("{}: no KUBELET_KUBEADM_ARGS= line", path.display()))
    }
}

/// Waits (inotify) until the files pass `check_kubelet_files`, or `deadline`.
pub async fn wait_for_kubelet_files(
    paths: &Paths,
    ca: &[CertificateDer<'static>],
    deadline: Instant,
) -> Result<(), Failure> {
    wait_for_kubelet_files_then(paths, ca, deadline, || ()).await
}

/// [`wait_for_kubelet_files`], calling `then` the moment they pass, before anything
/// else runs: kubeadm reloads systemd a few milliseconds after its last file, and
/// what must be on disk by then (the lifted gate) is written here.
pub async fn wait_for_kubelet_files_then<R>(
    paths: &Paths,
    ca: &[CertificateDer<'static>],
    deadline: Instant,
    mut then: impl FnMut() -> R,
) -> Result<R, Failure> {
    let dirs = [paths.kubernetes_dir(), paths.kubelet_dir()];
    let result = watch::until(&dirs, deadline, || match check_kubelet_files(paths, ca) {
        Ok(()) => Check::Ready(then()),
        Err(reason) => Check::NotYet(reason),
    })
    .await
    .map_err(|e| Failure::Local {
        detail: format!("watching kubeadm's kubelet files: {e}"),
    })?;
    result.map_err(|reason| Failure::KubeletFilesInvalid {
        detail: match reason {
            FilesNotReady::Missing(f) => format!("{f} was not written in time"),
            FilesNotReady::Invalid(why) => why,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TestCa;
    use base64::Engine;
    use std::time::Duration;

    fn bootstrap_conf(ca_pem: &str) -> String {
        format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: https://127.0.0.1:6443\n  name: kubernetes\ncontexts:\n- context:\n    cluster: kubernetes\n    user: tls-bootstrap-token-user\n  name: tls-bootstrap-token-user@kubernetes\ncurrent-context: tls-bootstrap-token-user@kubernetes\nkind: Config\nusers:\n- name: tls-bootstrap-token-user\n  user:\n    token: abcdef.0123456789abcdef\n",
            base64::engine::general_purpose::STANDARD.encode(ca_pem)
        )
    }

    fn write_all(paths: &Paths, ca: &TestCa) {
        std::fs::create_dir_all(paths.kubernetes_dir()).unwrap();
        std::fs::create_dir_all(paths.kubelet_dir()).unwrap();
        std::fs::write(paths.bootstrap_kubelet_conf(), bootstrap_conf(&ca.pem)).unwrap();
        std::fs::write(paths.kubelet_config_yaml(), "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: systemd\n").unwrap();
        std::fs::write(paths.kubeadm_flags_env(), "KUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock\"\n").unwrap();
    }

    #[test]
    fn all_three_valid_files_pass() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let ca = TestCa::new();
        assert!(matches!(
            check_kubelet_files(&paths, std::slice::from_ref(&ca.der)),
            Err(FilesNotReady::Missing(_))
        ));
        write_all(&paths, &ca);
        check_kubelet_files(&paths, std::slice::from_ref(&ca.der)).unwrap();
    }

    #[test]
    fn each_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let ca = TestCa::new();
        write_all(&paths, &ca);
        let other = TestCa::new();
        match check_kubelet_files(&paths, std::slice::from_ref(&other.der)) {
            Err(FilesNotReady::Invalid(why)) => assert!(
                why.contains("bootstrap-kubelet.conf") && why.contains("not the cluster CA")
            ),
            other => panic!("{other:?}"),
        }
        std::fs::write(paths.kubelet_config_yaml(), "kind: Pod\n").unwrap();
        match check_kubelet_files(&paths, std::slice::from_ref(&ca.der)) {
            Err(FilesNotReady::Invalid(why)) => assert!(why.contains("config.yaml")),
            other => panic!("{other:?}"),
        }
        write_all(&paths, &ca);
        std::fs::write(paths.kubeadm_flags_env(), "").unwrap();
        match check_kubelet_files(&paths, std::slice::from_ref(&ca.der)) {
            Err(FilesNotReady::Invalid(why)) => assert!(why.contains("KUBELET_KUBEADM_ARGS")),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn the_wait_ends_when_the_last_file_lands() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let ca = TestCa::new();
        let writer_paths = paths.clone();
        let pem = ca.pem.clone();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let p = &writer_paths;
            std::fs::write(p.bootstrap_kubelet_conf(), bootstrap_conf(&pem)).unwrap();
            std::fs::write(
                p.kubelet_config_yaml(),
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n",
            )
            .unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            std::fs::write(p.kubeadm_flags_env(), "KUBELET_KUBEADM_ARGS=\"\"\n").unwrap();
        });
        let started = Instant::now();
        wait_for_kubelet_files(
            &paths,
            std::slice::from_ref(&ca.der),
            Instant::now() + Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn the_wait_times_out_naming_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let err = wait_for_kubelet_files(&paths, &[], Instant::now() + Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(err.class(), "kubelet-files-invalid");
        assert!(err.to_string().contains("bootstrap-kubelet.conf"));
    }
}
