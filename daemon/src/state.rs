//! Persistent state: where the agent got to, survives restarts and crashes.
//!
//! Written atomically (temporary file, fsync, rename, fsync of the directory) so a
//! crash mid-write leaves either the old or the new state, never a torn file.
//! It never holds the token: only phases, counters, failure classes and messages
//! built from errors that redact secrets by construction.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// What `state.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The phase last entered (see `agent::Phase`).
    pub phase: String,
    /// Join attempts made in this boot with this configuration.
    pub attempt: u32,
    /// Whether the node finished joining.
    pub joined: bool,
    /// The node name being joined.
    pub node_name: String,
    /// Failure class of the last failure (`FAILURE=` in the journal).
    pub failure: Option<String>,
    /// The last failure, with its cause and fix.
    pub last_error: Option<String>,
    /// When this state was written (RFC 3339, UTC).
    pub updated_at: String,
    /// The boot the attempt count belongs to: a new boot starts counting again.
    pub boot_id: String,
    /// The configuration fingerprint the attempt count belongs to.
    pub config_fingerprint: String,
    /// When the current phase was entered (RFC 3339, UTC).
    #[serde(default)]
    pub phase_since: String,
    /// When the node finished joining (RFC 3339, UTC).
    #[serde(default)]
    pub joined_since: Option<String>,
    /// From the agent's start to joined, in milliseconds.
    #[serde(default)]
    pub join_duration_ms: Option<u64>,
    /// The attempts of this join, oldest first (the most recent [`MAX_HISTORY`]): the
    /// story the Node's Events tell once the node has credentials to post them.
    #[serde(default)]
    pub history: Vec<AttemptRecord>,
    /// The kubeadm release the join ran with.
    #[serde(default)]
    pub kubeadm_version: Option<String>,
    /// Whether the join record (the Node's annotations and the Joined Event) is posted.
    #[serde(default)]
    pub join_recorded: bool,
    /// What the serve phase sees wrong now (the kubelet's certificate, the kubelet
    /// unit), each with the recovery that applies; empty when all is well.
    #[serde(default)]
    pub watch: Vec<String>,
}

/// One join attempt, as the state file keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The attempt number (per boot and configuration, as `attempt`).
    pub attempt: u32,
    /// When it started (RFC 3339, UTC).
    pub started_at: String,
    /// When it ended, if it did.
    #[serde(default)]
    pub ended_at: Option<String>,
    /// The failure class, if it failed.
    #[serde(default)]
    pub failure: Option<String>,
    /// The failure with its cause and fix (never a secret: failures redact them).
    #[serde(default)]
    pub message: Option<String>,
    /// Whether its Event is on the Node.
    #[serde(default)]
    pub posted: bool,
}

/// Far more than a state file with [`MAX_HISTORY`] attempts takes.
const MAX_STATE_BYTES: u64 = 4 << 20;

/// Attempts kept in the state file.
pub const MAX_HISTORY: usize = 50;

/// Now, as the state file writes times.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl State {
    /// Counts the next attempt; saturating: the count comes from a file, which may say
    /// anything.
    pub fn next_attempt(&mut self) -> u32 {
        self.attempt = self.attempt.saturating_add(1);
        self.attempt
    }

    /// Records that attempt `attempt` starts now.
    pub fn attempt_started(&mut self, attempt: u32) {
        self.history.push(AttemptRecord {
            attempt,
            started_at: now_rfc3339(),
            ..AttemptRecord::default()
        });
        if self.history.len() > MAX_HISTORY {
            let extra = self.history.len() - MAX_HISTORY;
            self.history.drain(..extra);
        }
    }

    /// Records how the latest attempt ended: `None` for joined.
    pub fn attempt_ended(&mut self, failure: Option<(&str, String)>) {
        if let Some(last) = self.history.last_mut()
            && last.ended_at.is_none()
        {
            last.ended_at = Some(now_rfc3339());
            if let Some((class, message)) = failure {
                last.failure = Some(class.to_string());
                last.message = Some(message);
            }
        }
    }
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// I/O on the state file.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid state JSON.
    #[error("{path} is not a valid state file ({source}); it is replaced by a fresh one")]
    Corrupt {
        /// The file.
        path: String,
        /// The cause.
        source: serde_json::Error,
    },
}

impl State {
    /// Reads the state; a missing file is a fresh state. The file is the agent's own,
    /// but read as untrusted: bounded, and its numbers never trusted to have room.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        let read = std::fs::File::open(path).and_then(|f| {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_STATE_BYTES), &mut bytes)
                .map(|_| bytes)
        });
        match read {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
                path: path.display().to_string(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(StateError::Io {
                action: "reading",
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Writes the state atomically, mode 0600.
    pub fn save(&mut self, path: &Path) -> Result<(), StateError> {
        self.updated_at = now_rfc3339();
        let io = |action: &'static str| {
            let path = path.display().to_string();
            move |source| StateError::Io {
                action,
                path,
                source,
            }
        };
        let dir = path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).map_err(io("creating the directory of"))?;
        let tmp = path.with_extension("json.tmp");
        // A temporary file left by a crash goes first; then it is created anew, never
        // opened through a symlink planted in its place (O_EXCL refuses any existing
        // entry, link or not).
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("removing the old temporary file of")(e)),
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .mode(0o600)
            .open(&tmp)
            .map_err(io("creating"))?;
        let mut bytes = serde_json::to_vec_pretty(self).expect("state serializes");
        bytes.push(b'\n');
        file.write_all(&bytes).map_err(io("writing"))?;
        file.sync_all().map_err(io("syncing"))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(io("replacing"))?;
        // The rename is durable only once the directory entry is on disk.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing the directory of"))?;
        Ok(())
    }
}

/// The current boot's id, so attempt counts start over on a new boot.
pub fn boot_id(proc_root: &Path) -> String {
    std::fs::read_to_string(proc_root.join("sys/kernel/random/boot_id"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trips_atomically_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        assert_eq!(State::load(&path).unwrap(), State::default());
        let mut s = State {
            phase: "join".into(),
            attempt: 2,
            node_name: "n1".into(),
            ..State::default()
        };
        s.save(&path).unwrap();
        let back = State::load(&path).unwrap();
        assert_eq!(back, s);
        assert!(!path.with_extension("json.tmp").exists());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_torn_temporary_file_does_not_replace_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut s = State {
            attempt: 1,
            ..State::default()
        };
        s.save(&path).unwrap();
        // A crash after writing part of the temp file, before the rename.
        std::fs::write(path.with_extension("json.tmp"), b"{\"phase\": \"jo").unwrap();
        assert_eq!(State::load(&path).unwrap().attempt, 1);
        s.attempt = 2;
        s.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap().attempt, 2);
    }

    #[test]
    fn attempts_are_kept_in_order_and_bounded() {
        let mut s = State::default();
        for n in 1..=(MAX_HISTORY as u32 + 5) {
            s.attempt_started(n);
            s.attempt_ended(Some(("hang", format!("attempt {n}"))));
        }
        s.attempt_started(99);
        s.attempt_ended(None);
        assert_eq!(s.history.len(), MAX_HISTORY);
        assert_eq!(s.history[0].attempt, 7);
        let last = s.history.last().unwrap();
        assert_eq!((last.attempt, last.failure.as_deref()), (99, None));
        assert!(last.ended_at.is_some());
        // An old state file without the new fields still loads.
        let old: State = serde_json::from_str(r#"{"phase":"join","attempt":2,"joined":false,"node_name":"n","failure":null,"last_error":null,"updated_at":"","boot_id":"","config_fingerprint":""}"#).unwrap();
        assert!(old.history.is_empty() && old.joined_since.is_none());
    }

    #[test]
    fn a_planted_symlink_is_not_followed_and_a_hostile_count_does_not_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, path.with_extension("json.tmp")).unwrap();
        let mut s = State::default();
        s.save(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(std::fs::symlink_metadata(path.with_extension("json.tmp")).is_err());
        std::fs::write(&path, format!(r#"{{"phase":"join","attempt":{},"joined":false,"node_name":"n","failure":null,"last_error":null,"updated_at":"","boot_id":"","config_fingerprint":""}}"#, u32::MAX)).unwrap();
        let mut loaded = State::load(&path).unwrap();
        assert_eq!(loaded.next_attempt(), u32::MAX);
        assert_eq!(loaded.next_attempt(), u32::MAX);
    }

    #[test]
    fn corrupt_state_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"not json").unwrap();
        assert!(matches!(
            State::load(&path),
            Err(StateError::Corrupt { .. })
        ));
    }
}
