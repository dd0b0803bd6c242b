use super::*;
use crate::testutil::TestCa;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Vectors computed with openssl (`openssl x509 -pubkey | openssl pkey -pubin -outform der
/// | openssl dgst -sha256`), the method kubeadm's pubkeypin documents.
#[test]
fn pins_match_openssl_vectors() {
    for (cert, pin) in [
        ("pin-vector-ca.crt", "pin-vector-ca.pin"),
        ("pin-vector-ec.crt", "pin-vector-ec.pin"),
    ] {
        let certs = pem_certificates(&fixture(cert), cert).unwrap();
        let expected = String::from_utf8(fixture(pin)).unwrap();
        assert_eq!(spki_pin(&certs[0], cert).unwrap().0, expected.trim());
    }
}

#[test]
fn garbage_is_not_a_certificate() {
    assert!(pem_certificates(b"hello", "x").is_err());
    let bogus = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let certs = pem_certificates(bogus, "x").unwrap();
    assert!(matches!(
        spki_pin(&certs[0], "x"),
        Err(CertProblem::Unparsable { .. })
    ));
}

#[test]
fn a_good_kubelet_certificate_passes() {
    let ca = TestCa::new();
    let pem = ca.kubelet_pem("worker-1");
    let summary = check_kubelet_client_cert(
        pem.as_bytes(),
        pem.as_bytes(),
        std::slice::from_ref(&ca.der),
        "worker-1",
        "pem",
    )
    .unwrap();
    assert!(summary.expires_in_secs > 0);
    assert!(summary.subject.contains("system:node:worker-1"));
}

#[test]
fn each_defect_is_named() {
    let ca = TestCa::new();
    let roots = [ca.der.clone()];
    let check = |cert: &str, key: &str, node: &str| {
        check_kubelet_client_cert(cert.as_bytes(), key.as_bytes(), &roots, node, "pem")
    };

    let (cert, key) = ca.client("system:node:worker-1", "system:nodes", false);
    assert!(matches!(
        check(&cert, &key, "worker-2"),
        Err(CertProblem::WrongSubject { .. })
    ));

    let (cert, key) = ca.client("system:node:worker-1", "system:masters", false);
    assert!(matches!(
        check(&cert, &key, "worker-1"),
        Err(CertProblem::WrongSubject { .. })
    ));

    let (cert, _) = ca.client("system:node:worker-1", "system:nodes", false);
    let (_, other_key) = ca.client("system:node:worker-1", "system:nodes", false);
    assert!(matches!(
        check(&cert, &other_key, "worker-1"),
        Err(CertProblem::KeyMismatch { .. })
    ));

    let (cert, key) = ca.client("system:node:worker-1", "system:nodes", true);
    match check(&cert, &key, "worker-1") {
        Err(CertProblem::Untrusted { reason, .. }) => {
            assert!(reason.to_lowercase().contains("expired"), "{reason}")
        }
        other => panic!("expected expiry, got {other:?}"),
    }

    let stranger = TestCa::new();
    let (cert, key) = stranger.client("system:node:worker-1", "system:nodes", false);
    assert!(matches!(
        check(&cert, &key, "worker-1"),
        Err(CertProblem::Untrusted { .. })
    ));

    assert!(matches!(
        check(&cert, "", "worker-1"),
        Err(CertProblem::NoKey { .. })
    ));
    assert!(matches!(
        check("", &key, "worker-1"),
        Err(CertProblem::NoCertificate { .. })
    ));
}
