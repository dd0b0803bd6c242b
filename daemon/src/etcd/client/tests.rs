//! Tests of client.rs.

use super::*;

#[test]
fn etcd_messages_are_recognized() {
    let rpc = |code, message: &str| EtcdError::Rpc {
        endpoint: "https://10.0.0.11:2379".into(),
        call: "MemberPromote",
        code,
        message: message.into(),
    };
    let e = rpc(
        tonic::Code::FailedPrecondition,
        "etcdserver: can only promote a learner member which is in sync with leader",
    );
    assert!(e.is_learner_not_ready() && !e.try_elsewhere());
    assert!(
        rpc(
            tonic::Code::FailedPrecondition,
            "etcdserver: too many learner members in cluster"
        )
        .is_too_many_learners()
    );
    assert!(rpc(tonic::Code::NotFound, "etcdserver: member not found").is_member_not_found());
    assert!(rpc(tonic::Code::Unavailable, "etcdserver: no leader").try_elsewhere());
    let wrapped = EtcdError::NoEndpoint {
        tried: "a, b".into(),
        last: Box::new(e.clone()),
    };
    assert!(wrapped.is_learner_not_ready());
    assert_eq!(
        e.to_string(),
        "etcd at https://10.0.0.11:2379 refused MemberPromote: etcdserver: can only promote a learner member which is in sync with leader"
    );
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error_naming_the_endpoint() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let ca = crate::testutil::TestCa::new();
    let (cert, key) = ca.client("kube-apiserver-etcd-client", "", false);
    let client = Client::from_pem(ca.pem.as_bytes(), cert.as_bytes(), key.as_bytes());
    let ep = format!("https://127.0.0.1:{port}");
    let err = client.member_list(&ep).await.unwrap_err();
    assert!(matches!(err, EtcdError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(&ep), "{err}");
    assert!(err.try_elsewhere());
    let both = client
        .first(&[ep.clone(), ep.clone()], async |c, ep| c.status(ep).await)
        .await
        .unwrap_err();
    assert!(matches!(both, EtcdError::NoEndpoint { .. }));
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let files = TlsFiles::kubeadm(&crate::paths::Paths::new(dir.path()));
    assert!(files.missing().unwrap().ends_with("pki/etcd/ca.crt"));
    let err = Client::from_files(&files).unwrap_err();
    assert!(err.to_string().contains("ca.crt: cannot read"), "{err}");
}
