//! `/etc/fake-k8s/kubeadm.env`: the fake's knobs, `KEY=VALUE` lines (a missing file
//! means defaults). Unknown keys are errors: a typo must not silently test nothing.

use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::fsroot::Root;
use crate::kubeversion::KubeVersion;

/// Node path of the knob file.
pub const KNOB_FILE: &str = "/etc/fake-k8s/kubeadm.env";
/// Node path of the failure counter behind FAIL_TIMES.
pub const FAILURE_COUNTER: &str = "/var/lib/fake-k8s/kubeadm-failures";
/// Node path of the invocation log.
pub const INVOCATION_LOG: &str = "/var/lib/fake-k8s/kubeadm-invocations.log";
/// Node path of the event log (events.rs).
pub const EVENT_LOG: &str = "/var/lib/fake-k8s/kubeadm-events.log";

/// Where `HANG_AFTER` freezes the join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangPoint {
    /// After the preflight checks pass, before discovery.
    Discovery,
    /// In kubelet-start, after bootstrap-kubelet.conf is written and the first
    /// `[kubelet-start]` line is printed.
    KubeletStart,
}

/// The knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct Knobs {
    /// The version kubeadm claims (and whose behaviour it imitates).
    pub version: KubeVersion,
    /// Multiplies every wait (discovery, kubelet health, TLS bootstrap, API calls).
    pub timeout_scale: f64,
    /// Freeze point, if any.
    pub hang_after: Option<HangPoint>,
    /// Fail this many joins first.
    pub fail_times: u32,
    /// What `kubeadm version` prints, when it differs from the behaviour (a wrapper
    /// or a mislabelled build): makes the agent pick a config API this kubeadm rejects.
    pub reported_version: Option<KubeVersion>,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            version: KubeVersion {
                major: 1,
                minor: 29,
                patch: 7,
            },
            timeout_scale: 1.0,
            hang_after: None,
            fail_times: 0,
            reported_version: None,
        }
    }
}

impl Knobs {
    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Self> {
        let mut k = Knobs::default();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((key, value)) = line.split_once('=') else {
                bail!("line {}: expected KEY=VALUE, got {raw:?}", n + 1);
            };
            let value = unquote(value.trim());
            let ctx = || format!("line {}: {}", n + 1, key.trim());
            match key.trim() {
                "VERSION" => k.version = KubeVersion::parse(value).with_context(ctx)?,
                "TIMEOUT_SCALE" => {
                    let s: f64 = value.parse().with_context(ctx)?;
                    if !(s.is_finite() && s > 0.0) {
                        bail!("line {}: TIMEOUT_SCALE must be a positive number", n + 1);
                    }
                    k.timeout_scale = s;
                }
                "HANG_AFTER" => {
                    k.hang_after = match value {
                        "" => None,
                        "discovery" => Some(HangPoint::Discovery),
                        "kubelet-start" => Some(HangPoint::KubeletStart),
                        other => bail!(
                            "line {}: HANG_AFTER must be \"discovery\" or \"kubelet-start\", not {other:?}",
                            n + 1
                        ),
                    }
                }
                "FAIL_TIMES" => k.fail_times = value.parse().with_context(ctx)?,
                "REPORTED_VERSION" => {
                    k.reported_version = Some(KubeVersion::parse(value).with_context(ctx)?)
                }
                other => bail!("line {}: unknown knob {other:?}", n + 1),
            }
        }
        Ok(k)
    }

    /// Reads the knob file through `root`.
    pub fn load(root: &Root) -> Result<Self> {
        match std::fs::read_to_string(root.path(KNOB_FILE)) {
            Ok(text) => Self::parse(&text).with_context(|| KNOB_FILE.to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {KNOB_FILE}")),
        }
    }

    /// Scales one of kubeadm's waits.
    pub fn scale(&self, d: Duration) -> Duration {
        d.mul_f64(self.timeout_scale)
    }
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

/// FAIL_TIMES: returns `Some((n, total))` when this join must fail as the n-th injected
/// failure, after counting it in the counter file.
pub fn take_injected_failure(root: &Root, knobs: &Knobs) -> Result<Option<(u32, u32)>> {
    if knobs.fail_times == 0 {
        return Ok(None);
    }
    let path = root.path(FAILURE_COUNTER);
    let done: u32 = match std::fs::read_to_string(&path) {
        Ok(s) => s
            .trim()
            .parse()
            .with_context(|| format!("{FAILURE_COUNTER} does not hold a number"))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("reading {FAILURE_COUNTER}")),
    };
    if done >= knobs.fail_times {
        return Ok(None);
    }
    crate::fsroot::write_atomic(&path, format!("{}\n", done + 1).as_bytes(), 0o644)?;
    Ok(Some((done + 1, knobs.fail_times)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_version_differs_from_behaviour() {
        let k = Knobs::parse("REPORTED_VERSION=v1.21.0\n").unwrap();
        assert_eq!(k.reported_version.map(|v| v.minor), Some(21));
        assert_eq!(k.version.minor, 29);
    }

    #[test]
    fn parses_knobs() {
        let k = Knobs::parse(
            "# comment\nVERSION=v1.31.2\nexport TIMEOUT_SCALE=\"0.05\"\nHANG_AFTER=kubelet-start\nFAIL_TIMES=2\n",
        )
        .unwrap();
        assert_eq!(k.version.minor, 31);
        assert_eq!(k.timeout_scale, 0.05);
        assert_eq!(k.hang_after, Some(HangPoint::KubeletStart));
        assert_eq!(k.fail_times, 2);
        assert_eq!(k.scale(Duration::from_secs(100)), Duration::from_secs(5));
        assert_eq!(Knobs::parse("").unwrap(), Knobs::default());
    }

    #[test]
    fn rejects_bad_knobs() {
        for bad in [
            "NOPE=1",
            "VERSION=1.29",
            "TIMEOUT_SCALE=0",
            "TIMEOUT_SCALE=x",
            "HANG_AFTER=never",
            "FAIL_TIMES=-1",
            "garbage",
        ] {
            assert!(Knobs::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fail_times_counts_in_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::at(dir.path());
        let k = Knobs {
            fail_times: 2,
            ..Knobs::default()
        };
        assert_eq!(take_injected_failure(&root, &k).unwrap(), Some((1, 2)));
        assert_eq!(take_injected_failure(&root, &k).unwrap(), Some((2, 2)));
        assert_eq!(take_injected_failure(&root, &k).unwrap(), None);
    }
}
