//! The fake API server's hostile knobs, end to end against the real binary on
//! 127.0.0.1: the anonymous warm-up 403s (exact bodies, requests.log), the RBAC without
//! the cluster-info RoleBinding and the kubelet's view of a cluster whose bootstrap
//! tokens may not create CSRs.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kja_fakes::fsroot::Root;
use kja_fakes::kubeconfig::{Auth, Resolved};
use kja_fakes::kubelet::bootstrap::{self, CertStore, ObtainError};

const TOKEN: &str = "abcdef.0123456789abcdef";
const TOKENS: &str = r#""tokens":[{"id":"abcdef","secret":"0123456789abcdef"}]"#;
const CLUSTER_INFO: &str = "/api/v1/namespaces/kube-public/configmaps/cluster-info";

struct Server {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts fake-apiserver with `knobs` already in place (present at start).
    fn start(knobs: &str) -> Self {
        kja_fakes::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("knobs.json"), knobs).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_fake-apiserver"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--state-dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !dir.path().join("ready").exists() {
            assert!(Instant::now() < deadline, "fake-apiserver did not start");
            assert!(child.try_wait().unwrap().is_none(), "fake-apiserver exited");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            dir,
            url: format!("https://127.0.0.1:{port}"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn set_knobs(&self, knobs: &str) {
        let tmp = self.path("knobs.json.tmp");
        std::fs::write(&tmp, knobs).unwrap();
        std::fs::rename(tmp, self.path("knobs.json")).unwrap();
    }

    fn client(&self) -> reqwest::Client {
        let ca = std::fs::read(self.path("ca.crt")).unwrap();
        reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).unwrap())
            .no_proxy()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap()
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut req = self.client().get(format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

#[tokio::test]
async fn anonymous_warm_up_then_missing_cluster_info_binding() {
    let s = Server::start(&format!(
        r#"{{{TOKENS}, "anonymous_forbidden_for_secs": 3}}"#
    ));
    let started = Instant::now();
    let (code, body) = s.get(CLUSTER_INFO, None).await;
    assert_eq!(code, 403);
    assert_eq!(
        body,
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"configmaps \"cluster-info\" is forbidden: User \"system:anonymous\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"kube-public\"","reason":"Forbidden","details":{"name":"cluster-info","kind":"configmaps"},"code":403}"#
    );
    let (code, body) = s.get("/readyz", None).await;
    assert_eq!(code, 403);
    assert_eq!(
        body,
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"forbidden: User \"system:anonymous\" cannot get path \"/readyz\"","reason":"Forbidden","details":{},"code":403}"#
    );
    // Only anonymous users: the bootstrap token reads cluster-info meanwhile.
    assert_eq!(s.get(CLUSTER_INFO, Some(TOKEN)).await.0, 200);
    // The window counts from the start (the knob was there): then 200.
    let left = Duration::from_secs(3).saturating_sub(started.elapsed());
    tokio::time::sleep(left + Duration::from_millis(300)).await;
    assert_eq!(s.get(CLUSTER_INFO, None).await.0, 200);
    assert_eq!(s.get("/readyz", None).await, (200, "ok".to_owned()));

    // Without kubeadm's bootstrap-signer-clusterinfo RoleBinding anonymous users keep
    // what system:public-info-viewer grants, and nothing else.
    s.set_knobs(&format!(r#"{{{TOKENS}, "anonymous_forbidden": true}}"#));
    let (code, body) = s.get(CLUSTER_INFO, None).await;
    assert_eq!(code, 403);
    assert!(body.contains(r#"User \"system:anonymous\" cannot get resource \"configmaps\""#));
    assert_eq!(s.get("/healthz", None).await, (200, "ok".to_owned()));
    assert_eq!(s.get("/version", None).await.0, 200);
    assert_eq!(s.get("/healthz/etcd", None).await.0, 403);
    assert_eq!(s.get(CLUSTER_INFO, Some(TOKEN)).await.0, 200);

    let log = std::fs::read_to_string(s.path("requests.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.ends_with(&format!(" GET {CLUSTER_INFO} user=system:anonymous 403"))),
        "{log}"
    );
    assert!(log.contains(&format!(
        " GET {CLUSTER_INFO} user=system:bootstrap:abcdef 200"
    )));
    assert!(!log.contains("0123456789abcdef"), "a token leaked: {log}");
}

#[tokio::test]
async fn kubelet_sees_upstreams_403_when_bootstrap_tokens_may_not_create_csrs() {
    let s = Server::start(&format!(r#"{{{TOKENS}, "csr_create_forbidden": true}}"#));
    let node = tempfile::tempdir().unwrap();
    let root = Root::at(node.path());
    let store = CertStore {
        dir: "/var/lib/kubelet/pki".into(),
    };
    let boot = Resolved {
        server: s.url.clone(),
        ca_pem: std::fs::read(s.path("ca.crt")).unwrap(),
        auth: Auth::Token(TOKEN.into()),
    };
    let err = bootstrap::obtain(&root, &store, &boot, "n1")
        .await
        .unwrap_err();
    assert!(matches!(err, ObtainError::Request(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "cannot create certificate signing request: certificatesigningrequests.certificates.k8s.io is forbidden: User \"system:bootstrap:abcdef\" cannot create resource \"certificatesigningrequests\" in API group \"certificates.k8s.io\" at the cluster scope"
    );
    let log = std::fs::read_to_string(s.path("requests.log")).unwrap();
    assert!(log.contains(
        " POST /apis/certificates.k8s.io/v1/certificatesigningrequests user=system:bootstrap:abcdef 403"
    ));
    // With the binding back, the same key and CSR name get a certificate.
    s.set_knobs(&format!(r#"{{{TOKENS}}}"#));
    bootstrap::obtain(&root, &store, &boot, "n1").await.unwrap();
    assert!(root.path(store.current()).exists());
}
