//! API objects as JSON, shaped like the real API server's (`kind`, `apiVersion`,
//! `metadata`), and the fixed ConfigMap contents kubeadm clusters carry.

use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Value, json};

use crate::kubeversion::KubeVersion;
use crate::timefmt;

/// The HTTP reply of a handler.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Content-Type.
    pub content_type: &'static str,
    /// Other headers (`Retry-After`).
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    /// A JSON reply.
    pub fn json(status: u16, v: &Value) -> Self {
        Self {
            status,
            body: serde_json::to_vec(v).unwrap_or_default(),
            content_type: "application/json",
            headers: Vec::new(),
        }
    }

    /// A plain-text reply (healthz).
    pub fn text(status: u16, s: &str) -> Self {
        Self {
            status,
            body: s.as_bytes().to_vec(),
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
        }
    }

    /// The same reply with `Retry-After: secs`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.headers.push(("retry-after", secs.to_string()));
        self
    }

    /// The `Retry-After` it carries, if any.
    pub fn retry_after_secs(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| *k == "retry-after")
            .map(|(_, v)| v.as_str())
    }
}

/// `metav1.StatusDetails`: every field is `omitempty` upstream.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Details {
    /// The object's name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The API group.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// The resource (or kind, for Invalid).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Field errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<Cause>,
}

impl Details {
    /// Details naming a resource: `{"name", "group", "kind"}` as the API errors set them.
    pub fn of(resource: &str, group: &str, name: &str) -> Self {
        Self {
            name: name.to_owned(),
            group: group.to_owned(),
            kind: resource.to_owned(),
            causes: Vec::new(),
        }
    }
}

/// `metav1.StatusCause`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Cause {
    /// e.g. `FieldValueInvalid`.
    pub reason: String,
    /// The field error's detail.
    pub message: String,
    /// The field path.
    pub field: String,
}

/// A `Status` body with upstream's field order (kind, apiVersion, metadata, status,
/// message, reason, details, code), byte for byte what Go's encoding/json writes.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody<'a> {
    kind: &'static str,
    api_version: &'static str,
    metadata: serde_json::Map<String, Value>,
    status: &'static str,
    message: &'a str,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a Details>,
    code: u16,
}

/// A `Status` failure object (metav1.Status), as every API error body is.
pub fn status(code: u16, reason: &str, message: &str, details: Option<Details>) -> Reply {
    let body = StatusBody {
        kind: "Status",
        api_version: "v1",
        metadata: serde_json::Map::new(),
        status: "Failure",
        message,
        reason,
        details: details.as_ref(),
        code,
    };
    Reply {
        status: code,
        body: serde_json::to_vec(&body).unwrap_or_default(),
        content_type: "application/json",
        headers: Vec::new(),
    }
}

/// What an overloaded kube-apiserver answers a request it will not handle now: the
/// max-inflight and priority-and-fairness filters' `tooManyRequests` (Go's `http.Error`:
/// plain text with a newline, `X-Content-Type-Options: nosniff`) with `Retry-After`.
/// client-go, finding no Status in it, reports "the server has received too many
/// requests and has asked us to try again later" (reason TooManyRequests).
pub fn too_many_requests(retry_after: u64) -> Reply {
    let mut r = Reply::text(429, "Too many requests, please try again later.\n");
    r.headers.push(("x-content-type-options", "nosniff".into()));
    r.retry_after(retry_after)
}

/// 404 for a named object: `nodes "n1" not found`.
pub fn not_found(resource: &str, group: &str, name: &str) -> Reply {
    let qualified = qualified(resource, group);
    status(
        404,
        "NotFound",
        &format!("{qualified} {} not found", go_quote(name)),
        Some(Details::of(resource, group, name)),
    )
}

/// 409 for a create that collides: `nodes "n1" already exists`.
pub fn already_exists(resource: &str, group: &str, name: &str) -> Reply {
    let qualified = qualified(resource, group);
    status(
        409,
        "AlreadyExists",
        &format!("{qualified} {} already exists", go_quote(name)),
        Some(Details::of(resource, group, name)),
    )
}

/// 422 with one field error (`NewInvalid`: details name the kind and group apart).
pub fn invalid(kind: &str, group: &str, name: &str, field: &str, msg: &str) -> Reply {
    invalid_fields(kind, group, name, &[(field.to_owned(), msg.to_owned())])
}

/// 422 with field errors `(field, "Required value: ..."/"Invalid value: ...")`, as
/// `NewInvalid` words them: one error as `field: msg`, several as `[a: x, b: y]`; each
/// cause's reason follows the error's type (`FieldValueRequired`, ...).
pub fn invalid_fields(kind: &str, group: &str, name: &str, errs: &[(String, String)]) -> Reply {
    let qualified = qualified(kind, group);
    let mut details = Details::of(kind, group, name);
    let texts: Vec<String> = errs.iter().map(|(f, m)| format!("{f}: {m}")).collect();
    for (field, msg) in errs {
        details.causes.push(Cause {
            reason: cause_reason(msg).into(),
            message: msg.to_owned(),
            field: field.to_owned(),
        });
    }
    let all = match texts.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    status(
        422,
        "Invalid",
        &format!("{qualified} {} is invalid: {all}", go_quote(name)),
        Some(details),
    )
}

/// `field.ErrorType`'s reason for a field error's text.
fn cause_reason(msg: &str) -> &'static str {
    [
        ("Required value", "FieldValueRequired"),
        ("Unsupported value", "FieldValueNotSupported"),
        ("Forbidden", "FieldValueForbidden"),
        ("Too long", "FieldValueTooLong"),
        ("Duplicate value", "FieldValueDuplicate"),
    ]
    .iter()
    .find(|(prefix, _)| msg.starts_with(prefix))
    .map_or("FieldValueInvalid", |(_, reason)| reason)
}

/// 400 `BadRequest` (`NewBadRequest`: no details).
pub fn bad_request(message: &str) -> Reply {
    status(400, "BadRequest", message, None)
}

/// 415 for a PATCH with a Content-Type the endpoint does not take
/// (`negotiation.NewUnsupportedMediaTypeError`).
pub fn unsupported_patch_type() -> Reply {
    status(
        415,
        "UnsupportedMediaType",
        &format!(
            "the body of the request was in an unknown format - accepted media types include: {}",
            PATCH_TYPES.join(", ")
        ),
        None,
    )
}

/// The patch types kube-apiserver v1.29 accepts on Nodes, in its order.
pub const PATCH_TYPES: [&str; 4] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

/// 403 from an admission plugin (`admission.NewForbidden`): `nodes "n2" is forbidden:
/// node "n1" is not allowed to modify node "n2"`.
pub fn admission_forbidden(resource: &str, group: &str, name: &str, reason: &str) -> Reply {
    status(
        403,
        "Forbidden",
        &format!(
            "{} {} is forbidden: {reason}",
            qualified(resource, group),
            go_quote(name)
        ),
        Some(Details::of(resource, group, name)),
    )
}

/// 403 in the authorizer's words, for a resource request; `resource` may carry a
/// subresource (`nodes/status`).
pub fn forbidden(
    user: &str,
    verb: &str,
    resource: &str,
    group: &str,
    name: Option<&str>,
    ns: Option<&str>,
) -> Reply {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    super::requestinfo::forbidden(
        user,
        &super::requestinfo::RequestInfo {
            resource_request: true,
            verb: verb.to_owned(),
            api_group: group.to_owned(),
            namespace: ns.unwrap_or_default().to_owned(),
            resource: resource.to_owned(),
            subresource: subresource.to_owned(),
            name: name.unwrap_or_default().to_owned(),
            ..Default::default()
        },
    )
}

/// Go's `%q` (the API server quotes names, users and paths with it).
pub fn go_quote(s: &str) -> String {
    crate::klog::quote(s)
}

fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    }
}

/// Deterministic uid for fixed objects (a UUID-shaped hash of the name).
pub fn uid_for(name: &str) -> String {
    let h = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let x = hex::encode(&h.as_ref()[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// A random uid.
pub fn random_uid() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    let x = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// A ConfigMap.
pub fn config_map(ns: &str, name: &str, data: Value, created: SystemTime) -> Value {
    json!({
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uid_for(&format!("{ns}/{name}")),
            "resourceVersion": "1",
            "creationTimestamp": timefmt::k8s(created),
        },
        "data": data,
    })
}

/// `/version`.
pub fn version_info(v: KubeVersion) -> Value {
    json!({
        "major": v.major.to_string(),
        "minor": v.minor.to_string(),
        "gitVersion": v.to_string(),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-07-16T14:47:02Z",
        "goVersion": "go1.22.5",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// The `kubelet` key of the `kubelet-config` ConfigMap, as `kubeadm init` 1.29 uploads it.
pub const KUBELET_CONFIG: &str = "apiVersion: kubelet.config.k8s.io/v1beta1
authentication:
  anonymous:
    enabled: false
  webhook:
    cacheTTL: 0s
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: Webhook
  webhook:
    cacheAuthorizedTTL: 0s
    cacheUnauthorizedTTL: 0s
cgroupDriver: systemd
clusterDNS:
- 10.96.0.10
clusterDomain: cluster.local
containerRuntimeEndpoint: \"\"
cpuManagerReconcilePeriod: 0s
evictionPressureTransitionPeriod: 0s
fileCheckFrequency: 0s
healthzBindAddress: 127.0.0.1
healthzPort: 10248
httpCheckFrequency: 0s
imageMaximumGCAge: 0s
imageMinimumGCAge: 0s
kind: KubeletConfiguration
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: \"0\"
  verbosity: 0
memorySwap: {}
nodeStatusReportFrequency: 0s
nodeStatusUpdateFrequency: 0s
resolvConf: /run/systemd/resolve/resolv.conf
rotateCertificates: true
runtimeRequestTimeout: 0s
shutdownGracePeriod: 0s
shutdownGracePeriodCriticalPods: 0s
staticPodPath: /etc/kubernetes/manifests
streamingConnectionIdleTimeout: 0s
syncFrequency: 0s
volumeStatsAggPeriod: 0s
";

/// The `ClusterConfiguration` key of the `kubeadm-config` ConfigMap.
pub fn kubeadm_cluster_configuration(v: KubeVersion, endpoint: &str) -> String {
    format!(
        "apiServer:
  extraArgs:
    authorization-mode: Node,RBAC
  timeoutForControlPlane: 4m0s
apiVersion: kubeadm.k8s.io/v1beta3
certificatesDir: /etc/kubernetes/pki
clusterName: kubernetes
controlPlaneEndpoint: {endpoint}
controllerManager: {{}}
dns: {{}}
etcd:
  local:
    dataDir: /var/lib/etcd
imageRepository: registry.k8s.io
kind: ClusterConfiguration
kubernetesVersion: {v}
networking:
  dnsDomain: cluster.local
  serviceSubnet: 10.96.0.0/12
scheduler: {{}}
"
    )
}

/// RFC 1123 subdomain, lowercase (Kubernetes object names such as Nodes).
pub fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_bodies() {
        // Byte for byte what kube-apiserver answers (field order, omitempty details).
        let r = not_found("nodes", "", "n1");
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"nodes \"n1\" not found","reason":"NotFound","details":{"name":"n1","kind":"nodes"},"code":404}"#
        );
        let r = status(503, "ServiceUnavailable", "x", None);
        assert!(!String::from_utf8(r.body).unwrap().contains("details"));
        let r = forbidden(
            "system:anonymous",
            "get",
            "configmaps",
            "",
            Some("kubelet-config"),
            Some("kube-system"),
        );
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v["message"],
            "configmaps \"kubelet-config\" is forbidden: User \"system:anonymous\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"kube-system\""
        );
        let r = invalid(
            "CertificateSigningRequest",
            "certificates.k8s.io",
            "x",
            "spec.request",
            "bad",
        );
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v["message"],
            "CertificateSigningRequest.certificates.k8s.io \"x\" is invalid: spec.request: bad"
        );
    }

    #[test]
    fn several_field_errors_and_their_reasons() {
        let r = invalid_fields(
            "Event",
            "",
            "e1",
            &[
                (
                    "involvedObject.namespace".into(),
                    "Invalid value: \"x\": does not match event.namespace".into(),
                ),
                ("reason".into(), "Required value".into()),
            ],
        );
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v["message"],
            "Event \"e1\" is invalid: [involvedObject.namespace: Invalid value: \"x\": does not match event.namespace, reason: Required value]"
        );
        assert_eq!(v["details"]["causes"][0]["reason"], "FieldValueInvalid");
        assert_eq!(v["details"]["causes"][1]["reason"], "FieldValueRequired");
        assert_eq!(
            String::from_utf8(
                admission_forbidden(
                    "nodes",
                    "",
                    "n2",
                    "node \"n1\" is not allowed to modify node \"n2\""
                )
                .body
            )
            .unwrap(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\"","reason":"Forbidden","details":{"name":"n2","kind":"nodes"},"code":403}"#
        );
    }

    #[test]
    fn dns_names() {
        assert!(is_dns_subdomain("node-1.example"));
        assert!(!is_dns_subdomain("Node"));
        assert!(!is_dns_subdomain("-a"));
        assert!(!is_dns_subdomain(""));
    }
}
