//! Waiting on files: re-check whenever something in the watched directories is
//! created, written or renamed into place (inotify, or a close look when inotify is not
//! available), until the check passes or the deadline comes. The check also runs once
//! up front, for files already there.

use crate::fswatch::{Changes, DirWatch};
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

/// How often to look when inotify is not available: kubeadm restarts the kubelet
/// moments after writing its last file, and the gate must be lifted by then.
const LOOK_WITHOUT_INOTIFY: Duration = Duration::from_millis(50);

/// Result of one check: done, or not yet with the reason.
pub enum Check<T, E> {
    /// Passed.
    Ready(T),
    /// Not yet: why.
    NotYet(E),
}

/// Calls `check` now and after every file event in `dirs` (created if missing)
/// until it is `Ready` or `deadline` passes; returns the last reason on timeout.
pub async fn until<T, E>(
    dirs: &[PathBuf],
    deadline: Instant,
    mut check: impl FnMut() -> Check<T, E>,
) -> std::io::Result<Result<T, E>> {
    for dir in dirs {
        std::fs::create_dir_all(dir)?;
    }
    let mut events = DirWatch::new(dirs, Changes::ContentsAndModes, LOOK_WITHOUT_INOTIFY);
    loop {
        let reason = match check() {
            Check::Ready(value) => return Ok(Ok(value)),
            Check::NotYet(reason) => reason,
        };
        tokio::select! {
            _ = events.changed() => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(Err(reason)),
        }
    }
}
