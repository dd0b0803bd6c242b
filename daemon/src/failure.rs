//! Failure classes: what went wrong, what the agent does about it, and what the
//! operator reads. Each class has a stable label (`FAILURE=` in the journal, the
//! state file's `failure`), a policy, and a message that names the cause and the fix.

use std::time::Duration;

/// What the agent does after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Clean up what the attempt left (kubeadm reset) if `cleanup`, back off, retry.
    Retry {
        /// Whether the failed attempt may have left files that break the next one.
        cleanup: bool,
    },
    /// No retry can succeed without the operator: stop with the diagnosis.
    Stop,
    /// Only a new bootstrap token helps: keep kubelet gated and wait for the
    /// configuration to change (a new token file, a new fragment, or SIGHUP).
    WaitForNewToken,
}

/// One failed join attempt, classified.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    /// kubeadm is not installed or not executable.
    #[error(
        "kubeadm not found ({detail}): install the kubeadm package matching the cluster's version, or set [kubeadm] path"
    )]
    KubeadmMissing {
        /// What was tried.
        detail: String,
    },
    /// kubeadm exited 3: the generated configuration or flags were rejected.
    #[error(
        "kubeadm rejected the join configuration (exit 3): {detail}; this kubeadm may not accept the configuration API the agent chose from `kubeadm version`"
    )]
    KubeadmConfigRejected {
        /// kubeadm's message.
        detail: String,
    },
    /// A configured setting this node's kubeadm cannot take.
    #[error("{detail}; remove the setting or install a newer kubeadm")]
    SettingUnsupported {
        /// Which setting, and which kubeadm.
        detail: String,
    },
    /// kubeadm's preflight checks failed (exit 1 from a whole join: the phase runner
    /// hides the preflight exit code 2; exit 2 from `kubeadm join phase preflight`).
    #[error("kubeadm preflight failed (exit {code}): {}{}", checks.join(", "), if *leftovers { "; these are leftovers of an earlier attempt and are cleaned up with `kubeadm reset -f` before the next one" } else { "; fix these on the node (see the kubeadm lines above)" })]
    KubeadmPreflight {
        /// kubeadm's exit code.
        code: i32,
        /// The failed checks, e.g. `FileAvailable--etc-kubernetes-pki-ca.crt`.
        checks: Vec<String>,
        /// All failures are files a failed join leaves behind.
        leftovers: bool,
    },
    /// The agent's own preflight found a hard problem.
    #[error("preflight check {check} failed: {reason}; fix: {fix}")]
    HostNotReady {
        /// The check's name.
        check: String,
        /// What is wrong.
        reason: String,
        /// What to do.
        fix: String,
    },
    /// The bootstrap token is unknown to the cluster or expired.
    #[error(
        "bootstrap token id \"{token_id}\" is invalid for this cluster or it has expired; create one with `kubeadm token create` on a control plane and write it to {source_name}"
    )]
    TokenInvalid {
        /// The token id.
        token_id: String,
        /// Where the token comes from.
        source_name: String,
    },
    /// The CA pin does not match: a misconfiguration, or an attack.
    #[error("{detail}")]
    CaPinMismatch {
        /// Both hashes.
        detail: String,
    },
    /// cluster-info was malformed or its signature did not verify.
    #[error("{detail}")]
    ClusterInfoInvalid {
        /// What was wrong.
        detail: String,
    },
    /// The API server did not answer in time.
    #[error(
        "API server unreachable: {detail}; check the address, the network path to port {port}, and that the control plane is up"
    )]
    ApiServerUnreachable {
        /// What happened.
        detail: String,
        /// The port, for the fix.
        port: u16,
    },
    /// containerd did not come up or report RuntimeReady in time.
    #[error("container runtime not ready{}: {detail}; check `systemctl status containerd` and `journalctl -u containerd`", waited_for(*waited))]
    ContainerdNotReady {
        /// The last answer.
        detail: String,
        /// How long the agent waited (zero: found down without a wait, by kubeadm).
        waited: Duration,
    },
    /// A Node with this name exists and is Ready.
    #[error(
        "a Node named \"{node}\" already exists in the cluster and is Ready; if this machine was reset, its old Node turns NotReady about 40 s after the old kubelet stopped and the agent retries then; if another live machine uses this name, change [join] node_name"
    )]
    NodeNameConflict {
        /// The name.
        node: String,
    },
    /// A Node with this name stayed Ready for longer than a reset machine's would.
    #[error("a Node named \"{node}\" has been Ready for the {} the agent waited (join.node_conflict_wait): a live machine holds this name; give this node another name (join.node_name) or retire the other machine, then restart kube-join-agent", humantime::format_duration(*waited))]
    NodeNameTaken {
        /// The name.
        node: String,
        /// How long the agent waited for it to turn NotReady.
        waited: Duration,
    },
    /// The kubelet did not complete TLS bootstrap in time.
    #[error("kubelet TLS bootstrap did not finish: {detail}")]
    TlsBootstrapStuck {
        /// What was seen (pending CSR, standalone mode, kubelet not running).
        detail: String,
    },
    /// The files kubeadm wrote for the kubelet are not usable.
    #[error("kubeadm's kubelet files are not valid: {detail}")]
    KubeletFilesInvalid {
        /// Which file and why.
        detail: String,
    },
    /// kubelet could not be started.
    #[error("kubelet could not be started: {detail}; see `journalctl -u kubelet`")]
    KubeletStartFailed {
        /// systemd's answer.
        detail: String,
    },
    /// kubeadm printed nothing for too long, or ran past its deadline.
    #[error("kubeadm {what}: killed its process group; last output: {last_line}")]
    Hang {
        /// "printed nothing for 3m" / "ran past its 10m deadline".
        what: String,
        /// The last line it printed.
        last_line: String,
    },
    /// kubeadm failed for another reason.
    #[error("kubeadm join failed (exit {code}): {detail}")]
    KubeadmFailed {
        /// Exit code (or -signal).
        code: i32,
        /// Its last error line.
        detail: String,
    },
    /// The joined node did not show up in the API server.
    #[error("the Node \"{node}\" did not appear in the API server: {detail}")]
    NodeNotRegistered {
        /// The node name.
        node: String,
        /// What was seen.
        detail: String,
    },
    /// The etcd cluster has no healthy leader (control-plane joins).
    #[error(
        "etcd is not healthy: {detail}; a control plane cannot join until the existing members have a leader"
    )]
    EtcdUnhealthy {
        /// What the members said.
        detail: String,
    },
    /// A learner that never started blocks this node's learner.
    #[error("{detail}")]
    EtcdStaleLearner {
        /// The member, and how to remove it.
        detail: String,
    },
    /// This node's etcd learner did not catch up in time.
    #[error("etcd learner not in sync: {detail}")]
    EtcdLearnerNotInSync {
        /// Progress seen.
        detail: String,
    },
    /// etcd peers cannot be reached on their peer port.
    #[error("etcd peer port unreachable: {detail}; open TCP 2380 between control planes")]
    EtcdPeerUnreachable {
        /// Which peers.
        detail: String,
    },
    /// systemd, the file system or another local service failed.
    #[error("{detail}")]
    Local {
        /// What failed.
        detail: String,
    },
}

impl Failure {
    /// The stable label used in `FAILURE=`, metrics and the state file.
    pub fn class(&self) -> &'static str {
        match self {
            Failure::KubeadmMissing { .. } => "kubeadm-missing",
            Failure::KubeadmConfigRejected { .. } | Failure::SettingUnsupported { .. } => {
                "config-invalid"
            }
            Failure::KubeadmPreflight { .. } | Failure::HostNotReady { .. } => "preflight-failed",
            Failure::TokenInvalid { .. } => "token-invalid",
            Failure::CaPinMismatch { .. } => "ca-pin-mismatch",
            Failure::ClusterInfoInvalid { .. } => "cluster-info-invalid",
            Failure::ApiServerUnreachable { .. } => "api-server-unreachable",
            Failure::ContainerdNotReady { .. } => "containerd-not-ready",
            Failure::NodeNameConflict { .. } | Failure::NodeNameTaken { .. } => {
                "node-name-conflict"
            }
            Failure::TlsBootstrapStuck { .. } => "tls-bootstrap-stuck",
            Failure::KubeletFilesInvalid { .. } => "kubelet-files-invalid",
            Failure::KubeletStartFailed { .. } => "kubelet-start-failed",
            Failure::Hang { .. } => "hang",
            Failure::KubeadmFailed { .. } => "kubeadm-failed",
            Failure::NodeNotRegistered { .. } => "node-not-registered",
            Failure::EtcdUnhealthy { .. } => "etcd-unhealthy",
            Failure::EtcdStaleLearner { .. } => "etcd-stale-learner",
            Failure::EtcdLearnerNotInSync { .. } => "etcd-learner-not-in-sync",
            Failure::EtcdPeerUnreachable { .. } => "etcd-peer-unreachable",
            Failure::Local { .. } => "local",
        }
    }

    /// What to do next.
    pub fn policy(&self) -> Policy {
        match self {
            Failure::KubeadmMissing { .. }
            | Failure::KubeadmConfigRejected { .. }
            | Failure::SettingUnsupported { .. }
            | Failure::HostNotReady { .. }
            | Failure::NodeNameTaken { .. }
            | Failure::CaPinMismatch { .. }
            | Failure::ClusterInfoInvalid { .. }
            | Failure::EtcdStaleLearner { .. } => Policy::Stop,
            Failure::TokenInvalid { .. } => Policy::WaitForNewToken,
            Failure::KubeadmPreflight { leftovers, .. } => {
                if *leftovers {
                    Policy::Retry { cleanup: true }
                } else {
                    Policy::Stop
                }
            }
            Failure::ApiServerUnreachable { .. }
            | Failure::ContainerdNotReady { .. }
            | Failure::EtcdUnhealthy { .. }
            | Failure::EtcdPeerUnreachable { .. }
            | Failure::Local { .. } => Policy::Retry { cleanup: false },
            Failure::NodeNameConflict { .. }
            | Failure::TlsBootstrapStuck { .. }
            | Failure::KubeletFilesInvalid { .. }
            | Failure::KubeletStartFailed { .. }
            | Failure::Hang { .. }
            | Failure::KubeadmFailed { .. }
            | Failure::NodeNotRegistered { .. }
            | Failure::EtcdLearnerNotInSync { .. } => Policy::Retry { cleanup: true },
        }
    }
}

/// " after 1m 30s", or nothing for a failure found without waiting.
fn waited_for(waited: Duration) -> String {
    if waited.is_zero() {
        String::new()
    } else {
        format!(" after {}", humantime::format_duration(waited))
    }
}

/// An error and its causes on one line, "a: b: c": transport errors (reqwest, tonic)
/// say only "error sending request" in their own Display.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_stable_and_policies_match_the_architecture() {
        let stop = [
            Failure::KubeadmMissing { detail: "x".into() },
            Failure::KubeadmConfigRejected { detail: "x".into() },
            Failure::CaPinMismatch { detail: "x".into() },
            Failure::KubeadmPreflight {
                code: 1,
                checks: vec!["Swap".into()],
                leftovers: false,
            },
        ];
        for f in &stop {
            assert_eq!(f.policy(), Policy::Stop, "{}", f.class());
        }
        let retry_clean = [
            Failure::Hang {
                what: "x".into(),
                last_line: "y".into(),
            },
            Failure::KubeadmFailed {
                code: 1,
                detail: "x".into(),
            },
            Failure::NodeNameConflict { node: "n".into() },
            Failure::KubeadmPreflight {
                code: 1,
                checks: vec!["FileAvailable--etc-kubernetes-pki-ca.crt".into()],
                leftovers: true,
            },
        ];
        for f in &retry_clean {
            assert_eq!(f.policy(), Policy::Retry { cleanup: true }, "{}", f.class());
        }
        assert_eq!(
            Failure::ApiServerUnreachable {
                detail: "x".into(),
                port: 6443
            }
            .policy(),
            Policy::Retry { cleanup: false }
        );
        assert_eq!(
            Failure::Hang {
                what: "x".into(),
                last_line: "y".into()
            }
            .class(),
            "hang"
        );
    }

    #[test]
    fn messages_name_cause_and_fix() {
        let f = Failure::NodeNameConflict {
            node: "worker-1".into(),
        };
        assert!(f.to_string().contains("\"worker-1\"") && f.to_string().contains("node_name"));
        let f = Failure::KubeadmPreflight {
            code: 1,
            checks: vec!["FileAvailable--etc-kubernetes-pki-ca.crt".into()],
            leftovers: true,
        };
        assert!(f.to_string().contains("kubeadm reset -f"));
    }
}
