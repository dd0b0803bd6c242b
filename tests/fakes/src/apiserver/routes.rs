//! Request routing and handlers: one small function per endpoint, all synchronous under
//! the store lock (the objects are tiny; holding the lock for one file write is simpler
//! than ordering concurrent writers).

use std::collections::BTreeSet;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use super::State;
use super::auth::User;
use super::knobs::{CsrApproval, Knobs};
use super::objects::{self, Reply, admission_forbidden, forbidden, invalid, not_found, status};
use crate::{jws, kubeconfig, timefmt};

const CSR_GROUP: &str = "certificates.k8s.io";
const CSR_KIND: &str = "CertificateSigningRequest";
/// The only signer this fake implements.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// Everything a handler needs about one request.
pub struct Call<'a> {
    /// Shared server state.
    pub state: &'a State,
    /// Knobs in force.
    pub knobs: &'a Knobs,
    /// Authenticated user.
    pub user: &'a User,
    /// HTTP method.
    pub method: &'a str,
    /// The query string, if any (list field selectors).
    pub query: Option<&'a str>,
    /// The request's Content-Type, if any (PATCH types).
    pub content_type: Option<&'a str>,
    /// Request body.
    pub body: &'a [u8],
    /// Request time.
    pub now: SystemTime,
    /// Tokens not signed yet (`signed_after_secs`): no JWS in cluster-info.
    pub unsigned_tokens: &'a BTreeSet<String>,
    /// Inside the `readyz_failing_for_secs` window.
    pub readyz_failing: bool,
}

/// kube-apiserver v1.20.2's readiness checks, in the order it lists them (captured from
/// a real one started with a minimal flag set; the real tier's, with more flags, lists
/// one more); during start-up the last to pass is `poststarthook/rbac/bootstrap-roles`.
pub const READYZ_CHECKS: [&str; 23] = [
    "ping",
    "log",
    "etcd",
    "informer-sync",
    "poststarthook/start-kube-apiserver-admission-initializer",
    "poststarthook/generic-apiserver-start-informers",
    "poststarthook/priority-and-fairness-config-consumer",
    "poststarthook/priority-and-fairness-filter",
    "poststarthook/start-apiextensions-informers",
    "poststarthook/start-apiextensions-controllers",
    "poststarthook/crd-informer-synced",
    "poststarthook/bootstrap-controller",
    "poststarthook/rbac/bootstrap-roles",
    "poststarthook/scheduling/bootstrap-system-priority-classes",
    "poststarthook/priority-and-fairness-config-producer",
    "poststarthook/start-cluster-authentication-info-controller",
    "poststarthook/start-kube-aggregator-informers",
    "poststarthook/apiservice-registration-controller",
    "poststarthook/apiservice-status-available-controller",
    "poststarthook/kube-apiserver-autoregistration",
    "autoregister-completion",
    "poststarthook/apiservice-openapi-controller",
    "shutdown",
];

/// healthz.go's answer to a failed readiness check (always verbose on failure, via
/// `http.Error`): every check, the failed one's reason withheld, then `readyz check
/// failed`.
pub fn readyz_failed() -> Reply {
    let mut body = String::new();
    for check in READYZ_CHECKS {
        if check == "poststarthook/rbac/bootstrap-roles" {
            body.push_str(&format!("[-]{check} failed: reason withheld\n"));
        } else {
            body.push_str(&format!("[+]{check} ok\n"));
        }
    }
    body.push_str("readyz check failed\n");
    Reply::text(500, &body)
}

pub(super) fn method_not_allowed() -> Reply {
    status(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        None,
    )
}

pub(super) fn internal(err: anyhow::Error) -> Reply {
    status(
        500,
        "InternalError",
        &format!("Internal error occurred: {err:#}"),
        None,
    )
}

pub(super) fn body_json(c: &Call<'_>) -> Result<Value, Reply> {
    serde_json::from_slice(c.body).map_err(|e| {
        status(
            400,
            "BadRequest",
            &format!("the body of the request was in an unknown format: {e}"),
            None,
        )
    })
}

/// Dispatches one request by method and path.
pub fn route(c: &Call<'_>, path: &str) -> Reply {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["readyz"] if c.method == "GET" && c.readyz_failing => readyz_failed(),
        ["healthz" | "readyz" | "livez", ..] if c.method == "GET" => Reply::text(200, "ok"),
        ["version"] if c.method == "GET" => {
            Reply::json(200, &objects::version_info(c.knobs.version()))
        }
        ["api", "v1", "namespaces", ns, "configmaps", name] => match c.method {
            "GET" => get_config_map(c, ns, name),
            _ => method_not_allowed(),
        },
        ["api", "v1", "namespaces", "kube-system", "secrets", name] => match c.method {
            "GET" => get_secret(c, name),
            _ => method_not_allowed(),
        },
        ["api", "v1", "namespaces", "kube-system", "pods"] => match c.method {
            "GET" => list_pods(c),
            _ => method_not_allowed(),
        },
        ["api", "v1", "namespaces", ns, "events"] => match c.method {
            "GET" => super::events::list(c, Some(ns)),
            "POST" => super::events::create(c, ns),
            _ => method_not_allowed(),
        },
        ["api", "v1", "events"] => match c.method {
            "GET" => super::events::list(c, None),
            _ => method_not_allowed(),
        },
        ["api", "v1", "nodes"] => match c.method {
            "GET" => list_nodes(c),
            "POST" => create_node(c),
            _ => method_not_allowed(),
        },
        ["api", "v1", "nodes", name] => match c.method {
            "GET" => get_node(c, name),
            "PATCH" | "PUT" => patch_node(c, name),
            "DELETE" => delete_node(c, name),
            _ => method_not_allowed(),
        },
        ["api", "v1", "nodes", name, "status"] => match c.method {
            "GET" => get_node(c, name),
            "PATCH" | "PUT" => node_status(c, name),
            _ => method_not_allowed(),
        },
        [
            "apis",
            "certificates.k8s.io",
            "v1",
            "certificatesigningrequests",
        ] => match c.method {
            "GET" => list_csrs(c),
            "POST" => create_csr(c),
            _ => method_not_allowed(),
        },
        [
            "apis",
            "certificates.k8s.io",
            "v1",
            "certificatesigningrequests",
            name,
        ] => match c.method {
            "GET" => get_csr(c, name),
            "DELETE" => delete_csr(c, name),
            _ => method_not_allowed(),
        },
        [
            "apis",
            "certificates.k8s.io",
            "v1",
            "certificatesigningrequests",
            name,
            "approval",
        ] => match c.method {
            "PUT" => approve_csr(c, name),
            "GET" => get_csr(c, name),
            _ => method_not_allowed(),
        },
        _ => status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            Some(objects::Details::default()),
        ),
    }
}

// ---- ConfigMaps -------------------------------------------------------------------

fn get_config_map(c: &Call<'_>, ns: &str, name: &str) -> Reply {
    let v = c.knobs.version();
    let versioned = format!("kubelet-config-{}.{}", v.major, v.minor);
    let data = match (ns, name) {
        // kubeadm's Role kubeadm:bootstrap-signer-clusterinfo is bound to the user
        // system:anonymous only: a bootstrap token or a node gets 403 (measured).
        ("kube-public", "cluster-info") if !(c.user.is_anonymous() || c.user.is_admin()) => {
            return forbidden(&c.user.name, "get", "configmaps", "", Some(name), Some(ns));
        }
        ("kube-public", "cluster-info") => cluster_info_data(c),
        ("kube-system", n) if n == "kubelet-config" || n == versioned => {
            if !(c.user.is_bootstrapper() || c.user.node_name().is_some() || c.user.is_admin()) {
                return forbidden(&c.user.name, "get", "configmaps", "", Some(name), Some(ns));
            }
            json!({ "kubelet": objects::KUBELET_CONFIG })
        }
        ("kube-system", "kubeadm-config") => {
            if !(c.user.is_bootstrapper() || c.user.node_name().is_some() || c.user.is_admin()) {
                return forbidden(&c.user.name, "get", "configmaps", "", Some(name), Some(ns));
            }
            let endpoint = c.state.server_url.trim_start_matches("https://");
            json!({ "ClusterConfiguration": objects::kubeadm_cluster_configuration(v, endpoint) })
        }
        _ => return not_found("configmaps", "", name),
    };
    Reply::json(200, &objects::config_map(ns, name, data, c.state.started))
}

/// cluster-info: the kubeconfig plus one JWS per valid token (the bootstrap signer drops
/// the signature of a token once it expires or is deleted, and adds a new token's a
/// moment after it is created).
fn cluster_info_data(c: &Call<'_>) -> Value {
    let kubeconfig = kubeconfig::cluster_info(&c.state.server_url, c.state.pki.ca_pem.as_bytes());
    let mut data = serde_json::Map::new();
    for t in c
        .knobs
        .tokens
        .iter()
        .filter(|t| !t.expired && !c.unsigned_tokens.contains(&t.id))
    {
        data.insert(
            format!("jws-kubeconfig-{}", t.id),
            json!(jws::sign_detached(&kubeconfig, &t.id, &t.secret)),
        );
    }
    data.insert("kubeconfig".into(), json!(kubeconfig));
    Value::Object(data)
}

// ---- Control-plane join: kubeadm-certs and etcd pods ------------------------------

/// The kubeadm-certs Role grants `get` on that one Secret to the default node token's
/// group (copycerts.createRBAC); admins can read everything.
fn get_secret(c: &Call<'_>, name: &str) -> Reply {
    let allowed = c.user.is_admin()
        || (name == "kubeadm-certs"
            && c.user
                .groups
                .iter()
                .any(|g| g == "system:bootstrappers:kubeadm:default-node-token"));
    if !allowed {
        return forbidden(
            &c.user.name,
            "get",
            "secrets",
            "",
            Some(name),
            Some("kube-system"),
        );
    }
    match (name, &c.knobs.kubeadm_certs) {
        ("kubeadm-certs", Some(knob)) => {
            match super::controlplane::kubeadm_certs_data(&c.state.dir, knob) {
                Ok(data) => Reply::json(200, &super::controlplane::kubeadm_certs_secret(data)),
                Err(e) => internal(e),
            }
        }
        _ => not_found("secrets", "", name),
    }
}

fn list_pods(c: &Call<'_>) -> Reply {
    if !(c.user.is_admin() || c.user.node_name().is_some()) {
        return forbidden(&c.user.name, "list", "pods", "", None, Some("kube-system"));
    }
    Reply::json(200, &super::controlplane::etcd_pod_list(&c.knobs.etcd_pods))
}

// ---- Nodes ------------------------------------------------------------------------

fn may_read_nodes(u: &User) -> bool {
    u.is_admin() || u.is_bootstrapper() || u.node_name().is_some()
}

fn is_self_or_admin(u: &User, name: &str) -> bool {
    u.is_admin() || u.node_name() == Some(name)
}

fn list_nodes(c: &Call<'_>) -> Reply {
    if !(c.user.is_admin() || c.user.node_name().is_some()) {
        return forbidden(&c.user.name, "list", "nodes", "", None, None);
    }
    let items = c
        .state
        .store
        .lock()
        .map(|s| s.node_list(c.now))
        .unwrap_or_default();
    Reply::json(
        200,
        &json!({"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": items}),
    )
}

fn get_node(c: &Call<'_>, name: &str) -> Reply {
    if !may_read_nodes(c.user) {
        return forbidden(&c.user.name, "get", "nodes", "", Some(name), None);
    }
    let Ok(store) = c.state.store.lock() else {
        return internal(anyhow::anyhow!("store lock poisoned"));
    };
    match store.node(name) {
        Some(n) => Reply::json(200, &n.render(name, c.now)),
        None => not_found("nodes", "", name),
    }
}

fn create_node(c: &Call<'_>) -> Reply {
    let body = match body_json(c) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let name = body["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if !objects::is_dns_subdomain(&name) {
        return invalid(
            "Node",
            "",
            &name,
            "metadata.name",
            "Invalid value: a lowercase RFC 1123 subdomain is required",
        );
    }
    if let Some(reply) = node_may_write(c, "create", &name) {
        return reply;
    }
    let Ok(mut store) = c.state.store.lock() else {
        return internal(anyhow::anyhow!("store lock poisoned"));
    };
    match store.create_node(&name, &body, c.now) {
        Ok(Some(v)) => Reply::json(201, &v),
        Ok(None) => objects::already_exists("nodes", "", &name),
        Err(e) => internal(e),
    }
}

fn node_status(c: &Call<'_>, name: &str) -> Reply {
    if !is_self_or_admin(c.user, name) {
        let verb = if c.method == "PUT" { "update" } else { "patch" };
        return forbidden(&c.user.name, verb, "nodes/status", "", Some(name), None);
    }
    let patch = serde_json::from_slice::<Value>(c.body).ok();
    let Ok(mut store) = c.state.store.lock() else {
        return internal(anyhow::anyhow!("store lock poisoned"));
    };
    match store.heartbeat(name, patch.as_ref(), c.now) {
        Ok(Some(v)) => Reply::json(200, &v),
        Ok(None) => not_found("nodes", "", name),
        Err(e) => internal(e),
    }
}

/// RBAC's `system:node` role lets every node create, patch and update Nodes; the
/// NodeRestriction admission plugin then limits a node to its own (after the object is
/// looked up, so another node's absent Node is a 404). Anyone else needs to be admin.
fn node_may_write(c: &Call<'_>, verb: &str, name: &str) -> Option<Reply> {
    match c.user.node_name() {
        _ if c.user.is_admin() => None,
        Some(own) if own == name => None,
        Some(own) => Some(admission_forbidden(
            "nodes",
            "",
            name,
            &format!(
                "node {} is not allowed to modify node {}",
                objects::go_quote(own),
                objects::go_quote(name)
            ),
        )),
        None => Some(forbidden(
            &c.user.name,
            verb,
            "nodes",
            "",
            (verb != "create").then_some(name),
            None,
        )),
    }
}

/// `PATCH` (a JSON merge patch, or a strategic merge patch, which for labels,
/// annotations and the spec's scalars merges the same way) or `PUT` (taken as a merge).
fn patch_node(c: &Call<'_>, name: &str) -> Reply {
    let verb = if c.method == "PUT" { "update" } else { "patch" };
    if !(c.user.is_admin() || c.user.node_name().is_some()) {
        return forbidden(&c.user.name, verb, "nodes", "", Some(name), None);
    }
    if c.method == "PATCH" {
        let media = c
            .content_type
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim();
        if !matches!(
            media,
            "application/merge-patch+json" | "application/strategic-merge-patch+json"
        ) {
            return objects::unsupported_patch_type();
        }
    }
    let patch = match body_json(c) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(mut store) = c.state.store.lock() else {
        return internal(anyhow::anyhow!("store lock poisoned"));
    };
    if store.node(name).is_none() {
        return not_found("nodes", "", name);
    }
    if let Some(reply) = node_may_write(c, verb, name) {
        return reply;
    }
    match store.patch_node(name, &patch, c.now) {
        Ok(Some(v)) => Reply::json(200, &v),
        Ok(None) => not_found("nodes", "", name),
        Err(e) => internal(e),
    }
}

fn delete_node(c: &Call<'_>, name: &str) -> Reply {
    if !c.user.is_admin() {
        return forbidden(&c.user.name, "delete", "nodes", "", Some(name), None);
    }
    match c.state.store.lock().map(|mut s| s.delete_node(name)) {
        Ok(true) => Reply::json(
            200,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                              "status": "Success", "details": {"name": name, "kind": "nodes"}}),
        ),
        Ok(false) => not_found("nodes", "", name),
        Err(_) => internal(anyhow::anyhow!("store lock poisoned")),
    }
}

// ---- CertificateSigningRequests ----------------------------------------------------

/// Bootstrappers hold system:node-bootstrapper (create, get, list, watch CSRs) through
/// kubeadm's `kubeadm:kubelet-bootstrap` ClusterRoleBinding; `csr_create_forbidden`
/// is a cluster without it.
fn may_use_csrs(c: &Call<'_>) -> bool {
    let u = c.user;
    u.is_admin()
        || u.node_name().is_some()
        || (u.is_bootstrapper() && !c.knobs.csr_create_forbidden)
}

/// Bootstrappers may list CSRs: upstream's system:node-bootstrapper ClusterRole grants
/// create, get, list and watch (the kubelet watches its own CSR).
fn list_csrs(c: &Call<'_>) -> Reply {
    if !may_use_csrs(c) {
        return forbidden(
            &c.user.name,
            "list",
            "certificatesigningrequests",
            CSR_GROUP,
            None,
            None,
        );
    }
    let items = c
        .state
        .store
        .lock()
        .map(|s| s.csr_list())
        .unwrap_or_default();
    Reply::json(
        200,
        &json!({"kind": "CertificateSigningRequestList",
                             "apiVersion": "certificates.k8s.io/v1", "metadata": {}, "items": items}),
    )
}

/// The node name a kubelet client CSR asks for, or why it is unacceptable. The subject
/// must be exactly O=system:nodes, CN=system:node:<name>.
pub fn csr_node_name(csr_pem: &[u8]) -> Result<String, String> {
    let blocks: Vec<_> = x509_parser::pem::Pem::iter_from_buffer(csr_pem).collect();
    let der = match blocks.first() {
        Some(Ok(p)) if p.label == "CERTIFICATE REQUEST" => p.contents.clone(),
        _ => return Err("PEM block type must be CERTIFICATE REQUEST".into()),
    };
    let (_, csr) = X509CertificationRequest::from_der(&der)
        .map_err(|e| format!("unable to parse certificate request: {e}"))?;
    csr.verify_signature()
        .map_err(|_| "certificate request signature is invalid".to_owned())?;
    let subject = &csr.certification_request_info.subject;
    let orgs: Vec<&str> = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .collect();
    let cns: Vec<&str> = subject
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .collect();
    match (orgs.as_slice(), cns.as_slice()) {
        (["system:nodes"], [cn]) => match cn.strip_prefix("system:node:") {
            Some(n) if !n.is_empty() => Ok(n.to_owned()),
            _ => Err(format!(
                "subject common name {cn:?} must be \"system:node:<nodeName>\""
            )),
        },
        _ => Err(format!(
            "subject {subject} must be exactly O=system:nodes, CN=system:node:<nodeName>"
        )),
    }
}

fn random_suffix() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 5];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    b.iter()
        .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
        .collect()
}

fn create_csr(c: &Call<'_>) -> Reply {
    if !may_use_csrs(c) {
        return forbidden(
            &c.user.name,
            "create",
            "certificatesigningrequests",
            CSR_GROUP,
            None,
            None,
        );
    }
    let body = match body_json(c) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let name = match (
        body["metadata"]["name"].as_str(),
        body["metadata"]["generateName"].as_str(),
    ) {
        (Some(n), _) if !n.is_empty() => n.to_owned(),
        (_, Some(g)) if !g.is_empty() => format!("{g}{}", random_suffix()),
        _ => {
            return invalid(
                CSR_KIND,
                CSR_GROUP,
                "",
                "metadata.name",
                "Required value: name or generateName is required",
            );
        }
    };
    let bad = |field: &str, msg: &str| invalid(CSR_KIND, CSR_GROUP, &name, field, msg);
    // CSR names are path segments, not DNS names: kubelet's `node-csr-<base64url>`
    // has capitals and underscores.
    if name == "." || name == ".." || name.contains(['/', '%']) {
        return bad(
            "metadata.name",
            "Invalid value: may not contain '/' or '%' or be '.' or '..'",
        );
    }
    let spec = &body["spec"];
    let Some(pem) = spec["request"]
        .as_str()
        .and_then(|r| STANDARD.decode(r).ok())
    else {
        return bad(
            "spec.request",
            "Required value: base64-encoded PEM certificate request required",
        );
    };
    if let Err(e) = csr_node_name(&pem) {
        return bad("spec.request", &format!("Invalid value: {e}"));
    }
    let signer = spec["signerName"].as_str().unwrap_or_default();
    if signer != KUBELET_CLIENT_SIGNER {
        return bad(
            "spec.signerName",
            &format!(
                "Unsupported value: {signer:?}: fake-apiserver implements only {KUBELET_CLIENT_SIGNER:?}"
            ),
        );
    }
    let usages: Vec<&str> = spec["usages"]
        .as_array()
        .map(|a| a.iter().filter_map(|u| u.as_str()).collect())
        .unwrap_or_default();
    const ALLOWED: [&str; 3] = ["digital signature", "key encipherment", "client auth"];
    if !usages.contains(&"client auth") || usages.iter().any(|u| !ALLOWED.contains(u)) {
        return bad(
            "spec.usages",
            &format!(
                "Unsupported value: {usages:?}: must include \"client auth\" and only {ALLOWED:?}"
            ),
        );
    }
    let Ok(mut store) = c.state.store.lock() else {
        return internal(anyhow::anyhow!("store lock poisoned"));
    };
    if store.csr(&name).is_some() {
        return objects::already_exists("certificatesigningrequests", CSR_GROUP, &name);
    }
    let mut csr = json!({
        "kind": CSR_KIND,
        "apiVersion": "certificates.k8s.io/v1",
        "metadata": {"name": name, "uid": objects::random_uid(), "creationTimestamp": timefmt::k8s(c.now)},
        "spec": {
            "request": spec["request"], "signerName": signer, "usages": usages,
            "username": c.user.name, "groups": c.user.groups,
        },
        "status": {},
    });
    if let Some(secs) = spec["expirationSeconds"].as_u64() {
        csr["spec"]["expirationSeconds"] = json!(secs);
    }
    maybe_auto_approve(c, &mut csr);
    match store.put_csr(&name, csr) {
        Ok(v) => Reply::json(201, &v),
        Err(e) => internal(e),
    }
}

fn has_condition(csr: &Value, ty: &str) -> bool {
    csr["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == ty))
}

/// kube-controller-manager's csrapproving controller: with `csr_approval: auto`, approve
/// node client CSRs from bootstrappers (new nodes) or from the node itself (renewal).
/// Returns true when it changed the CSR.
fn maybe_auto_approve(c: &Call<'_>, csr: &mut Value) -> bool {
    if c.knobs.csr_approval != CsrApproval::Auto
        || has_condition(csr, "Approved")
        || has_condition(csr, "Denied")
    {
        return false;
    }
    let groups: Vec<&str> = csr["spec"]["groups"]
        .as_array()
        .map(|g| g.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    let username = csr["spec"]["username"].as_str().unwrap_or_default();
    let pem = csr["spec"]["request"]
        .as_str()
        .and_then(|r| STANDARD.decode(r).ok())
        .unwrap_or_default();
    let Ok(node) = csr_node_name(&pem) else {
        return false;
    };
    let renewal = groups.contains(&"system:nodes") && username == format!("system:node:{node}");
    if !(groups.contains(&"system:bootstrappers") || renewal) {
        return false;
    }
    approve_and_sign(
        c,
        csr,
        "AutoApproved",
        "Auto approving kubelet client certificate after SubjectAccessReview.",
    );
    true
}

/// Adds the Approved condition and, like the signing controller right after, the
/// certificate (or a Failed condition if signing fails).
fn approve_and_sign(c: &Call<'_>, csr: &mut Value, reason: &str, message: &str) {
    let now = timefmt::k8s(c.now);
    let mut conditions = csr["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    conditions.push(
        json!({"type": "Approved", "status": "True", "reason": reason, "message": message,
                           "lastUpdateTime": now, "lastTransitionTime": now}),
    );
    let pem = csr["spec"]["request"]
        .as_str()
        .and_then(|r| STANDARD.decode(r).ok())
        .unwrap_or_default();
    let lifetime = c.knobs.client_cert_lifetime_secs.map_or(
        super::pki::CLIENT_CERT_LIFETIME,
        std::time::Duration::from_secs,
    );
    match c.state.pki.sign_client(&String::from_utf8_lossy(&pem), lifetime) {
        Ok(cert) => csr["status"]["certificate"] = json!(STANDARD.encode(cert)),
        Err(e) => conditions.push(json!({"type": "Failed", "status": "True", "reason": "SignerValidationFailure",
                                          "message": format!("{e:#}"), "lastUpdateTime": now, "lastTransitionTime": now})),
    }
    csr["status"]["conditions"] = json!(conditions);
}

fn get_csr(c: &Call<'_>, name: &str) -> Reply {
    if !may_use_csrs(c) {
        return forbidden(
            &c.user.name,
            "get",
            "certificatesigningrequests",
            CSR_GROUP,
            Some(name),
            None,
        );
    }
    let Ok(mut store) = c.state.store.lock() else {
        return internal(anyhow::anyhow!("store lock poisoned"));
    };
    let Some(mut csr) = store.csr(name).cloned() else {
        return not_found("certificatesigningrequests", CSR_GROUP, name);
    };
    // A CSR left pending under `manual` is picked up once the knob says `auto` again,
    // as the approving controller resyncs pending CSRs.
    if maybe_auto_approve(c, &mut csr) {
        return match store.put_csr(name, csr) {
            Ok(v) => Reply::json(200, &v),
            Err(e) => internal(e),
        };
    }
    Reply::json(200, &csr)
}

fn approve_csr(c: &Call<'_>, name: &str) -> Reply {
    if !c.user.is_admin() {
        return forbidden(
            &c.user.name,
            "update",
            "certificatesigningrequests/approval",
            CSR_GROUP,
            Some(name),
            None,
        );
    }
    let body = match body_json(c) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let wanted: Vec<&Value> = body["status"]["conditions"]
        .as_array()
        .map(|cs| cs.iter().filter(|x| x["status"] == "True").collect())
        .unwrap_or_default();
    let Ok(mut store) = c.state.store.lock() else {
        return internal(anyhow::anyhow!("store lock poisoned"));
    };
    let Some(mut csr) = store.csr(name).cloned() else {
        return not_found("certificatesigningrequests", CSR_GROUP, name);
    };
    let approved = wanted.iter().find(|x| x["type"] == "Approved");
    let denied = wanted.iter().find(|x| x["type"] == "Denied");
    match (approved, denied) {
        (Some(a), None) if !has_condition(&csr, "Approved") && !has_condition(&csr, "Denied") => {
            let reason = a["reason"].as_str().unwrap_or("KubectlApprove");
            let message = a["message"]
                .as_str()
                .unwrap_or("This CSR was approved by the test harness");
            approve_and_sign(c, &mut csr, reason, message);
        }
        (None, Some(d)) if !has_condition(&csr, "Approved") && !has_condition(&csr, "Denied") => {
            let now = timefmt::k8s(c.now);
            let mut conditions = csr["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            conditions.push(json!({"type": "Denied", "status": "True",
                                   "reason": d["reason"].as_str().unwrap_or("KubectlDeny"),
                                   "message": d["message"].as_str().unwrap_or("This CSR was denied by the test harness"),
                                   "lastUpdateTime": now, "lastTransitionTime": now}));
            csr["status"]["conditions"] = json!(conditions);
        }
        (None, None) => {
            return invalid(
                CSR_KIND,
                CSR_GROUP,
                name,
                "status.conditions",
                "Required value: an Approved or Denied condition with status \"True\" is required",
            );
        }
        _ => {
            return invalid(
                CSR_KIND,
                CSR_GROUP,
                name,
                "status.conditions",
                "Forbidden: a CSR can be approved or denied once, not both",
            );
        }
    }
    match store.put_csr(name, csr) {
        Ok(v) => Reply::json(200, &v),
        Err(e) => internal(e),
    }
}

fn delete_csr(c: &Call<'_>, name: &str) -> Reply {
    if !c.user.is_admin() {
        return forbidden(
            &c.user.name,
            "delete",
            "certificatesigningrequests",
            CSR_GROUP,
            Some(name),
            None,
        );
    }
    match c.state.store.lock().map(|mut s| s.delete_csr(name)) {
        Ok(true) => Reply::json(
            200,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
        ),
        Ok(false) => not_found("certificatesigningrequests", CSR_GROUP, name),
        Err(_) => internal(anyhow::anyhow!("store lock poisoned")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_pem(orgs: &[&str], cn: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        for o in orgs {
            dn.push(rcgen::DnType::OrganizationName, *o);
        }
        dn.push(rcgen::DnType::CommonName, cn);
        p.distinguished_name = dn;
        p.serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap()
            .into_bytes()
    }

    #[test]
    fn csr_subject_rules() {
        assert_eq!(
            csr_node_name(&csr_pem(&["system:nodes"], "system:node:n1")).unwrap(),
            "n1"
        );
        assert!(csr_node_name(&csr_pem(&[], "system:node:n1")).is_err());
        assert!(csr_node_name(&csr_pem(&["system:nodes", "x"], "system:node:n1")).is_err());
        assert!(csr_node_name(&csr_pem(&["system:nodes"], "n1")).is_err());
        assert!(csr_node_name(&csr_pem(&["system:nodes"], "system:node:")).is_err());
        assert!(csr_node_name(b"junk").is_err());
    }
}
