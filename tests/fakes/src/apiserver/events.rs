//! core/v1 Events: what a node posts about itself (the kubelet's Events, and the agent's
//! join record) and what `kubectl get events --field-selector ...` reads back.
//!
//! Who may do what follows a kubeadm cluster's RBAC: the `system:node` ClusterRole grants
//! nodes `create`, `update` and `patch` on events (in any namespace; neither the Node
//! authorizer nor NodeRestriction narrows events), not `get` or `list`; admins may do
//! everything; bootstrap tokens and anonymous users nothing. Validation is
//! `legacyValidateEvent` (pkg/apis/core/validation/events.go), which is all a core/v1
//! create gets, then the generic ObjectMeta checks of the registry.

use serde_json::{Value, json};

use super::objects::{self, Reply, bad_request, forbidden, invalid_fields};
use super::routes::{Call, body_json, internal};

/// `ReportingInstanceLengthLimit`, `ActionLengthLimit`, `ReasonLengthLimit`.
const FIELD_LIMIT: usize = 128;
/// `NoteLengthLimit`: the message.
const NOTE_LIMIT: usize = 1024;

/// The field selectors the API server accepts on Events
/// (`AddFieldLabelConversionsForEvent`, pkg/apis/core/v1/conversion.go).
pub const SELECTABLE: [&str; 13] = [
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
    "metadata.namespace",
    "metadata.name",
];

fn may_create(c: &Call<'_>) -> bool {
    c.user.is_admin() || c.user.node_name().is_some()
}

fn text<'v>(v: &'v Value, path: &[&str]) -> &'v str {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_str()
        .unwrap_or_default()
}

fn set(v: &Value, key: &str) -> bool {
    !matches!(v.get(key), None | Some(Value::Null)) && v[key].as_str().is_none_or(|s| !s.is_empty())
}

/// `POST /api/v1/namespaces/<ns>/events`.
pub fn create(c: &Call<'_>, ns: &str) -> Reply {
    if !may_create(c) {
        return forbidden(&c.user.name, "create", "events", "", None, Some(ns));
    }
    let body = match body_json(c) {
        Ok(b) if b.is_object() => b,
        Ok(_) => {
            return bad_request(
                "the body of the request was in an unknown format: expected a JSON object",
            );
        }
        Err(r) => return r,
    };
    let meta = &body["metadata"];
    let body_ns = text(meta, &["namespace"]);
    if !body_ns.is_empty() && body_ns != ns {
        return bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        );
    }
    let name = match (text(meta, &["name"]), text(meta, &["generateName"])) {
        (n, _) if !n.is_empty() => n.to_owned(),
        (_, g) if !g.is_empty() => format!("{g}{}", random_suffix()),
        _ => String::new(),
    };
    let errs = validate(&body, ns, &name);
    if !errs.is_empty() {
        return invalid_fields("Event", "", &name, &errs);
    }
    let Ok(mut store) = c.state.store.lock() else {
        return internal(anyhow::anyhow!("store lock poisoned"));
    };
    let mut event = body.clone();
    event["kind"] = json!("Event");
    event["apiVersion"] = json!("v1");
    match store.create_event(ns, &name, event, c.now) {
        Ok(Some(v)) => Reply::json(201, &v),
        Ok(None) => objects::already_exists("events", "", &name),
        Err(e) => internal(e),
    }
}

/// `legacyValidateEvent`, then the registry's ObjectMeta checks (name required, a path
/// segment), in that order, as `(field, message)`.
pub fn validate(e: &Value, ns: &str, name: &str) -> Vec<(String, String)> {
    let mut errs: Vec<(String, String)> = Vec::new();
    let mut err = |f: &str, m: String| errs.push((f.to_owned(), m));
    let q = objects::go_quote;
    let involved_ns = text(e, &["involvedObject", "namespace"]);
    if !set(e, "eventTime") {
        if involved_ns.is_empty() {
            if !ns.is_empty() && ns != "default" {
                err(
                    "involvedObject.namespace",
                    format!("Invalid value: {}: does not match event.namespace", q("")),
                );
            }
        } else if involved_ns != ns {
            err(
                "involvedObject.namespace",
                format!(
                    "Invalid value: {}: does not match event.namespace",
                    q(involved_ns)
                ),
            );
        }
    } else {
        if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
            err(
                "involvedObject.namespace",
                format!(
                    "Invalid value: {}: does not match event.namespace",
                    q(involved_ns)
                ),
            );
        }
        for (field, key, required) in [
            ("reportingController", "reportingComponent", true),
            ("reportingInstance", "reportingInstance", true),
            ("action", "action", true),
            ("reason", "reason", true),
        ] {
            let v = text(e, &[key]);
            if required && v.is_empty() {
                err(field, "Required value".into());
            }
            if v.chars().count() > FIELD_LIMIT && field != "reportingController" {
                err(
                    field,
                    format!("Invalid value: \"\": can have at most {FIELD_LIMIT} characters"),
                );
            }
        }
        if text(e, &["message"]).chars().count() > NOTE_LIMIT {
            err(
                "message",
                format!("Invalid value: \"\": can have at most {NOTE_LIMIT} characters"),
            );
        }
    }
    if !objects::is_dns_subdomain(ns) {
        err(
            "namespace",
            format!(
                "Invalid value: {}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                q(ns)
            ),
        );
    }
    if errs.is_empty() {
        if name.is_empty() {
            errs.push((
                "metadata.name".into(),
                "Required value: name or generateName is required".into(),
            ));
        } else if name == "." || name == ".." {
            errs.push((
                "metadata.name".into(),
                format!("Invalid value: {}: may not be '{name}'", q(name)),
            ));
        } else if let Some(c) = ["/", "%"].iter().find(|c| name.contains(**c)) {
            errs.push((
                "metadata.name".into(),
                format!("Invalid value: {}: may not contain '{c}'", q(name)),
            ));
        }
    }
    errs
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

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// The field.
    pub field: String,
    /// `=`/`==` (true) or `!=` (false).
    pub equals: bool,
    /// The value.
    pub value: String,
}

/// Parses `fieldSelector` as `fields.ParseSelector` does (terms joined by `,`, each
/// `field=value`, `field==value` or `field!=value`; `\` escapes `,`, `=`, `!` and
/// itself), then checks each field against the Event's selectable fields.
pub fn parse_selector(selector: &str) -> Result<Vec<Term>, String> {
    let mut terms = Vec::new();
    for raw in split_unescaped(selector) {
        if raw.is_empty() {
            continue;
        }
        let (field, equals, value) = if let Some(i) = find_unescaped(&raw, "!=") {
            (&raw[..i], false, &raw[i + 2..])
        } else if let Some(i) = find_unescaped(&raw, "==") {
            (&raw[..i], true, &raw[i + 2..])
        } else if let Some(i) = find_unescaped(&raw, "=") {
            (&raw[..i], true, &raw[i + 1..])
        } else {
            return Err(format!(
                "invalid selector: '{selector}'; can't understand '{raw}'"
            ));
        };
        terms.push(Term {
            field: field.to_owned(),
            equals,
            value: unescape(value),
        });
    }
    for t in &terms {
        if !SELECTABLE.contains(&t.field.as_str()) {
            return Err(format!("field label not supported: {}", t.field));
        }
    }
    Ok(terms)
}

fn split_unescaped(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut escaped = false;
    for ch in s.chars() {
        match ch {
            _ if escaped => {
                out.last_mut().expect("one part").extend(['\\', ch]);
                escaped = false;
            }
            '\\' => escaped = true,
            ',' => out.push(String::new()),
            _ => out.last_mut().expect("one part").push(ch),
        }
    }
    out
}

fn find_unescaped(s: &str, op: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    (0..s.len()).find(|&i| s[i..].starts_with(op) && (i == 0 || bytes[i - 1] != b'\\'))
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for ch in s.chars() {
        if ch == '\\' && !escaped {
            escaped = true;
            continue;
        }
        out.push(ch);
        escaped = false;
    }
    out
}

/// An Event's value for a selectable field (`ToSelectableFields`, pkg/registry/core/event):
/// `source` is the source component, or the reporting controller when there is none.
pub fn field_value<'v>(e: &'v Value, field: &str) -> &'v str {
    match field {
        "metadata.name" => text(e, &["metadata", "name"]),
        "metadata.namespace" => text(e, &["metadata", "namespace"]),
        "source" => match text(e, &["source", "component"]) {
            "" => text(e, &["reportingComponent"]),
            s => s,
        },
        f => match f.strip_prefix("involvedObject.") {
            Some(k) => text(e, &["involvedObject", k]),
            None => text(e, &[f]),
        },
    }
}

/// `GET /api/v1/namespaces/<ns>/events` and `GET /api/v1/events` (admins only), with
/// `fieldSelector` honoured.
pub fn list(c: &Call<'_>, ns: Option<&str>) -> Reply {
    if !c.user.is_admin() {
        return forbidden(&c.user.name, "list", "events", "", None, ns);
    }
    let selector = query_param(c.query.unwrap_or_default(), "fieldSelector").unwrap_or_default();
    let terms = match parse_selector(&selector) {
        Ok(t) => t,
        Err(e) => return bad_request(&e),
    };
    let items: Vec<Value> = c
        .state
        .store
        .lock()
        .map(|s| s.event_list(ns))
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            terms
                .iter()
                .all(|t| (field_value(e, &t.field) == t.value) == t.equals)
        })
        .map(|mut e| {
            // Items of a typed list carry no kind or apiVersion.
            if let Some(o) = e.as_object_mut() {
                o.remove("kind");
                o.remove("apiVersion");
            }
            e
        })
        .collect();
    Reply::json(
        200,
        &json!({"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": items}),
    )
}

/// The first value of `key` in a query string, percent-decoded (`+` is a space).
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 2;
            }
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_like_fields_parse_selector() {
        let t = parse_selector("involvedObject.kind=Node,involvedObject.name==n1,type!=Normal")
            .unwrap();
        assert_eq!(t.len(), 3);
        assert!(t[0].equals && t[1].equals && !t[2].equals);
        assert_eq!(t[1].value, "n1");
        assert_eq!(
            parse_selector("spec.nodeName=x").unwrap_err(),
            "field label not supported: spec.nodeName"
        );
        assert_eq!(
            parse_selector("reason").unwrap_err(),
            "invalid selector: 'reason'; can't understand 'reason'"
        );
        assert!(parse_selector("").unwrap().is_empty());
        assert_eq!(parse_selector(r"reason=a\,b").unwrap()[0].value, "a,b");
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let q = "limit=5&fieldSelector=involvedObject.kind%3DNode%2CinvolvedObject.name%3Dn1";
        assert_eq!(
            query_param(q, "fieldSelector").unwrap(),
            "involvedObject.kind=Node,involvedObject.name=n1"
        );
        assert_eq!(query_param("a=b+c%2", "a").unwrap(), "b c%2");
        assert_eq!(query_param("a=b", "x"), None);
    }

    #[test]
    fn legacy_validation_as_upstream() {
        let node_event =
            json!({"involvedObject": {"kind": "Node", "name": "n1"}, "reason": "Joined"});
        assert!(validate(&node_event, "default", "n1.a").is_empty());
        let errs = validate(&node_event, "kube-system", "n1.a");
        assert_eq!(
            errs,
            [(
                "involvedObject.namespace".to_owned(),
                "Invalid value: \"\": does not match event.namespace".to_owned()
            )]
        );
        let pod_event = json!({"involvedObject": {"kind": "Pod", "namespace": "x"}});
        assert_eq!(validate(&pod_event, "default", "p").len(), 1);
        assert!(validate(&pod_event, "x", "p").is_empty());
        // A "new" Event (eventTime set) needs the reporting fields.
        let new = json!({"eventTime": "2026-01-01T00:00:00.000000Z"});
        let fields: Vec<String> = validate(&new, "default", "e")
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            [
                "reportingController",
                "reportingInstance",
                "action",
                "reason"
            ]
        );
        assert_eq!(
            validate(&node_event, "default", ""),
            [(
                "metadata.name".to_owned(),
                "Required value: name or generateName is required".to_owned()
            )]
        );
        assert_eq!(
            validate(&node_event, "default", "a/b")[0].0,
            "metadata.name"
        );
    }

    #[test]
    fn source_falls_back_to_the_reporting_component() {
        let e = json!({"reportingComponent": "kube-join-agent", "source": {}});
        assert_eq!(field_value(&e, "source"), "kube-join-agent");
        let e = json!({"source": {"component": "kubelet"}, "involvedObject": {"uid": "u"}});
        assert_eq!(field_value(&e, "source"), "kubelet");
        assert_eq!(field_value(&e, "involvedObject.uid"), "u");
    }
}
