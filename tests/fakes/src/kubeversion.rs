//! Kubernetes release versions (`v1.29.7`): parsing and comparison.

use std::fmt;

use anyhow::{Result, bail};

/// A `vMAJOR.MINOR.PATCH` version (pre-release suffixes are not needed by the fakes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl KubeVersion {
    /// Parses `v1.29.7` (the leading `v` is required, as in upstream's version strings).
    pub fn parse(s: &str) -> Result<Self> {
        let Some(rest) = s.strip_prefix('v') else {
            bail!("version {s:?} must look like v1.29.7");
        };
        let parts: Vec<&str> = rest.split('.').collect();
        let nums: Option<Vec<u32>> = parts.iter().map(|p| p.parse().ok()).collect();
        match nums.as_deref() {
            Some([major, minor, patch]) => Ok(Self {
                major: *major,
                minor: *minor,
                patch: *patch,
            }),
            _ => bail!("version {s:?} must look like v1.29.7"),
        }
    }

    /// True if this version is at least `major.minor`.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_compares() {
        let v = KubeVersion::parse("v1.29.7").unwrap();
        assert_eq!(v.to_string(), "v1.29.7");
        assert!(v.at_least(1, 29) && !v.at_least(1, 31));
        assert!(KubeVersion::parse("1.29.7").is_err());
        assert!(KubeVersion::parse("v1.29").is_err());
        assert!(KubeVersion::parse("v1.x.0").is_err());
    }
}
