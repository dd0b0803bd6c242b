//! Files an earlier, failed join left behind. kubeadm's preflight refuses to run over
//! them (FileAvailable--...); the agent cleans them with `kubeadm reset -f` first.
//! Only called once the node is known not to be validly joined.

use super::{Finding, Verdict};
use crate::paths::Paths;
use std::path::PathBuf;

/// The leftover files present now.
pub fn present(paths: &Paths) -> Vec<PathBuf> {
    [
        paths.kubelet_conf(),
        paths.bootstrap_kubelet_conf(),
        paths.cluster_ca(),
    ]
    .into_iter()
    .filter(|p| p.exists())
    .collect()
}

/// Leftovers are a warning: the agent removes them before the join.
pub fn check(paths: &Paths) -> Finding {
    let found = present(paths);
    let verdict = if found.is_empty() {
        Verdict::Pass("no files from an earlier join".into())
    } else {
        Verdict::Warn {
            reason: format!(
                "files from an earlier join attempt: {}",
                found
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            fix: "none needed: the agent runs `kubeadm reset -f` before joining".into(),
        }
    };
    Finding {
        check: "leftovers",
        verdict,
    }
}
