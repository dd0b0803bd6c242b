//! Kernel prerequisites of a Kubernetes node: overlay and br_netfilter, IPv4
//! forwarding, and bridged traffic through iptables (kubeadm checks_linux.go).

use super::{Finding, Verdict};
use crate::paths::Paths;

/// All kernel checks.
pub fn checks(paths: &Paths) -> Vec<Finding> {
    vec![
        module(paths, "kernel-module-overlay", "overlay", Some("overlay")),
        module(paths, "kernel-module-br_netfilter", "br_netfilter", None),
        sysctl(
            paths,
            "ip_forward",
            "net/ipv4/ip_forward",
            "net.ipv4.ip_forward",
        ),
        sysctl(
            paths,
            "bridge-nf-call-iptables",
            "net/bridge/bridge-nf-call-iptables",
            "net.bridge.bridge-nf-call-iptables",
        ),
    ]
}

/// A module counts as present when loaded (/proc/modules), built in (/sys/module), or,
/// for file systems, registered (/proc/filesystems). br_netfilter built in shows up as
/// /proc/sys/net/bridge.
fn module(paths: &Paths, check: &'static str, name: &str, filesystem: Option<&str>) -> Finding {
    let proc = paths.proc();
    let loaded = std::fs::read_to_string(proc.join("modules"))
        .is_ok_and(|t| t.lines().any(|l| l.split_whitespace().next() == Some(name)));
    let builtin = paths.at("/sys/module").join(name).exists();
    let registered = filesystem.is_some_and(|fs| {
        std::fs::read_to_string(proc.join("filesystems"))
            .is_ok_and(|t| t.lines().any(|l| l.split_whitespace().last() == Some(fs)))
    });
    let bridge_sysctls = name == "br_netfilter" && proc.join("sys/net/bridge").exists();
    let verdict = if loaded || builtin || registered || bridge_sysctls {
        Verdict::Pass(format!("{name} available"))
    } else {
        Verdict::Fail {
            reason: format!("kernel module {name} is not loaded"),
            fix: format!("modprobe {name} and add it to /etc/modules-load.d/k8s.conf"),
        }
    };
    Finding { check, verdict }
}

fn sysctl(paths: &Paths, check: &'static str, rel: &str, key: &str) -> Finding {
    let path = paths.proc().join("sys").join(rel);
    let verdict = match std::fs::read_to_string(&path) {
        Ok(v) if v.trim() == "1" => Verdict::Pass(format!("{key} = 1")),
        Ok(v) => Verdict::Fail {
            reason: format!("{key} is {}, kubeadm and pod networking need 1", v.trim()),
            fix: format!("sysctl -w {key}=1 and persist it in /etc/sysctl.d/k8s.conf"),
        },
        Err(e) => Verdict::Fail {
            reason: format!("cannot read {}: {e}", path.display()),
            fix: if key.starts_with("net.bridge") {
                "modprobe br_netfilter (it provides the net.bridge sysctls)".into()
            } else {
                "check that /proc is mounted".into()
            },
        },
    };
    Finding { check, verdict }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_modules_and_sysctls_from_the_given_root() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let write = |p: &str, t: &str| {
            let path = paths.at(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, t).unwrap();
        };
        write("/proc/modules", "overlay 151552 0 - Live 0x0\n");
        write("/proc/sys/net/ipv4/ip_forward", "0\n");
        let findings = checks(&paths);
        let verdict = |name: &str| {
            findings
                .iter()
                .find(|f| f.check == name)
                .unwrap()
                .verdict
                .clone()
        };
        assert!(matches!(verdict("kernel-module-overlay"), Verdict::Pass(_)));
        assert!(matches!(
            verdict("kernel-module-br_netfilter"),
            Verdict::Fail { .. }
        ));
        match verdict("ip_forward") {
            Verdict::Fail { reason, fix } => {
                assert!(reason.contains("is 0"));
                assert!(fix.contains("sysctl -w net.ipv4.ip_forward=1"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            verdict("bridge-nf-call-iptables"),
            Verdict::Fail { .. }
        ));
        write("/proc/sys/net/bridge/bridge-nf-call-iptables", "1\n");
        write("/proc/sys/net/ipv4/ip_forward", "1\n");
        let findings = checks(&paths);
        assert!(
            findings
                .iter()
                .all(|f| matches!(f.verdict, Verdict::Pass(_))),
            "{findings:?}"
        );
    }
}
