//! Rereading the configuration while the agent waits: SIGHUP, or file events in the
//! configuration directories and the token file's directory. A dead bootstrap token is
//! only fixed by the operator dropping in a new one; the agent notices without a restart.

use crate::config::{self, Settings, TokenSource};
use crate::paths::{ConfigSource, Paths};
use std::path::PathBuf;
use std::time::Duration;
use tracing::{info, warn};

static RELOAD: std::sync::OnceLock<tokio::sync::Notify> = std::sync::OnceLock::new();

/// Asks a waiting agent to reread its configuration now (SIGHUP).
pub fn request_reload() {
    RELOAD.get_or_init(tokio::sync::Notify::new).notify_one();
}

/// Resolves at the next SIGHUP.
pub async fn reload_requested() {
    RELOAD
        .get_or_init(tokio::sync::Notify::new)
        .notified()
        .await;
}

/// inotify on the directories that exist (missing ones are skipped, not created).
fn watch_dirs(dirs: &[PathBuf]) -> Option<inotify::EventStream<Vec<u8>>> {
    let inotify = inotify::Inotify::init().ok()?;
    let mask = inotify::WatchMask::CREATE
        | inotify::WatchMask::CLOSE_WRITE
        | inotify::WatchMask::MOVED_TO
        | inotify::WatchMask::DELETE
        | inotify::WatchMask::ATTRIB;
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        let _ = inotify.watches().add(dir, mask);
    }
    inotify.into_event_stream(vec![0u8; 4096]).ok()
}

async fn next_event(events: &mut Option<inotify::EventStream<Vec<u8>>>) {
    use futures_util::StreamExt;
    match events {
        Some(stream) => {
            let _ = stream.next().await;
        }
        None => std::future::pending().await,
    }
}

/// Returns once the configuration names a different token than the dead one.
pub async fn wait_for_new_token(paths: &Paths, s: &Settings) {
    let dead = s.join.token.clone();
    let mut dirs: Vec<PathBuf> = paths
        .config_sources()
        .into_iter()
        .map(|source| match source {
            ConfigSource::Dir(d) => d,
            ConfigSource::File(f) => f.parent().map(PathBuf::from).unwrap_or(f),
        })
        .collect();
    if let TokenSource::File(file) = &s.join.token_source
        && let Some(parent) = paths.resolve(file).parent()
    {
        dirs.push(parent.to_path_buf());
    }
    let mut events = watch_dirs(&dirs);
    let mut last_error = String::new();
    loop {
        tokio::select! {
            _ = next_event(&mut events) => {}
            _ = reload_requested() => info!("SIGHUP: rereading the configuration"),
            // Editors and config management may write where no watch reaches.
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        match config::load(paths) {
            Ok(fresh) if fresh.join.token != dead => {
                info!(
                    "a new bootstrap token (id \"{}\") is configured: joining again",
                    fresh.join.token.id()
                );
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let text = e.to_string();
                if text != last_error {
                    warn!(
                        failure = "config-invalid",
                        "the changed configuration is not valid, still waiting: {text}"
                    );
                    last_error = text;
                }
            }
        }
    }
}
