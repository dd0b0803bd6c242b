//! Tests of tls.rs.

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
