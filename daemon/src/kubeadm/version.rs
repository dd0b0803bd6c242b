//! `kubeadm version -o short`: decides the JoinConfiguration API version.

use super::supervisor::{Limits, run};
use crate::failure::Failure;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// A kubeadm release, `v1.29.7`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeadmVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl KubeadmVersion {
    /// Parses `v1.29.7`, `1.29.7`, `v1.31.0-rc.1+abc`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let text = text.strip_prefix('v').unwrap_or(text);
        let core = text.split(['-', '+']).next()?;
        let mut parts = core.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            major,
            minor,
            patch,
        })
    }
}

impl fmt::Display for KubeadmVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Runs `kubeadm version -o short`.
pub async fn query_version(kubeadm: &Path) -> Result<KubeadmVersion, Failure> {
    let limits = Limits {
        deadline: Duration::from_secs(30),
        no_progress: Duration::from_secs(30),
    };
    let args = ["version".to_string(), "-o".to_string(), "short".to_string()];
    let finished = run(kubeadm, &args, limits, &[], false).await?;
    if finished.code != Some(0) {
        if finished.code == Some(127) || finished.code == Some(126) {
            return Err(Failure::KubeadmMissing {
                detail: format!(
                    "{} exited {}",
                    kubeadm.display(),
                    finished.code.unwrap_or(-1)
                ),
            });
        }
        return Err(Failure::KubeadmFailed {
            code: finished.code.unwrap_or(-1),
            detail: format!(
                "`kubeadm version -o short` failed: {}",
                finished.last_line()
            ),
        });
    }
    let text = finished
        .output
        .iter()
        .map(|l| l.text.as_str())
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    KubeadmVersion::parse(text).ok_or_else(|| Failure::KubeadmFailed {
        code: 0,
        detail: format!("`kubeadm version -o short` printed {text:?}, not a version like v1.29.7"),
    })
}

/// `kubelet --version` ("Kubernetes v1.29.7"): the kubelet's release, or why not.
pub async fn query_kubelet_version(kubelet: &Path) -> Result<KubeadmVersion, String> {
    let limits = Limits {
        deadline: Duration::from_secs(30),
        no_progress: Duration::from_secs(30),
    };
    let finished = run(kubelet, &["--version".to_string()], limits, &[], false)
        .await
        .map_err(|e| format!("cannot run {} --version: {e}", kubelet.display()))?;
    let line = finished
        .output
        .iter()
        .map(|l| l.text.trim())
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if finished.code != Some(0) {
        return Err(format!(
            "{} --version exited {}: {line}",
            kubelet.display(),
            finished.code.unwrap_or(-1)
        ));
    }
    line.split_whitespace()
        .find_map(KubeadmVersion::parse)
        .ok_or_else(|| format!("{} --version printed {line:?}", kubelet.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_strings() {
        assert_eq!(
            KubeadmVersion::parse("v1.29.7\n"),
            Some(KubeadmVersion {
                major: 1,
                minor: 29,
                patch: 7
            })
        );
        assert_eq!(KubeadmVersion::parse("1.20.2").unwrap().minor, 20);
        assert_eq!(KubeadmVersion::parse("v1.31.0-rc.1+abc").unwrap().minor, 31);
        for bad in [
            "",
            "v1",
            "v1.29",
            "kubeadm version: &version.Info{",
            "v1.29.x",
            "v1.2.3.4",
        ] {
            assert_eq!(KubeadmVersion::parse(bad), None, "{bad}");
        }
    }
}
