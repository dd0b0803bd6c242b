//! kubelet's unit must hand it a kubeconfig. kubeadm's drop-in (10-kubeadm.conf) sets
//! `--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=...`;
//! a kubelet package installed without it runs in standalone mode after the join
//! ("kubeclient not set, assuming standalone kubelet", seed 001).

use super::Verdict;

/// The verdict from the texts of the unit file, its drop-ins and environment files.
pub fn verdict(unit: &str, texts: &[String]) -> Verdict {
    let names_kubeconfig = texts
        .iter()
        .flat_map(|t| t.lines())
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim_start().starts_with(';'))
        .any(|l| l.contains("--kubeconfig") || l.contains("--bootstrap-kubeconfig"));
    if names_kubeconfig {
        Verdict::Pass(format!("{unit} passes --kubeconfig/--bootstrap-kubeconfig"))
    } else {
        Verdict::Fail {
            reason: format!(
                "{unit} passes no --kubeconfig or --bootstrap-kubeconfig: after the join kubelet would run in standalone mode (\"kubeclient not set, assuming standalone kubelet\")"
            ),
            fix: "install kubeadm's kubelet drop-in (kubelet.service.d/10-kubeadm.conf, shipped with the kubeadm package)".into(),
        }
    }
}

/// kubelet must be started with a kubeconfig (kubeadm's drop-in passes
/// --bootstrap-kubeconfig and --kubeconfig), or after the join it runs standalone: the
/// unit file, its drop-ins and the environment files kubeadm's drop-in reads, judged.
pub async fn finding(
    systemd: &crate::systemd::Systemd,
    paths: &crate::paths::Paths,
    unit: &str,
) -> super::Finding {
    use std::path::{Path, PathBuf};
    let verdict = match systemd.unit_info(unit).await {
        Err(e) => super::Verdict::Warn {
            reason: e.to_string(),
            fix: "check that systemd answers on D-Bus".into(),
        },
        Ok(info) => {
            let mut files: Vec<PathBuf> = info
                .drop_in_paths
                .iter()
                .map(|p| paths.resolve(Path::new(p)))
                .collect();
            if !info.fragment_path.is_empty() {
                files.push(paths.resolve(Path::new(&info.fragment_path)));
            }
            // kubeadm's drop-in reads these environment files for extra flags.
            files.push(paths.at("/etc/default/kubelet"));
            files.push(paths.at("/etc/sysconfig/kubelet"));
            let texts: Vec<String> = files
                .iter()
                .filter_map(|f| std::fs::read_to_string(f).ok())
                .collect();
            verdict(unit, &texts)
        }
    };
    super::Finding {
        check: "kubelet-flags",
        verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_kubeadm_drop_in_flags_and_ignores_comments() {
        let dropin = "[Service]\nEnvironment=\"KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf\"\nExecStart=\nExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS\n";
        assert!(matches!(
            verdict("kubelet.service", &[dropin.into()]),
            Verdict::Pass(_)
        ));
        let bare =
            "[Service]\nExecStart=/usr/bin/kubelet\n# --kubeconfig=/etc/kubernetes/kubelet.conf\n";
        assert!(matches!(
            verdict("kubelet.service", &[bare.into()]),
            Verdict::Fail { .. }
        ));
        assert!(matches!(
            verdict("kubelet.service", &[]),
            Verdict::Fail { .. }
        ));
    }
}
