//! Bootstrap tokens: `^([a-z0-9]{6})\.([a-z0-9]{16})$` (id.secret).

use std::fmt;

/// A syntactically valid bootstrap token. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    id: String,
    secret: String,
}

fn is_token_chars(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl BootstrapToken {
    /// Parses `id.secret`; `None` when the format is wrong (the caller words the error,
    /// and must not echo the input: it may be a near-miss of a real secret).
    pub fn parse(s: &str) -> Option<Self> {
        let (id, secret) = s.split_once('.')?;
        (is_token_chars(id, 6) && is_token_chars(secret, 16)).then(|| Self {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// Builds a token from its parts, checking both.
    pub fn from_parts(id: &str, secret: &str) -> Option<Self> {
        Self::parse(&format!("{id}.{secret}"))
    }

    /// The public token id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret half. Only for signing, HTTP auth and bootstrap-kubelet.conf.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// `id.secret`, for an `Authorization: Bearer` header or bootstrap-kubelet.conf.
    pub fn expose(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootstrapToken({}.<redacted>)", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_and_rejects_invalid() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        assert_eq!(t.id(), "abcdef");
        assert_eq!(t.secret(), "0123456789abcdef");
        for bad in [
            "",
            "abcdef",
            "abcdef.0123456789abcde",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdefg",
            "abcdef.0123456789abcdef.x",
            "abcdef:0123456789abcdef",
        ] {
            assert!(BootstrapToken::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn debug_hides_secret() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        assert!(!format!("{t:?}").contains("0123456789abcdef"));
    }
}
