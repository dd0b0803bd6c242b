//! `fake-apiserver`: HTTPS API server with the handful of endpoints kubeadm, kubelet and
//! the agent use (healthz, version, cluster-info, kubelet-config, Nodes, CSRs), real JWS
//! signatures and a real CA, steered by `DIR/knobs.json`.

pub mod auth;
pub mod controlplane;
pub mod hostile;
pub mod knobs;
pub mod objects;
pub mod pki;
pub mod requestinfo;
pub mod routes;
pub mod server;
pub mod store;

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use anyhow::{Context, Result};
use clap::Parser;

use knobs::KnobSource;
use pki::Pki;
use store::Store;

/// Command line of `fake-apiserver`.
#[derive(Debug, Parser)]
#[command(
    name = "fake-apiserver",
    version,
    about = "Fake kube-apiserver for kube-join-agent tests"
)]
pub struct Args {
    /// Address to listen on (HTTPS).
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// Directory for the CA, knobs.json, requests.log, nodes/ and csrs/.
    #[arg(long)]
    pub state_dir: PathBuf,
}

/// Shared server state.
pub struct State {
    /// The state directory.
    pub dir: PathBuf,
    /// `https://<listen address>`: the server written into cluster-info.
    pub server_url: String,
    /// CA and certificates.
    pub pki: Pki,
    /// Start time (ConfigMap creation timestamps).
    pub started: SystemTime,
    /// knobs.json reader.
    pub knobs: Mutex<KnobSource>,
    /// Nodes and CSRs.
    pub store: Mutex<Store>,
    /// requests.log.
    pub request_log: Mutex<File>,
    /// Successful token authentications, cached for 10 s as kube-apiserver does.
    pub token_cache: Mutex<auth::TokenCache>,
}

impl State {
    /// Prepares the state directory: CA, store, knobs, request log.
    pub fn open(args: &Args) -> Result<Self> {
        let dir = args.state_dir.clone();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // A stale `ready` from an earlier run would tell the harness we are up too soon.
        match std::fs::remove_file(dir.join("ready")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).context("removing the stale ready file");
            }
            _ => {}
        }
        let pki = Pki::load_or_create(&dir, args.listen.ip()).context("preparing the CA")?;
        let store = Store::open(&dir).context("opening the object store")?;
        let started = SystemTime::now();
        let mut knobs = KnobSource::new(&dir);
        // Read once now, so windows of knobs present at start count from the start.
        let snapshot = knobs.read(started);
        if let Some(e) = snapshot.error {
            eprintln!("fake-apiserver: knobs.json: {e}");
        }
        let log_path = dir.join("requests.log");
        let request_log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        Ok(Self {
            server_url: format!("https://{}", args.listen),
            dir,
            pki,
            started,
            knobs: Mutex::new(knobs),
            store: Mutex::new(store),
            request_log: Mutex::new(request_log),
            token_cache: Mutex::new(auth::TokenCache::default()),
        })
    }
}

/// Runs the server until SIGTERM or SIGINT.
pub async fn run(args: Args) -> Result<()> {
    crate::install_crypto_provider();
    let state = State::open(&args)?;
    server::serve(state, args.listen).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    use crate::apiserver::auth::User;
    use crate::apiserver::knobs::Knobs;
    use crate::apiserver::routes::{Call, route};

    static ALL_SIGNED: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();

    fn call<'a>(
        state: &'a State,
        knobs: &'a Knobs,
        user: &'a User,
        method: &'a str,
        body: &'a [u8],
    ) -> Call<'a> {
        Call {
            state,
            knobs,
            user,
            method,
            body,
            now: SystemTime::now(),
            unsigned_tokens: &ALL_SIGNED,
            readyz_failing: false,
        }
    }

    #[test]
    fn cluster_info_signs_only_valid_tokens_and_csrs_get_signed() {
        let dir = tempfile::tempdir().unwrap();
        let args = Args::parse_from([
            "fake-apiserver",
            "--listen",
            "127.0.0.1:16443",
            "--state-dir",
            dir.path().to_str().unwrap(),
        ]);
        let state = State::open(&args).unwrap();
        let knobs = Knobs::parse(
            r#"{"tokens":[{"id":"abcdef","secret":"0123456789abcdef"},{"id":"zzzzzz","secret":"0123456789abcdef","expired":true}]}"#,
        )
        .unwrap();
        let anon = User::anonymous();
        let r = route(
            &call(&state, &knobs, &anon, "GET", b""),
            "/api/v1/namespaces/kube-public/configmaps/cluster-info",
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let kc = v["data"]["kubeconfig"].as_str().unwrap();
        assert!(kc.contains("server: https://127.0.0.1:16443\n"));
        let sig = v["data"]["jws-kubeconfig-abcdef"].as_str().unwrap();
        assert!(crate::jws::verify_detached(
            sig,
            kc,
            "abcdef",
            "0123456789abcdef"
        ));
        assert!(v["data"].get("jws-kubeconfig-zzzzzz").is_none());
        // A token the bootstrap signer has not got to yet: no signature either.
        let unsigned = std::collections::BTreeSet::from(["abcdef".to_owned()]);
        let r = route(
            &Call {
                unsigned_tokens: &unsigned,
                ..call(&state, &knobs, &anon, "GET", b"")
            },
            "/api/v1/namespaces/kube-public/configmaps/cluster-info",
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert!(v["data"].get("jws-kubeconfig-abcdef").is_none());
        assert!(v["data"]["kubeconfig"].is_string());

        // A bootstrapper's node CSR is approved and signed at once.
        let boot = crate::apiserver::auth::authenticate(
            &knobs,
            None,
            Some("Bearer abcdef.0123456789abcdef"),
        )
        .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:nodes");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n1");
        let pem = p.serialize_request(&key).unwrap().pem().unwrap();
        use base64::Engine;
        let body = serde_json::json!({"metadata": {"name": "node-csr-AbC_1"}, "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "key encipherment", "client auth"]}});
        let bytes = serde_json::to_vec(&body).unwrap();
        let path = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
        let r = route(&call(&state, &knobs, &boot, "POST", &bytes), path);
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["status"]["conditions"][0]["type"], "Approved");
        assert!(
            v["status"]["certificate"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        );
        assert!(dir.path().join("csrs/node-csr-AbC_1.json").exists());
        let r = route(&call(&state, &knobs, &boot, "POST", &bytes), path);
        assert_eq!(r.status, 409);
        let r = route(&call(&state, &knobs, &anon, "POST", &bytes), path);
        assert_eq!(r.status, 403);
    }

    #[test]
    fn csr_create_forbidden_refuses_bootstrap_tokens_only() {
        let dir = tempfile::tempdir().unwrap();
        let args = Args::parse_from([
            "fake-apiserver",
            "--listen",
            "127.0.0.1:16444",
            "--state-dir",
            dir.path().to_str().unwrap(),
        ]);
        let state = State::open(&args).unwrap();
        let knobs = Knobs::parse(
            r#"{"tokens":[{"id":"abcdef","secret":"0123456789abcdef"}],"csr_create_forbidden":true}"#,
        )
        .unwrap();
        let boot = crate::apiserver::auth::authenticate(
            &knobs,
            None,
            Some("Bearer abcdef.0123456789abcdef"),
        )
        .unwrap();
        let path = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
        let r = route(&call(&state, &knobs, &boot, "POST", b"{}"), path);
        assert_eq!(r.status, 403);
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"certificatesigningrequests.certificates.k8s.io is forbidden: User \"system:bootstrap:abcdef\" cannot create resource \"certificatesigningrequests\" in API group \"certificates.k8s.io\" at the cluster scope","reason":"Forbidden","details":{"group":"certificates.k8s.io","kind":"certificatesigningrequests"},"code":403}"#
        );
        // The missing binding also took get and list away.
        let r = route(
            &call(&state, &knobs, &boot, "GET", b""),
            &format!("{path}/x"),
        );
        assert_eq!(r.status, 403);
        let r = route(&call(&state, &knobs, &boot, "GET", b""), path);
        assert_eq!(r.status, 403);
        // A node renewing its certificate is not affected.
        let node = User {
            name: "system:node:n1".into(),
            groups: vec!["system:nodes".into()],
        };
        let r = route(
            &call(&state, &knobs, &node, "GET", b""),
            &format!("{path}/x"),
        );
        assert_eq!(r.status, 404);
    }

    #[test]
    fn only_anonymous_and_admins_read_cluster_info() {
        let dir = tempfile::tempdir().unwrap();
        let args = Args::parse_from([
            "fake-apiserver",
            "--listen",
            "127.0.0.1:16445",
            "--state-dir",
            dir.path().to_str().unwrap(),
        ]);
        let state = State::open(&args).unwrap();
        let knobs =
            Knobs::parse(r#"{"tokens":[{"id":"abcdef","secret":"0123456789abcdef"}]}"#).unwrap();
        let path = "/api/v1/namespaces/kube-public/configmaps/cluster-info";
        let boot = crate::apiserver::auth::authenticate(
            &knobs,
            None,
            Some("Bearer abcdef.0123456789abcdef"),
        )
        .unwrap();
        let r = route(&call(&state, &knobs, &boot, "GET", b""), path);
        assert_eq!(r.status, 403);
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"configmaps \"cluster-info\" is forbidden: User \"system:bootstrap:abcdef\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"kube-public\"","reason":"Forbidden","details":{"name":"cluster-info","kind":"configmaps"},"code":403}"#
        );
        let node = User {
            name: "system:node:n1".into(),
            groups: vec!["system:nodes".into()],
        };
        assert_eq!(
            route(&call(&state, &knobs, &node, "GET", b""), path).status,
            403
        );
        let admin = User {
            name: "kubernetes-admin".into(),
            groups: vec!["system:masters".into()],
        };
        assert_eq!(
            route(&call(&state, &knobs, &admin, "GET", b""), path).status,
            200
        );
        assert_eq!(
            route(&call(&state, &knobs, &User::anonymous(), "GET", b""), path).status,
            200
        );
    }

    #[test]
    fn readyz_fails_like_a_starting_kube_apiserver() {
        let dir = tempfile::tempdir().unwrap();
        let args = Args::parse_from([
            "fake-apiserver",
            "--listen",
            "127.0.0.1:16446",
            "--state-dir",
            dir.path().to_str().unwrap(),
        ]);
        let state = State::open(&args).unwrap();
        let knobs = Knobs::default();
        let anon = User::anonymous();
        let mut c = call(&state, &knobs, &anon, "GET", b"");
        assert_eq!(route(&c, "/readyz").body, b"ok");
        c.readyz_failing = true;
        let r = route(&c, "/readyz");
        assert_eq!(r.status, 500);
        assert_eq!(r.content_type, "text/plain; charset=utf-8");
        let body = String::from_utf8(r.body).unwrap();
        assert!(
            body.starts_with("[+]ping ok\n[+]log ok\n[+]etcd ok\n"),
            "{body}"
        );
        assert!(body.contains("\n[+]poststarthook/bootstrap-controller ok\n[-]poststarthook/rbac/bootstrap-roles failed: reason withheld\n[+]poststarthook/scheduling/bootstrap-system-priority-classes ok\n"));
        assert!(body.ends_with("[+]shutdown ok\nreadyz check failed\n"));
        assert_eq!(body.lines().count(), 24);
        // Only /readyz: /healthz and /livez were not measured failing.
        assert_eq!(route(&c, "/healthz").status, 200);
    }

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
        let a = Args::parse_from(["fake-apiserver", "--state-dir", "/tmp/x"]);
        assert_eq!(a.listen.to_string(), "127.0.0.1:6443");
    }
}
