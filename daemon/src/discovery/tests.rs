//! Discovery against a small in-process TLS server that serves canned cluster-info.

use super::*;
use crate::testutil::TestCa;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "0123456789abcdef";

fn token() -> BootstrapToken {
    BootstrapToken::parse(&format!("abcdef.{SECRET}")).unwrap()
}

fn sign(payload: &str, id: &str, secret: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"HS256","kid":"{id}"}}"#));
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!(
        "{header}..{}",
        URL_SAFE_NO_PAD.encode(ring::hmac::sign(&key, input.as_bytes()))
    )
}

fn kubeconfig(ca_pem: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: https://127.0.0.1:{port}\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\nkind: Config\npreferences: {{}}\nusers: null\n",
        STANDARD.encode(ca_pem)
    )
}

fn cluster_info(kubeconfig: &str, sigs: &[(&str, String)]) -> String {
    let mut data = serde_json::json!({ "kubeconfig": kubeconfig });
    for (id, sig) in sigs {
        data[format!("jws-kubeconfig-{id}")] = serde_json::Value::String(sig.clone());
    }
    serde_json::json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "cluster-info"}, "data": data})
        .to_string()
}

/// A TLS server whose certificate is issued by `ca`; answers connection N with
/// `bodies[N]` (HTTP/1.1, Date header, connection close).
async fn serve(ca: &TestCa, bodies: Vec<(u16, String)>) -> Endpoint {
    let (cert, key) = ca.server(&["127.0.0.1"]);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert],
        rustls::pki_types::PrivateKeyDer::try_from(key).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = Arc::new(Mutex::new(bodies.into_iter()));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let (status, body) = bodies.lock().unwrap().next().unwrap_or((500, "{}".into()));
                let date = httpdate::fmt_http_date(SystemTime::now());
                // An overloaded server says when to come back.
                let retry = if status == 429 {
                    "retry-after: 3\r\n"
                } else {
                    ""
                };
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ndate: {date}\r\n{retry}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Endpoint {
        host: "127.0.0.1".into(),
        port,
    }
}

/// Reserves a port for a server started afterwards, so cluster-info can name it.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn serve_cluster_info(ca: &TestCa, make: impl Fn(&str) -> Vec<String>) -> (Endpoint, CaPin) {
    let kc = kubeconfig(&ca.pem, free_port());
    let bodies = make(&kc).into_iter().map(|b| (200, b)).collect();
    let endpoint = serve(ca, bodies).await;
    (endpoint, pki::spki_pin(&ca.der, "ca").unwrap())
}

#[tokio::test]
async fn verified_discovery_returns_the_pinned_ca() {
    let ca = TestCa::new();
    let (ep, pin) = serve_cluster_info(&ca, |kc| {
        let body = cluster_info(
            kc,
            &[
                ("abcdef", sign(kc, "abcdef", SECRET)),
                ("zzzzzz", "junk".into()),
            ],
        );
        vec![body.clone(), body]
    })
    .await;
    let info = discover(&ep, &token(), std::slice::from_ref(&pin))
        .await
        .unwrap();
    assert_eq!(info.ca, vec![ca.der.clone()]);
    assert!(info.server.starts_with("https://127.0.0.1:"));
    assert!(info.clock_skew_secs.unwrap().abs() <= 2);
}

#[tokio::test]
async fn missing_signature_means_unknown_or_expired_token() {
    let ca = TestCa::new();
    let (ep, pin) = serve_cluster_info(&ca, |kc| {
        vec![cluster_info(kc, &[("other1", sign(kc, "other1", SECRET))])]
    })
    .await;
    let err = discover(&ep, &token(), &[pin]).await.unwrap_err();
    assert!(matches!(err, DiscoveryError::TokenUnknown { ref token_id } if token_id == "abcdef"));
    assert!(err.to_string().contains("kubeadm token create"));
    assert!(!err.to_string().contains(SECRET));
}

#[tokio::test]
async fn a_signature_with_another_secret_is_rejected() {
    let ca = TestCa::new();
    let (ep, pin) = serve_cluster_info(&ca, |kc| {
        vec![cluster_info(
            kc,
            &[("abcdef", sign(kc, "abcdef", "ffffffffffffffff"))],
        )]
    })
    .await;
    let err = discover(&ep, &token(), &[pin]).await.unwrap_err();
    assert!(matches!(err, DiscoveryError::BadSignature { .. }), "{err}");
}

#[tokio::test]
async fn pin_mismatch_names_both_hashes() {
    let ca = TestCa::new();
    let (ep, actual) = serve_cluster_info(&ca, |kc| {
        vec![cluster_info(kc, &[("abcdef", sign(kc, "abcdef", SECRET))])]
    })
    .await;
    let wrong = CaPin(format!("sha256:{}", "ab".repeat(32)));
    let err = discover(&ep, &token(), std::slice::from_ref(&wrong))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DiscoveryError::CaPinMismatch { .. }));
    assert!(
        text.contains(&wrong.0) && text.contains(&actual.0),
        "{text}"
    );
}

#[tokio::test]
async fn a_server_whose_certificate_is_not_from_the_published_ca_fails_identity() {
    let published = TestCa::new();
    let serving = TestCa::new();
    let kc = kubeconfig(&published.pem, free_port());
    let body = cluster_info(&kc, &[("abcdef", sign(&kc, "abcdef", SECRET))]);
    let ep = serve(&serving, vec![(200, body.clone()), (200, body)]).await;
    let pin = pki::spki_pin(&published.der, "ca").unwrap();
    let err = discover(&ep, &token(), &[pin]).await.unwrap_err();
    assert!(
        matches!(err, DiscoveryError::ServerIdentity { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn content_changing_between_fetches_is_refused() {
    let ca = TestCa::new();
    let (ep, pin) = serve_cluster_info(&ca, |kc| {
        let other = kc.replace("preferences: {}", "preferences: {colors: true}");
        vec![
            cluster_info(kc, &[("abcdef", sign(kc, "abcdef", SECRET))]),
            cluster_info(&other, &[("abcdef", sign(&other, "abcdef", SECRET))]),
        ]
    })
    .await;
    let err = discover(&ep, &token(), &[pin]).await.unwrap_err();
    assert!(
        matches!(err, DiscoveryError::ServerIdentity { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn server_errors_and_refused_connections_are_transient() {
    let ca = TestCa::new();
    let ep = serve(&ca, vec![(503, "{}".into())]).await;
    let pin = pki::spki_pin(&ca.der, "ca").unwrap();
    let err = discover(&ep, &token(), std::slice::from_ref(&pin))
        .await
        .unwrap_err();
    assert!(err.is_outage() && !err.is_verified(), "{err}");

    let closed = Endpoint {
        host: "127.0.0.1".into(),
        port: free_port(),
    };
    let err = discover(&closed, &token(), &[pin]).await.unwrap_err();
    assert!(err.is_outage() && !err.is_verified(), "{err}");
}

#[tokio::test]
async fn an_overloaded_server_is_busy_and_says_when_to_come_back() {
    let ca = TestCa::new();
    let ep = serve(&ca, vec![(429, "{}".into()), (503, "{}".into())]).await;
    let pin = pki::spki_pin(&ca.der, "ca").unwrap();
    let err = discover(&ep, &token(), std::slice::from_ref(&pin))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DiscoveryError::Busy { status: 429, .. }) && err.is_outage(),
        "{err}"
    );
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    let err = discover(&ep, &token(), &[pin]).await.unwrap_err();
    assert!(
        matches!(
            err,
            DiscoveryError::Busy {
                status: 503,
                retry_after: None,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_starting_api_servers_403_is_named_and_not_final() {
    let ca = TestCa::new();
    let forbidden = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"configmaps \"cluster-info\" is forbidden: User \"system:anonymous\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"kube-public\"","reason":"Forbidden","details":{"name":"cluster-info","kind":"configmaps"},"code":403}"#;
    let ep = serve(&ca, vec![(403, forbidden.into()), (401, "not json".into())]).await;
    let pin = pki::spki_pin(&ca.der, "ca").unwrap();
    let err = discover(&ep, &token(), std::slice::from_ref(&pin))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DiscoveryError::Refused { status: 403, .. }),
        "{err}"
    );
    assert!(!err.is_verified() && !err.is_outage(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("HTTP 403")
            && text.contains("system:anonymous")
            && text.contains("kubeadm:bootstrap-signer-clusterinfo"),
        "{text}"
    );
    let err = discover(&ep, &token(), &[pin]).await.unwrap_err();
    assert!(
        matches!(err, DiscoveryError::Refused { status: 401, .. }) && !err.is_verified(),
        "{err}"
    );
    assert!(err.to_string().contains("anonymous"), "{err}");
}

#[tokio::test]
async fn an_oversized_cluster_info_is_refused_unread_and_not_final() {
    let ca = TestCa::new();
    let ep = serve(
        &ca,
        vec![(200, " ".repeat(crate::body::CLUSTER_INFO_LIMIT + 1))],
    )
    .await;
    let pin = pki::spki_pin(&ca.der, "ca").unwrap();
    let err = discover(&ep, &token(), &[pin]).await.unwrap_err();
    assert!(
        matches!(err, DiscoveryError::InvalidClusterInfo { .. }) && !err.is_verified(),
        "{err}"
    );
    assert!(err.to_string().contains("larger than 2048 KiB"), "{err}");
}

#[tokio::test]
async fn only_the_signature_and_the_pin_are_verified_failures() {
    let ca = TestCa::new();
    let (ep, _) = serve_cluster_info(&ca, |kc| {
        vec![
            cluster_info(kc, &[("abcdef", sign(kc, "abcdef", "ffffffffffffffff"))]),
            cluster_info(kc, &[("abcdef", sign(kc, "abcdef", SECRET))]),
            "not json".into(),
        ]
    })
    .await;
    let wrong = CaPin(format!("sha256:{}", "ab".repeat(32)));
    let bad_signature = discover(&ep, &token(), std::slice::from_ref(&wrong))
        .await
        .unwrap_err();
    assert!(bad_signature.is_verified(), "{bad_signature}");
    let mismatch = discover(&ep, &token(), std::slice::from_ref(&wrong))
        .await
        .unwrap_err();
    assert!(mismatch.is_verified(), "{mismatch}");
    let garbage = discover(&ep, &token(), &[wrong]).await.unwrap_err();
    assert!(!garbage.is_verified(), "{garbage}");
}

#[tokio::test]
async fn a_certificate_authority_file_named_by_cluster_info_is_never_read() {
    // A FIFO blocks whoever opens it: reading it would hang discovery for good.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("ca.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let ca = TestCa::new();
    let kc = format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority: {}\n    server: https://127.0.0.1:{}\n  name: \"\"\nkind: Config\n",
        fifo.display(),
        free_port()
    );
    let body = cluster_info(&kc, &[("abcdef", sign(&kc, "abcdef", SECRET))]);
    let ep = serve(&ca, vec![(200, body)]).await;
    let pin = pki::spki_pin(&ca.der, "ca").unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), discover(&ep, &token(), &[pin]))
        .await
        .expect("discovery did not hang on the FIFO")
        .unwrap_err();
    assert!(
        matches!(err, DiscoveryError::InvalidClusterInfo { .. })
            && err.to_string().contains("certificate-authority file"),
        "{err}"
    );
}

#[test]
fn malformed_cluster_info_is_invalid_not_a_panic() {
    for body in [
        "",
        "null",
        "{}",
        r#"{"data": 1}"#,
        r#"{"data": {}}"#,
        r#"{"data": {"kubeconfig": 5}}"#,
        r#"{"data": {"kubeconfig": "x", "jws-kubeconfig-abcdef": 1}}"#,
    ] {
        let err = parse_cluster_info(body.as_bytes(), "abcdef", "ep").unwrap_err();
        assert!(
            matches!(err, DiscoveryError::InvalidClusterInfo { .. }),
            "{body}"
        );
    }
}

proptest::proptest! {
    #[test]
    fn cluster_info_parser_never_panics(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
        let _ = parse_cluster_info(&body, "abcdef", "ep");
    }
}
