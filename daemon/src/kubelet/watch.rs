//! Waiting on files with inotify: re-check whenever something in the watched
//! directories is created, written or renamed into place, until the check passes or
//! the deadline comes. The check also runs once up front, for files already there.

use futures_util::StreamExt;
use inotify::{Inotify, WatchMask};
use std::path::PathBuf;
use tokio::time::Instant;

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
    let inotify = Inotify::init()?;
    for dir in dirs {
        std::fs::create_dir_all(dir)?;
        inotify.watches().add(
            dir,
            WatchMask::CREATE
                | WatchMask::CLOSE_WRITE
                | WatchMask::MOVED_TO
                | WatchMask::DELETE
                | WatchMask::ATTRIB,
        )?;
    }
    let mut events = inotify.into_event_stream(vec![0u8; 4096])?;
    loop {
        let reason = match check() {
            Check::Ready(value) => return Ok(Ok(value)),
            Check::NotYet(reason) => reason,
        };
        tokio::select! {
            event = events.next() => {
                if event.is_none() {
                    return Ok(Err(reason));
                }
            }
            _ = tokio::time::sleep_until(deadline) => return Ok(Err(reason)),
        }
    }
}
