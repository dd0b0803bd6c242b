//! One simulated node: its configuration directory, then the agent's discovery, its
//! Node-name check, what kubeadm and the kubelet do on the API server (a CSR with the
//! bootstrap token, the certificate the auto approver issues, the Node registered with
//! it), and the agent's join record with the node's certificate.

use anyhow::{Context, Result};
use kja_fakes::fsroot::Root;
use kja_fakes::httpclient::{ApiClient as KubeClient, Trust};
use kja_fakes::kubeconfig::{Auth, Resolved};
use kja_fakes::kubelet::bootstrap::{self, CertStore};
use kube_join_agent::agent::{Stop, discovery, node_name, record};
use kube_join_agent::apiserver::ApiClient;
use kube_join_agent::config::{self, Settings};
use kube_join_agent::paths::Paths;
use kube_join_agent::state::{State, now_rfc3339};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

/// The bootstrap token every simulated node joins with (one token for the fleet, as a
/// cloud-init template would carry).
pub const TOKEN: &str = "abcdef.0123456789abcdef";
/// The kubeadm version the join record names (the fake API server's default release).
const KUBEADM_VERSION: &str = "v1.29.7";
/// The kubelet's registration backoff: 100 ms doubling to 7 s (kubelet_node_status.go).
const REGISTER_BACKOFF_MAX: Duration = Duration::from_secs(7);
/// How long the simulated kubelet keeps trying to register before the attempt counts
/// as failed (the agent's verify phase waits for the Node about that long).
const REGISTER_DEADLINE: Duration = Duration::from_secs(120);
/// Certificate requests the simulated kubelet's certificate manager makes before the
/// attempt counts as failed (it retries after 2, 4, 8, 16 s, then every 32 s).
const CSR_TRIES: u32 = 5;

/// A node's configuration directory, written before the fleet starts.
pub struct NodeSpec {
    /// 0-based.
    pub index: usize,
    /// `node-0001`.
    pub name: String,
    /// The node's root (its `/etc/kube-join-agent/...` live below it).
    pub root: PathBuf,
    /// Its own port on the fake API server (how the server's log tells nodes apart).
    pub port: u16,
    /// When it starts, after the fleet's start.
    pub offset: Duration,
}

impl NodeSpec {
    /// Writes the join fragment and the 0600 token file below the node's root.
    pub fn write_config(&self, pin: &str) -> Result<()> {
        let dir = self.root.join("etc/kube-join-agent/config.d");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let token = self.root.join("etc/kube-join-agent/token");
        std::fs::write(&token, format!("{TOKEN}\n"))?;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600))?;
        std::fs::write(
            dir.join("50-join.toml"),
            format!(
                "[join]\napi_server = \"127.0.0.1:{}\"\ntoken_file = \"/etc/kube-join-agent/token\"\nca_cert_hashes = [\"{pin}\"]\nnode_name = \"{}\"\n",
                self.port, self.name
            ),
        )?;
        Ok(())
    }
}

/// What happened to one node, as the fleet saw it from the node's side.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// 0-based.
    pub index: usize,
    /// Its name.
    pub name: String,
    /// Its record (annotations and Joined Event) is posted.
    pub joined: bool,
    /// Why not, if not.
    pub why_not: Option<String>,
    /// Seconds from the fleet's start to this node's start.
    pub started_s: f64,
    /// Seconds from the node's start to each milestone it reached.
    pub milestones: Vec<(&'static str, f64)>,
    /// Attempts made.
    pub attempts: u32,
    /// Failure classes of failed attempts.
    pub failures: Vec<String>,
    /// The join record's tries again after a busy answer.
    pub record_retries: u32,
}

/// Runs one node to its join record (or to the end of its attempts).
pub async fn run(spec: NodeSpec, fleet_start: Instant) -> Outcome {
    tokio::time::sleep_until(fleet_start + spec.offset).await;
    let began = Instant::now();
    let mut out = Outcome {
        index: spec.index,
        name: spec.name.clone(),
        started_s: (began - fleet_start).as_secs_f64(),
        ..Outcome::default()
    };
    let at = |out: &mut Outcome, what: &'static str| {
        out.milestones.push((what, began.elapsed().as_secs_f64()));
    };
    let paths = Paths::new(&spec.root);
    let settings = match config::load(&paths) {
        Ok(s) => s,
        Err(e) => {
            out.why_not = Some(format!("configuration: {e}"));
            return out;
        }
    };
    let mut state = State {
        node_name: spec.name.clone(),
        ..State::default()
    };
    let mut attempt = 0;
    let joined = loop {
        attempt += 1;
        out.attempts = attempt;
        state.attempt_started(attempt);
        match attempt_join(&spec, &paths, &settings, &mut out, &at).await {
            Ok(joined) => {
                state.attempt_ended(None);
                break joined;
            }
            Err((class, message)) => {
                out.failures.push(class.to_string());
                state.attempt_ended(Some((class, message.clone())));
                if attempt >= settings.retry.max_attempts {
                    out.why_not = Some(format!("{attempt} attempts failed, last: {message}"));
                    return out;
                }
                let pause = kube_join_agent::backoff::delay(
                    settings.retry.initial_backoff,
                    settings.retry.max_backoff,
                    attempt,
                );
                tokio::time::sleep(pause).await;
            }
        }
    };
    state.joined = true;
    state.joined_since = Some(now_rfc3339());
    state.join_duration_ms = Some(began.elapsed().as_millis() as u64);
    state.kubeadm_version = Some(KUBEADM_VERSION.into());
    // The agent's record_join: failed attempts' Events, then the annotations and the
    // Joined Event; a busy server is asked again (RecordRetry, as serve does), a
    // refusal is said once and the node carries on unrecorded.
    let client =
        match ApiClient::with_client_cert(&joined.server, &joined.ca, &joined.pem, &joined.pem) {
            Ok(c) => c,
            Err(e) => {
                out.why_not = Some(format!("record client: {e}"));
                return out;
            }
        };
    let mut retry = record::RecordRetry::default();
    loop {
        match post_record(&client, &spec.name, &mut state).await {
            Ok(()) => {
                at(&mut out, "recorded");
                out.joined = true;
                return out;
            }
            Err(e) => {
                retry.after(record::not_posted(&e));
                match retry.wait() {
                    Some(pause) => {
                        out.record_retries += 1;
                        tokio::time::sleep(pause).await;
                    }
                    None => {
                        out.why_not = Some(format!("the record was refused: {e}"));
                        return out;
                    }
                }
            }
        }
    }
}

/// Posts what is not posted yet: the failed attempts' Events, then the annotations
/// and the Joined Event.
async fn post_record(
    client: &ApiClient,
    name: &str,
    state: &mut State,
) -> Result<(), kube_join_agent::apiserver::ApiError> {
    for a in state
        .history
        .iter_mut()
        .filter(|a| a.failure.is_some() && !a.posted)
    {
        record::post_attempt(client, name, a).await?;
        a.posted = true;
    }
    record::post_join(client, name, &record::summary(state)).await
}

/// What a successful attempt leaves: the node's credentials.
struct Joined {
    server: String,
    ca: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// kubelet-client-current.pem: certificate, then key.
    pem: Vec<u8>,
}

type AttemptError = (&'static str, String);

async fn attempt_join(
    spec: &NodeSpec,
    paths: &Paths,
    s: &Settings,
    out: &mut Outcome,
    at: &impl Fn(&mut Outcome, &'static str),
) -> Result<Joined, AttemptError> {
    // The agent's discovery phase, as the agent runs it.
    let cluster = loop {
        match discovery::discover(paths, s).await {
            Ok(c) => break c,
            Err(Stop::Failed(f)) => return Err((f.class(), f.to_string())),
            Err(Stop::Reconfigured(_)) => continue,
        }
    };
    at(out, "discovered");
    // The agent's Node-name check, as the agent runs it: a busy server is looked at
    // again after its Retry-After until the conflict wait ends.
    let client = ApiClient::bootstrap(&s.join.api_server, &cluster.ca, &s.join.token)
        .map_err(|e| ("local", e.to_string()))?;
    match node_name::settle(paths, s, &client).await {
        Ok(()) => {}
        Err(Stop::Failed(f)) => return Err((f.class(), f.to_string())),
        Err(Stop::Reconfigured(_)) => {}
    }
    at(out, "name-checked");
    // kubeadm join + kubelet TLS bootstrap, on the API server: a CSR with the bootstrap
    // token (client-go's certificate manager, rotation on), the certificate.
    let server = format!("https://{}", s.join.api_server);
    let ca_pem = cluster.ca_pem.clone();
    let root = Root::at(&spec.root);
    let store = CertStore {
        dir: "/var/lib/kubelet/pki".into(),
    };
    std::fs::create_dir_all(root.path(&store.dir)).map_err(|e| ("local", e.to_string()))?;
    let boot = Resolved {
        server: server.clone(),
        ca_pem: ca_pem.clone(),
        auth: Auth::Token(s.join.token.expose_full()),
    };
    let mut failures = 0;
    loop {
        match bootstrap::rotate_once(&root, &store, &boot, &spec.name).await {
            Ok(()) => break,
            Err(e) => {
                failures += 1;
                if failures >= CSR_TRIES {
                    return Err(("tls-bootstrap-stuck", e.to_string()));
                }
                let pause = kja_fakes::kubelet::rotation_pause(failures, fastrand::f64());
                tokio::time::sleep(pause).await;
            }
        }
    }
    at(out, "certified");
    let pem = std::fs::read(root.path(store.current())).map_err(|e| ("local", e.to_string()))?;
    register(&server, &ca_pem, &pem, &spec.name, spec.index).await?;
    at(out, "registered");
    Ok(Joined {
        server,
        ca: cluster.ca,
        pem,
    })
}

/// The kubelet's registration with its new certificate: POST the Node (409: it was
/// registered before), retried with the kubelet's backoff.
async fn register(
    server: &str,
    ca_pem: &[u8],
    pem: &[u8],
    name: &str,
    index: usize,
) -> Result<(), AttemptError> {
    let (cert_pem, key_pem) = split_pem(pem);
    let client = KubeClient::new(
        server,
        Trust::Ca(ca_pem),
        &Auth::ClientCert { cert_pem, key_pem },
        Duration::from_secs(10),
    )
    .map_err(|e| ("local", format!("{e:#}")))?;
    let ip = format!(
        "10.{}.{}.{}",
        index / 65536,
        (index / 256) % 256,
        index % 256
    );
    let node = kja_fakes::kubelet::node::node_object(name, &ip, KUBEADM_VERSION);
    let deadline = Instant::now() + REGISTER_DEADLINE;
    let mut backoff = Duration::from_millis(100);
    loop {
        let err = match client
            .call(reqwest::Method::POST, "/api/v1/nodes", Some(&node))
            .await
        {
            Ok(r) if matches!(r.status, 200 | 201 | 409) => return Ok(()),
            Ok(r) => r.error_text(),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(("node-not-registered", err));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(REGISTER_BACKOFF_MAX);
    }
}

/// The certificate blocks and the key block of a kubelet-client PEM file.
fn split_pem(pem: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let text = String::from_utf8_lossy(pem);
    let at = text
        .find("-----BEGIN EC PRIVATE KEY-----")
        .unwrap_or(text.len());
    (
        text[..at].as_bytes().to_vec(),
        text[at..].as_bytes().to_vec(),
    )
}

/// The node roots below `dir`.
pub fn root_of(dir: &Path, name: &str) -> PathBuf {
    dir.join("nodes").join(name)
}
