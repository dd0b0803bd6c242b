//! The fake API server's hostile knobs, end to end against the real binary on
//! 127.0.0.1: the anonymous warm-up 403s (exact bodies, requests.log), the RBAC without
//! the cluster-info RoleBinding, the hostile cluster-info bodies (sizes, framing, the
//! server's memory, a client that goes away) and the kubelet's view of a cluster whose
//! bootstrap tokens may not create CSRs.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
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
    stderr: Arc<Mutex<Vec<String>>>,
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
        Self::start_with(knobs, &[])
    }

    /// The same with extra arguments.
    fn start_with(knobs: &str, extra: &[String]) -> Self {
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
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
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
            stderr,
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

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    fn wait_for_stderr(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no stderr line with {needle:?}; got {:#?}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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
    // A bootstrap token never reads cluster-info: kubeadm binds its Role to
    // system:anonymous only (real v1.20.2 answers 403).
    assert_eq!(s.get(CLUSTER_INFO, Some(TOKEN)).await.0, 403);
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
    assert_eq!(s.get(CLUSTER_INFO, Some(TOKEN)).await.0, 403);

    let log = std::fs::read_to_string(s.path("requests.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.ends_with(&format!(" GET {CLUSTER_INFO} user=system:anonymous 403"))),
        "{log}"
    );
    assert!(log.contains(&format!(
        " GET {CLUSTER_INFO} user=system:bootstrap:abcdef 403"
    )));
    assert!(!log.contains("0123456789abcdef"), "a token leaked: {log}");
}

/// Reads the whole body a chunk at a time, sampling the server's RSS.
async fn stream_all(s: &Server, resp: reqwest::Response) -> (u64, u64) {
    let mut resp = resp;
    let mut total = 0u64;
    let mut peak = 0u64;
    let mut n = 0u32;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        total += chunk.len() as u64;
        n += 1;
        if n.is_multiple_of(64) {
            peak = peak.max(s.rss_kib());
        }
    }
    (total, peak)
}

#[tokio::test]
async fn oversized_cluster_info_streams_in_flat_memory() {
    let s = Server::start(&format!(
        r#"{{{TOKENS}, "cluster_info_body": "oversized"}}"#
    ));
    // Warm the server up (TLS, a request) before taking the baseline.
    assert_eq!(s.get("/healthz", None).await.0, 200);
    let base = s.rss_kib();
    let resp = s
        .client()
        .get(format!("{}{CLUSTER_INFO}", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["content-length"], (64u64 << 20).to_string());
    let (total, peak) = stream_all(&s, resp).await;
    assert_eq!(total, 64 << 20);
    assert!(
        peak < base + 16 * 1024,
        "server RSS grew from {base} KiB to {peak} KiB"
    );
    s.wait_for_stderr(
        "cluster-info oversized body sent in full after 67108864 bytes",
        Duration::from_secs(5),
    );
    // Everything else is served as usual.
    assert_eq!(
        s.get(
            "/api/v1/namespaces/kube-system/configmaps/kubelet-config",
            Some(TOKEN)
        )
        .await
        .0,
        200
    );

    s.set_knobs(&format!(
        r#"{{{TOKENS}, "cluster_info_body": "oversized-chunked", "cluster_info_body_mib": 3}}"#
    ));
    let resp = s
        .client()
        .get(format!("{}{CLUSTER_INFO}", s.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers().get("content-length").is_none());
    assert_eq!(resp.headers()["transfer-encoding"], "chunked");
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len(), 3 << 20);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["kind"], "ConfigMap");
}

/// A bare TLS connection with one request written: dropping it closes the socket, as
/// a client that gives up does (reqwest keeps a half-read connection open).
async fn raw_get(s: &Server, path: &str) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::io::AsyncWriteExt;
    let ca = std::fs::read(s.path("ca.crt")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let addr = s.url.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    tls
}

#[tokio::test]
async fn endless_cluster_info_stops_when_the_client_goes_away() {
    use tokio::io::AsyncReadExt;
    let s = Server::start(&format!(r#"{{{TOKENS}, "cluster_info_body": "endless"}}"#));
    assert_eq!(s.get("/healthz", None).await.0, 200);
    let base = s.rss_kib();
    let mut conn = raw_get(&s, CLUSTER_INFO).await;
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    while got.len() < (1 << 20) {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "the body never ends");
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got[..got.len().min(512)]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(
        head.contains("content-type: application/json\r\n"),
        "{head}"
    );
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    // 640 KiB/s: a megabyte takes well over a second.
    assert!(
        start.elapsed() >= Duration::from_millis(1200),
        "{:?}",
        start.elapsed()
    );
    // A client that stops reading does not make the server buffer.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(s.rss_kib() < base + 16 * 1024);
    drop(conn);
    let line = s.wait_for_stderr(
        "cluster-info endless body stopped, the client went away after ",
        Duration::from_secs(10),
    );
    assert!(line.ends_with(" bytes"), "{line}");
    // The server carries on.
    assert_eq!(s.get("/healthz", None).await.0, 200);
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

#[tokio::test]
async fn warm_up_holds_tls_then_fails_readyz_as_a_starting_kube_apiserver() {
    let s = Server::start(&format!(
        r#"{{{TOKENS}, "tls_handshake_hold_secs": 1.5, "anonymous_forbidden_for_secs": 1.5, "readyz_failing_for_secs": 3}}"#
    ));
    // The port accepts, but no TLS handshake completes within a 0.5 s client timeout.
    let quick = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let url = format!("{}/readyz", s.url);
    let err = quick.get(&url).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(std::net::TcpStream::connect(s.url.trim_start_matches("https://")).is_ok());
    // A patient client is served once the window ends: anonymous 403 has ended too,
    // /readyz still fails.
    let started = Instant::now();
    let (code, body) = s.get("/readyz", None).await;
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(code, 500);
    assert!(body.contains("[-]poststarthook/rbac/bootstrap-roles failed: reason withheld\n"));
    assert!(body.ends_with("readyz check failed\n"));
    assert_eq!(s.get(CLUSTER_INFO, None).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(s.get("/readyz", None).await, (200, "ok".to_owned()));
}

#[tokio::test]
async fn a_deleted_token_keeps_authenticating_from_the_cache() {
    let s = Server::start(&format!(r#"{{{TOKENS}}}"#));
    let kubelet_config = "/api/v1/namespaces/kube-system/configmaps/kubelet-config";
    assert_eq!(s.get(kubelet_config, Some(TOKEN)).await.0, 200);
    // Deleted: its signature leaves cluster-info at once, the token still works.
    s.set_knobs("{}");
    let (_, info) = s.get(CLUSTER_INFO, None).await;
    assert!(!info.contains("jws-kubeconfig-abcdef"), "{info}");
    assert_eq!(s.get(kubelet_config, Some(TOKEN)).await.0, 200);
    // A token never seen valid is refused at once (failures are not cached).
    assert_eq!(
        s.get(kubelet_config, Some("ghijkl.0123456789abcdef"))
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn a_rotating_kubelet_gets_csr_names_from_the_server_and_registers_anonymously_first() {
    let s = Server::start(&format!(r#"{{{TOKENS}, "csr_approval": "manual"}}"#));
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
    // kubelet.conf first, pointing at a certificate that does not exist yet.
    bootstrap::write_kubeconfig(&root, "/etc/kubernetes/kubelet.conf", &boot, &store).unwrap();
    let clients = kja_fakes::kubelet::node::Clients {
        root: root.clone(),
        kubeconfig: "/etc/kubernetes/kubelet.conf".into(),
        anonymous: Some(boot.clone()),
    };
    let r = clients
        .client()
        .unwrap()
        .call(
            reqwest::Method::POST,
            "/api/v1/nodes",
            Some(&serde_json::json!({"metadata": {"name": "n1"}})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(
        r.error_text(),
        "nodes is forbidden: User \"system:anonymous\" cannot create resource \"nodes\" in API group \"\" at the cluster scope"
    );
    // Two attempts of the certificate manager: two keys, two generated names.
    let attempt = |root: Root, store: CertStore, boot: Resolved| {
        tokio::spawn(async move { bootstrap::rotate_once(&root, &store, &boot, "n1").await })
    };
    let a = attempt(root.clone(), store.clone(), boot.clone());
    let b = attempt(root.clone(), store.clone(), boot.clone());
    let csrs = s.path("csrs");
    let deadline = Instant::now() + Duration::from_secs(10);
    let names = loop {
        let names: Vec<String> = std::fs::read_dir(&csrs)
            .map(|d| {
                d.flatten()
                    .map(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .trim_end_matches(".json")
                            .to_owned()
                    })
                    .collect()
            })
            .unwrap_or_default();
        if names.len() == 2 {
            break names;
        }
        assert!(Instant::now() < deadline, "CSRs: {names:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for n in &names {
        assert!(n.starts_with("csr-") && n.len() == 9, "{names:?}");
    }
    assert_ne!(names[0], names[1]);
    // Automatic approval again: both pending CSRs are signed on their next poll.
    s.set_knobs(&format!(r#"{{{TOKENS}, "csr_approval": "auto"}}"#));
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    assert!(root.path(store.current()).exists());
    assert!(bootstrap::check_kubeconfig(&root, "/etc/kubernetes/kubelet.conf").is_ok());
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn an_overloaded_server_answers_429_at_once_with_retry_after() {
    let also = free_port();
    let s = Server::start_with(
        &format!(r#"{{{TOKENS}, "max_inflight": 2, "response_delay_ms": 800}}"#),
        &["--also-listen".into(), format!("127.0.0.1:{also}")],
    );
    let client = s.client();
    let started = Instant::now();
    let requests = (0..5).map(|i| {
        let client = client.clone();
        let url = if i == 0 {
            format!("https://127.0.0.1:{also}{CLUSTER_INFO}")
        } else {
            format!("{}{CLUSTER_INFO}", s.url)
        };
        tokio::spawn(async move {
            let resp = client.get(url).send().await.unwrap();
            let retry = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
            let took = started.elapsed();
            (
                resp.status().as_u16(),
                retry,
                ct,
                resp.text().await.unwrap(),
                took,
            )
        })
    });
    let mut answers = Vec::new();
    for r in requests.collect::<Vec<_>>() {
        answers.push(r.await.unwrap());
    }
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let busy: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert_eq!((ok, busy.len()), (2, 3), "{answers:#?}");
    for (_, retry, ct, body, took) in busy {
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(ct, "text/plain; charset=utf-8");
        assert_eq!(body, "Too many requests, please try again later.\n");
        // Refused at once, not after the slow handler's 800 ms.
        assert!(*took < Duration::from_millis(700), "{took:?}");
    }
    // Probes are never refused, and the limit frees up once the handlers are done.
    assert_eq!(s.get("/healthz", None).await.0, 200);
    assert_eq!(s.get(CLUSTER_INFO, None).await.0, 200);
    let log = std::fs::read_to_string(s.path("requests.log")).unwrap();
    assert_eq!(
        log.lines()
            .filter(|l| l.ends_with(" user=system:anonymous retry-after=1 429"))
            .count()
            + log
                .lines()
                .filter(|l| l.contains(" via=127.0.0.1:") && l.ends_with(" retry-after=1 429"))
                .count(),
        3,
        "{log}"
    );
    assert!(
        log.contains(&format!("user=system:anonymous via=127.0.0.1:{also} ")),
        "{log}"
    );
}
