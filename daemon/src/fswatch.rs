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

/// How often a wait (and the configuration watch) looks at its files when inotify is not
/// available: a fix dropped in is still acted on within a second.
pub const LOOK_WHILE_WAITING: Duration = Duration::from_millis(500);

/// Said once per process: every watch after the first falls back the same way.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Which changes wake a watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changes {
    /// Entries created, written, renamed into place or removed.
    Contents,
    /// Those, and changes of mode or owner (a secret's file made 0600 is a fix).
    ContentsAndModes,
}

/// Watches paths (directories, or a file or socket that may not exist yet) for
/// changes.
pub struct DirWatch {
    mode: Mode,
}

enum Mode {
    Events(inotify::EventStream<Vec<u8>>),
    Poll {
        paths: Vec<PathBuf>,
        every: tokio::time::Interval,
        seen: u64,
    },
    Nothing,
}

impl DirWatch {
    /// Watches each of `paths`: a directory's entries, or through the nearest existing
    /// ancestor directory a path that is not one or does not exist yet (a socket
    /// appears only when its daemon starts). Looks every `poll_every` instead when
    /// inotify is not available.
    pub fn new(paths: &[PathBuf], changes: Changes, poll_every: Duration) -> Self {
        if paths.is_empty() {
            return Self {
                mode: Mode::Nothing,
            };
        }
        match events(paths, changes) {
            Ok(stream) => Self {
                mode: Mode::Events(stream),
            },
            Err(e) => {
                if !WARNED.swap(true, Ordering::Relaxed) {
                    warn!(
                        "cannot watch files with inotify ({}); looking at them every 50 ms to 10 s instead, as each wait needs",
                        why_unavailable(&e)
                    );
                }
                Self::polling(paths, poll_every)
            }
        }
    }

    /// Looks at `paths` every `every`, without inotify.
    pub fn polling(paths: &[PathBuf], every: Duration) -> Self {
        let paths = paths.to_vec();
        let seen = fingerprint(&paths);
        // An interval, not a sleep per call: a caller's select! that wakes for other
        // reasons more often than `every` must not keep restarting the look's clock.
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            mode: Mode::Poll { paths, every, seen },
        }
    }

    /// Resolves at the next change; never when nothing is watched. Cancel-safe.
    pub async fn changed(&mut self) {
        match &mut self.mode {
            Mode::Events(stream) => {
                if stream.next().await.is_none() {
                    std::future::pending::<()>().await;
                }
            }
            Mode::Poll { paths, every, seen } => loop {
                every.tick().await;
                let now = fingerprint(paths);
                if now != *seen {
                    *seen = now;
                    return;
                }
            },
            Mode::Nothing => std::future::pending().await,
        }
    }

    /// [`DirWatch::changed`], then until `quiet` passes without another change: an
    /// editor's write, rename and chmod, or a file removed and written anew, are one
    /// change, read once and whole.
    pub async fn settled(&mut self, quiet: Duration) {
        self.changed().await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(quiet) => return,
                _ = self.changed() => {}
            }
        }
    }
}

fn events(paths: &[PathBuf], changes: Changes) -> std::io::Result<inotify::EventStream<Vec<u8>>> {
    let inotify = inotify::Inotify::init()?;
    let mut mask = inotify::WatchMask::CREATE
        | inotify::WatchMask::CLOSE_WRITE
        | inotify::WatchMask::MOVED_TO
        | inotify::WatchMask::DELETE;
    if changes == Changes::ContentsAndModes {
        mask |= inotify::WatchMask::ATTRIB;
    }
    for path in paths {
        let Some(dir) = path.ancestors().find(|d| d.is_dir()) else {
            continue;
        };
        match inotify.watches().add(dir, mask) {
            Ok(_) => {}
            // Removed between the look and the watch: not watched, and the caller's
            // own pace looks again.
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

/// Files up to this size are read whole by the look: a rewrite of the same size within
/// one tick of the file system's clock (a token file is always 23 bytes) still shows.
const READ_WHOLE: u64 = 64 * 1024;

/// What a change would alter: each directory's entries, or the path itself when it is
/// not a directory, with size, times, inode, mode, owner and (small files) contents,
/// or that it does not exist.
fn fingerprint(paths: &[PathBuf]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for path in paths {
        path.hash(&mut hasher);
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                let mut entries: Vec<_> = match std::fs::read_dir(path) {
                    Ok(entries) => entries.filter_map(Result::ok).map(|e| e.path()).collect(),
                    Err(_) => Vec::new(),
                };
                entries.sort();
                for entry in entries {
                    stat_into(&entry, &mut hasher);
                }
            }
            Ok(_) => stat_into(path, &mut hasher),
            Err(_) => "missing".hash(&mut hasher),
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
        if m.is_file() && m.len() <= READ_WHOLE {
            std::fs::read(path).unwrap_or_default().hash(hasher);
        }
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
        std::fs::write(&file, "cc").unwrap();
        assert!(
            changes_within(&mut watch, Duration::from_secs(10)).await,
            "same size"
        );
        let tmp_file = dir.join(".token.tmp");
        std::fs::write(&tmp_file, "dd").unwrap();
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
    async fn polling_sees_a_socket_path_appear() {
        let tmp = tempfile::tempdir().unwrap();
        let socket = tmp.path().join("containerd.sock");
        let mut watch = DirWatch::polling(std::slice::from_ref(&socket), Duration::from_millis(5));
        assert!(!changes_within(&mut watch, Duration::from_millis(50)).await);
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert!(changes_within(&mut watch, Duration::from_secs(10)).await);
    }

    /// A caller's select! that wakes more often than the look's interval (a wait's
    /// pace) must not keep the look from happening.
    #[tokio::test]
    async fn polling_looks_even_when_each_wait_is_cut_short() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("token");
        let mut watch = DirWatch::polling(&[tmp.path().to_path_buf()], Duration::from_millis(50));
        std::fs::write(&file, "new").unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                tokio::select! {
                    _ = watch.changed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
        })
        .await;
        assert!(seen.is_ok());
    }

    #[tokio::test]
    async fn a_burst_of_changes_settles_into_one() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("token");
        let mut watch = DirWatch::new(
            &[tmp.path().to_path_buf()],
            Changes::ContentsAndModes,
            Duration::from_secs(3600),
        );
        assert!(matches!(watch.mode, Mode::Events(_)));
        std::fs::write(&file, "").unwrap();
        std::fs::remove_file(&file).unwrap();
        std::fs::write(&file, "abcdef.0123456789abcdef").unwrap();
        tokio::time::timeout(
            Duration::from_secs(10),
            watch.settled(Duration::from_millis(50)),
        )
        .await
        .unwrap();
        // All of the burst was taken in: nothing is left to wake the next wait.
        assert!(!changes_within(&mut watch, Duration::from_millis(100)).await);
    }

    #[tokio::test]
    async fn inotify_watches_a_missing_dir_through_its_ancestor() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run").join("containerd");
        let mut watch = DirWatch::new(
            std::slice::from_ref(&dir),
            Changes::Contents,
            Duration::from_secs(3600),
        );
        assert!(matches!(watch.mode, Mode::Events(_)));
        std::fs::create_dir(tmp.path().join("run")).unwrap();
        assert!(changes_within(&mut watch, Duration::from_secs(10)).await);
    }

    #[tokio::test]
    async fn contents_only_ignores_a_chmod() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("kubelet.conf");
        std::fs::write(&file, "x").unwrap();
        let mut watch = DirWatch::new(
            &[tmp.path().to_path_buf()],
            Changes::Contents,
            Duration::from_secs(3600),
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!changes_within(&mut watch, Duration::from_millis(100)).await);
    }

    #[tokio::test]
    async fn nothing_watched_never_changes() {
        let mut watch = DirWatch::new(&[], Changes::Contents, Duration::from_millis(1));
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
