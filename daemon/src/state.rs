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
    /// Reads the state; a missing file is a fresh state.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        match std::fs::read(path) {
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
        self.updated_at =
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
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
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
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
