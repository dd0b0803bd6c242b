//! Secrets that must never be printed: the bootstrap token's secret half.

use std::fmt;

/// A string that redacts itself in `Debug` and `Display`, so a secret cannot reach a
/// log line, an error message or the state file by accident.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: call only where it is written to a 0600 file or used as a key.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Replaces every occurrence of the secret in `text` (for forwarded kubeadm output).
    pub fn redact(&self, text: &str) -> String {
        if self.0.is_empty() || !text.contains(&self.0) {
            return text.to_string();
        }
        text.replace(&self.0, "<redacted>")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A kubeadm bootstrap token, `<id>.<secret>`: the id is public (it names the token in
/// cluster-info and in logs), the secret is not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapToken {
    id: String,
    secret: Secret,
}

/// Why a string is not a bootstrap token. Never contains the string itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "not a bootstrap token: expected \"<6 characters>.<16 characters>\" of [a-z0-9] (the format `kubeadm token create` prints)"
)]
pub struct TokenFormatError;

impl BootstrapToken {
    /// Parses `^([a-z0-9]{6})\.([a-z0-9]{16})$`, kubeadm's token format.
    pub fn parse(text: &str) -> Result<Self, TokenFormatError> {
        let text = text.trim();
        let (id, secret) = text.split_once('.').ok_or(TokenFormatError)?;
        let valid = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        if !valid(id, 6) || !valid(secret, 16) {
            return Err(TokenFormatError);
        }
        Ok(Self {
            id: id.to_string(),
            secret: Secret::new(secret),
        })
    }

    /// The public token id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret half.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// The whole token, for the 0600 JoinConfiguration only.
    pub fn expose_full(&self) -> String {
        format!("{}.{}", self.id, self.secret.expose())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubeadm_tokens() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef\n").unwrap();
        assert_eq!(t.id(), "abcdef");
        assert_eq!(t.secret().expose(), "0123456789abcdef");
        assert_eq!(t.expose_full(), "abcdef.0123456789abcdef");
    }

    #[test]
    fn rejects_malformed_tokens_without_echoing_them() {
        for bad in [
            "",
            "abcdef",
            "abcdef.0123456789abcde",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdefg",
            "abcdef.0123456789abcdef.x",
            "abc-ef.0123456789abcdef",
        ] {
            let err = BootstrapToken::parse(bad).unwrap_err();
            assert!(!err.to_string().contains("0123456789"));
        }
    }

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        assert!(!format!("{t:?}").contains("0123456789abcdef"));
        assert_eq!(t.secret().to_string(), "<redacted>");
        assert_eq!(
            t.secret().redact("token: abcdef.0123456789abcdef"),
            "token: abcdef.<redacted>"
        );
    }
}
