//! Value checks shared by the sections: durations, bounded integers, node names.

use super::super::ConfigError;
use super::super::fragments::Sourced;
use std::time::Duration;

/// The longest duration any setting may have.
pub const LONGEST: Duration = Duration::from_secs(366 * 24 * 3600);

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
    // Far past any sensible wait, and far enough below what a deadline computed from
    // now can hold ("500000000000y" would overflow it).
    if d > LONGEST {
        return Err(ConfigError::new(
            file,
            key,
            format!(
                "{text:?} is longer than the longest duration the agent takes ({})",
                humantime::format_duration(LONGEST)
            ),
        ));
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
