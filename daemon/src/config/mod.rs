//! Configuration: TOML fragments merged in order, then validated once into `Settings`.
//!
//! Every field of a fragment is optional so that a later file can override one key of
//! an earlier one. Validation happens after the merge; the rest of the agent only sees
//! `Settings`, whose values are known good. Errors name the file, the key and the reason.

mod files;
mod fragments;
mod settings;
mod validate;

pub use settings::*;

use crate::paths::Paths;
use fragments::{Fragment, Merged, fragment_files, toml_error};
use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration problem: which file, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file at fault, when one is.
    pub file: Option<PathBuf>,
    /// The key at fault (`join.api_server`), or the line for syntax errors.
    pub key: String,
    /// What is wrong and how to fix it.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}: {}: {}", file.display(), self.key, self.reason),
            None => write!(f, "{}: {}", self.key, self.reason),
        }
    }
}

impl ConfigError {
    fn new(file: Option<&Path>, key: &str, reason: impl Into<String>) -> Self {
        Self {
            file: file.map(Path::to_path_buf),
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

/// Reads, merges and validates the configuration below `paths`.
pub fn load(paths: &Paths) -> Result<Settings, ConfigError> {
    let files = fragment_files(paths)?;
    let mut merged = Merged::default();
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    for file in &files {
        let (text, meta) = files::read(file, "(file)", files::FRAGMENT_LIMIT)?;
        let fragment: Fragment = toml::from_str(&text).map_err(|e| toml_error(file, &text, &e))?;
        if fragment.holds_token() {
            files::require_private(file, "join.token", &meta, "the bootstrap token")?;
        }
        digest.update(file.as_os_str().as_encoded_bytes());
        digest.update(text.as_bytes());
        merged.apply(fragment, file);
    }
    validate::validate(paths, merged, hex::encode(&digest.finish().as_ref()[..8]))
}

#[cfg(test)]
mod tests;
