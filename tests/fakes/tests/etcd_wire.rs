//! The agent's etcd client (reused by the fake kubeadm) against a real etcd 3.4
//! (Debian's etcd-server, installed by tests/setup.sh): member list, learner add,
//! etcd's refusals word for word, promote, remove, status. Fails without /usr/bin/etcd.

use std::net::{IpAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kja_fakes::kubepki::{Authority, Leaf, etcd_member_leaf};
use kube_join_agent::etcd::{Client, MemberId};

struct Etcd(Child);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A single-member etcd on 127.0.0.1 with kubeadm-like TLS; its client certificate.
struct Single {
    _etcd: Etcd,
    ca: Authority,
    client_cert: String,
    client_key: String,
    curl: String,
}

fn start_single(dir: &std::path::Path) -> Single {
    kja_fakes::install_crypto_provider();
    assert!(
        std::path::Path::new("/usr/bin/etcd").exists(),
        "/usr/bin/etcd is missing: run tests/setup.sh (Debian etcd-server)"
    );
    let ca = Authority::generate("etcd-ca").unwrap();
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let (server, server_key) = ca.issue(&etcd_member_leaf("m1", lo)).unwrap();
    let (client_cert, client_key) = ca
        .issue(&Leaf {
            cn: "kube-apiserver-etcd-client".into(),
            client: true,
            ..Leaf::default()
        })
        .unwrap();
    let w = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let ca_path = w("ca.crt", &ca.cert_pem);
    let cert = w("server.crt", &server);
    let key = w("server.key", &server_key);
    let (cport, pport) = (free_port(), free_port());
    let curl = format!("https://127.0.0.1:{cport}");
    let purl = format!("https://127.0.0.1:{pport}");
    let child = Command::new("/usr/bin/etcd")
        .args(["--name", "m1", "--data-dir"])
        .arg(dir.join("data"))
        .args([
            "--listen-client-urls",
            &curl,
            "--advertise-client-urls",
            &curl,
        ])
        .args([
            "--listen-peer-urls",
            &purl,
            "--initial-advertise-peer-urls",
            &purl,
        ])
        .args(["--initial-cluster", &format!("m1={purl}")])
        .args([
            "--cert-file",
            &cert,
            "--key-file",
            &key,
            "--trusted-ca-file",
            &ca_path,
        ])
        .args(["--client-cert-auth=true", "--peer-client-cert-auth=true"])
        .args(["--peer-cert-file", &cert, "--peer-key-file", &key])
        .args(["--peer-trusted-ca-file", &ca_path])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("etcd.log")).unwrap())
        .spawn()
        .unwrap();
    Single {
        _etcd: Etcd(child),
        ca,
        client_cert,
        client_key,
        curl,
    }
}

async fn wait_leader(
    client: &Client,
    curl: &str,
    dir: &std::path::Path,
) -> kube_join_agent::etcd::Status {
    let t0 = Instant::now();
    loop {
        match client.status(curl).await {
            Ok(s) if s.leader.is_some() => return s,
            other if t0.elapsed() > Duration::from_secs(20) => panic!(
                "etcd did not elect itself: {other:?}\n{}",
                std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default()
            ),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test]
async fn client_against_real_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let e = start_single(dir.path());
    let curl = e.curl.clone();
    let client = Client::from_pem(
        e.ca.cert_pem.as_bytes(),
        e.client_cert.as_bytes(),
        e.client_key.as_bytes(),
    );

    let status = wait_leader(&client, &curl, dir.path()).await;
    assert_eq!(status.leader, Some(status.member));
    let members = client.member_list(&curl).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].name, "m1");
    assert_eq!(members[0].client_urls, vec![curl.clone()]);

    let learner_url = "https://127.0.0.2:2380".to_string();
    let (added, all) = client
        .member_add(&curl, vec![learner_url.clone()], true)
        .await
        .unwrap();
    assert!(added.is_learner && added.is_unstarted_learner());
    assert_eq!(all.len(), 2);

    let second = client
        .member_add(&curl, vec!["https://127.0.0.3:2380".into()], true)
        .await
        .unwrap_err();
    assert!(second.is_too_many_learners(), "{second}");
    let again = client
        .member_add(&curl, vec![learner_url.clone()], true)
        .await
        .unwrap_err();
    // etcd 3.4 derives member IDs from the peer URLs and the time: within the same
    // second the ID clashes first, later the URL does.
    let m = again.message().unwrap_or_default();
    assert!(
        again.is_peer_url_exists() || m.contains("member ID already exist"),
        "{again}"
    );

    let refused = client.member_promote(&curl, added.id).await.unwrap_err();
    assert!(refused.is_learner_not_ready(), "{refused}");
    assert_eq!(
        refused.message(),
        Some("etcdserver: can only promote a learner member which is in sync with leader")
    );

    let left = client.member_remove(&curl, added.id).await.unwrap();
    assert_eq!(left.len(), 1);
    let gone = client
        .member_remove(&curl, MemberId(12345))
        .await
        .unwrap_err();
    assert!(gone.is_member_not_found(), "{gone}");
}

/// `kube-join-agent check`'s etcd findings (`etcd::findings`) on a control-plane node
/// whose kubeadm files are in place, against a real etcd with a stale learner.
#[tokio::test]
async fn findings_report_a_stale_learner_with_its_command() {
    use kube_join_agent::paths::Paths;
    use kube_join_agent::preflight::Verdict;
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("etcd")).unwrap();
    let e = start_single(&dir.path().join("etcd"));
    let client = Client::from_pem(
        e.ca.cert_pem.as_bytes(),
        e.client_cert.as_bytes(),
        e.client_key.as_bytes(),
    );
    wait_leader(&client, &e.curl, &dir.path().join("etcd")).await;
    let (stale, _) = client
        .member_add(&e.curl, vec!["https://127.0.0.2:2380".into()], true)
        .await
        .unwrap();

    let root = dir.path().join("root");
    let write = |path: &str, text: &str, mode: u32| {
        let p = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    write(
        "/etc/kube-join-agent/token",
        "abcdef.0123456789abcdef\n",
        0o600,
    );
    write(
        "/etc/kube-join-agent/certificate-key",
        &format!("{}\n", "ab".repeat(32)),
        0o600,
    );
    write(
        "/etc/kube-join-agent/config.toml",
        &format!(
            "[join]\napi_server = \"127.0.0.1:6443\"\ntoken_file = \"/etc/kube-join-agent/token\"\nunsafe_skip_ca_verification = true\nnode_name = \"localhost\"\ncontrol_plane = true\ncertificate_key_file = \"/etc/kube-join-agent/certificate-key\"\nadvertise_address = \"127.0.0.9\"\n[etcd]\nendpoints = [\"{}\"]\n",
            e.curl
        ),
        0o644,
    );
    let paths = Paths::new(&root);
    let settings = kube_join_agent::config::load(&paths).unwrap();

    // Before kubeadm's control-plane-prepare: only the name, and a note.
    let early = kube_join_agent::etcd::findings(&settings, &paths).await;
    assert_eq!(early.len(), 2, "{early:?}");
    assert!(early.iter().all(|f| f.check == "etcd"));
    assert!(
        early[1].to_string().contains("apiserver-etcd-client")
            || early[1].to_string().contains("etcd/ca.crt"),
        "{}",
        early[1]
    );

    write("/etc/kubernetes/pki/etcd/ca.crt", &e.ca.cert_pem, 0o644);
    write(
        "/etc/kubernetes/pki/apiserver-etcd-client.crt",
        &e.client_cert,
        0o644,
    );
    write(
        "/etc/kubernetes/pki/apiserver-etcd-client.key",
        &e.client_key,
        0o600,
    );
    let found = kube_join_agent::etcd::findings(&settings, &paths).await;
    let lines: Vec<String> = found.iter().map(|f| f.to_string()).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[pass] etcd: leader m1")),
        "{lines:#?}"
    );
    let fail = found
        .iter()
        .find(|f| matches!(f.verdict, Verdict::Fail { .. }))
        .unwrap_or_else(|| panic!("no failing finding: {lines:#?}"));
    let text = fail.to_string();
    assert!(
        text.contains(&format!("member remove {}", stale.id)),
        "{text}"
    );
    assert!(text.contains(&format!("--endpoints {}", e.curl)), "{text}");
    // The stale learner's closed port is its own problem, not a peer's.
    assert!(
        lines.iter().any(|l| l.contains("all 1 peer URL(s) accept")),
        "{lines:#?}"
    );
}
