//! The real-Kubernetes tier: kubeadm, kubelet, kubectl, kube-apiserver and
//! kube-controller-manager v1.20.2 built from Debian bookworm's source package
//! (`tests/real/build-kubernetes.sh`), a real control plane on the node's network
//! namespace ([`control_plane::RealControlPlane`]) and a node image with real kubeadm and
//! kubelet ([`node_image`]). See `tests/real/README.md` for what it proves and the facts
//! measured with it.

use crate::paths;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

pub mod agent;
pub mod artifacts;
pub mod control_plane;
pub mod node_image;
pub mod timed;

pub use control_plane::RealControlPlane;

/// The Kubernetes version the tier builds and runs.
pub const VERSION: &str = "v1.20.2";

/// `tests/real/` in the checkout.
pub fn real_dir() -> PathBuf {
    paths::workspace_root().join("tests/real")
}

/// The directory of the built binaries: `$KJA_REAL_K8S_DIR` if set, else the cached output
/// of `tests/real/build-kubernetes.sh`, which is run (and builds, about 16-30 minutes, the
/// first time for a recipe) if needed. Serialized in this process; the script itself holds
/// a lock across processes.
pub fn binaries_dir() -> Result<PathBuf> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    if let Some(dir) = DIR.get() {
        return Ok(dir.clone());
    }
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = DIR.get() {
        return Ok(dir.clone());
    }
    let dir = match std::env::var_os("KJA_REAL_K8S_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => build()?,
    };
    for bin in [
        "kubeadm",
        "kubelet",
        "kubectl",
        "kube-apiserver",
        "kube-controller-manager",
    ] {
        paths::require_file(
            &dir.join(bin),
            "build the real binaries: tests/real/build-kubernetes.sh",
        )?;
    }
    Ok(DIR.get_or_init(|| dir).clone())
}

/// One built binary (`kubeadm`, `kubelet`, `kubectl`, `kube-apiserver`,
/// `kube-controller-manager`).
pub fn bin(name: &str) -> Result<PathBuf> {
    Ok(binaries_dir()?.join(name))
}

fn build() -> Result<PathBuf> {
    let script = real_dir().join("build-kubernetes.sh");
    eprintln!(
        "kja-e2e: {} (seconds when cached; a first build takes 16-30 minutes)",
        script.display()
    );
    // stderr goes through: the script reports its steps and where its log is.
    let out = Command::new(&script)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}); its messages are above",
            script.display(),
            out.status
        );
    }
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    if path.is_empty() || !Path::new(&path).join(".complete").exists() {
        bail!("{} printed no complete output directory", script.display());
    }
    Ok(PathBuf::from(path))
}
