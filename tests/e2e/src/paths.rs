//! Where things are: the workspace, the build outputs, the run and artifact directories,
//! and the cached node root. Every location can be overridden by an environment variable.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    root.canonicalize().unwrap_or(root)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` or `<workspace>/target`, absolute.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// Directory of the built binaries: `$KJA_BIN_DIR` or `<target>/debug`.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("KJA_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("debug"))
}

/// The agent binary to install: `$KJA_AGENT_BIN` or `<bin_dir>/kube-join-agent`.
pub fn agent_bin() -> PathBuf {
    std::env::var_os("KJA_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| bin_dir().join("kube-join-agent"))
}

/// The agent's unit file: `$KJA_AGENT_UNIT` or `<workspace>/systemd/kube-join-agent.service`.
pub fn agent_unit() -> PathBuf {
    std::env::var_os("KJA_AGENT_UNIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("systemd/kube-join-agent.service"))
}

/// The shipped default configuration (`config/config.toml`).
pub fn default_config() -> PathBuf {
    workspace_root().join("config/config.toml")
}

/// A binary of the fakes crate (`fake-apiserver`, `fake-kubeadm`, `fake-kubelet`).
pub fn fake_bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// The fakes' unit files (`tests/fakes/units/`).
pub fn fake_units_dir() -> PathBuf {
    workspace_root().join("tests/fakes/units")
}

/// Where nodes live while they run: `$KJA_E2E_RUN_DIR` or `<target>/e2e`.
pub fn run_dir() -> PathBuf {
    std::env::var_os("KJA_E2E_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("e2e"))
}

/// Where failed tests leave their evidence: `<target>/e2e-artifacts`.
pub fn artifacts_dir() -> PathBuf {
    target_dir().join("e2e-artifacts")
}

/// Fails with a build hint when a required input file is missing.
pub fn require_file(path: &Path, hint: &str) -> Result<()> {
    if path.is_file() {
        Ok(())
    } else {
        bail!("{} does not exist: {hint}", path.display())
    }
}

/// The cached Debian 12 node root, built once by `tests/node/build-root.sh` (or
/// `$KJA_NODE_ROOT` if set). Calls are serialized in this process and, with flock(1) on a
/// lock file in the cache, across processes, so parallel tests never debootstrap twice.
pub fn node_root() -> Result<PathBuf> {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    if let Some(root) = ROOT.get() {
        return Ok(root.clone());
    }
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(root) = ROOT.get() {
        return Ok(root.clone());
    }
    let root = match std::env::var_os("KJA_NODE_ROOT") {
        Some(root) => PathBuf::from(root),
        None => build_root()?,
    };
    if !root.join("sbin/init").exists() && !root.join("lib/systemd/systemd").exists() {
        bail!(
            "{} does not look like a node root (no systemd in it)",
            root.display()
        );
    }
    Ok(ROOT.get_or_init(|| root).clone())
}

fn build_root() -> Result<PathBuf> {
    let script = workspace_root().join("tests/node/build-root.sh");
    let cache = std::env::var_os("KJA_NODE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/kube-join-agent"));
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let lock = cache.join(".build-root.lock");
    let out = Command::new("flock")
        .arg(&lock)
        .arg(&script)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}):\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    if path.is_empty() {
        bail!("{} printed no path", script.display());
    }
    Ok(PathBuf::from(path))
}
