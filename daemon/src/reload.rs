//! Noticing a changed configuration while the agent waits: file events in the
//! configuration directories and in the directories of the token and certificate-key
//! files (inotify), or SIGHUP. A fix dropped in (a new token, a corrected fragment) is
//! picked up at once, without a restart.

use crate::config::{self, ControlPlaneSettings, Settings, TokenSource};
use crate::fswatch::{Changes, DirWatch, LOOK_WHILE_WAITING};
use crate::paths::{ConfigSource, Paths};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{info, warn};

static RELOAD: std::sync::OnceLock<tokio::sync::Notify> = std::sync::OnceLock::new();

fn sighup() -> &'static tokio::sync::Notify {
    RELOAD.get_or_init(tokio::sync::Notify::new)
}

/// Asks a waiting agent to reread its configuration now (SIGHUP).
pub fn request_reload() {
    sighup().notify_one();
}

/// An editor's write, rename and chmod, or a file removed and written anew, are one
/// change: read once this long after the last of its events.
const SETTLE: Duration = Duration::from_millis(20);

/// Editors and configuration management may write where no watch reaches (a directory
/// created after the watch began, a bind mount): look anyway, this seldom.
const SAFETY_LOOK: Duration = Duration::from_secs(30);

/// Watches the configuration the agent runs with for changes.
pub struct ConfigWatch<'a> {
    paths: &'a Paths,
    current: &'a Settings,
    events: DirWatch,
    last_error: String,
    /// SIGHUP's notification (the process-wide one; tests give each watch its own).
    signal: &'static tokio::sync::Notify,
}

impl<'a> ConfigWatch<'a> {
    /// Starts watching every place `current` was read from.
    pub fn new(paths: &'a Paths, current: &'a Settings) -> Self {
        Self {
            paths,
            current,
            events: DirWatch::new(
                &watched_dirs(paths, current),
                Changes::ContentsAndModes,
                LOOK_WHILE_WAITING,
            ),
            last_error: String::new(),
            signal: sighup(),
        }
    }

    /// Resolves with the new settings once the configuration changed and is valid, or
    /// with `None` at a SIGHUP that changed nothing (a request to look again now). An
    /// invalid change is reported once and waited past: the agent keeps what it has.
    pub async fn next(&mut self) -> Option<Box<Settings>> {
        loop {
            let signalled = tokio::select! {
                _ = self.events.settled(SETTLE) => false,
                _ = self.signal.notified() => true,
                _ = tokio::time::sleep(SAFETY_LOOK) => false,
            };
            if signalled {
                info!("SIGHUP: rereading the configuration");
            }
            match config::load(self.paths) {
                Ok(fresh) if !same(self.current, &fresh) => return Some(Box::new(fresh)),
                Ok(_) => {}
                Err(e) => {
                    let text = e.to_string();
                    if text != self.last_error {
                        warn!(
                            failure = "config-invalid",
                            "the changed configuration is not valid, still using the one loaded before: {text}"
                        );
                        // `systemctl status` shows what holds the wait up now.
                        crate::telemetry::notify_status(&format!(
                            "waiting with the configuration loaded before; the changed one is not valid: {text}"
                        ));
                        self.last_error = text;
                    }
                }
            }
            if signalled {
                return None;
            }
        }
    }
}

/// The same files with the same content, the same token and certificate key.
pub fn same(a: &Settings, b: &Settings) -> bool {
    let key = |s: &Settings| {
        s.join
            .control_plane
            .as_ref()
            .map(|c: &ControlPlaneSettings| c.certificate_key.clone())
    };
    a.fingerprint == b.fingerprint && a.join.token == b.join.token && key(a) == key(b)
}

/// The configuration directories, and the directories of the files holding secrets;
/// a directory that does not exist yet is watched through its parent.
fn watched_dirs(paths: &Paths, s: &Settings) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = paths
        .config_sources()
        .into_iter()
        .map(|source| match source {
            ConfigSource::Dir(d) => d,
            ConfigSource::File(f) => f.parent().map(PathBuf::from).unwrap_or(f),
        })
        .collect();
    if let TokenSource::File(file) = &s.join.token_source {
        dirs.extend(paths.resolve(file).parent().map(Path::to_path_buf));
    }
    if let Some(cp) = &s.join.control_plane {
        dirs.extend(
            paths
                .resolve(&cp.certificate_key_file)
                .parent()
                .map(Path::to_path_buf),
        );
    }
    // The parent of one that does not exist yet, and only the parent: a watch on
    // /usr/lib would wake at every package upgrade.
    let mut existing = Vec::new();
    for dir in dirs {
        let dir = if dir.is_dir() {
            dir
        } else {
            match dir.parent() {
                Some(parent) if parent.is_dir() => parent.to_path_buf(),
                _ => continue,
            }
        };
        if !existing.contains(&dir) {
            existing.push(dir);
        }
    }
    existing
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn write_private(path: &Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn node() -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        write_private(
            &paths.at("/etc/kube-join-agent/config.d/50-join.toml"),
            &format!(
                "[join]\napi_server = \"10.0.0.10:6443\"\ntoken_file = \"/etc/kube-join-agent/token\"\nca_cert_hashes = [\"{PIN}\"]\nnode_name = \"n1\"\n"
            ),
        );
        write_private(
            &paths.at("/etc/kube-join-agent/token"),
            "abcdef.0123456789abcdef\n",
        );
        (dir, paths)
    }

    /// The next change.
    async fn next_change(watch: &mut ConfigWatch<'_>) -> Box<Settings> {
        loop {
            if let Some(fresh) = watch.next().await {
                return fresh;
            }
        }
    }

    #[tokio::test]
    async fn a_new_token_file_is_seen_at_once() {
        let (_dir, paths) = node();
        let current = config::load(&paths).unwrap();
        let mut watch = ConfigWatch::new(&paths, &current);
        let writer = paths.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            // Unchanged content first: not a change.
            write_private(
                &writer.at("/etc/kube-join-agent/token"),
                "abcdef.0123456789abcdef\n",
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            write_private(
                &writer.at("/etc/kube-join-agent/token"),
                "ghijkl.ghijklmnopqrstuv\n",
            );
        });
        let started = std::time::Instant::now();
        let fresh = tokio::time::timeout(Duration::from_secs(10), next_change(&mut watch))
            .await
            .expect("the change was seen");
        assert_eq!(fresh.join.token.id(), "ghijkl");
        assert!(
            started.elapsed() < SAFETY_LOOK,
            "seen by the safety look only"
        );
    }

    #[tokio::test]
    async fn an_invalid_change_is_waited_past_and_a_valid_one_taken() {
        let (_dir, paths) = node();
        let current = config::load(&paths).unwrap();
        let mut watch = ConfigWatch::new(&paths, &current);
        let writer = paths.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            write_private(
                &writer.at("/etc/kube-join-agent/config.d/60-bad.toml"),
                "[join]\nnode_name = \"Not Valid\"\n",
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            write_private(
                &writer.at("/etc/kube-join-agent/config.d/60-bad.toml"),
                "[join]\nnode_name = \"n2\"\n",
            );
        });
        let fresh = tokio::time::timeout(Duration::from_secs(10), next_change(&mut watch))
            .await
            .expect("the change was seen");
        assert_eq!(fresh.join.node_name, "n2");
    }

    #[tokio::test]
    async fn sighup_without_a_change_asks_for_a_look() {
        let (_dir, paths) = node();
        let current = config::load(&paths).unwrap();
        // A signal of its own: tests run in parallel, and the process-wide one would
        // wake whichever watch waits first.
        let mut watch = ConfigWatch::new(&paths, &current);
        let signal: &'static tokio::sync::Notify = Box::leak(Box::new(tokio::sync::Notify::new()));
        watch.signal = signal;
        signal.notify_one();
        let woke = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("SIGHUP woke the watch");
        assert!(woke.is_none());
    }
}
