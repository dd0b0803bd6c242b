//! Value checks shared by the sections: durations, bounded integers, node names, and
//! private files (anything that holds a secret).

use super::super::ConfigError;
use super::super::fragments::Sourced;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// A file holding the token must belong to the agent's user (root) and be private.
pub fn check_private(file: &Path, key: &str) -> Result<(), ConfigError> {
    let meta = std::fs::metadata(file)
        .map_err(|e| ConfigError::new(Some(file), key, format!("cannot stat: {e}")))?;
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(ConfigError::new(
            Some(file),
            key,
            format!(
                "holds the bootstrap token but is owned by uid {}, not {uid}: chown root:root {}",
                meta.uid(),
                file.display()
            ),
        ));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::new(
            Some(file),
            key,
            format!(
                "holds the bootstrap token but is readable by group or others (mode {mode:04o}): chmod 600 {}",
                file.display()
            ),
        ));
    }
    Ok(())
}

pub fn duration(
    field: &Option<Sourced<String>>,
    key: &str,
    default: &str,
) -> Result<Duration, ConfigError> {
    let (text, file) = match field {
        Some(s) => (s.value.as_str(), Some(s.file.as_path())),
        None => (default, None),
    };
    let d = humantime::parse_duration(text).map_err(|e| {
        ConfigError::new(
            file,
            key,
            format!(
                "{text:?} is not a duration ({e}); write it like \"90s\", \"5m\" or \"1h 30m\""
            ),
        )
    })?;
    if d.is_zero() {
        return Err(ConfigError::new(file, key, "must be greater than zero"));
    }
    Ok(d)
}

pub fn positive(
    field: &Option<Sourced<i64>>,
    key: &str,
    default: i64,
    max: i64,
) -> Result<u64, ConfigError> {
    match field {
        None => Ok(default as u64),
        Some(s) if (1..=max).contains(&s.value) => Ok(s.value as u64),
        Some(s) => Err(ConfigError::new(
            Some(&s.file),
            key,
            format!("{} is out of range: must be 1 to {max}", s.value),
        )),
    }
}

/// A Node name must be a DNS-1123 subdomain (what the API server accepts).
pub fn validate_node_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')"
        ))
    }
}
