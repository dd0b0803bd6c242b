//! Authentication as the real API server chains it: a client certificate verified by
//! the TLS layer wins; otherwise a bearer token must be a valid bootstrap token (any
//! other token is a 401, even on paths anonymous users may read); otherwise anonymous.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use x509_parser::prelude::{FromDer, X509Certificate};

use super::knobs::Knobs;
use crate::token::BootstrapToken;

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User name, e.g. `system:node:n1` or `system:bootstrap:abcdef`.
    pub name: String,
    /// Groups.
    pub groups: Vec<String>,
}

impl User {
    /// `system:anonymous`.
    pub fn anonymous() -> Self {
        Self {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    /// Whether this is `system:anonymous` (no certificate, no bearer token).
    pub fn is_anonymous(&self) -> bool {
        self.name == "system:anonymous"
    }

    fn in_group(&self, g: &str) -> bool {
        self.groups.iter().any(|x| x == g)
    }

    /// Cluster admin (`system:masters`).
    pub fn is_admin(&self) -> bool {
        // kubeadm:cluster-admins is bound to cluster-admin since v1.29 (admin.conf's
        // group; super-admin.conf keeps system:masters).
        self.in_group("system:masters") || self.in_group("kubeadm:cluster-admins")
    }

    /// A bootstrap token user.
    pub fn is_bootstrapper(&self) -> bool {
        self.in_group("system:bootstrappers")
    }

    /// The node name for a node credential (`system:node:<name>` in `system:nodes`).
    pub fn node_name(&self) -> Option<&str> {
        if self.in_group("system:nodes") {
            self.name.strip_prefix("system:node:")
        } else {
            None
        }
    }
}

/// Why authentication failed (always a 401).
#[derive(Debug, PartialEq, Eq)]
pub struct Unauthorized;

/// The identity in a client certificate the TLS layer already verified against the CA.
pub fn user_from_cert(der: &[u8]) -> Option<User> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    let cn = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    groups.push("system:authenticated".into());
    Some(User { name: cn, groups })
}

/// kube-apiserver's `--authentication-token-success-cache-ttl` default.
pub const TOKEN_SUCCESS_TTL: Duration = Duration::from_secs(10);

/// The API server's cache of successful token authentications (tokencache, wrapped
/// around the token authenticators with a 10 s success TTL and no failure caching): a
/// token that authenticated keeps authenticating until its entry expires, even if it was
/// deleted or expired meanwhile. Measured with v1.20.2: a deleted token got 401 only
/// 8.98 s after `kubeadm token delete`.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: HashMap<String, (User, SystemTime)>,
}

impl TokenCache {
    /// The cached user for `token` at `now`, if its entry is still live.
    fn get(&mut self, token: &str, now: SystemTime) -> Option<User> {
        self.entries.retain(|_, (_, until)| now < *until);
        self.entries.get(token).map(|(u, _)| u.clone())
    }

    fn put(&mut self, token: &str, user: &User, now: SystemTime) {
        self.entries
            .insert(token.to_owned(), (user.clone(), now + TOKEN_SUCCESS_TTL));
    }
}

/// Authenticates one request (no token cache: tests and one-off checks).
pub fn authenticate(
    knobs: &Knobs,
    cert_user: Option<User>,
    authorization: Option<&str>,
) -> Result<User, Unauthorized> {
    authenticate_cached(
        knobs,
        cert_user,
        authorization,
        &mut TokenCache::default(),
        SystemTime::now(),
    )
}

/// Authenticates one request, a bearer token through the success cache.
pub fn authenticate_cached(
    knobs: &Knobs,
    cert_user: Option<User>,
    authorization: Option<&str>,
    cache: &mut TokenCache,
    now: SystemTime,
) -> Result<User, Unauthorized> {
    if let Some(u) = cert_user {
        return Ok(u);
    }
    let Some(header) = authorization else {
        return Ok(User::anonymous());
    };
    let raw = header
        .strip_prefix("Bearer ")
        .map(str::trim)
        .ok_or(Unauthorized)?;
    if let Some(u) = cache.get(raw, now) {
        return Ok(u);
    }
    let token = BootstrapToken::parse(raw).ok_or(Unauthorized)?;
    if !knobs.valid_token(&token) {
        return Err(Unauthorized);
    }
    let user = User {
        name: format!("system:bootstrap:{}", token.id()),
        groups: vec![
            "system:bootstrappers".into(),
            "system:bootstrappers:kubeadm:default-node-token".into(),
            "system:authenticated".into(),
        ],
    };
    cache.put(raw, &user, now);
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knobs() -> Knobs {
        Knobs::parse(r#"{"tokens":[{"id":"abcdef","secret":"0123456789abcdef"}]}"#).unwrap()
    }

    #[test]
    fn bootstrap_token_and_anonymous() {
        let u = authenticate(&knobs(), None, Some("Bearer abcdef.0123456789abcdef")).unwrap();
        assert_eq!(u.name, "system:bootstrap:abcdef");
        assert!(u.is_bootstrapper());
        assert_eq!(
            authenticate(&knobs(), None, None).unwrap(),
            User::anonymous()
        );
        for bad in [
            "Bearer abcdef.0123456789abcdee",
            "Bearer nonsense",
            "Basic eDp5",
        ] {
            assert_eq!(
                authenticate(&knobs(), None, Some(bad)),
                Err(Unauthorized),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_deleted_token_authenticates_until_its_cache_entry_expires() {
        let mut cache = TokenCache::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let good = "Bearer abcdef.0123456789abcdef";
        let u = authenticate_cached(&knobs(), None, Some(good), &mut cache, t0).unwrap();
        assert_eq!(u.name, "system:bootstrap:abcdef");
        // The token is deleted at +1 s: still authenticated until +10 s.
        let none = Knobs::parse("{}").unwrap();
        assert!(authenticate_cached(&none, None, Some(good), &mut cache, at(1000)).is_ok());
        assert!(authenticate_cached(&none, None, Some(good), &mut cache, at(9999)).is_ok());
        assert_eq!(
            authenticate_cached(&none, None, Some(good), &mut cache, at(10_000)),
            Err(Unauthorized)
        );
        // Failures are not cached: a token that becomes valid works at once.
        let late = "Bearer ghijkl.0123456789abcdef";
        assert!(authenticate_cached(&knobs(), None, Some(late), &mut cache, at(11_000)).is_err());
        let both =
            Knobs::parse(r#"{"tokens":[{"id":"ghijkl","secret":"0123456789abcdef"}]}"#).unwrap();
        assert!(authenticate_cached(&both, None, Some(late), &mut cache, at(11_001)).is_ok());
    }

    #[test]
    fn node_names() {
        let u = User {
            name: "system:node:n1".into(),
            groups: vec!["system:nodes".into()],
        };
        assert_eq!(u.node_name(), Some("n1"));
        let u = User {
            name: "system:node:n1".into(),
            groups: vec![],
        };
        assert_eq!(u.node_name(), None);
    }
}
