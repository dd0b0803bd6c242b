//! `kubeadm reset` on a worker (kubeadm/cmd/reset.go, phases/reset/cleanupnode.go): stop
//! kubelet, wipe manifests, pki, /var/lib/kubelet and the kubeconfigs. CNI config,
//! iptables and the Node object are left alone, as upstream leaves them.

use std::io::{BufRead, Write};

use super::args::Parsed;
use super::error::{KubeadmError, generic};
use super::preflight;
use super::systemd::Systemctl;
use crate::fsroot::Root;
use crate::kubeversion::KubeVersion;

const DIRS: &[&str] = &[
    "/etc/kubernetes/manifests",
    "/var/lib/kubelet",
    "/etc/kubernetes/pki",
];

fn files(v: KubeVersion) -> Vec<&'static str> {
    let mut f = vec!["/etc/kubernetes/admin.conf"];
    if v.at_least(1, 29) {
        f.push("/etc/kubernetes/super-admin.conf");
    }
    f.extend([
        "/etc/kubernetes/kubelet.conf",
        "/etc/kubernetes/bootstrap-kubelet.conf",
        "/etc/kubernetes/controller-manager.conf",
        "/etc/kubernetes/scheduler.conf",
    ]);
    f
}

const FOOTER: &str = "
The reset process does not clean CNI configuration. To do so, you must remove /etc/cni/net.d

The reset process does not reset or clean up iptables rules or IPVS tables.
If you wish to reset iptables, you must do so manually by using the \"iptables\" command.

If your cluster was setup to utilize IPVS, run ipvsadm --clear (or similar)
to reset your system's IPVS tables.

The reset process does not clean your kubeconfig files and you must remove them manually.
Please, check the contents of the $HOME/.kube/config file.
";

/// Deletes everything inside `dir`, keeping `dir` itself.
fn clean_dir(root: &Root, dir: &str) -> Result<(), String> {
    let path = root.path(dir);
    let entries = match std::fs::read_dir(&path) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(crate::fsroot::go_path_error("open", dir, &e)),
    };
    for entry in entries.flatten() {
        let p = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let r = if is_dir {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        if let Err(e) = r {
            return Err(format!(
                "unlinkat {}: {}",
                p.display(),
                crate::fsroot::go_errno_text(&e)
            ));
        }
    }
    Ok(())
}

/// Runs `kubeadm reset`.
pub fn run(p: &Parsed, root: &Root, version: KubeVersion) -> Result<(), KubeadmError> {
    if !p.bool("force") {
        println!(
            "[reset] WARNING: Changes made to this host by 'kubeadm init' or 'kubeadm join' will be reverted."
        );
        print!("[reset] Are you sure you want to proceed? [y/N]: ");
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !answer.trim().eq_ignore_ascii_case("y") {
            return Err(generic("aborted reset operation").in_phase("preflight"));
        }
    }
    println!("[preflight] Running pre-flight checks");
    let ignore = preflight::ignore_set(&p.list("ignore-preflight-errors"), &[])?;
    preflight::run_root_check(&ignore).map_err(|e| e.in_phase("preflight"))?;

    if let Some(s) = Systemctl::detect(root) {
        println!("[reset] Stopping the kubelet service");
        if let Err(e) = s.stop("kubelet") {
            println!("[reset] The kubelet service could not be stopped by kubeadm: [{e}]");
            println!("[reset] Please ensure kubelet is stopped manually");
        }
    }
    // remove-etcd-member: on a stacked control plane, leave the etcd cluster and wipe
    // the member's data (phases/reset/removeetcdmember.go).
    let mut dirs: Vec<String> = Vec::new();
    if let Some(etcd_dir) = super::cp::etcd::reset_local_member(root, version) {
        dirs.push(etcd_dir);
    }
    dirs.extend(DIRS.iter().map(|d| d.to_string()));
    println!("[reset] Unmounting mounted directories in \"/var/lib/kubelet\"");
    println!(
        "[reset] Deleting contents of directories: [{}]",
        dirs.join(" ")
    );
    for dir in &dirs {
        if let Err(e) = clean_dir(root, dir) {
            eprintln!("[reset] Failed to delete contents of {dir:?} directory: {e}");
        }
    }
    let files = files(version);
    println!("[reset] Deleting files: [{}]", files.join(" "));
    for f in files {
        match std::fs::remove_file(root.path(f)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                eprintln!(
                    "[reset] Failed to remove file: {f:?} [{}]",
                    crate::fsroot::go_path_error("remove", f, &e)
                );
            }
            _ => {}
        }
    }
    print!("{FOOTER}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_contents_but_keeps_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::at(dir.path());
        std::fs::create_dir_all(root.path("/var/lib/kubelet/pki")).unwrap();
        std::fs::write(root.path("/var/lib/kubelet/config.yaml"), "x").unwrap();
        std::os::unix::fs::symlink("nowhere", root.path("/var/lib/kubelet/pki/link.pem")).unwrap();
        clean_dir(&root, "/var/lib/kubelet").unwrap();
        assert!(root.path("/var/lib/kubelet").is_dir());
        assert_eq!(
            std::fs::read_dir(root.path("/var/lib/kubelet"))
                .unwrap()
                .count(),
            0
        );
        clean_dir(&root, "/does/not/exist").unwrap();
    }
}
