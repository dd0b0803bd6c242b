//! What a finished `kubeadm join` means, from its exit code and the messages upstream
//! kubeadm prints (cmd/kubeadm/app/util/error.go, phases/join/kubelet.go,
//! discovery/token/token.go).

use super::supervisor::{Finished, Killed};
use crate::failure::Failure;

/// Preflight errors that a failed join leaves behind and `kubeadm reset -f` removes.
/// Not Port-10250: the agent stops kubelet before kubeadm runs, so a busy kubelet port
/// is held by something else, which no reset fixes.
const LEFTOVER_CHECKS: &[&str] = &[
    "FileAvailable--etc-kubernetes-kubelet.conf",
    "FileAvailable--etc-kubernetes-bootstrap-kubelet.conf",
    "FileAvailable--etc-kubernetes-pki-ca.crt",
    "DirAvailable--etc-kubernetes-manifests",
];

/// kubeadm's preflight check of the container runtime (`crictl info` up to v1.2x, the
/// CRI API later): `[ERROR CRI]: container runtime is not running: ...`.
const CRI_CHECK: &str = "CRI";

/// What kubeadm prints when it starts waiting for the kubelet's TLS bootstrap (v1.31 and
/// later print it without the dots, after the health check).
pub const TLS_BOOTSTRAP_WAIT: &str =
    "[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap";
/// What kubeadm prints when its `systemctl restart kubelet` failed (on stdout up to
/// v1.2x, as a klog warning later): with kubelet masked, it goes on and waits.
pub const KUBELET_RESTART_FAILED: &str = "unable to start the kubelet service";
/// v1.31 and later wait for the kubelet's health first.
pub const KUBELET_HEALTH_WAIT: &str = "[kubelet-check] Waiting for a healthy kubelet";

/// Classifies a finished kubeadm run; `Ok` for success.
pub fn classify(
    f: &Finished,
    node_name: &str,
    token_id: &str,
    source_name: &str,
) -> Result<(), Failure> {
    if let Some(killed) = f.killed {
        let what = match killed {
            Killed::Deadline(d) => {
                format!("ran past its {} deadline", humantime::format_duration(d))
            }
            Killed::NoProgress(d) => {
                format!("printed nothing for {}", humantime::format_duration(d))
            }
        };
        return Err(Failure::Hang {
            what,
            last_line: f.last_line(),
        });
    }
    let code = match (f.code, f.signal) {
        (Some(0), _) => return Ok(()),
        (Some(code), _) => code,
        (None, Some(sig)) => -sig,
        (None, None) => -1,
    };
    if code == 127 || code == 126 {
        return Err(Failure::KubeadmMissing {
            detail: format!("exit {code}: {}", f.last_line()),
        });
    }
    if code == 3 {
        return Err(Failure::KubeadmConfigRejected {
            detail: error_line(f),
        });
    }
    if code == 2 || f.said("[preflight] Some fatal errors occurred") {
        let checks = failed_checks(f);
        // containerd went away between the agent's own runtime check and kubeadm's: a
        // runtime restart (a package upgrade, its own crash) is transient, and the next
        // attempt's preflight waits for it again.
        if checks == [CRI_CHECK] {
            return Err(Failure::ContainerdNotReady {
                detail: format!("kubeadm's preflight: {}", check_line(f, CRI_CHECK)),
                waited: std::time::Duration::ZERO,
            });
        }
        let leftovers =
            !checks.is_empty() && checks.iter().all(|c| LEFTOVER_CHECKS.contains(&c.as_str()));
        return Err(Failure::KubeadmPreflight {
            code,
            checks,
            leftovers,
        });
    }
    if f.said("already exists in the cluster") && f.said("status \"Ready\"") {
        return Err(Failure::NodeNameConflict {
            node: node_name.to_string(),
        });
    }
    if f.said("is invalid for this cluster or it has expired") {
        return Err(Failure::TokenInvalid {
            token_id: token_id.to_string(),
            source_name: source_name.to_string(),
        });
    }
    if f.said("none of the public keys") && f.said("are pinned") {
        return Err(Failure::CaPinMismatch {
            detail: format!("kubeadm: {}", error_line(f)),
        });
    }
    if f.said("error execution phase kubelet-start")
        && f.said("timed out waiting for the condition")
    {
        return Err(Failure::TlsBootstrapStuck {
            detail: format!("kubeadm gave up waiting for the kubelet: {}", error_line(f)),
        });
    }
    Err(Failure::KubeadmFailed {
        code,
        detail: error_line(f),
    })
}

/// kubeadm's trailers after an error: never the error itself.
const BOILERPLATE: &[&str] = &[
    "To see the stack trace of this error",
    "[preflight] If you know what you are doing",
];

/// The line with kubeadm's error, else its last meaningful line.
fn error_line(f: &Finished) -> String {
    let meaningful = || {
        f.output
            .iter()
            .rev()
            .map(|l| l.text.trim())
            .filter(|t| !t.is_empty() && !BOILERPLATE.iter().any(|b| t.starts_with(b)))
    };
    meaningful()
        .find(|t| {
            t.starts_with("error execution phase")
                || t.starts_with("error:")
                || t.contains("] error")
        })
        .or_else(|| meaningful().next())
        .map(str::to_string)
        .unwrap_or_else(|| f.last_line())
}

/// The `[ERROR name]` line of one check, trimmed.
fn check_line(f: &Finished, name: &str) -> String {
    let tag = format!("[ERROR {name}]");
    f.output
        .iter()
        .find(|l| l.text.contains(&tag))
        .map(|l| l.text.trim().to_string())
        .unwrap_or_else(|| f.last_line())
}

/// `[ERROR Name]: ...` lines, as kubeadm's preflight prints them.
fn failed_checks(f: &Finished) -> Vec<String> {
    let mut checks = Vec::new();
    for line in &f.output {
        if let Some(rest) = line.text.split("[ERROR ").nth(1)
            && let Some(name) = rest.split(']').next()
        {
            let name = name.trim().to_string();
            if !name.is_empty() && !checks.contains(&name) {
                checks.push(name);
            }
        }
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubeadm::supervisor::Line;
    use std::time::Duration;

    fn finished(code: Option<i32>, lines: &[&str]) -> Finished {
        Finished {
            code,
            signal: None,
            output: lines
                .iter()
                .map(|t| Line {
                    stream: "stderr",
                    text: t.to_string(),
                })
                .collect(),
            killed: None,
            elapsed: Duration::from_secs(1),
        }
    }

    fn class(code: i32, lines: &[&str]) -> &'static str {
        match classify(
            &finished(Some(code), lines),
            "worker-1",
            "abcdef",
            "/etc/kube-join-agent/token",
        ) {
            Ok(()) => "ok",
            Err(f) => f.class(),
        }
    }

    #[test]
    fn exit_codes_and_upstream_messages() {
        assert_eq!(class(0, &["This node has joined the cluster:"]), "ok");
        assert_eq!(
            class(127, &["sh: 1: kubeadm: not found"]),
            "kubeadm-missing"
        );
        assert_eq!(
            class(3, &["can not mix '--config' with arguments [token]"]),
            "config-invalid"
        );
        assert_eq!(
            class(
                1,
                &[
                    "error execution phase kubelet-start: a Node with name \"worker-1\" and status \"Ready\" already exists in the cluster. You must delete the existing Node or change the name of this new joining Node"
                ]
            ),
            "node-name-conflict"
        );
        assert_eq!(
            class(
                1,
                &[
                    "error execution phase preflight: couldn't validate the identity of the API Server: token id \"abcdef\" is invalid for this cluster or it has expired. Use \"kubeadm token create\" on the control-plane node to create a new valid token"
                ]
            ),
            "token-invalid"
        );
        assert_eq!(
            class(
                1,
                &[
                    "error execution phase preflight: couldn't validate the identity of the API Server: cluster CA found in cluster-info ConfigMap is invalid: none of the public keys \"sha256:aa\" are pinned"
                ]
            ),
            "ca-pin-mismatch"
        );
        assert_eq!(
            class(
                1,
                &[
                    "[kubelet-check] Initial timeout of 40s passed.",
                    "error execution phase kubelet-start: timed out waiting for the condition"
                ]
            ),
            "tls-bootstrap-stuck"
        );
        assert_eq!(
            class(
                1,
                &[
                    "error execution phase preflight: unable to fetch the kubeadm-config ConfigMap: connection refused"
                ]
            ),
            "kubeadm-failed"
        );
    }

    #[test]
    fn a_runtime_gone_at_kubeadm_preflight_is_waited_for() {
        let f = finished(
            Some(1),
            &[
                "[preflight] Running pre-flight checks",
                "error execution phase preflight: [preflight] Some fatal errors occurred:",
                "\t[ERROR CRI]: container runtime is not running: output: time=\"2026-12-01T10:00:00Z\" level=fatal msg=\"validate service connection: CRI v1 runtime API is not implemented for endpoint \\\"unix:///var/run/containerd/containerd.sock\\\": rpc error: code = Unavailable\"",
                "[preflight] If you know what you are doing, you can make a check non-fatal with `--ignore-preflight-errors=...`",
            ],
        );
        match classify(&f, "n", "abcdef", "token file") {
            Err(Failure::ContainerdNotReady { detail, .. }) => {
                assert!(detail.contains("[ERROR CRI]"), "{detail}");
                assert!(
                    detail.contains("container runtime is not running"),
                    "{detail}"
                );
            }
            other => panic!("{other:?}"),
        }
        // With another check failing too, it is still a preflight failure.
        let f = finished(
            Some(1),
            &[
                "error execution phase preflight: [preflight] Some fatal errors occurred:",
                "\t[ERROR CRI]: container runtime is not running",
                "\t[ERROR Port-10250]: Port 10250 is in use",
            ],
        );
        assert!(matches!(
            classify(&f, "n", "abcdef", "token file"),
            Err(Failure::KubeadmPreflight { .. })
        ));
    }

    #[test]
    fn preflight_names_checks_and_spots_leftovers() {
        let lines = [
            "[preflight] Running pre-flight checks",
            "error execution phase preflight: [preflight] Some fatal errors occurred:",
            "\t[ERROR FileAvailable--etc-kubernetes-pki-ca.crt]: /etc/kubernetes/pki/ca.crt already exists",
            "[preflight] If you know what you are doing, you can make a check non-fatal with `--ignore-preflight-errors=...`",
        ];
        match classify(&finished(Some(2), &lines), "n", "abcdef", "t") {
            Err(Failure::KubeadmPreflight {
                checks, leftovers, ..
            }) => {
                assert_eq!(checks, vec!["FileAvailable--etc-kubernetes-pki-ca.crt"]);
                assert!(leftovers);
            }
            other => panic!("{other:?}"),
        }
        let lines = [
            "\t[ERROR FileContent--proc-sys-net-ipv4-ip_forward]: /proc/sys/net/ipv4/ip_forward contents are not set to 1",
            "\t[ERROR Port-10250]: Port 10250 is in use",
        ];
        match classify(&finished(Some(2), &lines), "n", "abcdef", "t") {
            Err(f @ Failure::KubeadmPreflight { .. }) => {
                assert_eq!(f.policy(), crate::failure::Policy::Stop)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_error_line_is_not_kubeadm_boilerplate() {
        let lines = [
            "your configuration file uses an old API spec: \"kubeadm.k8s.io/v1beta2\". Please use kubeadm v1.22 instead",
            "To see the stack trace of this error execute with --v=5 or higher",
        ];
        match classify(&finished(Some(3), &lines), "n", "abcdef", "t") {
            Err(Failure::KubeadmConfigRejected { detail }) => {
                assert!(detail.contains("old API spec"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_killed_run_is_a_hang_with_its_last_words() {
        let mut f = finished(
            None,
            &["[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap..."],
        );
        f.signal = Some(15);
        f.killed = Some(Killed::NoProgress(Duration::from_secs(180)));
        let err = classify(&f, "n", "abcdef", "t").unwrap_err();
        assert_eq!(err.class(), "hang");
        assert!(
            err.to_string().contains("printed nothing for 3m")
                && err.to_string().contains("TLS Bootstrap")
        );
    }

    proptest::proptest! {
        #[test]
        fn classification_never_panics(code in -20i32..300, lines in proptest::collection::vec(".*", 0..8)) {
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            let _ = classify(&finished(Some(code), &refs), "n", "abcdef", "t");
        }
    }
}
