//! Tests of checks.rs.

use super::*;

fn learner(id: u64) -> Member {
    Member {
        id: MemberId(id),
        name: String::new(),
        peer_urls: vec!["https://10.0.0.13:2380".into()],
        client_urls: vec![],
        is_learner: true,
    }
}

#[test]
fn stale_learner_failure_names_member_and_command() {
    let f = EtcdFinding::StaleLearners {
        learners: vec![learner(0xdeadbeef)],
        endpoint: "https://10.0.0.11:2379".into(),
        removable: false,
    };
    let failure = f.failure().unwrap();
    assert_eq!(failure.class(), "etcd-stale-learner");
    let text = failure.to_string();
    assert!(text.contains("id deadbeef"), "{text}");
    assert!(text.contains("etcdctl --endpoints https://10.0.0.11:2379 --cacert /etc/kubernetes/pki/etcd/ca.crt --cert /etc/kubernetes/pki/apiserver-etcd-client.crt --key /etc/kubernetes/pki/apiserver-etcd-client.key member remove deadbeef"), "{text}");
    assert!(text.contains("remove_stale_learners"), "{text}");
    assert!(matches!(f.to_finding().verdict, Verdict::Fail { .. }));

    let allowed = EtcdFinding::StaleLearners {
        learners: vec![learner(1)],
        endpoint: "https://10.0.0.11:2379".into(),
        removable: true,
    };
    assert!(allowed.failure().is_none());
    assert!(matches!(allowed.to_finding().verdict, Verdict::Warn { .. }));
}

#[test]
fn unreachable_peers_name_the_url() {
    let mut m = learner(3);
    m.name = "cp3".into();
    m.is_learner = false;
    let f = EtcdFinding::PeersUnreachable {
        problems: vec![PeerProblem {
            member: m,
            url: "https://10.0.0.13:2380".into(),
            detail: "Connection refused (os error 111)".into(),
        }],
    };
    let failure = f.failure().unwrap();
    assert_eq!(failure.class(), "etcd-peer-unreachable");
    assert!(failure.to_string().contains(
        "https://10.0.0.13:2380 of cp3 (id 3, peer https://10.0.0.13:2380): Connection refused"
    ));
    assert_eq!(f.to_finding().check, "etcd");
}

#[tokio::test]
async fn closed_peer_ports_are_found_and_own_is_skipped() {
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let member = |id, port: u16| Member {
        id: MemberId(id),
        name: format!("cp{id}"),
        peer_urls: vec![format!("https://127.0.0.1:{port}")],
        client_urls: vec![],
        is_learner: false,
    };
    let own = format!("https://127.0.0.1:{closed_port}");
    let members = vec![
        member(1, open.local_addr().unwrap().port()),
        member(2, closed_port),
    ];
    // Member 2 shares "our" URL here: skipped.
    assert!(unreachable_peers(&members, &own, &[]).await.is_empty());
    let problems = unreachable_peers(&members, "https://127.0.0.9:2380", &[]).await;
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].member.id, MemberId(2));
    assert!(
        unreachable_peers(&members, "https://127.0.0.9:2380", &[MemberId(2)])
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn localhost_resolves() {
    assert!(resolve("localhost").await.is_ok());
    assert!(matches!(
        name_finding("does-not-exist.invalid").await,
        EtcdFinding::NameUnresolved { .. }
    ));
}

#[test]
fn configured_advertise_address_wins() {
    let ip: IpAddr = "10.0.0.12".parse().unwrap();
    assert_eq!(advertise_address(Some(ip), "10.0.0.1"), Some(ip));
    assert!(advertise_address(None, "127.0.0.1").is_some());
}
