//! The version-skew policy (kubernetes.io/releases/version-skew-policy) for a joining
//! node: the kubelet must never be newer than the API server and at most three minor
//! versions older (two before 1.28); kubeadm joins a control plane of its own minor
//! version or one older. Outside it, a join fails in ways that look like anything
//! else (a kubelet that cannot register, kubeadm refusing the cluster's configuration),
//! so the agent names it first: a failure with both versions and the rule, a warning at
//! the edge of what is allowed.

use crate::kubeadm::KubeadmVersion as Version;
use crate::preflight::{Finding, Verdict};

/// The check's name (for `preflight.warn_only`).
pub const CHECK: &str = "version-skew";

/// The kubelet binary whose version is judged (looked up in PATH, as kubeadm's drop-in
/// runs the packaged /usr/bin/kubelet).
const KUBELET_BINARY: &str = "kubelet";

/// `kubelet --version`, or why it is unknown.
pub async fn kubelet_version() -> Result<Version, String> {
    crate::kubeadm::query_kubelet_version(std::path::Path::new(KUBELET_BINARY)).await
}

/// The API server's version (asked with `client`) judged with the kubelet's and
/// kubeadm's; `Err` says why the API server's version is unknown.
pub async fn findings(
    client: &crate::apiserver::ApiClient,
    kubelet: &Result<Version, String>,
    kubeadm: Option<Version>,
) -> Result<Vec<Finding>, String> {
    let api = client
        .server_version()
        .await
        .map_err(|e| format!("cannot judge version skew: {e}"))?;
    let api = Version::parse(&api)
        .ok_or_else(|| format!("cannot judge version skew: the API server says it is {api:?}"))?;
    let mut findings = Vec::new();
    if let Err(why) = kubelet {
        findings.push(Finding {
            check: CHECK,
            verdict: Verdict::Warn {
                reason: format!("cannot tell the kubelet's version: {why}"),
                fix: "install the kubelet package matching the cluster's version".into(),
            },
        });
    }
    findings.extend(judge(api, kubelet.as_ref().ok().copied(), kubeadm));
    Ok(findings)
}

/// How many minor versions a kubelet may lag the API server.
fn kubelet_lag_allowed(api: Version) -> u32 {
    if api.minor >= 28 { 3 } else { 2 }
}

/// The kubelet's and kubeadm's versions judged against the API server's.
pub fn judge(api: Version, kubelet: Option<Version>, kubeadm: Option<Version>) -> Vec<Finding> {
    let mut findings = Vec::new();
    if let Some(kubelet) = kubelet {
        findings.push(Finding {
            check: CHECK,
            verdict: judge_kubelet(api, kubelet),
        });
    }
    if let Some(kubeadm) = kubeadm {
        findings.push(Finding {
            check: CHECK,
            verdict: judge_kubeadm(api, kubeadm),
        });
    }
    findings
}

fn judge_kubelet(api: Version, kubelet: Version) -> Verdict {
    let allowed = kubelet_lag_allowed(api);
    let rule = format!(
        "a kubelet must never be newer than kube-apiserver and at most {allowed} minor versions older"
    );
    let fix = format!(
        "install a kubelet of v{}.{} (the API server's minor version) or at most {allowed} minor versions older",
        api.major, api.minor
    );
    if kubelet.major != api.major || kubelet.minor > api.minor {
        return Verdict::Fail {
            reason: format!("kubelet {kubelet} is newer than the API server {api}: {rule}"),
            fix,
        };
    }
    let lag = api.minor - kubelet.minor;
    if lag > allowed {
        Verdict::Fail {
            reason: format!(
                "kubelet {kubelet} is {lag} minor versions older than the API server {api}: {rule}"
            ),
            fix,
        }
    } else if lag == allowed {
        Verdict::Warn {
            reason: format!(
                "kubelet {kubelet} is {lag} minor versions older than the API server {api}, the most the skew policy allows; the next control-plane upgrade leaves it unsupported"
            ),
            fix,
        }
    } else {
        Verdict::Pass(format!("kubelet {kubelet} with API server {api}"))
    }
}

fn judge_kubeadm(api: Version, kubeadm: Version) -> Verdict {
    let rule = "kubeadm joins a control plane of its own minor version or one older";
    let fix = format!(
        "install kubeadm v{}.{} (the control plane's minor version)",
        api.major, api.minor
    );
    if kubeadm.major != api.major || kubeadm.minor < api.minor {
        return Verdict::Fail {
            reason: format!("kubeadm {kubeadm} is older than the control plane {api}: {rule}"),
            fix,
        };
    }
    match kubeadm.minor - api.minor {
        0 => Verdict::Pass(format!("kubeadm {kubeadm} with control plane {api}")),
        1 => Verdict::Warn {
            reason: format!(
                "kubeadm {kubeadm} is one minor version newer than the control plane {api}, the most the skew policy allows"
            ),
            fix,
        },
        _ => Verdict::Fail {
            reason: format!(
                "kubeadm {kubeadm} is more than one minor version newer than the control plane {api}: {rule}"
            ),
            fix,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn verdicts(api: &str, kubelet: &str, kubeadm: &str) -> (String, String) {
        let f = judge(v(api), Some(v(kubelet)), Some(v(kubeadm)));
        let word = |f: &Finding| match f.verdict {
            Verdict::Pass(_) => "pass",
            Verdict::Warn { .. } => "warn",
            Verdict::Fail { .. } => "fail",
            Verdict::Wait(_) => "wait",
        };
        (word(&f[0]).into(), word(&f[1]).into())
    }

    #[test]
    fn the_skew_policy() {
        let s = |a, b| (String::from(a), String::from(b));
        assert_eq!(verdicts("v1.29.7", "v1.29.7", "v1.29.7"), s("pass", "pass"));
        assert_eq!(verdicts("v1.28.2", "v1.29.7", "v1.29.7"), s("fail", "warn"));
        assert_eq!(verdicts("v1.29.7", "v1.27.1", "v1.28.0"), s("pass", "fail"));
        assert_eq!(verdicts("v1.29.7", "v1.26.0", "v1.31.0"), s("warn", "fail"));
        assert_eq!(verdicts("v1.29.7", "v1.25.9", "v1.30.0"), s("fail", "warn"));
        // Before 1.28 a kubelet could lag two minor versions.
        assert_eq!(verdicts("v1.20.2", "v1.18.0", "v1.20.2"), s("warn", "pass"));
        assert_eq!(verdicts("v1.20.2", "v1.17.0", "v1.20.2"), s("fail", "pass"));
        assert_eq!(verdicts("v1.29.0", "v2.29.0", "v1.29.0"), s("fail", "pass"));
    }

    #[test]
    fn failures_name_both_versions_and_the_rule() {
        let f = judge(v("v1.28.2"), Some(v("v1.29.7")), None);
        let Verdict::Fail { reason, fix } = &f[0].verdict else {
            panic!("{f:?}")
        };
        assert!(
            reason.contains("v1.29.7")
                && reason.contains("v1.28.2")
                && reason.contains("never be newer"),
            "{reason}"
        );
        assert!(fix.contains("v1.28"), "{fix}");
    }
}
