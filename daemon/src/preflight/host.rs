//! Memory, disk and swap.

use super::{Finding, Verdict};
use crate::paths::Paths;

fn meminfo_kib(paths: &Paths, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(paths.proc().join("meminfo")).ok()?;
    parse_meminfo(&text, key)
}

/// `MemTotal:  16384 kB` → 16384.
pub fn parse_meminfo(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Total memory against `preflight.min_memory_mib`.
pub fn memory(paths: &Paths, min_mib: u64) -> Finding {
    let verdict = match meminfo_kib(paths, "MemTotal") {
        None => Verdict::Warn {
            reason: "cannot read MemTotal from /proc/meminfo".into(),
            fix: "check that /proc is mounted".into(),
        },
        Some(kib) if kib / 1024 < min_mib => Verdict::Fail {
            reason: format!(
                "{} MiB of memory, less than the {min_mib} MiB required",
                kib / 1024
            ),
            fix: "give the machine more memory, or lower preflight.min_memory_mib".into(),
        },
        Some(kib) => Verdict::Pass(format!("{} MiB", kib / 1024)),
    };
    Finding {
        check: "memory",
        verdict,
    }
}

/// Free space under /var/lib (images, kubelet state) against `preflight.min_disk_free_mib`.
pub fn disk(paths: &Paths, min_mib: u64) -> Finding {
    let dir = paths.at("/var/lib");
    let verdict = match nix::sys::statvfs::statvfs(&dir) {
        Err(e) => Verdict::Warn {
            reason: format!("cannot stat {}: {e}", dir.display()),
            fix: "check the file system".into(),
        },
        Ok(st) => {
            let free_mib = st.blocks_available() * st.fragment_size() / (1024 * 1024);
            if free_mib < min_mib {
                Verdict::Fail {
                    reason: format!("{free_mib} MiB free under /var/lib, less than {min_mib} MiB"),
                    fix: "free or add disk space, or lower preflight.min_disk_free_mib".into(),
                }
            } else {
                Verdict::Pass(format!("{free_mib} MiB free under /var/lib"))
            }
        }
    };
    Finding {
        check: "disk",
        verdict,
    }
}

/// Swap on: kubelet refuses to start unless configured for it (kubeadm only warns).
pub fn swap(paths: &Paths) -> Finding {
    let verdict = match std::fs::read_to_string(paths.proc().join("swaps")) {
        Ok(text) if text.lines().skip(1).any(|l| !l.trim().is_empty()) => Verdict::Warn {
            reason: "swap is on; kubelet fails to start unless its configuration allows swap (failSwapOn: false)".into(),
            fix: "swapoff -a and remove swap from /etc/fstab, or configure the kubelet for swap".into(),
        },
        Ok(_) => Verdict::Pass("no swap".into()),
        Err(e) => Verdict::Warn {
            reason: format!("cannot read /proc/swaps: {e}"),
            fix: "check that /proc is mounted".into(),
        },
    };
    Finding {
        check: "swap",
        verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        for (p, text) in files {
            let path = paths.at(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        std::fs::create_dir_all(paths.at("/var/lib")).unwrap();
        (dir, paths)
    }

    #[test]
    fn memory_thresholds() {
        let (_d, paths) = root_with(&[(
            "/proc/meminfo",
            "MemTotal:        2048000 kB\nMemFree: 1 kB\n",
        )]);
        assert!(matches!(memory(&paths, 1024).verdict, Verdict::Pass(_)));
        assert!(matches!(memory(&paths, 4096).verdict, Verdict::Fail { .. }));
        let (_d, paths) = root_with(&[("/proc/meminfo", "garbage")]);
        assert!(matches!(memory(&paths, 1024).verdict, Verdict::Warn { .. }));
    }

    #[test]
    fn swap_is_a_warning() {
        let (_d, paths) = root_with(&[(
            "/proc/swaps",
            "Filename Type Size Used Priority\n/swapfile file 1024 0 -2\n",
        )]);
        assert!(matches!(swap(&paths).verdict, Verdict::Warn { .. }));
        let (_d, paths) = root_with(&[("/proc/swaps", "Filename Type Size Used Priority\n")]);
        assert!(matches!(swap(&paths).verdict, Verdict::Pass(_)));
    }

    #[test]
    fn disk_uses_the_real_file_system() {
        let (_d, paths) = root_with(&[]);
        assert!(matches!(disk(&paths, 1).verdict, Verdict::Pass(_)));
        assert!(matches!(
            disk(&paths, u64::MAX / (1 << 21)).verdict,
            Verdict::Fail { .. }
        ));
    }
}
