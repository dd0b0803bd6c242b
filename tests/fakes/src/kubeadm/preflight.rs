//! The join preflight checks kubeadm runs on a worker (kubeadm/preflight/checks.go), with
//! upstream's check names, messages and ignore rules. Warnings go to stderr as they are
//! found (`RunChecks(checks, os.Stderr, ...)`); errors are collected into one preflight
//! error, which the phase runner's wrapper turns into exit 1 (see `error.rs`).

use std::collections::BTreeSet;
use std::net::TcpListener;

use super::config::JoinConfig;
use super::error::{KubeadmError, validation};
use super::systemd::Systemctl;
use crate::fsroot::{Root, go_errno_text};
use crate::klog::{self, Severity};
use crate::kubeversion::KubeVersion;

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

/// `crictl` on PATH, as Go's `exec.LookPath` finds it (executable regular file).
pub fn look_path(tool: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `utilruntime.NewContainerRuntime`: kubeadm talks to the runtime through `crictl`, so
/// it must be on PATH; otherwise kubeadm warns (before any check runs) and leaves the
/// `CRI` check out, and `FileExisting-crictl` fails. The warning is `fmt.Printf` on
/// stdout up to v1.23 and `klog.Warningf` from v1.24 (kubernetes PR #107467), worded as
/// each release's `NewContainerRuntime` and `utilsexec.LookPath` word it.
pub fn crictl_missing_warning(v: KubeVersion) -> String {
    let why = if v.at_least(1, 24) {
        "crictl is required by the container runtime: executable file not found in $PATH"
    } else {
        "crictl is required for container runtime: exec: \"crictl\": executable file not found in $PATH"
    };
    format!(
        "[preflight] WARNING: Couldn't create the interface used for talking to the container runtime: {why}"
    )
}

fn print_crictl_missing(v: KubeVersion) {
    let line = crictl_missing_warning(v);
    if v.at_least(1, 24) {
        klog::printf(Severity::Warning, "checks.go:1064", &line);
    } else {
        println!("{line}");
    }
}

/// `ContainerRuntimeCheck` (`CRI`): `crictl -r <endpoint> info` must succeed; its output
/// goes into the error. Up to v1.23 kubeadm prefixes a bare socket path with `unix://`
/// for crictl; later releases pass the endpoint as configured, also as image endpoint.
fn container_runtime(
    root: &Root,
    crictl: &std::path::Path,
    endpoint: &str,
    v: KubeVersion,
) -> Outcome {
    let o = Outcome::new("CRI");
    let ep = if !v.at_least(1, 24) && endpoint.starts_with('/') {
        format!("unix://{endpoint}")
    } else {
        endpoint.to_owned()
    };
    let mut cmd = std::process::Command::new(crictl);
    cmd.arg("-r").arg(&ep);
    if v.at_least(1, 24) {
        cmd.arg("-i").arg(&ep);
    }
    cmd.arg("info").stdin(std::process::Stdio::null());
    if let Some(prefix) = root.prefix() {
        // Under FAKE_K8S_ROOT the fake crictl dials the socket under the same root.
        cmd.env("FAKE_K8S_ROOT", prefix);
    }
    match cmd.output() {
        Ok(out) if out.status.success() => o,
        Ok(out) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            let status = match out.status.code() {
                Some(c) => format!("exit status {c}"),
                None => "signal: killed".to_owned(),
            };
            o.error(format!(
                "container runtime is not running: output: {text}, error: {status}"
            ))
        }
        Err(e) => o.error(format!(
            "container runtime is not running: output: , error: fork/exec {}: {}",
            crictl.display(),
            go_errno_text(&e)
        )),
    }
}

/// `InPathCheck` for a mandatory tool: `FileExisting-<tool>`.
fn in_path(tool: &str, found: bool) -> Outcome {
    let o = Outcome::new(format!("FileExisting-{tool}"));
    if found {
        o
    } else {
        o.error(format!("{tool} not found in system path"))
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

/// `ServiceCheck{Service: "kubelet"}`: `systemctl status kubelet` (does the unit exist),
/// then `systemctl is-enabled kubelet`, the unit named without `.service` as
/// initsystem_unix.go passes it (only the hint says `kubelet.service`).
fn service_kubelet(systemctl: Option<&Systemctl>) -> Outcome {
    let o = Outcome::new("Service-Kubelet");
    let Some(s) = systemctl else {
        return o.warning("no supported init system detected, skipping checking for services");
    };
    if !s.service_exists("kubelet") {
        return o.warning("kubelet service does not exist");
    }
    if !s.is_enabled("kubelet") {
        return o.warning(
            "kubelet service is not enabled, please run 'systemctl enable kubelet.service'",
        );
    }
    o
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
/// Order as `RunJoinNodeChecks` + `addCommonChecks` (the ones the fake runs).
pub fn run_join_checks(
    root: &Root,
    cfg: &JoinConfig,
    ignore: &BTreeSet<String>,
    systemctl: Option<&Systemctl>,
    v: KubeVersion,
) -> Result<(), KubeadmError> {
    let mut checks = vec![
        is_privileged_user(),
        dir_available(root, "/etc/kubernetes/manifests"),
        file_available(root, "/etc/kubernetes/kubelet.conf"),
        file_available(root, "/etc/kubernetes/bootstrap-kubelet.conf"),
    ];
    // The docker runtime (dockershim, before v1.24) is driven by `docker`, not crictl.
    let dockershim = cfg.cri_socket == super::config::DOCKERSHIM_SOCKET && !v.at_least(1, 24);
    let crictl = look_path("crictl");
    match (&crictl, dockershim) {
        (_, true) => {}
        (Some(path), false) => checks.push(container_runtime(root, path, &cfg.cri_socket, v)),
        (None, false) => print_crictl_missing(v),
    }
    if !dockershim {
        checks.push(in_path("crictl", crictl.is_some()));
    }
    checks.extend([
        file_content(root, "/proc/sys/net/ipv4/ip_forward", "1"),
        swap(root),
        service_kubelet(systemctl),
        port_open(10250),
        file_available(root, &cfg.ca_cert_path),
    ]);
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
            eprintln!("\t[WARNING {}]: {w}", c.name);
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
    fn service_kubelet_asks_systemctl_as_upstream() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls");
        let script = dir.path().join("systemctl");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$@\" >> {}\ncase \"$1\" in status) echo '   Loaded: loaded'; exit 3;; is-enabled) exit 1;; esac\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let s = Systemctl::at(&script, crate::fsroot::Root::at(dir.path()));
        let o = service_kubelet(Some(&s));
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "status kubelet\nis-enabled kubelet\n"
        );
        assert_eq!(
            o.warnings,
            vec!["kubelet service is not enabled, please run 'systemctl enable kubelet.service'"]
        );
        assert!(!s.is_active("systemd-resolved"));
        assert!(
            std::fs::read_to_string(&log)
                .unwrap()
                .ends_with("is-active systemd-resolved\n")
        );
        assert_eq!(
            service_kubelet(None).warnings,
            vec!["no supported init system detected, skipping checking for services"]
        );
    }

    #[test]
    fn crictl_is_run_with_each_releases_arguments() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let crictl = dir.path().join("crictl");
        let args = dir.path().join("args");
        std::fs::write(
            &crictl,
            format!(
                "#!/bin/sh\necho \"$@\" > {}\necho 'level=fatal msg=\"down\"'\nexit 1\n",
                args.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&crictl, std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = Root::at(dir.path());
        let v = |s: &str| KubeVersion::parse(s).unwrap();
        let o = container_runtime(
            &root,
            &crictl,
            "/run/containerd/containerd.sock",
            v("v1.20.2"),
        );
        assert_eq!(o.name, "CRI");
        assert_eq!(
            std::fs::read_to_string(&args).unwrap(),
            "-r unix:///run/containerd/containerd.sock info\n"
        );
        assert_eq!(
            o.errors,
            vec![
                "container runtime is not running: output: level=fatal msg=\"down\"\n, error: exit status 1"
            ]
        );
        let ep = "unix:///var/run/containerd/containerd.sock";
        container_runtime(&root, &crictl, ep, v("v1.29.7"));
        assert_eq!(
            std::fs::read_to_string(&args).unwrap(),
            format!("-r {ep} -i {ep} info\n")
        );
    }

    #[test]
    fn crictl_missing_fails_file_existing_and_words_the_warning_per_release() {
        let o = in_path("crictl", false);
        assert_eq!(o.name, "FileExisting-crictl");
        assert_eq!(o.errors, vec!["crictl not found in system path"]);
        assert!(in_path("crictl", true).errors.is_empty());
        let v = |s: &str| KubeVersion::parse(s).unwrap();
        assert_eq!(
            crictl_missing_warning(v("v1.20.2")),
            "[preflight] WARNING: Couldn't create the interface used for talking to the container runtime: crictl is required for container runtime: exec: \"crictl\": executable file not found in $PATH"
        );
        assert!(crictl_missing_warning(v("v1.29.7")).ends_with(
            "crictl is required by the container runtime: executable file not found in $PATH"
        ));
    }
}
