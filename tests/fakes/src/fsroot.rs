//! Where the fakes read and write "absolute" node paths.
//!
//! On a test node the fakes touch the real `/etc/kubernetes`, `/var/lib/kubelet`, `/proc`...
//! For host-side smoke tests `FAKE_K8S_ROOT=/tmp/x` moves every such path under `/tmp/x`,
//! while messages and file contents keep the node paths, so the output stays byte-identical.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The environment variable that prefixes every absolute path the node fakes use.
pub const ROOT_ENV: &str = "FAKE_K8S_ROOT";

/// Maps node paths (as upstream prints them) to the paths actually used for I/O.
#[derive(Debug, Clone, Default)]
pub struct Root {
    prefix: Option<PathBuf>,
}

impl Root {
    /// Reads `FAKE_K8S_ROOT`; unset or empty means the real root.
    pub fn from_env() -> Self {
        match std::env::var_os(ROOT_ENV) {
            Some(p) if !p.is_empty() => Self::at(PathBuf::from(p)),
            _ => Self::default(),
        }
    }

    /// A root at an explicit directory (tests).
    pub fn at(prefix: impl Into<PathBuf>) -> Self {
        Self {
            prefix: Some(prefix.into()),
        }
    }

    /// The prefix, if any (to hand on to a child fake).
    pub fn prefix(&self) -> Option<&Path> {
        self.prefix.as_deref()
    }

    /// The I/O path for a node path such as `/etc/kubernetes/kubelet.conf`.
    /// Relative paths are returned unchanged.
    pub fn path(&self, node_path: impl AsRef<Path>) -> PathBuf {
        let p = node_path.as_ref();
        match (&self.prefix, p.strip_prefix("/")) {
            (Some(prefix), Ok(rel)) => prefix.join(rel),
            _ => p.to_path_buf(),
        }
    }
}

/// Writes `data` to `path` atomically (temp file in the same directory, fsync, rename)
/// with `mode`, creating parent directories. Readers never see a half-written file,
/// which matters because the agent watches these files with inotify.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        // The mode passed to open() is filtered by the umask; set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", tmp.display()))?;
        f.write_all(data)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Appends one line to a log file, creating it and its directory.
pub fn append_line(path: &Path, line: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))
}

/// An errno in Go's words (`no such file or directory`, `connection refused`).
pub fn go_errno_text(err: &std::io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_lowercase(),
        None => err.to_string(),
    }
}

/// Words an I/O error like Go's `*PathError`: `open /x: no such file or directory`.
pub fn go_path_error(op: &str, path: &str, err: &std::io::Error) -> String {
    format!("{op} {path}: {}", go_errno_text(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_absolute_paths_only() {
        let root = Root::at("/tmp/r");
        assert_eq!(
            root.path("/etc/kubernetes/kubelet.conf"),
            PathBuf::from("/tmp/r/etc/kubernetes/kubelet.conf")
        );
        assert_eq!(root.path("rel/x"), PathBuf::from("rel/x"));
        assert_eq!(Root::default().path("/etc/x"), PathBuf::from("/etc/x"));
    }

    #[test]
    fn atomic_write_sets_exact_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/secret.conf");
        write_atomic(&p, b"hello", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"hello");
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
