//! Preflight: everything that can be known before kubeadm runs, each check with a
//! verdict, a reason and a fix. Hard failures stop the join with the check's name;
//! waitable ones (containerd not up yet, API server not reachable yet) are waited for.

pub mod host;
pub mod kernel;
pub mod kubelet_unit;
pub mod leftovers;
pub mod network;
pub mod runtime;

use crate::config::Settings;
use crate::paths::Paths;
use std::fmt;

/// A check's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Fine.
    Pass(String),
    /// Not fatal, but worth knowing.
    Warn {
        /// What is off.
        reason: String,
        /// What to do.
        fix: String,
    },
    /// Blocks the join.
    Fail {
        /// What is wrong.
        reason: String,
        /// What to do.
        fix: String,
    },
    /// Not yet: may resolve itself (a service starting).
    Wait(String),
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Stable name (listed in `preflight.warn_only`).
    pub check: &'static str,
    /// The verdict.
    pub verdict: Verdict,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.verdict {
            Verdict::Pass(what) => write!(f, "[pass] {}: {what}", self.check),
            Verdict::Warn { reason, fix } => {
                write!(f, "[warn] {}: {reason} (fix: {fix})", self.check)
            }
            Verdict::Fail { reason, fix } => {
                write!(f, "[FAIL] {}: {reason} (fix: {fix})", self.check)
            }
            Verdict::Wait(why) => write!(f, "[wait] {}: {why}", self.check),
        }
    }
}

/// The host checks that need no waiting: memory, disk, swap, kernel.
pub fn static_checks(paths: &Paths, settings: &Settings) -> Vec<Finding> {
    let mut findings = vec![
        host::memory(paths, settings.preflight.min_memory_mib),
        host::disk(paths, settings.preflight.min_disk_free_mib),
        host::swap(paths),
    ];
    findings.extend(kernel::checks(paths));
    findings.push(leftovers::check(paths));
    downgrade(findings, &settings.preflight.warn_only)
}

/// `preflight.warn_only` turns named failures into warnings.
pub fn downgrade(findings: Vec<Finding>, warn_only: &[String]) -> Vec<Finding> {
    findings
        .into_iter()
        .map(|mut f| {
            if let Verdict::Fail { reason, fix } = &f.verdict
                && warn_only.iter().any(|w| w == f.check)
            {
                f.verdict = Verdict::Warn {
                    reason: format!("{reason} (downgraded by preflight.warn_only)"),
                    fix: fix.clone(),
                };
            }
            f
        })
        .collect()
}

/// The first hard failure, if any.
pub fn first_failure(findings: &[Finding]) -> Option<&Finding> {
    findings
        .iter()
        .find(|f| matches!(f.verdict, Verdict::Fail { .. }))
}
