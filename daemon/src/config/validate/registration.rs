//! The join settings real clusters need beyond the name: kubeadm's preflight errors to
//! ignore, node labels and taints, kubelet flags, patches and skipped phases. Each is
//! checked here as strictly as kubeadm and the kubelet will check it, so a mistake stops
//! the agent before it touches the node, naming the file and the key, instead of failing
//! the join later (a label the kubelet may not set on itself, say, makes it exit).

use super::super::ConfigError;
use super::super::fragments::{Merged, Sourced};
use super::super::settings::{Registration, Taint};
use crate::paths::Paths;
use std::collections::BTreeMap;

/// Labels a kubelet may set on its own Node although they are in the `kubernetes.io`
/// namespace (k8s.io/kubelet/pkg/apis/well_known_labels.go, `kubeletLabels`).
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];
/// Label namespaces (and their subdomains) a kubelet may set (`kubeletLabelNamespaces`).
const KUBELET_LABEL_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

/// kubelet flags the agent or kubeadm sets, and the setting to use instead.
const RESERVED_KUBELET_FLAGS: &[(&str, &str)] = &[
    (
        "kubeconfig",
        "kubeadm's drop-in sets it to /etc/kubernetes/kubelet.conf, the credentials the agent checks",
    ),
    (
        "bootstrap-kubeconfig",
        "kubeadm's drop-in sets it to /etc/kubernetes/bootstrap-kubelet.conf, which kubeadm writes for the TLS bootstrap",
    ),
    (
        "config",
        "kubeadm writes /var/lib/kubelet/config.yaml from the cluster's kubelet-config ConfigMap; change it with join.patches (target kubeletconfiguration)",
    ),
    (
        "cert-dir",
        "the agent checks the client certificate in /var/lib/kubelet/pki",
    ),
    (
        "container-runtime-endpoint",
        "kubeadm sets it from the CRI socket: set join.cri_socket",
    ),
    (
        "container-runtime",
        "kubeadm sets it for the CRI socket: set join.cri_socket",
    ),
    (
        "hostname-override",
        "kubeadm sets it from the node name: set join.node_name",
    ),
    (
        "node-labels",
        "set join.labels (the agent checks them against the kubelet's rules)",
    ),
    ("register-with-taints", "set join.taints"),
];

/// Phases of `kubeadm join` (and their sub-phases) as kubeadm names them.
const JOIN_PHASES: &[&str] = &[
    "preflight",
    "control-plane-prepare",
    "control-plane-prepare/download-certs",
    "control-plane-prepare/certs",
    "control-plane-prepare/kubeconfig",
    "control-plane-prepare/control-plane",
    "kubelet-start",
    "control-plane-join",
    "control-plane-join/etcd",
    "control-plane-join/update-status",
    "control-plane-join/mark-control-plane",
    "wait-control-plane",
];

/// Validates the registration settings under `[join]`.
pub fn registration(paths: &Paths, m: &Merged) -> Result<Registration, ConfigError> {
    Ok(Registration {
        ignore_preflight_errors: ignore_preflight_errors(&m.ignore_preflight_errors)?,
        labels: labels(&m.labels)?,
        taints: taints(&m.taints)?,
        kubelet_extra_args: kubelet_extra_args(&m.kubelet_extra_args)?,
        patches: patches(paths, &m.patches)?,
        skip_phases: skip_phases(&m.skip_phases)?,
    })
}

fn err(s: &Sourced<impl Sized>, key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::new(Some(&s.file), key, reason)
}

fn ignore_preflight_errors(
    field: &Option<Sourced<Vec<String>>>,
) -> Result<Vec<String>, ConfigError> {
    let Some(s) = field else {
        return Ok(Vec::new());
    };
    let key = "join.ignore_preflight_errors";
    for (i, name) in s.value.iter().enumerate() {
        let ok = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(err(
                s,
                &format!("{key}[{i}]"),
                format!(
                    "{name:?} is not a kubeadm preflight check name (as kubeadm prints them: \"FileExisting-crictl\", \"Swap\", \"Port-10250\"), nor \"all\""
                ),
            ));
        }
    }
    if s.value.len() > 1 && s.value.iter().any(|n| n.eq_ignore_ascii_case("all")) {
        return Err(err(
            s,
            key,
            "\"all\" ignores every check: list it alone (kubeadm refuses individual checks next to \"all\")",
        ));
    }
    Ok(s.value.clone())
}

/// A label key is a qualified name: an optional DNS subdomain prefix and `/`, then a
/// name of at most 63 characters (apimachinery's IsQualifiedName).
fn qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let dns = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !dns {
            return Err(format!(
                "{key:?}: the prefix {p:?} is not a DNS subdomain (lowercase letters, digits, '-', '.')"
            ));
        }
    }
    if name.is_empty() || name.len() > 63 || !name_chars(name) {
        return Err(format!(
            "{key:?}: the name part must be 1-63 characters, letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn name_chars(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter()
        .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// A label value: empty, or a name of at most 63 characters (IsValidLabelValue).
fn label_value(v: &str) -> Result<(), String> {
    if v.is_empty() || (v.len() <= 63 && name_chars(v)) {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not a label value: at most 63 characters, letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

/// Whether the kubelet may set `key` on its own Node: outside the kubernetes.io and
/// k8s.io namespaces anything goes; inside, only the allowed set and namespaces
/// (kubelet's --node-labels check and the NodeRestriction admission plugin).
fn kubelet_may_set(key: &str) -> bool {
    let Some((namespace, _)) = key.split_once('/') else {
        return true;
    };
    let in_kubernetes = ["kubernetes.io", "k8s.io"]
        .iter()
        .any(|d| namespace == *d || namespace.ends_with(&format!(".{d}")));
    !in_kubernetes
        || KUBELET_LABELS.contains(&key)
        || KUBELET_LABEL_NAMESPACES
            .iter()
            .any(|ns| namespace == *ns || namespace.ends_with(&format!(".{ns}")))
}

fn labels(
    field: &Option<Sourced<BTreeMap<String, String>>>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let Some(s) = field else {
        return Ok(BTreeMap::new());
    };
    for (k, v) in &s.value {
        let key = format!("join.labels.{k:?}");
        qualified_name(k).map_err(|reason| err(s, &key, reason))?;
        label_value(v).map_err(|reason| err(s, &key, reason))?;
        if !kubelet_may_set(k) {
            return Err(err(
                s,
                &key,
                format!(
                    "the kubelet may not set {k:?} on its own Node (NodeRestriction): labels in the kubernetes.io and k8s.io namespaces must be under {} or be one of {}; the kubelet would refuse to start. Set such labels (node-role.kubernetes.io/... among them) from a control plane with `kubectl label node`",
                    KUBELET_LABEL_NAMESPACES.join(" or "),
                    KUBELET_LABELS.join(", ")
                ),
            ));
        }
    }
    Ok(s.value.clone())
}

fn taints(field: &Option<Sourced<Vec<String>>>) -> Result<Option<Vec<Taint>>, ConfigError> {
    let Some(s) = field else {
        return Ok(None);
    };
    let mut taints: Vec<Taint> = Vec::new();
    for (i, text) in s.value.iter().enumerate() {
        let key = format!("join.taints[{i}]");
        let taint = parse_taint(text).map_err(|reason| err(s, &key, reason))?;
        if taints
            .iter()
            .any(|t| t.key == taint.key && t.effect == taint.effect)
        {
            return Err(err(
                s,
                &key,
                format!(
                    "a taint with key {:?} and effect {} is listed twice",
                    taint.key, taint.effect
                ),
            ));
        }
        taints.push(taint);
    }
    Ok(Some(taints))
}

/// `key[=value]:Effect`, as `kubectl taint` writes it.
fn parse_taint(text: &str) -> Result<Taint, String> {
    let (kv, effect) = text.rsplit_once(':').ok_or_else(|| {
        format!("{text:?} is not a taint: write it as \"key[=value]:Effect\", for example \"dedicated=gpu:NoSchedule\"")
    })?;
    if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
        return Err(format!(
            "{text:?}: the effect must be NoSchedule, PreferNoSchedule or NoExecute, not {effect:?}"
        ));
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (kv, None),
    };
    qualified_name(key)?;
    if let Some(v) = value {
        label_value(v)?;
    }
    Ok(Taint {
        key: key.to_string(),
        value: value.filter(|v| !v.is_empty()).map(str::to_string),
        effect: effect.to_string(),
    })
}

fn kubelet_extra_args(
    field: &Option<Sourced<BTreeMap<String, String>>>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let Some(s) = field else {
        return Ok(BTreeMap::new());
    };
    for (name, value) in &s.value {
        let key = format!("join.kubelet_extra_args.{name:?}");
        if let Some(bare) = name.strip_prefix("--") {
            return Err(err(
                s,
                &key,
                format!(
                    "write flag names without the leading dashes, as kubeadm's kubeletExtraArgs does: {bare:?}"
                ),
            ));
        }
        let ok = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(err(
                s,
                &key,
                format!(
                    "{name:?} is not a kubelet flag name (lowercase letters, digits and '-', like \"max-pods\")"
                ),
            ));
        }
        if let Some((_, why)) = RESERVED_KUBELET_FLAGS.iter().find(|(f, _)| f == name) {
            return Err(err(s, &key, format!("--{name} cannot be set here: {why}")));
        }
        if value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\'' || c == '\\')
        {
            return Err(err(
                s,
                &key,
                format!(
                    "{value:?}: kubeadm writes kubelet flags into kubeadm-flags.env, where spaces, quotes and backslashes split or end the value"
                ),
            ));
        }
    }
    Ok(s.value.clone())
}

fn patches(
    paths: &Paths,
    field: &Option<Sourced<std::path::PathBuf>>,
) -> Result<Option<std::path::PathBuf>, ConfigError> {
    let Some(s) = field else {
        return Ok(None);
    };
    let key = "join.patches";
    if !s.value.is_absolute() {
        return Err(err(
            s,
            key,
            format!("{:?} must be an absolute path", s.value),
        ));
    }
    if !paths.resolve(&s.value).is_dir() {
        return Err(err(
            s,
            key,
            format!(
                "{} is not a directory: kubeadm reads patch files (target[suffix][+patchtype].yaml/json, like kubeletconfiguration+strategic.yaml) from it",
                s.value.display()
            ),
        ));
    }
    Ok(Some(s.value.clone()))
}

fn skip_phases(field: &Option<Sourced<Vec<String>>>) -> Result<Vec<String>, ConfigError> {
    let Some(s) = field else {
        return Ok(Vec::new());
    };
    for (i, phase) in s.value.iter().enumerate() {
        let key = format!("join.skip_phases[{i}]");
        if !JOIN_PHASES.contains(&phase.as_str()) {
            return Err(err(
                s,
                &key,
                format!(
                    "{phase:?} is not a phase of kubeadm join; the phases are {}",
                    JOIN_PHASES.join(", ")
                ),
            ));
        }
        if phase == "kubelet-start" {
            return Err(err(
                s,
                &key,
                "kubelet-start cannot be skipped: it writes the kubelet's configuration, and the agent hands off to kubelet inside it",
            ));
        }
    }
    Ok(s.value.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelets_label_rules() {
        for ok in [
            "example.com/pool",
            "pool",
            "node.kubernetes.io/pool",
            "gpu.node.kubernetes.io/model",
            "kubelet.kubernetes.io/x",
            "topology.kubernetes.io/zone",
            "kubernetes.io/hostname",
            "k8s.example.com/x",
        ] {
            assert!(kubelet_may_set(ok), "{ok}");
        }
        for refused in [
            "node-role.kubernetes.io/worker",
            "node-restriction.kubernetes.io/trusted",
            "kubernetes.io/role",
            "example.k8s.io/x",
            "k8s.io/x",
            "topology.kubernetes.io/rack",
        ] {
            assert!(!kubelet_may_set(refused), "{refused}");
        }
    }

    #[test]
    fn taints_as_kubectl_writes_them() {
        let t = parse_taint("dedicated=gpu:NoSchedule").unwrap();
        assert_eq!(
            (t.key.as_str(), t.value.as_deref(), t.effect.as_str()),
            ("dedicated", Some("gpu"), "NoSchedule")
        );
        assert_eq!(t.to_string(), "dedicated=gpu:NoSchedule");
        let t = parse_taint("example.com/special:NoExecute").unwrap();
        assert_eq!(t.value, None);
        assert_eq!(t.to_string(), "example.com/special:NoExecute");
        for bad in [
            "dedicated",
            "dedicated=gpu:Never",
            ":NoSchedule",
            "a b:NoSchedule",
            "k=v w:NoExecute",
        ] {
            assert!(parse_taint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn qualified_names_and_values() {
        assert!(qualified_name("a").is_ok());
        assert!(qualified_name("example.com/a_b.c-d").is_ok());
        assert!(qualified_name(&"a".repeat(64)).is_err());
        assert!(qualified_name("Example.com/a").is_err());
        assert!(qualified_name("/a").is_err());
        assert!(qualified_name("a/").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("-a").is_err());
    }
}
