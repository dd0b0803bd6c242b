//! `fake-apiserver`: HTTPS API server with the handful of endpoints kubeadm, kubelet and
//! the agent use (healthz, version, cluster-info, kubelet-config, Nodes, CSRs, Events),
//! real JWS signatures and a real CA, steered by `DIR/knobs.json`.

pub mod auth;
pub mod controlplane;
pub mod events;
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
    /// Directory for the CA, knobs.json, requests.log, nodes/, csrs/ and events/.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Also serve on this address (repeatable): requests that arrive there are logged
    /// with `via=<address>`, so a fleet simulation that gives each node its own port can
    /// tell the nodes' requests apart. cluster-info keeps naming `--listen`.
    #[arg(long, value_name = "ADDR")]
    pub also_listen: Vec<SocketAddr>,
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
    /// Requests being handled now, past the `max_inflight` gate.
    pub inflight: std::sync::atomic::AtomicU64,
    /// Requests refused by the gate so far (spreads `busy_503_fraction` evenly).
    pub refused: std::sync::atomic::AtomicU64,
    /// Echo every requests.log line on stderr (the binary does; a program that runs
    /// the server in-process among a thousand clients may not want to).
    pub echo_requests: bool,
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
            inflight: std::sync::atomic::AtomicU64::new(0),
            refused: std::sync::atomic::AtomicU64::new(0),
            echo_requests: true,
        })
    }
}

/// Runs the server until SIGTERM or SIGINT.
pub async fn run(args: Args) -> Result<()> {
    crate::install_crypto_provider();
    let state = State::open(&args)?;
    server::serve(state, args.listen, &args.also_listen).await
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
            query: None,
            content_type: Some("application/merge-patch+json"),
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

    fn open_state(dir: &tempfile::TempDir) -> State {
        let args = Args::parse_from([
            "fake-apiserver",
            "--listen",
            "127.0.0.1:16447",
            "--state-dir",
            dir.path().to_str().unwrap(),
        ]);
        State::open(&args).unwrap()
    }

    fn node_user(name: &str) -> User {
        User {
            name: format!("system:node:{name}"),
            groups: vec!["system:nodes".into(), "system:authenticated".into()],
        }
    }

    fn admin() -> User {
        User {
            name: "kubernetes-admin".into(),
            groups: vec!["system:masters".into()],
        }
    }

    fn join_event(node: &str, name: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": "default"},
            "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node, "uid": node},
            "reason": "Joined", "message": "joined", "type": "Normal",
            "source": {"component": "kube-join-agent", "host": node},
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
            "count": 1
        }))
        .unwrap()
    }

    #[test]
    fn nodes_post_events_and_admins_list_them_by_field_selector() {
        let dir = tempfile::tempdir().unwrap();
        let state = open_state(&dir);
        let knobs =
            Knobs::parse(r#"{"tokens":[{"id":"abcdef","secret":"0123456789abcdef"}]}"#).unwrap();
        let (n1, n2, admin) = (node_user("n1"), node_user("n2"), admin());
        let path = "/api/v1/namespaces/default/events";
        let body = join_event("n1", "n1.joined");
        let r = route(&call(&state, &knobs, &n1, "POST", &body), path);
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["metadata"]["namespace"], "default");
        assert!(v["metadata"]["resourceVersion"].is_string());
        assert!(dir.path().join("events/default/n1.joined.json").exists());
        // The same name again: AlreadyExists, as the agent's retry after a lost answer sees.
        let r = route(&call(&state, &knobs, &n1, "POST", &body), path);
        assert_eq!(r.status, 409);
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"events \"n1.joined\" already exists","reason":"AlreadyExists","details":{"name":"n1.joined","kind":"events"},"code":409}"#
        );
        let r = route(
            &call(&state, &knobs, &n2, "POST", &join_event("n2", "n2.joined")),
            path,
        );
        assert_eq!(r.status, 201);
        // Bootstrap tokens and anonymous users may not post events.
        let boot = crate::apiserver::auth::authenticate(
            &knobs,
            None,
            Some("Bearer abcdef.0123456789abcdef"),
        )
        .unwrap();
        let r = route(&call(&state, &knobs, &boot, "POST", &body), path);
        assert_eq!(r.status, 403);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v["message"],
            "events is forbidden: User \"system:bootstrap:abcdef\" cannot create resource \"events\" in API group \"\" in the namespace \"default\""
        );
        // Malformed: not JSON (400), a Node event outside default (422), no name (422),
        // a namespace that contradicts the URL (400).
        let r = route(&call(&state, &knobs, &n1, "POST", b"{"), path);
        assert_eq!(r.status, 400);
        let r = route(
            &call(&state, &knobs, &n1, "POST", &join_event("n1", "x")),
            "/api/v1/namespaces/kube-system/events",
        );
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
        let mut e: serde_json::Value = serde_json::from_slice(&join_event("n1", "x")).unwrap();
        e["metadata"] = serde_json::json!({"name": "x"});
        let r = route(
            &call(
                &state,
                &knobs,
                &n1,
                "POST",
                &serde_json::to_vec(&e).unwrap(),
            ),
            "/api/v1/namespaces/kube-system/events",
        );
        assert_eq!(r.status, 422);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v["message"],
            "Event \"x\" is invalid: involvedObject.namespace: Invalid value: \"\": does not match event.namespace"
        );
        e["metadata"] = serde_json::json!({});
        let r = route(
            &call(
                &state,
                &knobs,
                &n1,
                "POST",
                &serde_json::to_vec(&e).unwrap(),
            ),
            path,
        );
        assert_eq!(r.status, 422);
        // Listing: admins only, field selectors as upstream.
        let list = |user: &User, p: &str| route(&call(&state, &knobs, user, "GET", b""), p);
        assert_eq!(list(&n1, path).status, 403);
        let selected = |q: &str| {
            let r = route(
                &Call {
                    query: Some(q),
                    ..call(&state, &knobs, &admin, "GET", b"")
                },
                "/api/v1/events",
            );
            (
                r.status,
                serde_json::from_slice::<serde_json::Value>(&r.body).unwrap(),
            )
        };
        let (code, v) =
            selected("fieldSelector=involvedObject.kind%3DNode%2CinvolvedObject.name%3Dn1");
        assert_eq!(code, 200);
        assert_eq!(v["kind"], "EventList");
        let names: Vec<&str> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["n1.joined"]);
        let (_, v) = selected("fieldSelector=involvedObject.name!=n1");
        assert_eq!(v["items"][0]["metadata"]["name"], "n2.joined");
        assert_eq!(selected("").1["items"].as_array().unwrap().len(), 2);
        let (code, v) = selected("fieldSelector=spec.nodeName%3Dn1");
        assert_eq!(
            (code, v["message"].as_str().unwrap()),
            (400, "field label not supported: spec.nodeName")
        );
        // Persisted: a restarted server still has them.
        drop(state);
        let state = open_state(&dir);
        let r = route(&call(&state, &knobs, &admin, "GET", b""), path);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["items"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_node_annotates_its_own_node_only() {
        let dir = tempfile::tempdir().unwrap();
        let state = open_state(&dir);
        let knobs =
            Knobs::parse(r#"{"tokens":[{"id":"abcdef","secret":"0123456789abcdef"}]}"#).unwrap();
        let (n1, n2) = (node_user("n1"), node_user("n2"));
        for (user, name) in [(&n1, "n1"), (&n2, "n2")] {
            let body =
                serde_json::to_vec(&serde_json::json!({"metadata": {"name": name}})).unwrap();
            assert_eq!(
                route(&call(&state, &knobs, user, "POST", &body), "/api/v1/nodes").status,
                201
            );
        }
        let patch = |user: &User, node: &str, body: serde_json::Value, ct: Option<&str>| {
            let bytes = serde_json::to_vec(&body).unwrap();
            route(
                &Call {
                    content_type: ct,
                    ..call(&state, &knobs, user, "PATCH", &bytes)
                },
                &format!("/api/v1/nodes/{node}"),
            )
        };
        let merge = Some("application/merge-patch+json");
        let r = patch(
            &n1,
            "n1",
            serde_json::json!({"metadata": {"annotations": {"kube-join-agent.io/attempts": "1", "x": "y"}}}),
            merge,
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let r = patch(
            &n1,
            "n1",
            serde_json::json!({"metadata": {"annotations": {"x": null}}}),
            merge,
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v["metadata"]["annotations"]["kube-join-agent.io/attempts"],
            "1"
        );
        assert!(v["metadata"]["annotations"].get("x").is_none());
        // NodeRestriction: another node's Node is refused, once it is known to exist.
        let r = patch(
            &n2,
            "n1",
            serde_json::json!({"metadata": {"annotations": {"a": "b"}}}),
            merge,
        );
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"nodes \"n1\" is forbidden: node \"n2\" is not allowed to modify node \"n1\"","reason":"Forbidden","details":{"name":"n1","kind":"nodes"},"code":403}"#
        );
        assert_eq!(patch(&n2, "n9", serde_json::json!({}), merge).status, 404);
        let create_other =
            serde_json::to_vec(&serde_json::json!({"metadata": {"name": "n3"}})).unwrap();
        let r = route(
            &call(&state, &knobs, &n2, "POST", &create_other),
            "/api/v1/nodes",
        );
        assert_eq!(r.status, 403);
        // A bootstrap token has no patch in RBAC; the Content-Type must be a patch type.
        let boot = crate::apiserver::auth::authenticate(
            &knobs,
            None,
            Some("Bearer abcdef.0123456789abcdef"),
        )
        .unwrap();
        let r = patch(&boot, "n1", serde_json::json!({}), merge);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v["message"],
            "nodes \"n1\" is forbidden: User \"system:bootstrap:abcdef\" cannot patch resource \"nodes\" in API group \"\" at the cluster scope"
        );
        let r = patch(&n1, "n1", serde_json::json!({}), Some("application/json"));
        assert_eq!(r.status, 415);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v["message"],
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml"
        );
        let r = patch(
            &n1,
            "n1",
            serde_json::json!({"metadata": {"annotations": {"s": "1"}}}),
            Some("application/strategic-merge-patch+json; charset=utf-8"),
        );
        assert_eq!(r.status, 200);
    }

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
        let a = Args::parse_from(["fake-apiserver", "--state-dir", "/tmp/x"]);
        assert_eq!(a.listen.to_string(), "127.0.0.1:6443");
        assert!(a.also_listen.is_empty());
        let a = Args::parse_from([
            "fake-apiserver",
            "--state-dir",
            "/tmp/x",
            "--also-listen",
            "127.0.0.1:7001",
            "--also-listen",
            "127.0.0.1:7002",
        ]);
        assert_eq!(a.also_listen.len(), 2);
    }
}
