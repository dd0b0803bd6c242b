//! Certificates: CA pins (kubeadm's pubkeypin) and the kubelet client certificate checks.

use crate::config::CaPin;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use std::sync::Arc;
use x509_parser::prelude::*;

/// Why a certificate or key is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertProblem {
    /// Not PEM, or no certificate in it.
    #[error("{what}: no PEM certificate found")]
    NoCertificate {
        /// Which file or field.
        what: String,
    },
    /// No private key in the PEM.
    #[error("{what}: no PEM private key found")]
    NoKey {
        /// Which file.
        what: String,
    },
    /// The DER does not parse.
    #[error("{what}: certificate does not parse: {reason}")]
    Unparsable {
        /// Which file.
        what: String,
        /// The parser's message.
        reason: String,
    },
    /// Does not chain to the cluster CA, or is outside its validity.
    #[error("{what}: not valid for the cluster CA: {reason}")]
    Untrusted {
        /// Which file.
        what: String,
        /// rustls/webpki's reason (expired, unknown issuer, ...).
        reason: String,
    },
    /// Subject is not this node's.
    #[error("{what}: subject is {actual:?}, expected {expected:?}")]
    WrongSubject {
        /// Which file.
        what: String,
        /// Expected "O=system:nodes, CN=system:node:<name>".
        expected: String,
        /// The certificate's subject.
        actual: String,
    },
    /// The private key does not belong to the certificate.
    #[error("{what}: private key does not match the certificate")]
    KeyMismatch {
        /// Which file.
        what: String,
    },
}

/// All certificates in a PEM bundle.
pub fn pem_certificates(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, CertProblem> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(CertProblem::NoCertificate {
            what: what.to_string(),
        });
    }
    Ok(certs)
}

/// kubeadm's pin of a CA certificate: `sha256:` + hex SHA-256 of its DER SubjectPublicKeyInfo.
pub fn spki_pin(cert: &CertificateDer<'_>, what: &str) -> Result<CaPin, CertProblem> {
    let (_, parsed) =
        X509Certificate::from_der(cert.as_ref()).map_err(|e| CertProblem::Unparsable {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
    let digest = ring::digest::digest(&ring::digest::SHA256, parsed.public_key().raw);
    Ok(CaPin(format!("sha256:{}", hex::encode(digest.as_ref()))))
}

/// What a valid kubelet client certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertSummary {
    /// Subject, for logs.
    pub subject: String,
    /// Issuer.
    pub issuer: String,
    /// NotAfter, RFC 3339.
    pub not_after: String,
    /// NotAfter, Unix time.
    pub not_after_unix: i64,
    /// Seconds until NotAfter.
    pub expires_in_secs: i64,
}

/// Checks a kubelet client certificate the way the API server will see it, plus what
/// kubelet itself checks: chains to `ca` for client auth, is within its validity,
/// says `O=system:nodes, CN=system:node:<node>`, and `key` is its private key.
pub fn check_kubelet_client_cert(
    pem: &[u8],
    key_pem: &[u8],
    ca: &[CertificateDer<'static>],
    node: &str,
    what: &str,
) -> Result<ClientCertSummary, CertProblem> {
    let chain = pem_certificates(pem, what)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| CertProblem::NoKey {
        what: what.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let mut roots = rustls::RootCertStore::empty();
    for c in ca {
        roots.add(c.clone()).map_err(|e| CertProblem::Untrusted {
            what: "cluster CA".into(),
            reason: e.to_string(),
        })?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| CertProblem::Untrusted {
        what: what.to_string(),
        reason: e.to_string(),
    })?;
    verifier
        .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
        .map_err(|e| CertProblem::Untrusted {
            what: what.to_string(),
            reason: e.to_string(),
        })?;

    let (_, parsed) =
        X509Certificate::from_der(chain[0].as_ref()).map_err(|e| CertProblem::Unparsable {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
    let subject = parsed.subject();
    let cn: Vec<_> = subject
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .collect();
    let org: Vec<_> = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .collect();
    let expected_cn = format!("system:node:{node}");
    if cn != [expected_cn.as_str()] || !org.contains(&"system:nodes") {
        return Err(CertProblem::WrongSubject {
            what: what.to_string(),
            expected: format!("O=system:nodes, CN={expected_cn}"),
            actual: subject.to_string(),
        });
    }

    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|_| CertProblem::NoKey {
            what: what.to_string(),
        })?;
    match signing.public_key() {
        Some(spki) if spki.as_ref() == parsed.public_key().raw => {}
        _ => {
            return Err(CertProblem::KeyMismatch {
                what: what.to_string(),
            });
        }
    }

    let not_after = parsed.validity().not_after;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Ok(ClientCertSummary {
        subject: subject.to_string(),
        issuer: parsed.issuer().to_string(),
        not_after: not_after
            .to_rfc2822()
            .unwrap_or_else(|_| not_after.to_string()),
        not_after_unix: not_after.timestamp(),
        expires_in_secs: not_after.timestamp() - now,
    })
}

#[cfg(test)]
mod tests;
