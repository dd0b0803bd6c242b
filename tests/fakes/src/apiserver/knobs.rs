//! `DIR/knobs.json`: the test harness's remote control, re-read on every request.
//!
//! A missing file means defaults. An invalid file is reported on stderr and in
//! requests.log, and the last valid knobs stay in force: a harness that rewrites the file
//! non-atomically must not make every token vanish for one request.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::kubeversion::KubeVersion;
use crate::token::BootstrapToken;

/// One bootstrap token the cluster knows.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenKnob {
    /// Token id, `[a-z0-9]{6}`.
    pub id: String,
    /// Token secret, `[a-z0-9]{16}`.
    pub secret: String,
    /// Expired tokens lose their JWS in cluster-info and fail authentication.
    #[serde(default)]
    pub expired: bool,
    /// A token just created: its `jws-kubeconfig-<id>` appears in cluster-info only this
    /// many seconds after the token is first seen, as the controller manager's bootstrap
    /// signer adds it a moment later. It authenticates at once.
    #[serde(default)]
    pub signed_after_secs: Option<f64>,
}

/// CSR approval policy.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CsrApproval {
    /// Approve and sign node client CSRs at once, like kube-controller-manager.
    #[default]
    Auto,
    /// Leave CSRs pending until `PUT .../approval`.
    Manual,
}

/// A pre-existing Node (a reset machine whose old Node object lingers).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeKnob {
    /// Seconds the Node keeps reporting Ready=True after the knob is first seen.
    pub ready_for_secs: f64,
}

/// The `kube-system/kubeadm-certs` Secret a control-plane join downloads
/// (`kubeadm init phase upload-certs --upload-certs` on the first control plane).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KubeadmCertsKnob {
    /// The certificate key (64 hex digits) the Secret's entries are encrypted with.
    pub certificate_key: String,
    /// Host directory holding the etcd CA as `ca.crt` and `ca.key` (the test's etcd).
    pub etcd_ca_dir: String,
}

/// What cluster-info's body turns into: what an attacker on the network path could send
/// to kubeadm's (or the agent's) first, unverified fetch.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterInfoBody {
    /// 200 with a declared Content-Length of `cluster_info_body_mib` MiB, and that much.
    Oversized,
    /// The same without Content-Length (chunked).
    OversizedChunked,
    /// A chunked body that never ends.
    Endless,
}

impl ClusterInfoBody {
    /// The knob's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterInfoBody::Oversized => "oversized",
            ClusterInfoBody::OversizedChunked => "oversized-chunked",
            ClusterInfoBody::Endless => "endless",
        }
    }
}

/// Default size of an oversized cluster-info body, in MiB.
pub const DEFAULT_CLUSTER_INFO_BODY_MIB: u64 = 64;
/// Largest accepted `cluster_info_body_mib` (1 TiB: the size fits every counter).
pub const MAX_CLUSTER_INFO_BODY_MIB: u64 = 1 << 20;

/// The knobs, all optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Knobs {
    /// Valid bootstrap tokens.
    #[serde(default)]
    pub tokens: Vec<TokenKnob>,
    /// Before this Unix time every request gets 503.
    #[serde(default)]
    pub unavailable_until_unix: Option<f64>,
    /// Answer this many of the next requests with 500 (counted per distinct value).
    #[serde(default)]
    pub fail_next_5xx: Option<u64>,
    /// CSR approval policy.
    #[serde(default)]
    pub csr_approval: CsrApproval,
    /// Pre-existing Nodes.
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeKnob>,
    /// The version /version and kubeadm-config report.
    #[serde(default)]
    pub kubernetes_version: Option<String>,
    /// Delay every response by this many milliseconds (a slow API server).
    #[serde(default)]
    pub response_delay_ms: Option<u64>,
    /// Serve the kubeadm-certs Secret (absent: 404, as after its 2-hour TTL).
    #[serde(default)]
    pub kubeadm_certs: Option<KubeadmCertsKnob>,
    /// etcd static pods (`kube-system/etcd-<node>`): node name → advertised client URL,
    /// the annotation kubeadm reads to find etcd.
    #[serde(default)]
    pub etcd_pods: BTreeMap<String, String>,
    /// A starting API server: every `system:anonymous` request gets 403 for this many
    /// seconds from when the knob is first seen (its default RBAC objects are not there
    /// yet).
    #[serde(default)]
    pub anonymous_forbidden_for_secs: Option<f64>,
    /// No `kubeadm:bootstrap-signer-clusterinfo` RoleBinding: anonymous requests get 403
    /// except the URLs `system:public-info-viewer` grants.
    #[serde(default)]
    pub anonymous_forbidden: bool,
    /// A hostile cluster-info body.
    #[serde(default)]
    pub cluster_info_body: Option<ClusterInfoBody>,
    /// Size of the `oversized` and `oversized-chunked` bodies in MiB.
    #[serde(default)]
    pub cluster_info_body_mib: Option<u64>,
    /// No `kubeadm:kubelet-bootstrap` ClusterRoleBinding: bootstrap tokens may not
    /// create (nor get, list) CertificateSigningRequests.
    #[serde(default)]
    pub csr_create_forbidden: bool,
    /// A starting API server whose port is bound but which serves no TLS yet: for this
    /// many seconds from when the knob is first seen, accepted connections get no TLS
    /// handshake (the client waits, or times out) until the window ends.
    #[serde(default)]
    pub tls_handshake_hold_secs: Option<f64>,
    /// A starting API server whose post-start hooks have not all finished: for this many
    /// seconds from when the knob is first seen, `GET /readyz` (once authorized) answers
    /// 500 with upstream's check list and `[-]poststarthook/rbac/bootstrap-roles failed`.
    #[serde(default)]
    pub readyz_failing_for_secs: Option<f64>,
    /// An overloaded API server (`--max-requests-inflight`, or priority and fairness
    /// out of seats): at most this many requests are handled at once; the rest are
    /// answered at once with 429 and `Retry-After`. 0 or absent: no limit, as upstream.
    #[serde(default)]
    pub max_inflight: Option<u64>,
    /// The `Retry-After` seconds sent with those answers (upstream's max-inflight filter
    /// always sends 1).
    #[serde(default)]
    pub retry_after_secs: Option<u64>,
    /// This fraction (0..=1) of the requests beyond `max_inflight` is answered 503
    /// instead of 429, also with `Retry-After` (a busy server or load balancer in front).
    #[serde(default)]
    pub busy_503_fraction: Option<f64>,
    /// Event writes (`POST .../events`) answered 503 for this many seconds from when
    /// the knob is first seen (an aggregated or overloaded events path), as a busy
    /// server answers: everything else is served.
    #[serde(default)]
    pub events_unavailable_for_secs: Option<f64>,
    /// How long the kubelet client certificates it signs are valid, in seconds
    /// (kube-controller-manager's `--cluster-signing-duration`; default one year).
    #[serde(default)]
    pub client_cert_lifetime_secs: Option<u64>,
}

/// Default `retry_after_secs`: what kube-apiserver's max-inflight filter sends.
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 1;
/// Largest accepted `retry_after_secs` (the agent caps what it honours at 300).
pub const MAX_RETRY_AFTER_SECS: u64 = 3600;

impl Knobs {
    /// Parses and validates knobs.json text.
    pub fn parse(text: &str) -> Result<Self> {
        let knobs: Knobs = serde_json::from_str(text).context("parsing knobs.json")?;
        for t in &knobs.tokens {
            if BootstrapToken::from_parts(&t.id, &t.secret).is_none() {
                bail!(
                    "knobs.json: token {:?}: id must match [a-z0-9]{{6}} and secret [a-z0-9]{{16}}",
                    t.id
                );
            }
            if let Some(s) = t.signed_after_secs
                && !(s.is_finite() && s >= 0.0)
            {
                bail!(
                    "knobs.json: token {:?}: signed_after_secs must be a non-negative number",
                    t.id
                );
            }
        }
        if let Some(v) = &knobs.kubernetes_version {
            KubeVersion::parse(v).context("knobs.json: kubernetes_version")?;
        }
        for (name, n) in &knobs.nodes {
            if !crate::apiserver::objects::is_dns_subdomain(name) {
                bail!("knobs.json: node name {name:?} is not a lowercase RFC 1123 subdomain");
            }
            if !(n.ready_for_secs.is_finite() && n.ready_for_secs >= 0.0) {
                bail!("knobs.json: nodes.{name}.ready_for_secs must be a non-negative number");
            }
        }
        if let Some(c) = &knobs.kubeadm_certs
            && (c.certificate_key.len() != 64
                || !c.certificate_key.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            bail!("knobs.json: kubeadm_certs.certificate_key must be 64 hex digits");
        }
        for (name, url) in &knobs.etcd_pods {
            if !url.starts_with("https://") {
                bail!("knobs.json: etcd_pods.{name} must be an https:// client URL");
            }
        }
        if let Some(u) = knobs.unavailable_until_unix
            && !u.is_finite()
        {
            bail!("knobs.json: unavailable_until_unix must be a finite number");
        }
        for (name, value) in [
            (
                "anonymous_forbidden_for_secs",
                knobs.anonymous_forbidden_for_secs,
            ),
            ("tls_handshake_hold_secs", knobs.tls_handshake_hold_secs),
            ("readyz_failing_for_secs", knobs.readyz_failing_for_secs),
        ] {
            if let Some(s) = value
                && !(s.is_finite() && s >= 0.0)
            {
                bail!("knobs.json: {name} must be a non-negative number");
            }
        }
        if let Some(f) = knobs.busy_503_fraction
            && !(f.is_finite() && (0.0..=1.0).contains(&f))
        {
            bail!("knobs.json: busy_503_fraction must be a number from 0 to 1");
        }
        if knobs
            .retry_after_secs
            .is_some_and(|s| s > MAX_RETRY_AFTER_SECS)
        {
            bail!("knobs.json: retry_after_secs must be 0..={MAX_RETRY_AFTER_SECS}");
        }
        if let Some(m) = knobs.cluster_info_body_mib
            && !(1..=MAX_CLUSTER_INFO_BODY_MIB).contains(&m)
        {
            bail!("knobs.json: cluster_info_body_mib must be 1..={MAX_CLUSTER_INFO_BODY_MIB}");
        }
        Ok(knobs)
    }

    /// The valid (non-expired) token with this id and secret, if any.
    pub fn valid_token(&self, token: &BootstrapToken) -> bool {
        self.tokens
            .iter()
            .any(|t| !t.expired && t.id == token.id() && t.secret == token.secret())
    }

    /// The reported Kubernetes version.
    pub fn version(&self) -> KubeVersion {
        self.kubernetes_version
            .as_deref()
            .and_then(|v| KubeVersion::parse(v).ok())
            .unwrap_or_else(|| {
                KubeVersion::parse(crate::DEFAULT_KUBERNETES_VERSION).unwrap_or(KubeVersion {
                    major: 1,
                    minor: 29,
                    patch: 7,
                })
            })
    }

    /// Bytes of an oversized cluster-info body.
    pub fn cluster_info_body_bytes(&self) -> u64 {
        self.cluster_info_body_mib
            .unwrap_or(DEFAULT_CLUSTER_INFO_BODY_MIB)
            .min(MAX_CLUSTER_INFO_BODY_MIB)
            << 20
    }

    /// The in-flight limit in force, if any (0 means none, as upstream).
    pub fn inflight_limit(&self) -> Option<u64> {
        self.max_inflight.filter(|n| *n > 0)
    }

    /// `Retry-After` for an overloaded answer.
    pub fn retry_after(&self) -> u64 {
        self.retry_after_secs.unwrap_or(DEFAULT_RETRY_AFTER_SECS)
    }

    /// Whether the server is in its "down" window at `now`.
    pub fn unavailable_at(&self, now: SystemTime) -> bool {
        self.unavailable_until_unix
            .is_some_and(|until| crate::timefmt::unix_f64(now) < until)
    }
}

/// Reads knobs.json and keeps the per-process state that knobs imply (the 5xx countdown,
/// when each knob Node was first seen).
#[derive(Debug)]
pub struct KnobSource {
    path: PathBuf,
    last_good: Knobs,
    /// The `fail_next_5xx` value last read, and how many failures are still owed for it.
    /// Keyed by value: writing the same number again does not re-arm the countdown.
    fail_key: Option<u64>,
    fail_left: u64,
    node_first_seen: HashMap<String, SystemTime>,
    /// When `anonymous_forbidden_for_secs` was first seen (forgotten once it is absent).
    anonymous_first_seen: Option<SystemTime>,
    /// When each token id with `signed_after_secs` was first seen (forgotten once the
    /// token is absent, so writing it again creates it anew).
    token_first_seen: HashMap<String, SystemTime>,
    /// The same for `tls_handshake_hold_secs`.
    tls_hold_first_seen: Option<SystemTime>,
    /// The same for `readyz_failing_for_secs`.
    readyz_first_seen: Option<SystemTime>,
    events_first_seen: Option<SystemTime>,
}

/// A window of N seconds from the knob's first sighting: a new value moves the end, not
/// the start; a knob that disappears is forgotten, so writing it again starts anew.
fn window(
    first_seen: &mut Option<SystemTime>,
    secs: Option<f64>,
    now: SystemTime,
) -> Option<SystemTime> {
    match secs {
        Some(secs) => {
            let first = *first_seen.get_or_insert(now);
            Some(first + Duration::from_secs_f64(secs.clamp(0.0, 1e9)))
        }
        None => {
            *first_seen = None;
            None
        }
    }
}

/// Outcome of reading the knobs for one request.
pub struct Snapshot {
    /// Knobs in force.
    pub knobs: Knobs,
    /// Set when knobs.json was unreadable or invalid (the previous knobs were kept).
    pub error: Option<String>,
    /// End of the `anonymous_forbidden_for_secs` window (first sighting + N s).
    pub anonymous_forbidden_until: Option<SystemTime>,
    /// Ids of tokens whose `signed_after_secs` has not passed yet: no JWS in cluster-info.
    pub unsigned_tokens: BTreeSet<String>,
    /// End of the `tls_handshake_hold_secs` window.
    pub tls_hold_until: Option<SystemTime>,
    /// End of the `readyz_failing_for_secs` window.
    pub readyz_failing_until: Option<SystemTime>,
    /// End of the `events_unavailable_for_secs` window.
    pub events_unavailable_until: Option<SystemTime>,
}

impl Snapshot {
    /// Whether `system:anonymous` is refused at `now` (warm-up window or
    /// `anonymous_forbidden`), and if so whether the public-info URLs are still served.
    pub fn anonymous_denial(&self, now: SystemTime) -> Option<AnonymousDenial> {
        if self
            .anonymous_forbidden_until
            .is_some_and(|until| now < until)
        {
            Some(AnonymousDenial::Everything)
        } else if self.knobs.anonymous_forbidden {
            Some(AnonymousDenial::AllButPublicInfo)
        } else {
            None
        }
    }
}

/// Which anonymous requests get 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnonymousDenial {
    /// All of them: a starting server has no RBAC objects yet, not even
    /// `system:public-info-viewer`'s binding (the real server answers /readyz with 403).
    Everything,
    /// All but the `system:public-info-viewer` URLs (/healthz, /livez, /readyz, /version).
    AllButPublicInfo,
}

impl KnobSource {
    /// A source reading `dir/knobs.json`.
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("knobs.json"),
            last_good: Knobs::default(),
            fail_key: None,
            fail_left: 0,
            node_first_seen: HashMap::new(),
            anonymous_first_seen: None,
            token_first_seen: HashMap::new(),
            tls_hold_first_seen: None,
            readyz_first_seen: None,
            events_first_seen: None,
        }
    }

    /// Re-reads the file at `now`: windows that count "from when the knob is first
    /// seen" start here (at start-up for knobs present then).
    pub fn read(&mut self, now: SystemTime) -> Snapshot {
        let error = match std::fs::read_to_string(&self.path) {
            Ok(text) => match Knobs::parse(&text) {
                Ok(k) => {
                    self.last_good = k;
                    None
                }
                Err(e) => Some(format!("{e:#}")),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.last_good = Knobs::default();
                None
            }
            Err(e) => Some(format!("reading {}: {e}", self.path.display())),
        };
        let value = self.last_good.fail_next_5xx;
        if value != self.fail_key {
            self.fail_key = value;
            self.fail_left = value.unwrap_or(0);
        }
        for name in self.last_good.nodes.keys() {
            self.node_first_seen.entry(name.clone()).or_insert(now);
        }
        let k = &self.last_good;
        let anonymous_forbidden_until = window(
            &mut self.anonymous_first_seen,
            k.anonymous_forbidden_for_secs,
            now,
        );
        let tls_hold_until = window(
            &mut self.tls_hold_first_seen,
            k.tls_handshake_hold_secs,
            now,
        );
        let readyz_failing_until =
            window(&mut self.readyz_first_seen, k.readyz_failing_for_secs, now);
        let events_unavailable_until = window(
            &mut self.events_first_seen,
            k.events_unavailable_for_secs,
            now,
        );
        let delayed: Vec<(&str, f64)> = self
            .last_good
            .tokens
            .iter()
            .filter_map(|t| Some((t.id.as_str(), t.signed_after_secs?)))
            .collect();
        self.token_first_seen
            .retain(|id, _| delayed.iter().any(|(d, _)| d == id));
        let mut unsigned_tokens = BTreeSet::new();
        for (id, secs) in delayed {
            let first = *self.token_first_seen.entry(id.to_owned()).or_insert(now);
            if now < first + Duration::from_secs_f64(secs.clamp(0.0, 1e9)) {
                unsigned_tokens.insert(id.to_owned());
            }
        }
        Snapshot {
            knobs: self.last_good.clone(),
            error,
            anonymous_forbidden_until,
            unsigned_tokens,
            tls_hold_until,
            readyz_failing_until,
            events_unavailable_until,
        }
    }

    /// Consumes one injected 500 if any are owed.
    pub fn take_injected_failure(&mut self) -> bool {
        if self.fail_left > 0 {
            self.fail_left -= 1;
            true
        } else {
            false
        }
    }

    /// For each knob Node: when its Ready window ends (first sighting + ready_for_secs).
    pub fn node_deadlines(&mut self, knobs: &Knobs, now: SystemTime) -> Vec<(String, SystemTime)> {
        knobs
            .nodes
            .iter()
            .map(|(name, n)| {
                let first = *self.node_first_seen.entry(name.clone()).or_insert(now);
                let secs = Duration::from_secs_f64(n.ready_for_secs.clamp(0.0, 1e9));
                (name.clone(), first + secs)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_knobs() {
        let k = Knobs::parse(
            r#"{"tokens":[{"id":"abcdef","secret":"0123456789abcdef","expired":true}],
                "unavailable_until_unix": 1.5, "fail_next_5xx": 2, "csr_approval": "manual",
                "nodes": {"node-1": {"ready_for_secs": 40}}, "kubernetes_version": "v1.31.0",
                "response_delay_ms": 10}"#,
        )
        .unwrap();
        assert!(k.tokens[0].expired);
        assert_eq!(k.csr_approval, CsrApproval::Manual);
        assert_eq!(k.version().minor, 31);
        assert_eq!(k.nodes["node-1"].ready_for_secs, 40.0);
        assert_eq!(Knobs::parse("{}").unwrap(), Knobs::default());
    }

    #[test]
    fn rejects_bad_knobs_with_reasons() {
        let err = |s: &str| format!("{:#}", Knobs::parse(s).unwrap_err());
        assert!(err(r#"{"tokens":[{"id":"ABC","secret":"x"}]}"#).contains("token \"ABC\""));
        assert!(err(r#"{"csr_approval":"sometimes"}"#).contains("unknown variant"));
        assert!(err(r#"{"typo_knob":1}"#).contains("unknown field"));
        assert!(err(r#"{"kubernetes_version":"1.29"}"#).contains("kubernetes_version"));
        assert!(err(r#"{"nodes":{"Bad_Name":{"ready_for_secs":1}}}"#).contains("Bad_Name"));
        assert!(err("{").contains("parsing knobs.json"));
        assert!(
            err(r#"{"kubeadm_certs":{"certificate_key":"xyz","etcd_ca_dir":"/d"}}"#)
                .contains("64 hex digits")
        );
        assert!(err(r#"{"etcd_pods":{"cp1":"http://x"}}"#).contains("etcd_pods.cp1"));
        assert!(
            err(r#"{"anonymous_forbidden_for_secs":-1}"#).contains("anonymous_forbidden_for_secs")
        );
        assert!(err(r#"{"cluster_info_body":"huge"}"#).contains("unknown variant"));
        assert!(err(r#"{"cluster_info_body_mib":0}"#).contains("cluster_info_body_mib"));
        assert!(err(r#"{"csr_create_forbidden":"yes"}"#).contains("expected a boolean"));
    }

    #[test]
    fn parses_the_hostile_knobs() {
        let k = Knobs::parse(
            r#"{"anonymous_forbidden_for_secs": 20, "anonymous_forbidden": true,
                "cluster_info_body": "oversized-chunked", "cluster_info_body_mib": 3,
                "csr_create_forbidden": true}"#,
        )
        .unwrap();
        assert_eq!(k.cluster_info_body, Some(ClusterInfoBody::OversizedChunked));
        assert_eq!(k.cluster_info_body_bytes(), 3 << 20);
        assert!(k.anonymous_forbidden && k.csr_create_forbidden);
        for (text, want) in [
            ("oversized", ClusterInfoBody::Oversized),
            ("endless", ClusterInfoBody::Endless),
        ] {
            let k = Knobs::parse(&format!(r#"{{"cluster_info_body":"{text}"}}"#)).unwrap();
            assert_eq!(k.cluster_info_body, Some(want));
        }
        assert_eq!(Knobs::default().cluster_info_body_bytes(), 64 << 20);
    }

    #[test]
    fn anonymous_window_counts_from_first_sighting() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = KnobSource::new(dir.path());
        let knobs = dir.path().join("knobs.json");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(src.read(t0).anonymous_denial(t0), None);

        std::fs::write(&knobs, r#"{"anonymous_forbidden_for_secs":10}"#).unwrap();
        let snap = src.read(at(5));
        assert_eq!(
            snap.anonymous_denial(at(5)),
            Some(AnonymousDenial::Everything)
        );
        // Later reads keep the first sighting: the window ends at 5 + 10.
        let snap = src.read(at(14));
        assert_eq!(
            snap.anonymous_denial(at(14)),
            Some(AnonymousDenial::Everything)
        );
        assert_eq!(src.read(at(15)).anonymous_denial(at(15)), None);
        // A new value moves the end, not the start.
        std::fs::write(&knobs, r#"{"anonymous_forbidden_for_secs":30}"#).unwrap();
        let snap = src.read(at(20));
        assert_eq!(
            snap.anonymous_denial(at(20)),
            Some(AnonymousDenial::Everything)
        );
        assert_eq!(snap.anonymous_forbidden_until, Some(at(35)));
        // Removing the knob forgets it; writing it again starts a new window.
        std::fs::write(&knobs, "{}").unwrap();
        assert_eq!(src.read(at(21)).anonymous_denial(at(21)), None);
        std::fs::write(&knobs, r#"{"anonymous_forbidden_for_secs":10}"#).unwrap();
        assert_eq!(src.read(at(100)).anonymous_forbidden_until, Some(at(110)));
        // After the window, anonymous_forbidden still refuses all but public info.
        std::fs::write(
            &knobs,
            r#"{"anonymous_forbidden_for_secs":10,"anonymous_forbidden":true}"#,
        )
        .unwrap();
        assert_eq!(
            src.read(at(200)).anonymous_denial(at(200)),
            Some(AnonymousDenial::AllButPublicInfo)
        );
    }

    #[test]
    fn a_new_token_is_signed_after_its_delay_from_first_sighting() {
        let dir = tempfile::tempdir().unwrap();
        let knobs = dir.path().join("knobs.json");
        let mut src = KnobSource::new(dir.path());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        std::fs::write(
            &knobs,
            r#"{"tokens":[{"id":"abcdef","secret":"0123456789abcdef"},
                          {"id":"newtok","secret":"0123456789abcdef","signed_after_secs":2.5}]}"#,
        )
        .unwrap();
        let unsigned = |src: &mut KnobSource, ms| src.read(at(ms)).unsigned_tokens;
        // Counted from the first read that sees it, not from the server's start.
        assert_eq!(
            unsigned(&mut src, 10_000),
            BTreeSet::from(["newtok".to_owned()])
        );
        assert_eq!(
            unsigned(&mut src, 12_499),
            BTreeSet::from(["newtok".to_owned()])
        );
        assert!(unsigned(&mut src, 12_500).is_empty());
        // The token authenticates while unsigned.
        let snap = src.read(at(10_000));
        assert!(
            snap.knobs
                .valid_token(&BootstrapToken::parse("newtok.0123456789abcdef").unwrap())
        );
        // Deleted and created again: a new delay.
        std::fs::write(&knobs, r#"{"tokens":[]}"#).unwrap();
        assert!(unsigned(&mut src, 20_000).is_empty());
        std::fs::write(
            &knobs,
            r#"{"tokens":[{"id":"newtok","secret":"0123456789abcdef","signed_after_secs":1}]}"#,
        )
        .unwrap();
        assert_eq!(
            unsigned(&mut src, 30_000),
            BTreeSet::from(["newtok".to_owned()])
        );
        assert!(unsigned(&mut src, 31_000).is_empty());
        assert!(
            Knobs::parse(
                r#"{"tokens":[{"id":"abcdef","secret":"0123456789abcdef","signed_after_secs":-1}]}"#
            )
            .is_err()
        );
    }

    #[test]
    fn warm_up_windows_replay_the_measured_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let knobs = dir.path().join("knobs.json");
        // Real v1.20.2: no TLS for ~8.4 s, 403 for anonymous up to ~0.2 s longer,
        // /readyz 500 until ~1.8 s after the first answer.
        std::fs::write(
            &knobs,
            r#"{"tls_handshake_hold_secs":8.4,"anonymous_forbidden_for_secs":8.6,"readyz_failing_for_secs":10.2}"#,
        )
        .unwrap();
        let mut src = KnobSource::new(dir.path());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let snap = src.read(t0);
        assert_eq!(snap.tls_hold_until, Some(at(8400)));
        assert_eq!(snap.anonymous_forbidden_until, Some(at(8600)));
        assert_eq!(snap.readyz_failing_until, Some(at(10200)));
        // Later reads keep the first sighting; removing a knob forgets it.
        assert_eq!(src.read(at(9000)).tls_hold_until, Some(at(8400)));
        std::fs::write(&knobs, r#"{"readyz_failing_for_secs":1}"#).unwrap();
        let snap = src.read(at(20_000));
        assert_eq!(snap.tls_hold_until, None);
        assert_eq!(snap.readyz_failing_until, Some(at(1000)));
        assert!(Knobs::parse(r#"{"tls_handshake_hold_secs":-1}"#).is_err());
        assert!(Knobs::parse(r#"{"readyz_failing_for_secs":"x"}"#).is_err());
    }

    #[test]
    fn knob_nodes_count_from_the_first_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("knobs.json"),
            r#"{"nodes":{"old":{"ready_for_secs":40}}}"#,
        )
        .unwrap();
        let mut src = KnobSource::new(dir.path());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let snap = src.read(t0);
        let later = t0 + Duration::from_secs(30);
        let deadlines = src.node_deadlines(&snap.knobs, later);
        assert_eq!(
            deadlines,
            vec![("old".to_owned(), t0 + Duration::from_secs(40))]
        );
    }

    #[test]
    fn overload_knobs_parse_and_are_checked() {
        let k = Knobs::parse(
            r#"{"max_inflight": 50, "retry_after_secs": 2, "busy_503_fraction": 0.1}"#,
        )
        .unwrap();
        assert_eq!(k.inflight_limit(), Some(50));
        assert_eq!(k.retry_after(), 2);
        assert_eq!(Knobs::default().retry_after(), 1);
        assert_eq!(Knobs::default().inflight_limit(), None);
        assert_eq!(
            Knobs::parse(r#"{"max_inflight": 0}"#)
                .unwrap()
                .inflight_limit(),
            None
        );
        let err = |s: &str| format!("{:#}", Knobs::parse(s).unwrap_err());
        assert!(err(r#"{"busy_503_fraction": 1.5}"#).contains("busy_503_fraction"));
        assert!(err(r#"{"busy_503_fraction": -0.1}"#).contains("busy_503_fraction"));
        assert!(err(r#"{"retry_after_secs": 7200}"#).contains("retry_after_secs"));
        assert!(err(r#"{"max_inflight": -1}"#).contains("expected u64"));
    }

    #[test]
    fn expired_tokens_are_not_valid() {
        let k = Knobs::parse(
            r#"{"tokens":[{"id":"abcdef","secret":"0123456789abcdef","expired":true},
                          {"id":"ghijkl","secret":"0123456789abcdef"}]}"#,
        )
        .unwrap();
        assert!(!k.valid_token(&BootstrapToken::parse("abcdef.0123456789abcdef").unwrap()));
        assert!(k.valid_token(&BootstrapToken::parse("ghijkl.0123456789abcdef").unwrap()));
        assert!(!k.valid_token(&BootstrapToken::parse("ghijkl.0123456789abcdee").unwrap()));
    }

    #[test]
    fn failure_countdown_is_keyed_by_value() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = KnobSource::new(dir.path());
        std::fs::write(dir.path().join("knobs.json"), r#"{"fail_next_5xx":2}"#).unwrap();
        let mut fails = 0;
        for _ in 0..5 {
            src.read(SystemTime::now());
            fails += src.take_injected_failure() as u32;
        }
        assert_eq!(fails, 2);
        // A different value re-arms; an invalid file keeps the last good knobs.
        std::fs::write(dir.path().join("knobs.json"), r#"{"fail_next_5xx":1}"#).unwrap();
        src.read(SystemTime::now());
        assert!(src.take_injected_failure());
        std::fs::write(dir.path().join("knobs.json"), "{broken").unwrap();
        let snap = src.read(SystemTime::now());
        assert!(snap.error.is_some());
        assert_eq!(snap.knobs.fail_next_5xx, Some(1));
        assert!(!src.take_injected_failure());
    }
}
