//! Noticing changed files in a few directories: inotify when the kernel grants an
//! instance and its watches, and looking (readdir and stat) at a short interval when it
//! does not. A node's inotify instances are a per-user budget
//! (fs.inotify.max_user_instances, often 128) that kubelet, containerd and every pod
//! running as root draw on; when it is used up, a wait that relied on inotify alone
//! would never hear of a fix, and the handoff would never see kubeadm's files.

use futures_util::StreamExt;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::warn;

/// Said once per process: every watch after the first falls back the same way.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Watches directories for entries created, written, renamed into place, removed or
/// changed in mode or owner.
pub struct DirWatch {
    mode: Mode,
}

enum Mode {
    Events(inotify::EventStream<Vec<u8>>),
    Poll {
        dirs: Vec<PathBuf>,
        every: Duration,
        seen: u64,
    },
    Nothing,
}

impl DirWatch {
    /// Watches each of `dirs`, through its nearest existing ancestor while it does not
    /// exist (a socket's directory may appear only when its daemon starts); looks every
    /// `poll_every` instead when inotify is not available.
    pub fn new(dirs: &[PathBuf], poll_every: Duration) -> Self {
        if dirs.is_empty() {
            return Self {
                mode: Mode::Nothing,
            };
        }
        match events(dirs) {
            Ok(stream) => Self {
                mode: Mode::Events(stream),
            },
            Err(e) => {
                if !WARNED.swap(true, Ordering::Relaxed) {
                    warn!(
                        "cannot watch files with inotify ({}); looking for changes every {} instead",
                        why_unavailable(&e),
                        humantime::format_duration(poll_every)
                    );
                }
                Self::polling(dirs, poll_every)
            }
        }
    }

    /// Looks at `dirs` every `every`, without inotify.
    pub fn polling(dirs: &[PathBuf], every: Duration) -> Self {
        let dirs = dirs.to_vec();
        let seen = fingerprint(&dirs);
        Self {
            mode: Mode::Poll { dirs, every, seen },
        }
    }

    /// Resolves at the next change; never when nothing is watched.
    pub async fn changed(&mut self) {
        match &mut self.mode {
            Mode::Events(stream) => {
                if stream.next().await.is_none() {
                    std::future::pending::<()>().await;
                }
            }
            Mode::Poll { dirs, every, seen } => loop {
                tokio::time::sleep(*every).await;
                let now = fingerprint(dirs);
                if now != *seen {
                    *seen = now;
                    return;
                }
            },
            Mode::Nothing => std::future::pending().await,
        }
    }
}

fn events(dirs: &[PathBuf]) -> std::io::Result<inotify::EventStream<Vec<u8>>> {
    let inotify = inotify::Inotify::init()?;
    let mask = inotify::WatchMask::CREATE
        | inotify::WatchMask::CLOSE_WRITE
        | inotify::WatchMask::MOVED_TO
        | inotify::WatchMask::DELETE
        | inotify::WatchMask::ATTRIB;
    for dir in dirs {
        let Some(existing) = dir.ancestors().find(|d| d.is_dir()) else {
            continue;
        };
        match inotify.watches().add(existing, mask) {
            Ok(_) => {}
            // Gone between the look and the watch: its parent's events still come.
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    inotify.into_event_stream(vec![0u8; 4096])
}

/// The limit behind an inotify error, and how to raise it.
fn why_unavailable(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(nix::libc::EMFILE) => format!(
            "{e}: this user's inotify instances are used up (fs.inotify.max_user_instances); raise it with `sysctl -w fs.inotify.max_user_instances=8192` and a file in /etc/sysctl.d"
        ),
        Some(nix::libc::ENOSPC) => format!(
            "{e}: this user's inotify watches are used up (fs.inotify.max_user_watches); raise it with `sysctl -w fs.inotify.max_user_watches=524288` and a file in /etc/sysctl.d"
        ),
        _ => e.to_string(),
    }
}

/// What a change would alter: each directory's entries with their size, times, inode,
/// mode and owner, or that the directory does not exist.
fn fingerprint(dirs: &[PathBuf]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for dir in dirs {
        dir.hash(&mut hasher);
        let mut entries: Vec<_> = match std::fs::read_dir(dir) {
            Ok(entries) => entries.filter_map(Result::ok).map(|e| e.path()).collect(),
            Err(_) => {
                "missing".hash(&mut hasher);
                continue;
            }
        };
        entries.sort();
        for path in entries {
            stat_into(&path, &mut hasher);
        }
    }
    hasher.finish()
}

fn stat_into(path: &Path, hasher: &mut impl Hasher) {
    path.hash(hasher);
    // Through a symlink (kubelet's current client certificate is one), then the link.
    if let Ok(m) = std::fs::metadata(path).or_else(|_| std::fs::symlink_metadata(path)) {
        (
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        )
            .hash(hasher);
        (m.ino(), m.mode(), m.uid(), m.gid()).hash(hasher);
    }
    if let Ok(target) = std::fs::read_link(path) {
        target.hash(hasher);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn changes_within(watch: &mut DirWatch, limit: Duration) -> bool {
        tokio::time::timeout(limit, watch.changed()).await.is_ok()
    }

    #[tokio::test]
    async fn polling_sees_each_kind_of_change_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("etc");
        let file = dir.join("token");
        let mut watch = DirWatch::polling(std::slice::from_ref(&dir), Duration::from_millis(5));
        assert!(!changes_within(&mut watch, Duration::from_millis(100)).await);
        std::fs::create_dir(&dir).unwrap();
        assert!(
            changes_within(&mut watch, Duration::from_secs(10)).await,
            "created dir"
        );
        std::fs::write(&file, "a").unwrap();
        assert!(
            changes_within(&mut watch, Duration::from_secs(10)).await,
            "new file"
        );
        assert!(!changes_within(&mut watch, Duration::from_millis(100)).await);
        std::fs::write(&file, "bb").unwrap();
        assert!(
            changes_within(&mut watch, Duration::from_secs(10)).await,
            "rewritten"
        );
        let tmp_file = dir.join(".token.tmp");
        std::fs::write(&tmp_file, "cc").unwrap();
        std::fs::rename(&tmp_file, &file).unwrap();
        assert!(
            changes_within(&mut watch, Duration::from_secs(10)).await,
            "renamed"
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            changes_within(&mut watch, Duration::from_secs(10)).await,
            "chmod"
        );
        std::fs::remove_file(&file).unwrap();
        assert!(
            changes_within(&mut watch, Duration::from_secs(10)).await,
            "removed"
        );
        assert!(!changes_within(&mut watch, Duration::from_millis(100)).await);
    }

    #[tokio::test]
    async fn inotify_watches_a_missing_dir_through_its_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run").join("containerd");
        let mut watch = DirWatch::new(std::slice::from_ref(&dir), Duration::from_secs(3600));
        assert!(matches!(watch.mode, Mode::Events(_)));
        std::fs::create_dir(tmp.path().join("run")).unwrap();
        assert!(changes_within(&mut watch, Duration::from_secs(10)).await);
    }

    #[tokio::test]
    async fn nothing_watched_never_changes() {
        let mut watch = DirWatch::new(&[], Duration::from_millis(1));
        assert!(!changes_within(&mut watch, Duration::from_millis(50)).await);
    }

    #[test]
    fn the_exhausted_limit_is_named_with_its_fix() {
        let instances = why_unavailable(&std::io::Error::from_raw_os_error(nix::libc::EMFILE));
        assert!(
            instances.contains("fs.inotify.max_user_instances"),
            "{instances}"
        );
        assert!(instances.contains("sysctl -w"), "{instances}");
        let watches = why_unavailable(&std::io::Error::from_raw_os_error(nix::libc::ENOSPC));
        assert!(watches.contains("fs.inotify.max_user_watches"), "{watches}");
    }
}
