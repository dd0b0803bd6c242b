//! The join preflight checks kubeadm runs on a worker (kubeadm/preflight/checks.go), with
//! upstream's check names, messages and ignore rules. Warnings go to stdout as they are
//! found; errors are collected into one preflight error (exit 2).

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::time::SystemTime;

use super::config::JoinConfig;
use super::error::{KubeadmError, validation};
use super::systemd::Systemctl;
use crate::fsroot::{Root, go_errno_text};
use crate::timefmt;

/// One check's outcome.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Check name, e.g. `FileAvailable--etc-kubernetes-kubelet.conf`.
    pub name: String,
    /// Warnings.
    pub warnings: Vec<String>,
    /// Errors.
    pub errors: Vec<String>,
}

impl Outcome {
    /// A passing outcome for the check `name`.
    pub fn named(name: impl Into<String>) -> Self {
        Self::new(name)
    }

    /// Adds an error.
    pub fn with_error(self, e: impl Into<String>) -> Self {
        self.error(e)
    }

    fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Default::default()
        }
    }

    fn error(mut self, e: impl Into<String>) -> Self {
        self.errors.push(e.into());
        self
    }

    fn warning(mut self, w: impl Into<String>) -> Self {
        self.warnings.push(w.into());
        self
    }
}

/// `ValidateIgnorePreflightErrors`: lowercased names; `all` forbidden in the config file
/// and not combinable with individual names.
pub fn ignore_set(
    from_cli: &[String],
    from_config: &[String],
) -> Result<BTreeSet<String>, KubeadmError> {
    let mut set: BTreeSet<String> = from_config.iter().map(|s| s.to_lowercase()).collect();
    let mut errs = Vec::new();
    if set.contains("all") {
        errs.push("ignorePreflightErrors: Invalid value: \"all\": 'all' cannot be used in configuration file".to_owned());
    }
    set.extend(from_cli.iter().map(|s| s.to_lowercase()));
    if set.contains("all") && set.len() > 1 {
        let joined = set.iter().cloned().collect::<Vec<_>>().join(",");
        errs.push(format!(
            "ignore-preflight-errors: Invalid value: {joined:?}: don't specify individual checks if 'all' is used"
        ));
    }
    if errs.is_empty() {
        Ok(set)
    } else {
        Err(validation(super::error::aggregate(&errs)))
    }
}

/// FileAvailable--<path>: the file must not exist.
pub fn file_available(root: &Root, path: &str) -> Outcome {
    let o = Outcome::new(format!("FileAvailable-{}", path.replace('/', "-")));
    if root.path(path).symlink_metadata().is_ok() {
        o.error(format!("{path} already exists"))
    } else {
        o
    }
}

/// DirAvailable--<path>: the directory must be absent or empty.
pub fn dir_available(root: &Root, path: &str) -> Outcome {
    let o = Outcome::new(format!("DirAvailable-{}", path.replace('/', "-")));
    let non_empty =
        std::fs::read_dir(root.path(path)).is_ok_and(|mut entries| entries.next().is_some());
    if non_empty {
        o.error(format!("{path} is not empty"))
    } else {
        o
    }
}

fn file_content(root: &Root, path: &str, want: &str) -> Outcome {
    let o = Outcome::new(format!("FileContent-{}", path.replace('/', "-")));
    match std::fs::read(root.path(path)) {
        Err(_) => o.error(format!("{path} does not exist")),
        Ok(b) if !b.starts_with(want.as_bytes()) => {
            o.error(format!("{path} contents are not set to {want}"))
        }
        Ok(_) => o,
    }
}

fn is_privileged_user() -> Outcome {
    let o = Outcome::new("IsPrivilegedUser");
    if nix::unistd::geteuid().is_root() {
        o
    } else {
        o.error("user is not running as root")
    }
}

/// The container runtime answers on its socket. (Upstream asks crictl; what matters to
/// the agent is the error's name and wording when containerd is down.)
fn container_runtime(root: &Root, endpoint: &str) -> Outcome {
    let o = Outcome::new("CRI");
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    let io_path = root.path(path);
    let failure = match std::fs::metadata(&io_path) {
        Err(e) => Some(go_errno_text(&e)),
        Ok(m) if !m.file_type().is_socket() => Some("connection refused".to_owned()),
        Ok(_) => UnixStream::connect(&io_path)
            .err()
            .map(|e| go_errno_text(&e)),
    };
    match failure {
        None => o,
        Some(why) => o.error(format!(
            "container runtime is not running: output: time=\"{}\" level=fatal msg=\"validate service connection: validate CRI v1 runtime API for endpoint \\\"{endpoint}\\\": rpc error: code = Unavailable desc = connection error: desc = \\\"transport: Error while dialing: dial unix {path}: connect: {why}\\\"\"\n, error: exit status 1",
            timefmt::rfc3339(SystemTime::now())
        )),
    }
}

fn swap(root: &Root) -> Outcome {
    let o = Outcome::new("Swap");
    let on = std::fs::read_to_string(root.path("/proc/swaps"))
        .map(|s| s.lines().filter(|l| !l.trim().is_empty()).count() > 1)
        .unwrap_or(false);
    if on {
        o.warning("swap is supported for cgroup v2 only; the NodeSwap feature gate of the kubelet is beta but disabled by default")
    } else {
        o
    }
}

fn service_kubelet(systemctl: Option<&Systemctl>) -> Outcome {
    let o = Outcome::new("Service-Kubelet");
    match systemctl {
        Some(s) if !s.is_enabled("kubelet.service") => o.warning(
            "kubelet service is not enabled, please run 'systemctl enable kubelet.service'",
        ),
        _ => o,
    }
}

/// Port 10250 is free. Upstream binds `:10250`; binding the loopback address finds the
/// same listeners (kubelet binds the wildcard) without touching other interfaces.
fn port_open(port: u16) -> Outcome {
    let o = Outcome::new(format!("Port-{port}"));
    match TcpListener::bind(("127.0.0.1", port)) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            o.error(format!("Port {port} is in use"))
        }
        _ => o,
    }
}

/// Runs the worker join checks and prints warnings; errors become a preflight error.
pub fn run_join_checks(
    root: &Root,
    cfg: &JoinConfig,
    ignore: &BTreeSet<String>,
    systemctl: Option<&Systemctl>,
) -> Result<(), KubeadmError> {
    let checks = vec![
        is_privileged_user(),
        dir_available(root, "/etc/kubernetes/manifests"),
        file_available(root, "/etc/kubernetes/kubelet.conf"),
        file_available(root, "/etc/kubernetes/bootstrap-kubelet.conf"),
        container_runtime(root, &cfg.cri_socket),
        file_content(root, "/proc/sys/net/ipv4/ip_forward", "1"),
        swap(root),
        service_kubelet(systemctl),
        port_open(10250),
        file_available(root, &cfg.ca_cert_path),
    ];
    report(checks, ignore)
}

/// Only the root check (what `kubeadm reset` runs).
pub fn run_root_check(ignore: &BTreeSet<String>) -> Result<(), KubeadmError> {
    report(vec![is_privileged_user()], ignore)
}

/// Prints warnings and turns errors into one preflight error.
pub fn report(checks: Vec<Outcome>, ignore: &BTreeSet<String>) -> Result<(), KubeadmError> {
    let mut errors = String::new();
    for mut c in checks {
        if ignore.contains("all") || ignore.contains(&c.name.to_lowercase()) {
            c.warnings.append(&mut c.errors);
        }
        for w in &c.warnings {
            println!("\t[WARNING {}]: {w}", c.name);
        }
        for e in &c.errors {
            errors.push_str(&format!("\t[ERROR {}]: {e}\n", c.name));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(KubeadmError::Preflight(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignore_rules() {
        let s = ignore_set(
            &["Swap".into()],
            &["FileAvailable--etc-kubernetes-pki-ca.crt".into()],
        )
        .unwrap();
        assert!(s.contains("swap") && s.contains("fileavailable--etc-kubernetes-pki-ca.crt"));
        assert!(
            ignore_set(&[], &["all".into()])
                .unwrap_err()
                .message()
                .contains("'all' cannot be used in configuration file")
        );
        assert!(
            ignore_set(&["all".into(), "Swap".into()], &[])
                .unwrap_err()
                .message()
                .contains("don't specify individual checks")
        );
        assert!(ignore_set(&["all".into()], &[]).is_ok());
    }

    #[test]
    fn file_checks_use_upstream_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::at(dir.path());
        std::fs::create_dir_all(root.path("/etc/kubernetes/pki")).unwrap();
        std::fs::write(root.path("/etc/kubernetes/pki/ca.crt"), "x").unwrap();
        let o = file_available(&root, "/etc/kubernetes/pki/ca.crt");
        assert_eq!(o.name, "FileAvailable--etc-kubernetes-pki-ca.crt");
        assert_eq!(o.errors, vec!["/etc/kubernetes/pki/ca.crt already exists"]);
        std::fs::create_dir_all(root.path("/proc/sys/net/ipv4")).unwrap();
        std::fs::write(root.path("/proc/sys/net/ipv4/ip_forward"), "0\n").unwrap();
        let o = file_content(&root, "/proc/sys/net/ipv4/ip_forward", "1");
        assert_eq!(o.name, "FileContent--proc-sys-net-ipv4-ip_forward");
        assert_eq!(
            o.errors,
            vec!["/proc/sys/net/ipv4/ip_forward contents are not set to 1"]
        );
        let err = report(vec![o], &BTreeSet::new()).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            report(
                vec![file_content(&root, "/proc/sys/net/ipv4/ip_forward", "1")],
                &["filecontent--proc-sys-net-ipv4-ip_forward".to_owned()].into()
            )
            .is_ok()
        );
    }

    #[test]
    fn cri_socket_missing() {
        let dir = tempfile::tempdir().unwrap();
        let o = container_runtime(
            &Root::at(dir.path()),
            "unix:///run/containerd/containerd.sock",
        );
        assert_eq!(o.name, "CRI");
        assert!(o.errors[0].starts_with("container runtime is not running: output: "));
        assert!(o.errors[0].contains(
            "dial unix /run/containerd/containerd.sock: connect: no such file or directory"
        ));
    }
}
