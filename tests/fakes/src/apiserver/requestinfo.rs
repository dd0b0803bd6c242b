//! What the authorizer sees of a request (apiserver's `RequestInfoFactory`), and the
//! 403 the API server writes when it says no (`responsewriters.Forbidden`): both are
//! needed to word a denial of an arbitrary request the way kube-apiserver does.

use super::objects::{Details, Reply, go_quote, status};

/// The authorizer attributes of one request (`request.RequestInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// Whether the path names an API resource (else a non-resource URL like /healthz).
    pub resource_request: bool,
    /// The URL path.
    pub path: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`; for non-resource URLs the lowercased method.
    pub verb: String,
    /// API group (`""` for the core group).
    pub api_group: String,
    /// Namespace, if namespaced.
    pub namespace: String,
    /// Resource, e.g. `configmaps`.
    pub resource: String,
    /// Subresource, e.g. `status`.
    pub subresource: String,
    /// Object name, if the path names one.
    pub name: String,
}

/// Parses a request as `RequestInfoFactory.NewRequestInfo` does (API prefixes `api`
/// and `apis`, the `watch` path verb, `namespaces/<ns>/...`, `?watch=`).
pub fn parse(method: &str, path: &str, query: Option<&str>) -> RequestInfo {
    let mut info = RequestInfo {
        path: path.to_owned(),
        verb: method.to_ascii_lowercase(),
        ..Default::default()
    };
    let trimmed = path.trim_matches('/');
    let mut parts: Vec<&str> = if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    };
    // /api/v1/x and /apis/g/v1/x are the shortest resource paths.
    if parts.len() < 3 || !matches!(parts[0], "api" | "apis") {
        return info;
    }
    let grouped = parts[0] == "apis";
    parts.remove(0);
    if grouped {
        if parts.len() < 3 {
            return info;
        }
        info.api_group = parts.remove(0).to_owned();
    }
    info.resource_request = true;
    parts.remove(0); // the version
    if matches!(parts.first(), Some(&("watch" | "proxy"))) {
        if parts.len() < 2 {
            return info;
        }
        info.verb = parts.remove(0).to_owned();
    } else {
        info.verb = match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        }
        .to_owned();
    }
    if parts.first() == Some(&"namespaces") {
        if parts.len() > 1 {
            info.namespace = parts[1].to_owned();
            // namespaces/<ns>/status and /finalize are the namespace's subresources.
            if parts.len() > 2 && !matches!(parts[2], "status" | "finalize") {
                parts.drain(..2);
            }
        }
    } else {
        info.namespace.clear();
    }
    if let Some(r) = parts.first() {
        info.resource = (*r).to_owned();
    }
    if let Some(n) = parts.get(1) {
        info.name = (*n).to_owned();
    }
    // proxy/<resource>/<name>/<rest> has no subresource.
    if let Some(s) = parts.get(2).filter(|_| info.verb != "proxy") {
        info.subresource = (*s).to_owned();
    }
    if info.name.is_empty() && info.verb == "get" {
        info.verb = if query_flag(query, "watch") {
            "watch"
        } else {
            "list"
        }
        .to_owned();
    }
    if info.name.is_empty() && info.verb == "delete" {
        info.verb = "deletecollection".to_owned();
    }
    info
}

/// `?watch=true` / `?watch=1`, as ListOptions decodes the boolean.
fn query_flag(query: Option<&str>, key: &str) -> bool {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .any(|(k, v)| k == key && matches!(v, "true" | "1" | "True" | "TRUE" | "t" | "T"))
}

/// `forbiddenMessage`: the authorizer's half of the message.
pub fn forbidden_message(user: &str, info: &RequestInfo) -> String {
    let user = go_quote(user);
    if !info.resource_request {
        return format!(
            "User {user} cannot {} path {}",
            info.verb,
            go_quote(&info.path)
        );
    }
    let mut resource = info.resource.clone();
    if !info.subresource.is_empty() {
        resource = format!("{resource}/{}", info.subresource);
    }
    let (resource, group) = (go_quote(&resource), go_quote(&info.api_group));
    if !info.namespace.is_empty() {
        return format!(
            "User {user} cannot {} resource {resource} in API group {group} in the namespace {}",
            info.verb,
            go_quote(&info.namespace)
        );
    }
    format!(
        "User {user} cannot {} resource {resource} in API group {group} at the cluster scope",
        info.verb
    )
}

/// `responsewriters.Forbidden` with an empty reason (an RBAC denial with no rule
/// errors), wrapped by `apierrors.NewForbidden`.
pub fn forbidden(user: &str, info: &RequestInfo) -> Reply {
    // "Avoid emitting errors that look like valid HTML."
    let msg = forbidden_message(user, info)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let qualified = match (info.resource.as_str(), info.api_group.as_str()) {
        ("", "") => String::new(),
        (r, "") => r.to_owned(),
        (r, g) => format!("{r}.{g}"),
    };
    let message = if qualified.is_empty() {
        format!("forbidden: {msg}")
    } else if info.name.is_empty() {
        format!("{qualified} is forbidden: {msg}")
    } else {
        format!("{qualified} {} is forbidden: {msg}", go_quote(&info.name))
    };
    status(
        403,
        "Forbidden",
        &message,
        Some(Details::of(&info.resource, &info.api_group, &info.name)),
    )
}

/// The non-resource URLs `system:public-info-viewer` lets everyone (anonymous
/// included) `get`: what a cluster without some other RoleBinding still serves.
pub fn public_info(info: &RequestInfo) -> bool {
    !info.resource_request
        && info.verb == "get"
        && matches!(
            info.path.as_str(),
            "/livez" | "/readyz" | "/healthz" | "/version" | "/version/"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(r: &Reply) -> String {
        String::from_utf8(r.body.clone()).unwrap()
    }

    #[test]
    fn parses_like_request_info_factory() {
        let i = parse(
            "GET",
            "/api/v1/namespaces/kube-public/configmaps/cluster-info",
            None,
        );
        assert!(i.resource_request);
        assert_eq!(
            (
                i.verb.as_str(),
                i.namespace.as_str(),
                i.resource.as_str(),
                i.name.as_str()
            ),
            ("get", "kube-public", "configmaps", "cluster-info")
        );
        let i = parse("GET", "/api/v1/nodes", None);
        assert_eq!((i.verb.as_str(), i.name.as_str()), ("list", ""));
        let i = parse("GET", "/api/v1/nodes", Some("watch=true&rv=1"));
        assert_eq!(i.verb, "watch");
        let i = parse("PUT", "/api/v1/nodes/n1/status", None);
        assert_eq!(
            (i.verb.as_str(), i.resource.as_str(), i.subresource.as_str()),
            ("update", "nodes", "status")
        );
        let i = parse(
            "POST",
            "/apis/certificates.k8s.io/v1/certificatesigningrequests",
            None,
        );
        assert_eq!(
            (i.verb.as_str(), i.api_group.as_str()),
            ("create", "certificates.k8s.io")
        );
        let i = parse("DELETE", "/api/v1/namespaces/kube-system/pods", None);
        assert_eq!(i.verb, "deletecollection");
        let i = parse("GET", "/api/v1/namespaces/kube-system", None);
        assert_eq!(
            (i.resource.as_str(), i.name.as_str(), i.namespace.as_str()),
            ("namespaces", "kube-system", "kube-system")
        );
        let i = parse("GET", "/api/v1/watch/nodes", None);
        assert_eq!((i.verb.as_str(), i.resource.as_str()), ("watch", "nodes"));
        for p in [
            "/readyz",
            "/api",
            "/api/v1",
            "/apis/certificates.k8s.io/v1",
            "/",
        ] {
            let i = parse("GET", p, None);
            assert!(!i.resource_request, "{p}");
            assert_eq!(i.verb, "get");
        }
    }

    #[test]
    fn forbidden_bodies_are_upstreams_bytes() {
        let anon = "system:anonymous";
        let r = forbidden(
            anon,
            &parse(
                "GET",
                "/api/v1/namespaces/kube-public/configmaps/cluster-info",
                None,
            ),
        );
        assert_eq!(r.status, 403);
        assert_eq!(
            body(&r),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"configmaps \"cluster-info\" is forbidden: User \"system:anonymous\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"kube-public\"","reason":"Forbidden","details":{"name":"cluster-info","kind":"configmaps"},"code":403}"#
        );
        let r = forbidden(anon, &parse("GET", "/readyz", None));
        assert_eq!(
            body(&r),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"forbidden: User \"system:anonymous\" cannot get path \"/readyz\"","reason":"Forbidden","details":{},"code":403}"#
        );
        let r = forbidden(
            "system:bootstrap:abcdef",
            &parse(
                "POST",
                "/apis/certificates.k8s.io/v1/certificatesigningrequests",
                None,
            ),
        );
        assert_eq!(
            body(&r),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"certificatesigningrequests.certificates.k8s.io is forbidden: User \"system:bootstrap:abcdef\" cannot create resource \"certificatesigningrequests\" in API group \"certificates.k8s.io\" at the cluster scope","reason":"Forbidden","details":{"group":"certificates.k8s.io","kind":"certificatesigningrequests"},"code":403}"#
        );
        // Subresources: the message names nodes/status, the qualified resource nodes.
        let r = forbidden("u", &parse("PATCH", "/api/v1/nodes/n1/status", None));
        assert!(body(&r).contains(r#""message":"nodes \"n1\" is forbidden: User \"u\" cannot patch resource \"nodes/status\" in API group \"\" at the cluster scope""#));
        // The sanitizer escapes what could pass for HTML.
        let r = forbidden(anon, &parse("GET", "/<b>", None));
        assert!(body(&r).contains(r#"cannot get path \"/&lt;b&gt;\""#));
    }

    #[test]
    fn public_info_viewer_urls() {
        assert!(public_info(&parse("GET", "/healthz", None)));
        assert!(public_info(&parse("GET", "/version/", None)));
        assert!(!public_info(&parse("GET", "/healthz/etcd", None)));
        assert!(!public_info(&parse("HEAD", "/healthz", None)));
        assert!(!public_info(&parse(
            "GET",
            "/api/v1/namespaces/kube-public/configmaps/cluster-info",
            None
        )));
    }
}
